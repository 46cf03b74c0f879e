//! The load generator behind `keepwire bench` (and the lab's request loops).
//!
//! It exists to make the connection layer visible, so it counts what other
//! load generators hide: connections opened, requests each carried, requests
//! the server refused to answer after announcing `Connection: close` (R8.4),
//! and sockets left in TIME_WAIT (R2.4).
//!
//! # Not the bottleneck
//! A load generator that costs more CPU per request than the server under
//! test measures itself. So, like wrk, every thread runs its own event loop
//! (a current-thread tokio runtime) with its share of the connections and
//! its own histograms; nothing is shared on the hot path except one padded
//! progress counter per thread. The request is serialised once, through the
//! client's own [`Conn`](crate::proto::Conn) encoder, and written from one
//! buffer holding `pipeline` copies; responses are read with
//! [`skim_response`] (the proto core's framing and persistence decisions,
//! without building a `HeaderMap`) and the body decoder.
//!
//! # Coordinated omission
//! Closed-loop runs measure latency from when a request was written. With
//! `rate`, each connection has a fixed schedule and latency runs from the
//! *intended* send time, so a stalled server is charged for every request
//! it delayed, not just the one it stalled (wrk2's correction).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use http::{HeaderMap, Method, Uri, Version};
use keepwire_proto::{
    BodyKind, BodyLength, Conn, ConnConfig, Decoder, Frame, Limits, RequestHead, Role,
    skim_response,
};
use tokio::net::TcpStream;

use crate::net;
use crate::transport::Transport;

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Send for this long, then wait (up to the timeout) for what is in flight.
    Duration(Duration),
    /// Send exactly this many requests.
    Requests(u64),
}

/// Everything a run needs. Build the request with [`request_bytes`].
#[derive(Debug, Clone)]
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
    /// Requests kept in flight per connection (1: no pipelining).
    pub pipeline: usize,
    /// Close after every response (the request says `Connection: close`).
    pub close_each: bool,
    /// Open-loop: requests per second over all connections.
    pub rate: Option<f64>,
    /// A connect, or a request without progress, fails after this long.
    pub timeout: Duration,
    /// Speak HTTP/2 with prior knowledge (h2c) instead, `pipeline` streams
    /// at once per connection (like h2load's `-m`); `request` is unused.
    /// Over TLS, HTTP/2 by ALPN.
    pub http2: Option<Http2Request>,
    /// Speak TLS (an `https://` run). The handshake is part of the connect
    /// time, as in wrk and h2load.
    pub tls: Option<Tls>,
}

/// TLS settings of an `https://` run.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Verification; the run sets ALPN itself (`h2` or `http/1.1`).
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificate must carry (also sent as SNI).
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
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

/// The request an HTTP/2 run sends (h2 builds its own frames per stream).
#[derive(Debug, Clone)]
pub struct Http2Request {
    /// Absolute URI (scheme and authority become pseudo-header fields).
    pub uri: Uri,
    /// Header fields (no connection-specific ones: RFC 9113 §8.2.2).
    pub headers: HeaderMap,
    /// Body, sent in one DATA frame when not empty.
    pub body: Bytes,
}

