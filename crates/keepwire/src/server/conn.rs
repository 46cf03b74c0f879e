//! One server connection: an `async fn` loop pumping the sans-IO `Conn`.
//!
//! Each turn of the loop does, in order, everything that needs no waiting:
//! 1. parse what is buffered (requests start handlers; body bytes go to the
//!    handler's body channel until it is full: backpressure);
//! 2. encode every response that is ready, *in request order* (R7.2), into
//!    one output buffer;
//! 3. write that buffer once: a pipelined burst gets one write (R2.3);
//! 4. close if the protocol says so, lingering (R8.5);
//! 5. otherwise wait for whichever comes first: input, a handler, a response
//!    body chunk, body-channel room, a timer, or shutdown.
//!
//! Timers are phase-specific (R10.2): idle between requests, header
//! (slowloris), body (between reads), write (between writes). A connection
//! that waits on its handler (long poll, streaming, R9.2) has no idle timer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE};
use http::{Response, StatusCode, Version};
use http_body::Body as _;
use keepwire_proto::{BodyKind, BodyLength, Conn, ConnConfig, Event, ResponseHead, Role};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{ConnInfo, Handler, ResponseFuture, Shared};
use crate::body::{Body, BodyError};
use crate::metrics::CloseReason;
use crate::net::{self, LingerOutcome};
use crate::transport::Transport;

/// Bodies up to this size are copied next to their head (one write);
/// larger ones are written from their own buffer.
const COPY_BODY_MAX: usize = 16 * 1024;
/// Flush the output buffer mid-burst when it grows past this.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Keep buffers this long into an idle period before freeing them, so
/// back-to-back keep-alive requests do not churn the allocator.
const RELEASE_AFTER: Duration = Duration::from_millis(200);

/// Answers a connection over the limits with 503 and closes it.
pub(crate) async fn refuse(mut stream: TcpStream, shared: &Shared) {
    let msg = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 29\r\ncontent-type: text/plain\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many connections, retry.\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg)).await;
    linger(stream, shared).await;
}

async fn linger(stream: TcpStream, shared: &Shared) {
    let (outcome, discarded) = net::lingering_close(stream, shared.config.linger).await;
    let m = &shared.metrics;
    match outcome {
        LingerOutcome::Fin => m.linger_fin.fetch_add(1, Relaxed),
        _ => m.linger_bounded.fetch_add(1, Relaxed),
    };
    m.linger_discarded_bytes.fetch_add(discarded, Relaxed);
}

/// A request whose response is not written yet.
struct Slot {
    fut: Option<ResponseFuture>,
    ready: Option<Response<Body>>,
    /// Read but not handed to the handler yet (it waits behind a barrier).
    waiting: Option<super::Incoming>,
    /// Non-idempotent: its handler runs alone (R7.4, R8.3).
    barrier: bool,
}

impl Slot {
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(fut) = &mut self.fut
            && let Poll::Ready(resp) = fut.as_mut().poll(cx)
        {
            self.ready = Some(resp);
            self.fut = None;
        }
        self.ready.is_some()
    }
}

/// What woke the loop.
enum Wake {
    Read(io::Result<usize>),
    Progress,
    Timer,
    Stop,
}

