//! One body type for both directions.
//!
//! Request bodies stream out of the connection task through a small bounded
//! channel: when the handler stops reading, the channel fills, the connection
//! stops reading the socket, and TCP pushes back on the client. Nothing is
//! buffered whole. A `100 Continue` is owed only to a handler that actually
//! reads, so the body tells the connection when it is first polled.
//!
//! Response bodies are usually `Full` (one buffer; its exact length becomes
//! `Content-Length`) or any `http_body::Body` boxed, which streams chunked
//! (or close-delimited to HTTP/1.0 clients, R5.4).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

pub(crate) mod h3_recv;

/// Errors a body can yield.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The peer's message broke off or was malformed (R8.2, R10).
    #[error("body: {0}")]
    Protocol(keepwire_proto::Error),
    /// The connection went away before the body ended.
    #[error("body: connection closed before the body ended")]
    Closed,
    /// A body of the application's failed.
    #[error("body: {0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// The peer sent more than the body limit allows (413).
    #[error("body: larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The peer sent nothing for the body-read timeout (408).
    #[error("body: no data for {0:?}")]
    TimedOut(std::time::Duration),
}

type BoxBody = Pin<Box<dyn http_body::Body<Data = Bytes, Error = BodyError> + Send>>;

/// A request or response body.
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Incoming {
        rx: mpsc::Receiver<Result<Bytes, BodyError>>,
        /// Fired on first poll: the reader wants the body (100-continue).
        wants: Option<oneshot::Sender<()>>,
        /// Announced length, if framed by Content-Length.
        length: Option<u64>,
    },
    Boxed(BoxBody),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "Empty",
            Kind::Full(_) => "Full",
            Kind::Incoming { .. } => "Incoming",
            Kind::Boxed(_) => "Boxed",
        };
        f.debug_struct("Body").field("kind", &kind).finish()
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl Body {
    /// No body.
    pub fn empty() -> Self {
        Body { kind: Kind::Empty }
    }

    /// A body of one buffer.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body {
            kind: Kind::Full(Some(bytes.into())),
        }
    }

    /// Any `http_body::Body` (a stream, an axum body, ...). A [`Body`]
    /// comes back as it is (not boxed again: one in memory stays so).
    pub fn wrap<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        let mut slot = Some(body);
        if let Some(same) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Body>>() {
            return same.take().unwrap_or_default();
        }
        let Some(body) = slot else {
            return Body::empty();
        };
        Body {
            kind: Kind::Boxed(Box::pin(body.map_err(|e| BodyError::Source(e.into())))),
        }
    }

    /// A body made of a stream of chunks, of unknown length: the client
    /// sends it chunked over HTTP/1.1 (DATA frames over HTTP/2) as the
    /// stream yields, without reading it whole first. An error from the
    /// stream cuts the request off (the server sees a truncated message).
    ///
    /// Only the first [`REPLAY_LIMIT`](crate::client::REPLAY_LIMIT) bytes
    /// are kept for a resend: a larger streamed body that was partly sent
    /// is never sent again (R8.3), the request fails instead.
    pub fn from_stream<S, E>(stream: S) -> Self
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use futures_util::StreamExt;
        Body::wrap(http_body_util::StreamBody::new(
            stream.map(|r| r.map(Frame::data)),
        ))
    }

    /// A body read from `reader` (a file, a pipe, a child's stdout) in
    /// chunks of up to 64 KiB, as [`Body::from_stream`] sends it.
    pub fn from_reader<R>(reader: R) -> Self
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            reader,
            64 * 1024,
        ))
    }

    /// A body fed by a channel: the sender side pushes chunks, dropping it
    /// ends the body. For streaming responses.
    pub fn channel(capacity: usize) -> (BodySender, Body) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            BodySender { tx },
            Body {
                kind: Kind::Incoming {
                    rx,
                    wants: None,
                    length: None,
                },
            },
        )
    }

    /// A body whose errors are already [`BodyError`]s (kept as they are,
    /// so a reader still sees `TooLarge` or `TimedOut`).
    pub(crate) fn boxed<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes, Error = BodyError> + Send + 'static,
    {
        Body {
            kind: Kind::Boxed(Box::pin(body)),
        }
    }

    pub(crate) fn incoming(
        rx: mpsc::Receiver<Result<Bytes, BodyError>>,
        wants: Option<oneshot::Sender<()>>,
        length: Option<u64>,
    ) -> Self {
        Body {
            kind: Kind::Incoming { rx, wants, length },
        }
    }

    /// The whole body in memory, refusing more than `limit` bytes.
    pub async fn collect(self, limit: usize) -> Result<Bytes, BodyError> {
        use http_body_util::BodyExt;
        let limited = http_body_util::Limited::new(self, limit);
        match limited.collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) => match e.downcast::<BodyError>() {
                Ok(b) => Err(*b),
                Err(other) => Err(BodyError::Source(other)),
            },
        }
    }

    /// `Some(bytes)` if the whole body is one buffer already in memory.
    pub(crate) fn take_full(&mut self) -> Option<Bytes> {
        match &mut self.kind {
            Kind::Empty => Some(Bytes::new()),
            Kind::Full(b) => Some(b.take().unwrap_or_default()),
            _ => None,
        }
    }
}

/// The sending half of [`Body::channel`].
#[derive(Debug, Clone)]
pub struct BodySender {
    tx: mpsc::Sender<Result<Bytes, BodyError>>,
}

