//! HTTP/2 on the server (RFC 9113): cleartext with prior knowledge (h2c),
//! and over TLS when ALPN picks `h2` (other TLS clients go to the HTTP/1
//! driver over the same [`Transport`](crate::transport::Transport) type).
//!
//! Multiplexing is the chapter's fourth technique (R4.5): many requests in
//! flight on one connection without pipelining's head-of-line order. The
//! framing itself is the `h2` crate's; what lives here is the connection
//! discipline keepwire keeps for HTTP/1.x too:
//! - The HTTP/1 driver hands a connection over when its first bytes are the
//!   HTTP/2 preface, so h2c costs HTTP/1 nothing.
//! - Idle connections and shutdown end with GOAWAY naming the last stream
//!   processed: streams above it were never seen by a handler and are safe
//!   for the client to retry (the multiplexed R8.3).
//! - Connection-specific fields are removed from responses (RFC 9113
//!   §8.2.2: they are malformed in HTTP/2), with the same hop-by-hop
//!   stripping the proxy uses.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{ConnInfo, Handler, Shared};
use crate::body::{Body, BrokenBound, H2BodyBounds};
use crate::metrics::CloseReason;

/// Bodies up to this size are queued whole, without waiting for a window
/// grant (the initial stream window is 65,535 bytes).
const SMALL_BODY: usize = 16 * 1024;

/// The client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `buf` is the start of the HTTP/2 preface (or all of it and more).
pub(crate) fn is_preface(buf: &[u8]) -> bool {
    buf.len() >= 3 && (buf.starts_with(PREFACE) || PREFACE.starts_with(buf))
}

/// The connection with the bytes the HTTP/1 driver already read in front
/// (none over TLS).
///
/// Writes cork the socket (TCP_CORK) and the connection loop uncorks once
/// per turn: the `h2` crate writes every DATA frame separately (over TLS,
/// each as its own record), and twelve small responses as twelve segments
/// overrun an initial congestion window of ten packets, costing a round
/// trip (R2.2). Corked, a turn's frames leave as few full segments.
///
/// Only while the connection is young: the window that a burst can overrun
/// is slow start's, and once it has grown, the two `setsockopt` calls per
/// turn are pure cost (a quarter of the server's CPU per request under
/// h2load over TLS).
pub(crate) struct Prefixed<T> {
    prefix: Bytes,
    stream: T,
    cork: Arc<Cork>,
    /// Bytes written so far, up to [`CORK_WHILE`].
    written: usize,
}

/// Cork while fewer than this many bytes were written: past slow start's
/// first rounds (10 segments, doubling per round trip).
const CORK_WHILE: usize = 64 * 1024;

impl<T> Prefixed<T> {
    fn new(prefix: Bytes, stream: T, cork: Arc<Cork>) -> Self {
        Prefixed {
            prefix,
            stream,
            cork,
            written: 0,
        }
    }

    fn cork(&mut self) {
        if self.written < CORK_WHILE {
            self.cork.cork();
        }
    }

    fn count(&mut self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        self.cork.wrote(&polled);
        if let Poll::Ready(Ok(n)) = &polled {
            self.written = self.written.saturating_add(*n);
        }
        polled
    }
}

/// TCP_CORK on a connection's socket, through a second handle on it (the
/// stream itself belongs to `h2`).
struct Cork {
    corked: AtomicBool,
    socket: std::net::TcpStream,
    /// Since when the socket takes no bytes: milliseconds after `epoch`,
    /// plus one (0: it takes them). A peer that stops reading is the
    /// write timeout's business, as over HTTP/1.
    blocked_since: AtomicU64,
    epoch: Instant,
}

impl Cork {
    fn of(tcp: &TcpStream) -> io::Result<Arc<Cork>> {
        let socket = socket2::SockRef::from(tcp).try_clone()?;
        Ok(Arc::new(Cork {
            corked: AtomicBool::new(false),
            socket: socket.into(),
            blocked_since: AtomicU64::new(0),
            epoch: Instant::now(),
        }))
    }

