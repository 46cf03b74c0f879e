//! The byte stream under an HTTP/1 connection: plain TCP, or TLS over TCP;
//! plain TCP either through epoll or (Linux, [`IoBackend::Uring`]) through
//! io_uring.
//!
//! The HTTP/1 drivers (server connection, client pool) are written once
//! against this type, so persistence, pipelining, timeouts and lingering
//! close behave the same with and without TLS. An enum rather than a trait
//! object or a type parameter: one predictable branch per I/O call, no
//! allocation per connection for plain TCP, and one copy of each driver.
//!
//! Everything TCP-level (socket options, peeking for a stale connection,
//! the lingering drain, TIME_WAIT) still acts on the TCP socket underneath,
//! reached with [`Transport::tcp`]; TLS only adds records on top, and a
//! `close_notify` before the TCP close.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::net::{FIRST_READ, READ_CHUNK};

#[cfg(target_os = "linux")]
mod uring;
#[cfg(target_os = "linux")]
pub use uring::UringStream;

/// How a server talks to the kernel about its cleartext HTTP/1
/// connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoBackend {
    /// Readiness through tokio's reactor (epoll), then `recv`/`send`.
    #[default]
    Epoll,
    /// Receives and sends queued on an io_uring per thread, submitted
    /// together once per scheduler tick (Linux only). TLS and HTTP/2
    /// connections stay on epoll.
    Uring,
}

impl IoBackend {
    /// Checks that this backend can run here: for `Uring`, that the kernel
    /// lets this process set up an io_uring. An error says why (to fail at
    /// start-up rather than fall back silently).
    pub fn check(self) -> io::Result<()> {
        match self {
            IoBackend::Epoll => Ok(()),
            #[cfg(target_os = "linux")]
            IoBackend::Uring => uring::probe().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "io_uring is not available ({e}): check the kernel.io_uring_disabled \
                         sysctl and any seccomp filter, or use the epoll backend"
                    ),
                )
            }),
            #[cfg(not(target_os = "linux"))]
            IoBackend::Uring => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring exists only on Linux: use the epoll backend",
            )),
        }
    }
}

impl std::str::FromStr for IoBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "epoll" => Ok(IoBackend::Epoll),
            "uring" | "io_uring" | "io-uring" => Ok(IoBackend::Uring),
            other => Err(format!("unknown I/O backend {other:?} (epoll or uring)")),
        }
    }
}

/// A connection's byte stream.
#[derive(Debug)]
pub enum Transport {
    /// Cleartext TCP.
    Tcp(TcpStream),
    /// TLS (rustls) on TCP, either side of the handshake.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// Cleartext TCP through io_uring ([`IoBackend::Uring`]). Boxed: inline
    /// it would make every connection's future larger, epoll's included
    /// (R5.6: idle memory).
    #[cfg(target_os = "linux")]
    Uring(Box<UringStream>),
}

/// What a TLS handshake agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, e.g. `TLSv1_3`.
    pub version: &'static str,
    /// Cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
    /// The application protocol ALPN chose (`h2`, `http/1.1`, `h3`); `None`: no
    /// ALPN (HTTP/1.1).
    pub alpn: Option<&'static str>,
}

impl TlsInfo {
    /// The facts of an established TLS connection.
    pub fn of(state: &rustls::CommonState) -> Self {
        TlsInfo {
            version: state
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("unknown"),
            cipher: state
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("unknown"),
            alpn: state.alpn_protocol().map(|p| match p {
                b"h2" => "h2",
                b"http/1.1" => "http/1.1",
                b"h3" => "h3",
                _ => "other",
            }),
        }
    }
}

