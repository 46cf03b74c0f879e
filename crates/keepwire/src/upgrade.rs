//! The hand-off of a connection that stopped speaking HTTP (R9.1, R9.3).
//!
//! Both sides switch protocols: the server after answering 101 or 2xx to
//! CONNECT, the client after receiving 101. Both hand the raw connection to
//! their caller the same way, so the types live here, beside neither: the
//! client does not build server types, and the server's connection limits
//! ride along without this module knowing them.
//!
//! Over HTTP/2 there is no connection to hand over: an extended CONNECT
//! (RFC 8441, a CONNECT with a `:protocol` pseudo-header) switches one
//! stream instead, once answered 2xx, and the [`Upgraded`] carries that
//! stream's DATA frames (`upgrade/h2.rs`). Callers read and write it the
//! same way whichever it carries.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::transport::Transport;

pub(crate) mod h2;

/// The `:protocol` of an HTTP/2 extended CONNECT (RFC 8441 §4), e.g.
/// `websocket`. On the server it is a request extension of such a CONNECT;
/// a client request carries it as an extension to send one.
pub use ::h2::ext::Protocol;

/// The `:protocol` of `req` if it is an extended CONNECT (RFC 8441).
pub fn connect_protocol<B>(req: &Request<B>) -> Option<&Protocol> {
    if req.method() != Method::CONNECT {
        return None;
    }
    req.extensions().get::<Protocol>()
}

/// The raw connection after 101 Switching Protocols, or 2xx to CONNECT
/// (R9.1, R9.3), or the HTTP/2 stream after 2xx to an extended CONNECT
/// (RFC 8441): from here on it is an opaque byte stream, read and written
/// through its [`AsyncRead`] and [`AsyncWrite`].
#[derive(Debug)]
pub struct Upgraded {
    io: Io,
    /// Bytes the peer sent after the head that switched (already read).
    read_buf: BytesMut,
    /// Held for its `Drop` as long as the stream lives. On the server: the
    /// connection's place under `max_connections` and the per-IP cap, kept
    /// until the tunnel ends (R9.5: a tunnel is still a connection).
    #[expect(dead_code, reason = "held for its Drop: lives as long as the tunnel")]
    slot: Option<Box<dyn Any + Send + Sync>>,
}

/// What an [`Upgraded`] reads and writes.
#[derive(Debug)]
enum Io {
    /// A whole connection (TCP, or TLS on TCP).
    Conn(Transport),
    /// One HTTP/2 stream (RFC 8441).
    H2(Box<h2::H2Stream>),
}

impl Upgraded {
    /// A connection that holds no server connection slot (a tunnel's far
    /// side, an upgraded client connection); `read_buf` holds the bytes the
    /// peer sent after the head that switched, read first.
    pub fn new(stream: Transport, read_buf: BytesMut) -> Self {
        Upgraded {
            io: Io::Conn(stream),
            read_buf,
            slot: None,
        }
    }

    /// A connection that keeps `slot` alive until it drops.
    pub(crate) fn holding(
        stream: Transport,
        read_buf: BytesMut,
        slot: impl Any + Send + Sync,
    ) -> Self {
        Upgraded {
            io: Io::Conn(stream),
            read_buf,
            slot: Some(Box::new(slot)),
        }
    }

    /// An HTTP/2 stream switched by extended CONNECT, keeping `slot` (if
    /// any) alive until it drops.
    pub(crate) fn h2_stream(
        stream: h2::H2Stream,
        slot: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        Upgraded {
            io: Io::H2(Box::new(stream)),
            read_buf: BytesMut::new(),
            slot,
        }
    }

    /// Whether this is an HTTP/2 stream (RFC 8441) rather than a whole
    /// connection.
    pub fn is_h2_stream(&self) -> bool {
        matches!(self.io, Io::H2(_))
    }
}

/// Reading yields the bytes read past the switching head first, then the
/// connection (or HTTP/2 stream), so a protocol spoken on the switched
/// connection (WebSocket, a tunnel) sees every byte the peer sent after
/// the head.
impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.read_buf.is_empty() {
            let n = this.read_buf.len().min(buf.remaining());
            buf.put_slice(&this.read_buf[..n]);
            this.read_buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Io::Conn(s) => Pin::new(s).poll_read(cx, buf),
            Io::H2(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

/// Calls `$f` on whichever stream an [`Upgraded`] carries.
macro_rules! on_io {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.io {
            Io::Conn($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::H2($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_io!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_io!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Conn(s) => s.is_write_vectored(),
            Io::H2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, s => s.poll_shutdown(cx))
    }
}

/// Request (server) or response (client) extension on a message that may
/// switch protocols: resolves to the connection once it has.
/// (Extensions must be `Clone`; clones share one receiver, and only the
/// first `wait` gets the connection.)
#[derive(Debug, Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// Waits for the switch; `None` if the exchange did not switch
    /// protocols (or the connection failed first).
    pub async fn wait(self) -> Option<Upgraded> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        rx.await.ok()
    }
}

/// A connection that may switch: the runtime sends the [`Upgraded`] into
/// the sender once it has, and the caller waits on the [`OnUpgrade`].
pub(crate) fn pending() -> (oneshot::Sender<Upgraded>, OnUpgrade) {
    let (tx, rx) = oneshot::channel();
    (tx, OnUpgrade(Arc::new(Mutex::new(Some(rx)))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes read past the switching head come first, then the socket's.
    #[tokio::test]
    async fn reads_the_leftover_before_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b" world").await.unwrap();
            let mut echo = [0u8; 4];
            s.read_exact(&mut echo).await.unwrap();
            echo
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut up = Upgraded::new(Transport::from(tcp), BytesMut::from(&b"hello"[..]));
        let mut got = vec![0u8; 11];
        up.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
        up.write_all(b"ping").await.unwrap();
        assert_eq!(&peer.await.unwrap(), b"ping");
    }
}
