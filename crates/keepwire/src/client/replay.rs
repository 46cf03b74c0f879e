//! A request body that can be sent again, but only up to a bound.
//!
//! Resending a request (a refused stream, the stale-connection race, a
//! failover to the next upstream) needs its body again. Buffering every
//! body whole for that makes memory as large as the largest upload (a proxy
//! took 140 MB for one 64 MiB POST). Instead the body streams, and the
//! bytes read so far are kept only while they fit under a bound (per body,
//! and optionally per group of bodies: one proxy client connection's
//! pipelined or multiplexed requests). Past the bound the copy is dropped
//! and the request can no longer be resent once any of it was written:
//! exactly the case the retry rule (R8.3) already fails for non-idempotent
//! requests, now also for large idempotent ones.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;

use crate::body::{Body, BodyError};

/// The default bound on a body's retry copy (nginx buffers request bodies
/// up to `client_body_buffer_size`, 8–16 KiB, in memory; 64 KiB covers
/// typical API bodies whole).
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// Bytes kept for retries, across every body that shares one budget.
#[derive(Debug, Default)]
pub struct RetainGauge {
    /// Bytes kept now.
    pub current: AtomicU64,
    /// The most ever kept at once.
    pub peak: AtomicU64,
}

impl RetainGauge {
    fn add(&self, n: usize) {
        let now = self.current.fetch_add(n as u64, Relaxed) + n as u64;
        self.peak.fetch_max(now, Relaxed);
    }

    fn sub(&self, n: usize) {
        self.current.fetch_sub(n as u64, Relaxed);
    }
}

/// A cap on the bytes several [`ReplayBody`]s keep together (for a proxy:
/// one client connection's requests in flight). Cheap to clone; clones
/// share the count.
#[derive(Debug, Clone)]
pub struct RetainBudget(Arc<BudgetInner>);

#[derive(Debug)]
struct BudgetInner {
    limit: usize,
    used: AtomicUsize,
    gauge: Option<Arc<RetainGauge>>,
}

impl RetainBudget {
    /// A budget of `limit` bytes, also counted in `gauge` if given.
    pub fn new(limit: usize, gauge: Option<Arc<RetainGauge>>) -> Self {
        RetainBudget(Arc::new(BudgetInner {
            limit,
            used: AtomicUsize::new(0),
            gauge,
        }))
    }

    /// Bytes held against it now.
    pub fn used(&self) -> usize {
        self.0.used.load(Relaxed)
    }

    /// No body holds this budget any more (only the caller's handle is
    /// left): whoever keeps budgets by key may forget it.
    pub fn is_unshared(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    fn try_take(&self, n: usize) -> bool {
        let taken = self
            .0
            .used
            .fetch_update(Relaxed, Relaxed, |u| {
                u.checked_add(n).filter(|&t| t <= self.0.limit)
            })
            .is_ok();
        if taken && let Some(g) = &self.0.gauge {
            g.add(n);
        }
        taken
    }

    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.0.used.fetch_sub(n, Relaxed);
        if let Some(g) = &self.0.gauge {
            g.sub(n);
        }
    }
}

/// A request body that streams, keeping what was read so far for a resend
/// as long as that stays within its bounds.
///
/// A body that is one buffer already (`Body::full`, `Bytes`) is replayable
/// whatever its size: keeping it costs nothing extra.
pub struct ReplayBody {
    /// The unread rest; `None` once it ended.
    source: Option<Body>,
    /// Chunks read from the source and still held: all of them while the
    /// copy is kept, else only those not handed out yet.
    buf: std::collections::VecDeque<Bytes>,
    /// Chunks of `buf` handed out since the last rewind.
    cursor: usize,
    /// Bytes in `buf`.
    held: usize,
    /// Bytes charged to the budget.
    charged: usize,
    limit: usize,
    budget: Option<RetainBudget>,
    /// The copy was dropped: no resend once anything was handed out.
    overflowed: bool,
    /// Bytes read from the source.
    read: u64,
    /// The length the source announced, if any.
    declared: Option<u64>,
}

impl std::fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("held", &self.held)
            .field("read", &self.read)
            .field("ended", &self.source.is_none())
            .field("overflowed", &self.overflowed)
            .finish()
    }
}

impl Default for ReplayBody {
    fn default() -> Self {
        ReplayBody::from(Bytes::new())
    }
}

impl From<Bytes> for ReplayBody {
    fn from(b: Bytes) -> Self {
        let len = b.len();
        let mut buf = std::collections::VecDeque::new();
        if len > 0 {
            buf.push_back(b);
        }
        ReplayBody {
            source: None,
            buf,
            cursor: 0,
            held: len,
            charged: 0,
            limit: len,
            budget: None,
            overflowed: false,
            read: len as u64,
            declared: Some(len as u64),
        }
    }
}

impl ReplayBody {
    /// `body`, keeping up to `limit` bytes of it for a resend.
    pub fn new(mut body: Body, limit: usize) -> Self {
        if let Some(b) = body.take_full() {
            return ReplayBody::from(b);
        }
        ReplayBody {
            declared: body.size_hint().exact(),
            source: Some(body),
            buf: Default::default(),
            cursor: 0,
            held: 0,
            charged: 0,
            limit,
            budget: None,
            overflowed: false,
            read: 0,
        }
    }