impl From<TcpStream> for Transport {
    fn from(s: TcpStream) -> Self {
        Transport::Tcp(s)
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for Transport {
    fn from(s: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        Transport::Tls(Box::new(tokio_rustls::TlsStream::Server(s)))
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for Transport {
    fn from(s: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        Transport::Tls(Box::new(tokio_rustls::TlsStream::Client(s)))
    }
}

impl Transport {
    /// Cleartext TCP on `io`: a server's accepted connection. Falls back
    /// to epoll (with a warning) only if this thread cannot set up its
    /// ring, which [`IoBackend::check`] at start-up makes unlikely.
    pub fn plain(stream: TcpStream, io: IoBackend) -> Self {
        match io {
            #[cfg(target_os = "linux")]
            IoBackend::Uring => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                match UringStream::new(stream) {
                    Ok(s) => Transport::Uring(Box::new(s)),
                    Err((stream, e)) => {
                        tracing::warn!(fd, error = %e, "io_uring unavailable: this connection uses epoll");
                        Transport::Tcp(stream)
                    }
                }
            }
            _ => Transport::Tcp(stream),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tcp(s) => s,
            Transport::Tls(s) => s.get_ref().0,
            #[cfg(target_os = "linux")]
            Transport::Uring(s) => s.tcp(),
        }
    }

    /// Whether the bytes are TLS records.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// What TLS agreed on; `None` for TCP.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            Transport::Tls(s) => Some(TlsInfo::of(s.get_ref().1)),
            _ => None,
        }
    }

    /// The application protocol TLS agreed on (ALPN), if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Transport::Tls(s) => s.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    /// Reads what is available into `buf`, first making room in it; 0 is
    /// the end of the stream.
    pub(crate) fn poll_read_available(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        // Room is made only once there is something to read: an idle
        // connection released its buffer and must not get it back just by
        // waiting (R5.6: idle connections should cost next to nothing).
        // (TLS may hold decrypted bytes the socket does not show, so it
        // always gets its room.)
        let s = match self {
            Transport::Tcp(s) => s,
            // io_uring: room is made only when bytes arrived (they wait in
            // the ring's pool until then).
            #[cfg(target_os = "linux")]
            Transport::Uring(s) => {
                return s.poll_recv(cx, |data| {
                    make_room(buf);
                    buf.extend_from_slice(data);
                });
            }
            Transport::Tls(_) => {
                make_room(buf);
                return tokio_util::io::poll_read_buf(Pin::new(self), cx, buf);
            }
        };
        loop {
            std::task::ready!(s.poll_read_ready(cx))?;
            make_room(buf);
            let room = buf.capacity() - buf.len();
            let mut got = 0;
            // A read that returns less than the room it was given drained
            // the socket, so tokio is told the socket is no longer readable
            // (the WouldBlock below): the next wait goes to epoll instead of
            // trying a `recv` just to see EAGAIN, one wasted syscall per
            // keep-alive request (nginx does the same with `rev->ready`).
            // tokio clears readiness only if no new event arrived since it
            // handed us this one, so bytes that land meanwhile are not
            // missed.
            let result = s.try_io(tokio::io::Interest::READABLE, || {
                got = s.try_read_buf(buf)?;
                if got > 0 && got < room {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(got)
            });
            return Poll::Ready(match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
                // A stale readiness: wait for the next one.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => other,
            });
        }
    }

    /// [`Self::poll_read_available`] as a future (cancel-safe: nothing is
    /// read unless it completes).
    pub(crate) async fn read_available(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_available(cx, buf)).await
    }

    /// Writes some of `bufs` (not all empty): at once if the socket has
    /// room (no timer is armed on that path), else waiting at most `timeout`
    /// (an error of kind `TimedOut`). Never `Ok(0)`.
    pub(crate) async fn write_timed(
        &mut self,
        bufs: &[io::IoSlice<'_>],
        timeout: Duration,
    ) -> io::Result<usize> {
        // io_uring: the kernel bounds the send (a linked timeout), so the
        // wait needs no timer here.
        #[cfg(target_os = "linux")]
        if let Transport::Uring(s) = self {
            return match std::future::poll_fn(|cx| s.poll_send(cx, bufs, Some(timeout))).await {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                other => other,
            };
        }
        let first = match self {
            // The plain write first: no waker, no task budget.
            Transport::Tcp(s) => match s.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                other => Poll::Ready(other),
            },
            _ => Pin::new(&mut *self).poll_write_vectored(&mut noop_context(), bufs),
        };
        let written = match first {
            Poll::Ready(r) => r,
            // The slow path's timer is boxed: inline, it would be part of
            // every connection's future, idle ones included.
            Poll::Pending => {
                let write =
                    std::future::poll_fn(|cx| Pin::new(&mut *self).poll_write_vectored(cx, bufs));
                Box::pin(tokio::time::timeout(timeout, write))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            }
        };
        match written {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            other => other,
        }
    }

