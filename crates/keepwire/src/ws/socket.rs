//! The open connection: messages both ways over tungstenite's framing, and
//! the clocks around it (keep-alive pings, dead-peer, idle and close
//! timeouts) that make a long-lived connection safe to hold.
//!
//! Both halves share one `tokio_tungstenite::WebSocketStream` behind a
//! mutex held only inside a `poll` (never across an await), as its own
//! `split` does: its waker proxy wakes the reading and the writing task
//! alike, and `Shared::poll_write` covers the one waker both halves'
//! writes share. The [`Receiver`] owns the clocks, so a program that only sends
//! still has to poll it (as it must anyway, to see the peer's close).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self as tung, protocol::WebSocketConfig};

use super::{CloseFrame, Config, Error, Message, Role};
use crate::upgrade::Upgraded;

type Ws = WebSocketStream<Upgraded>;

/// What both halves share.
struct Shared {
    ws: Mutex<Ws>,
    cfg: Config,
    /// The clock's zero: the times below are milliseconds since it.
    epoch: Instant,
    /// The last data message either way (for the idle timeout).
    last_data: AtomicU64,
    /// When we sent a close frame, plus one (0: not yet).
    close_sent: AtomicU64,
    /// The task of each [`Half`] whose write waits (see `poll_write`).
    writers: [AtomicWaker; 2],
}

/// Which half writes: the [`Sender`], or the [`Receiver`] (pongs, pings,
/// close replies).
#[derive(Clone, Copy)]
enum Half {
    Tx = 0,
    Rx = 1,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ws> {
        self.ws.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// One poll of a write (`poll_ready`, `poll_flush`) by `half`.
    /// tokio-tungstenite keeps a single waker for writes, so a half whose
    /// write waits can lose its place to the other half's: it registers
    /// here too, and a write that completes wakes the other half to try
    /// again.
    fn poll_write(
        &self,
        half: Half,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut Ws>, &mut Context<'_>) -> Poll<Result<(), tung::Error>>,
    ) -> Poll<Result<(), tung::Error>> {
        let r = f(Pin::new(&mut *self.lock()), cx);
        match r {
            Poll::Pending => self.writers[half as usize].register(cx.waker()),
            Poll::Ready(_) => self.writers[1 - half as usize].wake(),
        }
        r
    }

    /// Queues `msg` and writes it out, bounded by the write timeout.
    async fn send(&self, half: Half, msg: tung::Message) -> Result<(), Error> {
        let limit = self.cfg.write_timeout;
        let write = async {
            poll_fn(|cx| self.poll_write(half, cx, |ws, cx| ws.poll_ready(cx))).await?;
            Pin::new(&mut *self.lock()).start_send(msg)?;
            poll_fn(|cx| self.poll_write(half, cx, |ws, cx| ws.poll_flush(cx))).await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(r) => r.map_err(from_tung),
            Err(_) => Err(Error::WriteTimeout(limit)),
        }
    }
}

/// An open WebSocket: [`recv`](Self::recv), [`send`](Self::send),
/// [`close`](Self::close), or [`split`](Self::split) into halves for two
/// tasks.
pub struct WebSocket {
    tx: Sender,
    rx: Receiver,
}

/// The sending half of a [`WebSocket`].
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

/// The receiving half of a [`WebSocket`]; it also runs the connection's
/// clocks (pings, dead-peer, idle and close timeouts).
pub struct Receiver {
    shared: Arc<Shared>,
    /// The last frame of any kind from the peer.
    last_rx: Instant,
    /// A keep-alive ping is out: the peer must send something by then.
    ping_deadline: Option<Instant>,
    /// The peer's close arrived (its reply, or its own close) at this time.
    close_seen: Option<Instant>,
    /// Control frames (our ping, a pong or close reply) wait to be flushed.
    unflushed: bool,
    /// A failure: the close frame, the half-close and the drain happen
    /// before `recv` reports it.
    failing: Option<(Error, Option<CloseFrame>, Instant)>,
    timer: Pin<Box<Sleep>>,
    pings: u64,
    done: bool,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// A WebSocket on a connection whose handshake is done.
    pub fn from_upgraded(io: Upgraded, role: Role, cfg: Config) -> WebSocket {
        let mut wcfg = WebSocketConfig::default();
        wcfg.max_frame_size = Some(cfg.max_frame_size);
        wcfg.max_message_size = Some(cfg.max_message_size);
        let role = match role {
            Role::Server => tung::protocol::Role::Server,
            Role::Client => tung::protocol::Role::Client,
        };
        let ws = WebSocketStream::from_raw_socket(io, role, Some(wcfg))
            .now_or_never()
            .expect("a handshake-less WebSocketStream is ready at once");
        let now = Instant::now();
        let shared = Arc::new(Shared {
            ws: Mutex::new(ws),
            cfg,
            epoch: now,
            last_data: AtomicU64::new(0),
            close_sent: AtomicU64::new(0),
            writers: Default::default(),
        });
        WebSocket {
            tx: Sender {
                shared: shared.clone(),
            },
            rx: Receiver {
                shared,
                last_rx: now,
                ping_deadline: None,
                close_seen: None,
                unflushed: false,
                failing: None,
                timer: Box::pin(tokio::time::sleep_until(now + Duration::from_secs(86_400))),
                pings: 0,
                done: false,
            },
        }
    }