    /// Also charges what is kept to `budget` (shared with other bodies).
    pub fn with_budget(mut self, budget: RetainBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The whole body's length, if known (announced, or read to its end).
    pub fn length(&self) -> Option<u64> {
        match &self.source {
            None => Some(self.read),
            Some(_) => self.declared,
        }
    }

    /// Known to be empty.
    pub fn is_empty(&self) -> bool {
        self.length() == Some(0)
    }

    /// Bytes held now (the retry copy, or read ahead and not sent yet).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether a resend is still possible (nothing was dropped).
    pub fn is_replayable(&self) -> bool {
        !self.overflowed
    }

    /// The whole body is in memory and kept: it can be resent whatever
    /// happens.
    pub fn is_held_whole(&self) -> bool {
        self.source.is_none() && !self.overflowed
    }

    /// Whether any byte was handed out since the last rewind.
    pub fn started(&self) -> bool {
        self.cursor > 0 || (self.overflowed && self.read > self.held as u64)
    }

    /// Starts over from the first byte for a resend; `false` if the copy
    /// was dropped and the body cannot be sent again (unless nothing of it
    /// was handed out yet).
    pub fn rewind(&mut self) -> bool {
        if self.overflowed {
            return !self.started();
        }
        self.cursor = 0;
        true
    }

    /// Reads ahead while the body fits its bound, so a small body (the
    /// common case) is whole before it is sent: it goes out with a
    /// `Content-Length` next to its head. A body announced larger than the
    /// bound is left to stream.
    pub async fn prefill(&mut self) -> Result<(), BodyError> {
        if self.declared.is_some_and(|n| n > self.limit as u64) {
            return Ok(());
        }
        while !self.overflowed {
            let Some(source) = self.source.as_mut() else {
                return Ok(());
            };
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *source).poll_frame(cx)).await;
            match frame {
                None => self.source = None,
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.read += data.len() as u64;
                        // Read ahead, not handed out: held even past the
                        // bound (then as the one chunk that broke it).
                        let kept = self.keep(&data);
                        if !kept {
                            self.held += data.len();
                            self.buf.push_back(data);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The next chunk to send: held ones first (after a rewind, or read
    /// ahead), then the source's, kept while they fit.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.overflowed {
            if let Some(c) = self.buf.pop_front() {
                self.held -= c.len();
                return Poll::Ready(Some(Ok(c)));
            }
        } else if let Some(c) = self.buf.get(self.cursor) {
            self.cursor += 1;
            return Poll::Ready(Some(Ok(c.clone())));
        }
        loop {
            let Some(source) = self.source.as_mut() else {
                return Poll::Ready(None);
            };
            match std::task::ready!(Pin::new(source).poll_frame(cx)) {
                None => {
                    self.source = None;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => {
                    // Trailers are not relayed on requests.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    self.read += data.len() as u64;
                    if self.keep(&data) {
                        self.cursor = self.buf.len();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
            }
        }
    }

    /// Keeps `data` in the copy if it fits; otherwise drops the copy (what
    /// was handed out already) for good.
    fn keep(&mut self, data: &Bytes) -> bool {
        if self.overflowed {
            return false;
        }
        let fits = self.held + data.len() <= self.limit
            && self.budget.as_ref().is_none_or(|b| b.try_take(data.len()));
        if fits {
            if self.budget.is_some() {
                self.charged += data.len();
            }
            self.held += data.len();
            self.buf.push_back(data.clone());
            return true;
        }
        self.overflowed = true;
        for c in self.buf.drain(..self.cursor) {
            self.held -= c.len();
        }
        self.cursor = 0;
        if let Some(b) = &self.budget {
            b.give_back(std::mem::take(&mut self.charged));
        }
        false
    }
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(self.charged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn chunks(parts: &[&'static str]) -> Body {
        let (tx, body) = Body::channel(parts.len().max(1));
        for p in parts {
            tx.send(Bytes::from_static(p.as_bytes())).await.unwrap();
        }
        body
    }

    async fn drain(b: &mut ReplayBody) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = std::future::poll_fn(|cx| b.poll_chunk(cx)).await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn small_bodies_replay_large_ones_do_not_once_sent() {
        let gauge = Arc::new(RetainGauge::default());
        let budget = RetainBudget::new(1000, Some(gauge.clone()));
        let mut small = ReplayBody::new(chunks(&["ab", "cd"]).await, 8).with_budget(budget.clone());
        small.prefill().await.unwrap();
        assert_eq!(small.length(), Some(4), "read to its end: length known");
        assert_eq!(drain(&mut small).await, b"abcd");
        assert!(small.rewind());
        assert_eq!(drain(&mut small).await, b"abcd", "replayed whole");
        assert_eq!(budget.used(), 4);
        drop(small);
        assert_eq!(budget.used(), 0);

        // Over the bound while prefilling: nothing is lost, but once handed
        // out it cannot go again.
        let mut big =
            ReplayBody::new(chunks(&["abc", "def", "ghi"]).await, 5).with_budget(budget.clone());
        big.prefill().await.unwrap();
        assert!(big.rewind(), "nothing handed out yet");
        assert_eq!(drain(&mut big).await, b"abcdefghi");
        assert!(!big.rewind());
        assert_eq!(budget.used(), 0);
        assert!(gauge.peak.load(Relaxed) <= 5);
    }

    #[tokio::test]
    async fn a_shared_budget_caps_the_copies_together() {
        let budget = RetainBudget::new(5, None);
        let mut a = ReplayBody::new(chunks(&["abcd"]).await, 64).with_budget(budget.clone());
        let mut b = ReplayBody::new(chunks(&["efgh"]).await, 64).with_budget(budget.clone());
        assert_eq!(drain(&mut a).await, b"abcd");
        assert_eq!(drain(&mut b).await, b"efgh");
        assert!(a.rewind(), "first fits the budget");
        assert!(!b.rewind(), "second does not");
        assert_eq!(budget.used(), 4);
    }
}
