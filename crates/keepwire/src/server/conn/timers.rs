//! A server connection's timers, one per phase (R10.2): idle between
//! requests (with a grace period on shutdown), header (slowloris), body
//! (between reads). The write timeout bounds each write where it happens.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::{Driver, Failure};
use crate::body::BodyError;
use crate::metrics::CloseReason;

/// The connection's clock readings and idle bookkeeping.
pub(super) struct Timers {
    pub(super) started: Instant,
    /// The time at the start of this loop turn.
    pub(super) now: Instant,
    /// The `Date` value for responses of this turn.
    pub(super) date: Option<http::HeaderValue>,
    /// When the connection last became idle, or last made progress.
    pub(super) last_activity: Instant,
    /// When the current head started arriving (header timeout).
    pub(super) head_started: Instant,
    /// When the head of the response being written began to arrive.
    pub(super) answering: Instant,
    /// This connection is counted in the idle gauge.
    pub(super) counted_idle: bool,
    /// Idle buffers were freed.
    pub(super) released: bool,
}

impl Timers {
    pub(super) fn new(now: Instant) -> Self {
        Timers {
            started: now,
            now,
            date: None,
            last_activity: now,
            head_started: now,
            answering: now,
            counted_idle: false,
            released: true,
        }
    }
}

impl Driver {
    /// Keeps the idle-connections gauge in step with this connection.
    pub(super) fn mark_idle(&mut self, idle: bool) {
        if idle != self.timers.counted_idle {
            self.timers.counted_idle = idle;
            let gauge = &self.shared.metrics.connections_idle;
            if idle {
                gauge.fetch_add(1, Relaxed);
            } else {
                gauge.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Frees the buffers as soon as the connection is idle: an idle
    /// keep-alive connection should cost next to nothing (R5.6). Freed at
    /// once, they are reused by the next busy connection; kept 200 ms into
    /// the idle period (as before), the buffers of every connection that
    /// went idle in that window stayed resident in the heap (5,000 idle
    /// connections: 4,150 → 3,200 B each).
    pub(super) fn release_buffers(&mut self) {
        crate::buffers::give(self.conn.release_buffers());
        crate::buffers::give(std::mem::take(&mut self.out));
        self.pipeline = Default::default();
        self.timers.released = true;
    }

    pub(super) fn quiet(&self) -> bool {
        self.conn.is_idle() && self.pipeline.is_empty() && self.streaming.is_none()
    }

    /// The next timer for the current phase.
    pub(super) fn deadline(&self) -> Instant {
        let cfg = &self.shared.config;
        if self.quiet() {
            if self.stopping {
                return self.timers.last_activity + cfg.keep_alive_min;
            }
            return self.timers.last_activity + cfg.idle_timeout;
        }
        if self.conn.is_reading_head() && self.pipeline.is_empty() {
            return self.timers.head_started + cfg.header_timeout;
        }
        if self.body.tx.is_some() && self.body.stalled.is_none() {
            return self.timers.last_activity + cfg.body_timeout;
        }
        far_future()
    }

    pub(super) fn on_timer(&mut self) -> Option<CloseReason> {
        let now = Instant::now();
        let cfg = &self.shared.config;
        // Closing on purpose (shutdown, idle) happens only between
        // messages; a late request is answered 408, not cut off (R5.5).
        if self.quiet() {
            if self.stopping && now >= self.timers.last_activity + cfg.keep_alive_min {
                return Some(CloseReason::Shutdown);
            }
            if now >= self.timers.last_activity + cfg.idle_timeout {
                return Some(CloseReason::IdleTimeout);
            }
            return None;
        }
        let head_late = self.conn.is_reading_head()
            && self.pipeline.is_empty()
            && now >= self.timers.head_started + cfg.header_timeout;
        let body_late =
            self.body.tx.is_some() && now >= self.timers.last_activity + cfg.body_timeout;
        if head_late || body_late {
            tracing::debug!(conn = self.info.id, head_late, body_late, "request timeout");
            self.timed_out = true;
            if let Some(tx) = self.body.tx.take() {
                let _ = tx.try_send(Err(BodyError::Closed));
            }
            self.failed = Some(if self.pipeline.is_empty() {
                Failure::Answer(StatusCode::REQUEST_TIMEOUT)
            } else {
                Failure::Quiet
            });
            return None;
        }
        None
    }
}

pub(super) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
