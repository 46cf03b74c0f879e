//! An HTTP/3 body, read as its reader polls it: QUIC's flow-control credit
//! goes back to the peer only as the reader takes the data, so a slow
//! reader slows the sender instead of filling memory. One reader for both
//! ends — a request's on the server, a response's in the client — held to
//! the bounds an HTTP/2 body is held to ([`H2BodyBounds`]): at most `max`
//! bytes (over it the peer is told to stop sending and the body fails with
//! [`BodyError::TooLarge`]) and at most `timeout` between two reads
//! ([`BodyError::TimedOut`], a truncation, R8.2). Where the two ends
//! differ, [`Reads`] says so.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use http_body::{Frame, SizeHint};

use super::{Body, BodyError, BrokenBound, H2BodyBounds, ReadTimer};

/// The receiving half of an HTTP/3 request stream, the client's or the
/// server's (h3 gives them the same methods on different types).
pub(crate) trait H3Recv: Send + Unpin + 'static {
    /// The next DATA of the stream; `None` once the data has ended.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>>;
    /// The trailers, if any, after the data.
    fn poll_recv_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<http::HeaderMap>, StreamError>>;
    /// Tells the peer to stop sending (`STOP_SENDING`).
    fn stop_sending(&mut self, code: Code);
}

/// [`H3Recv`] for h3's `RequestStream` of one side (`client`, `server`).
macro_rules! h3_recv_for {
    ($side:ident) => {
        impl<S> H3Recv for h3::$side::RequestStream<S, Bytes>
        where
            S: h3::quic::RecvStream + Send + Unpin + 'static,
        {
            fn poll_data(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<Bytes>, StreamError>> {
                h3::$side::RequestStream::poll_recv_data(self, cx)
                    .map_ok(|data| data.map(|mut buf| buf.copy_to_bytes(buf.remaining())))
            }
            fn poll_recv_trailers(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<http::HeaderMap>, StreamError>> {
                h3::$side::RequestStream::poll_recv_trailers(self, cx)
            }
            fn stop_sending(&mut self, code: Code) {
                h3::$side::RequestStream::stop_sending(self, code)
            }
        }
    };
}

h3_recv_for!(client);
h3_recv_for!(server);

/// Which body is read: where the two ends differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// A request, on the server: a body whose stream had ended with its
    /// HEADERS is empty (as HTTP/2's END_STREAM on HEADERS says, so a proxy
    /// sends no body on), as is one that declares `content-length: 0`; a
    /// broken bound is noted in `bounds.broken` for the answer (413 or
    /// 408) and the client is told to stop sending.
    Request,
    /// A response, in the client. On a timeout the server is not told to
    /// stop (h3-quinn 0.0.10 panics on a stop while a read is pending):
    /// dropping the body stops the stream.
    Response,
}

/// An HTTP/3 body of the `reads` kind, read from `recv` within `bounds`.
///
/// Either kind is held to its declared `content-length`, which h3 does not
/// check (RFC 9114 §4.1.2: a message whose DATA frames do not add up to it
/// is malformed): one that ends short is a truncation
/// ([`BodyError::Closed`], R8.2), one that runs over an error that stops
/// the stream with H3_MESSAGE_ERROR. A proxy thus never sends on a request
/// body that lied about its length as if it were whole.
pub(crate) fn body<R: H3Recv>(recv: R, bounds: H2BodyBounds, reads: Reads) -> Body {
    let body = H3Body {
        recv,
        bounds,
        reads,
        read: 0,
        data_done: false,
        ended: false,
        timer: ReadTimer::default(),
        peeked: None,
    };
    match reads {
        Reads::Request => body.start(),
        Reads::Response => Body::boxed(body),
    }
}

struct H3Body<R> {
    recv: R,
    bounds: H2BodyBounds,
    reads: Reads,
    read: u64,
    data_done: bool,
    ended: bool,
    timer: ReadTimer,
    /// What [`H3Body::start`] read, handed out first.
    peeked: Option<Result<Frame<Bytes>, BodyError>>,
}

type Polled = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

impl<R: H3Recv> H3Body<R> {
    /// The body, known to be empty when the request's stream had ended
    /// already (a GET's FIN comes with its HEADERS).
    fn start(mut self) -> Body {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match self.poll_frame_inner(&mut cx) {
            Poll::Ready(None) => Body::empty(),
            Poll::Ready(Some(frame)) => {
                self.peeked = Some(frame);
                Body::boxed(self)
            }
            Poll::Pending => {
                // The real waker comes with the reader's first poll; the
                // timer armed here counts from now.
                Body::boxed(self)
            }
        }
    }

    /// Ends the body with `e`. `stop`: also tell the peer to stop sending.
    fn fail(&mut self, e: BodyError, stop: bool) -> Polled {
        self.ended = true;
        if stop {
            self.recv.stop_sending(Code::H3_REQUEST_CANCELLED);
        }
        Poll::Ready(Some(Err(e)))
    }

    /// A bound was broken: nothing more is read.
    fn broke(&mut self, bound: BrokenBound) -> Polled {
        let e = self.bounds.broke(bound);
        let stop = bound == BrokenBound::TooLarge || self.reads == Reads::Request;
        self.fail(e, stop)
    }

    /// Pending from the stream: the body-read timeout runs.
    fn wait(&mut self, cx: &mut Context<'_>) -> Polled {
        std::task::ready!(self.timer.poll_expired(self.bounds.timeout, cx));
        self.broke(BrokenBound::TimedOut)
    }

    fn poll_frame_inner(&mut self, cx: &mut Context<'_>) -> Polled {
        if self.ended {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Ok(Some(chunk))) => {
                    self.timer.disarm();
                    self.read = self.read.saturating_add(chunk.len() as u64);
                    if self.bounds.max.is_some_and(|max| self.read > max) {
                        return self.broke(BrokenBound::TooLarge);
                    }
                    if let Some(n) = self.bounds.length
                        && self.read > n
                    {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("HTTP/3 body longer than its content-length {n}"),
                        );
                        self.recv.stop_sending(Code::H3_MESSAGE_ERROR);
                        return self.fail(BodyError::Source(Box::new(e)), false);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(Ok(None)) => {
                    self.data_done = true;
                    self.timer.disarm();
                    if self.bounds.length.is_some_and(|n| self.read < n) {
                        // Ended before its declared length: cut short.
                        return self.fail(BodyError::Closed, false);
                    }
                }
                Poll::Ready(Err(e)) => return self.fail(BodyError::Source(Box::new(e)), false),
                Poll::Pending => return self.wait(cx),
            }
        }
        match self.recv.poll_recv_trailers(cx) {
            Poll::Ready(Ok(Some(t))) => {
                self.ended = true;
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Poll::Ready(Ok(None)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => self.fail(BodyError::Source(Box::new(e)), false),
            Poll::Pending => self.wait(cx),
        }
    }
}

impl<R: H3Recv> http_body::Body for H3Body<R> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        if let Some(frame) = this.peeked.take() {
            return Poll::Ready(Some(frame));
        }
        this.poll_frame_inner(cx)
    }

    fn is_end_stream(&self) -> bool {
        let declared_empty = self.reads == Reads::Request && self.bounds.length == Some(0);
        self.peeked.is_none() && (self.ended || declared_empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self.bounds.length {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.read)),
            None => SizeHint::default(),
        }
    }
}
