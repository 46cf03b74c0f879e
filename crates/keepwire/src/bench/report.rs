//! What a run measured: each thread tallies on its own, and the tallies
//! merge into one [`Report`] only after the run, off the hot path.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use super::TimeWait;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
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
    /// The response could not be parsed (for `--ws`, a frame that breaks
    /// RFC 6455).
    Parse,
    /// The server would not switch to WebSocket (no 101 with a valid
    /// `Sec-WebSocket-Accept`), or did not answer an event stream with a
    /// 200 `text/event-stream`.
    Refused,
    /// Any other I/O error.
    Other,
}

impl FailureKind {
    /// Every kind, in report order.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Connect,
        FailureKind::Reset,
        FailureKind::Timeout,
        FailureKind::Truncated,
        FailureKind::Closed,
        FailureKind::Parse,
        FailureKind::Refused,
        FailureKind::Other,
    ];

    /// Lower-case name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Reset => "reset",
            FailureKind::Timeout => "timeout",
            FailureKind::Truncated => "truncated",
            FailureKind::Closed => "closed",
            FailureKind::Parse => "parse",
            FailureKind::Refused => "refused",
            FailureKind::Other => "other",
        }
    }

    pub(super) fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FailureKind::Reset,
            io::ErrorKind::TimedOut => FailureKind::Timeout,
            io::ErrorKind::UnexpectedEof => FailureKind::Truncated,
            _ => FailureKind::Other,
        }
    }
}

/// When one loader ran, on its wall clock: from the first connect to the
/// last response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the load started.
    pub start: SystemTime,
    /// When the last response (or failure) came.
    pub end: SystemTime,
}

/// What a run measured. Times in histograms are nanoseconds.
#[derive(Clone)]
pub struct Report {
    /// Wall time from the first connect to the last response; for a merge
    /// of several runs, the length of the union of their [`windows`](Self::windows).
    pub elapsed: Duration,
    /// When each run that went into this report ran (one for a single run,
    /// one per loader for a merge), in the order merged.
    pub windows: Vec<Window>,
    /// Requests attempted: written, or failed while connecting for them.
    /// Always `responses + errors`.
    pub sent: u64,
    /// Complete responses.
    pub responses: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<FailureKind, u64>,
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
            .field("windows", &self.windows)
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

    /// Adds another loader's report to this one, as if one loader had made
    /// both runs' requests: counts add up, histograms add bucket by bucket
    /// (so percentiles are those of all requests, never an average of
    /// percentiles), the most requests on one connection is the larger, and
    /// the elapsed time is the length of the union of the wall-time windows
    /// (overlapping time counted once, a gap between runs not at all), which
    /// the throughput is computed over. Fails if a histogram holds values
    /// beyond the run's bounds (1 ns to 1000 s).
    pub fn merge(&mut self, other: &Report) -> Result<(), String> {
        for (name, mine, theirs) in [
            ("latency", &mut self.latency, &other.latency),
            ("connect", &mut self.connect, &other.connect),
            ("first_byte", &mut self.first_byte, &other.first_byte),
        ] {
            mine.add(theirs)
                .map_err(|e| format!("{name} histogram: {e:?}"))?;
        }
        self.sent += other.sent;
        self.responses += other.responses;
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_default() += n;
        }
        self.resent += other.resent;
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.connections += other.connections;
        self.max_requests_per_connection = self
            .max_requests_per_connection
            .max(other.max_requests_per_connection);
        self.time_wait = match (&self.time_wait, &other.time_wait) {
            (Ok(a), Ok(b)) => Ok(TimeWait {
                client: a.client + b.client,
                server: a.server + b.server,
                closing: a.closing + b.closing,
            }),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        self.windows.extend_from_slice(&other.windows);
        self.elapsed = union_length(&self.windows);
        Ok(())
    }
}

/// The length of the union of `windows`: time covered by any of them,
/// overlaps counted once.
pub fn union_length(windows: &[Window]) -> Duration {
    let mut sorted: Vec<Window> = windows.to_vec();
    sorted.sort_by_key(|w| w.start);
    let mut total = Duration::ZERO;
    let mut current: Option<Window> = None;
    for w in sorted {
        match &mut current {
            Some(c) if w.start <= c.end => c.end = c.end.max(w.end),
            _ => {
                if let Some(c) = current.replace(w) {
                    total += c.end.duration_since(c.start).unwrap_or_default();
                }
            }
        }
    }
    if let Some(c) = current {
        total += c.end.duration_since(c.start).unwrap_or_default();
    }
    total
}

pub(super) fn histogram() -> Histogram<u64> {
    // 1 ns .. 1000 s at 3 significant digits; values above saturate.
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).expect("valid histogram bounds")
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Per-thread tallies; merged into a [`Report`] at the end.
pub(super) struct Tally {
    pub(super) sent: u64,
    pub(super) responses: u64,
    pub(super) resent: u64,
    pub(super) errors: [u64; FailureKind::ALL.len()],
    pub(super) statuses: Box<[u64; 1000]>,
    pub(super) bytes_read: u64,
    pub(super) bytes_written: u64,
    pub(super) latency: Histogram<u64>,
    pub(super) connect: Histogram<u64>,
    pub(super) first_byte: Histogram<u64>,
    pub(super) connections: u64,
    pub(super) max_per_conn: u64,
    pub(super) last_done: Option<Instant>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Tally {
            sent: 0,
            responses: 0,
            resent: 0,
            errors: [0; FailureKind::ALL.len()],
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

    pub(super) fn merge(&mut self, other: Tally) {
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

    /// The report of a run that took `elapsed` and left `time_wait` behind.
    pub(super) fn into_report(
        self,
        started: SystemTime,
        elapsed: Duration,
        time_wait: Result<TimeWait, String>,
    ) -> Report {
        let errors = FailureKind::ALL
            .iter()
            .zip(self.errors)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (*k, n))
            .collect();
        let statuses = self
            .statuses
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code as u16, *n))
            .collect();
        Report {
            elapsed,
            windows: vec![Window {
                start: started,
                end: started + elapsed,
            }],
            sent: self.sent,
            responses: self.responses,
            errors,
            resent: self.resent,
            statuses,
            bytes_read: self.bytes_read,
            bytes_written: self.bytes_written,
            latency: self.latency,
            connect: self.connect,
            first_byte: self.first_byte,
            connections: self.connections,
            max_requests_per_connection: self.max_per_conn,
            time_wait,
        }
    }
}
