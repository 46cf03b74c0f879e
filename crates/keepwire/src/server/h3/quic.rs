//! h3's QUIC traits over quinn, for the server.
//!
//! `h3-quinn` does this too, but its streams hide the quinn stream inside
//! them, and the server needs two facts from it that HTTP/3 alone cannot
//! give: whether the client stopped a response stream (STOP_SENDING) while
//! its handler runs — a request whose body ended says nothing more on its
//! own half, so that is the only sign the client cancelled it — and whether
//! the stream arrived in 0-RTT (RFC 8470: early data may be replayed). Each
//! accepted request stream hands both out once, in a [`Watch`], through
//! [`Connection::take_watch`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::stream::{self, BoxStream, StreamExt};
use h3::error::Code;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use quinn::VarInt;

/// What the server learns of one request stream beside HTTP/3.
pub(crate) struct Watch {
    /// Resolves when the client stops the response stream (or the
    /// connection goes).
    pub(crate) stopped: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    /// The stream was opened in 0-RTT (early data).
    pub(crate) early: bool,
}

type Watches = Arc<Mutex<HashMap<u64, Watch>>>;

/// A quinn connection as h3 sees it.
pub(crate) struct Connection {
    conn: quinn::Connection,
    incoming_bi:
        BoxStream<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>,
    incoming_uni: BoxStream<'static, Result<quinn::RecvStream, quinn::ConnectionError>>,
    opener: OpenStreams,
    watches: Watches,
}

impl Connection {
    pub(crate) fn new(conn: quinn::Connection) -> Self {
        let bi = conn.clone();
        let uni = conn.clone();
        Connection {
            incoming_bi: stream::unfold(bi, |c| async { Some((c.accept_bi().await, c)) }).boxed(),
            incoming_uni: stream::unfold(uni, |c| async { Some((c.accept_uni().await, c)) })
                .boxed(),
            opener: OpenStreams::new(conn.clone()),
            conn,
            watches: Default::default(),
        }
    }

    /// A handle on the watches of the streams this connection accepts.
    pub(crate) fn watches(&self) -> WatchTaker {
        WatchTaker(self.watches.clone())
    }
}

/// Takes the [`Watch`] of an accepted stream (once).
#[derive(Clone)]
pub(crate) struct WatchTaker(Watches);

impl WatchTaker {
    pub(crate) fn take(&self, id: StreamId) -> Option<Watch> {
        self.remove(id.into_inner())
    }

    fn remove(&self, id: u64) -> Option<Watch> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&id)
    }
}

fn conn_error(e: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => ConnectionErrorIncoming::ApplicationClose {
            error_code: c.error_code.into(),
        },
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn stream_conn_error(e: quinn::ConnectionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: conn_error(e),
    }
}

fn id_of(id: quinn::StreamId) -> StreamId {
    // A QUIC stream id is a varint: it always fits.
    StreamId::try_from(VarInt::from(id).into_inner()).expect("a stream id is a varint")
}

impl<B: Buf> quic::Connection<B> for Connection {
    type RecvStream = RecvStream;
    type OpenStreams = OpenStreams;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        match ready!(self.incoming_uni.poll_next_unpin(cx)) {
            Some(Ok(recv)) => Poll::Ready(Ok(RecvStream::new(recv))),
            Some(Err(e)) => Poll::Ready(Err(conn_error(e))),
            None => Poll::Ready(Err(conn_error(quinn::ConnectionError::LocallyClosed))),
        }
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let (send, recv) = match ready!(self.incoming_bi.poll_next_unpin(cx)) {
            Some(Ok(pair)) => pair,
            Some(Err(e)) => return Poll::Ready(Err(conn_error(e))),
            None => return Poll::Ready(Err(conn_error(quinn::ConnectionError::LocallyClosed))),
        };
        let stopped = send.stopped();
        let watch = Watch {
            stopped: Box::pin(async move {
                let _ = stopped.await;
            }),
            early: recv.is_0rtt(),
        };
        let id = u64::from(VarInt::from(send.id()));
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, watch);
        let mut send = SendStream::new(send);
        // A stream that ends before its watch is taken (its head never
        // came) takes the watch with it.
        send.watched = Some((self.watches.clone(), id));
        Poll::Ready(Ok(BidiStream {
            send,
            recv: RecvStream::new(recv),
        }))
    }

    fn opener(&self) -> Self::OpenStreams {
        OpenStreams::new(self.conn.clone())
    }
}

impl<B: Buf> quic::OpenStreams<B> for Connection {
    type SendStream = SendStream<B>;
    type BidiStream = BidiStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        quic::OpenStreams::<B>::poll_open_bidi(&mut self.opener, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        quic::OpenStreams::<B>::poll_open_send(&mut self.opener, cx)
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        quic::OpenStreams::<B>::close(&mut self.opener, code, reason)
    }
}

