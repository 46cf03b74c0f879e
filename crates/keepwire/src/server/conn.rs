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
//!
//! The driver's state is grouped by the side it serves: the request body
//! here, the response side in `respond` and the timers in `timers`. None of
//! it decides persistence: the runtime reports facts (a whole response that
//! leaves the request body unread, the connection's age) and `Conn` decides
//! and announces.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body::Body as _;
use keepwire_proto::{BodyKind, Conn, ConnConfig, Event, Role};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{ConnInfo, Handler, ResponseFuture, Shared};
use crate::body::{Body, BodyError};
use crate::metrics::CloseReason;
use crate::net::{self, LingerOutcome};
use crate::transport::Transport;
use crate::upgrade::Upgraded;

pub(crate) mod gone;
mod respond;
mod timers;

use gone::{PeerGone, Seen, socket_drained};
use respond::{Next, ResponseStream, error_response};
use timers::{Timers, far_future};

/// Bodies up to this size are copied next to their head (one write);
/// larger ones are written from their own buffer.
const COPY_BODY_MAX: usize = 16 * 1024;
/// Flush the output buffer mid-burst when it grows past this.
const OUT_HIGH_WATER: usize = 64 * 1024;

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
    state: SlotState,
    /// Non-idempotent: its handler runs alone (R7.4, R8.3).
    barrier: bool,
    /// When its head began to arrive (request-duration histogram).
    began: Instant,
}

/// Where a pipelined request stands. One of three, not three options:
/// the pipeline's buffer is allocated again each time a connection turns
/// busy (R5.6 frees it when idle), and every request moves through it.
enum SlotState {
    /// Read but not handed to the handler yet (it waits behind a barrier).
    /// Boxed: rare, and inline the request head would make every slot
    /// twice as large.
    Waiting(Box<super::Incoming>),
    /// The handler runs.
    Running(ResponseFuture),
    /// The response, not written yet.
    Ready(Response<Body>),
}

impl Slot {
    /// Drives the handler; whether the response is ready.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if let SlotState::Running(fut) = &mut self.state
            && let Poll::Ready(resp) = fut.as_mut().poll(cx)
        {
            self.state = SlotState::Ready(resp);
        }
        self.is_ready()
    }

    fn is_ready(&self) -> bool {
        matches!(self.state, SlotState::Ready(_))
    }

    /// The response, if it is ready.
    fn into_ready(self) -> Option<Response<Body>> {
        match self.state {
            SlotState::Ready(resp) => Some(resp),
            _ => None,
        }
    }
}

/// What woke the loop.
enum Wake {
    Read(io::Result<usize>),
    Peer(Seen),
    Progress,
    Timer,
    Stop,
}

/// The request body being read, fed to its handler.
#[derive(Default)]
struct RequestBody {
    /// Feeds the handler's body; `None` when no body is being read.
    tx: Option<mpsc::Sender<Result<Bytes, BodyError>>>,
    /// A body chunk waiting for room in `tx` (backpressure).
    stalled: Option<Bytes>,
    /// Fires when the handler first reads a body that expects 100-continue.
    continue_rx: Option<oneshot::Receiver<()>>,
}

/// How a connection whose request could not be read ends.
#[derive(Clone, Copy)]
enum Failure {
    /// With this error response.
    Answer(StatusCode),
    /// Without an answer (none makes sense, or one is under way).
    Quiet,
}

struct Driver {
    stream: Transport,
    conn: Conn,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    info: ConnInfo,
    out: BytesMut,
    /// Handlers in request order.
    pipeline: std::collections::VecDeque<Slot>,
    /// The body of the request being read.
    body: RequestBody,
    /// The response body being streamed. Boxed: most responses are whole,
    /// and inline it would be part of every connection, idle ones
    /// included (R5.6).
    streaming: Option<Box<ResponseStream>>,
    /// A request could not be read: the connection ends once earlier
    /// responses are out.
    failed: Option<Failure>,
    timers: Timers,
    stopping: bool,
    /// A header or body timeout ended the connection (counted as Timeout).
    timed_out: bool,
    peer_eof: bool,
    /// Hands the connection to the handler after a 101 / CONNECT 2xx.
    upgrade_tx: Option<oneshot::Sender<Upgraded>>,
    /// Where TCP_NODELAY stands (set lazily: see [`NoDelay`]).
    nodelay: NoDelay,
    /// Fires when the client leaves (made at the first request).
    gone: PeerGone,
    /// Watch for the client leaving while not reading (see [`gone`]).
    watch: bool,
    /// Requests not yet in the access log (`None`: no access log).
    access: Option<Box<crate::server::access::ConnLog>>,
}

