//! HTTP/3 on the server (RFC 9114) over QUIC (RFC 9000), on UDP beside
//! every TLS listener, on the same port.
//!
//! HTTP/2 removed HTTP's head-of-line blocking but kept TCP's: one lost
//! segment stalls every stream behind it. QUIC keeps streams independent in
//! the transport and folds the TLS 1.3 handshake into its own (one round
//! trip instead of TCP's plus TLS's). The QUIC transport is quinn's, the
//! framing and QPACK h3's; the connection discipline is the one HTTP/1 and
//! HTTP/2 keep here:
//! - Every connection counts in the connection limits (total and per
//!   client IP, shared with the TCP listeners' connections) from its first
//!   packet on; over them it is refused (CONNECTION_REFUSED) before any
//!   handshake work. Near them, a client must first prove its address
//!   with a Retry (`retry.rs` says when and why), so spoofed Initials
//!   cannot hold another address's slots.
//! - The handshake gets the header timeout; a request head gets it too,
//!   and is capped by `max_head_bytes` (SETTINGS_MAX_FIELD_SECTION_SIZE:
//!   over it, 431); bodies are held to `max_body` and the body timeout,
//!   answers to the write timeout per flow-control grant.
//! - Streams in flight are capped by the transport itself: the client gets
//!   `http3_max_streams` bidirectional streams of credit, and more only as
//!   streams end. A client that stops a stream (STOP_SENDING) cancels its
//!   handler; too many cancels in a window close the connection with
//!   H3_EXCESSIVE_LOAD, as HTTP/2's reset budget does.
//! - Idle connections (no stream for the idle timeout) and shutdown end
//!   with GOAWAY; streams in flight finish within the shutdown timeout.
//! - Requests that arrived in 0-RTT early data may be replays (RFC 8470,
//!   R8.3): a method that is not idempotent gets 425 Too Early.

mod alt_svc;
mod quic;
mod retry;
mod stream;
#[cfg(test)]
mod tests;

pub(super) use alt_svc::AltSvc;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h3::error::Code;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use retry::QuicRetry;
pub use stream::EarlyData;

use super::h2::stream::{Outcome, StreamRules};
use super::h2::{CLOSE_GRACE, InFlight, ResetBudget, StreamEnd, stream_end};
use super::{Config, ConnInfo, ConnSlot, Handler, Shared};
use crate::metrics::CloseReason;

/// Per-stream receive window: what a client may send on one stream before
/// the handler reads it (quinn's default is 1.25 MB).
const STREAM_WINDOW: u32 = 256 * 1024;
/// Connection receive window: what a client may have unread across all its
/// streams (quinn's default is unbounded).
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Unidirectional streams a client may open: HTTP/3 uses three (control,
/// QPACK encoder and decoder).
const UNI_STREAMS: u32 = 8;

/// The QUIC server config: the TCP listeners' certificate (a copy of their
/// rustls config, offering only `h3`), with the limits above.
pub(super) fn server_config(
    tls: &rustls::ServerConfig,
    config: &Config,
) -> io::Result<quinn::ServerConfig> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // QUIC takes 0-RTT at any size or not at all; what a request in it may
    // do is decided per stream (425 for what is not replay-safe).
    tls.max_early_data_size = u32::MAX;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("QUIC needs TLS 1.3: {e}"),
        )
    })?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(u32::MAX)));
    transport
        .max_concurrent_bidi_streams(config.http3_max_streams.into())
        .max_concurrent_uni_streams(UNI_STREAMS.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        .max_idle_timeout(Some(idle));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// Binds UDP on `addr` and makes it a QUIC endpoint (call within a tokio
/// runtime).
pub(super) fn bind(addr: SocketAddr, server: quinn::ServerConfig) -> io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // As the TCP listeners (`net::bind_listener`).
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| io::Error::other("QUIC needs a tokio runtime"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket.into(),
        runtime,
    )
}

