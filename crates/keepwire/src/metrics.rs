//! Connection metrics, exposed in the OpenMetrics text format (what
//! Prometheus scrapes) through `prometheus-client`, the Prometheus
//! project's Rust client.
//!
//! What they show is connection management at work: how many connections
//! are open and idle, how long requests and connections last and how many
//! requests each connection carried (histograms), why each connection
//! closed, and whether lingering closes ended cleanly (FIN) or had to give
//! up (R8.5); for the proxy, how its upstream hop fared.
//!
//! The hot path stays what it was: every counter is a plain `AtomicU64`
//! bumped with a relaxed add, and a histogram observation is two more
//! (its bucket and its sum; [`Histogram`]). `prometheus-client`'s own
//! `Histogram` takes a lock on every observation, and the `metrics`
//! facade's exporter keeps every sample until a scrape or an upkeep task
//! drains them; so the values live in atomics here and the crate does
//! what a standard crate is for: names, units, `HELP`/`TYPE`, escaping and
//! the exposition itself, from a snapshot taken at each scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

mod histogram;
mod protocol;
pub use histogram::Histogram;
use histogram::{CONNECTION_SECONDS, REQUEST_SECONDS, REQUESTS, S};

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

    /// The name used in metrics labels and the access log.
    pub fn label(self) -> &'static str {
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

/// The `Content-Type` of [`ServerMetrics::render`] and
/// [`ProxyMetrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Server counters (all monotonic except the gauges).
#[derive(Debug)]
pub struct ServerMetrics {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Gauge: connections open now.
    pub connections_open: AtomicU64,
    /// Gauge: open connections idle between requests.
    pub connections_idle: AtomicU64,
    /// Requests read.
    pub requests: AtomicU64,
    /// Seconds from a request's head to its response's last byte (responses
    /// written in full).
    pub request_duration: Histogram,
    /// Requests each closed connection carried.
    pub requests_per_connection: Histogram,
    /// Seconds from accept to close.
    pub connection_duration: Histogram,
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
    /// Requests read over HTTP/2 (also in `requests`).
    pub h2_requests: AtomicU64,
    /// Requests read over HTTP/3 (also in `requests`).
    pub h3_requests: AtomicU64,
    /// QUIC connections accepted (also in `connections_accepted`).
    pub h3_connections_accepted: AtomicU64,
    /// Gauge: HTTP/3 streams whose handler or answer is in flight.
    pub h3_streams_in_flight: AtomicU64,
    /// The most HTTP/3 streams any one connection had in flight at once
    /// (never above `http3_max_streams`).
    pub h3_streams_in_flight_max_per_conn: AtomicU64,
    /// HTTP/3 streams the client stopped while their work was in flight
    /// (the work was cancelled).
    pub h3_streams_cancelled: AtomicU64,
    /// HTTP/3 streams refused because the connection's handlers in flight
    /// were at the stream limit.
    pub h3_streams_refused: AtomicU64,
    /// HTTP/3 streams reset for getting no flow-control window for the
    /// write timeout.
    pub h3_streams_stalled: AtomicU64,
    /// HTTP/3 connections closed with H3_EXCESSIVE_LOAD (cancel floods).
    pub h3_calm_closes: AtomicU64,
    /// QUIC clients sent a Retry to prove their address (`quic_retry`).
    pub h3_retries: AtomicU64,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            connections_accepted: Default::default(),
            connections_open: Default::default(),
            connections_idle: Default::default(),
            requests: Default::default(),
            request_duration: Histogram::new(&REQUEST_SECONDS, S as f64),
            requests_per_connection: Histogram::new(&REQUESTS, 1.0),
            connection_duration: Histogram::new(&CONNECTION_SECONDS, S as f64),
            closes: Default::default(),
            linger_fin: Default::default(),
            linger_bounded: Default::default(),
            linger_discarded_bytes: Default::default(),
            h2_streams_in_flight: Default::default(),
            h2_streams_in_flight_max_per_conn: Default::default(),
            h2_streams_cancelled: Default::default(),
            h2_streams_refused: Default::default(),
            h2_streams_stalled: Default::default(),
            h2_calm_goaways: Default::default(),
            tunnels_open: Default::default(),
            h2_requests: Default::default(),
            h3_requests: Default::default(),
            h3_connections_accepted: Default::default(),
            h3_streams_in_flight: Default::default(),
            h3_streams_in_flight_max_per_conn: Default::default(),
            h3_streams_cancelled: Default::default(),
            h3_streams_refused: Default::default(),
            h3_streams_stalled: Default::default(),
            h3_calm_closes: Default::default(),
            h3_retries: Default::default(),
        }
    }
}