/// Serialises a request once, through the client's own encoder, so the bytes
/// are exactly what keepwire's client would send. `keep_alive: false` adds
/// `Connection: close`; an HTTP/1.0 request gets `Connection: keep-alive`
/// otherwise (as `ab -k` sends). A `Host` field is added from the URL.
pub fn request_bytes(
    method: &Method,
    url: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    version: Version,
    keep_alive: bool,
) -> Result<Bytes, String> {
    let target: Uri = url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| format!("bad target: {e}"))?;
    let mut head = RequestHead::new(method.clone(), target, version);
    head.headers = headers.clone();
    if !head.headers.contains_key(http::header::HOST) {
        let host = url.authority().ok_or("the URL has no host")?.as_str();
        let value = host.parse().map_err(|_| format!("bad host {host}"))?;
        head.headers.insert(http::header::HOST, value);
    }
    if !keep_alive {
        head.headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    let mut out = BytesMut::new();
    conn.send_request(&head, BodyLength::Known(body.len() as u64), &mut out)
        .map_err(|e| e.to_string())?;
    if !body.is_empty() {
        let framed = conn.send_body(body.clone()).map_err(|e| e.to_string())?;
        out.put(framed);
    }
    conn.send_end(None, &mut out).map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The connection could not be opened (refused, unreachable, timed out).
    Connect,
    /// The connection was reset (RST) or the write hit a closed socket.
    Reset,
    /// No progress within the timeout.
    Timeout,
    /// The connection ended inside a response.
    Truncated,
    /// The connection ended before any byte of the response arrived without
    /// the server having announced `Connection: close` (a stale keep-alive
    /// connection, R8.1).
    Closed,
    /// The response could not be parsed.
    Parse,
    /// Any other I/O error.
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Connect,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Truncated,
        ErrorKind::Closed,
        ErrorKind::Parse,
        ErrorKind::Other,
    ];

    /// Lower-case name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Closed => "closed",
            ErrorKind::Parse => "parse",
            ErrorKind::Other => "other",
        }
    }

    fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::UnexpectedEof => ErrorKind::Truncated,
            _ => ErrorKind::Other,
        }
    }
}

/// Live counters a progress display can read while a run goes on.
#[derive(Debug)]
pub struct Progress {
    /// One counter pair per thread (thread `t` uses slot `t % SLOTS`), each
    /// on its own cache line so threads never contend.
    threads: Vec<Padded>,
    started: AtomicBool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            threads: (0..Progress::SLOTS).map(|_| Padded::default()).collect(),
            started: AtomicBool::new(false),
        }
    }
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded {
    responses: AtomicU64,
    errors: AtomicU64,
}

impl Progress {
    const SLOTS: usize = 64;

    fn slot(&self, thread: usize) -> &Padded {
        &self.threads[thread % Self::SLOTS]
    }

    /// Responses and errors so far, over all threads.
    pub fn counts(&self) -> (u64, u64) {
        self.threads.iter().fold((0, 0), |(r, e), t| {
            (
                r + t.responses.load(Ordering::Relaxed),
                e + t.errors.load(Ordering::Relaxed),
            )
        })
    }

    /// Whether the load has started (connections are being opened).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }
}

/// Sockets in TIME_WAIT that this run left behind (R2.4): counted from the
/// kernel's socket table after the run, minus before it.
pub use crate::net::TimeWaitCount as TimeWait;

/// What a run measured. Times in histograms are nanoseconds.
#[derive(Clone)]
pub struct Report {
    /// Wall time from the first connect to the last response.
    pub elapsed: Duration,
    /// Requests attempted: written, or failed while connecting for them.
    /// Always `responses + errors`.
    pub sent: u64,
    /// Complete responses.
    pub responses: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Pipelined requests the server left unanswered after a response with
    /// `Connection: close` (it must not process them, R8.4); sent again on a
    /// new connection and not counted in `sent` twice.
    pub resent: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Bytes read (heads and bodies).
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Request latency: from the (intended, with `rate`) send time to the
    /// last byte of the response.
    pub latency: Histogram<u64>,
    /// TCP connect time per connection.
    pub connect: Histogram<u64>,
    /// From writing a request to the first byte of its response.
    pub first_byte: Histogram<u64>,
    /// Connections opened (successfully).
    pub connections: u64,
    /// Most responses one connection carried.
    pub max_requests_per_connection: u64,
    /// TIME_WAIT sockets left behind, or why they could not be counted.
    pub time_wait: Result<TimeWait, String>,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Histograms print as a few quantiles, not their bucket arrays.
        struct Quantiles<'a>(&'a Histogram<u64>);
        impl std::fmt::Debug for Quantiles<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let h = self.0;
                write!(
                    f,
                    "n={} p50={}ns p99={}ns max={}ns",
                    h.len(),
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99),
                    h.max()
                )
            }
        }
        f.debug_struct("Report")
            .field("elapsed", &self.elapsed)
            .field("sent", &self.sent)
            .field("responses", &self.responses)
            .field("errors", &self.errors)
            .field("resent", &self.resent)
            .field("statuses", &self.statuses)
            .field("bytes_read", &self.bytes_read)
            .field("bytes_written", &self.bytes_written)
            .field("latency", &Quantiles(&self.latency))
            .field("connect", &Quantiles(&self.connect))
            .field("first_byte", &Quantiles(&self.first_byte))
            .field("connections", &self.connections)
            .field(
                "max_requests_per_connection",
                &self.max_requests_per_connection,
            )
            .field("time_wait", &self.time_wait)
            .finish()
    }
}

