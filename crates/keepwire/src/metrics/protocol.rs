//! The server's counts split by protocol: HTTP/3's families beside
//! HTTP/2's, in the same shapes, and the request and connection totals by
//! protocol and transport (what a scrape needs to tell an HTTP/3 client's
//! traffic from the rest).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Family, ServerMetrics, Values, family};

impl ServerMetrics {
    /// The families that split the counts by protocol (HTTP/3's beside the
    /// HTTP/2 ones above, the same shapes).
    pub(super) fn per_protocol(&self) -> Vec<Family> {
        let one = |a: &AtomicU64| Values::Counter(vec![(vec![], a.load(Relaxed))]);
        let gauge = |a: &AtomicU64| Values::Gauge(vec![(vec![], a.load(Relaxed))]);
        let (all, h2, h3) = (
            self.requests.load(Relaxed),
            self.h2_requests.load(Relaxed),
            self.h3_requests.load(Relaxed),
        );
        let by_protocol = vec![
            (vec![("protocol", "http1")], all.saturating_sub(h2 + h3)),
            (vec![("protocol", "h2")], h2),
            (vec![("protocol", "h3")], h3),
        ];
        let accepted = self.connections_accepted.load(Relaxed);
        let quic = self.h3_connections_accepted.load(Relaxed);
        let by_transport = vec![
            (vec![("transport", "tcp")], accepted.saturating_sub(quic)),
            (vec![("transport", "quic")], quic),
        ];
        vec![
            family(
                "requests_by_protocol",
                "Requests read, by protocol (http1, h2, h3).",
                Values::Counter(by_protocol),
            ),
            family(
                "connections_accepted_by_transport",
                "Connections accepted, by transport (tcp, quic).",
                Values::Counter(by_transport),
            ),
            family(
                "h3_streams_in_flight",
                "HTTP/3 streams whose handler or answer is in flight.",
                gauge(&self.h3_streams_in_flight),
            ),
            family(
                "h3_streams_in_flight_max_per_connection",
                "Most HTTP/3 streams one connection had in flight at once.",
                gauge(&self.h3_streams_in_flight_max_per_conn),
            ),
            family(
                "h3_streams_cancelled",
                "HTTP/3 streams stopped by the client while in flight (work cancelled).",
                one(&self.h3_streams_cancelled),
            ),
            family(
                "h3_streams_refused",
                "HTTP/3 streams refused at the in-flight limit.",
                one(&self.h3_streams_refused),
            ),
            family(
                "h3_streams_stalled",
                "HTTP/3 streams reset for no flow-control window within the write timeout.",
                one(&self.h3_streams_stalled),
            ),
            family(
                "h3_calm_closes",
                "HTTP/3 connections closed with H3_EXCESSIVE_LOAD.",
                one(&self.h3_calm_closes),
            ),
            family(
                "h3_retries",
                "QUIC clients sent a Retry to prove their address.",
                one(&self.h3_retries),
            ),
        ]
    }
}