impl ServerMetrics {
    /// Counts a closed connection that carried `requests` and lived
    /// `lifetime`.
    pub fn closed(&self, reason: CloseReason, requests: u64, lifetime: Duration) {
        self.closes[reason as usize].fetch_add(1, Relaxed);
        self.requests_per_connection.record(requests);
        self.connection_duration.record_duration(lifetime);
    }

    /// Closes counted for `reason`.
    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.closes[reason as usize].load(Relaxed)
    }

    /// OpenMetrics text ([`CONTENT_TYPE`]), every name prefixed `keepwire_`.
    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// [`ServerMetrics::render`], with the access log's dropped lines
    /// when there is one.
    pub fn render_with(&self, access_log_dropped: Option<usize>) -> String {
        let one = |a: &AtomicU64| Values::Counter(vec![(vec![], a.load(Relaxed))]);
        let gauge = |a: &AtomicU64| Values::Gauge(vec![(vec![], a.load(Relaxed))]);
        let closes = CloseReason::ALL
            .iter()
            .map(|r| (vec![("reason", r.label())], self.closes(*r)))
            .collect();
        let linger = vec![
            (vec![("end", "fin")], self.linger_fin.load(Relaxed)),
            (vec![("end", "bounded")], self.linger_bounded.load(Relaxed)),
        ];
        let mut families = vec![
            family(
                "connections_accepted",
                "Connections accepted.",
                one(&self.connections_accepted),
            ),
            family(
                "connections_open",
                "Connections open now.",
                gauge(&self.connections_open),
            ),
            family(
                "connections_idle",
                "Open connections idle between requests.",
                gauge(&self.connections_idle),
            ),
            family("requests", "Requests read.", one(&self.requests)),
            family(
                "request_duration",
                "From a request's head to its response's last byte (responses written in full).",
                hist(&self.request_duration),
            )
            .unit(Unit::Seconds),
            family(
                "requests_per_connection",
                "Requests each closed connection carried.",
                hist(&self.requests_per_connection),
            ),
            family(
                "connection_duration",
                "Connection lifetimes, accept to close.",
                hist(&self.connection_duration),
            )
            .unit(Unit::Seconds),
            family(
                "connection_closes",
                "Closed connections by reason.",
                Values::Counter(closes),
            ),
            family(
                "lingering_closes",
                "Lingering closes by how they ended.",
                Values::Counter(linger),
            ),
            family(
                "lingering_discarded",
                "Bytes discarded while lingering.",
                one(&self.linger_discarded_bytes),
            )
            .unit(Unit::Bytes),
            family(
                "h2_streams_in_flight",
                "HTTP/2 streams whose handler or answer is in flight.",
                gauge(&self.h2_streams_in_flight),
            ),
            family(
                "h2_streams_in_flight_max_per_connection",
                "Most HTTP/2 streams one connection had in flight at once.",
                gauge(&self.h2_streams_in_flight_max_per_conn),
            ),
            family(
                "h2_streams_cancelled",
                "HTTP/2 streams reset by the client while in flight (work cancelled).",
                one(&self.h2_streams_cancelled),
            ),
            family(
                "h2_streams_refused",
                "HTTP/2 streams refused at the in-flight limit.",
                one(&self.h2_streams_refused),
            ),
            family(
                "h2_streams_stalled",
                "HTTP/2 streams reset for no flow-control window within the write timeout.",
                one(&self.h2_streams_stalled),
            ),
            family(
                "h2_calm_goaways",
                "HTTP/2 connections sent GOAWAY ENHANCE_YOUR_CALM.",
                one(&self.h2_calm_goaways),
            ),
            family(
                "tunnels_open",
                "Upgraded connections and CONNECT tunnels open now.",
                gauge(&self.tunnels_open),
            ),
        ];
        families.extend(self.per_protocol());
        if let Some(n) = access_log_dropped {
            families.push(family(
                "access_log_dropped_lines",
                "Access-log lines dropped because the writer fell behind.",
                Values::Counter(vec![(vec![], n as u64)]),
            ));
        }
        encode(families)
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

    /// OpenMetrics text, with the upstream counters summed over `upstream`
    /// (the proxy's clients: configured upstreams and forward-mode
    /// origins).
    pub fn render(&self, upstream: &[&ClientMetrics]) -> String {
        let one = |a: &AtomicU64| Values::Counter(vec![(vec![], a.load(Relaxed))]);
        let gauge = |a: &AtomicU64| Values::Gauge(vec![(vec![], a.load(Relaxed))]);
        let labelled = |key: &'static str, kinds: &[&'static str], v: &[AtomicU64]| {
            kinds
                .iter()
                .zip(v)
                .map(|(k, a)| (vec![(key, *k)], a.load(Relaxed)))
                .collect::<Vec<_>>()
        };
        let responses = vec![
            (vec![("status", "502")], self.bad_gateway.load(Relaxed)),
            (vec![("status", "504")], self.gateway_timeout.load(Relaxed)),
        ];
        type Counter = fn(&ClientMetrics) -> &AtomicU64;
        let sum = |f: Counter| {
            let v = upstream.iter().map(|c| f(c).load(Relaxed)).sum();
            Values::Counter(vec![(vec![], v)])
        };
        let families = vec![
            family("proxy_requests", "Requests handled.", one(&self.requests)),
            family(
                "proxy_responses",
                "Responses the proxy made itself for a failed upstream, by status.",
                Values::Counter(responses),
            ),
            family(
                "proxy_upstream_errors",
                "Upstream failures by kind.",
                Values::Counter(labelled(
                    "kind",
                    &Self::UPSTREAM_ERROR_KINDS,
                    &self.upstream_errors,
                )),
            ),
            family(
                "proxy_tunnels",
                "Tunnels (CONNECT and upgrades) opened.",
                one(&self.tunnels),
            ),
            family(
                "proxy_tunnels_idle_closed",
                "Tunnels closed for idleness.",
                one(&self.tunnels_idle_closed),
            ),
            family(
                "proxy_refused",
                "Requests refused (client not allowed, CONNECT port, loop, bad Host).",
                one(&self.refused),
            ),
            family(
                "proxy_destinations_refused",
                "Forward-mode requests refused by the destination policy.",
                one(&self.destinations_refused),
            ),
            family(
                "proxy_tunnels_open",
                "Tunnels open now: CONNECT, and upgrades such as WebSocket.",
                Values::Gauge(labelled("kind", &Self::TUNNEL_KINDS, &self.tunnels_open)),
            ),
            family(
                "proxy_request_body_retained",
                "Request-body bytes kept for resends now.",
                gauge(&self.retained.current),
            )
            .unit(Unit::Bytes),
            family(
                "proxy_request_body_retained_max",
                "The most request-body bytes kept for resends at once.",
                gauge(&self.retained.peak),
            )
            .unit(Unit::Bytes),
            family(
                "proxy_upstream_connections_opened",
                "Upstream connections opened.",
                sum(|c| &c.connections_opened),
            ),
            family(
                "proxy_upstream_requests_reused",
                "Requests sent on a reused upstream connection.",
                sum(|c| &c.reused),
            ),
            family(
                "proxy_upstream_retries",
                "Upstream retries (R8.3).",
                sum(|c| &c.retries),
            ),
            family(
                "proxy_upstream_idle_retired",
                "Idle upstream connections retired before the upstream's close.",
                sum(|c| &c.retired_idle),
            ),
            family(
                "proxy_upstream_idle_stale",
                "Idle upstream connections found closed by the upstream.",
                sum(|c| &c.stale_idle),
            ),
        ];
        encode(families)
    }
}

