//! One HTTP/2 request stream held to the HTTP/1 driver's bounds (R10.4):
//! cancelled by the client's reset, its body bounded in size and time, its
//! answer bounded by the write timeout per window grant.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use tokio::time::Instant;

use super::super::{ConnInfo, Handler, Shared};
use crate::body::{Body, BrokenBound, H2BodyBounds};
use crate::server::access::Entry;

/// Bodies up to this size are queued whole, without waiting for a window
/// grant (the initial stream window is 65,535 bytes).
const SMALL_BODY: usize = 16 * 1024;

/// How a stream's task ended, for the connection's discipline.
pub(in crate::server) enum Outcome {
    /// Answered (or failed in a way that is the stream's alone).
    Done,
    /// The client reset the stream before its answer ended: the handler (or
    /// the body it was producing) was dropped there.
    Cancelled,
    /// The client gave no flow-control window for `write_timeout`; the
    /// stream was reset. `since` is when the stream began to wait.
    Stalled { since: Instant },
}

/// When the connection last sent DATA, shared with its streams: a stream
/// that stalls on flow control takes the connection down with it only if
/// no other stream made progress meanwhile (the client opens no window at
/// all).
#[derive(Clone)]
pub(in crate::server) struct Progress {
    epoch: Instant,
    /// Milliseconds after `epoch`.
    last_data_ms: Arc<AtomicU64>,
}