impl Report {
    /// Total failed requests.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Mean responses per opened connection.
    pub fn mean_requests_per_connection(&self) -> f64 {
        if self.connections == 0 {
            0.0
        } else {
            self.responses as f64 / self.connections as f64
        }
    }

    /// Responses per second.
    pub fn rate(&self) -> f64 {
        self.responses as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 1000 s at 3 significant digits; values above saturate.
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).expect("valid histogram bounds")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Per-thread tallies; merged into a [`Report`] at the end.
struct Tally {
    sent: u64,
    responses: u64,
    resent: u64,
    errors: [u64; ErrorKind::ALL.len()],
    statuses: Box<[u64; 1000]>,
    bytes_read: u64,
    bytes_written: u64,
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    first_byte: Histogram<u64>,
    connections: u64,
    max_per_conn: u64,
    last_done: Option<Instant>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            sent: 0,
            responses: 0,
            resent: 0,
            errors: [0; ErrorKind::ALL.len()],
            statuses: Box::new([0; 1000]),
            bytes_read: 0,
            bytes_written: 0,
            latency: histogram(),
            connect: histogram(),
            first_byte: histogram(),
            connections: 0,
            max_per_conn: 0,
            last_done: None,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.responses += other.responses;
        self.resent += other.resent;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        for (a, b) in self.statuses.iter_mut().zip(other.statuses.iter()) {
            *a += b;
        }
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
        let _ = self.first_byte.add(&other.first_byte);
        self.connections += other.connections;
        self.max_per_conn = self.max_per_conn.max(other.max_per_conn);
        self.last_done = self.last_done.max(other.last_done);
    }
}

/// Shared across every thread of a run.
struct Shared {
    plan: Plan,
    /// For an `https://` run.
    tls: Option<tokio_rustls::TlsConnector>,
    /// `pipeline` copies of the request, back to back.
    batch: Bytes,
    limits: Limits,
    /// Set when sending must stop (duration over, or interrupted).
    stopping: AtomicBool,
    /// Requests left to claim, for [`Stop::Requests`].
    remaining: AtomicI64,
    progress: Arc<Progress>,
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
    let limits = Limits {
        max_body_bytes: None,
        ..Limits::default()
    };
    let shared = Arc::new(Shared {
        tls: plan.tls.as_ref().map(|t| t.connector(plan.http2.is_some())),
        batch: batch.freeze(),
        limits,
        stopping: AtomicBool::new(false),
        remaining: AtomicI64::new(remaining),
        progress,
        plan,
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
    barrier.wait();
    let start = Instant::now();
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
    let errors = ErrorKind::ALL
        .iter()
        .zip(total.errors)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (*k, n))
        .collect();
    let statuses = total
        .statuses
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| (code as u16, *n))
        .collect();
    Ok(Report {
        elapsed: end - start,
        sent: total.sent,
        responses: total.responses,
        errors,
        resent: total.resent,
        statuses,
        bytes_read: total.bytes_read,
        bytes_written: total.bytes_written,
        latency: total.latency,
        connect: total.connect,
        first_byte: total.first_byte,
        connections: total.connections,
        max_requests_per_connection: total.max_per_conn,
        time_wait,
    })
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
    let rt = rt?;
    let tally = Rc::new(RefCell::new(Tally::new()));
    let start = Instant::now();
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

/// One request in flight.
struct InFlight {
    /// When latency is measured from (the intended time with a schedule).
    origin: Instant,
    /// When it was actually written.
    written: Instant,
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
        if self.shared.plan.http2.is_some() {
            return Rc::new(self).run_h2().await;
        }
        loop {
            match self.connection().await {
                End::Done => break,
                End::Reconnect => continue,
            }
        }
    }

