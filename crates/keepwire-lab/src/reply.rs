//! Small responses every server of the crate builds: a body with its
//! content type, a plain-text status. (The demo site, the real-time
//! endpoints and `keepwire serve`'s file server share them.)

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use keepwire::Body;

/// A response with a content type.
pub fn with_type(body: Body, mime: &str) -> Response<Body> {
    let mut r = Response::new(body);
    if let Ok(v) = HeaderValue::from_str(mime) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// A plain-text status response (`404 Not Found\n`).
pub fn status(code: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or("")
    );
    let mut r = with_type(Body::from(text), "text/plain; charset=utf-8");
    *r.status_mut() = code;
    r
}
