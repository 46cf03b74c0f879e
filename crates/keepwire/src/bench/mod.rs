//! The load generator behind `keepwire bench` (and the lab's request loops).
//!
//! It exists to make the connection layer visible, so it counts what other
//! load generators hide: connections opened, requests each carried, requests
//! the server refused to answer after announcing `Connection: close` (R8.4),
//! and sockets left in TIME_WAIT (R2.4).
//!
//! `Plan::ws` and `Plan::sse` load real-time connections instead (issue
//! 17): WebSocket echo round trips (`ws`) and Server-Sent Events delivery
//! (`sse`), counted in the same tallies and report.
//!
//! # Not the bottleneck
//! A load generator that costs more CPU per request than the server under
//! test measures itself. So, like wrk, every thread runs its own event loop
//! (a current-thread tokio runtime) with its share of the connections and
//! its own histograms; nothing is shared on the hot path except one padded
//! progress counter per thread. The request is serialised once, through the
//! client's own [`Conn`](crate::proto::Conn) encoder, and written from one
//! buffer holding `pipeline` copies; responses are read with
//! [`skim_response`](crate::proto::skim_response) (the proto core's framing and persistence decisions,
//! without building a `HeaderMap`) and the body decoder.
//!
//! # Coordinated omission
//! Closed-loop runs measure latency from when a request was written. With
//! `rate`, each connection has a fixed schedule and latency runs from the
//! *intended* send time, so a stalled server is charged for every request
//! it delayed, not just the one it stalled (wrk2's correction). Timers tick
//! in milliseconds, so a send wakes up to 2 ms ahead of its time and is
//! measured from its actual write then: the loader's own timer lateness is
//! not charged to the server (wrk2 and oha charge it; see `Schedule`).

mod document;
mod http1;
mod http2;
mod http3;
mod opening;
mod progress;
mod report;
mod request;
mod sse;
mod ws;

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::Method;
use keepwire_proto::Limits;
use tokio::net::TcpStream;

pub use document::{Document, Target, decode_histogram, encode_histogram};
pub use progress::Progress;
pub use report::{FailureKind, Report, Window};
pub use request::{Http2Request, request_bytes};
pub use sse::SseRequest;
pub use ws::WsRequest;

use crate::net;
use crate::transport::Transport;
use report::Tally;

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Send for this long, then wait (up to the timeout) for what is in flight.
    Duration(Duration),
    /// Send exactly this many requests.
    Requests(u64),
}

/// Everything a run needs. Build the request with [`request_bytes`].
/// Outside this crate, start from `Plan::default()` and set fields (more
/// settings may come).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Plan {
    /// Where to connect.
    pub addr: SocketAddr,
    /// One serialised request, written as is (`pipeline` copies at a time).
    pub request: Bytes,
    /// The request's method, for response framing (a HEAD response has no body).
    pub method: Method,
    /// Concurrent connections.
    pub connections: usize,
    /// Event-loop threads (at most one per connection).
    pub threads: usize,
    /// When to stop.
    pub stop: Stop,
    /// Requests kept in flight per connection (1: no pipelining). Closed
    /// loop, they are written `pipeline` at a time, once all of the last
    /// batch are answered (wrk's pipelining).
    pub pipeline: usize,
    /// Close after every response (the request says `Connection: close`).
    pub close_each: bool,
    /// Open-loop: requests per second over all connections.
    pub rate: Option<f64>,
    /// A connect, or a request without progress, fails after this long.
    pub timeout: Duration,
    /// Speak HTTP/2 instead, `pipeline` streams at once per connection
    /// (like h2load's `-m`); `request` is unused. With prior knowledge
    /// (h2c) in cleartext, by ALPN over TLS.
    pub http2: Option<Http2Request>,
    /// Speak HTTP/3 over QUIC (UDP to `addr`) instead of HTTP/2: the
    /// request is `http2`'s, `pipeline` streams per connection; needs `tls`.
    pub http3: bool,
    /// Speak TLS (an `https://` run). The handshake is part of the connect
    /// time, as in wrk and h2load.
    pub tls: Option<Tls>,
    /// WebSocket echo instead of HTTP requests: each connection upgrades,
    /// then sends the message and waits for its echo, `pipeline` messages
    /// at a time (closed loop); `request` is unused. A "request" is then a
    /// message, a "response" its echo, `first_byte` the handshake and
    /// `statuses` the handshakes' statuses.
    pub ws: Option<WsRequest>,
    /// Server-Sent Events instead: each connection holds one event stream
    /// open; a "response" is an event, its latency the delay from the time
    /// stamped in it; `request` and `pipeline` are unused.
    pub sse: Option<SseRequest>,
    /// Start the load at this wall-clock time rather than at once, so
    /// several loaders on several machines start together (their clocks
    /// kept by NTP). Threads and runtimes are ready before it; connections
    /// open from it. A time already past starts at once.
    pub start_at: Option<SystemTime>,
}

