//! Idle connections per origin, and the cap on open ones (R4.2, R5.2, R5.6).
//!
//! The pool knows no HTTP beyond three facts per connection: when it became
//! idle, how long the server said it keeps idle connections (`Keep-Alive:
//! timeout`), and how long the server turned out to keep them (learned from
//! idle connections found closed). A connection is retired *before* the
//! server would close it — the earliest of our own idle timeout, the
//! server's hint minus a safety margin, and a fraction of the learned
//! timeout — so a request never races the server's close (R8.1). Idle
//! connections are reused last-in first-out: the warmest one (R2.2), and the
//! one least likely to have been closed.
//!
//! Idle connections hold no buffers: they go to the thread's stash
//! (`crate::buffers`) for the next connection that works, so a busy pool
//! does not free and allocate them per request, and an idle one holds a
//! bounded amount whatever its size.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::conn::ClientConn;

/// Scheme, host and port: connections are shared only within one origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`, lowercase.
    pub scheme: String,
    /// Host, lowercase (an IPv6 literal keeps its brackets, as in a URL).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Origin {
    /// The origin of `scheme://authority`: `scheme` is `http` or `https`
    /// (any case), `authority` is `host[:port]` as
    /// [`keepwire_proto::host::split_authority`] reads it, the scheme's
    /// default port filled in if none is given. `None` for another scheme,
    /// an empty host, or an authority that does not parse (userinfo
    /// included).
    pub fn new(scheme: &str, authority: &str) -> Option<Origin> {
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (host, port) = keepwire_proto::host::split_authority(authority.as_bytes())?;
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(default_port),
            scheme,
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Pool settings: start from [`Default`] and set what differs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Open connections per origin (default 6, as browsers, R4.2).
    pub max_per_origin: usize,
    /// Our own idle timeout (default 90 s, as Go and hyper).
    pub idle_timeout: Duration,
    /// Retire this much before the server's advertised timeout (default 1 s).
    pub hint_margin: Duration,
    /// Wait at most this long for a free connection slot.
    pub wait_timeout: Duration,
    /// Reuse connections at all (off: every request gets a new one).
    pub reuse: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_per_origin: 6,
            idle_timeout: Duration::from_secs(90),
            hint_margin: Duration::from_secs(1),
            wait_timeout: Duration::from_secs(30),
            reuse: true,
        }
    }
}

struct Idle {
    conn: Box<ClientConn>,
    since: Instant,
}

#[derive(Default)]
struct OriginState {
    /// Idle connections, most recently used last.
    idle: Vec<Idle>,
    /// Connections open (idle, busy or being connected).
    open: usize,
    /// Requests waiting for a slot.
    waiters: VecDeque<oneshot::Sender<()>>,
    /// Shortest idle time after which the server was seen to have closed.
    learned_close: Option<Duration>,
}

/// What a checkout got.
pub(crate) enum Checkout {
    /// An idle connection, ready (boxed from its connect to its close, so
    /// it moves as a pointer through the pool and the request futures).
    Reused(Box<ClientConn>),
    /// A slot for a new connection; the caller connects and must
    /// [`Pool::release`] the slot if that fails.
    Connect,
}

/// The pool. Shared by a client's requests.
pub(crate) struct Pool {
    pub(crate) config: PoolConfig,
    shared: Mutex<Shared>,
}

/// What the pool's lock guards.
#[derive(Default)]
struct Shared {
    origins: HashMap<Origin, OriginState>,
}

/// The origin's state, created on first use: one lookup (a hash of the
/// origin) when it exists, and the key cloned only when it does not, so a
/// lookup per request does not allocate. A function returning the first
/// lookup's borrow would hold it over the insert (the borrow checker's
/// limit), hence a macro.
macro_rules! state_of {
    ($map:expr, $origin:expr) => {
        match $map.get_mut($origin) {
            Some(st) => st,
            None => {
                $map.insert($origin.clone(), OriginState::default());
                $map.get_mut($origin).expect("inserted above")
            }
        }
    };
}