    /// The next message, `None` once the connection is closed (after the
    /// close handshake, or after an error was returned). Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        self.rx.recv().await
    }

    /// Sends one message (a [`Message::Close`] starts the close
    /// handshake; [`close`](Self::close) also waits for its end).
    pub async fn send(&mut self, m: Message) -> Result<(), Error> {
        self.tx.send(m).await
    }

    /// The close handshake: sends a close frame with `code` and `reason`,
    /// then reads (dropping data messages) until the peer's close reply
    /// and the end of the connection, within the close timeout.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        self.tx.close(code, reason).await?;
        loop {
            match self.rx.recv().await {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The halves, for a reading and a writing task.
    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }
}

impl Sender {
    /// Sends one message.
    pub async fn send(&self, m: Message) -> Result<(), Error> {
        let data = matches!(m, Message::Text(_) | Message::Binary(_));
        let closing = matches!(m, Message::Close(_));
        if self.shared.close_sent.load(Relaxed) != 0 {
            return Err(Error::Closed);
        }
        if closing {
            self.shared
                .close_sent
                .store(self.shared.now_ms() + 1, Relaxed);
        }
        self.shared.send(Half::Tx, to_tung(m)).await?;
        if data {
            self.shared.last_data.store(self.shared.now_ms(), Relaxed);
        }
        Ok(())
    }

    /// Sends a close frame; the [`Receiver`] sees the peer's reply (and
    /// drops the connection if it does not come within the close timeout).
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        self.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string(),
        })))
        .await
    }
}

/// What one poll of the connection gave.
enum Step {
    Frame(Option<Result<tung::Message, tung::Error>>),
    Timer,
}