/// TLS settings of an `https://` run; build it with [`Tls::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Tls {
    /// Verification; the run sets ALPN itself (`h2` or `http/1.1`).
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificate must carry (also sent as SNI).
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl Default for Plan {
    /// One connection on one thread sending `GET` for ten seconds (wrk's
    /// default length), no pipelining, closed loop, 10 s timeout. `addr`
    /// (127.0.0.1:80) and `request` (empty) are the caller's to set.
    fn default() -> Self {
        Plan {
            addr: SocketAddr::from(([127, 0, 0, 1], 80)),
            request: Bytes::new(),
            method: Method::GET,
            connections: 1,
            threads: 1,
            stop: Stop::Duration(Duration::from_secs(10)),
            pipeline: 1,
            close_each: false,
            rate: None,
            timeout: Duration::from_secs(10),
            http2: None,
            http3: false,
            tls: None,
            ws: None,
            sse: None,
            start_at: None,
        }
    }
}

impl Tls {
    /// Verify with `config`; the certificate must name `server_name`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Self {
        Tls {
            config,
            server_name,
        }
    }

    /// A connector offering only the protocol the run speaks.
    fn connector(&self, http2: bool) -> tokio_rustls::TlsConnector {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![if http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// Opens one connection for `plan`: TCP, then TLS on it when asked.
/// An error names what failed (for [`preflight`] and the connect count).
async fn open(plan: &Plan, tls: Option<&tokio_rustls::TlsConnector>) -> io::Result<Transport> {
    let tcp = TcpStream::connect(plan.addr).await?;
    let _ = net::tune_stream(&tcp);
    let (Some(connector), Some(t)) = (tls, &plan.tls) else {
        return Ok(tcp.into());
    };
    let stream = connector
        .connect(t.server_name.clone(), tcp)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS: {e}")))?;
    let want: &[u8] = if plan.http2.is_some() {
        b"h2"
    } else {
        b"http/1.1"
    };
    let got = stream.get_ref().1.alpn_protocol();
    // No ALPN answer is HTTP/1.1 (TLS's default), never HTTP/2.
    if got.is_some_and(|g| g != want) || (got.is_none() && plan.http2.is_some()) {
        return Err(io::Error::other(format!(
            "TLS: the server did not agree to {} by ALPN",
            String::from_utf8_lossy(want)
        )));
    }
    Ok(stream.into())
}

/// Opens one connection as the run would and closes it: a wrong address,
/// certificate or protocol fails here with its cause, before any load.
pub fn preflight(plan: &Plan) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if plan.http3 {
        let config = http3::quic_config(plan)?;
        return rt.block_on(async {
            match tokio::time::timeout(plan.timeout, http3::open(plan, config)).await {
                Ok(Ok((endpoint, _, _))) => {
                    endpoint.close(0u32.into(), b"");
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no QUIC connection within {:?}", plan.timeout),
                )),
            }
        });
    }
    let tls = plan.tls.as_ref().map(|t| t.connector(plan.http2.is_some()));
    rt.block_on(async {
        match tokio::time::timeout(plan.timeout, open(plan, tls.as_ref())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {:?}", plan.timeout),
            )),
        }
    })
}

