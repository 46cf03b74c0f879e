//! The Server-Sent Events worker (`keepwire bench --sse`): each connection
//! holds one `text/event-stream` response open and counts the events it
//! delivers.
//!
//! An event's latency is the delay between the time the server stamped in
//! it and its arrival here (the wall clock, so server and loader must share
//! one: loopback, or synchronised hosts). Events split with the proto
//! core's [`SseParser`]. When the server ends a stream, that counts as a
//! `closed` error and the connection reopens with `Last-Event-ID`, as an
//! `EventSource` does.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use keepwire_proto::{Event, RequestHead, SseEvent, SseParser};

use super::opening::Opened;
use super::report::nanos;
use super::{FailureKind, Worker};
use crate::net;

/// The stream an `--sse` run holds open on every connection.
#[derive(Debug, Clone)]
pub struct SseRequest {
    head: RequestHead,
}

impl SseRequest {
    /// A `GET url` with `headers`, asking for `text/event-stream`.
    pub fn new(url: &Uri, headers: &HeaderMap) -> Result<Self, String> {
        let mut head = super::request::request_head(&Method::GET, url, headers, Version::HTTP_11)?;
        head.headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        head.headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        Ok(SseRequest { head })
    }
}

/// How one stream ended.
enum Ended {
    /// The run is over.
    Done,
    /// The stream broke as this kind; reopen.
    Failed(FailureKind),
}

impl Worker {
    /// Streams one after another until the run ends.
    pub(super) async fn run_sse(&self, spec: &SseRequest) {
        let mut last_id = String::new();
        while self.shared.has_work() {
            let mut head = spec.head.clone();
            if let Ok(v) = HeaderValue::from_str(&last_id)
                && !last_id.is_empty()
            {
                head.headers.insert("last-event-id", v);
            }
            let failed = match self.open_exchange(&head).await {
                Ok(o) if is_event_stream(&o) => match self.sse_stream(o, &mut last_id).await {
                    Ended::Done => return,
                    Ended::Failed(kind) => kind,
                },
                Ok(_) => FailureKind::Refused,
                Err(kind) => kind,
            };
            // An attempt that failed counts as one unit of work, so a run
            // of `-n` events against a dead server ends.
            if self.shared.claim(1) == 1 {
                self.failed_open(failed).await;
            }
        }
    }

    /// Reads one stream's events until it ends or the run does.
    async fn sse_stream(&self, o: Opened, last_id: &mut String) -> Ended {
        let Opened {
            mut stream,
            mut conn,
            ..
        } = o;
        let timeout = self.shared.plan.timeout;
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut progress_at = Instant::now();
        let mut carried = 0;
        loop {
            // Everything buffered first: the head's read may carry events.
            loop {
                match conn.poll_event() {
                    Ok(Some(Event::Data(bytes))) => {
                        if parser.feed(&bytes, &mut events).is_err() {
                            return Ended::Failed(FailureKind::Parse);
                        }
                    }
                    Ok(Some(Event::End(_) | Event::Eof)) => {
                        return Ended::Failed(FailureKind::Closed);
                    }
                    Ok(Some(_)) | Err(_) => return Ended::Failed(FailureKind::Parse),
                    Ok(None) => break,
                }
            }
            let at = SystemTime::now();
            for ev in events.drain(..) {
                if self.shared.claim(1) == 0 {
                    return Ended::Done;
                }
                self.delivered(&ev, at, &mut carried);
            }
            *last_id = parser.last_event_id().to_string();
            if !self.shared.has_work() {
                return Ended::Done;
            }
            // Wake now and then to notice the end of the run: events may
            // be seconds apart.
            let give_up = progress_at + timeout;
            let wake = give_up.min(Instant::now() + Duration::from_millis(50));
            let buf = conn.read_buffer();
            buf.reserve(net::READ_CHUNK);
            let read = tokio::time::timeout_at(wake.into(), stream.read_available(buf)).await;
            match read {
                Ok(Ok(0)) => conn.handle_eof(),
                Ok(Ok(n)) => {
                    // Any bytes are progress: a heartbeat comment says the
                    // stream is alive between sparse events.
                    progress_at = Instant::now();
                    self.tally.borrow_mut().bytes_read += n as u64;
                }
                Ok(Err(e)) => return Ended::Failed(FailureKind::of_io(&e)),
                Err(_) if Instant::now() >= give_up => return Ended::Failed(FailureKind::Timeout),
                Err(_) => {}
            }
        }
    }

