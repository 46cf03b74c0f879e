//! One client connection: writes a request, reads its response, and records
//! how far it got, because that is what the retry rule needs (R8.3).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keepwire_proto::{BodyKind, BodyLength, Conn, Event, RequestHead, ResponseHead};
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use super::ClientError;
use super::replay::ReplayBody;
use super::retry::AttemptState;
use crate::transport::{TlsInfo, Transport};

/// Facts about a connection (R1.1: its 4-tuple).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnMeta {
    /// Client-wide connection number.
    pub id: u64,
    /// Our address.
    pub local: SocketAddr,
    /// The server's address.
    pub peer: SocketAddr,
    /// What TLS agreed on (`https`), as `curl -v` shows it.
    pub tls: Option<TlsInfo>,
    /// QUIC facts, for an HTTP/3 connection.
    pub quic: Option<super::QuicInfo>,
}

/// An open connection and its protocol state.
pub(crate) struct ClientConn {
    pub(crate) stream: Transport,
    pub(crate) proto: Conn,
    pub(crate) meta: ConnMeta,
    /// Responses completed on this connection.
    pub(crate) requests: u64,
    /// Response bytes read since the current request was written.
    read_since_request: u64,
    /// A final response head that arrived while the request was still
    /// being written.
    early: Option<(ResponseHead, BodyKind)>,
    pub(crate) out: BytesMut,
}

/// How many framed body bytes to gather before a write while streaming.
const STREAM_FILL: usize = 64 * 1024;

/// Progress of a streamed request.
#[derive(Default)]
struct Sending {
    /// Bytes handed to the socket.
    written: u64,
    /// The body (and its terminator) is in `out`.
    body_done: bool,
    /// The server's side ended or failed; stop looking for an answer.
    read_closed: bool,
    /// Something moved (a body chunk, a write): the progress timer restarts.
    progressed: bool,
}

/// A failed attempt: the error and how far the attempt got.
pub(crate) type AttemptError = (AttemptState, ClientError);

impl ClientConn {
    pub(crate) fn new(stream: Transport, proto: Conn, id: u64) -> io::Result<Self> {
        let tcp = stream.tcp();
        let _ = tcp.set_nodelay(true);
        let meta = ConnMeta {
            id,
            local: tcp.local_addr()?,
            peer: tcp.peer_addr()?,
            tls: stream.tls_info(),
            quic: None,
        };
        Ok(ClientConn {
            stream,
            proto,
            meta,
            requests: 0,
            read_since_request: 0,
            early: None,
            out: BytesMut::new(),
        })
    }