/// Sockets in TIME_WAIT that this run left behind (R2.4): counted from the
/// kernel's socket table after the run, minus before it.
pub use crate::net::TimeWaitCount as TimeWait;

/// Shared across every thread of a run.
struct Shared {
    plan: Plan,
    /// For an `https://` run.
    tls: Option<tokio_rustls::TlsConnector>,
    /// For an HTTP/3 run.
    quic: Option<quinn::ClientConfig>,
    /// `pipeline` copies of the request, back to back.
    batch: Bytes,
    limits: Limits,
    /// Set when sending must stop (duration over, or interrupted).
    stopping: AtomicBool,
    /// Requests left to claim, for [`Stop::Requests`].
    remaining: AtomicI64,
    progress: Arc<Progress>,
    /// When the run starts: the first thread past the start barrier sets
    /// it, and both the open-loop schedules and the reported elapsed time
    /// count from it, so a thread descheduled after the barrier cannot
    /// make the run look shorter than its schedule.
    start: OnceLock<Instant>,
}

impl Shared {
    /// Claims up to `want` requests to send; fewer (or none) at the end.
    fn claim(&self, want: usize) -> usize {
        if self.stopping.load(Ordering::Relaxed) {
            return 0;
        }
        match self.plan.stop {
            Stop::Duration(_) => want,
            Stop::Requests(_) => {
                let mut cur = self.remaining.load(Ordering::Relaxed);
                loop {
                    if cur <= 0 {
                        return 0;
                    }
                    let take = cur.min(want as i64);
                    match self.remaining.compare_exchange_weak(
                        cur,
                        cur - take,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return take as usize,
                        Err(now) => cur = now,
                    }
                }
            }
        }
    }

    /// Gives back requests that were claimed but will be sent again.
    fn unclaim(&self, n: usize) {
        if let Stop::Requests(_) = self.plan.stop {
            self.remaining.fetch_add(n as i64, Ordering::Relaxed);
        }
    }

    /// Whether any request is left to send.
    fn has_work(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed)
            && (matches!(self.plan.stop, Stop::Duration(_))
                || self.remaining.load(Ordering::Relaxed) > 0)
    }
}