    /// One event arrived at `at`, the `carried`th on its connection.
    fn delivered(&self, ev: &SseEvent, at: SystemTime, carried: &mut u64) {
        *carried += 1;
        let mut t = self.tally.borrow_mut();
        t.max_per_conn = t.max_per_conn.max(*carried);
        t.sent += 1;
        t.responses += 1;
        if let Some(stamp) = event_time(&ev.data) {
            let late = at.duration_since(stamp).unwrap_or(Duration::ZERO);
            t.latency.saturating_record(nanos(late));
        }
        t.last_done = Some(Instant::now());
        self.progressed(1);
    }
}

/// A 200 carrying `text/event-stream`.
fn is_event_stream(o: &Opened) -> bool {
    o.head.status == http::StatusCode::OK
        && o.head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
            })
}

/// The send time an event carries in its data: a number after a JSON key
/// `"t"` (`keepwire serve`'s `/events`: `{"id":N,"t":UNIX_MS,"data":..}`),
/// `"ts"`, `"time"`, `"timestamp"` or `"sent"` (the first found in that
/// order), or after `ts=` in plain text; seconds, milliseconds,
/// microseconds or nanoseconds since the Unix epoch, told apart by size
/// (each is a date between 1973 and 5138 only in its own unit), with any
/// decimal fraction.
pub(super) fn event_time(data: &str) -> Option<SystemTime> {
    const KEYS: [&str; 6] = [
        "\"t\"",
        "\"ts\"",
        "\"time\"",
        "\"timestamp\"",
        "\"sent\"",
        "ts=",
    ];
    let value = |key: &str, at: usize| {
        let rest = &data[at + key.len()..];
        let rest = match rest.trim_start().strip_prefix(':') {
            Some(value) => value.trim_start(),
            None if key.ends_with('=') => rest,
            None => return None,
        };
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let n = digits(rest);
        let frac = rest[n..].strip_prefix('.').unwrap_or("");
        let whole: u64 = rest[..n].parse().ok()?;
        Some((whole, &frac[..digits(frac)]))
    };
    let (whole, frac) = KEYS
        .iter()
        .find_map(|key| data.match_indices(key).find_map(|(at, _)| value(key, at)))?;
    // Digits of a nanosecond count the whole part leaves for the fraction.
    let places = match whole {
        n if n < 100_000_000_000 => 9,
        n if n < 100_000_000_000_000 => 6,
        n if n < 100_000_000_000_000_000 => 3,
        _ => 0,
    };
    let mut nanos = u128::from(whole) * 10u128.pow(places);
    for (i, d) in frac.bytes().take(places as usize).enumerate() {
        nanos += u128::from(d - b'0') * 10u128.pow(places - 1 - i as u32);
    }
    let nanos = u64::try_from(nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_time_is_read_in_any_unit() {
        let at = |s: &str| event_time(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis());
        let ms = 1_765_000_000_123u128;
        assert_eq!(at(r#"{"id":4,"t":1765000000123.456,"data":"t"}"#), Some(ms));
        assert_eq!(at(r#"{"id":4,"data":"t","ts":1765000000123}"#), Some(ms));
        assert_eq!(at(r#"{"data":"t","t":1765000000123}"#), Some(ms));
        assert_eq!(at(r#"{"id":4, "time" : 1765000000.123}"#), Some(ms));
        assert_eq!(at(r#"{"timestamp":1765000000123000}"#), Some(ms));
        assert_eq!(at(r#"{"sent":1765000000123000000,"x":1}"#), Some(ms));
        assert_eq!(at("tick 4 ts=1765000000123"), Some(ms));
        assert_eq!(at(r#"{"id":4}"#), None);
        assert_eq!(at(r#"{"ts":"soon"}"#), None);
    }
}