    fn fail(&self, kind: ErrorKind, n: u64) {
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

    /// Waits for the schedule (if any) to allow the next send.
    async fn wait_turn(&self) {
        if let Some(s) = &self.schedule {
            tokio::time::sleep_until(s.next.into()).await;
        }
    }

    async fn connection(&mut self) -> End {
        let plan = &self.shared.plan;
        // A request must be claimed before connecting, so a connect error is
        // charged to it and a finished run opens no connection.
        self.wait_turn().await;
        if self.shared.claim(1) == 0 {
            return End::Done;
        }
        let t0 = Instant::now();
        let opening = open(plan, self.shared.tls.as_ref());
        let stream = match tokio::time::timeout(plan.timeout, opening).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                self.tally.borrow_mut().sent += 1;
                self.fail(ErrorKind::Connect, 1);
                if let Some(s) = &mut self.schedule {
                    s.next += s.interval;
                }
                // Refused connections fail in microseconds; do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return End::Reconnect;
            }
        };
        {
            let mut t = self.tally.borrow_mut();
            t.connections += 1;
            t.connect.saturating_record(nanos(t0.elapsed()));
        }
        let mut conn = Connection {
            stream,
            buf: BytesMut::with_capacity(net::READ_CHUNK),
            in_flight: VecDeque::with_capacity(plan.pipeline),
            reading: Reading::Head,
            first_byte: None,
            carried: 0,
        };
        let end = self.drive(&mut conn, 1).await;
        let mut t = self.tally.borrow_mut();
        t.max_per_conn = t.max_per_conn.max(conn.carried);
        end
    }

    /// Runs one connection; `claimed` requests were claimed for it already
    /// (so that every connection opened carries at least one request).
    async fn drive(&mut self, c: &mut Connection, mut claimed: usize) -> End {
        let len = self.shared.plan.request.len();
        let depth = self.shared.plan.pipeline;
        let close_each = self.shared.plan.close_each;
        let timeout = self.shared.plan.timeout;
        let mut progress_at = Instant::now();
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        loop {
            // Fill the pipeline (one write for the whole batch). With
            // `close_each` a connection carries exactly one request.
            let now = Instant::now();
            let mut room = if close_each {
                usize::from(c.carried == 0 && c.in_flight.is_empty())
            } else if self.schedule.is_none() && c.in_flight.len() > depth / 2 {
                // Closed-loop pipelining refills once half the pipeline is
                // answered: batches of at least depth/2 requests per write
                // (wrk refills only when all are answered).
                0
            } else {
                depth - c.in_flight.len()
            };
            if let Some(s) = &self.schedule {
                let due = if s.next <= now {
                    1 + ((now - s.next).as_nanos() / s.interval.as_nanos().max(1)) as usize
                } else {
                    0
                };
                room = room.min(due);
            }
            let n = if room > claimed {
                claimed + self.shared.claim(room - claimed)
            } else {
                room
            };
            // Claimed but not sendable yet (the schedule is behind): give back.
            if claimed > n {
                self.shared.unclaim(claimed - n);
            }
            claimed = 0;
            if n > 0 {
                if c.in_flight.is_empty() {
                    progress_at = now;
                }
                for _ in 0..n {
                    let origin = match &mut self.schedule {
                        Some(s) => {
                            let o = s.next;
                            s.next += s.interval;
                            o
                        }
                        None => now,
                    };
                    c.in_flight.push_back(InFlight {
                        origin,
                        written: now,
                    });
                }
                {
                    let mut t = self.tally.borrow_mut();
                    t.sent += n as u64;
                    t.bytes_written += (n * len) as u64;
                }
                let batch = &self.shared.batch[..n * len];
                if let Err(e) = write_all(&mut c.stream, batch, timeout).await {
                    let lost = c.in_flight.len() as u64;
                    c.in_flight.clear();
                    self.fail(ErrorKind::of_io(&e), lost);
                    return End::Reconnect;
                }
            }
            if c.in_flight.is_empty() {
                if !self.shared.has_work() {
                    return End::Done;
                }
                if self.schedule.is_some() {
                    self.wait_turn().await;
                    continue;
                }
                // Closed loop with nothing in flight and nothing sent: only
                // a used-up `close_each` connection gets here.
                return End::Reconnect;
            }
            // Wait for bytes, the timeout, or the next scheduled send.
            let wake = match &self.schedule {
                Some(s) if c.in_flight.len() < depth && !close_each => s.next,
                _ => progress_at + timeout,
            }
            .min(progress_at + timeout);
            if sleep.deadline() != wake.into() {
                sleep.as_mut().reset(wake.into());
            }
            let read = tokio::select! {
                biased;
                r = c.stream.read_available(&mut c.buf) => r,
                _ = &mut sleep => {
                    if Instant::now() >= progress_at + timeout {
                        let lost = c.in_flight.len() as u64;
                        c.in_flight.clear();
                        self.fail(ErrorKind::Timeout, lost);
                        return End::Reconnect;
                    }
                    continue;
                }
            };
            let got = match read {
                Ok(n) => n,
                Err(e) => {
                    let lost = c.in_flight.len() as u64;
                    c.in_flight.clear();
                    self.fail(ErrorKind::of_io(&e), lost);
                    return End::Reconnect;
                }
            };
            let at = Instant::now();
            self.tally.borrow_mut().bytes_read += got as u64;
            let before = c.carried;
            let result = if got == 0 {
                self.on_eof(c, at)
            } else {
                self.on_bytes(c, at)
            };
            if c.carried > before {
                progress_at = at;
                self.shared
                    .progress
                    .slot(self.thread)
                    .responses
                    .fetch_add(c.carried - before, Ordering::Relaxed);
            }
            if let Some(end) = result {
                return end;
            }
        }
    }

    /// Parses every complete response in the buffer. `Some`: the
    /// connection is over.
    fn on_bytes(&mut self, c: &mut Connection, at: Instant) -> Option<End> {
        if c.first_byte.is_none() && !c.buf.is_empty() {
            c.first_byte = Some(at);
        }
        loop {
            match &mut c.reading {
                Reading::Head => {
                    let skim = match skim_response(
                        &c.buf,
                        &self.shared.plan.method,
                        &self.shared.limits,
                    ) {
                        Ok(Some(s)) => s,
                        Ok(None) => return None,
                        Err(_) => return Some(self.lose_all(c, ErrorKind::Parse)),
                    };
                    c.buf.advance(skim.head_len);
                    if skim.status.is_informational()
                        && skim.status != http::StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue;
                    }
                    if c.in_flight.is_empty() {
                        // A response nobody asked for: the stream is out of step.
                        return Some(self.lose_all(c, ErrorKind::Parse));
                    }
                    c.reading = Reading::Body {
                        decoder: Decoder::new(skim.body, &self.shared.limits),
                        status: skim.status.as_u16(),
                        persistent: skim.persistent
                            && skim.body != BodyKind::CloseDelimited
                            && skim.status != http::StatusCode::SWITCHING_PROTOCOLS,
                    };
                }
                Reading::Body {
                    decoder,
                    status,
                    persistent,
                } => {
                    match decoder.decode(&mut c.buf) {
                        Ok(None) => return None,
                        Ok(Some(Frame::Data(_))) => continue,
                        Ok(Some(Frame::End(_))) => {}
                        Err(_) => return Some(self.lose_all(c, ErrorKind::Parse)),
                    }
                    let (status, persistent) = (*status, *persistent);
                    c.reading = Reading::Head;
                    self.complete(c, status, at);
                    if !persistent || self.shared.plan.close_each {
                        return Some(self.server_closes(c));
                    }
                    c.first_byte = (!c.buf.is_empty()).then_some(at);
                }
            }
        }
    }

    fn complete(&self, c: &mut Connection, status: u16, at: Instant) {
        let Some(req) = c.in_flight.pop_front() else {
            return;
        };
        c.carried += 1;
        let mut t = self.tally.borrow_mut();
        t.responses += 1;
        t.statuses[usize::from(status).min(999)] += 1;
        t.latency
            .saturating_record(nanos(at.saturating_duration_since(req.origin)));
        let first = c.first_byte.unwrap_or(at);
        t.first_byte
            .saturating_record(nanos(first.saturating_duration_since(req.written)));
        t.last_done = Some(at);
    }

    /// The last response said the connection ends: whatever else is in
    /// flight was not processed (R8.4) and goes out again on a new connection.
    fn server_closes(&self, c: &mut Connection) -> End {
        let n = c.in_flight.len();
        if n > 0 {
            c.in_flight.clear();
            self.shared.unclaim(n);
            let mut t = self.tally.borrow_mut();
            t.sent -= n as u64;
            t.resent += n as u64;
        }
        End::Reconnect
    }

    fn on_eof(&mut self, c: &mut Connection, at: Instant) -> Option<End> {
        if let Reading::Body {
            decoder, status, ..
        } = &mut c.reading
        {
            let status = *status;
            if let Ok(Some(Frame::End(_))) = decoder.finish() {
                c.reading = Reading::Head;
                self.complete(c, status, at);
                return Some(self.server_closes(c));
            }
            return Some(self.lose_all(c, ErrorKind::Truncated));
        }
        if !c.buf.is_empty() {
            return Some(self.lose_all(c, ErrorKind::Truncated));
        }
        Some(self.lose_all(c, ErrorKind::Closed))
    }

    fn lose_all(&self, c: &mut Connection, first: ErrorKind) -> End {
        let n = c.in_flight.len() as u64;
        c.in_flight.clear();
        // The response being read failed as `first`; the ones behind it
        // never started, so the connection just closed under them.
        self.fail(first, n.min(1));
        let rest = if first == ErrorKind::Parse {
            ErrorKind::Parse
        } else {
            ErrorKind::Closed
        };
        self.fail(rest, n.saturating_sub(1));
        End::Reconnect
    }
}