/// Runs the plan to completion on `plan.threads` threads and reports.
///
/// Blocks the calling thread; `progress` can be read from another thread
/// meanwhile, and `interrupt` stops sending early (what is in flight still
/// completes or times out).
pub fn run(plan: Plan, progress: Arc<Progress>, interrupt: Arc<AtomicBool>) -> io::Result<Report> {
    if plan.connections == 0 || plan.pipeline == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "connections and pipeline depth must be at least 1",
        ));
    }
    let threads = plan.threads.clamp(1, plan.connections);
    let mut batch = BytesMut::with_capacity(plan.request.len() * plan.pipeline);
    for _ in 0..plan.pipeline {
        batch.extend_from_slice(&plan.request);
    }
    let remaining = match plan.stop {
        Stop::Requests(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Stop::Duration(_) => i64::MAX,
    };
    let mut limits = Limits::default();
    limits.max_body_bytes = None;
    let quic = match plan.http3 {
        true => Some(http3::quic_config(&plan)?),
        false => None,
    };
    let shared = Arc::new(Shared {
        tls: plan.tls.as_ref().map(|t| t.connector(plan.http2.is_some())),
        quic,
        batch: batch.freeze(),
        limits,
        stopping: AtomicBool::new(false),
        remaining: AtomicI64::new(remaining),
        progress,
        plan,
        start: OnceLock::new(),
    });
    let tw_before = time_wait(shared.plan.addr);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let shared = shared.clone();
        let barrier = barrier.clone();
        let conns: Vec<usize> = (0..shared.plan.connections)
            .filter(|c| c % threads == t)
            .collect();
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || thread_main(shared, t, conns, barrier))?;
        handles.push(handle);
    }
    if let Some(at) = shared.plan.start_at {
        wait_until(at, &interrupt);
    }
    barrier.wait();
    let start = *shared.start.get_or_init(Instant::now);
    let started = SystemTime::now();
    shared.progress.started.store(true, Ordering::Relaxed);
    // The coordinator only watches the clock and the interrupt flag.
    let deadline = match shared.plan.stop {
        Stop::Duration(d) => Some(start + d),
        Stop::Requests(_) => None,
    };
    while !handles.iter().all(|h| h.is_finished()) {
        if interrupt.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            shared.stopping.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut total = Tally::new();
    for h in handles {
        let tally = h
            .join()
            .map_err(|_| io::Error::other("a bench thread panicked"))??;
        total.merge(tally);
    }
    let end = total.last_done.unwrap_or_else(Instant::now).max(start);
    // Sockets we just closed reach TIME_WAIT only after the peer's FIN,
    // a round trip later: wait for them (bounded) before counting.
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle && time_wait(shared.plan.addr).is_ok_and(|t| t.closing > 0) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let time_wait = match (tw_before, time_wait(shared.plan.addr)) {
        (Ok(before), Ok(after)) => Ok(TimeWait {
            client: after.client.saturating_sub(before.client),
            server: after.server.saturating_sub(before.server),
            closing: after.closing,
        }),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    Ok(total.into_report(started, end - start, time_wait))
}

/// Sleeps until the wall clock reads `at` (or `interrupt` is set): in
/// steps of at most 50 ms, so a clock step or an interrupt is seen, and the
/// last step ends on the time itself.
fn wait_until(at: SystemTime, interrupt: &AtomicBool) {
    while !interrupt.load(Ordering::Relaxed) {
        match at.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => {
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
            _ => return,
        }
    }
}

fn thread_main(
    shared: Arc<Shared>,
    index: usize,
    conns: Vec<usize>,
    barrier: Arc<Barrier>,
) -> io::Result<Tally> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    barrier.wait();
    let start = *shared.start.get_or_init(Instant::now);
    let rt = rt?;
    let tally = Rc::new(RefCell::new(Tally::new()));
    rt.block_on(async {
        let local = tokio::task::LocalSet::new();
        for c in conns {
            let worker = Worker {
                shared: shared.clone(),
                tally: tally.clone(),
                thread: index,
                schedule: shared.plan.rate.map(|rate| {
                    // Each connection carries an equal share of the rate,
                    // its schedule offset so sends are spread evenly.
                    let n = shared.plan.connections as f64;
                    let interval = Duration::from_secs_f64(n / rate);
                    let offset = interval.mul_f64(c as f64 / n);
                    Schedule {
                        next: start + offset,
                        interval,
                    }
                }),
            };
            local.spawn_local(worker.run());
        }
        local.await;
    });
    drop(rt);
    Ok(Rc::try_unwrap(tally)
        .map_err(|_| io::Error::other("bench tally still shared"))?
        .into_inner())
}

/// Open-loop schedule of one connection.
struct Schedule {
    next: Instant,
    interval: Duration,
}

impl Schedule {
    /// How far ahead of its time a scheduled request may go out. tokio's
    /// timers tick in whole milliseconds and its epoll wait rounds up to
    /// one, so a wake-up set for a send's time comes up to 2 ms late; wrk2
    /// and oha pace the same way and charge that lateness to the server:
    /// at 20k req/s against nginx their p50 was ~1.3 ms where the round
    /// trip from the actual write was ~160 µs. Waking this much early
    /// instead, a request goes out at most this far ahead of its time and
    /// its latency runs from the actual write then: never less than the
    /// real round trip, and every delay past the intended time still counts.
    const EARLY: Duration = Duration::from_millis(2);

    /// When to wake for the next send.
    fn wake_at(&self) -> Instant {
        self.next.checked_sub(Self::EARLY).unwrap_or(self.next)
    }

    /// How many scheduled requests may go out at `now`.
    fn due(&self, now: Instant) -> usize {
        let by = now + Self::EARLY;
        if self.next > by {
            return 0;
        }
        1 + ((by - self.next).as_nanos() / self.interval.as_nanos().max(1)) as usize
    }

