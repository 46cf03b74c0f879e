//! Connection counters, exposed in Prometheus text format.
//!
//! The counters are the ones that show connection management at work: how
//! many connections are open and idle, how many requests each carried, why
//! each one closed, and whether lingering closes ended cleanly (FIN) or had
//! to give up (R8.5).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the server ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed (FIN or reset).
    ClientClose,
    /// Idle keep-alive timeout.
    IdleTimeout,
    /// Header, body or write timeout.
    Timeout,
    /// The last request allowed on the connection (or its maximum age).
    MaxRequests,
    /// A `Connection: close` or a non-persistent exchange (R5.1–R5.4).
    NotPersistent,
    /// A protocol error (400/413/414/431) or I/O error.
    Error,
    /// Graceful shutdown.
    Shutdown,
    /// Over a connection limit (503).
    Limit,
    /// Switched protocols (101 or CONNECT): handed to the application.
    Upgraded,
}

impl CloseReason {
    const ALL: [CloseReason; 9] = [
        CloseReason::ClientClose,
        CloseReason::IdleTimeout,
        CloseReason::Timeout,
        CloseReason::MaxRequests,
        CloseReason::NotPersistent,
        CloseReason::Error,
        CloseReason::Shutdown,
        CloseReason::Limit,
        CloseReason::Upgraded,
    ];

    fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Timeout => "timeout",
            CloseReason::MaxRequests => "max_requests",
            CloseReason::NotPersistent => "not_persistent",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Limit => "limit",
            CloseReason::Upgraded => "upgraded",
        }
    }
}

/// Server counters (all monotonic except the two gauges).
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Gauge: connections open now.
    pub connections_open: AtomicU64,
    /// Gauge: open connections idle between requests.
    pub connections_idle: AtomicU64,
    /// Requests read.
    pub requests: AtomicU64,
    /// Connections that carried 1, 2–10, 11–100, >100 requests.
    pub requests_per_connection: [AtomicU64; 4],
    closes: [AtomicU64; 9],
    /// Lingering closes that ended with the client's FIN.
    pub linger_fin: AtomicU64,
    /// Lingering closes that hit a bound or an error (likely RST).
    pub linger_bounded: AtomicU64,
    /// Bytes read and discarded while lingering.
    pub linger_discarded_bytes: AtomicU64,
    /// Gauge: HTTP/2 streams whose handler or answer is in flight.
    pub h2_streams_in_flight: AtomicU64,
    /// The most HTTP/2 streams any one connection had in flight at once
    /// (never above `http2_max_streams`).
    pub h2_streams_in_flight_max_per_conn: AtomicU64,
    /// HTTP/2 streams the client reset while their work was in flight (the
    /// work was cancelled).
    pub h2_streams_cancelled: AtomicU64,
    /// HTTP/2 streams refused (REFUSED_STREAM) because the connection's
    /// handlers in flight were at the stream limit.
    pub h2_streams_refused: AtomicU64,
    /// HTTP/2 streams reset for getting no flow-control window for the
    /// write timeout.
    pub h2_streams_stalled: AtomicU64,
    /// HTTP/2 connections sent GOAWAY `ENHANCE_YOUR_CALM` (reset floods).
    pub h2_calm_goaways: AtomicU64,
    /// Gauge: upgraded connections and CONNECT tunnels open now (each also
    /// counts in `connections_open` until it ends, R9.5).
    pub tunnels_open: AtomicU64,
}

impl ServerMetrics {
    /// Counts a closed connection.
    pub fn closed(&self, reason: CloseReason, requests: u64) {
        let i = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.closes[i].fetch_add(1, Relaxed);
        let bucket = match requests {
            0 | 1 => 0,
            2..=10 => 1,
            11..=100 => 2,
            _ => 3,
        };
        self.requests_per_connection[bucket].fetch_add(1, Relaxed);
    }

    /// Closes counted for `reason`.
    pub fn closes(&self, reason: CloseReason) -> u64 {
        let i = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.closes[i].load(Relaxed)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            let _ = writeln!(
                s,
                "# HELP keepwire_{name} {help}\n# TYPE keepwire_{name} {kind}"
            );
            for (labels, v) in lines {
                let _ = writeln!(s, "keepwire_{name}{labels} {v}");
            }
        };
        let one = |a: &AtomicU64| vec![(String::new(), a.load(Relaxed))];
        metric(
            "connections_accepted_total",
            "counter",
            "Connections accepted.",
            &one(&self.connections_accepted),
        );
        metric(
            "connections_open",
            "gauge",
            "Connections open now.",
            &one(&self.connections_open),
        );
        metric(
            "connections_idle",
            "gauge",
            "Open connections idle between requests.",
            &one(&self.connections_idle),
        );
        metric(
            "requests_total",
            "counter",
            "Requests read.",
            &one(&self.requests),
        );
        let buckets = ["1", "2-10", "11-100", "101+"];
        let rpc: Vec<_> = buckets
            .iter()
            .zip(&self.requests_per_connection)
            .map(|(b, a)| (format!("{{requests=\"{b}\"}}"), a.load(Relaxed)))
            .collect();
        metric(
            "connections_by_requests_total",
            "counter",
            "Closed connections by requests carried.",
            &rpc,
        );
        let closes: Vec<_> = CloseReason::ALL
            .iter()
            .map(|r| (format!("{{reason=\"{}\"}}", r.label()), self.closes(*r)))
            .collect();
        metric(
            "connection_closes_total",
            "counter",
            "Closed connections by reason.",
            &closes,
        );
        let linger = vec![
            ("{end=\"fin\"}".to_string(), self.linger_fin.load(Relaxed)),
            (
                "{end=\"bounded\"}".to_string(),
                self.linger_bounded.load(Relaxed),
            ),
        ];
        metric(
            "lingering_closes_total",
            "counter",
            "Lingering closes by how they ended.",
            &linger,
        );
        metric(
            "lingering_discarded_bytes_total",
            "counter",
            "Bytes discarded while lingering.",
            &one(&self.linger_discarded_bytes),
        );
        let rows: [(&str, &str, &str, &AtomicU64); 7] = [
            (
                "h2_streams_in_flight",
                "gauge",
                "HTTP/2 streams whose handler or answer is in flight.",
                &self.h2_streams_in_flight,
            ),
            (
                "h2_streams_in_flight_max_per_connection",
                "gauge",
                "Most HTTP/2 streams one connection had in flight at once.",
                &self.h2_streams_in_flight_max_per_conn,
            ),
            (
                "h2_streams_cancelled_total",
                "counter",
                "HTTP/2 streams reset by the client while in flight (work cancelled).",
                &self.h2_streams_cancelled,
            ),
            (
                "h2_streams_refused_total",
                "counter",
                "HTTP/2 streams refused at the in-flight limit.",
                &self.h2_streams_refused,
            ),
            (
                "h2_streams_stalled_total",
                "counter",
                "HTTP/2 streams reset for no flow-control window within the write timeout.",
                &self.h2_streams_stalled,
            ),
            (
                "h2_calm_goaways_total",
                "counter",
                "HTTP/2 connections sent GOAWAY ENHANCE_YOUR_CALM.",
                &self.h2_calm_goaways,
            ),
            (
                "tunnels_open",
                "gauge",
                "Upgraded connections and CONNECT tunnels open now.",
                &self.tunnels_open,
            ),
        ];
        for (name, kind, help, value) in rows {
            metric(name, kind, help, &one(value));
        }
        s
    }
}