impl BodySender {
    /// Sends a chunk, waiting while the connection is behind. Fails once the
    /// connection is gone.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<(), BodyError> {
        self.tx
            .send(Ok(chunk.into()))
            .await
            .map_err(|_| BodyError::Closed)
    }

    /// Ends the body with an error: the peer sees a truncated message.
    pub async fn abort(self) {
        let _ = self.tx.send(Err(BodyError::Closed)).await;
    }
}

impl Body {
    /// The body of an HTTP/2 stream, read as the reader polls it: flow-control
    /// capacity goes back to the peer only as the reader takes the data, so a
    /// slow reader slows the sender instead of filling memory (and a stream
    /// whose reader is gone holds nothing but its window). The bounds are the
    /// HTTP/1 driver's: at most `max` bytes (over it, [`BodyError::TooLarge`])
    /// and at most `timeout` between two frames ([`BodyError::TimedOut`]).
    pub(crate) fn from_h2_bounded(recv: h2::RecvStream, bounds: H2BodyBounds) -> Body {
        if recv.is_end_stream() {
            return Body::empty();
        }
        Body {
            kind: Kind::Boxed(Box::pin(H2Body {
                recv,
                bounds,
                read: 0,
                data_done: false,
                ended: false,
                timer: ReadTimer::default(),
            })),
        }
    }
}

/// What an HTTP/2 or HTTP/3 body may cost (see [`Body::from_h2_bounded`]
/// and [`h3_recv`]): a request's on the server, a response's in the client
/// (its read timeout).
#[derive(Debug, Clone, Default)]
pub(crate) struct H2BodyBounds {
    /// Most bytes the body may carry.
    pub max: Option<u64>,
    /// Longest wait for the next frame.
    pub timeout: Option<std::time::Duration>,
    /// The declared `content-length`, for the size hint (and the length an
    /// HTTP/3 response must have, see [`h3_recv::Reads::Response`]).
    pub length: Option<u64>,
    /// Set when a bound was broken, for the stream's answer (413 or 408).
    pub broken: Option<std::sync::Arc<std::sync::OnceLock<BrokenBound>>>,
}

/// Which bound an HTTP/2 or HTTP/3 request body broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokenBound {
    /// More than `max` bytes.
    TooLarge,
    /// No frame within `timeout`.
    TimedOut,
}

struct H2Body {
    recv: h2::RecvStream,
    bounds: H2BodyBounds,
    read: u64,
    data_done: bool,
    /// A bound was broken: the body ends (with that error).
    ended: bool,
    timer: ReadTimer,
}

impl H2BodyBounds {
    /// Notes that `bound` was broken (for the stream's answer) and gives
    /// the error the body ends with.
    pub(crate) fn broke(&self, bound: BrokenBound) -> BodyError {
        if let Some(b) = &self.broken {
            let _ = b.set(bound);
        }
        match bound {
            BrokenBound::TooLarge => BodyError::TooLarge(self.max.unwrap_or(0)),
            BrokenBound::TimedOut => BodyError::TimedOut(self.timeout.unwrap_or_default()),
        }
    }
}

/// The body-read timeout of a body read as its reader polls it: armed when
/// the stream has nothing, disarmed when it yields.
#[derive(Default)]
pub(crate) struct ReadTimer(Option<Pin<Box<tokio::time::Sleep>>>);

impl ReadTimer {
    /// Ready once `timeout` has passed since the stream first had nothing
    /// (the timer is then disarmed); pending before, and always without a
    /// timeout.
    pub(crate) fn poll_expired(
        &mut self,
        timeout: Option<std::time::Duration>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        use std::future::Future as _;
        let Some(timeout) = timeout else {
            return Poll::Pending;
        };
        let timer = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        let expired = timer.as_mut().poll(cx);
        if expired.is_ready() {
            self.0 = None;
        }
        expired
    }

    /// The stream yielded: the next wait counts afresh.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl H2Body {
    fn broke(&mut self, bound: BrokenBound) -> BodyError {
        // Nothing more is read: the stream's window stays shut.
        self.ended = true;
        self.bounds.broke(bound)
    }

    /// Pending from the stream: the body-read timeout runs.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        std::task::ready!(self.timer.poll_expired(self.bounds.timeout, cx));
        Poll::Ready(Some(Err(self.broke(BrokenBound::TimedOut))))
    }
}

impl http_body::Body for H2Body {
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
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.timer.disarm();
                    let n = chunk.len();
                    this.read = this.read.saturating_add(n as u64);
                    if this.bounds.max.is_some_and(|max| this.read > max) {
                        return Poll::Ready(Some(Err(this.broke(BrokenBound::TooLarge))));
                    }
                    let _ = this.recv.flow_control().release_capacity(n);
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.data_done = true;
                    return Poll::Ready(Some(Err(BodyError::Source(Box::new(e)))));
                }
                Poll::Ready(None) => {
                    this.data_done = true;
                    this.timer.disarm();
                }
                Poll::Pending => return this.wait(cx),
            }
        }
        if this.recv.is_end_stream() {
            return Poll::Ready(None);
        }
        match this.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(BodyError::Source(Box::new(e))))),
            Poll::Pending => this.wait(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.bounds.length {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.read)),
            None => SizeHint::default(),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming { rx, wants, .. } => {
                if let Some(w) = wants.take() {
                    let _ = w.send(());
                }
                rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
            }
            Kind::Boxed(b) => b.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Incoming { length, .. } => *length == Some(0),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming { length, .. } => length.map(SizeHint::with_exact).unwrap_or_default(),
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::full(b)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::full(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::full(Bytes::from(s))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::full(Bytes::from(v))
    }
}
