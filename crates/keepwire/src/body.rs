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

    /// Any `http_body::Body` (a stream, an axum body, ...).
    pub fn wrap<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        Body {
            kind: Kind::Boxed(Box::pin(body.map_err(|e| BodyError::Source(e.into())))),
        }
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
    /// The body of an HTTP/2 stream. Flow-control capacity goes back to the
    /// peer as the reader takes the data, so a slow reader slows the
    /// sender instead of filling memory.
    pub(crate) fn from_h2(mut recv: h2::RecvStream) -> Body {
        if recv.is_end_stream() {
            return Body::empty();
        }
        let (tx, body) = Body::channel(8);
        tokio::spawn(async move {
            while let Some(chunk) = recv.data().await {
                let Ok(chunk) = chunk else {
                    tx.abort().await;
                    return;
                };
                let _ = recv.flow_control().release_capacity(chunk.len());
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        body
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