/// The `Content-Type` of [`to_prometheus_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An OpenMetrics rendering in the older Prometheus text format (0.0.4),
/// for scrapers that do not ask for OpenMetrics (`Accept`): a counter's
/// `HELP`/`TYPE` name its `_total` series, and `UNIT` and `EOF` go. The
/// samples are the same lines.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let counter = |l: &str| l.starts_with("# TYPE ") && l.ends_with(" counter");
        let renamed = match line.strip_prefix("# HELP ") {
            // HELP comes first: rename it if its TYPE says counter.
            Some(rest) if lines.peek().is_some_and(|next| counter(next)) => {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(format!("# HELP {name}_total {help}"))
            }
            _ if counter(line) => {
                let name = &line["# TYPE ".len()..line.len() - " counter".len()];
                Some(format!("# TYPE {name}_total counter"))
            }
            _ => None,
        };
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Several renderings as one exposition (one `# EOF`, at the end).
pub fn join(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(p.strip_suffix("# EOF\n").unwrap_or(p));
    }
    out.push_str("# EOF\n");
    out
}

type Labels = Vec<(&'static str, &'static str)>;

/// One metric's values at the time of a scrape.
#[derive(Debug)]
enum Values {
    Counter(Vec<(Labels, u64)>),
    Gauge(Vec<(Labels, u64)>),
    /// Per-bucket (not cumulative) counts by upper bound; the encoder
    /// accumulates them.
    Histogram {
        sum: f64,
        buckets: Vec<(f64, u64)>,
    },
}