    /// A non-blocking look at an idle connection: `Ok(())` if it is still
    /// quiet; otherwise the server closed it (FIN, or TLS `close_notify`) or
    /// sent junk, and it must not carry a request (R8.1).
    pub(crate) fn probe_idle(&mut self) -> Result<(), &'static str> {
        // A read that does not wait. For TCP it costs no syscall unless the
        // reactor saw the socket turn readable since we drained it (a FIN or
        // stray bytes raise that event); a close that the reactor has not
        // processed yet is the stale-connection race the retry rule is for
        // (R8.1). Over TLS it also consumes records that carry no data
        // (session tickets), which a peek at the socket would mistake for
        // junk.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match self
            .stream
            .poll_read_available(&mut cx, self.proto.read_buffer())
        {
            std::task::Poll::Pending => Ok(()),
            std::task::Poll::Ready(Ok(0)) => Err("closed by the server while idle"),
            std::task::Poll::Ready(Ok(_)) => Err("unexpected bytes while idle"),
            std::task::Poll::Ready(Err(_)) => Err("socket error while idle"),
        }
    }

    /// Writes the head and streams `body` after it, a buffer of up to
    /// [`STREAM_FILL`] bytes at a time (a small body goes out in one write
    /// with its head, R2.3). Gives up after `timeout` without progress
    /// (neither a body chunk nor a write). Meanwhile it watches for the
    /// server's answer: a final response that arrives first (an early 413,
    /// say) stops the upload unless it is a success that keeps the
    /// connection, and [`Self::read_head`] returns it.
    pub(crate) async fn send_streaming(
        &mut self,
        head: &RequestHead,
        body: &mut ReplayBody,
        timeout: Duration,
    ) -> Result<(), AttemptError> {
        self.out.clear();
        self.read_since_request = 0;
        self.early = None;
        let length = body.length().map_or(BodyLength::Unknown, BodyLength::Known);
        self.out_buffer();
        self.proto
            .send_request(head, length, &mut self.out)
            .map_err(|e| (AttemptState::NotSent, ClientError::Protocol(e)))?;
        let mut st = Sending::default();
        loop {
            st.progressed = false;
            let step = tokio::time::timeout(
                timeout,
                std::future::poll_fn(|cx| self.poll_send(cx, body, &mut st)),
            )
            .await;
            match step {
                Ok(r) => return r,
                Err(_) if st.progressed => continue,
                Err(_) => {
                    return Err((
                        state_after_write(st.written as usize),
                        ClientError::Timeout("writing the request"),
                    ));
                }
            }
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut std::task::Context<'_>,
        body: &mut ReplayBody,
        st: &mut Sending,
    ) -> std::task::Poll<Result<(), AttemptError>> {
        use std::task::Poll;
        let sent = |st: &Sending| state_after_write(st.written as usize);
        loop {
            // An answer before the request is all out? (Once it is, the
            // answer is read_head's to read.)
            let all_out = st.body_done && self.out.is_empty();
            if !st.read_closed && st.written > 0 && !all_out {
                match self
                    .stream
                    .poll_read_available(cx, self.proto.read_buffer())
                {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => st.read_closed = true,
                    Poll::Ready(Ok(n)) => {
                        self.read_since_request += n as u64;
                        match self.poll_early_head() {
                            Ok(true) => {
                                if self.proto.early_response_stops_request() {
                                    return Poll::Ready(Ok(()));
                                }
                                st.read_closed = true;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                return Poll::Ready(Err((AttemptState::PartlyAnswered, e)));
                            }
                        }
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if !st.body_done && self.out.len() < STREAM_FILL {
                match body.poll_chunk(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        st.progressed = true;
                        let framed = self
                            .proto
                            .send_body(chunk)
                            .map_err(|e| (sent(st), ClientError::Protocol(e)))?;
                        self.out.put(framed);
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err((sent(st), ClientError::Body(e))));
                    }
                    Poll::Ready(None) => {
                        self.proto
                            .send_end(None, &mut self.out)
                            .map_err(|e| (sent(st), ClientError::Protocol(e)))?;
                        st.body_done = true;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if self.out.is_empty() {
                if !st.body_done {
                    return Poll::Pending;
                }
                return std::pin::Pin::new(&mut self.stream)
                    .poll_flush(cx)
                    .map_err(|e| (sent(st), write_error(e)));
            }
            match std::pin::Pin::new(&mut self.stream).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err((
                        sent(st),
                        ClientError::Io(io::ErrorKind::WriteZero.into()),
                    )));
                }
                Poll::Ready(Ok(n)) => {
                    st.progressed = true;
                    st.written += n as u64;
                    self.out.advance(n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err((sent(st), write_error(e)))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Parses a final response head from what was read, if it is complete
    /// (informational ones are skipped).
    fn poll_early_head(&mut self) -> Result<bool, ClientError> {
        loop {
            match self.proto.poll_event().map_err(ClientError::Protocol)? {
                Some(Event::Response { head, .. })
                    if head.status.is_informational()
                        && head.status != http::StatusCode::SWITCHING_PROTOCOLS => {}
                Some(Event::Response { head, body }) => {
                    self.early = Some((head, body));
                    return Ok(true);
                }
                Some(_) => return Err(ClientError::Unexpected),
                None => return Ok(false),
            }
        }
    }

    /// Whether the server sent something we can read as an answer, without
    /// waiting (after a write failed: an early response and a close).
    pub(crate) fn has_response_bytes(&mut self) -> bool {
        if self.early.is_some() {
            return true;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..64 {
            match self
                .stream
                .poll_read_available(&mut cx, self.proto.read_buffer())
            {
                std::task::Poll::Ready(Ok(n)) if n > 0 => self.read_since_request += n as u64,
                _ => break,
            }
        }
        !self.proto.read_buffer().is_empty()
    }

    /// Appends a request to the output buffer without writing it, so a
    /// pipelined batch leaves in one write: one segment per request would
    /// count each against the congestion window (R2.3).
    pub(crate) fn encode_request(
        &mut self,
        head: &RequestHead,
        body: Option<&Bytes>,
    ) -> Result<(), AttemptError> {
        self.read_since_request = 0;
        let len = body.map_or(0, |b| b.len() as u64);
        self.out_buffer();
        self.proto
            .send_request(head, BodyLength::Known(len), &mut self.out)
            .map_err(|e| (AttemptState::NotSent, ClientError::Protocol(e)))?;
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            let framed = self
                .proto
                .send_body(b.clone())
                .map_err(|e| (AttemptState::NotSent, ClientError::Protocol(e)))?;
            self.out.put(framed);
        }
        self.proto
            .send_end(None, &mut self.out)
            .map_err(|e| (AttemptState::NotSent, ClientError::Protocol(e)))
    }

    /// Writes the output buffer, within `timeout`.
    pub(crate) async fn flush_out(&mut self, timeout: Duration) -> Result<(), AttemptError> {
        let mut written = 0usize;
        let deadline = Instant::now() + timeout;
        while written < self.out.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let buf = [io::IoSlice::new(&self.out[written..])];
            match self.stream.write_timed(&buf, left).await {
                Ok(n) => written += n,
                Err(e) => return Err((state_after_write(written), write_error(e))),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self.stream.flush_timed(left).await {
            return Err((state_after_write(written), write_error(e)));
        }
        self.out.clear();
        Ok(())
    }

    /// Reads until the next protocol event, bounded by `deadline`.
    pub(crate) async fn next_event(&mut self, deadline: Instant) -> Result<Event, AttemptError> {
        loop {
            match self.proto.poll_event() {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {}
                Err(e) => return Err((self.read_state(), ClientError::Protocol(e))),
            }
            let read = tokio::time::timeout_at(
                deadline,
                self.stream.read_available(self.proto.read_buffer()),
            )
            .await;
            match read {
                Ok(Ok(0)) => self.proto.handle_eof(),
                Ok(Ok(n)) => self.read_since_request += n as u64,
                Ok(Err(e)) => return Err((self.read_state(), ClientError::Io(e))),
                Err(_) => {
                    return Err((
                        self.read_state(),
                        ClientError::Timeout("waiting for the response"),
                    ));
                }
            }
        }
    }

    /// Reads the final response head (skipping 1xx), and the body framing.
    pub(crate) async fn read_head(
        &mut self,
        deadline: Instant,
    ) -> Result<(ResponseHead, BodyKind), AttemptError> {
        if let Some((head, body)) = self.early.take() {
            return Ok((head, body));
        }
        loop {
            match self.next_event(deadline).await? {
                Event::Response { head, .. }
                    if head.status.is_informational()
                        && head.status != http::StatusCode::SWITCHING_PROTOCOLS => {}
                Event::Response { head, body } => return Ok((head, body)),
                _ => return Err((self.read_state(), ClientError::Unexpected)),
            }
        }
    }

    /// Body bytes already buffered, without waiting: `(chunks, ended)`.
    pub(crate) fn buffered_body(&mut self) -> Result<(Vec<Bytes>, bool), ClientError> {
        let mut chunks = Vec::new();
        loop {
            match self.proto.poll_event() {
                Ok(Some(Event::Data(b))) => chunks.push(b),
                Ok(Some(Event::End(_))) => {
                    self.finish_response();
                    return Ok((chunks, true));
                }
                Ok(Some(_)) => return Err(ClientError::Unexpected),
                Ok(None) => return Ok((chunks, false)),
                Err(e) => return Err(ClientError::Protocol(e)),
            }
        }
    }

    /// Bookkeeping once a response body ended.
    pub(crate) fn finish_response(&mut self) {
        self.requests += 1;
    }

    /// Whether the connection can carry another request (proto decides,
    /// `Keep-Alive: max` included).
    pub(crate) fn reusable(&self) -> bool {
        self.proto.is_reusable()
    }

    fn read_state(&self) -> AttemptState {
        if self.read_since_request == 0 {
            AttemptState::SentNoResponse
        } else {
            AttemptState::PartlyAnswered
        }
    }

    /// Hands the buffers of a connection going idle to the thread's stash
    /// (pooled connections should be cheap, R5.6; the next connection that
    /// works takes them from there). A buffer still holding bytes stays.
    pub(crate) fn release_buffers(&mut self) {
        // (Proto's own release would also drop its queue of requests in
        // flight, a few dozen bytes that every request would allocate again.)
        let read = self.proto.read_buffer();
        if read.is_empty() {
            crate::buffers::give(std::mem::take(read));
        }
        if self.out.is_empty() {
            crate::buffers::give(std::mem::take(&mut self.out));
        }
    }

    /// The output buffer, from the stash when the connection has none.
    fn out_buffer(&mut self) -> &mut BytesMut {
        if self.out.capacity() == 0 {
            self.out = crate::buffers::take(OUT_FIRST);
        }
        &mut self.out
    }
}

/// Room a request head usually needs.
const OUT_FIRST: usize = 1024;

fn state_after_write(written: usize) -> AttemptState {
    if written == 0 {
        AttemptState::NotSent
    } else {
        AttemptState::SentNoResponse
    }
}

fn write_error(e: io::Error) -> ClientError {
    if e.kind() == io::ErrorKind::TimedOut {
        ClientError::Timeout("writing the request")
    } else {
        ClientError::Io(e)
    }
}
