//! One HTTP/3 request stream: the handler's run, held to the bounds an
//! HTTP/2 stream is held to (R10.4) — the request head by
//! `max_head_bytes` and the header timeout, the body by `max_body` and the
//! body timeout, the answer by the write timeout per flow-control grant —
//! and cancelled when the client stops the stream.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use h3::error::Code;
use h3::server::{RequestResolver, RequestStream};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use tokio::time::Instant;

use super::quic::{self, Watch, WatchTaker};
use crate::body::h3_recv::{self, Reads};
use crate::body::{Body, BrokenBound, H2BodyBounds};
use crate::server::access::Entry;
use crate::server::h2::stream::{
    Outcome, StreamRules, answer_head, bodiless, declared_length, logged, noted,
};
use crate::server::{ConnInfo, Handler};

type SendHalf = RequestStream<quic::SendStream<Bytes>, Bytes>;

/// Reads the request head (within the header timeout), then runs the
/// stream as [`run`] does, noted in the access log if there is one.
pub(super) async fn stream_task(
    resolver: RequestResolver<quic::Connection, Bytes>,
    watches: WatchTaker,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    rules: StreamRules,
) -> Outcome {
    let header_timeout = rules.shared.config.header_timeout;
    let (req, stream) = match tokio::time::timeout(header_timeout, resolver.resolve_request()).await
    {
        Ok(Ok(pair)) => pair,
        // A head over `max_head_bytes` was answered 431 by h3; a
        // malformed one reset with H3_MESSAGE_ERROR.
        Ok(Err(e)) => {
            tracing::debug!(conn = info.id, error = %e, "h3: bad request head");
            return Outcome::Done;
        }
        // The stream is dropped: its halves are reset and stopped.
        Err(_) => return Outcome::Done,
    };
    let metrics = &rules.shared.metrics;
    metrics
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics
        .h3_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(watch) = watches.take(stream.id()) else {
        return Outcome::Done;
    };
    let shared = rules.shared.clone();
    let task =
        async move |req, log: &mut _| run(req, stream, watch, handler, info, &rules, log).await;
    logged(req, info, &shared, task).await
}

/// Methods a request in early data may use (RFC 8470 §3, R8.3): those
/// that are safe to replay.
fn replay_safe(method: &Method) -> bool {
    method.is_idempotent()
}

async fn run(
    req: Request<()>,
    stream: RequestStream<quic::BidiStream<Bytes>, Bytes>,
    watch: Watch,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    rules: &StreamRules,
    log: &mut Option<Entry>,
) -> Outcome {
    let Watch { mut stopped, early } = watch;
    let (mut parts, ()) = req.into_parts();
    let (mut send, recv) = stream.split();
    if early && !replay_safe(&parts.method) {
        // 425 Too Early: the client retries after the handshake (RFC 8470 §5.2).
        return answer_now(send, noted(log, StatusCode::TOO_EARLY)).await;
    }
    if parts.method == Method::CONNECT {
        // No tunnels over HTTP/3 here (RFC 9114 §4.4, RFC 9220): a stream
        // cannot be handed over as an `Upgraded`. Said before any handler
        // (a forward proxy would dial the target first).
        return answer_now(send, noted(log, StatusCode::NOT_IMPLEMENTED)).await;
    }
    if connection_specific(&parts.headers) {
        // Malformed in HTTP/3 (RFC 9114 §4.2), as h2 holds them in HTTP/2.
        return answer_now(send, noted(log, StatusCode::BAD_REQUEST)).await;
    }
    let declared = match declared_length(&parts) {
        Ok(n) => n,
        Err(status) => return answer_now(send, noted(log, status)).await,
    };
    if let (Some(n), Some(max)) = (declared, rules.max_body)
        && n > max
    {
        // Refused before a byte is read (dropping `recv` stops the client's
        // half with H3_NO_ERROR, RFC 9114 §4.1).
        return answer_now(send, noted(log, StatusCode::PAYLOAD_TOO_LARGE)).await;
    }
    let head_only = parts.method == Method::HEAD;
    let broken = Arc::new(OnceLock::new());
    let bounds = H2BodyBounds {
        max: rules.max_body,
        timeout: Some(rules.body_timeout),
        length: declared,
        broken: Some(broken.clone()),
    };
    let body = h3_recv::body(recv, bounds, Reads::Request);
    if early {
        // RFC 8470 §5.1: what a proxy must tell the next hop, so that an
        // origin behind `keepwire proxy` can answer 425 itself.
        parts
            .headers
            .insert("early-data", http::HeaderValue::from_static("1"));
    }
    let mut req = Request::from_parts(parts, body);
    req.extensions_mut().insert(info);
    if early {
        req.extensions_mut().insert(EarlyData);
    }
    // The handler, raced against the client stopping the stream: it is
    // dropped there (in the proxy, its upstream request with it).
    let resp = tokio::select! {
        biased;
        resp = handler.call(req) => resp,
        _ = &mut stopped => return Outcome::Cancelled,
    };
    let resp = match broken.get() {
        Some(BrokenBound::TooLarge) => {
            return answer_now(send, noted(log, StatusCode::PAYLOAD_TOO_LARGE)).await;
        }
        Some(BrokenBound::TimedOut) => {
            return answer_now(send, noted(log, StatusCode::REQUEST_TIMEOUT)).await;
        }
        None => resp,
    };
    let answer = answer(&mut send, resp, head_only, rules, log);
    let outcome = tokio::select! {
        biased;
        outcome = answer => outcome,
        _ = &mut stopped => return Outcome::Cancelled,
    };
    if let Outcome::Done = outcome {
        // The stream stays in flight until the client has the answer
        // (acknowledged, or stopped): closing the connection sooner, at
        // shutdown or idle, would discard what is still unsent.
        let _ = tokio::time::timeout(rules.write_timeout, stopped).await;
    }
    outcome
}

