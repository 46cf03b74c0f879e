//! Real-time delivery four ways (R9.4): one event source offered by short
//! polling, long polling, streaming (Server-Sent Events) and WebSocket.
//!
//! The chapter compares the four techniques by what they cost and how late
//! an event arrives. A fair comparison needs the *same* events behind each
//! one, so there is one [`Events`] source: a ticker at a configurable rate
//! (or events published on demand with [`Events::publish`], for scripted
//! event times), numbered with a monotonically increasing id, stamped with
//! the time they were published, and kept in a bounded history ring so that
//! a client can ask for "everything after id N". `keepwire serve` offers it
//! on its demo site and the lab (`experiments::realtime`) measures it:
//!
//! | path | technique | answers |
//! |------|-----------|---------|
//! | `/poll?since=ID` | short polling | at once, JSON, the events after `ID` |
//! | `/long-poll?since=ID&timeout=S` | long polling | when an event after `ID` exists, or empty after the timeout |
//! | `/events` | streaming | `text/event-stream`, one SSE event per event, `Last-Event-ID` resumes |
//! | `/ws` | WebSocket | events out as text frames, and an echo of what the client sends |
//!
//! `/realtime` is a browser view of the four side by side (plain JS: a
//! `setInterval` poll, a long-poll loop, `EventSource`, `WebSocket`), each
//! column with its latest events and their delay; `/realtime-selftest`
//! exchanges a message over `/ws`, receives an event over `/events` and
//! `/ws`, and writes PASS or FAIL into its DOM for a headless browser (its
//! `load` event waits for the exchange, so `--dump-dom` sees the outcome).
//!
//! Bounds: the history keeps [`Config::history`] events (at most
//! [`MAX_HISTORY`]); a poll answer holds at most that many. A long poll is
//! held at most [`Config::max_long_poll`] (the client's `timeout` is capped
//! to it). Held long polls, streams and WebSockets are connections, counted
//! against the server's `max_connections`. Each is released when the server
//! drops the request (an HTTP/2 client's `RST_STREAM`, a connection error,
//! shutdown) or an HTTP/1 client leaves (FIN or RST while its answer is
//! owed: the request's [`keepwire::server::PeerGone`] fires). A long poll
//! whose client left then answers at once with what there is (a client
//! that only half-closed, R8.4, reads that answer); a stream ends.
//!
//! A poll answer is `{"last_id":N,"events":[{"id":1,"t":1733550000123.456,"data":"tick 1"},...]}`:
//! `t` is the publication time in Unix milliseconds (for measuring delivery
//! delay), `last_id` the cursor to pass as the next `since`.

mod sse;
mod ws;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use keepwire::Body;
use tokio::sync::watch;

use crate::reply::{status, with_type};

/// The largest history a source keeps ([`Config::history`] is capped to it).
pub const MAX_HISTORY: usize = 65_536;

/// The fastest ticker ([`Config::events_per_s`] is capped to it).
pub const MAX_EVENTS_PER_S: f64 = 10_000.0;

/// Settings of an [`Events`] source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Ticker rate; 0 = no ticker, events only by [`Events::publish`].
    /// Default 1; capped to [`MAX_EVENTS_PER_S`].
    pub events_per_s: f64,
    /// Events kept for `since` and `Last-Event-ID`. Default 1024; 1 to
    /// [`MAX_HISTORY`].
    pub history: usize,
    /// The longest a long poll is held, and its timeout when the client
    /// names none. Default 30 s (below the usual 60 s proxy read timeout).
    pub max_long_poll: Duration,
    /// A stream with nothing to say sends an SSE comment this often, so
    /// that proxies and clients see it is alive and a vanished client is
    /// noticed. Default 15 s.
    pub heartbeat: Duration,
    /// The reconnection delay an SSE stream asks for (`retry:`). Default 2 s.
    pub retry: Duration,
    /// `/ws`'s sockets: caps, pings and dead-peer timeout, idle timeout
    /// (`keepwire::ws::Config`'s defaults).
    pub websocket: keepwire::ws::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            events_per_s: 1.0,
            history: 1024,
            max_long_poll: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            websocket: keepwire::ws::Config::default(),
        }
    }
}

