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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{ConnInfo, Handler, Shared};
use crate::body::Body;
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
}

impl Cork {
    fn of(tcp: &TcpStream) -> io::Result<Arc<Cork>> {
        let socket = socket2::SockRef::from(tcp).try_clone()?;
        Ok(Arc::new(Cork {
            corked: AtomicBool::new(false),
            socket: socket.into(),
        }))
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
        Pin::new(&mut self.stream).poll_flush(cx)
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
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(cfg.http2_max_streams)
        .max_header_list_size(cfg.limits.max_head_bytes as u32)
        .max_send_buffer_size(256 * 1024);
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
    let active = Arc::new(AtomicUsize::new(0));
    let mut requests = 0u64;
    let mut idle_since = Instant::now();
    let mut closing: Option<CloseReason> = None;
    let mut shutdown_deadline = None;
    // Streams run in this task, like the HTTP/1 driver's pipeline: every
    // response that is ready in one turn is queued before the connection is
    // polled again and flushes, so a burst of answers leaves in one write
    // (one segment per response would overrun the congestion window).
    let mut streams: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> =
        FuturesUnordered::new();
    loop {
        let idle_at = idle_since + cfg.idle_timeout;
        let shutdown_at =
            shutdown_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            biased;
            Some(()) = streams.next(), if !streams.is_empty() => {}
            // Every poll of the connection may write: uncork before the
            // task sleeps.
            next = poll_fn(|cx| {
                let polled = conn.poll_accept(cx);
                uncork(cork.as_deref());
                polled
            }) => match next {
                Some(Ok(first)) => {
                    // Take every stream that already arrived before running
                    // any: their answers then leave together.
                    let mut next = Some(first);
                    while let Some((req, respond)) = next.take() {
                        requests += 1;
                        shared.metrics.requests.fetch_add(1, Relaxed);
                        active.fetch_add(1, Relaxed);
                        let info = ConnInfo { request_index: requests, ..info };
                        let (handler, active) = (handler.clone(), active.clone());
                        streams.push(Box::pin(async move {
                            if let Err(e) = stream_task(req, respond, handler, info).await {
                                tracing::debug!(error = %e, "h2 stream ended early");
                            }
                            active.fetch_sub(1, Relaxed);
                        }));
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
                    return (closing.unwrap_or(CloseReason::Error), requests);
                }
                // GOAWAY done (or the client went away) and every stream ended.
                None => return (closing.unwrap_or(CloseReason::ClientClose), requests),
            },
            changed = stop.changed(), if closing.is_none() => {
                let _ = changed;
                // GOAWAY with the last stream we took; in-flight ones finish.
                conn.graceful_shutdown();
                closing = Some(CloseReason::Shutdown);
                shutdown_deadline = Some(Instant::now() + cfg.shutdown_timeout);
            }
            _ = tokio::time::sleep_until(idle_at), if closing.is_none() => {
                if active.load(Relaxed) == 0 {
                    conn.graceful_shutdown();
                    closing = Some(CloseReason::IdleTimeout);
                    shutdown_deadline = Some(Instant::now() + cfg.shutdown_timeout);
                } else {
                    idle_since = Instant::now();
                }
            }
            _ = tokio::time::sleep_until(shutdown_at), if shutdown_deadline.is_some() => {
                return (closing.unwrap_or(CloseReason::Shutdown), requests);
            }
        }
        if active.load(Relaxed) > 0 {
            idle_since = Instant::now();
        }
    }
}

/// One request stream: the handler's answer, body and trailers, with flow
/// control on both directions.
async fn stream_task(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
) -> Result<(), h2::Error> {
    let (parts, recv) = req.into_parts();
    let head_only = parts.method == Method::HEAD;
    let body = Body::from_h2(recv);
    let mut req = Request::from_parts(parts, body);
    req.extensions_mut().insert(info);
    let resp: Response<Body> = handler.call(req).await;
    let (mut parts, mut body) = resp.into_parts();
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
    let mut send = respond.send_response(Response::from_parts(parts, ()), end)?;
    if end {
        return Ok(());
    }
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            return Ok(());
        };
        match frame.into_data() {
            Ok(mut data) => {
                // A small body goes out with its HEADERS in the same turn:
                // waiting for a capacity grant first would write each
                // response's DATA in a later, separate segment.
                if data.len() <= SMALL_BODY && body.is_end_stream() {
                    return send.send_data(data, true);
                }
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let n = match poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(Ok(n)) => n,
                        Some(Err(e)) => return Err(e),
                        None => return Ok(()),
                    };
                    let chunk = data.split_to(n.min(data.len()));
                    // The last bytes carry END_STREAM themselves: one frame
                    // (and often one segment) fewer per response.
                    let last = data.is_empty() && body.is_end_stream();
                    send.send_data(chunk, last)?;
                    if last {
                        return Ok(());
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return send.send_trailers(trailers);
                }
            }
        }
    }
    send.send_data(Bytes::new(), true)
}