/// Accepts QUIC connections on `endpoint` until `stop`, then lets each
/// one end gracefully (GOAWAY) and waits for them.
pub(super) async fn serve_endpoint(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) {
    let local = endpoint.local_addr().ok();
    let mut stopped = stop.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stopped.wait_for(|v| *v) => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let (shared, handler, stop) = (shared.clone(), handler.clone(), stop.clone());
                    conns.spawn(connection(incoming, local, shared, handler, stop));
                }
                None => break,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // New connections are refused from here on.
    endpoint.set_server_config(None);
    while conns.join_next().await.is_some() {}
    // Let the CONNECTION_CLOSE frames leave.
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
}

/// Admits one QUIC connection under the limits, completes its handshake
/// within the header timeout, and serves it.
async fn connection(
    incoming: quinn::Incoming,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) {
    let born = Instant::now();
    let m = &shared.metrics;
    let peer = incoming.remote_address();
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let (slot, open, per_ip) = ConnSlot::open(&shared, peer.ip());
    let cfg = &shared.config;
    let validated = incoming.remote_address_validated();
    if cfg.quic_retry.wanted(validated, open, per_ip, cfg) && incoming.may_retry() {
        // Stateless: the client takes a slot when it comes back with the
        // token, from an address it proved it receives at.
        drop(slot);
        if incoming.retry().is_ok() {
            m.h3_retries.fetch_add(1, Relaxed);
        }
        return;
    }
    m.connections_accepted.fetch_add(1, Relaxed);
    m.h3_connections_accepted.fetch_add(1, Relaxed);
    if open > cfg.max_connections || per_ip > cfg.max_connections_per_ip {
        incoming.refuse();
        m.closed(CloseReason::Limit, 0, born.elapsed());
        return;
    }
    let local = match (incoming.local_ip(), local) {
        (Some(ip), Some(l)) => SocketAddr::new(ip, l.port()),
        (None, Some(l)) => l,
        _ => peer,
    };
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC accept failed");
            m.closed(CloseReason::Error, 0, born.elapsed());
            return;
        }
    };
    // Streams are accepted from the first flight on (0-RTT, RFC 9001
    // §4.6.1): each knows whether it came before the handshake completed,
    // and only replay-safe requests run then. `serve` holds the handshake
    // to the header timeout.
    let (conn, handshake) = match connecting.into_0rtt() {
        Ok(pair) => pair,
        Err(_) => {
            // Only a client can be refused here; a server always may.
            m.closed(CloseReason::Error, 0, born.elapsed());
            return;
        }
    };
    let id = shared.next_id.fetch_add(1, Relaxed) + 1;
    let info = ConnInfo {
        id,
        peer,
        local,
        request_index: 0,
    };
    let serve = serve(conn, handshake, info, &shared, handler, stop);
    let (reason, requests) = Box::pin(serve).await;
    tracing::debug!(conn = id, %peer, %local, requests, ?reason, "h3 connection closed");
    m.closed(reason, requests, born.elapsed());
    drop(slot);
}

/// The error code a connection closes with (RFC 9114 §8.1).
fn code(c: Code) -> quinn::VarInt {
    quinn::VarInt::from_u64(c.value()).unwrap_or(quinn::VarInt::MAX)
}

/// Sends GOAWAY: streams the client opens after it are rejected
/// (H3_REQUEST_REJECTED: safe to retry, the multiplexed R8.3).
async fn goaway(h3c: &mut h3::server::Connection<quic::Connection, Bytes>) {
    let _ = tokio::time::timeout(CLOSE_GRACE, h3c.shutdown(0)).await;
}

/// Rejects a request stream unread with H3_REQUEST_REJECTED (RFC 9114
/// §4.1.1: nothing of it was processed, so the client may retry it), both
/// halves: dropped, it would be stopped with H3_NO_ERROR and its answer
/// would end empty. h3 0.0.8 has no public call for this before the head
/// is read; its resolver's stream is reached through `frame_stream`.
fn reject(mut resolver: h3::server::RequestResolver<quic::Connection, Bytes>) {
    use h3::quic::{RecvStream as _, SendStream as _};
    let rejected = Code::H3_REQUEST_REJECTED.value();
    let stream = &mut resolver.frame_stream.stream;
    stream.stop_sending(rejected);
    stream.reset(rejected);
}