struct Driver<'a> {
    stream: Transport,
    conn: Conn,
    shared: &'a Shared,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    out: BytesMut,
    /// Handlers in request order.
    pipeline: std::collections::VecDeque<Slot>,
    /// Feeds the body of the request being read.
    body_tx: Option<mpsc::Sender<Result<Bytes, BodyError>>>,
    /// A body chunk waiting for room in `body_tx`.
    stalled: Option<Bytes>,
    /// Fires when the handler first reads a body that expects 100-continue.
    continue_rx: Option<oneshot::Receiver<()>>,
    /// The response body being streamed.
    streaming: Option<Body>,
    /// `streaming` answers a non-idempotent request: nothing starts until
    /// it ends.
    streaming_barrier: bool,
    /// A frame of `streaming` taken while waiting, not yet written.
    next_frame: Option<Option<Result<http_body::Frame<Bytes>, BodyError>>>,
    /// A request could not be read; answer with this once earlier responses
    /// are out (`None` inside: no answer makes sense).
    failed: Option<Option<StatusCode>>,
    started: Instant,
    /// The time at the start of this loop turn.
    now: Instant,
    /// The `Date` value for responses of this turn.
    date: Option<http::HeaderValue>,
    /// When the connection last became idle, or last made progress.
    last_activity: Instant,
    /// When the current head started arriving (header timeout).
    head_started: Instant,
    stopping: bool,
    /// A header or body timeout ended the connection (counted as Timeout).
    timed_out: bool,
    peer_eof: bool,
    /// Hands the connection to the handler after a 101 / CONNECT 2xx.
    upgrade_tx: Option<oneshot::Sender<super::Upgraded>>,
    /// This connection is counted in the idle gauge.
    counted_idle: bool,
    released: bool,
    /// The connection opened with the HTTP/2 preface: hand it to `h2`.
    switch_h2: bool,
}

pub(crate) async fn serve(
    stream: Transport,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    id: u64,
    slot: super::ConnSlot,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) {
    // The slot moves into the tunnel if the connection becomes one.
    let shared_ref = slot.shared.clone();
    let shared: &Shared = &shared_ref;
    let cfg = &shared.config;
    let local = local.unwrap_or_else(|| stream.tcp().local_addr().unwrap_or(peer));
    let conn = Conn::new(
        Role::Server,
        ConnConfig {
            limits: cfg.limits.clone(),
            preserve_header_case: cfg.preserve_header_case,
            max_in_flight: cfg.pipeline_depth.max(1),
            advertise_timeout: cfg
                .advertise_keep_alive
                .then(|| cfg.idle_timeout.as_secs().max(1)),
            max_requests: cfg.max_requests,
            proxy_connection: cfg.proxy_connection,
        },
    );
    let now = Instant::now();
    let mut d = Driver {
        stream,
        conn,
        shared,
        handler,
        info: ConnInfo {
            id,
            peer,
            local,
            request_index: 0,
        },
        out: BytesMut::new(),
        pipeline: Default::default(),
        body_tx: None,
        stalled: None,
        continue_rx: None,
        streaming: None,
        streaming_barrier: false,
        next_frame: None,
        failed: None,
        started: now,
        now,
        date: None,
        last_activity: now,
        head_started: now,
        stopping: false,
        timed_out: false,
        peer_eof: false,
        counted_idle: false,
        upgrade_tx: None,
        released: true,
        switch_h2: false,
    };
    let reason = d.run(stop.clone()).await;
    if d.switch_h2 {
        let prefix = d.conn.take_read_buffer().freeze();
        let Transport::Tcp(stream) = d.stream else {
            unreachable!("h2 over TLS is chosen by ALPN, not by the preface");
        };
        // Boxed: the HTTP/2 connection's state is large, and inline it would
        // be part of every HTTP/1 connection's future (R5.6: idle memory).
        let (reason, requests) = Box::pin(super::h2::serve(
            stream,
            prefix,
            d.info,
            shared,
            d.handler.clone(),
            stop,
        ))
        .await;
        tracing::debug!(conn = id, %peer, %local, requests, ?reason, "h2 connection closed");
        shared.metrics.closed(reason, requests);
        return;
    }
    d.mark_idle(false);
    let requests = d.info.request_index;
    tracing::debug!(conn = id, %peer, %local, requests, ?reason, "connection closed");
    shared.metrics.closed(reason, requests);
    match reason {
        // The peer is gone or broke the socket: nothing to linger for.
        CloseReason::Error if d.peer_eof => {}
        // The client said this was its last request and nothing of it is
        // unread: it sends no more, so a plain close resets nothing away
        // (nginx's lingering heuristic does the same). Saves a shutdown,
        // a wait and a wake-up per connection.
        CloseReason::NotPersistent
            if d.conn.peer_announced_close() && socket_drained(d.stream.tcp()) =>
        {
            // TLS still ends with close_notify (a no-op for TCP).
            if d.stream.is_tls() {
                drop(d.stream.into_tcp(shared.config.write_timeout).await);
            }
        }
        CloseReason::Upgraded => {
            if let Some(tx) = d.upgrade_tx.take() {
                let read_buf = d.conn.take_read_buffer();
                let _ = tx.send(super::Upgraded {
                    stream: d.stream,
                    read_buf,
                    slot: Some(slot.into_tunnel()),
                });
            }
        }
        // Boxed: only closing connections pay for the drain's state.
        _ => {
            Box::pin(async {
                let stream = d.stream.into_tcp(shared.config.write_timeout).await;
                linger(stream, shared).await
            })
            .await
        }
    }
}