    /// Takes the next slot for a request written at `now`: where its
    /// latency is measured from, the earlier of its intended time and `now`.
    fn take(&mut self, now: Instant) -> Instant {
        let origin = self.next.min(now);
        self.next += self.interval;
        origin
    }
}

/// One connection's loop: connect, keep up to `pipeline` requests in
/// flight, read responses, reconnect when the server closes.
struct Worker {
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    thread: usize,
    schedule: Option<Schedule>,
}

/// How a connection ended.
enum End {
    /// The run is over for this connection.
    Done,
    /// Open a new connection and go on.
    Reconnect,
}

impl Worker {
    async fn run(mut self) {
        if self.shared.plan.http3 {
            return Rc::new(self).run_http3().await;
        }
        if self.shared.plan.http2.is_some() {
            return Rc::new(self).run_http2().await;
        }
        let shared = self.shared.clone();
        if let Some(spec) = &shared.plan.ws {
            return self.run_ws(spec).await;
        }
        if let Some(spec) = &shared.plan.sse {
            return self.run_sse(spec).await;
        }
        loop {
            match self.connection().await {
                End::Done => break,
                End::Reconnect => continue,
            }
        }
    }

    fn fail(&self, kind: FailureKind, n: u64) {
        if n == 0 {
            return;
        }
        let mut t = self.tally.borrow_mut();
        t.errors[kind as usize] += n;
        t.last_done = Some(Instant::now());
        self.shared
            .progress
            .slot(self.thread)
            .errors
            .fetch_add(n, Ordering::Relaxed);
    }

    /// `n` more responses for the live progress line.
    fn progressed(&self, n: u64) {
        self.shared
            .progress
            .slot(self.thread)
            .responses
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Waits for the schedule (if any) to allow the next send.
    async fn wait_turn(&self) {
        if let Some(s) = &self.schedule {
            tokio::time::sleep_until(s.wake_at().into()).await;
        }
    }
}

/// Counts TIME_WAIT sockets to and at `addr` (Linux: `/proc/net/tcp{,6}`).
pub fn time_wait(addr: SocketAddr) -> Result<TimeWait, String> {
    net::count_time_wait(addr).map_err(|e| format!("cannot count TIME_WAIT sockets: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_a_start_time_ends_on_time_or_at_an_interrupt() {
        let stop = AtomicBool::new(false);
        let at = SystemTime::now() + Duration::from_millis(120);
        wait_until(at, &stop);
        assert!(SystemTime::now() >= at, "woke before the start time");
        // A time already past returns at once; so does an interrupt.
        let t = Instant::now();
        wait_until(SystemTime::now() - Duration::from_secs(5), &stop);
        stop.store(true, Ordering::Relaxed);
        wait_until(SystemTime::now() + Duration::from_secs(3600), &stop);
        assert!(t.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_schedule_lets_sends_go_early_and_measures_from_the_earlier_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let early = Schedule::EARLY;
        // (next send due at t0 + .., now at t0 + .., due count, origin)
        let cases = [
            // More than EARLY ahead of its time: wait (until wake_at).
            (ms(10), ms(7), 0, None),
            // Within EARLY of its time: goes out now, measured from now.
            (ms(10), ms(8), 1, Some(ms(8))),
            (ms(10), ms(9), 1, Some(ms(9))),
            // On time or late: measured from the intended time.
            (ms(10), ms(10), 1, Some(ms(10))),
            (ms(10), ms(11), 1, Some(ms(10))),
            // Late by 3 intervals (of 4 ms) plus EARLY: 4 are due.
            (ms(10), ms(22), 4, Some(ms(10))),
        ];
        for (next, now, due, origin) in cases {
            let mut s = Schedule {
                next: t0 + next,
                interval: ms(4),
            };
            assert_eq!(s.wake_at(), t0 + next - early);
            assert_eq!(s.due(t0 + now), due, "next {next:?} now {now:?}");
            if let Some(origin) = origin {
                assert_eq!(s.take(t0 + now), t0 + origin, "next {next:?} now {now:?}");
                assert_eq!(s.next, t0 + next + ms(4));
            }
        }
    }
}