impl Progress {
    pub(in crate::server) fn new() -> Self {
        Progress {
            epoch: Instant::now(),
            last_data_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(in crate::server) fn sent(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_data_ms.fetch_max(ms, Relaxed);
    }

    pub(in crate::server) fn sent_since(&self, t: Instant) -> bool {
        let last = self.epoch + Duration::from_millis(self.last_data_ms.load(Relaxed));
        last > t
    }
}

/// What every stream of a connection is held to (the HTTP/1 driver's
/// bounds, R10.4).
#[derive(Clone)]
pub(in crate::server) struct StreamRules {
    pub(in crate::server) max_body: Option<u64>,
    pub(in crate::server) body_timeout: Duration,
    pub(in crate::server) write_timeout: Duration,
    pub(in crate::server) progress: Progress,
    /// The server's state (its gauges count extended CONNECT tunnels).
    pub(in crate::server) shared: Arc<Shared>,
}

impl StreamRules {
    /// The rules `shared`'s config sets, with the progress of a new
    /// connection.
    pub(in crate::server) fn of(shared: &Arc<Shared>) -> Self {
        let cfg = &shared.config;
        StreamRules {
            max_body: cfg.limits.max_body_bytes,
            body_timeout: cfg.body_timeout,
            write_timeout: cfg.write_timeout,
            progress: Progress::new(),
            shared: shared.clone(),
        }
    }
}

/// One request stream: the handler's answer, body and trailers, with flow
/// control on both directions. A reset from the client drops the handler
/// (in the proxy, its upstream request) or the body it was producing; the
/// request body is held to `max_body` and `body_timeout`, the answer to
/// `write_timeout` per window grant.
pub(in crate::server) async fn stream_task(
    req: Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    rules: StreamRules,
) -> Outcome {
    let shared = rules.shared.clone();
    let run = async move |req, log: &mut _| stream(req, respond, handler, info, rules, log).await;
    logged(req, info, &shared, run).await
}

/// Runs a stream's `run` on `req`, giving it where to note its answer: the
/// stream timed in the request-duration histogram when answered in full,
/// and noted in the access log if there is one.
pub(in crate::server) async fn logged<B>(
    req: Request<B>,
    info: ConnInfo,
    shared: &Shared,
    run: impl AsyncFnOnce(Request<B>, &mut Option<Entry>) -> Outcome,
) -> Outcome {
    let now = Instant::now();
    let Some(log) = shared.config.access_log.clone() else {
        let outcome = run(req, &mut None).await;
        return answered(shared, now, outcome);
    };
    let mut entry = Some(Entry::of_request(&req, info.request_index, now));
    let outcome = run(req, &mut entry).await;
    let outcome = answered(shared, now, outcome);
    if let Some(e) = entry {
        e.finish_stream(matches!(outcome, Outcome::Cancelled), &log, &info);
    }
    outcome
}

/// Records a stream answered in full in the request-duration histogram.
fn answered(shared: &Shared, since: Instant, outcome: Outcome) -> Outcome {
    if let Outcome::Done = outcome {
        shared
            .metrics
            .request_duration
            .record_duration(since.elapsed());
    }
    outcome
}

/// [`stream_task`], its answer noted in `log`.
async fn stream(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    rules: StreamRules,
    log: &mut Option<Entry>,
) -> Outcome {
    let (parts, recv) = req.into_parts();
    let declared = match declared_length(&parts) {
        Ok(n) => n,
        Err(status) => return answer_now(respond, noted(log, status)),
    };
    if let (Some(n), Some(max)) = (declared, rules.max_body)
        && n > max
    {
        // Refused before a byte is read; dropping the body tells the
        // client with RST_STREAM(NO_ERROR) after the answer.
        return answer_now(respond, noted(log, StatusCode::PAYLOAD_TOO_LARGE));
    }
    let head_only = parts.method == Method::HEAD;
    let broken = Arc::new(OnceLock::new());
    let body = Body::from_h2_bounded(
        recv,
        H2BodyBounds {
            max: rules.max_body,
            timeout: Some(rules.body_timeout),
            length: declared,
            broken: Some(broken.clone()),
        },
    );
    let mut req = Request::from_parts(parts, body);
    req.extensions_mut().insert(info);
    let Some(resp) = call(&*handler, req, &mut respond).await else {
        return Outcome::Cancelled;
    };
    // A body that broke its bounds gets the HTTP/1 driver's answer, whatever
    // the handler made of the error.
    let resp = match broken.get() {
        Some(BrokenBound::TooLarge) => {
            return answer_now(respond, noted(log, StatusCode::PAYLOAD_TOO_LARGE));
        }
        Some(BrokenBound::TimedOut) => {
            return answer_now(respond, noted(log, StatusCode::REQUEST_TIMEOUT));
        }
        None => resp,
    };
    answer(respond, resp, head_only, &rules, log).await
}

/// Notes `status` as the answer in the access-log entry, if any.
pub(in crate::server) fn noted(log: &mut Option<Entry>, status: StatusCode) -> StatusCode {
    if let Some(e) = log {
        e.status = status.as_u16();
    }
    status
}

/// Counts `n` body bytes sent in the access-log entry, if any.
fn count(log: &mut Option<Entry>, n: usize) {
    if let Some(e) = log {
        e.bytes += n as u64;
    }
}

/// Runs the handler on `req`; `None` if the client reset the stream first
/// (the handler is dropped there).
pub(in crate::server) async fn call(
    handler: &dyn Handler,
    req: Request<Body>,
    respond: &mut h2::server::SendResponse<Bytes>,
) -> Option<Response<Body>> {
    let mut call = handler.call(req);
    // The handler first: most answer at once, and then the reset is not
    // worth a look.
    poll_fn(|cx| {
        if let Poll::Ready(resp) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The response head as HTTP/2 sends it: connection-specific fields
/// removed (RFC 9113 §8.2.2: they are malformed), `Date` set.
pub(in crate::server) fn h2_head(parts: &mut http::response::Parts) {
    keepwire_proto::hop::strip_hop_by_hop(&mut parts.headers, false);
    if !parts.headers.contains_key(http::header::DATE) {
        parts.headers.insert(http::header::DATE, crate::date::now());
    }
}

/// The head of an answer with `body`, as HTTP/2 and HTTP/3 send it (and
/// noted in the access log): no connection-specific fields, the length
/// the body's (h2 checks it against the DATA frames); a HEAD answer keeps
/// the handler's, which describes the GET.
pub(in crate::server) fn answer_head(
    parts: &mut http::response::Parts,
    body: &Body,
    head_only: bool,
    log: &mut Option<Entry>,
) {
    if let Some(e) = log {
        e.respond(parts.status, &parts.extensions);
    }
    h2_head(parts);
    if !head_only {
        parts.headers.remove(http::header::CONTENT_LENGTH);
        if let Some(n) = body.size_hint().exact() {
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                keepwire_proto::encode::decimal_value(n),
            );
        }
    }
}

/// Sends the handler's answer: head, body and trailers, as the client's
/// window allows.
pub(in crate::server) async fn answer(
    mut respond: h2::server::SendResponse<Bytes>,
    resp: Response<Body>,
    head_only: bool,
    rules: &StreamRules,
    log: &mut Option<Entry>,
) -> Outcome {
    let (mut parts, body) = resp.into_parts();
    answer_head(&mut parts, &body, head_only, log);
    let end = head_only || body.is_end_stream();
    let send = match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "h2 stream ended early");
            return Outcome::Done;
        }
    };
    if end {
        return Outcome::Done;
    }
    match send_body(send, body, rules, log).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::debug!(error = %e, "h2 stream ended early");
            Outcome::Done
        }
    }
}

