//! Live counters another thread can read while a run goes on, without the
//! run's threads ever contending for a cache line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live counters a progress display can read while a run goes on.
#[derive(Debug)]
pub struct Progress {
    /// One counter pair per thread (thread `t` uses slot `t % SLOTS`), each
    /// on its own cache line so threads never contend.
    threads: Vec<Padded>,
    pub(super) started: AtomicBool,
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
pub(super) struct Padded {
    pub(super) responses: AtomicU64,
    pub(super) errors: AtomicU64,
}

impl Progress {
    const SLOTS: usize = 64;

    pub(super) fn slot(&self, thread: usize) -> &Padded {
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
