//! Noticing that an HTTP/1 client went away while its response is owed.
//!
//! While a handler runs, an HTTP/1 connection at pipelining depth 1 does
//! not read: the next request waits in the socket until this response is
//! out. So a client that leaves (FIN, or RST) during a long-held handler —
//! a long poll, a slow upstream — would go unnoticed until the handler
//! ends. HTTP/2 has `RST_STREAM`, which drops the handler at once; this is
//! HTTP/1's counterpart, after Go's `net/http` (its background read cancels
//! the request's context when the connection closes).
//!
//! While a response is owed and the driver is not reading, it watches the
//! socket's read readiness (tokio's, no extra syscall while nothing
//! arrives) and peeks one byte when it turns readable:
//! - end of stream (FIN) or an error (RST): [`PeerGone`] fires (an error,
//!   or the connection's end, also says the connection is lost);
//! - bytes (a pipelined request): it stops watching until the next read,
//!   which takes them as today (no busy loop on a readable socket).
//!
//! A read that meets end of stream fires it too. Firing only *tells*:
//! the response is still written, so a client that half-closed (request,
//! then `shutdown(Write)`, R8.4) still gets its answer from a handler that
//! does not wait on [`PeerGone`]; one that does (a long poll) ends early,
//! as Go's handlers do when their context is cancelled. A handler whose
//! early answer would be wrong (the proxy) waits for the connection to be
//! lost instead ([`PeerGone::wait_lost`]: RST, an error, its end).
//!
//! Backends: epoll and io_uring watch the TCP socket the same way (an
//! io_uring receive in flight may take bytes first: the peek then sees
//! none and the watch goes on; a FIN stays visible to a peek). Over TLS
//! the peek sees records, not plaintext, so bytes get one read through
//! TLS: `close_notify` reads as the end of the input, anything else
//! (a pipelined request) stays buffered and ends the watch.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use http::Request;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::Wake;
use crate::transport::Transport;

/// Fires when the client of an HTTP/1 request went away (its connection
/// reached end of stream or broke) or the connection ended, as a request
/// extension (also [`super::super::Incoming::peer_gone`]).
///
/// Await [`PeerGone::wait`] beside a long wait (long poll, stream) to stop
/// early: the client sends no more. A response is still written if the
/// handler gives one, and a client that only half-closed (R8.4) reads it;
/// one that closed does not. Where an early answer would be wrong (a
/// proxy relaying its upstream's), [`PeerGone::wait_lost`] waits for the
/// connection to be lost (RST, a socket error, its end): no answer can
/// reach the client then.
///
/// Cost: one shared state per connection (made at its first request); per
/// request an `Arc` clone and, in the [`Request`] view, one extension
/// entry (a small box). Callgrind, `keepwire serve --respond` on one
/// thread, `ab -c 10` (2,500 minus 500 requests): +332 instructions per
/// keep-alive request (15,242 → 15,574, +2.2 %; most of it the extension
/// map's insert and its box), +469 per one-request connection (23,748 →
/// 24,217). The watch itself costs nothing while handlers answer at once:
/// it runs only while a response is owed.
///
/// Over HTTP/2 a request carries none ([`PeerGone::of`] gives one that
/// never fires): the client's `RST_STREAM` drops the handler's future,
/// which is cancellation enough.
#[derive(Clone, Default)]
pub struct PeerGone(Option<Arc<Inner>>);

struct Inner {
    /// [`OPEN`], [`CLOSED`] or [`LOST`]; only rises.
    state: AtomicU8,
    notify: Notify,
}

impl std::fmt::Debug for PeerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerGone")
            .field("watched", &self.0.is_some())
            .field("gone", &self.is_gone())
            .finish()
    }
}

impl PeerGone {
    /// A live signal (one per HTTP/1 connection).
    pub(crate) fn new() -> Self {
        PeerGone(Some(Arc::new(Inner {
            state: AtomicU8::new(OPEN),
            notify: Notify::new(),
        })))
    }

    /// The signal of `req`, or one that never fires if it carries none
    /// (HTTP/2, a request built rather than read).
    pub fn of<B>(req: &Request<B>) -> Self {
        req.extensions()
            .get::<PeerGone>()
            .cloned()
            .unwrap_or_default()
    }