/// A metric family: name (without prefix, unit or `_total`), help, unit.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    values: Values,
}

fn hist(h: &Histogram) -> Values {
    let (sum, buckets) = h.snapshot();
    Values::Histogram { sum, buckets }
}

fn family(name: &'static str, help: &'static str, values: Values) -> Family {
    Family {
        name,
        help,
        unit: None,
        values,
    }
}

impl Family {
    fn unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }
}

/// A scrape's snapshot, handed to `prometheus-client` as a collector.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = match f.values {
                Values::Counter(_) => MetricType::Counter,
                Values::Gauge(_) => MetricType::Gauge,
                Values::Histogram { .. } => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), kind)?;
            match &f.values {
                Values::Counter(rows) if rows.len() == 1 && rows[0].0.is_empty() => {
                    ConstCounter::new(rows[0].1).encode(metric)?;
                }
                Values::Gauge(rows) if rows.len() == 1 && rows[0].0.is_empty() => {
                    ConstGauge::new(rows[0].1 as i64).encode(metric)?;
                }
                Values::Counter(rows) => {
                    for (labels, v) in rows {
                        let m = ConstCounter::new(*v);
                        m.encode(metric.encode_family(labels)?)?;
                    }
                }
                Values::Gauge(rows) => {
                    for (labels, v) in rows {
                        let m = ConstGauge::new(*v as i64);
                        m.encode(metric.encode_family(labels)?)?;
                    }
                }
                Values::Histogram { sum, buckets } => {
                    let count = buckets.iter().map(|(_, n)| n).sum();
                    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        *sum, count, buckets, None,
                    )?;
                }
            }
        }
        Ok(())
    }
}

fn encode(families: Vec<Family>) -> String {
    let mut registry = prometheus_client::registry::Registry::with_prefix("keepwire");
    registry.register_collector(Box::new(Snapshot(families)));
    let mut out = String::with_capacity(8 * 1024);
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
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
            "# HELP keepwire_proxy_requests Requests handled.",
            "# TYPE keepwire_proxy_requests counter",
            "keepwire_proxy_requests_total 7",
            "keepwire_proxy_upstream_errors_total{kind=\"timeout\"} 2",
            "keepwire_proxy_responses_total{status=\"504\"} 0",
            "# TYPE keepwire_proxy_request_body_retained_bytes gauge",
            "# UNIT keepwire_proxy_request_body_retained_bytes bytes",
            "keepwire_proxy_request_body_retained_max_bytes 0",
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
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!((helps, types), (15, 15));
        assert!(text.ends_with("# EOF\n"), "{text}");
        let old = to_prometheus_text(&text);
        for line in [
            "# HELP keepwire_proxy_requests_total Requests handled.",
            "# TYPE keepwire_proxy_requests_total counter",
            "keepwire_proxy_requests_total 7",
            "# TYPE keepwire_proxy_tunnels_open gauge",
        ] {
            assert!(old.lines().any(|l| l == line), "{line:?} missing in\n{old}");
        }
        assert!(!old.contains("# EOF") && !old.contains("# UNIT"), "{old}");
    }

    #[test]
    fn histograms_are_cumulative_with_inf_equal_to_the_count() {
        let m = ServerMetrics::default();
        for us in [50, 50, 300, 2_000_000] {
            m.request_duration
                .record_duration(Duration::from_micros(us));
        }
        m.closed(CloseReason::IdleTimeout, 3, Duration::from_millis(5));
        let text = m.render();
        for line in [
            "# TYPE keepwire_request_duration_seconds histogram",
            "# UNIT keepwire_request_duration_seconds seconds",
            "keepwire_request_duration_seconds_bucket{le=\"0.0001\"} 2",
            "keepwire_request_duration_seconds_bucket{le=\"0.0005\"} 3",
            "keepwire_request_duration_seconds_bucket{le=\"2.5\"} 4",
            "keepwire_request_duration_seconds_bucket{le=\"+Inf\"} 4",
            "keepwire_request_duration_seconds_count 4",
            "keepwire_requests_per_connection_bucket{le=\"2.0\"} 0",
            "keepwire_requests_per_connection_bucket{le=\"5.0\"} 1",
            "keepwire_requests_per_connection_sum 3.0",
            "keepwire_connection_duration_seconds_count 1",
            "keepwire_connection_closes_total{reason=\"idle_timeout\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(text.starts_with(
            "# HELP keepwire_connections_accepted Connections accepted.\n\
             # TYPE keepwire_connections_accepted counter\n\
             keepwire_connections_accepted_total 0\n"
        ));
        assert_eq!(m.request_duration.count(), 4);
    }
}