struct Connection {
    stream: Transport,
    buf: BytesMut,
    in_flight: VecDeque<InFlight>,
    reading: Reading,
    /// When the first byte of the response being read arrived.
    first_byte: Option<Instant>,
    /// Responses completed on this connection.
    carried: u64,
}

enum Reading {
    Head,
    Body {
        decoder: Decoder,
        status: u16,
        persistent: bool,
    },
}

async fn write_all(stream: &mut Transport, mut data: &[u8], timeout: Duration) -> io::Result<()> {
    while !data.is_empty() {
        let n = stream
            .write_timed(&[io::IoSlice::new(data)], timeout)
            .await?;
        data = &data[n..];
    }
    stream.flush_timed(timeout).await
}

/// Counts TIME_WAIT sockets to and at `addr` (Linux: `/proc/net/tcp{,6}`).
pub fn time_wait(addr: SocketAddr) -> Result<TimeWait, String> {
    net::count_time_wait(addr).map_err(|e| format!("cannot count TIME_WAIT sockets: {e}"))
}

impl Worker {
    /// HTTP/2 connections one after another, each carrying `pipeline`
    /// concurrent streams until the run ends or the server ends it.
    async fn run_h2(self: Rc<Self>) {
        let plan = &self.shared.plan;
        while self.shared.has_work() {
            let t0 = Instant::now();
            let opening = open(plan, self.shared.tls.as_ref());
            let io = match tokio::time::timeout(plan.timeout, opening).await {
                Ok(Ok(s)) => s,
                _ => {
                    if self.shared.claim(1) == 1 {
                        self.tally.borrow_mut().sent += 1;
                        self.fail(ErrorKind::Connect, 1);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            {
                let mut t = self.tally.borrow_mut();
                t.connections += 1;
                t.connect.saturating_record(nanos(t0.elapsed()));
            }
            let (send, conn) = match h2::client::handshake(io).await {
                Ok(pair) => pair,
                Err(e) => {
                    if self.shared.claim(1) == 1 {
                        self.tally.borrow_mut().sent += 1;
                        self.fail(h2_error_kind(&e), 1);
                    }
                    continue;
                }
            };
            let driver = tokio::task::spawn_local(conn);
            let carried = Rc::new(std::cell::Cell::new(0u64));
            let streams: Vec<_> = (0..plan.pipeline)
                .map(|_| {
                    tokio::task::spawn_local(self.clone().h2_stream(send.clone(), carried.clone()))
                })
                .collect();
            for s in streams {
                let _ = s.await;
            }
            driver.abort();
            let mut t = self.tally.borrow_mut();
            t.max_per_conn = t.max_per_conn.max(carried.get());
        }
    }

    /// One stream slot: a request at a time until the run or the
    /// connection ends.
    async fn h2_stream(
        self: Rc<Self>,
        mut send: h2::client::SendRequest<Bytes>,
        carried: Rc<std::cell::Cell<u64>>,
    ) {
        let plan = &self.shared.plan;
        let Some(spec) = plan.http2.as_ref() else {
            return;
        };
        loop {
            if self.shared.claim(1) == 0 {
                return;
            }
            send = match send.ready().await {
                Ok(s) => s,
                Err(_) => {
                    // The connection is gone before this request left.
                    self.shared.unclaim(1);
                    return;
                }
            };
            let mut req = http::Request::new(());
            *req.method_mut() = plan.method.clone();
            *req.uri_mut() = spec.uri.clone();
            *req.headers_mut() = spec.headers.clone();
            let written = Instant::now();
            {
                let mut t = self.tally.borrow_mut();
                t.sent += 1;
                t.bytes_written += spec.body.len() as u64;
            }
            let exchange = async {
                let (resp, mut body_tx) = send.send_request(req, spec.body.is_empty())?;
                if !spec.body.is_empty() {
                    body_tx.send_data(spec.body.clone(), true)?;
                }
                let resp = resp.await?;
                let first = Instant::now();
                let status = resp.status().as_u16();
                let mut body = resp.into_body();
                let mut n = 0u64;
                while let Some(chunk) = body.data().await {
                    let chunk = chunk?;
                    n += chunk.len() as u64;
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Ok::<_, h2::Error>((status, first, n))
            };
            match tokio::time::timeout(plan.timeout, exchange).await {
                Ok(Ok((status, first, n))) => {
                    let at = Instant::now();
                    carried.set(carried.get() + 1);
                    let mut t = self.tally.borrow_mut();
                    t.responses += 1;
                    t.bytes_read += n;
                    t.statuses[usize::from(status).min(999)] += 1;
                    t.latency.saturating_record(nanos(at - written));
                    t.first_byte.saturating_record(nanos(first - written));
                    t.last_done = Some(at);
                    self.shared
                        .progress
                        .slot(self.thread)
                        .responses
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                    // Refused (GOAWAY or the stream limit): never processed,
                    // so it goes again (the multiplexed R8.3).
                    self.shared.unclaim(1);
                    let mut t = self.tally.borrow_mut();
                    t.sent -= 1;
                    t.resent += 1;
                    return;
                }
                Ok(Err(e)) => {
                    self.fail(h2_error_kind(&e), 1);
                    if e.is_io() || e.is_go_away() {
                        return;
                    }
                }
                Err(_) => {
                    self.fail(ErrorKind::Timeout, 1);
                    return;
                }
            }
        }
    }
}

fn h2_error_kind(e: &h2::Error) -> ErrorKind {
    if let Some(io) = e.get_io() {
        return ErrorKind::of_io(io);
    }
    if e.is_go_away() {
        return ErrorKind::Closed;
    }
    if e.is_reset() {
        return ErrorKind::Reset;
    }
    ErrorKind::Parse
}
