//! The response side of a server connection: encodes ready responses in
//! request order (R7.2), streams a body chunk by chunk, and writes.
//!
//! Kept apart from the request side because the two meet only through the
//! sans-IO `Conn`, which decides what each response announces.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE};
use http::{Response, StatusCode, Version};
use http_body::Body as _;
use keepwire_proto::{BodyLength, ResponseHead};

use super::{COPY_BODY_MAX, Driver, NoDelay, OUT_HIGH_WATER};
use crate::body::{Body, BodyError};
use crate::metrics::CloseReason;

/// Room reserved for a response head (a typical one is 100–200 bytes).
const HEAD_ROOM: usize = 512;

/// The response body being streamed.
pub(super) struct ResponseStream {
    pub(super) body: Body,
    /// It answers a non-idempotent request: no handler starts until it
    /// ends (R7.4).
    pub(super) barrier: bool,
    /// What the body yielded while the loop was waiting.
    pub(super) next: Next,
}

/// What is left of a response once its head is encoded.
enum Started {
    /// 101, or 2xx to CONNECT: flush, then hand the connection over.
    Upgraded,
    /// The whole body, to write now.
    Whole(Bytes),
    /// The body streams: [`Driver::streaming`](super::Driver) has it.
    Streaming,
}

/// A response body's next item, as far as the loop has it.
pub(super) enum Next {
    /// Nothing taken yet: poll the body.
    Wait,
    /// A frame (or the body's failure), not written yet.
    Frame(Result<http_body::Frame<Bytes>, BodyError>),
    /// The body ended.
    End,
}

impl Next {
    /// What `poll_frame` returned.
    pub(super) fn of(frame: Option<Result<http_body::Frame<Bytes>, BodyError>>) -> Self {
        frame.map_or(Next::End, Next::Frame)
    }
}

impl Driver {
    /// Step 2: encodes ready responses in order. Returns whether anything
    /// was encoded; `Err` ends the connection.
    ///
    /// Its waits are boxed: they come only with a streamed body, an
    /// upgrade or a failure, and inline they would be part of every
    /// connection's future (R5.6); a whole response awaits nothing.
    pub(super) async fn pump_responses(&mut self) -> Result<bool, CloseReason> {
        let mut progress = false;
        loop {
            if let Some(stream) = &mut self.streaming {
                let polled = match std::mem::replace(&mut stream.next, Next::Wait) {
                    Next::Frame(frame) => Some(frame),
                    Next::End => None,
                    Next::Wait => {
                        let cx = &mut Context::from_waker(Waker::noop());
                        match Pin::new(&mut stream.body).poll_frame(cx) {
                            Poll::Pending => return Ok(progress),
                            Poll::Ready(frame) => frame,
                        }
                    }
                };
                match polled {
                    Some(Ok(frame)) => {
                        progress = true;
                        if let Ok(data) = frame.into_data() {
                            self.write_body(data).await?;
                            // Streaming: each chunk goes out as it comes.
                            Box::pin(self.flush()).await?;
                        }
                    }
                    None => {
                        progress = true;
                        self.streaming = None;
                        self.end_response()?;
                        self.start_handlers(None);
                    }
                    Some(Err(e)) => {
                        // The peer must see a truncated message (R8.2):
                        // no terminator, close now.
                        tracing::debug!(conn = self.info.id, error = %e, "response body failed");
                        let _ = Box::pin(self.flush()).await;
                        return Err(CloseReason::Error);
                    }
                }
                continue;
            }
            let Some(front) = self.pipeline.front_mut() else {
                return Ok(progress);
            };
            if !front.poll(&mut Context::from_waker(Waker::noop())) {
                return Ok(progress);
            }
            let slot = self.pipeline.pop_front().expect("a front slot");
            let barrier = slot.barrier;
            self.timers.answering = slot.began;
            let resp = slot.into_ready().expect("front slot is ready");
            progress = true;
            // The response is taken apart before any await: it then takes
            // no room in the connection's future (R5.6).
            match self.start_response(resp, barrier)? {
                Started::Upgraded => {
                    // 101, or 2xx to CONNECT: the bytes from here on are a
                    // tunnel's.
                    Box::pin(self.flush()).await?;
                    return Err(CloseReason::Upgraded);
                }
                Started::Whole(bytes) => {
                    if !bytes.is_empty() {
                        self.write_body(bytes).await?;
                    }
                    self.end_response()?;
                }
                Started::Streaming => {}
            }
            self.start_handlers(None);
        }
    }

