//! `/ws`: the source over a WebSocket (RFC 6455, `keepwire::ws`): events
//! go out as text frames (the same JSON as the polls), and every data
//! message the client sends comes back as it was: full duplex on one
//! connection, the technique's point.
//!
//! The socket is `keepwire::ws`'s: pings with a dead-peer timeout, frame
//! and message caps, the close handshake; the connection keeps its slot
//! under the server's `max_connections` until it ends (R9.5).

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use keepwire::Body;
use keepwire::ws::{self, Message};

use super::{Count, Events, query_param};
use crate::reply::status;

/// The handshake's answer to `req`; the socket then runs on its own task.
/// `?since=ID` first sends the events after `ID` still in the history.
pub(super) fn response(events: &Events, mut req: Request<Body>) -> Response<Body> {
    if !ws::is_upgrade(&req) {
        // RFC 9110 §15.5.22: say what to upgrade to.
        let mut r = status(StatusCode::UPGRADE_REQUIRED);
        r.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        return r;
    }
    let since =
        query_param(req.uri().query().unwrap_or(""), "since").and_then(|v| v.parse::<u64>().ok());
    match ws::accept(&mut req, events.config().websocket.clone()) {
        Ok((resp, accepting)) => {
            tokio::spawn(run(events.clone(), accepting, since));
            resp
        }
        Err(refused) => refused,
    }
}

/// One client: events out, echoes back, until either side closes.
async fn run(events: Events, accepting: ws::Accepting, since: Option<u64>) {
    let Some(mut socket) = accepting.await else {
        return;
    };
    let _held = Count::new(&events.inner.websockets);
    let mut rx = events.subscribe();
    let last = events.last_id();
    let mut cursor = since.map_or(last, |s| s.min(last));
    loop {
        for e in events.since(cursor) {
            cursor = e.id;
            let text = String::from_utf8_lossy(e.json()).into_owned();
            if socket.send(Message::Text(text)).await.is_err() {
                return;
            }
        }
        if events.is_closed() {
            let _ = socket.close(1001, "server going away").await;
            return;
        }
        let echo = tokio::select! {
            changed = rx.changed() => match changed {
                Ok(()) => continue,
                Err(_) => None,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => Some(Message::Text(t)),
                Some(Ok(Message::Binary(b))) => Some(Message::Binary(b)),
                // Pings are answered by the socket; pongs need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                // The peer's close: the socket answers it; reading on
                // lets that close handshake finish (bounded by the
                // socket's close timeout).
                Some(Ok(Message::Close(_))) => {
                    while let Some(Ok(_)) = socket.recv().await {}
                    None
                }
                // An error (the socket already closed with its code), the end.
                Some(Err(_)) | None => None,
            },
        };
        match echo {
            Some(m) => {
                if socket.send(m).await.is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}