/// TCP_NODELAY is set before a connection's second write, not at accept
/// (nginx sets it when a connection turns keep-alive): Nagle holds a small
/// write back only while earlier data is unacknowledged, which a first
/// write never has, so a one-response connection saves the `setsockopt`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NoDelay {
    /// Nothing written yet.
    FirstWrite,
    /// One write done: set it before the next.
    SecondWrite,
    /// Set (or TLS, which set it before its handshake).
    Set,
}

/// Serves one HTTP/1 connection. Not an `async fn`: one keeps its
/// arguments in the future for its whole life beside the copies it works
/// on, and every byte of this future is part of what an idle connection
/// costs (R5.6). The driver is built here and moved into the future once.
pub(crate) fn serve(
    stream: Transport,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    id: u64,
    slot: super::ConnSlot,
    handler: Arc<dyn Handler>,
    stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let shared = slot.shared.clone();
    let cfg = &shared.config;
    let local = local.unwrap_or_else(|| stream.tcp().local_addr().unwrap_or(peer));
    let mut config = ConnConfig::default();
    config.limits = cfg.limits.clone();
    config.preserve_header_case = cfg.preserve_header_case;
    config.max_in_flight = cfg.pipeline_depth.max(1);
    config.advertise_timeout = cfg
        .advertise_keep_alive
        .then(|| cfg.idle_timeout.as_secs().max(1));
    config.max_requests = cfg.max_requests;
    config.proxy_connection = cfg.proxy_connection;
    let conn = Conn::new(Role::Server, config);
    let stream_is_tls = stream.is_tls();
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
        body: RequestBody::default(),
        streaming: None,
        failed: None,
        timers: Timers::new(Instant::now()),
        stopping: false,
        timed_out: false,
        peer_eof: false,
        upgrade_tx: None,
        nodelay: if stream_is_tls {
            NoDelay::Set
        } else {
            NoDelay::FirstWrite
        },
        gone: PeerGone::default(),
        watch: true,
        access: crate::server::access::ConnLog::of(&slot.shared.config),
    };
    async move {
        let reason = d.run(stop).await;
        crate::server::access::ConnLog::close(d.access.take(), &d.info, reason);
        if !matches!(reason, CloseReason::Upgraded) {
            d.gone.fire(true);
        }
        d.mark_idle(false);
        let (requests, lived) = (d.info.request_index, d.timers.started.elapsed());
        tracing::debug!(conn = id, %peer, %local, requests, ?reason, "connection closed");
        let shared = &*d.shared;
        shared.metrics.closed(reason, requests, lived);
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
            // The slot moves into the tunnel.
            CloseReason::Upgraded => {
                if let Some(tx) = d.upgrade_tx.take() {
                    // The tunnel writes as it pleases: no Nagle there.
                    d.set_nodelay();
                    let read_buf = d.conn.take_read_buffer();
                    let _ = tx.send(Upgraded::holding(d.stream, read_buf, slot.into_tunnel()));
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
}

impl Driver {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> CloseReason {
        let mut timer = Box::pin(tokio::time::sleep_until(far_future()));
        let mut timer_at = far_future();
        loop {
            // One clock read per turn: every timestamp below is "now" to
            // within the microseconds a turn takes.
            self.timers.now = Instant::now();
            self.timers.date = None;
            // Bytes that arrived while the connection was idle start a new
            // head: the header timeout runs from now, not from the previous
            // request (R10.2). (`counted_idle` still says how we waited.)
            if self.timers.counted_idle && !self.conn.is_idle() {
                self.timers.head_started = self.timers.now;
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
                if let Failure::Answer(status) = status {
                    let _ = self.conn.send_error(status, &mut self.out);
                    if let Some(a) = &mut self.access {
                        a.error(&self.info, status, self.timers.now);
                    }
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
            let quiet = self.quiet();
            if quiet && !self.timers.released {
                self.release_buffers();
            }
            self.mark_idle(quiet);
            // The timer is (re)armed only when the select below polls it,
            // i.e. when nothing ahead of it is ready: a request already in
            // the socket then arms none. Arming a timer earlier than any
            // other wakes the runtime's driver (an `eventfd` write), which
            // a new connection would otherwise pay on its first turn.
            let deadline = self.deadline();
            let timer_due = std::future::poll_fn(|cx| {
                if deadline != timer_at {
                    timer.as_mut().reset(deadline);
                    timer_at = deadline;
                }
                timer.as_mut().poll(cx)
            });
            let wants_read =
                self.conn.wants_read() && self.body.stalled.is_none() && self.failed.is_none();
            // Not reading while a response is owed: watch for the client leaving.
            let watch = self.watch
                && !self.peer_eof
                && (!self.pipeline.is_empty() || self.streaming.is_some())
                && !self.gone.is_gone()
                && self.conn.read_buffer().is_empty();
            let wake = tokio::select! {
                biased;
                w = std::future::poll_fn(|cx| gone::poll_input(&mut self.stream, self.conn.read_buffer(), wants_read, cx)), if wants_read || watch => w,
                _ = poll_pipeline(&mut self.pipeline), if self.pipeline.front().is_some_and(|s| !s.is_ready()) => Wake::Progress,
                frame = std::future::poll_fn(|cx| match self.streaming.as_mut() {
                    Some(s) => Pin::new(&mut s.body).poll_frame(cx),
                    None => Poll::Pending,
                }), if self.streaming.as_ref().is_some_and(|s| matches!(s.next, Next::Wait)) => {
                    if let Some(s) = &mut self.streaming {
                        s.next = Next::of(frame);
                    }
                    Wake::Progress
                }
                permit = reserve(&self.body.tx), if self.body.stalled.is_some() => {
                    match permit {
                        Some(permit) => permit.send(Ok(self.body.stalled.take().unwrap_or_default())),
                        None => self.body.stalled = None,
                    }
                    Wake::Progress
                }
                r = async { self.body.continue_rx.as_mut().expect("guarded").await }, if self.body.continue_rx.is_some() => {
                    self.body.continue_rx = None;
                    if r.is_ok() {
                        self.conn.send_continue(&mut self.out);
                    }
                    Wake::Progress
                }
                _ = timer_due => Wake::Timer,
                _ = stop.wait_for(|v| *v), if !self.stopping => Wake::Stop,
            };
            match wake {
                // A TLS client that closes without `close_notify` ends its
                // input all the same; whether a request was cut short is the
                // protocol state's call, as with a TCP FIN.
                Wake::Read(Ok(0)) => self.on_eof(),
                Wake::Read(Err(e))
                    if e.kind() == io::ErrorKind::UnexpectedEof && self.stream.is_tls() =>
                {
                    self.on_eof()
                }
                Wake::Read(Ok(_)) => (self.timers.released, self.watch) = (false, true),
                Wake::Peer(Seen::Gone { lost }) => self.gone.fire(lost),
                Wake::Peer(Seen::Bytes) => self.watch = false,
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
                    // request the last. Busy ones end after what is in
                    // flight: a request that arrived is answered, and we
                    // never close mid-message (R5.5).
                    if !self.quiet() {
                        self.conn.disable_keep_alive();
                    }
                }
            }
        }
    }

    /// Step 1: turns buffered input into requests and body chunks.
    fn pump_events(&mut self) -> bool {
        if self.body.stalled.is_some() || self.failed.is_some() {
            return false;
        }
        let mut progress = false;
        loop {
            match self.conn.poll_event() {
                Ok(Some(Event::Request {
                    head,
                    body,
                    upgrade,
                })) => {
                    progress = true;
                    self.start_request(head, body, upgrade);
                }
                Ok(Some(Event::Data(bytes))) => {
                    progress = true;
                    self.timers.last_activity = self.timers.now;
                    if let Some(tx) = &self.body.tx {
                        match tx.try_send(Ok(bytes)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(Ok(b))) => {
                                self.body.stalled = Some(b);
                                return true;
                            }
                            // The handler dropped its body: discard.
                            Err(_) => {}
                        }
                    }
                }
                Ok(Some(Event::End(_))) => {
                    progress = true;
                    self.body.tx = None;
                }
                // A server connection never yields responses.
                Ok(Some(Event::Response { .. })) => {}
                Ok(Some(Event::Eof)) => {
                    self.peer_eof = true;
                    return progress;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(conn = self.info.id, error = %e, "bad request");
                    let Some(tx) = self.body.tx.take() else {
                        // A bad head: answered once earlier responses are out.
                        self.failed = Some(e.status_hint().map_or(Failure::Quiet, Failure::Answer));
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
                        slot.state = SlotState::Ready(error_response(status));
                    }
                    self.failed = Some(Failure::Quiet);
                    return true;
                }
            }
        }
        progress
    }

    fn start_request(&mut self, head: keepwire_proto::RequestHead, kind: BodyKind, upgrade: bool) {
        let (now, began) = (self.timers.now, self.timers.head_started);
        self.info.request_index += 1;
        self.timers.last_activity = now;
        self.timers.head_started = now;
        self.shared.metrics.requests.fetch_add(1, Relaxed);
        let cfg = &self.shared.config;
        if cfg
            .max_age
            .is_some_and(|age| now.duration_since(self.timers.started) >= age)
        {
            // Too old or stopping: this request is still answered, with
            // `close`, rather than dropped (R5.5).
            self.conn.retire();
        } else if self.stopping {
            self.conn.disable_keep_alive();
        }
        let body = match kind {
            BodyKind::Empty | BodyKind::Length(0) => Body::empty(),
            _ => {
                let (tx, rx) = mpsc::channel(2);
                let wants = if self.conn.expects_continue() {
                    let (wtx, wrx) = oneshot::channel();
                    self.body.continue_rx = Some(wrx);
                    Some(wtx)
                } else {
                    None
                };
                self.body.tx = Some(tx);
                let length = match kind {
                    BodyKind::Length(n) => Some(n),
                    _ => None,
                };
                Body::incoming(rx, wants, length)
            }
        };
        if let Some(a) = &mut self.access {
            a.request(&head, self.info.request_index, began);
        }
        if !self.gone.is_live() {
            self.gone = PeerGone::new();
        }
        let on_upgrade = upgrade.then(|| {
            let (tx, on_upgrade) = crate::upgrade::pending();
            self.upgrade_tx = Some(tx);
            on_upgrade
        });
        let barrier = !keepwire_proto::hop::is_idempotent(&head.method);
        // The head goes to the handler as read; a handler that wants the
        // `Request` view gets it built there (`Handler::call_incoming`).
        let req = super::Incoming {
            head,
            body,
            info: Some(self.info),
            on_upgrade,
            peer_gone: self.gone.clone(),
        };
        self.start_handlers(Some((req, barrier, began)));
    }

    /// Hands waiting requests to the handler, in order, as far as the
    /// barriers allow. Pipelined idempotent requests run ahead together;
    /// a non-idempotent one starts only once every earlier response is
    /// written, and later ones wait until its own is: a proxy then sends it
    /// upstream alone and in order, as a client must (R7.4), and a failure
    /// cannot leave it unclear which requests were acted on.
    ///
    /// A `new` request joins the pipeline's end by the same rule, started
    /// at once when nothing holds it back (it then never waits in a slot:
    /// the common case costs no box and no extra moves of the request).
    fn start_handlers(&mut self, new: Option<(super::Incoming, bool, Instant)>) {
        let mut blocked = self.streaming.as_ref().is_some_and(|s| s.barrier);
        let busy = self.streaming.is_some();
        let mut held = false;
        for (i, slot) in self.pipeline.iter_mut().enumerate() {
            if let SlotState::Waiting(_) = slot.state {
                if blocked || (slot.barrier && (i > 0 || busy)) {
                    held = true;
                    break;
                }
                // A box of a zero-sized future: no allocation.
                let running =
                    SlotState::Running(Box::pin(std::future::pending::<Response<Body>>()));
                if let SlotState::Waiting(req) = std::mem::replace(&mut slot.state, running) {
                    slot.state = start(&*self.handler, *req);
                }
            }
            blocked |= slot.barrier;
        }
        if let Some((req, barrier, began)) = new {
            let i = self.pipeline.len();
            let state = if held || blocked || (barrier && (i > 0 || busy)) {
                SlotState::Waiting(Box::new(req))
            } else {
                start(&*self.handler, req)
            };
            self.pipeline.push_back(Slot {
                state,
                barrier,
                began,
            });
        }
    }

    /// The client ended its input: requests may still be buffered (they are
    /// answered); if none is, whoever waits on [`PeerGone`] can stop.
    fn on_eof(&mut self) {
        self.conn.handle_eof();
        self.peer_eof = true;
        if self.conn.read_buffer().is_empty() {
            self.gone.fire(false);
        }
    }

    fn close_reason(&self) -> CloseReason {
        if self.stopping {
            CloseReason::Shutdown
        } else if self.peer_eof {
            CloseReason::ClientClose
        } else if self.conn.is_retired() {
            CloseReason::MaxRequests
        } else {
            CloseReason::NotPersistent
        }
    }
}

/// Hands a request to the handler and polls it once (most answer at
/// once).
fn start(handler: &dyn Handler, req: super::Incoming) -> SlotState {
    let mut fut = handler.call_incoming(req);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(resp) => SlotState::Ready(resp),
        Poll::Pending => SlotState::Running(fut),
    }
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

/// Waits for room in `tx`. The wait is boxed when it starts: it comes
/// only under backpressure, and inline its state would be part of every
/// connection's future (R5.6).
fn reserve(
    tx: &Option<mpsc::Sender<Result<Bytes, BodyError>>>,
) -> impl Future<Output = Option<mpsc::Permit<'_, Result<Bytes, BodyError>>>> {
    let mut wait = None;
    std::future::poll_fn(move |cx| {
        let Some(tx) = tx else {
            return Poll::Ready(None);
        };
        let wait = wait.get_or_insert_with(|| Box::pin(tx.reserve()));
        wait.as_mut().poll(cx).map(Result::ok)
    })
}
