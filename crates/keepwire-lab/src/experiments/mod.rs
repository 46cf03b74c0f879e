//! The experiments: the catalogue, and the harness every experiment runs
//! in. Each runs keepwire's own server on the server side of the link and a
//! client on the client side, and compares what it measures with the
//! round-trip model the chapter uses; one file per experiment.
//!
//! Raw clients (`raw.rs`: a socket and the proto core's skim) are used where
//! the point is what one socket does (Nagle, slow start, a dumb relay, a
//! reset); the pooled client and the load generator where the point is what
//! keepwire does about it.

mod dumb_proxy;
mod harness;
mod hol_blocking;
mod nagle;
mod paced;
mod page_load;
mod quic;
mod raw;
mod realtime;
mod realtime_client;
mod realtime_model;
mod realtime_server;
mod reset_loss;
mod slow_start;
mod stale_retry;
mod stats;
mod time_wait;
mod tls;
mod transport_hol;
mod transport_hol_model;

pub use harness::{Bar, Experiment, Judge, Lab, Losses, Outcome, Row, Timeline};
pub use stats::Spread;

/// Every experiment, in order.
pub const ALL: [Experiment; 11] = [
    page_load::EXPERIMENT,
    nagle::EXPERIMENT,
    slow_start::EXPERIMENT,
    time_wait::EXPERIMENT,
    dumb_proxy::EXPERIMENT,
    reset_loss::EXPERIMENT,
    stale_retry::EXPERIMENT,
    hol_blocking::EXPERIMENT,
    tls::EXPERIMENT,
    realtime::EXPERIMENT,
    transport_hol::EXPERIMENT,
];

/// The experiment named `id` (`page-load`, `nagle`, ...).
pub fn find(id: &str) -> Option<&'static Experiment> {
    ALL.iter().find(|e| e.id == id)
}
