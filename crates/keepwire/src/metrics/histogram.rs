//! A histogram recorded lock-free, for the metrics on the hot path.
//!
//! Fixed bucket bounds, one atomic per bucket plus one for the sum: an
//! observation is a binary search over a dozen bounds and two relaxed
//! adds. The count is the buckets' total, so a scrape's `+Inf` bucket
//! always equals its `_count`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A histogram with fixed bucket bounds, recorded lock-free: one relaxed
/// add to the bucket and one to the sum. The count is the buckets' total,
/// so `+Inf` always equals `_count` in a scrape.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in recorded units (nanoseconds, or plain counts).
    bounds: &'static [u64],
    /// One more than `bounds`: the last is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// Recorded units per exposed unit (1e9 for seconds from nanoseconds).
    scale: f64,
}

impl Histogram {
    pub(super) fn new(bounds: &'static [u64], scale: f64) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records `v` recorded units.
    pub fn record(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
    }

    /// Records a duration (for histograms in seconds).
    pub fn record_duration(&self, d: Duration) {
        self.record(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The sum and the per-bucket (not cumulative) counts by upper bound.
    pub(super) fn snapshot(&self) -> (f64, Vec<(f64, u64)>) {
        let buckets = self
            .bounds
            .iter()
            .map(|b| *b as f64 / self.scale)
            // The encoder writes `+Inf` for `f64::MAX` (its own histograms end so).
            .chain([f64::MAX])
            .zip(self.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        (self.sum.load(Relaxed) as f64 / self.scale, buckets)
    }
}

const NS: u64 = 1;
const US: u64 = 1_000 * NS;
const MS: u64 = 1_000 * US;
pub(super) const S: u64 = 1_000 * MS;

/// Request durations, 100 µs to 60 s: a keep-alive request on a LAN is
/// well under a millisecond, a long poll tens of seconds.
pub(super) const REQUEST_SECONDS: [u64; 18] = [
    100 * US,
    250 * US,
    500 * US,
    MS,
    2_500 * US,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    S,
    2_500 * MS,
    5 * S,
    10 * S,
    30 * S,
    60 * S,
];

/// Connection lifetimes, 1 ms (one request) to an hour (`max_age`).
pub(super) const CONNECTION_SECONDS: [u64; 14] = [
    MS,
    10 * MS,
    100 * MS,
    S,
    5 * S,
    10 * S,
    30 * S,
    60 * S,
    75 * S,
    120 * S,
    300 * S,
    600 * S,
    1800 * S,
    3600 * S,
];

/// Requests per connection, 1 (no reuse) to past `max_requests` (1000).
pub(super) const REQUESTS: [u64; 11] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10_000];