    /// Whether this is a live signal (not the never-firing default).
    pub(crate) fn is_live(&self) -> bool {
        self.0.is_some()
    }

    fn state(&self) -> u8 {
        self.0.as_ref().map_or(OPEN, |i| i.state.load(Acquire))
    }

    /// Whether the client is gone: it sends no more (FIN, maybe a
    /// half-close) or the connection is lost.
    pub fn is_gone(&self) -> bool {
        self.state() >= CLOSED
    }

    /// Whether the connection is lost (RST, a socket error, or it ended):
    /// no answer reaches the client.
    pub fn is_lost(&self) -> bool {
        self.state() == LOST
    }

    /// Resolves once [`PeerGone::is_gone`] (never, for a signal that is
    /// not watched). Cancel-safe.
    pub async fn wait(&self) {
        self.wait_for(CLOSED).await
    }

    /// Resolves once [`PeerGone::is_lost`] (never, for a signal that is
    /// not watched). Cancel-safe.
    pub async fn wait_lost(&self) {
        self.wait_for(LOST).await
    }

    async fn wait_for(&self, state: u8) {
        let Some(inner) = &self.0 else {
            return std::future::pending().await;
        };
        loop {
            let notified = inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inner.state.load(Acquire) >= state {
                return;
            }
            notified.await;
        }
    }

    /// Says the client is gone, and whether the connection is `lost`.
    pub(crate) fn fire(&self, lost: bool) {
        let Some(inner) = &self.0 else { return };
        let to = if lost { LOST } else { CLOSED };
        if inner.state.fetch_max(to, Release) < to {
            inner.notify.notify_waiters();
        }
    }
}

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const LOST: u8 = 2;

/// What the watch saw.
pub(super) enum Seen {
    /// End of stream, or an error (`lost`): the client is gone.
    Gone { lost: bool },
    /// Bytes wait (a pipelined request, or a TLS record): stop watching.
    Bytes,
}

/// The driver's input: a read into `buf` if it `reads`, else the watch.
/// Over TLS, bytes the watch sees get one read (bounded by `buf`'s room):
/// a `close_notify` then ends the input as a FIN does, and a pipelined
/// request waits parsed-later in `buf` (the connection then stops
/// watching, as for cleartext).
pub(super) fn poll_input(
    stream: &mut Transport,
    buf: &mut BytesMut,
    reads: bool,
    cx: &mut Context<'_>,
) -> Poll<Wake> {
    if reads {
        return stream.poll_read_available(cx, buf).map(Wake::Read);
    }
    match std::task::ready!(poll_watch(stream.tcp(), cx)) {
        Seen::Bytes if stream.is_tls() => stream.poll_read_available(cx, buf).map(Wake::Read),
        seen => Poll::Ready(Wake::Peer(seen)),
    }
}

/// Resolves when the socket turns readable and a peek says what is there.
/// Readiness that a peek finds stale is cleared, so this waits on the
/// event loop again rather than spin.
fn poll_watch(stream: &TcpStream, cx: &mut Context<'_>) -> Poll<Seen> {
    loop {
        if std::task::ready!(stream.poll_read_ready(cx)).is_err() {
            return Poll::Ready(Seen::Gone { lost: true });
        }
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let peek = stream.try_io(tokio::io::Interest::READABLE, || {
            socket2::SockRef::from(stream).peek(&mut byte)
        });
        return Poll::Ready(match peek {
            Ok(0) => Seen::Gone { lost: false },
            Ok(_) => Seen::Bytes,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => Seen::Gone { lost: true },
        });
    }
}

/// No input is waiting in the socket (a plain close would not send RST).
///
/// Asked of tokio's readiness first, which costs no syscall (nginx asks
/// its `rev->ready` the same way): the driver's last short read told
/// tokio the socket was drained, so "not readable" means nothing arrived
/// since that the event loop has seen. Only a readable socket is peeked
/// at, and one that holds just the peer's FIN is drained too: a close then
/// resets nothing.
pub(super) fn socket_drained(stream: &TcpStream) -> bool {
    let cx = &mut Context::from_waker(Waker::noop());
    if stream.poll_read_ready(cx).is_pending() {
        return true;
    }
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}