/// Opens the server's unidirectional streams (control, QPACK).
pub(crate) struct OpenStreams {
    conn: quinn::Connection,
    opening_uni: Option<BoxStream<'static, Result<quinn::SendStream, quinn::ConnectionError>>>,
}

impl OpenStreams {
    fn new(conn: quinn::Connection) -> Self {
        OpenStreams {
            conn,
            opening_uni: None,
        }
    }
}

impl<B: Buf> quic::OpenStreams<B> for OpenStreams {
    type SendStream = SendStream<B>;
    type BidiStream = BidiStream<B>;

    fn poll_open_bidi(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        // A server never opens request streams (no server push either).
        Poll::Ready(Err(StreamErrorIncoming::Unknown(
            "the server opens no bidirectional streams".into(),
        )))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        let conn = self.conn.clone();
        let uni = self.opening_uni.get_or_insert_with(|| {
            stream::unfold(conn, |c| async { Some((c.open_uni().await, c)) }).boxed()
        });
        match ready!(uni.poll_next_unpin(cx)) {
            Some(Ok(send)) => Poll::Ready(Ok(SendStream::new(send))),
            Some(Err(e)) => Poll::Ready(Err(stream_conn_error(e))),
            None => Poll::Ready(Err(stream_conn_error(
                quinn::ConnectionError::LocallyClosed,
            ))),
        }
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        self.conn.close(
            VarInt::from_u64(code.value()).unwrap_or(VarInt::MAX),
            reason,
        );
    }
}

/// A request stream, both halves.
pub(crate) struct BidiStream<B: Buf> {
    send: SendStream<B>,
    recv: RecvStream,
}

impl<B: Buf> quic::BidiStream<B> for BidiStream<B> {
    type SendStream = SendStream<B>;
    type RecvStream = RecvStream;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        (self.send, self.recv)
    }
}

impl<B: Buf> quic::RecvStream for BidiStream<B> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

impl<B: Buf> quic::SendStream<B> for BidiStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code)
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

/// The receiving half of a stream.
pub(crate) struct RecvStream {
    stream: quinn::RecvStream,
}

impl RecvStream {
    fn new(stream: quinn::RecvStream) -> Self {
        RecvStream { stream }
    }
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        // `read_chunk` holds no state between polls: polling its future
        // afresh each time loses nothing.
        let read = self.stream.read_chunk(usize::MAX, true);
        let mut read = std::pin::pin!(read);
        match ready!(read.as_mut().poll(cx)) {
            Ok(chunk) => Poll::Ready(Ok(chunk.map(|c| c.bytes))),
            Err(quinn::ReadError::Reset(code)) => {
                Poll::Ready(Err(StreamErrorIncoming::StreamTerminated {
                    error_code: code.into_inner(),
                }))
            }
            Err(quinn::ReadError::ConnectionLost(e)) => Poll::Ready(Err(stream_conn_error(e))),
            Err(other) => Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(other)))),
        }
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self
            .stream
            .stop(VarInt::from_u64(error_code).unwrap_or(VarInt::MAX));
    }

    fn recv_id(&self) -> StreamId {
        id_of(self.stream.id())
    }
}

/// The sending half of a stream.
pub(crate) struct SendStream<B: Buf> {
    stream: quinn::SendStream,
    writing: Option<WriteBuf<B>>,
    /// A request stream's entry in the watches, removed on drop.
    watched: Option<(Watches, u64)>,
}

impl<B: Buf> SendStream<B> {
    fn new(stream: quinn::SendStream) -> Self {
        SendStream {
            stream,
            writing: None,
            watched: None,
        }
    }
}

impl<B: Buf> Drop for SendStream<B> {
    fn drop(&mut self) {
        if let Some((watches, id)) = self.watched.take() {
            watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }
}

fn write_error(e: quinn::WriteError) -> StreamErrorIncoming {
    match e {
        quinn::WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(e) => stream_conn_error(e),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

impl<B: Buf> quic::SendStream<B> for SendStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        if let Some(data) = self.writing.as_mut() {
            while data.has_remaining() {
                let write = Pin::new(&mut self.stream);
                let n = ready!(write.poll_write(cx, data.chunk())).map_err(write_error)?;
                data.advance(n);
            }
        }
        self.writing = None;
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if self.writing.is_some() {
            return Err(StreamErrorIncoming::Unknown(
                "send_data while a write is pending".into(),
            ));
        }
        self.writing = Some(data.into());
        Ok(())
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        Poll::Ready(
            self.stream
                .finish()
                .map_err(|e| StreamErrorIncoming::Unknown(Box::new(e))),
        )
    }

    fn reset(&mut self, reset_code: u64) {
        let _ = self
            .stream
            .reset(VarInt::from_u64(reset_code).unwrap_or(VarInt::MAX));
    }

    fn send_id(&self) -> StreamId {
        id_of(self.stream.id())
    }
}