impl Config {
    /// The default settings with a ticker of `events_per_s` (0: none).
    pub fn with_rate(events_per_s: f64) -> Self {
        Config {
            events_per_s,
            ..Config::default()
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// 1, 2, 3, ... in publication order.
    pub id: u64,
    /// When it was published.
    pub at: SystemTime,
    /// Its payload.
    pub data: String,
    /// `{"id":..,"t":..,"data":..}`, made once for every subscriber.
    json: Bytes,
}

impl Event {
    /// The event as JSON: `{"id":N,"t":UNIX_MS,"data":"..."}`.
    pub fn json(&self) -> &Bytes {
        &self.json
    }
}

/// Unix time in milliseconds, to the microsecond.
pub fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_micros() as f64) / 1000.0)
}

/// What a source holds open right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Held {
    /// Long polls waiting for an event.
    pub long_polls: usize,
    /// Open SSE streams.
    pub streams: usize,
    /// Open WebSockets.
    pub websockets: usize,
}

/// The event source; cheap to clone (clones share the events).
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    ring: Mutex<Ring>,
    /// The id of the newest event (0: none yet); waiters watch it.
    last: watch::Sender<u64>,
    ticker: AtomicBool,
    /// [`Events::close`] was called: streams end, waits return.
    closed: AtomicBool,
    long_polls: Arc<AtomicUsize>,
    streams: Arc<AtomicUsize>,
    websockets: Arc<AtomicUsize>,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    next_id: u64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("config", &self.inner.config)
            .field("last_id", &self.last_id())
            .finish()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new(Config::default())
    }
}

impl Events {
    /// A source with `config`. Its ticker (if any) starts on the first
    /// request it handles or on [`Events::start`], in that runtime.
    pub fn new(mut config: Config) -> Self {
        config.history = config.history.clamp(1, MAX_HISTORY);
        config.events_per_s = if config.events_per_s.is_finite() {
            config.events_per_s.clamp(0.0, MAX_EVENTS_PER_S)
        } else {
            0.0
        };
        let history = config.history;
        Events {
            inner: Arc::new(Inner {
                config,
                ring: Mutex::new(Ring {
                    events: VecDeque::with_capacity(history.min(1024)),
                    next_id: 1,
                }),
                last: watch::Sender::new(0),
                ticker: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                long_polls: Arc::default(),
                streams: Arc::default(),
                websockets: Arc::default(),
            }),
        }
    }

    /// The settings, after capping.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Starts the ticker (idempotent; nothing without a rate). Must be
    /// called inside a tokio runtime; the ticker ends with the last clone.
    pub fn start(&self) {
        let rate = self.inner.config.events_per_s;
        if rate <= 0.0 || self.inner.ticker.swap(true, Relaxed) {
            return;
        }
        let period = Duration::from_secs_f64(1.0 / rate);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(tick(weak, period));
    }

    /// Publishes an event now and wakes every waiter; returns it.
    pub fn publish(&self, data: impl Into<String>) -> Arc<Event> {
        let data = data.into();
        let at = SystemTime::now();
        let event = {
            let mut ring = self.inner.ring.lock().expect("ring lock");
            let id = ring.next_id;
            ring.next_id += 1;
            let text = serde_json::Value::from(data.as_str());
            let json = format!("{{\"id\":{id},\"t\":{:.3},\"data\":{text}}}", unix_ms(at));
            let event = Arc::new(Event {
                id,
                at,
                data,
                json: Bytes::from(json),
            });
            if ring.events.len() == self.inner.config.history {
                ring.events.pop_front();
            }
            ring.events.push_back(event.clone());
            event
        };
        self.inner.last.send_replace(event.id);
        event
    }

    /// The newest event's id (0 before the first).
    pub fn last_id(&self) -> u64 {
        *self.inner.last.borrow()
    }

    /// The events after id `since` still in the history, oldest first.
    pub fn since(&self, since: u64) -> Vec<Arc<Event>> {
        let ring = self.inner.ring.lock().expect("ring lock");
        let Some(first) = ring.events.front().map(|e| e.id) else {
            return Vec::new();
        };
        let skip = usize::try_from((since + 1).saturating_sub(first)).unwrap_or(usize::MAX);
        ring.events.iter().skip(skip).cloned().collect()
    }

    /// The events after `since`, waiting up to `timeout` for the first one
    /// (empty if none came). Cancel-safe: dropping it releases the wait.
    pub async fn wait_since(&self, since: u64, timeout: Duration) -> Vec<Arc<Event>> {
        let mut rx = self.subscribe();
        let now = self.since(since);
        if !now.is_empty() {
            return now;
        }
        let _held = Count::new(&self.inner.long_polls);
        let closed = &self.inner.closed;
        let news = rx.wait_for(|last| *last > since || closed.load(Relaxed));
        let _ = tokio::time::timeout(timeout, news).await;
        self.since(since)
    }

