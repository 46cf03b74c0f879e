//! An HTTP/2 stream switched by extended CONNECT (RFC 8441), read and
//! written as bytes: the DATA frames of one stream, under its flow control.
//!
//! Both directions are bounded by the peer's windows, not by buffers here:
//! - Reading hands out one received DATA frame at a time and gives its
//!   bytes back to the peer's window (WINDOW_UPDATE) only as the caller
//!   consumes them, so a caller that stops reading stops the peer.
//! - Writing sends no more than the window the peer granted (capped per
//!   write), and waits for more: a peer that stops reading stops the
//!   caller, and nothing piles up in the connection's send buffer.
//!
//! The stream's end is END_STREAM both ways (a half-close, as a TCP FIN);
//! a RST_STREAM from the peer is a connection reset to the reader and the
//! writer. Dropping the stream before both ends were seen resets it
//! (`h2` sends RST_STREAM CANCEL).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes sent in one write at most (a few DATA frames): a bigger write
/// goes out in turns, each under the window.
const MAX_WRITE: usize = 64 * 1024;

/// One HTTP/2 stream's two halves.
pub(crate) struct H2Stream {
    send: ::h2::SendStream<Bytes>,
    recv: ::h2::RecvStream,
    /// The DATA frame being read, its unread rest.
    chunk: Bytes,
    /// END_STREAM was sent.
    ended: bool,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("unread", &self.chunk.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl H2Stream {
    pub(crate) fn new(send: ::h2::SendStream<Bytes>, recv: ::h2::RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            chunk: Bytes::new(),
            ended: false,
        }
    }
}

/// The I/O error for an h2 one: a reset is `ConnectionReset`, as a TCP RST
/// would be.
fn io_error(e: ::h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = if e.is_reset() || e.is_go_away() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::BrokenPipe
    };
    io::Error::new(kind, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.chunk.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.chunk = data,
                // RST_STREAM(NO_ERROR): the peer is done and wants nothing
                // more (RFC 9113 §8.1), an end like END_STREAM.
                Some(Err(e)) if e.reason() == Some(::h2::Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.chunk.len().min(buf.remaining());
        buf.put_slice(&this.chunk[..n]);
        this.chunk.advance(n);
        // Consumed: the peer may send as much again.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(MAX_WRITE);
        loop {
            let granted = self.send.capacity();
            if granted > 0 {
                let n = granted.min(want);
                let data = Bytes::copy_from_slice(&buf[..n]);
                self.send.send_data(data, false).map_err(io_error)?;
                return Poll::Ready(Ok(n));
            }
            self.send.reserve_capacity(want);
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                // The stream can no longer send (reset, or already ended).
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the HTTP/2 stream was closed",
                    )));
                }
            }
        }
    }

    /// The connection's task writes the frames out.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// END_STREAM: the half-close.
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            self.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
