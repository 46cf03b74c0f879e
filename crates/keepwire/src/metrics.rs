//! Connection counters, exposed in Prometheus text format.
//!
//! The counters are the ones that show connection management at work: how
//! many connections are open and idle, how many requests each carried, why
//! each one closed, and whether lingering closes ended cleanly (FIN) or had
//! to give up (R8.5); for the proxy, how its upstream hop fared. One writer
//! formats them all, so every series gets its `HELP` and `TYPE` the same way.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::client::{ClientMetrics, RetainGauge};

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
        let mut out = Exposition::default();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            out.metric(name, kind, help, lines)
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
        out.0
    }
}

/// Proxy counters (upstream connections are in the proxy's clients').
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Requests handled.
    pub requests: AtomicU64,
    /// Answered 502 (upstream failed).
    pub bad_gateway: AtomicU64,
    /// Answered 504 (upstream timed out).
    pub gateway_timeout: AtomicU64,
    /// Upstream failures by kind: connect, timeout, io, protocol, truncated
    /// ([`ProxyMetrics::UPSTREAM_ERROR_KINDS`]).
    pub upstream_errors: [AtomicU64; 5],
    /// Tunnels (CONNECT and upgrades) opened.
    pub tunnels: AtomicU64,
    /// Tunnels closed by `tunnel_idle_timeout`.
    pub tunnels_idle_closed: AtomicU64,
    /// Gauge: tunnels being set up or relayed now, by kind
    /// ([`ProxyMetrics::TUNNEL_KINDS`]): CONNECT, and upgraded exchanges
    /// (WebSocket among them, over HTTP/1.1 or RFC 8441 from the client).
    pub tunnels_open: [AtomicU64; 2],
    /// Forward-mode requests refused by the destination policy.
    pub destinations_refused: AtomicU64,
    /// Requests refused (client not allowed, CONNECT port, loop).
    pub refused: AtomicU64,
    /// Request-body bytes kept for resends, now and at most.
    pub retained: Arc<RetainGauge>,
}

impl ProxyMetrics {
    /// The labels of [`ProxyMetrics::upstream_errors`], in order.
    pub const UPSTREAM_ERROR_KINDS: [&str; 5] =
        ["connect", "timeout", "io", "protocol", "truncated"];

    /// The labels of [`ProxyMetrics::tunnels_open`], in order.
    pub const TUNNEL_KINDS: [&str; 2] = ["connect", "upgrade"];