    /// Encodes a response's head; a streamed body (answering a
    /// non-idempotent request if `barrier`) becomes [`ResponseStream`].
    /// Not async: what is left to write is returned.
    fn start_response(
        &mut self,
        resp: Response<Body>,
        barrier: bool,
    ) -> Result<Started, CloseReason> {
        // The head is encoded by a plain function: its values (header map,
        // extensions) then never live across an await, so they take no room
        // in the connection's future (R5.6: what an idle connection costs).
        let (full, body) = self.encode_head(resp)?;
        if self.conn.is_upgraded() {
            return Ok(Started::Upgraded);
        }
        Ok(match full {
            Some(bytes) => Started::Whole(bytes),
            None => {
                self.streaming = Some(Box::new(ResponseStream {
                    body,
                    barrier,
                    next: Next::Wait,
                }));
                Started::Streaming
            }
        })
    }

    /// Encodes a response head into the output buffer; returns the body,
    /// whole if it is known whole.
    fn encode_head(&mut self, resp: Response<Body>) -> Result<(Option<Bytes>, Body), CloseReason> {
        let (parts, mut body) = resp.into_parts();
        let headers = parts.headers;
        let add_date = !headers.contains_key(DATE);
        let full = body.take_full();
        // An explicit Content-Length is used when the body cannot tell: a
        // stream of unknown size, or an empty body answering HEAD (which
        // announces the GET's length, RFC 9110 §9.3.2). If it lies about a
        // real body, the encoder refuses and the connection closes.
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let length = match (&full, declared) {
            (Some(b), Some(n)) if b.is_empty() => BodyLength::Known(n),
            (Some(b), _) => BodyLength::Known(b.len() as u64),
            (None, _) => match body.size_hint().exact() {
                Some(n) => BodyLength::Known(n),
                None => declared.map_or(BodyLength::Unknown, BodyLength::Known),
            },
        };
        // A whole response ends before any more of the request body is
        // read; proto decides what that means for the connection.
        if full.is_some() {
            self.conn.leave_request_body_unread();
        }
        let mut extensions = parts.extensions;
        if let Some(a) = &mut self.access {
            a.respond(parts.status, &extensions);
        }
        let head = ResponseHead {
            status: parts.status,
            reason: None,
            version: Version::HTTP_11,
            headers,
            header_case: extensions.remove().unwrap_or_default(),
        };
        // One allocation for the head and a body copied after it: the
        // buffer is freed whenever the connection goes idle (R5.6), and
        // grown field by field it was reallocated several times per
        // response (1,500 instructions per keep-alive request). A buffer
        // that already holds a burst's earlier responses grows as it must.
        if self.out.capacity() == 0 {
            let copied = full.as_ref().map_or(0, Bytes::len);
            self.out =
                crate::buffers::take(HEAD_ROOM + if copied <= COPY_BODY_MAX { copied } else { 0 });
        }
        let start = self.out.len();
        if let Err(e) = self.conn.send_response(&head, length, &mut self.out) {
            tracing::error!(conn = self.info.id, error = %e, "handler response rejected");
            return Err(CloseReason::Error);
        }
        if add_date {
            let date = self.timers.date.get_or_insert_with(crate::date::now);
            append_field(&mut self.out, start, DATE.as_str(), date.as_bytes());
        }
        Ok((full, body))
    }

    async fn write_body(&mut self, data: Bytes) -> Result<(), CloseReason> {
        if let Some(a) = &mut self.access {
            a.body(data.len());
        }
        let mut framed = self.conn.send_body(data).map_err(|e| {
            tracing::error!(conn = self.info.id, error = %e, "response body does not match its length");
            CloseReason::Error
        })?;
        if framed.remaining() <= COPY_BODY_MAX {
            self.out.put(framed);
            if self.out.len() > OUT_HIGH_WATER {
                // Boxed, as below.
                Box::pin(self.flush()).await?;
            }
            return Ok(());
        }
        // Boxed: a large body's write state would otherwise be part of
        // every connection's future, idle ones included (R5.6).
        Box::pin(async move {
            self.flush().await?;
            while framed.has_remaining() {
                let mut slices = [io::IoSlice::new(&[]); 3];
                let n = framed.chunks_vectored(&mut slices);
                let written = self.write(&slices[..n]).await?;
                framed.advance(written);
            }
            Ok(())
        })
        .await
    }