/// The answer's body, as the client's window allows.
async fn send_body(
    mut send: h2::SendStream<Bytes>,
    mut body: Body,
    rules: &StreamRules,
    log: &mut Option<Entry>,
) -> Result<Outcome, h2::Error> {
    loop {
        // The body first (a reset is only looked at when it must wait): a
        // stalled upstream body is dropped when the client gives up.
        let frame = poll_fn(|cx| {
            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Ok(frame));
            }
            match send.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(Err(())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(()) => return Ok(Outcome::Cancelled),
        };
        let Ok(frame) = frame else {
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            return Ok(Outcome::Done);
        };
        match frame.into_data() {
            Ok(mut data) => {
                // A small body goes out with its HEADERS in the same turn
                // when the window has room: waiting for a capacity grant
                // first would write each response's DATA in a later,
                // separate segment.
                if data.len() <= SMALL_BODY && body.is_end_stream() {
                    send.reserve_capacity(data.len());
                    if send.capacity() >= data.len() {
                        rules.progress.sent();
                        count(log, data.len());
                        send.send_data(data, true)?;
                        return Ok(Outcome::Done);
                    }
                }
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let since = Instant::now();
                    let granted = tokio::time::timeout(
                        rules.write_timeout,
                        poll_fn(|cx| send.poll_capacity(cx)),
                    )
                    .await;
                    let n = match granted {
                        Ok(Some(Ok(n))) => n,
                        Ok(Some(Err(e))) => return Err(e),
                        // The stream was reset (or the connection is gone).
                        Ok(None) => return Ok(Outcome::Cancelled),
                        Err(_) => {
                            // No window for the whole write timeout, as a
                            // socket that takes no bytes over HTTP/1.
                            send.send_reset(h2::Reason::CANCEL);
                            return Ok(Outcome::Stalled { since });
                        }
                    };
                    if n == 0 {
                        continue;
                    }
                    rules.progress.sent();
                    let chunk = data.split_to(n.min(data.len()));
                    // The last bytes carry END_STREAM themselves: one frame
                    // (and often one segment) fewer per response.
                    let last = data.is_empty() && body.is_end_stream();
                    count(log, chunk.len());
                    send.send_data(chunk, last)?;
                    if last {
                        return Ok(Outcome::Done);
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers)?;
                    return Ok(Outcome::Done);
                }
            }
        }
    }
    send.send_data(Bytes::new(), true)?;
    Ok(Outcome::Done)
}

/// The request's declared body length, after the checks RFC 9113 §8.3.1
/// and RFC 9110 §8.6 ask of it: a `host` that names another origin than
/// `:authority`, more than one `host`, or an unreadable `content-length`
/// make the request malformed (400).
pub(in crate::server) fn declared_length(
    parts: &http::request::Parts,
) -> Result<Option<u64>, StatusCode> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    if let Some(host) = hosts.next() {
        if hosts.next().is_some() {
            return Err(StatusCode::BAD_REQUEST);
        }
        if let Some(authority) = parts.uri.authority()
            && !same_origin(host.as_bytes(), authority, parts.uri.scheme_str())
        {
            return Err(StatusCode::BAD_REQUEST);
        }
    }
    let mut lengths = parts.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(None);
    };
    let parse = |v: &http::HeaderValue| -> Option<u64> {
        let b = v.as_bytes();
        if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    };
    let n = parse(first).ok_or(StatusCode::BAD_REQUEST)?;
    for other in lengths {
        if parse(other) != Some(n) {
            return Err(StatusCode::BAD_REQUEST);
        }
    }
    Ok(Some(n))
}

/// Whether `host` names the origin `authority` does (case aside, and a
/// missing port read as the scheme's default).
fn same_origin(host: &[u8], authority: &http::uri::Authority, scheme: Option<&str>) -> bool {
    let default = if scheme == Some("http") { 80 } else { 443 };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let Ok(host) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    host.host().eq_ignore_ascii_case(authority.host())
        && host.port_u16().unwrap_or(default) == authority.port_u16().unwrap_or(default)
}

/// Answers with `status` and no body; dropping the request body then resets
/// the client's half with NO_ERROR (RFC 9113 §8.1).
pub(in crate::server) fn answer_now(
    mut respond: h2::server::SendResponse<Bytes>,
    status: StatusCode,
) -> Outcome {
    let _ = respond.send_response(bodiless(status), true);
    Outcome::Done
}

/// The head of an answer with `status` and no body (HTTP/2 and HTTP/3).
pub(in crate::server) fn bodiless(status: StatusCode) -> Response<()> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_LENGTH, 0)
        .header(http::header::DATE, crate::date::now())
        .body(())
        .unwrap_or_default()
}
