//! The embedded demo site: the chapter's "page with several embedded
//! objects", plus one event source offered the four real-time ways (R9.4,
//! [`crate::realtime`]).
//!
//! `/` is an HTML page that references `objects` sub-resources
//! (`/obj/N.png`, `.css`, `.js` in turn) of `object_size` bytes each, so a
//! client's connection strategy (serial, parallel, persistent, pipelined)
//! shows in how long the page takes. Everything is generated, so the site
//! needs no files and every response has an exact Content-Length.

use bytes::Bytes;
use http::header::CACHE_CONTROL;
use http::{HeaderValue, Request, Response, StatusCode};
use keepwire::Body;

use crate::realtime::Events;
pub use crate::reply::{status, with_type};

/// Shape of the generated site; by default `keepwire serve`'s, 12 objects
/// of 4 KiB and an event source ticking once a second.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Site {
    /// Sub-resources referenced by the page.
    pub objects: usize,
    /// Bytes per sub-resource.
    pub object_size: usize,
    /// What `/poll`, `/long-poll`, `/events` and `/ws` deliver.
    pub events: Events,
}

impl Default for Site {
    fn default() -> Self {
        Site::new(12, 4096)
    }
}

const KINDS: [(&str, &str); 3] = [
    ("png", "image/png"),
    ("css", "text/css"),
    ("js", "text/javascript"),
];

impl Site {
    /// A page referencing `objects` sub-resources of `object_size` bytes
    /// each; the default event source.
    pub fn new(objects: usize, object_size: usize) -> Self {
        Site {
            objects,
            object_size,
            events: Events::default(),
        }
    }

    /// The same site delivering `events` (say, one the caller publishes to).
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The HTML page.
    pub fn page(&self) -> String {
        let mut html = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>keepwire demo page</title>\n",
        );
        for i in 0..self.objects {
            match KINDS[i % 3].0 {
                "css" => html.push_str(&format!(
                    "<link rel=\"stylesheet\" href=\"/obj/{i}.css\">\n"
                )),
                "js" => html.push_str(&format!("<script src=\"/obj/{i}.js\"></script>\n")),
                _ => {}
            }
        }
        html.push_str("</head><body>\n<h1>keepwire demo page</h1>\n");
        html.push_str(&format!(
            "<p>This page references {} objects of {} bytes each. How many connections a client opens to load them, and how long it takes, depends on its strategy (serial, parallel, persistent, pipelined).</p>\n",
            self.objects, self.object_size
        ));
        for i in 0..self.objects {
            if KINDS[i % 3].0 == "png" {
                html.push_str(&format!("<img src=\"/obj/{i}.png\" alt=\"object {i}\">\n"));
            }
        }
        html.push_str("<p>One event source, four ways (R9.4), <a href=\"/realtime\">side by side</a>: <a href=\"/poll\">/poll</a> (short polling) · <a href=\"/long-poll\">/long-poll</a> · <a href=\"/events\">/events</a> (Server-Sent Events) · /ws (WebSocket)</p>\n</body></html>\n");
        html
    }

    /// The bytes of object `i` with extension `ext`, if it exists.
    fn object(&self, i: usize, ext: &str) -> Option<(Bytes, &'static str)> {
        let (kind, mime) = KINDS[i % 3];
        if i >= self.objects || kind != ext {
            return None;
        }
        let mut body = vec![b' '; self.object_size];
        let label = format!("/* keepwire object {i} */");
        let n = label.len().min(body.len());
        body[..n].copy_from_slice(&label.as_bytes()[..n]);
        Some((Bytes::from(body), mime))
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path();
        if path == "/" || path == "/index.html" {
            return with_type(Body::from(self.page()), "text/html; charset=utf-8");
        }
        if let Some(name) = path.strip_prefix("/obj/")
            && let Some((num, ext)) = name.split_once('.')
            && let Ok(i) = num.parse::<usize>()
            && let Some((bytes, mime)) = self.object(i, ext)
        {
            let mut r = with_type(Body::full(bytes), mime);
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        if Events::serves(path) {
            return self.events.handle(req).await;
        }
        status(StatusCode::NOT_FOUND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_every_object_once() {
        let site = Site::new(30, 100);
        let page = site.page();
        for i in 0..30 {
            let ext = KINDS[i % 3].0;
            assert_eq!(
                page.matches(&format!("/obj/{i}.{ext}\"")).count(),
                1,
                "object {i}"
            );
            assert_eq!(site.object(i, ext).unwrap().0.len(), 100);
        }
        assert!(site.object(30, "png").is_none());
        assert!(site.object(0, "css").is_none());
    }
}
