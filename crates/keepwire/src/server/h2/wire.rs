//! The HTTP/2 connection's socket side: TCP_CORK per turn, and when the
//! socket stopped taking bytes (the write timeout's evidence).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The connection, corked while young.
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
pub(super) struct Corked<T> {
    stream: T,
    cork: Arc<Cork>,
    /// Bytes written so far, up to [`CORK_WHILE`].
    written: usize,
}

/// Cork while fewer than this many bytes were written: past slow start's
/// first rounds (10 segments, doubling per round trip).
const CORK_WHILE: usize = 64 * 1024;

impl<T> Corked<T> {
    pub(super) fn new(stream: T, cork: Arc<Cork>) -> Self {
        Corked {
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
pub(super) struct Cork {
    corked: AtomicBool,
    socket: std::net::TcpStream,
    /// Since when the socket takes no bytes: milliseconds after `epoch`,
    /// plus one (0: it takes them). A peer that stops reading is the
    /// write timeout's business, as over HTTP/1.
    blocked_since: AtomicU64,
    epoch: Instant,
}

impl Cork {
    pub(super) fn of(tcp: &TcpStream) -> io::Result<Arc<Cork>> {
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
    pub(super) fn blocked_since(&self) -> Option<Instant> {
        match self.blocked_since.load(Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }

    pub(super) fn cork(&self) {
        if !self.corked.swap(true, Relaxed) {
            let _ = socket2::SockRef::from(&self.socket).set_tcp_cork(true);
        }
    }

    /// Pushes out what a turn wrote.
    pub(super) fn uncork(&self) {
        if self.corked.swap(false, Relaxed) {
            let _ = socket2::SockRef::from(&self.socket).set_tcp_cork(false);
        }
    }
}

/// Pushes out what a turn wrote (see [`Corked`]).
pub(super) fn uncork(cork: Option<&Cork>) {
    if let Some(c) = cork {
        c.uncork();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Corked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Corked<T> {
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
