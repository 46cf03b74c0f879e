//! Everything a new connection goes through before it speaks a protocol:
//! accept, the connection limits (R4.2, R5.6), the TLS handshake, and the
//! choice between HTTP/1 and HTTP/2 (ALPN over TLS, the preface in
//! cleartext). Deciding it here, once, lets [`conn`](super::conn) speak only
//! HTTP/1 and [`h2`](super::h2) only HTTP/2, neither handing a connection
//! back to the other.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{ConnInfo, ConnSlot, Handler, Shared, conn, h2};
use crate::metrics::CloseReason;
use crate::net;
use crate::transport::Transport;

/// Accepts from whichever listener has a connection (no task or channel
/// per listener: one accept costs one syscall and one spawn). Returns the
/// listener's address too: unless it is a wildcard, it is the connection's
/// local address, and `getsockname` can be skipped.
pub(super) async fn accept_any(
    listeners: &[(TcpListener, SocketAddr)],
) -> io::Result<(TcpStream, SocketAddr, Option<SocketAddr>)> {
    std::future::poll_fn(|cx| {
        for (l, addr) in listeners {
            if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                let local = (!addr.ip().is_unspecified()).then_some(*addr);
                return std::task::Poll::Ready(r.map(|(s, peer)| (s, peer, local)));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Admits a connection under the limits, settles its protocol, then serves
/// it with the driver for that protocol. Not an `async fn`, which would
/// keep its arguments in the future beside the copies it works on: this
/// future is most of what an idle connection costs (R5.6).
#[allow(clippy::manual_async_fn, reason = "see above: an async fn is larger")]
pub(super) fn start_connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    async move {
        let born = tokio::time::Instant::now();
        let m = &shared.metrics;
        m.connections_accepted.fetch_add(1, Relaxed);
        let (slot, open, per_ip) = ConnSlot::open(&shared, peer.ip());
        if open > shared.config.max_connections || per_ip > shared.config.max_connections_per_ip {
            Box::pin(conn::refuse(stream, &shared)).await;
            m.closed(CloseReason::Limit, 0, born.elapsed());
            return;
        }
        let id = shared.next_id.fetch_add(1, Relaxed) + 1;
        let info = |stream: &TcpStream| ConnInfo {
            id,
            peer,
            local: local.unwrap_or_else(|| stream.local_addr().unwrap_or(peer)),
            request_index: 0,
        };
        let stream: Transport = match shared.config.tls.clone() {
            Some(tls) => {
                // The handshake's flights are small writes: no Nagle.
                let _ = net::tune_stream(&stream);
                let Some(tls) = Box::pin(handshake(stream, tls, id, &shared, born)).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let info = info(tls.get_ref().0);
                    // Boxed, as below.
                    let serve = h2::serve_tls(tls, info, &shared, handler, stop);
                    let (reason, requests) = Box::pin(serve).await;
                    return h2_closed(&shared, info, reason, requests, born);
                }
                // ALPN `http/1.1`, or none: HTTP/1.1 is TLS's default.
                tls.into()
            }
            None if shared.config.http2 => match sniff(&stream, &shared, stop.clone()).await {
                FirstBytes::Http2 => {
                    // HTTP/1 sets TCP_NODELAY lazily (`conn`); HTTP/2 at once.
                    let _ = net::tune_stream(&stream);
                    let info = info(&stream);
                    // Boxed: the HTTP/2 connection's state is large, and inline
                    // it would be part of every HTTP/1 connection's future
                    // (R5.6: idle memory).
                    let serve = h2::serve(stream, info, &shared, handler, stop);
                    let (reason, requests) = Box::pin(serve).await;
                    return h2_closed(&shared, info, reason, requests, born);
                }
                FirstBytes::Http1 => Transport::plain(stream, shared.config.io),
                FirstBytes::Gone(reason) => {
                    shared.metrics.closed(reason, 0, born.elapsed());
                    return;
                }
            },
            None => Transport::plain(stream, shared.config.io),
        };
        conn::serve(stream, peer, local, id, slot, handler, stop).await;
    }
}

/// Completes the TLS handshake within the header timeout; `None`: it
/// failed (counted as closed).
async fn handshake(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    id: u64,
    shared: &Shared,
    born: tokio::time::Instant,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let timeout = shared.config.header_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(conn = id, error = %e, "TLS handshake failed");
            shared.metrics.closed(CloseReason::Error, 0, born.elapsed());
            None
        }
        Err(_) => {
            shared
                .metrics
                .closed(CloseReason::Timeout, 0, born.elapsed());
            None
        }
    }
}

fn h2_closed(
    shared: &Shared,
    info: ConnInfo,
    reason: CloseReason,
    requests: u64,
    born: tokio::time::Instant,
) {
    let ConnInfo {
        id, peer, local, ..
    } = info;
    tracing::debug!(conn = id, %peer, %local, requests, ?reason, "h2 connection closed");
    shared.metrics.closed(reason, requests, born.elapsed());
}

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a cleartext connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstBytes {
    /// The HTTP/2 preface (h2c with prior knowledge).
    Http2,
    /// Anything else: the HTTP/1 driver reads it (and answers what is not
    /// HTTP/1 with 400), as it does a connection the peer closed unused.
    Http1,
    /// Closed here without a byte to read: why.
    Gone(CloseReason),
}