    /// Prometheus text exposition format, with the upstream counters summed
    /// over `upstream` (the proxy's clients: configured upstreams and
    /// forward-mode origins).
    pub fn render(&self, upstream: &[&ClientMetrics]) -> String {
        let mut out = Exposition::default();
        let counter = |out: &mut Exposition, name: &str, help: &str, v: &AtomicU64| {
            out.metric(name, "counter", help, &[(String::new(), v.load(Relaxed))]);
        };
        counter(
            &mut out,
            "proxy_requests_total",
            "Requests handled.",
            &self.requests,
        );
        out.metric(
            "proxy_responses_total",
            "counter",
            "Responses the proxy made itself for a failed upstream, by status.",
            &[
                ("{status=\"502\"}".into(), self.bad_gateway.load(Relaxed)),
                (
                    "{status=\"504\"}".into(),
                    self.gateway_timeout.load(Relaxed),
                ),
            ],
        );
        let errors: Vec<_> = Self::UPSTREAM_ERROR_KINDS
            .iter()
            .zip(&self.upstream_errors)
            .map(|(k, a)| (format!("{{kind=\"{k}\"}}"), a.load(Relaxed)))
            .collect();
        out.metric(
            "proxy_upstream_errors_total",
            "counter",
            "Upstream failures by kind.",
            &errors,
        );
        counter(
            &mut out,
            "proxy_tunnels_total",
            "Tunnels (CONNECT and upgrades) opened.",
            &self.tunnels,
        );
        counter(
            &mut out,
            "proxy_tunnels_idle_closed_total",
            "Tunnels closed for idleness.",
            &self.tunnels_idle_closed,
        );
        counter(
            &mut out,
            "proxy_refused_total",
            "Requests refused (client not allowed, CONNECT port, loop, bad Host).",
            &self.refused,
        );
        counter(
            &mut out,
            "proxy_destinations_refused_total",
            "Forward-mode requests refused by the destination policy.",
            &self.destinations_refused,
        );
        let gauge = |out: &mut Exposition, name: &str, help: &str, v: &AtomicU64| {
            out.metric(name, "gauge", help, &[(String::new(), v.load(Relaxed))]);
        };
        let open: Vec<_> = Self::TUNNEL_KINDS
            .iter()
            .zip(&self.tunnels_open)
            .map(|(k, a)| (format!("{{kind=\"{k}\"}}"), a.load(Relaxed)))
            .collect();
        out.metric(
            "proxy_tunnels_open",
            "gauge",
            "Tunnels open now: CONNECT, and upgrades such as WebSocket.",
            &open,
        );
        gauge(
            &mut out,
            "proxy_request_body_retained_bytes",
            "Request-body bytes kept for resends now.",
            &self.retained.current,
        );
        gauge(
            &mut out,
            "proxy_request_body_retained_bytes_max",
            "The most request-body bytes kept for resends at once.",
            &self.retained.peak,
        );
        type Counter = fn(&ClientMetrics) -> &AtomicU64;
        let sum = |f: Counter| -> Vec<(String, u64)> {
            let v = upstream.iter().map(|c| f(c).load(Relaxed)).sum();
            vec![(String::new(), v)]
        };
        let rows: [(&str, &str, Counter); 5] = [
            (
                "proxy_upstream_connections_opened_total",
                "Upstream connections opened.",
                |c| &c.connections_opened,
            ),
            (
                "proxy_upstream_requests_reused_total",
                "Requests sent on a reused upstream connection.",
                |c| &c.reused,
            ),
            (
                "proxy_upstream_retries_total",
                "Upstream retries (R8.3).",
                |c| &c.retries,
            ),
            (
                "proxy_upstream_idle_retired_total",
                "Idle upstream connections retired before the upstream's close.",
                |c| &c.retired_idle,
            ),
            (
                "proxy_upstream_idle_stale_total",
                "Idle upstream connections found closed by the upstream.",
                |c| &c.stale_idle,
            ),
        ];
        for (name, help, f) in rows {
            out.metric(name, "counter", help, &sum(f));
        }
        out.0
    }
}

/// Prometheus text exposition: a `HELP` and a `TYPE` line per metric, then
/// one line per label set, every name prefixed `keepwire_`.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn metric(&mut self, name: &str, kind: &str, help: &str, lines: &[(String, u64)]) {
        let s = &mut self.0;
        let _ = writeln!(
            s,
            "# HELP keepwire_{name} {help}\n# TYPE keepwire_{name} {kind}"
        );
        for (labels, v) in lines {
            let _ = writeln!(s, "keepwire_{name}{labels} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_series_have_help_type_and_sum_the_upstream_clients() {
        let m = ProxyMetrics::default();
        m.requests.store(7, Relaxed);
        m.upstream_errors[1].store(2, Relaxed);
        m.tunnels_open[1].store(3, Relaxed);
        let (a, b) = (ClientMetrics::default(), ClientMetrics::default());
        a.connections_opened.store(3, Relaxed);
        b.connections_opened.store(4, Relaxed);
        let text = m.render(&[&a, &b]);
        for line in [
            "# HELP keepwire_proxy_requests_total Requests handled.",
            "# TYPE keepwire_proxy_requests_total counter",
            "keepwire_proxy_requests_total 7",
            "keepwire_proxy_upstream_errors_total{kind=\"timeout\"} 2",
            "keepwire_proxy_responses_total{status=\"504\"} 0",
            "# TYPE keepwire_proxy_request_body_retained_bytes gauge",
            "keepwire_proxy_upstream_connections_opened_total 7",
            "# TYPE keepwire_proxy_tunnels_open gauge",
            "keepwire_proxy_tunnels_open{kind=\"connect\"} 0",
            "keepwire_proxy_tunnels_open{kind=\"upgrade\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        // One HELP and one TYPE per metric, as in the server's rendering.
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!((helps, types), (15, 15));
        assert!(ServerMetrics::default().render().starts_with(
            "# HELP keepwire_connections_accepted_total Connections accepted.\n\
             # TYPE keepwire_connections_accepted_total counter\n\
             keepwire_connections_accepted_total 0\n"
        ));
    }
}