impl Receiver {
    /// The next message; see [`WebSocket::recv`]. Cancel-safe: every
    /// step keeps its progress in `self`.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        loop {
            if self.failing.is_some() {
                return Some(Err(self.fail().await));
            }
            if self.done {
                return None;
            }
            // The timer only moves earlier, or after it fired: most
            // messages push the deadlines later, and a timer that fires
            // early costs a check, where a reset per message costs the
            // timer wheel's work each time.
            let deadline = self.next_deadline();
            if deadline < self.timer.deadline() || self.timer.is_elapsed() {
                self.timer.as_mut().reset(deadline);
            }
            match poll_fn(|cx| self.poll_step(cx)).await {
                Step::Timer => {
                    if let Some(r) = self.on_timer().await {
                        return r;
                    }
                }
                Step::Frame(None) => {
                    // Closed: our FIN now, so a peer that half-closed and
                    // waits for ours (RFC 6455 §7.1.1) is not left waiting.
                    let s = self.shared.clone();
                    let shutdown = poll_fn(|cx| Pin::new(s.lock().get_mut()).poll_shutdown(cx));
                    let _ = tokio::time::timeout(s.cfg.close_timeout, shutdown).await;
                    self.done = true;
                    return None;
                }
                Step::Frame(Some(Ok(m))) => {
                    if let Some(m) = self.on_message(m) {
                        return Some(Ok(m));
                    }
                }
                Step::Frame(Some(Err(e))) => self.on_error(e),
            }
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let s = self.shared.clone();
        let flush = |cx: &mut Context<'_>| s.poll_write(Half::Rx, cx, |ws, cx| ws.poll_flush(cx));
        if self.unflushed {
            match flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Step::Frame(Some(Err(e)))),
                Poll::Pending => {}
            }
        }
        let next = Pin::new(&mut *s.lock()).poll_next(cx);
        if let Poll::Ready(r) = next {
            // The pong or close reply tungstenite queued goes out now, not
            // at the next read.
            if let Some(Ok(tung::Message::Ping(_) | tung::Message::Close(_))) = &r {
                self.unflushed = !matches!(flush(cx), Poll::Ready(Ok(())));
            }
            return Poll::Ready(Step::Frame(r));
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Step::Timer),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The earliest of the clocks that apply now.
    fn next_deadline(&self) -> Instant {
        let s = &self.shared;
        let cfg = &s.cfg;
        let far = Instant::now() + Duration::from_secs(86_400);
        let mut at = far;
        let mut min = |t: Instant| at = at.min(t);
        let sent = s.close_sent.load(Relaxed);
        if sent != 0 {
            min(s.at(sent - 1) + cfg.close_timeout);
        }
        if let Some(seen) = self.close_seen {
            min(seen + cfg.close_timeout);
        }
        if sent != 0 || self.close_seen.is_some() {
            return at;
        }
        match (self.ping_deadline, cfg.ping_interval) {
            (Some(d), _) => min(d),
            (None, Some(every)) => min(self.last_rx + every),
            (None, None) => {}
        }
        if let Some(idle) = cfg.idle_timeout {
            min(s.at(s.last_data.load(Relaxed)) + idle);
        }
        at
    }

    /// A clock ran out: `Some` is what `recv` returns.
    async fn on_timer(&mut self) -> Option<Option<Result<Message, Error>>> {
        let now = Instant::now();
        let s = self.shared.clone();
        let cfg = &s.cfg;
        let sent = s.close_sent.load(Relaxed);
        let closing_since = match (sent, self.close_seen) {
            (0, seen) => seen,
            (ms, seen) => Some(seen.map_or(s.at(ms - 1), |t| t.min(s.at(ms - 1)))),
        };
        if let Some(since) = closing_since {
            if now >= since + cfg.close_timeout {
                self.done = true;
                return Some(Some(Err(Error::CloseTimeout(cfg.close_timeout))));
            }
            return None;
        }
        if let Some(d) = self.ping_deadline
            && now >= d
        {
            self.done = true;
            return Some(Some(Err(Error::DeadPeer(cfg.dead_peer_timeout))));
        }
        if let Some(idle) = cfg.idle_timeout
            && now >= s.at(s.last_data.load(Relaxed)) + idle
        {
            self.failing = Some((
                Error::IdleTimeout(idle),
                Some(CloseFrame {
                    code: 1001,
                    reason: "idle timeout".into(),
                }),
                now + cfg.close_timeout,
            ));
            return None;
        }
        if self.ping_deadline.is_none()
            && let Some(every) = cfg.ping_interval
            && now >= self.last_rx + every
        {
            self.pings += 1;
            let payload = bytes::Bytes::copy_from_slice(&self.pings.to_be_bytes());
            // Queued, not flushed: `poll_step` flushes it while it reads,
            // so a peer that does not read cannot hold `recv` here.
            let queued = poll_fn(|cx| s.poll_write(Half::Rx, cx, |ws, cx| ws.poll_ready(cx)))
                .await
                .and_then(|()| Pin::new(&mut *s.lock()).start_send(tung::Message::Ping(payload)));
            if let Err(e) = queued {
                self.done = true;
                return Some(Some(Err(from_tung(e))));
            }
            self.unflushed = true;
            self.ping_deadline = Some(now + cfg.dead_peer_timeout);
        }
        None
    }

    /// A message from the peer: `Some` to hand to the caller.
    fn on_message(&mut self, m: tung::Message) -> Option<Message> {
        self.last_rx = Instant::now();
        self.ping_deadline = None;
        let s = &self.shared;
        Some(match m {
            tung::Message::Text(t) => {
                s.last_data.store(s.now_ms(), Relaxed);
                Message::Text(t.as_str().to_owned())
            }
            tung::Message::Binary(b) => {
                s.last_data.store(s.now_ms(), Relaxed);
                Message::Binary(b)
            }
            // tungstenite queued the pong; `poll_step` flushed it.
            tung::Message::Ping(p) => Message::Ping(p),
            tung::Message::Pong(p) => Message::Pong(p),
            tung::Message::Close(c) => {
                self.close_seen = Some(self.last_rx);
                Message::Close(c.map(|c| CloseFrame {
                    code: c.code.into(),
                    reason: c.reason.as_str().to_owned(),
                }))
            }
            tung::Message::Frame(_) => return None,
        })
    }

    /// The framing failed: close with the matching code, then report.
    fn on_error(&mut self, e: tung::Error) {
        let close = |code: u16, reason: &str| {
            Some(CloseFrame {
                code,
                reason: reason.into(),
            })
        };
        let (err, frame) = match e {
            tung::Error::Capacity(c) => (Error::TooBig(c.to_string()), close(1009, "too big")),
            tung::Error::Utf8(_) => (Error::InvalidUtf8, close(1007, "invalid UTF-8")),
            tung::Error::Protocol(tung::error::ProtocolError::ResetWithoutClosingHandshake) => {
                (Error::Reset, None)
            }
            tung::Error::Protocol(p) => (
                Error::Protocol(p.to_string()),
                close(1002, "protocol error"),
            ),
            tung::Error::AttackAttempt => (
                Error::Protocol("attack attempt".into()),
                close(1002, "protocol error"),
            ),
            other => (from_tung(other), None),
        };
        let deadline = Instant::now() + self.shared.cfg.close_timeout;
        self.failing = Some((err, frame, deadline));
    }

    /// Fails the connection (RFC 6455 §7.1.7): the close frame if one is
    /// due and none was sent, our half closed, then the peer's bytes
    /// drained until it closes or the close timeout, so that it reads our
    /// close frame before the connection goes (R8.5's lingering close).
    /// Cancel-safe: every step may run again.
    async fn fail(&mut self) -> Error {
        let (_, frame, deadline) = self.failing.as_ref().expect("failing");
        let (frame, deadline) = (frame.clone(), *deadline);
        let s = self.shared.clone();
        let work = async {
            if let Some(f) = frame
                && s.close_sent.load(Relaxed) == 0
                && self.close_seen.is_none()
            {
                s.close_sent.store(s.now_ms() + 1, Relaxed);
                let _ = s.send(Half::Rx, to_tung(Message::Close(Some(f)))).await;
            }
            // Whatever tungstenite still holds (the close frame, if a
            // cancelled run queued it) goes before our FIN.
            let _ = poll_fn(|cx| s.poll_write(Half::Rx, cx, |ws, cx| ws.poll_flush(cx))).await;
            let _ = poll_fn(|cx| Pin::new(s.lock().get_mut()).poll_shutdown(cx)).await;
            let mut scratch = vec![0u8; 8192];
            loop {
                let n = poll_fn(|cx| {
                    let mut buf = ReadBuf::new(&mut scratch);
                    Pin::new(s.lock().get_mut())
                        .poll_read(cx, &mut buf)
                        .map_ok(|()| buf.filled().len())
                })
                .await;
                if !matches!(n, Ok(n) if n > 0) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, work).await;
        self.done = true;
        self.failing.take().expect("failing").0
    }
}

fn to_tung(m: Message) -> tung::Message {
    match m {
        Message::Text(t) => tung::Message::Text(t.into()),
        Message::Binary(b) => tung::Message::Binary(b),
        Message::Ping(p) => tung::Message::Ping(p),
        Message::Pong(p) => tung::Message::Pong(p),
        Message::Close(c) => tung::Message::Close(c.map(|c| tung::protocol::CloseFrame {
            code: c.code.into(),
            reason: c.reason.into(),
        })),
    }
}

fn from_tung(e: tung::Error) -> Error {
    match e {
        tung::Error::Io(e) => Error::Io(e),
        tung::Error::ConnectionClosed | tung::Error::AlreadyClosed => Error::Closed,
        tung::Error::Protocol(tung::error::ProtocolError::SendAfterClosing) => Error::Closed,
        tung::Error::Capacity(c) => Error::TooBig(c.to_string()),
        tung::Error::Utf8(_) => Error::InvalidUtf8,
        other => Error::Protocol(other.to_string()),
    }
}