    fn end_response(&mut self) -> Result<(), CloseReason> {
        self.conn.send_end(None, &mut self.out).map_err(|e| {
            tracing::error!(conn = self.info.id, error = %e, "response ended early");
            CloseReason::Error
        })?;
        self.timers.last_activity = self.timers.now;
        let took = self
            .timers
            .now
            .saturating_duration_since(self.timers.answering);
        self.shared.metrics.request_duration.record_duration(took);
        if self.access.is_some() {
            let close = self.conn.should_close().then(|| self.close_reason());
            if let Some(a) = &mut self.access {
                a.end(&self.info, close);
            }
        }
        Ok(())
    }

    /// Step 3: writes the output buffer, bounded by the write timeout.
    pub(super) async fn flush(&mut self) -> Result<(), CloseReason> {
        let timeout = self.shared.config.write_timeout;
        let mut result = Ok(());
        while !self.out.is_empty() && result.is_ok() {
            self.before_write();
            let buf = [io::IoSlice::new(&self.out)];
            match self.stream.write_timed(&buf, timeout).await {
                Ok(n) => self.out.advance(n),
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() {
            self.out.clear();
            result = self.stream.flush_timed(timeout).await;
        }
        result.map_err(|e| self.write_failed(e))
    }

    /// One write (at once if the socket has room), bounded by the write
    /// timeout.
    async fn write(&mut self, bufs: &[io::IoSlice<'_>]) -> Result<usize, CloseReason> {
        self.before_write();
        let timeout = self.shared.config.write_timeout;
        match self.stream.write_timed(bufs, timeout).await {
            Ok(n) => Ok(n),
            Err(e) => Err(self.write_failed(e)),
        }
    }

    /// Counts a write and sets TCP_NODELAY before the second
    /// ([`NoDelay`](super::NoDelay)).
    fn before_write(&mut self) {
        match self.nodelay {
            NoDelay::FirstWrite => self.nodelay = NoDelay::SecondWrite,
            NoDelay::SecondWrite => self.set_nodelay(),
            NoDelay::Set => {}
        }
    }

    /// Sets TCP_NODELAY now if it is not set yet.
    pub(super) fn set_nodelay(&mut self) {
        if self.nodelay != NoDelay::Set {
            let _ = crate::net::tune_stream(self.stream.tcp());
            self.nodelay = NoDelay::Set;
        }
    }

    fn write_failed(&mut self, e: io::Error) -> CloseReason {
        if e.kind() == io::ErrorKind::TimedOut {
            return CloseReason::Timeout;
        }
        self.peer_eof = true;
        CloseReason::Error
    }
}

/// Adds a field to the head just encoded at `out[start..]` (it ends with
/// the empty line). The `Date` field goes in this way rather than into the
/// handler's `HeaderMap`: a response with no fields of its own then never
/// allocates a map (two allocations, a hash and a drop per request).
fn append_field(out: &mut bytes::BytesMut, start: usize, name: &str, value: &[u8]) {
    debug_assert!(out[start..].ends_with(b"\r\n\r\n"), "a whole head");
    out.truncate(out.len() - 2);
    out.reserve(name.len() + value.len() + 6);
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n\r\n");
}

/// A server-made error response to a request whose body could not be read;
/// proto announces that it ends the connection.
pub(super) fn error_response(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut resp = Response::new(Body::from(format!("{reason}\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_appended_inside_the_head() {
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: D\r\n\r\n",
            ),
            // An earlier response in the same burst is left alone.
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\ndate: D\r\n\r\n",
            ),
        ];
        for (head, want) in cases {
            let mut out = bytes::BytesMut::from(&b"earlier\r\n\r\n"[..]);
            let start = out.len();
            out.extend_from_slice(head);
            append_field(&mut out, start, "date", b"D");
            assert_eq!(&out[..start], b"earlier\r\n\r\n");
            assert_eq!(&out[start..], *want);
        }
    }
}