/// Why a connection that failed ended (quinn's account of it; h3's error
/// says less).
fn reason_of(conn: &quinn::Connection, closing: Option<CloseReason>) -> CloseReason {
    if let Some(r) = closing {
        return r;
    }
    use quinn::ConnectionError as E;
    match conn.close_reason() {
        Some(E::ApplicationClosed(_) | E::ConnectionClosed(_) | E::Reset) => {
            CloseReason::ClientClose
        }
        Some(E::TimedOut) => CloseReason::IdleTimeout,
        _ => CloseReason::Error,
    }
}

/// Serves one HTTP/3 connection until it ends; returns why and how many
/// requests it carried.
async fn serve(
    conn: quinn::Connection,
    handshake: quinn::ZeroRttAccepted,
    info: ConnInfo,
    shared: &Arc<Shared>,
    handler: Arc<dyn Handler>,
    mut stop: watch::Receiver<bool>,
) -> (CloseReason, u64) {
    let cfg = &shared.config;
    let metrics = &shared.metrics;
    let handshake_by = Instant::now() + cfg.header_timeout;
    let mut handshake = Some(Box::pin(handshake));
    let quic = quic::Connection::new(conn.clone());
    let watches = quic.watches();
    let mut builder = h3::server::builder();
    builder.max_field_section_size(cfg.limits.max_head_bytes as u64);
    let built = builder.build::<_, Bytes>(quic);
    let mut h3c = match tokio::time::timeout_at(handshake_by, built).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(conn = info.id, error = %e, "h3 setup failed");
            return (CloseReason::Error, 0);
        }
        Err(_) => return (CloseReason::Timeout, 0),
    };
    let max_streams = cfg.http3_max_streams;
    let rules = StreamRules::of(shared);
    let mut resets = ResetBudget::new(max_streams);
    let mut streams: FuturesUnordered<Pin<Box<dyn Future<Output = Outcome> + Send>>> =
        FuturesUnordered::new();
    let mut in_flight = InFlight {
        gauge: &metrics.h3_streams_in_flight,
        held: 0,
    };
    let mut requests = 0u64;
    let mut idle_since = Instant::now();
    let mut closing: Option<CloseReason> = None;
    let mut deadline: Option<Instant> = None;
    let far = Duration::from_secs(86_400);
    let result = loop {
        let idle_at = idle_since + cfg.idle_timeout;
        let deadline_at = deadline.unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            biased;
            Some(outcome) = streams.next(), if !streams.is_empty() => {
                in_flight.sub();
                let counters = [&metrics.h3_streams_cancelled, &metrics.h3_streams_stalled];
                match stream_end(outcome, &mut resets, &rules, closing.is_some(), counters) {
                    StreamEnd::Fine => {}
                    StreamEnd::CancelFlood => {
                        tracing::debug!(conn = info.id, "h3: cancel flood, H3_EXCESSIVE_LOAD");
                        metrics.h3_calm_closes.fetch_add(1, Relaxed);
                        conn.close(code(Code::H3_EXCESSIVE_LOAD), b"too many cancelled streams");
                        streams.clear();
                        in_flight.clear();
                        break CloseReason::Error;
                    }
                    StreamEnd::NoProgress => {
                        // The connection goes, as HTTP/2's does.
                        tracing::debug!(conn = info.id, "h3: no flow-control progress, closing");
                        conn.close(code(Code::H3_NO_ERROR), b"no progress");
                        streams.clear();
                        in_flight.clear();
                        break CloseReason::Timeout;
                    }
                }
            }
            accepted = h3c.accept() => match accepted {
                Ok(Some(resolver)) => {
                    // Counted in `requests` once its head is read (stream.rs).
                    requests += 1;
                    if streams.len() >= max_streams as usize {
                        // Not reached with quinn: a client gets credit for
                        // a new stream only once an old one is freed, after
                        // its task ended. Kept as the bound's last word.
                        metrics.h3_streams_refused.fetch_add(1, Relaxed);
                        reject(resolver);
                    } else {
                        let info = ConnInfo { request_index: requests, ..info };
                        streams.push(Box::pin(stream::stream_task(
                            resolver,
                            watches.clone(),
                            handler.clone(),
                            info,
                            rules.clone(),
                        )));
                        in_flight.add(&metrics.h3_streams_in_flight_max_per_conn);
                    }
                }
                // The client sent GOAWAY and every stream ended.
                Ok(None) => break closing.unwrap_or(CloseReason::ClientClose),
                Err(e) => {
                    tracing::debug!(conn = info.id, error = %e, "h3 connection ended");
                    break reason_of(&conn, closing);
                }
            },
            _ = stop.changed(), if closing.is_none() => {
                goaway(&mut h3c).await;
                closing = Some(CloseReason::Shutdown);
                deadline = Some(Instant::now() + cfg.shutdown_timeout);
            }
            _ = tokio::time::sleep_until(idle_at), if closing.is_none() => {
                if streams.is_empty() {
                    goaway(&mut h3c).await;
                    closing = Some(CloseReason::IdleTimeout);
                    deadline = Some(Instant::now() + cfg.shutdown_timeout);
                } else {
                    idle_since = Instant::now();
                }
            }
            _ = tokio::time::sleep_until(deadline_at), if deadline.is_some() => {
                break closing.unwrap_or(CloseReason::Shutdown);
            }
            _ = std::future::poll_fn(|cx| match handshake.as_mut() {
                Some(h) => h.as_mut().poll(cx),
                None => std::task::Poll::Pending,
            }), if handshake.is_some() => handshake = None,
            _ = tokio::time::sleep_until(handshake_by), if handshake.is_some() => {
                tracing::debug!(conn = info.id, "QUIC handshake timed out");
                conn.close(code(Code::H3_NO_ERROR), b"handshake timeout");
                streams.clear();
                in_flight.clear();
                break CloseReason::Timeout;
            }
        }
        if let Some(reason) = closing
            && streams.is_empty()
        {
            break reason;
        }
        if !streams.is_empty() {
            idle_since = Instant::now();
        }
    };
    drop(streams);
    in_flight.clear();
    conn.close(code(Code::H3_NO_ERROR), b"");
    (result, requests)
}