/// Why an idle connection was dropped at checkout.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Dropped {
    /// Past the effective idle timeout: retired before the server's close.
    pub(crate) expired: usize,
    /// Found closed (or dirty) by the probe: the server closed first.
    pub(crate) stale: usize,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Pool {
            config,
            shared: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `conn` may stay idle here.
    fn idle_limit(&self, learned_close: Option<Duration>, conn: &ClientConn) -> Duration {
        let mut limit = self.config.idle_timeout;
        if let Some(server) = conn.proto.keep_alive_timeout() {
            limit = limit.min(server.saturating_sub(self.config.hint_margin));
        }
        if let Some(learned) = learned_close {
            // Stay well inside what we saw: 3/4 of it.
            limit = limit.min(learned * 3 / 4);
        }
        limit
    }

    /// An idle connection, a slot to connect, or a wait for either.
    pub(crate) async fn checkout(
        &self,
        origin: &Origin,
        fresh: bool,
    ) -> Result<(Checkout, Dropped), ()> {
        let deadline = Instant::now() + self.config.wait_timeout;
        let mut dropped = Dropped::default();
        loop {
            let rx = {
                let mut shared = self.lock();
                let st = state_of!(shared.origins, origin);
                let now = Instant::now();
                let may_reuse = !fresh && self.config.reuse;
                while let Some(mut idle) = if may_reuse { st.idle.pop() } else { None } {
                    let idle_for = now.duration_since(idle.since);
                    if idle_for >= self.idle_limit(st.learned_close, &idle.conn) {
                        // We close first: over TLS, say so (close_notify).
                        idle.conn.stream.close_quietly();
                        dropped.expired += 1;
                        st.open -= 1;
                        continue;
                    }
                    if idle.conn.probe_idle().is_err() {
                        dropped.stale += 1;
                        st.open -= 1;
                        st.learned_close =
                            Some(st.learned_close.map_or(idle_for, |l| l.min(idle_for)));
                        continue;
                    }
                    return Ok((Checkout::Reused(idle.conn), dropped));
                }
                if fresh && st.open >= self.config.max_per_origin {
                    // A retry needs a fresh connection: close the oldest idle one
                    // to make room rather than wait behind it.
                    if !st.idle.is_empty() {
                        st.idle.remove(0);
                        st.open -= 1;
                    }
                }
                if st.open < self.config.max_per_origin {
                    st.open += 1;
                    return Ok((Checkout::Connect, dropped));
                }
                let (tx, rx) = oneshot::channel();
                st.waiters.push_back(tx);
                rx
            };
            if tokio::time::timeout_at(deadline, rx).await.is_err() {
                return Err(());
            }
        }
    }

    /// Returns a connection after its response ended: idle if it can carry
    /// another request, else closed.
    pub(crate) fn checkin(&self, origin: &Origin, mut conn: Box<ClientConn>) {
        let mut shared = self.lock();
        let st = state_of!(shared.origins, origin);
        if self.config.reuse && conn.reusable() {
            conn.release_buffers();
            st.idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        } else {
            st.open -= 1;
        }
        wake_one(st);
    }

    /// Gives up a slot (a connect failed, or a connection was discarded).
    pub(crate) fn release(&self, origin: &Origin) {
        let mut shared = self.lock();
        let st = state_of!(shared.origins, origin);
        st.open = st.open.saturating_sub(1);
        wake_one(st);
    }

    /// (open, idle) connections for `origin`.
    pub(crate) fn counts(&self, origin: &Origin) -> (usize, usize) {
        self.lock()
            .origins
            .get(origin)
            .map_or((0, 0), |st| (st.open, st.idle.len()))
    }

    /// Closes idle connections past their limit, forgets origins with
    /// nothing open, and if more than `max_origins` remain, closes the idle
    /// connections of those used least recently (busy origins stay).
    /// Returns the connections closed.
    pub(crate) fn sweep(&self, max_origins: usize) -> usize {
        let mut shared = self.lock();
        let map = &mut shared.origins;
        let now = Instant::now();
        let mut closed = 0;
        map.retain(|_, st| {
            let learned = st.learned_close;
            let before = st.idle.len();
            st.idle.retain_mut(|idle| {
                let keep = now.duration_since(idle.since) < self.idle_limit(learned, &idle.conn);
                if !keep {
                    idle.conn.stream.close_quietly();
                }
                keep
            });
            let gone = before - st.idle.len();
            st.open -= gone;
            closed += gone;
            st.open > 0 || !st.waiters.is_empty()
        });
        if map.len() > max_origins {
            // Only origins whose open connections are all idle can go.
            let mut idle_only: Vec<(Instant, Origin)> = map
                .iter()
                .filter(|(_, st)| st.open == st.idle.len() && st.waiters.is_empty())
                .map(|(o, st)| {
                    (
                        st.idle.iter().map(|i| i.since).max().unwrap_or(now),
                        o.clone(),
                    )
                })
                .collect();
            idle_only.sort_unstable_by_key(|(since, _)| *since);
            let excess = map.len() - max_origins;
            for (_, origin) in idle_only.into_iter().take(excess) {
                if let Some(mut st) = map.remove(&origin) {
                    for idle in &mut st.idle {
                        idle.conn.stream.close_quietly();
                    }
                    closed += st.idle.len();
                }
            }
        }
        closed
    }

    /// Whether the pool has state for `origin`.
    pub(crate) fn knows(&self, origin: &Origin) -> bool {
        self.lock().origins.contains_key(origin)
    }

    /// The server's idle timeout as learned from closes seen, if any.
    pub(crate) fn learned_close(&self, origin: &Origin) -> Option<Duration> {
        self.lock()
            .origins
            .get(origin)
            .and_then(|st| st.learned_close)
    }
}

impl Drop for Pool {
    /// The client is going away: idle TLS connections end with
    /// `close_notify`, so servers see a close, not a truncation.
    fn drop(&mut self) {
        let shared = self.shared.get_mut().unwrap_or_else(|e| e.into_inner());
        for st in shared.origins.values_mut() {
            for idle in &mut st.idle {
                idle.conn.stream.close_quietly();
            }
        }
    }
}

fn wake_one(st: &mut OriginState) {
    while let Some(w) = st.waiters.pop_front() {
        if w.send(()).is_ok() {
            return;
        }
    }
}

/// A checked-out pool slot, released on drop unless disarmed.
pub(crate) struct SlotGuard<'a> {
    pub(crate) pool: &'a Pool,
    pub(crate) origin: &'a Origin,
    pub(crate) armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(self.origin);
        }
    }
}
