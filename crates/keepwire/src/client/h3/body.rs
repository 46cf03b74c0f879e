//! An HTTP/3 response body, read as its reader polls it: QUIC's flow
//! control gives the server credit only as the data is taken, so a slow
//! reader slows the sender instead of filling memory. The bounds are the
//! HTTP/2 client's ([`crate::body::H2BodyBounds`]): at most `max` bytes
//! (over it the stream is stopped and the body fails with
//! [`BodyError::TooLarge`]) and at most `timeout` between two reads
//! ([`BodyError::TimedOut`], a truncation, R8.2). Dropping the body stops
//! the stream (quinn sends `STOP_SENDING`), which tells the server to give
//! up on it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};

use crate::body::{Body, BodyError};

type RecvHalf = h3::client::RequestStream<h3_quinn::RecvStream, Bytes>;

/// Bounds of one response body.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bounds {
    pub max: Option<u64>,
    pub timeout: Option<Duration>,
    /// The declared `content-length` (none for HEAD, 204 and 304): the
    /// size hint, and the length the body must have. h3 does not check it
    /// (RFC 9114 §4.1.2), so a body that ends short is a truncation here
    /// ([`BodyError::Closed`], R8.2) and one that runs over an error.
    pub length: Option<u64>,
}

pub(super) fn body(recv: RecvHalf, bounds: Bounds) -> Body {
    Body::boxed(H3Body {
        recv,
        bounds,
        read: 0,
        data_done: false,
        ended: false,
        timer: None,
    })
}

struct H3Body {
    recv: RecvHalf,
    bounds: Bounds,
    read: u64,
    data_done: bool,
    ended: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl H3Body {
    /// Ends the body with `e`. `stop`: also tell the server to stop now;
    /// only between reads (h3-quinn 0.0.10 panics on a stop while a read
    /// is pending), otherwise dropping the body stops the stream.
    fn fail(&mut self, e: BodyError, stop: bool) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.ended = true;
        if stop {
            self.recv
                .stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
        }
        Poll::Ready(Some(Err(e)))
    }

    /// Pending from the stream: the read timeout runs.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        use std::future::Future as _;
        let Some(timeout) = self.bounds.timeout else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                self.fail(BodyError::TimedOut(timeout), false)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl http_body::Body for H3Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match this.recv.poll_recv_data(cx) {
                Poll::Ready(Ok(Some(mut buf))) => {
                    this.timer = None;
                    let chunk = buf.copy_to_bytes(buf.remaining());
                    this.read = this.read.saturating_add(chunk.len() as u64);
                    if let Some(max) = this.bounds.max
                        && this.read > max
                    {
                        return this.fail(BodyError::TooLarge(max), true);
                    }
                    if let Some(n) = this.bounds.length
                        && this.read > n
                    {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("HTTP/3 response body longer than its content-length {n}"),
                        );
                        return this.fail(BodyError::Source(Box::new(e)), true);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(Ok(None)) => {
                    this.data_done = true;
                    this.timer = None;
                    if this.bounds.length.is_some_and(|n| this.read < n) {
                        // Ended before its declared length: cut short.
                        this.ended = true;
                        return Poll::Ready(Some(Err(BodyError::Closed)));
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(BodyError::Source(Box::new(e)))));
                }
                Poll::Pending => return this.wait(cx),
            }
        }
        match this.recv.poll_recv_trailers(cx) {
            Poll::Ready(Ok(Some(t))) => {
                this.ended = true;
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Poll::Ready(Ok(None)) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.ended = true;
                Poll::Ready(Some(Err(BodyError::Source(Box::new(e)))))
            }
            Poll::Pending => this.wait(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.bounds.length {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.read)),
            None => SizeHint::default(),
        }
    }
}