/// Binds a TCP listener on `addr` and, given a QUIC config, a QUIC
/// endpoint on the same port. With port 0 the TCP listener picks the port;
/// if that UDP port is taken, both are tried again (a few times).
pub(super) fn bind_pair(
    addr: SocketAddr,
    listen: crate::net::ListenOptions,
    quic: Option<&quinn::ServerConfig>,
) -> io::Result<(tokio::net::TcpListener, Option<quinn::Endpoint>)> {
    const TRIES: usize = 8;
    let mut tried = 0;
    loop {
        tried += 1;
        let listener = crate::net::bind_listener(addr, listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let Some(quic) = quic else {
            return Ok((listener, None));
        };
        let at = listener.local_addr()?;
        match bind(at, quic.clone()) {
            Ok(endpoint) => return Ok((listener, Some(endpoint))),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && tried < TRIES => {
                continue;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot listen for QUIC on udp {at}: {e}"),
                ));
            }
        }
    }
}

/// Binds a QUIC endpoint beside a listener bound elsewhere (its port).
pub(super) fn bind_beside(
    listener: &tokio::net::TcpListener,
    quic: &quinn::ServerConfig,
) -> io::Result<quinn::Endpoint> {
    let at = listener.local_addr()?;
    bind(at, quic.clone())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen for QUIC on udp {at}: {e}")))
}
