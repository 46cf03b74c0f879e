//! HTTP/2 on the server (RFC 9113): cleartext with prior knowledge (h2c),
//! and over TLS when ALPN picks `h2`. Which connections speak it is
//! [`accept`](super::accept)'s choice; from here on they speak nothing else.
//!
//! Multiplexing is the chapter's fourth technique (R4.5): many requests in
//! flight on one connection without pipelining's head-of-line order. The
//! framing itself is the `h2` crate's; what lives here is the connection
//! discipline keepwire keeps for HTTP/1.x too:
//! - A cleartext connection comes here when its first bytes, peeked before
//!   any driver reads them, are the HTTP/2 preface: h2c costs HTTP/1 one
//!   `MSG_PEEK` per connection.
//! - Idle connections and shutdown end with GOAWAY naming the last stream
//!   processed: streams above it were never seen by a handler and are safe
//!   for the client to retry (the multiplexed R8.3).
//! - Connection-specific fields are removed from responses (RFC 9113
//!   §8.2.2: they are malformed in HTTP/2), with the same hop-by-hop
//!   stripping the proxy uses.
//! - Extended CONNECT (RFC 8441) is advertised: a stream the handler
//!   switches (a WebSocket over HTTP/2) is handed over as an
//!   [`Upgraded`](crate::upgrade::Upgraded) and stays one of the
//!   connection's streams until it drops ([`tunnel`]).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{ConnInfo, Handler, Shared};
use stream::{Outcome, StreamRules, stream_task};
use wire::{Cork, Corked, uncork};

pub(super) mod stream;
mod tunnel;
mod wire;

use crate::metrics::CloseReason;

/// Serves one cleartext HTTP/2 connection (h2c with prior knowledge: its
/// preface is still unread in the socket; [`serve_tls`] is the ALPN path)
/// until it ends; returns why
/// and how many requests it carried.
pub(crate) async fn serve(
    stream: TcpStream,
    info: ConnInfo,
    shared: &Arc<Shared>,
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
    let io = Corked::new(stream, cork.clone());
    serve_io(io, Some(cork), info, shared, handler, stop).await
}

/// Serves one HTTP/2 connection over TLS (ALPN chose `h2`) until it ends;
/// returns why and how many requests it carried.
pub(crate) async fn serve_tls(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
    shared: &Arc<Shared>,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) -> (CloseReason, u64) {
    match Cork::of(tls.get_ref().0).ok() {
        Some(cork) => {
            let io = Corked::new(tls, cork.clone());
            serve_io(io, Some(cork), info, shared, handler, stop).await
        }
        None => serve_io(tls, None, info, shared, handler, stop).await,
    }
}

/// Client resets that cancel work, counted per window: past the budget the
/// connection gets GOAWAY `ENHANCE_YOUR_CALM` (the Rapid Reset class,
/// CVE-2023-44487). Cancelling the handler already bounds what a reset
/// costs; the budget stops a client from making the server start and drop
/// work without end.
pub(super) struct ResetBudget {
    window_start: Instant,
    in_window: u32,
    limit: u32,
}

/// The window the reset budget is counted over.
const RESET_WINDOW: Duration = Duration::from_secs(10);

impl ResetBudget {
    pub(super) fn new(max_streams: u32) -> Self {
        ResetBudget {
            window_start: Instant::now(),
            in_window: 0,
            limit: max_streams.saturating_mul(2).max(100),
        }
    }

    /// Counts one reset; false once the budget is spent.
    pub(super) fn spend(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= RESET_WINDOW {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
        self.in_window <= self.limit
    }
}

/// What a finished stream means for its connection.
pub(super) enum StreamEnd {
    /// Nothing: the connection goes on.
    Fine,
    /// The reset budget is spent: the connection ends ([`ResetBudget`]).
    CancelFlood,
    /// A stream found no window for the write timeout and the client has
    /// opened none since: a connection without progress is closed, as
    /// HTTP/1's write timeout closes it.
    NoProgress,
}

/// Counts a finished stream in `counters` (the protocol's cancelled and
/// stalled streams) and says what it means for its connection; one that
/// is `closing` already goes on closing.
pub(super) fn stream_end(
    outcome: Outcome,
    resets: &mut ResetBudget,
    rules: &StreamRules,
    closing: bool,
    [cancelled, stalled]: [&AtomicU64; 2],
) -> StreamEnd {
    match outcome {
        Outcome::Done => StreamEnd::Fine,
        Outcome::Cancelled => {
            cancelled.fetch_add(1, Relaxed);
            if !resets.spend(Instant::now()) && !closing {
                return StreamEnd::CancelFlood;
            }
            StreamEnd::Fine
        }
        Outcome::Stalled { since } => {
            stalled.fetch_add(1, Relaxed);
            if !rules.progress.sent_since(since) && !closing {
                return StreamEnd::NoProgress;
            }
            StreamEnd::Fine
        }
    }
}

/// Serves one HTTP/2 connection over any transport.
async fn serve_io<T>(
    io: T,
    cork: Option<Arc<Cork>>,
    info: ConnInfo,
    shared: &Arc<Shared>,
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
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        // RFC 8441: a CONNECT with `:protocol` switches one stream (a
        // WebSocket over HTTP/2), answered by the handler (tunnel.rs).
        .enable_connect_protocol();
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
    let rules = StreamRules::of(shared);
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
                let counters = [&metrics.h2_streams_cancelled, &metrics.h2_streams_stalled];
                match stream_end(outcome, &mut resets, &rules, closing.is_some(), counters) {
                    StreamEnd::Fine => {}
                    StreamEnd::CancelFlood => {
                        tracing::debug!(conn = info.id, "h2: reset flood, GOAWAY ENHANCE_YOUR_CALM");
                        metrics.h2_calm_goaways.fetch_add(1, Relaxed);
                        conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                        // Nothing more of this client's is worth running.
                        streams.clear();
                        in_flight.clear();
                        closing = Some(CloseReason::Error);
                        shutdown_deadline = Some(Instant::now() + CLOSE_GRACE);
                    }
                    StreamEnd::NoProgress => {
                        tracing::debug!(conn = info.id, "h2: no flow-control progress, closing");
                        conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                        streams.clear();
                        in_flight.clear();
                        closing = Some(CloseReason::Timeout);
                        shutdown_deadline = Some(Instant::now() + CLOSE_GRACE);
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
                            let (handler, rules) = (handler.clone(), rules.clone());
                            if tunnel::is_extended_connect(&req) {
                                streams.push(Box::pin(tunnel::extended_connect(
                                    req, respond, handler, info, rules,
                                )));
                            } else {
                                streams.push(Box::pin(stream_task(
                                    req, respond, handler, info, rules,
                                )));
                            }
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
            _ = stop.changed(), if closing.is_none() => {
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
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

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
pub(super) struct InFlight<'a> {
    pub(super) gauge: &'a AtomicU64,
    pub(super) held: u64,
}

impl InFlight<'_> {
    /// One more stream running; `max` keeps the most any connection ran.
    pub(super) fn add(&mut self, max: &AtomicU64) {
        self.held += 1;
        self.gauge.fetch_add(1, Relaxed);
        max.fetch_max(self.held, Relaxed);
    }

    pub(super) fn sub(&mut self) {
        self.held = self.held.saturating_sub(1);
        self.gauge.fetch_sub(1, Relaxed);
    }

    pub(super) fn clear(&mut self) {
        self.gauge.fetch_sub(self.held, Relaxed);
        self.held = 0;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}