    /// Ends what is held, for a graceful shutdown: SSE streams end (after
    /// the events they owe), held long polls answer, WebSockets close
    /// with 1001 (going away); later requests get the same. Without it a
    /// server's graceful shutdown waits its whole timeout for responses
    /// that never end.
    pub fn close(&self) {
        self.inner.closed.store(true, Relaxed);
        self.inner.last.send_modify(|_| {});
    }

    /// Whether [`Events::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Relaxed)
    }

    /// A receiver of the newest event's id, for waiting on new events.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.last.subscribe()
    }

    /// What is held open right now.
    pub fn held(&self) -> Held {
        Held {
            long_polls: self.inner.long_polls.load(Relaxed),
            streams: self.inner.streams.load(Relaxed),
            websockets: self.inner.websockets.load(Relaxed),
        }
    }

    /// Whether [`Events::handle`] answers `path`.
    pub fn serves(path: &str) -> bool {
        matches!(
            path,
            "/poll" | "/long-poll" | "/events" | "/ws" | "/realtime" | "/realtime-selftest"
        )
    }

    /// Answers a request for one of the paths in the module docs (404 for
    /// others). Starts the ticker.
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        self.start();
        let path = req.uri().path();
        if !Events::serves(path) {
            return status(StatusCode::NOT_FOUND);
        }
        if path == "/ws" {
            // A GET with Upgrade, or an RFC 8441 CONNECT over HTTP/2.
            return ws::response(self, req);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let query = req.uri().query().unwrap_or("");
        let since = query_param(query, "since").and_then(|v| v.parse::<u64>().ok());
        match path {
            "/realtime-selftest" => return page(SELFTEST),
            "/realtime" => return page(DEMO),
            _ => {}
        }
        match path {
            "/poll" => self.answer(since.unwrap_or_else(|| self.last_id()), Vec::new()),
            "/long-poll" => {
                let since = since.unwrap_or_else(|| self.last_id());
                let max = self.inner.config.max_long_poll;
                let timeout = query_param(query, "timeout")
                    .and_then(parse_seconds)
                    .map_or(max, |t| t.min(max));
                let gone = keepwire::server::PeerGone::of(&req);
                let events = tokio::select! {
                    e = self.wait_since(since, timeout) => e,
                    () = gone.wait() => Vec::new(),
                };
                self.answer(since, events)
            }
            _ => sse::response(self, &req),
        }
    }

    /// A poll answer: `events` (or, if empty, what is there after `since`).
    fn answer(&self, since: u64, mut events: Vec<Arc<Event>>) -> Response<Body> {
        if events.is_empty() {
            events = self.since(since);
        }
        // A cursor from the future (a server that restarted) starts over
        // at the present.
        let last_id = events
            .last()
            .map_or_else(|| since.min(self.last_id()), |e| e.id);
        let mut body = format!("{{\"last_id\":{last_id},\"events\":[").into_bytes();
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&e.json);
        }
        body.extend_from_slice(b"]}\n");
        let mut r = with_type(Body::from(body), "application/json");
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// The value of `name=value` in a query string.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The browser view of the four techniques side by side (`/realtime`).
const DEMO: &str = include_str!("demo.html");

/// A page that exchanges messages over `/ws` and `/events` and writes the
/// outcome into its DOM, for a headless browser (`/realtime-selftest`).
const SELFTEST: &str = include_str!("selftest.html");

fn page(html: &'static str) -> Response<Body> {
    let mut r = with_type(Body::from(html), "text/html; charset=utf-8");
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `2`, `0.5` (seconds) or `300ms`.
fn parse_seconds(v: &str) -> Option<Duration> {
    let d = match v.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().ok()? / 1000.0,
        None => v.strip_suffix('s').unwrap_or(v).parse::<f64>().ok()?,
    };
    (d.is_finite() && d >= 0.0).then(|| Duration::from_secs_f64(d.min(86_400.0)))
}

/// The ticker: an event every `period` while the source lives.
async fn tick(weak: Weak<Inner>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let events = Events { inner };
        let next = events.last_id() + 1;
        events.publish(format!("tick {next}"));
    }
}

/// Counts something held while it lives.
struct Count(Arc<AtomicUsize>);

impl Count {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Relaxed);
        Count(n.clone())
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