impl Driver<'_> {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> CloseReason {
        let mut timer = Box::pin(tokio::time::sleep_until(far_future()));
        let mut timer_at = far_future();
        loop {
            // One clock read per turn: every timestamp below is "now" to
            // within the microseconds a turn takes.
            self.now = Instant::now();
            self.date = None;
            // Bytes that arrived while the connection was idle start a new
            // head: the header timeout runs from now, not from the previous
            // request (R10.2). (`counted_idle` still says how we waited.)
            if self.counted_idle && !self.conn.is_idle() {
                self.head_started = self.now;
            }
            // 1–2: everything that needs no waiting.
            loop {
                let mut progress = self.pump_events();
                match self.pump_responses().await {
                    Ok(p) => progress |= p,
                    Err(reason) => return reason,
                }
                if !progress {
                    break;
                }
            }
            // A request that could not be read is answered once every
            // earlier response is out.
            if let Some(status) = self.failed
                && self.pipeline.is_empty()
                && self.streaming.is_none()
            {
                if let Some(status) = status {
                    let _ = self.conn.send_error(status, &mut self.out);
                }
                let _ = self.flush().await;
                return if self.timed_out {
                    CloseReason::Timeout
                } else {
                    CloseReason::Error
                };
            }
            // 3: one write for the burst.
            if let Err(reason) = self.flush().await {
                return reason;
            }
            // 4: close when the protocol says so.
            if self.pipeline.is_empty() && self.streaming.is_none() {
                if self.conn.should_close() {
                    return self.close_reason();
                }
                if self.peer_eof {
                    return CloseReason::ClientClose;
                }
            }
            // 5: wait.
            self.mark_idle(self.quiet());
            let now = self.now;
            let deadline = self.deadline(now);
            if deadline != timer_at {
                timer.as_mut().reset(deadline);
                timer_at = deadline;
            }
            let wants_read =
                self.conn.wants_read() && self.stalled.is_none() && self.failed.is_none();
            let wake = tokio::select! {
                biased;
                r = self.stream.read_available(self.conn.read_buffer()), if wants_read => Wake::Read(r),
                _ = poll_pipeline(&mut self.pipeline), if self.pipeline.front().is_some_and(|s| s.ready.is_none()) => Wake::Progress,
                frame = std::future::poll_fn(|cx| match self.streaming.as_mut() {
                    Some(b) => Pin::new(b).poll_frame(cx),
                    None => Poll::Pending,
                }), if self.streaming.is_some() && self.next_frame.is_none() => {
                    self.next_frame = Some(frame);
                    Wake::Progress
                }
                permit = reserve(&self.body_tx), if self.stalled.is_some() => {
                    match permit {
                        Some(permit) => permit.send(Ok(self.stalled.take().unwrap_or_default())),
                        None => self.stalled = None,
                    }
                    Wake::Progress
                }
                r = async { self.continue_rx.as_mut().expect("guarded").await }, if self.continue_rx.is_some() => {
                    self.continue_rx = None;
                    if r.is_ok() {
                        self.conn.send_continue(&mut self.out);
                    }
                    Wake::Progress
                }
                _ = &mut timer => Wake::Timer,
                _ = stop.wait_for(|v| *v), if !self.stopping => Wake::Stop,
            };
            match wake {
                // A TLS client that closes without `close_notify` ends its
                // input all the same; whether a request was cut short is the
                // protocol state's call, as with a TCP FIN.
                Wake::Read(Ok(0)) => {
                    self.conn.handle_eof();
                    self.peer_eof = true;
                }
                Wake::Read(Err(e))
                    if e.kind() == io::ErrorKind::UnexpectedEof && self.stream.is_tls() =>
                {
                    self.conn.handle_eof();
                    self.peer_eof = true;
                }
                Wake::Read(Ok(_)) => self.released = false,
                Wake::Read(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Wake::Read(Err(_)) => {
                    self.peer_eof = true;
                    return CloseReason::Error;
                }
                Wake::Progress => {}
                Wake::Timer => {
                    if let Some(reason) = self.on_timer() {
                        return reason;
                    }
                }
                Wake::Stop => {
                    self.stopping = true;
                    // An idle connection stays readable until
                    // `keep_alive_min` after its last response (the timer
                    // then closes it), so a back-to-back request does not
                    // race the close (R8.1); `start_request` makes that
                    // request the last. Busy ones end after what is in flight.
                    if !self.quiet() {
                        self.conn.disable_keep_alive();
                    }
                }
            }
        }
    }

    /// Step 1: turns buffered input into requests and body chunks.
    fn pump_events(&mut self) -> bool {
        if self.stalled.is_some() || self.failed.is_some() {
            return false;
        }
        let mut progress = false;
        loop {
            match self.conn.poll_event() {
                Ok(Some(Event::Request { head, body })) => {
                    progress = true;
                    self.start_request(head, body);
                }
                Ok(Some(Event::Data(bytes))) => {
                    progress = true;
                    self.last_activity = self.now;
                    if let Some(tx) = &self.body_tx {
                        match tx.try_send(Ok(bytes)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(Ok(b))) => {
                                self.stalled = Some(b);
                                return true;
                            }
                            // The handler dropped its body: discard.
                            Err(_) => {}
                        }
                    }
                }
                Ok(Some(Event::End(_))) => {
                    progress = true;
                    self.body_tx = None;
                }
                // A server connection never yields responses.
                Ok(Some(Event::Response { .. })) => {}
                Ok(Some(Event::Eof)) => {
                    self.peer_eof = true;
                    return progress;
                }
                Ok(None) => break,
                Err(e) => {
                    // h2c with prior knowledge: the "bad request" is the
                    // HTTP/2 preface on a fresh connection.
                    if self.shared.config.http2
                        && !self.stream.is_tls()
                        && self.info.request_index == 0
                        && super::h2::is_preface(self.conn.read_buffer())
                    {
                        self.switch_h2 = true;
                        self.failed = Some(None);
                        return true;
                    }
                    tracing::debug!(conn = self.info.id, error = %e, "bad request");
                    let Some(tx) = self.body_tx.take() else {
                        // A bad head: answered once earlier responses are out.
                        self.failed = Some(e.status_hint());
                        return true;
                    };
                    let _ = tx.try_send(Err(BodyError::Protocol(e.clone())));
                    // A bad body belongs to the newest request, whose handler
                    // already runs. It gets exactly one answer: the error
                    // status in place of the handler's response if that has
                    // not started (its slot is the pipeline's last), else the
                    // response already under way; then we close (R10.1).
                    if let (Some(status), Some(slot)) = (e.status_hint(), self.pipeline.back_mut())
                    {
                        slot.fut = None;
                        slot.waiting = None;
                        slot.ready = Some(error_response(status));
                    }
                    self.failed = Some(None);
                    return true;
                }
            }
        }
        progress
    }

    fn start_request(&mut self, head: keepwire_proto::RequestHead, kind: BodyKind) {
        let now = self.now;
        self.info.request_index += 1;
        self.last_activity = now;
        self.head_started = now;
        self.shared.metrics.requests.fetch_add(1, Relaxed);
        if self.stopping
            || self
                .shared
                .config
                .max_age
                .is_some_and(|age| now.duration_since(self.started) >= age)
        {
            self.conn.disable_keep_alive();
        }
        let body = match kind {
            BodyKind::Empty | BodyKind::Length(0) => Body::empty(),
            _ => {
                let (tx, rx) = mpsc::channel(2);
                let wants = if self.conn.expects_continue() {
                    let (wtx, wrx) = oneshot::channel();
                    self.continue_rx = Some(wrx);
                    Some(wtx)
                } else {
                    None
                };
                self.body_tx = Some(tx);
                let length = match kind {
                    BodyKind::Length(n) => Some(n),
                    _ => None,
                };
                Body::incoming(rx, wants, length)
            }
        };
        tracing::info!(
            target: "keepwire::access",
            conn = self.info.id,
            peer = %self.info.peer,
            local = %self.info.local,
            index = self.info.request_index,
            method = %head.method,
            target = %head.target,
            version = ?head.version,
        );
        let upgrade = head.method == http::Method::CONNECT
            || keepwire_proto::hop::upgrade_protocol(head.version, &head.headers).is_some();
        let on_upgrade = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            self.upgrade_tx = Some(tx);
            super::OnUpgrade(Arc::new(std::sync::Mutex::new(Some(rx))))
        });
        let barrier = !keepwire_proto::hop::is_idempotent(&head.method);
        // The head goes to the handler as read; a handler that wants the
        // `Request` view gets it built there (`Handler::call_incoming`).
        let req = super::Incoming {
            head,
            body,
            info: Some(self.info),
            on_upgrade,
        };
        self.pipeline.push_back(Slot {
            fut: None,
            ready: None,
            waiting: Some(req),
            barrier,
        });
        self.start_handlers();
    }

    /// Hands waiting requests to the handler, in order, as far as the
    /// barriers allow. Pipelined idempotent requests run ahead together;
    /// a non-idempotent one starts only once every earlier response is
    /// written, and later ones wait until its own is: a proxy then sends it
    /// upstream alone and in order, as a client must (R7.4), and a failure
    /// cannot leave it unclear which requests were acted on.
    fn start_handlers(&mut self) {
        let mut blocked = self.streaming_barrier;
        let busy = self.streaming.is_some();
        for (i, slot) in self.pipeline.iter_mut().enumerate() {
            if slot.waiting.is_some() {
                if blocked || (slot.barrier && (i > 0 || busy)) {
                    return;
                }
                let req = slot.waiting.take().expect("checked");
                slot.fut = Some(self.handler.call_incoming(req));
                slot.poll(&mut Context::from_waker(Waker::noop()));
            }
            blocked |= slot.barrier;
        }
    }

    /// Step 2: encodes ready responses in order. Returns whether anything
    /// was encoded; `Err` ends the connection.
    async fn pump_responses(&mut self) -> Result<bool, CloseReason> {
        let mut progress = false;
        loop {
            if let Some(body) = &mut self.streaming {
                let polled = match self.next_frame.take() {
                    Some(frame) => Poll::Ready(frame),
                    None => Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop())),
                };
                match polled {
                    Poll::Pending => return Ok(progress),
                    Poll::Ready(Some(Ok(frame))) => {
                        progress = true;
                        if let Ok(data) = frame.into_data() {
                            self.write_body(data).await?;
                            // Streaming: each chunk goes out as it comes.
                            self.flush().await?;
                        }
                    }
                    Poll::Ready(None) => {
                        progress = true;
                        self.streaming = None;
                        self.streaming_barrier = false;
                        self.end_response()?;
                        self.start_handlers();
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The peer must see a truncated message (R8.2):
                        // no terminator, close now.
                        tracing::debug!(conn = self.info.id, error = %e, "response body failed");
                        let _ = self.flush().await;
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
            let (resp, barrier) = self
                .pipeline
                .pop_front()
                .and_then(|s| Some((s.ready?, s.barrier)))
                .expect("front slot is ready");
            progress = true;
            self.start_response(resp).await?;
            self.streaming_barrier = barrier && self.streaming.is_some();
            self.start_handlers();
        }
    }

    async fn start_response(&mut self, resp: Response<Body>) -> Result<(), CloseReason> {
        // The head is encoded by a plain function: its values (header map,
        // extensions) then never live across an await, so they take no room
        // in the connection's future (R5.6: what an idle connection costs).
        let (full, body) = self.encode_head(resp)?;
        if self.conn.is_upgraded() {
            // 101, or 2xx to CONNECT: the bytes from here on are a tunnel's.
            self.flush().await?;
            return Err(CloseReason::Upgraded);
        }
        match full {
            Some(bytes) => {
                if !bytes.is_empty() {
                    self.write_body(bytes).await?;
                }
                self.end_response()
            }
            None => {
                self.streaming = Some(body);
                Ok(())
            }
        }
    }

    /// Encodes a response head into the output buffer; returns the body,
    /// whole if it is known whole.
    fn encode_head(&mut self, resp: Response<Body>) -> Result<(Option<Bytes>, Body), CloseReason> {
        let (parts, mut body) = resp.into_parts();
        let mut headers = parts.headers;
        if !headers.contains_key(DATE) {
            headers.insert(DATE, self.date.get_or_insert_with(crate::date::now).clone());
        }
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
        // Answering the newest request before its body was read (an
        // `Expect: 100-continue` refused, a handler that ignores the body):
        // the end of that body cannot be found without reading it, so the
        // connection closes after this response; say so on it (R5.3,
        // RFC 9110 §10.1.1). A streamed response may see the body finish
        // meanwhile, so it is announced only when it cannot (no 100 sent).
        let body_unread = self.pipeline.is_empty() && self.body_tx.is_some();
        if body_unread && (full.is_some() || self.conn.expects_continue()) {
            headers.insert(CONNECTION, http::HeaderValue::from_static("close"));
        }
        let mut extensions = parts.extensions;
        let head = ResponseHead {
            status: parts.status,
            reason: None,
            version: Version::HTTP_11,
            headers,
            header_case: extensions.remove().unwrap_or_default(),
        };
        if let Err(e) = self.conn.send_response(&head, length, &mut self.out) {
            tracing::error!(conn = self.info.id, error = %e, "handler response rejected");
            return Err(CloseReason::Error);
        }
        Ok((full, body))
    }

    async fn write_body(&mut self, data: Bytes) -> Result<(), CloseReason> {
        let mut framed = self.conn.send_body(data).map_err(|e| {
            tracing::error!(conn = self.info.id, error = %e, "response body does not match its length");
            CloseReason::Error
        })?;
        if framed.remaining() <= COPY_BODY_MAX {
            self.out.put(framed);
            if self.out.len() > OUT_HIGH_WATER {
                self.flush().await?;
            }
            return Ok(());
        }
        self.flush().await?;
        while framed.has_remaining() {
            let mut slices = [io::IoSlice::new(&[]); 3];
            let n = framed.chunks_vectored(&mut slices);
            let written = self.write(&slices[..n]).await?;
            framed.advance(written);
        }
        Ok(())
    }

    fn end_response(&mut self) -> Result<(), CloseReason> {
        self.conn.send_end(None, &mut self.out).map_err(|e| {
            tracing::error!(conn = self.info.id, error = %e, "response ended early");
            CloseReason::Error
        })?;
        self.last_activity = self.now;
        Ok(())
    }

    /// Step 3: writes the output buffer, bounded by the write timeout.
    async fn flush(&mut self) -> Result<(), CloseReason> {
        let timeout = self.shared.config.write_timeout;
        let mut result = Ok(());
        while !self.out.is_empty() && result.is_ok() {
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
        let timeout = self.shared.config.write_timeout;
        match self.stream.write_timed(bufs, timeout).await {
            Ok(n) => Ok(n),
            Err(e) => Err(self.write_failed(e)),
        }
    }

    fn write_failed(&mut self, e: io::Error) -> CloseReason {
        if e.kind() == io::ErrorKind::TimedOut {
            return CloseReason::Timeout;
        }
        self.peer_eof = true;
        CloseReason::Error
    }

    /// Keeps the idle-connections gauge in step with this connection.
    fn mark_idle(&mut self, idle: bool) {
        if idle != self.counted_idle {
            self.counted_idle = idle;
            let gauge = &self.shared.metrics.connections_idle;
            if idle {
                gauge.fetch_add(1, Relaxed);
            } else {
                gauge.fetch_sub(1, Relaxed);
            }
        }
    }

    fn quiet(&self) -> bool {
        self.conn.is_idle() && self.pipeline.is_empty() && self.streaming.is_none()
    }

    /// The next timer for the current phase.
    fn deadline(&self, now: Instant) -> Instant {
        let cfg = &self.shared.config;
        if self.quiet() {
            if self.stopping {
                return self.last_activity + cfg.keep_alive_min;
            }
            let idle = self.last_activity + cfg.idle_timeout;
            if !self.released {
                return idle.min(self.last_activity + RELEASE_AFTER);
            }
            return idle;
        }
        if self.conn.is_reading_head() && self.pipeline.is_empty() {
            return self.head_started + cfg.header_timeout;
        }
        if self.body_tx.is_some() && self.stalled.is_none() {
            return self.last_activity + cfg.body_timeout;
        }
        let _ = now;
        far_future()
    }

    fn on_timer(&mut self) -> Option<CloseReason> {
        let now = Instant::now();
        let cfg = &self.shared.config;
        if self.quiet() {
            if self.stopping && now >= self.last_activity + cfg.keep_alive_min {
                return Some(CloseReason::Shutdown);
            }
            if now >= self.last_activity + cfg.idle_timeout {
                return Some(CloseReason::IdleTimeout);
            }
            if !self.released && now >= self.last_activity + RELEASE_AFTER {
                // Idle: keep-alive connections should cost next to nothing.
                self.conn.release_buffers();
                self.out = BytesMut::new();
                self.pipeline = Default::default();
                self.released = true;
            }
            return None;
        }
        let head_late = self.conn.is_reading_head()
            && self.pipeline.is_empty()
            && now >= self.head_started + cfg.header_timeout;
        let body_late = self.body_tx.is_some() && now >= self.last_activity + cfg.body_timeout;
        if head_late || body_late {
            tracing::debug!(conn = self.info.id, head_late, body_late, "request timeout");
            self.timed_out = true;
            if let Some(tx) = self.body_tx.take() {
                let _ = tx.try_send(Err(BodyError::Closed));
            }
            self.failed = Some(
                self.pipeline
                    .is_empty()
                    .then_some(StatusCode::REQUEST_TIMEOUT),
            );
            return None;
        }
        None
    }

    fn close_reason(&self) -> CloseReason {
        if self.stopping {
            CloseReason::Shutdown
        } else if self.peer_eof {
            CloseReason::ClientClose
        } else if self
            .shared
            .config
            .max_requests
            .is_some_and(|m| self.info.request_index >= m)
            || self
                .shared
                .config
                .max_age
                .is_some_and(|age| self.started.elapsed() >= age)
        {
            CloseReason::MaxRequests
        } else {
            CloseReason::NotPersistent
        }
    }
}

/// A server-made error response that ends the connection.
fn error_response(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut resp = Response::new(Body::from(format!("{reason}\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONNECTION, http::HeaderValue::from_static("close"));
    resp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    resp
}

/// No input is waiting in the socket (a plain close would not send RST).
fn socket_drained(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(
        socket2::SockRef::from(stream).peek(&mut byte),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

/// Resolves when the front handler is done; drives the others meanwhile
/// (they may run ahead up to the pipelining depth).
async fn poll_pipeline(pipeline: &mut std::collections::VecDeque<Slot>) {
    std::future::poll_fn(|cx| {
        let mut front_ready = false;
        for (i, slot) in pipeline.iter_mut().enumerate() {
            let ready = slot.poll(cx);
            if i == 0 {
                front_ready = ready;
            }
        }
        if front_ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

async fn reserve(
    tx: &Option<mpsc::Sender<Result<Bytes, BodyError>>>,
) -> Option<mpsc::Permit<'_, Result<Bytes, BodyError>>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => None,
    }
}