    /// Notes whether a write or flush got through.
    fn wrote<T>(&self, polled: &Poll<io::Result<T>>) {
        match polled {
            Poll::Pending => {
                if self.blocked_since.load(Relaxed) == 0 {
                    let ms = self.epoch.elapsed().as_millis() as u64 + 1;
                    self.blocked_since.store(ms, Relaxed);
                }
            }
            Poll::Ready(_) => self.blocked_since.store(0, Relaxed),
        }
    }

    /// When the socket stopped taking bytes, if it has.
    fn blocked_since(&self) -> Option<Instant> {
        match self.blocked_since.load(Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }

    fn cork(&self) {
        if !self.corked.swap(true, Relaxed) {
            let _ = socket2::SockRef::from(&self.socket).set_tcp_cork(true);
        }
    }

    /// Pushes out what a turn wrote.
    fn uncork(&self) {
        if self.corked.swap(false, Relaxed) {
            let _ = socket2::SockRef::from(&self.socket).set_tcp_cork(false);
        }
    }
}

/// Pushes out what a turn wrote (see [`Prefixed`]).
fn uncork(cork: Option<&Cork>) {
    if let Some(c) = cork {
        c.uncork();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.cork();
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.count(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.cork();
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.count(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TLS writes its buffered records here.
        self.cork();
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.cork.wrote(&polled);
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cork.uncork();
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves one HTTP/2 connection until it ends; returns why and how many
/// requests it carried.
pub(crate) async fn serve(
    stream: TcpStream,
    prefix: Bytes,
    info: ConnInfo,
    shared: &Shared,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) -> (CloseReason, u64) {
    let cork = match Cork::of(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(conn = info.id, error = %e, "h2: cannot share the socket");
            return (CloseReason::Error, 0);
        }
    };
    let io = Prefixed::new(prefix, stream, cork.clone());
    serve_io(io, Some(cork), info, shared, handler, stop).await
}

/// Completes the TLS handshake and serves HTTP/2 if ALPN chose `h2`;
/// otherwise (ALPN `http/1.1`, or none: HTTP/1.1 is TLS's default) returns
/// the stream for the HTTP/1 driver.
pub(crate) async fn serve_tls(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    info: ConnInfo,
    shared: &Shared,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) -> Option<crate::transport::Transport> {
    let cfg = &shared.config;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tls = match tokio::time::timeout(cfg.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(conn = info.id, error = %e, "TLS handshake failed");
            shared.metrics.closed(CloseReason::Error, 0);
            return None;
        }
        Err(_) => {
            shared.metrics.closed(CloseReason::Timeout, 0);
            return None;
        }
    };
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Some(tls.into());
    }
    let cork = Cork::of(tls.get_ref().0).ok();
    let (reason, requests) = match cork {
        Some(cork) => {
            let io = Prefixed::new(Bytes::new(), tls, cork.clone());
            serve_io(io, Some(cork), info, shared, handler, stop).await
        }
        None => serve_io(tls, None, info, shared, handler, stop).await,
    };
    tracing::debug!(conn = info.id, requests, ?reason, "h2 connection closed");
    shared.metrics.closed(reason, requests);
    None
}

/// How a stream's task ended, for the connection's discipline.
enum Outcome {
    /// Answered (or failed in a way that is the stream's alone).
    Done,
    /// The client reset the stream before its answer ended: the handler (or
    /// the body it was producing) was dropped there.
    Cancelled,
    /// The client gave no flow-control window for `write_timeout`; the
    /// stream was reset. `since` is when the stream began to wait.
    Stalled { since: Instant },
}

/// Client resets that cancel work, counted per window: past the budget the
/// connection gets GOAWAY `ENHANCE_YOUR_CALM` (the Rapid Reset class,
/// CVE-2023-44487). Cancelling the handler already bounds what a reset
/// costs; the budget stops a client from making the server start and drop
/// work without end.
struct ResetBudget {
    window_start: Instant,
    in_window: u32,
    limit: u32,
}

/// The window the reset budget is counted over.
const RESET_WINDOW: Duration = Duration::from_secs(10);

impl ResetBudget {
    fn new(max_streams: u32) -> Self {
        ResetBudget {
            window_start: Instant::now(),
            in_window: 0,
            limit: max_streams.saturating_mul(2).max(100),
        }
    }

    /// Counts one reset; false once the budget is spent.
    fn spend(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= RESET_WINDOW {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
        self.in_window <= self.limit
    }
}

/// When the connection last sent DATA, shared with its streams: a stream
/// that stalls on flow control takes the connection down with it only if
/// no other stream made progress meanwhile (the client opens no window at
/// all).
#[derive(Clone)]
struct Progress {
    epoch: Instant,
    /// Milliseconds after `epoch`.
    last_data_ms: Arc<AtomicU64>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            epoch: Instant::now(),
            last_data_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn sent(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_data_ms.fetch_max(ms, Relaxed);
    }

    fn sent_since(&self, t: Instant) -> bool {
        let last = self.epoch + Duration::from_millis(self.last_data_ms.load(Relaxed));
        last > t
    }
}

/// What every stream of a connection is held to (the HTTP/1 driver's
/// bounds, R10.4).
#[derive(Clone)]
struct StreamRules {
    max_body: Option<u64>,
    body_timeout: Duration,
    write_timeout: Duration,
    progress: Progress,
}

/// Serves one HTTP/2 connection over any transport.
async fn serve_io<T>(
    io: T,
    cork: Option<Arc<Cork>>,
    info: ConnInfo,
    shared: &Shared,
    handler: Arc<dyn Handler>,
    mut stop: watch::Receiver<bool>,
) -> (CloseReason, u64)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = &shared.config;
    let metrics = &shared.metrics;
    let max_streams = cfg.http2_max_streams;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(max_streams)
        .max_header_list_size(cfg.limits.max_head_bytes as u32)
        .max_send_buffer_size(256 * 1024)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    let handshake = tokio::time::timeout(cfg.header_timeout, builder.handshake(io)).await;
    uncork(cork.as_deref());
    let mut conn = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(conn = info.id, error = %e, "h2 handshake failed");
            return (CloseReason::Error, 0);
        }
        Err(_) => return (CloseReason::Timeout, 0),
    };
    let rules = StreamRules {
        max_body: cfg.limits.max_body_bytes,
        body_timeout: cfg.body_timeout,
        write_timeout: cfg.write_timeout,
        progress: Progress::new(),
    };
    let mut resets = ResetBudget::new(max_streams);
    let mut write_timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)> = None;
    let mut write_stalled = false;
    let mut requests = 0u64;
    let mut idle_since = Instant::now();
    let mut closing: Option<CloseReason> = None;
    let mut shutdown_deadline = None;
    // Streams run in this task, like the HTTP/1 driver's pipeline: every
    // response that is ready in one turn is queued before the connection is
    // polled again and flushes, so a burst of answers leaves in one write
    // (one segment per response would overrun the congestion window).
    // Their number is the handlers in flight: never above the advertised
    // SETTINGS_MAX_CONCURRENT_STREAMS (a stream over it is refused).
    let mut streams: FuturesUnordered<Pin<Box<dyn Future<Output = Outcome> + Send>>> =
        FuturesUnordered::new();
    let mut in_flight = InFlight {
        gauge: &metrics.h2_streams_in_flight,
        held: 0,
    };
    let result = loop {
        let idle_at = idle_since + cfg.idle_timeout;
        let shutdown_at =
            shutdown_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            biased;
            Some(outcome) = streams.next(), if !streams.is_empty() => {
                in_flight.sub();
                match outcome {
                    Outcome::Done => {}
                    Outcome::Cancelled => {
                        metrics.h2_streams_cancelled.fetch_add(1, Relaxed);
                        if !resets.spend(Instant::now()) && closing.is_none() {
                            tracing::debug!(conn = info.id, "h2: reset flood, GOAWAY ENHANCE_YOUR_CALM");
                            metrics.h2_calm_goaways.fetch_add(1, Relaxed);
                            conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                            // Nothing more of this client's is worth running.
                            streams.clear();
                            in_flight.clear();
                            closing = Some(CloseReason::Error);
                            shutdown_deadline = Some(Instant::now() + CLOSE_GRACE);
                        }
                    }
                    Outcome::Stalled { since } => {
                        metrics.h2_streams_stalled.fetch_add(1, Relaxed);
                        if !rules.progress.sent_since(since) && closing.is_none() {
                            // The client opens no window at all: a
                            // connection without progress is closed, as
                            // HTTP/1's write timeout closes it.
                            tracing::debug!(conn = info.id, "h2: no flow-control progress, closing");
                            conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                            streams.clear();
                            in_flight.clear();
                            closing = Some(CloseReason::Timeout);
                            shutdown_deadline = Some(Instant::now() + CLOSE_GRACE);
                        }
                    }
                }
            }
            // Every poll of the connection may write: uncork before the
            // task sleeps.
            next = poll_fn(|cx| {
                let polled = conn.poll_accept(cx);
                uncork(cork.as_deref());
                if polled.is_pending() {
                    // A socket that takes nothing for the write timeout
                    // ends the connection, as over HTTP/1 (the peer stopped
                    // reading; h2 would hold what it buffered for it).
                    match cork.as_deref().and_then(Cork::blocked_since) {
                        Some(since) => {
                            if write_timer.as_ref().is_none_or(|(armed, _)| *armed != since) {
                                let at = since + cfg.write_timeout;
                                write_timer = Some((since, Box::pin(tokio::time::sleep_until(at))));
                            }
                            let Some((_, timer)) = write_timer.as_mut() else {
                                return polled;
                            };
                            if timer.as_mut().poll(cx).is_ready() {
                                write_stalled = true;
                                return Poll::Ready(None);
                            }
                        }
                        None => write_timer = None,
                    }
                }
                polled
            }) => match next {
                Some(Ok(first)) => {
                    // Take every stream that already arrived before running
                    // any: their answers then leave together.
                    let mut next = Some(first);
                    while let Some((req, mut respond)) = next.take() {
                        requests += 1;
                        metrics.requests.fetch_add(1, Relaxed);
                        if streams.len() >= max_streams as usize {
                            // h2 counts a stream the client reset as closed at
                            // once; its task may not have seen the reset yet.
                            // The handlers in flight never pass the limit.
                            metrics.h2_streams_refused.fetch_add(1, Relaxed);
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                        } else {
                            let info = ConnInfo { request_index: requests, ..info };
                            streams.push(Box::pin(stream_task(
                                req,
                                respond,
                                handler.clone(),
                                info,
                                rules.clone(),
                            )));
                            in_flight.add(&metrics.h2_streams_in_flight_max_per_conn);
                        }
                        if let Some(Some(Ok(more))) =
                            poll_fn(|cx| conn.poll_accept(cx)).now_or_never()
                        {
                            next = Some(more);
                        }
                    }
                    uncork(cork.as_deref());
                }
                Some(Err(e)) => {
                    tracing::debug!(conn = info.id, error = %e, "h2 connection error");
                    let calm = e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) && e.is_go_away() && !e.is_remote();
                    if calm {
                        metrics.h2_calm_goaways.fetch_add(1, Relaxed);
                    }
                    break closing.unwrap_or(CloseReason::Error);
                }
                None if write_stalled => {
                    tracing::debug!(conn = info.id, "h2: the socket took nothing for the write timeout");
                    break CloseReason::Timeout;
                }
                // GOAWAY done (or the client went away) and every stream ended.
                None => break closing.unwrap_or(CloseReason::ClientClose),
            },
            changed = stop.changed(), if closing.is_none() => {
                let _ = changed;
                // GOAWAY with the last stream we took; in-flight ones finish.
                conn.graceful_shutdown();
                closing = Some(CloseReason::Shutdown);
                shutdown_deadline = Some(Instant::now() + cfg.shutdown_timeout);
            }
            _ = tokio::time::sleep_until(idle_at), if closing.is_none() => {
                if streams.is_empty() {
                    conn.graceful_shutdown();
                    closing = Some(CloseReason::IdleTimeout);
                    shutdown_deadline = Some(Instant::now() + cfg.shutdown_timeout);
                } else {
                    idle_since = Instant::now();
                }
            }
            _ = tokio::time::sleep_until(shutdown_at), if shutdown_deadline.is_some() => {
                break closing.unwrap_or(CloseReason::Shutdown);
            }
        }
        // Streams in flight are the connection's progress; each is bounded
        // by the body-read and write timeouts on its own.
        if !streams.is_empty() {
            idle_since = Instant::now();
        }
    };
    drop(streams);
    in_flight.clear();
    (result, requests)
}