/// Decides on the bytes peeked so far; `None`: too few to tell. Three
/// bytes decide: no HTTP/1 method starts with `PRI` (RFC 9113 §3.4
/// reserves it), and `PROPFIND` parts from it at the third.
fn classify(peeked: &[u8]) -> Option<FirstBytes> {
    if peeked.starts_with(PREFACE) || (peeked.len() >= 3 && PREFACE.starts_with(peeked)) {
        Some(FirstBytes::Http2)
    } else if PREFACE.starts_with(peeked) && !peeked.is_empty() {
        None
    } else {
        Some(FirstBytes::Http1)
    }
}

/// The longest pause between peeks at a partial preface (1, 2, 4, ... ms:
/// about an eighth of a second in all).
const PARTIAL_PAUSE_MAX: Duration = Duration::from_millis(64);

/// Waits for a cleartext connection's first bytes and peeks at them
/// (`MSG_PEEK`: they stay in the socket for whichever driver reads them),
/// so HTTP/1 pays one syscall per connection for h2c, not a copy.
///
/// A fresh connection is idle until its first byte (R5.6): it counts in
/// the idle gauge and gets the idle timeout. A shutdown meanwhile hands it
/// to the HTTP/1 driver, which closes idle connections gracefully.
async fn sniff(stream: &TcpStream, shared: &Shared, mut stop: watch::Receiver<bool>) -> FirstBytes {
    let _idle = IdleWhile::count(&shared.metrics.connections_idle);
    let deadline = Instant::now() + shared.config.idle_timeout;
    let mut buf = [0u8; PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        // Most clients write as soon as they connect: peek first, and arm
        // the idle timer only if nothing is there yet (arming the earliest
        // timer wakes the runtime's driver: an `eventfd` write).
        let now = std::future::poll_fn(|cx| {
            Poll::Ready(stream.poll_peek(cx, &mut tokio::io::ReadBuf::new(&mut buf)))
        });
        let peeked = match now.await {
            Poll::Ready(r) => r,
            Poll::Pending => tokio::select! {
                biased;
                r = stream.peek(&mut buf) => r,
                _ = stop.changed() => break FirstBytes::Http1,
                _ = tokio::time::sleep_until(deadline) => break FirstBytes::Gone(CloseReason::IdleTimeout),
            },
        };
        match peeked {
            // The peer closed unused: the HTTP/1 driver reads the EOF.
            Ok(0) => break FirstBytes::Http1,
            Ok(n) => match classify(&buf[..n]) {
                Some(verdict) => break verdict,
                // One or two bytes of what may be the preface: the rest is
                // a moment behind. The socket stays readable, so wait
                // rather than peek again at once, and not for long: a
                // client that stalls here is the HTTP/1 driver's to time
                // out (every h2c client writes its preface at once).
                None if pause <= PARTIAL_PAUSE_MAX => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                None => break FirstBytes::Http1,
            },
            Err(_) => break FirstBytes::Gone(CloseReason::Error),
        }
    }
}

/// One connection in the idle gauge for as long as this lives (also when
/// the task is aborted at the shutdown timeout).
struct IdleWhile<'a>(&'a AtomicU64);

impl<'a> IdleWhile<'a> {
    fn count(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Relaxed);
        IdleWhile(gauge)
    }
}

impl Drop for IdleWhile<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_choose_the_protocol() {
        use FirstBytes::{Http1, Http2};
        let cases: &[(&[u8], Option<FirstBytes>)] = &[
            (PREFACE, Some(Http2)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04", Some(Http2)),
            (b"PRI", Some(Http2)),
            (b"PRI * HTTP/2", Some(Http2)),
            (b"P", None),
            (b"PR", None),
            (b"PRO", Some(Http1)),
            (b"PROPFIND / HTTP/1.1\r\n", Some(Http1)),
            (b"POST / HTTP/1.1\r\n", Some(Http1)),
            (b"GET / HTTP/1.1\r\n", Some(Http1)),
            (b"PRI * HTTP/1.1\r\n", Some(Http1)),
            (b"\r\n", Some(Http1)),
            (b"\x16\x03\x01", Some(Http1)),
            (b"", Some(Http1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                classify(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// An idle keep-alive connection is its task: the connection future's
    /// size is most of what one costs (R5.6). Rare, large states (HTTP/2,
    /// TLS handshakes, lingering close, streamed responses, waits that
    /// only come with them) must stay boxed; inlining the HTTP/2
    /// connection alone once took this from 2.9 to 5.3 KB. Now 1,672
    /// bytes in a debug build, 1,656 in release (docs/BENCHMARKS.md,
    /// "Server, issue 16").
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let shared = Arc::new(Shared {
            config: super::super::Config::default(),
            metrics: Default::default(),
            per_ip: Default::default(),
            next_id: Default::default(),
        });
        let handler: Arc<dyn Handler> = Arc::new(|_: http::Request<crate::body::Body>| async {
            http::Response::new(crate::body::Body::empty())
        });
        let (_stop_tx, stop) = watch::channel(false);
        let conn = start_connection(stream, addr, None, shared, handler, stop);
        let size = std::mem::size_of_val(&conn);
        assert!(size <= 2048, "a connection's future is {size} bytes");
    }
}
