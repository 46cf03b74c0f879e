//! `/events`: the source as a Server-Sent Events stream (WHATWG HTML
//! §9.2), one response that never ends.
//!
//! The body is polled by the connection, not fed by a task: every event
//! published wakes it, it writes what the client has not seen yet in one
//! chunk (the connection writes each chunk as it comes: no buffering), and
//! dropping it (the client went away, the server stops) releases
//! everything at once. An HTTP/1 client that leaves while nothing is
//! published ends it too, through the request's [`PeerGone`]. A client that comes back with `Last-Event-ID` gets
//! the events it missed from the history first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use keepwire::Body;
use keepwire::server::PeerGone;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::{Count, Events, query_param};

/// The SSE response for `req`: resumes after `Last-Event-ID` (or
/// `?since=`), else starts with the next event.
pub(super) fn response(events: &Events, req: &Request<Body>) -> Response<Body> {
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| query_param(req.uri().query().unwrap_or(""), "since"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let last = events.last_id();
    let cursor = resume.map_or(last, |r| r.min(last));
    let config = events.config();
    let mut prologue = BytesMut::new();
    prologue.put_slice(
        format!(
            "retry: {}\n: keepwire events, a heartbeat every {} s\n\n",
            config.retry.as_millis(),
            config.heartbeat.as_secs_f64()
        )
        .as_bytes(),
    );
    let stream = Stream {
        events: events.clone(),
        rx: Wake::Idle(Some(events.subscribe())),
        cursor,
        prologue: Some(prologue.freeze()),
        heartbeat: Box::pin(tokio::time::sleep(config.heartbeat)),
        _held: Count::new(&events.inner.streams),
        gone: {
            let gone = PeerGone::of(req);
            Box::pin(async move { gone.wait().await })
        },
    };
    let mut r = Response::new(Body::wrap(stream));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx's hint: do not buffer this response.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

type Changed = Pin<Box<dyn Future<Output = watch::Receiver<u64>> + Send>>;

/// Waiting for the next event: a receiver, or a wait in progress.
enum Wake {
    Idle(Option<watch::Receiver<u64>>),
    Waiting(Changed),
}

/// The endless body.
struct Stream {
    events: Events,
    rx: Wake,
    /// The last id written.
    cursor: u64,
    prologue: Option<Bytes>,
    heartbeat: Pin<Box<Sleep>>,
    _held: Count,
    /// Resolves when the client is gone: the stream ends.
    gone: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Stream {
    /// The events after the cursor as one chunk, if any.
    fn pending(&mut self) -> Option<Bytes> {
        let batch = self.events.since(self.cursor);
        let first = batch.first()?;
        let mut out = BytesMut::new();
        if first.id > self.cursor + 1 {
            // Fell behind the history: say so, then go on.
            out.put_slice(format!(": {} events missed\n\n", first.id - self.cursor - 1).as_bytes());
        }
        for e in &batch {
            out.put_slice(format!("id: {}\ndata: ", e.id).as_bytes());
            out.put_slice(e.json());
            out.put_slice(b"\n\n");
        }
        self.cursor = batch.last().map_or(self.cursor, |e| e.id);
        Some(out.freeze())
    }

    /// Polls for a change of the newest id; ready when one happened.
    fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.rx {
                Wake::Idle(rx) => {
                    let mut rx = rx.take().expect("a receiver when idle");
                    self.rx = Wake::Waiting(Box::pin(async move {
                        // The sender lives as long as `events`: no error.
                        let _ = rx.changed().await;
                        rx
                    }));
                }
                Wake::Waiting(fut) => {
                    let rx = std::task::ready!(fut.as_mut().poll(cx));
                    self.rx = Wake::Idle(Some(rx));
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(p) = this.prologue.take() {
            // Resumed events go out with the prologue.
            let chunk = match this.pending() {
                Some(events) => [p, events].concat().into(),
                None => p,
            };
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.gone.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        loop {
            if let Some(chunk) = this.pending() {
                this.reset_heartbeat();
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.events.is_closed() {
                return Poll::Ready(None);
            }
            if this.poll_changed(cx).is_pending() {
                break;
            }
        }
        if this.heartbeat.as_mut().poll(cx).is_ready() {
            this.reset_heartbeat();
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": heartbeat\n\n",
            )))));
        }
        Poll::Pending
    }
}

impl Stream {
    fn reset_heartbeat(&mut self) {
        let next = tokio::time::Instant::now() + self.events.config().heartbeat;
        self.heartbeat.as_mut().reset(next);
    }
}