/// Whether a request carries a connection-specific field, which HTTP/3
/// has no use for (RFC 9114 §4.2): `TE` is allowed only as `trailers`.
fn connection_specific(headers: &http::HeaderMap) -> bool {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    let named = [CONNECTION, TRANSFER_ENCODING, UPGRADE]
        .iter()
        .any(|n| headers.contains_key(n))
        || ["keep-alive", "proxy-connection"]
            .iter()
            .any(|n| headers.contains_key(*n));
    named || headers.get_all(TE).iter().any(|v| v != "trailers")
}

/// A request extension: the request arrived in 0-RTT early data (only
/// replay-safe methods get this far; RFC 8470). Such a request also
/// carries `Early-Data: 1`, which a proxy passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyData;

/// Answers with `status` and no body.
async fn answer_now(mut send: SendHalf, status: StatusCode) -> Outcome {
    if send.send_response(bodiless(status)).await.is_ok() {
        let _ = send.finish().await;
    }
    Outcome::Done
}

/// Sends the handler's answer: head, body and trailers, each write within
/// the write timeout (a client that grants no flow-control window gets
/// the stream reset, as a socket that takes nothing does over HTTP/1).
async fn answer(
    send: &mut SendHalf,
    resp: Response<Body>,
    head_only: bool,
    rules: &StreamRules,
    log: &mut Option<Entry>,
) -> Outcome {
    let (mut parts, mut body) = resp.into_parts();
    answer_head(&mut parts, &body, head_only, log);
    let timeout = rules.write_timeout;
    let since = Instant::now();
    let head = send.send_response(Response::from_parts(parts, ()));
    match tokio::time::timeout(timeout, head).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return ended(e),
        Err(_) => return stalled(send, since),
    }
    if !head_only {
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let frame = match frame {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    // The body broke off: the client must not take it for whole.
                    tracing::debug!(error = %e, "h3: response body failed");
                    send.stop_stream(Code::H3_INTERNAL_ERROR);
                    return Outcome::Done;
                }
            };
            let since = Instant::now();
            let write = match frame.into_data() {
                Ok(data) => {
                    let n = data.len();
                    if n == 0 {
                        continue;
                    }
                    if let Some(e) = log {
                        e.bytes += n as u64;
                    }
                    let sent = tokio::time::timeout(timeout, send.send_data(data)).await;
                    if let Ok(Ok(())) = sent {
                        // QUIC took the bytes: the client's window moved.
                        rules.progress.sent();
                    }
                    sent
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        tokio::time::timeout(timeout, send.send_trailers(trailers)).await
                    }
                    Err(_) => continue,
                },
            };
            match write {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return ended(e),
                Err(_) => return stalled(send, since),
            }
        }
    }
    match send.finish().await {
        Ok(()) => Outcome::Done,
        Err(e) => ended(e),
    }
}

/// A write failed: the client stopped the stream (its work cancelled) or
/// the connection is gone.
fn ended(e: h3::error::StreamError) -> Outcome {
    tracing::debug!(error = %e, "h3 stream ended early");
    match e {
        h3::error::StreamError::RemoteTerminate { .. } => Outcome::Cancelled,
        _ => Outcome::Done,
    }
}

/// No window for the write timeout: the stream is reset.
fn stalled(send: &mut SendHalf, since: Instant) -> Outcome {
    send.stop_stream(Code::H3_REQUEST_CANCELLED);
    Outcome::Stalled { since }
}