/// Time a connection that is being closed for abuse or lack of progress
/// gets to flush its GOAWAY before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Reset streams the client may leave in h2's accept queue (h2's default,
/// stated here so the defaults table can say it): over it, GOAWAY
/// `ENHANCE_YOUR_CALM`.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams the server may have to reset for the client's protocol errors
/// before it sends GOAWAY `ENHANCE_YOUR_CALM` (h2's default; the
/// "MadeYouReset" class, CVE-2025-8671).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// This connection's share of the handlers-in-flight gauge, given back
/// however the connection ends.
struct InFlight<'a> {
    gauge: &'a AtomicU64,
    held: u64,
}

impl InFlight<'_> {
    /// One more stream running; `max` keeps the most any connection ran.
    fn add(&mut self, max: &AtomicU64) {
        self.held += 1;
        self.gauge.fetch_add(1, Relaxed);
        max.fetch_max(self.held, Relaxed);
    }

    fn sub(&mut self) {
        self.held = self.held.saturating_sub(1);
        self.gauge.fetch_sub(1, Relaxed);
    }

    fn clear(&mut self) {
        self.gauge.fetch_sub(self.held, Relaxed);
        self.held = 0;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One request stream: the handler's answer, body and trailers, with flow
/// control on both directions. A reset from the client drops the handler
/// (in the proxy, its upstream request) or the body it was producing; the
/// request body is held to `max_body` and `body_timeout`, the answer to
/// `write_timeout` per window grant.
async fn stream_task(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    rules: StreamRules,
) -> Outcome {
    let (parts, recv) = req.into_parts();
    let declared = match declared_length(&parts) {
        Ok(n) => n,
        Err(status) => return answer_now(respond, status),
    };
    if let (Some(n), Some(max)) = (declared, rules.max_body)
        && n > max
    {
        // Refused before a byte is read; dropping the body tells the
        // client with RST_STREAM(NO_ERROR) after the answer.
        return answer_now(respond, StatusCode::PAYLOAD_TOO_LARGE);
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
    let mut call = handler.call(req);
    // The handler first: most answer at once, and then the reset is not
    // worth a look.
    let resp = poll_fn(|cx| {
        if let Poll::Ready(resp) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    drop(call);
    let Some(resp) = resp else {
        return Outcome::Cancelled;
    };
    // A body that broke its bounds gets the HTTP/1 driver's answer, whatever
    // the handler made of the error.
    let resp = match broken.get() {
        Some(BrokenBound::TooLarge) => return answer_now(respond, StatusCode::PAYLOAD_TOO_LARGE),
        Some(BrokenBound::TimedOut) => return answer_now(respond, StatusCode::REQUEST_TIMEOUT),
        None => resp,
    };
    let (mut parts, body) = resp.into_parts();
    // RFC 9113 §8.2.2: connection-specific fields are malformed in HTTP/2.
    keepwire_proto::hop::strip_hop_by_hop(&mut parts.headers, false);
    // The length is the body's (h2 checks it against the DATA frames); a
    // HEAD answer keeps the handler's, which describes the GET.
    if !head_only {
        parts.headers.remove(http::header::CONTENT_LENGTH);
        if let Some(n) = body.size_hint().exact() {
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                keepwire_proto::encode::decimal_value(n),
            );
        }
    }
    if !parts.headers.contains_key(http::header::DATE) {
        parts.headers.insert(http::header::DATE, crate::date::now());
    }
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
    match send_body(send, body, &rules).await {
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
fn declared_length(parts: &http::request::Parts) -> Result<Option<u64>, StatusCode> {
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
fn answer_now(mut respond: h2::server::SendResponse<Bytes>, status: StatusCode) -> Outcome {
    let resp = Response::builder()
        .status(status)
        .header(http::header::CONTENT_LENGTH, 0)
        .header(http::header::DATE, crate::date::now())
        .body(())
        .unwrap_or_default();
    let _ = respond.send_response(resp, true);
    Outcome::Done
}