    /// Pushes out what TLS buffered (nothing to do for TCP), waiting at most
    /// `timeout`.
    pub(crate) async fn flush_timed(&mut self, timeout: Duration) -> io::Result<()> {
        let Transport::Tls(s) = self else {
            return Ok(());
        };
        if let Poll::Ready(r) = Pin::new(&mut **s).poll_flush(&mut noop_context()) {
            return r;
        }
        let flush = std::future::poll_fn(|cx| Pin::new(&mut **s).poll_flush(cx));
        Box::pin(tokio::time::timeout(timeout, flush))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Queues TLS's `close_notify` and writes it if the socket takes it
    /// now, without waiting: for connections dropped where nothing can wait
    /// (a pool retiring idle connections). Nothing to do for TCP.
    pub(crate) fn close_quietly(&mut self) {
        if let Transport::Tls(s) = self {
            s.get_mut().1.send_close_notify();
            let _ = Pin::new(&mut **s).poll_flush(&mut noop_context());
        }
    }

    /// Ends TLS with `close_notify` (bounded by `timeout`) and returns the
    /// TCP socket for the TCP-level close (lingering or not). Without it a
    /// TLS peer cannot tell our close from a truncation attack (RFC 8446
    /// §6.1), which is the HTTPS form of R8.2's truncation question.
    pub async fn into_tcp(mut self, timeout: Duration) -> TcpStream {
        if let Transport::Tls(s) = &mut self {
            s.get_mut().1.send_close_notify();
        }
        let _ = self.flush_timed(timeout).await;
        match self {
            Transport::Tcp(s) => s,
            #[cfg(target_os = "linux")]
            Transport::Uring(s) => (*s).into_tcp(),
            Transport::Tls(s) => match *s {
                tokio_rustls::TlsStream::Server(t) => t.into_inner().0,
                tokio_rustls::TlsStream::Client(t) => t.into_inner().0,
            },
        }
    }
}

/// Room for the next read: a small first read, then whole chunks.
fn make_room(buf: &mut BytesMut) {
    let spare = buf.capacity() - buf.len();
    if buf.capacity() == 0 {
        *buf = crate::buffers::take(FIRST_READ);
    } else if spare < FIRST_READ / 2 {
        buf.reserve(READ_CHUNK);
    }
}

/// For trying an operation without waiting (a temporary: a `Context` must
/// not live across an await).
fn noop_context() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            #[cfg(target_os = "linux")]
            Transport::Uring(s) => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            #[cfg(target_os = "linux")]
            Transport::Uring(s) => s.poll_send(cx, &[io::IoSlice::new(buf)], None),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            #[cfg(target_os = "linux")]
            Transport::Uring(s) => s.poll_send(cx, bufs, None),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
            #[cfg(target_os = "linux")]
            Transport::Uring(_) => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            // Nothing is buffered: a send that returned is out.
            #[cfg(target_os = "linux")]
            Transport::Uring(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            #[cfg(target_os = "linux")]
            Transport::Uring(s) => {
                Poll::Ready(socket2::SockRef::from(s.tcp()).shutdown(std::net::Shutdown::Write))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiting on an idle connection must not allocate its read buffer
    /// (the server frees it after a quiet spell); data arriving does.
    #[tokio::test]
    async fn waiting_for_input_takes_no_buffer() {
        waiting_takes_no_buffer_on(IoBackend::Epoll).await;
        #[cfg(target_os = "linux")]
        if IoBackend::Uring.check().is_ok() {
            waiting_takes_no_buffer_on(IoBackend::Uring).await;
        }
    }

    async fn waiting_takes_no_buffer_on(io: IoBackend) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let mut ours = Transport::plain(ours, io);
        let wait = Duration::from_secs(5);
        for request in [&b"GET /a"[..], b"GET /b"] {
            tokio::io::AsyncWriteExt::write_all(&mut peer, request)
                .await
                .unwrap();
            let mut buf = BytesMut::new();
            let n = tokio::time::timeout(wait, ours.read_available(&mut buf))
                .await
                .expect("the bytes arrive")
                .unwrap();
            assert_eq!(&buf[..n], request);
            assert!(buf.capacity() >= FIRST_READ);
            // Drained (a short read): idle now. The server frees the
            // buffer; waiting again must not take it back.
            let mut released = BytesMut::new();
            let polled = ours.poll_read_available(&mut noop_context(), &mut released);
            assert!(polled.is_pending());
            assert_eq!(released.capacity(), 0, "an idle wait allocated");
        }
    }
}
