//! Extended CONNECT on the server (RFC 8441): a CONNECT with a `:protocol`
//! pseudo-header asks to switch one stream, not the connection, to another
//! protocol (a WebSocket over HTTP/2). The server advertises
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`; the handler decides, as it does for
//! an HTTP/1 upgrade: it gets an [`OnUpgrade`](crate::upgrade::OnUpgrade)
//! with the request and answers 2xx to accept (then the stream is its
//! [`Upgraded`]) or anything else to refuse (a plain answer).
//!
//! The switched stream stays one of the connection's streams while it
//! lives: its task waits for the [`Upgraded`] to drop, so it counts
//! against the handlers-in-flight limit (and `h2`'s stream limit), keeps
//! the connection's idle timeout from firing, and ends with the connection
//! (GOAWAY on shutdown, then the shutdown timeout). It is also one of the
//! server's `tunnels_open`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::{Request, Response, header};
use tokio::sync::oneshot;

use super::super::{ConnInfo, Handler, Shared};
use super::stream::{
    Outcome, StreamRules, answer, answer_now, call, declared_length, h2_head, noted,
};
use crate::body::Body;
use crate::server::access::Entry;
use crate::upgrade::Upgraded;
use crate::upgrade::h2::H2Stream;

/// Whether `req` is an extended CONNECT (the stream goes to
/// [`extended_connect`], not to `stream_task`).
pub(super) fn is_extended_connect<B>(req: &Request<B>) -> bool {
    crate::upgrade::connect_protocol(req).is_some()
}

/// Runs the handler on an extended CONNECT and, if it accepts, hands it the
/// stream; returns once the stream's [`Upgraded`] is dropped.
pub(super) async fn extended_connect(
    req: Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    rules: StreamRules,
) -> Outcome {
    let Some(log) = rules.shared.config.access_log.clone() else {
        return switch(req, respond, handler, info, rules, &mut None).await;
    };
    // Logged when the tunnel ends: `rt` is its lifetime, as nginx logs a
    // proxied WebSocket.
    let now = tokio::time::Instant::now();
    let mut entry = Some(Entry::of_request(&req, info.request_index, now));
    let outcome = switch(req, respond, handler, info, rules, &mut entry).await;
    if let Some(e) = entry {
        e.finish_stream(matches!(outcome, Outcome::Cancelled), &log, &info);
    }
    outcome
}

/// [`extended_connect`], its answer noted in `log`.
async fn switch(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    rules: StreamRules,
    log: &mut Option<Entry>,
) -> Outcome {
    let (parts, recv) = req.into_parts();
    // The same checks of Host against :authority as any request's.
    if let Err(status) = declared_length(&parts) {
        return answer_now(respond, noted(log, status));
    }
    let (tx, on_upgrade) = crate::upgrade::pending();
    // The stream's DATA is the switched protocol's, not a request body.
    let mut req = Request::from_parts(parts, Body::empty());
    req.extensions_mut().insert(info);
    req.extensions_mut().insert(on_upgrade);
    let Some(resp) = call(&*handler, req, &mut respond).await else {
        return Outcome::Cancelled;
    };
    // Refused (or accepted by a handler that dropped its OnUpgrade, and so
    // cannot take the stream): a plain answer, and the stream ends.
    if !resp.status().is_success() || tx.is_closed() {
        drop(recv);
        return answer(respond, resp, false, &rules, log).await;
    }
    let (mut parts, _) = resp.into_parts();
    noted(log, parts.status);
    h2_head(&mut parts);
    // A 2xx to CONNECT has no content (RFC 9110 §9.3.6).
    parts.headers.remove(header::CONTENT_LENGTH);
    let send = match respond.send_response(Response::from_parts(parts, ()), false) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "h2: extended CONNECT ended before its answer");
            return Outcome::Done;
        }
    };
    let (ended, dropped) = oneshot::channel();
    let slot = TunnelSlot::open(rules.shared.clone(), ended);
    let up = Upgraded::h2_stream(H2Stream::new(send, recv), Some(Box::new(slot)));
    // The handler gave its OnUpgrade up meanwhile: dropping the stream
    // resets it.
    if tx.send(up).is_ok() {
        let _ = dropped.await;
    }
    Outcome::Done
}

/// Held by a switched stream's [`Upgraded`]: counts it in `tunnels_open`,
/// and tells its task when it drops.
struct TunnelSlot {
    shared: Arc<Shared>,
    _ended: oneshot::Sender<()>,
}

impl TunnelSlot {
    fn open(shared: Arc<Shared>, ended: oneshot::Sender<()>) -> Self {
        shared.metrics.tunnels_open.fetch_add(1, Relaxed);
        TunnelSlot {
            shared,
            _ended: ended,
        }
    }
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        self.shared.metrics.tunnels_open.fetch_sub(1, Relaxed);
    }
}
