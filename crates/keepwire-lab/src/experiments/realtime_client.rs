//! The real-time experiment's clients, one per technique, each timing when
//! every event reached it and when it sent every request.
//!
//! Polling, long polling and streaming use the raw client (`raw.rs`): each
//! request is written as the experiment chooses, and each body piece is
//! timed the moment the socket delivered it, which a pooled client's
//! buffering would blur. The WebSocket client is keepwire's own
//! (`keepwire::ws`), its handshake sent before the run starts.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use keepwire::proto::SseParser;

use super::raw::RawConn;

/// A technique, as the client runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Technique {
    /// A poll every interval on one persistent connection.
    Poll(Duration),
    /// Requests the server holds up to the given time, one after another.
    LongPoll(Duration),
    /// One Server-Sent Events response.
    Sse,
    /// One WebSocket.
    WebSocket,
}

impl Technique {
    /// Its name in the tables.
    pub(super) fn name(self) -> String {
        match self {
            Technique::Poll(i) => format!("polling {} s", i.as_secs_f64()),
            Technique::LongPoll(_) => "long polling".into(),
            Technique::Sse => "SSE".into(),
            Technique::WebSocket => "WebSocket".into(),
        }
    }
}

/// What a client saw in one run.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// When each request left (a WebSocket's: its handshake).
    pub requests: Vec<Instant>,
    /// Event ids with the moment each arrived.
    pub arrivals: Vec<(u64, Instant)>,
    /// Request head and response head of the first exchange.
    pub heads: (usize, usize),
    /// Response heads received.
    pub responses: usize,
    /// Body (or message) bytes received.
    pub body_bytes: u64,
    /// Why the client stopped early, if it did.
    pub error: Option<String>,
}

/// Runs technique `t` against the event source at `addr`: connects at
/// once, sends its first request at `t0`, stops at `end`.
pub(super) async fn run(t: Technique, addr: SocketAddr, t0: Instant, end: Instant) -> Seen {
    let mut seen = Seen::default();
    let result = match t {
        Technique::Poll(interval) => poll(&mut seen, addr, interval, t0, end).await,
        Technique::LongPoll(hold) => long_poll(&mut seen, addr, hold, t0, end).await,
        Technique::Sse => sse(&mut seen, addr, t0, end).await,
        Technique::WebSocket => websocket(&mut seen, addr, end).await,
    };
    if let Err(e) = result {
        seen.error = Some(e);
    }
    seen
}

fn request(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: lab\r\n\r\n")
}

/// Sends `req` on `c`, recording when and its size.
async fn send(seen: &mut Seen, c: &mut RawConn, req: &str) -> Result<(), String> {
    seen.requests.push(Instant::now());
    if seen.requests.len() == 1 {
        seen.heads.0 = req.len();
    }
    c.stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Reads one whole response and takes its events; `Ok(false)`: `end` came
/// first.
async fn exchange(
    seen: &mut Seen,
    c: &mut RawConn,
    req: &str,
    end: Instant,
    since: &mut u64,
) -> Result<bool, String> {
    send(seen, c, req).await?;
    let resp = match c
        .response(end.saturating_duration_since(Instant::now()))
        .await
    {
        Err(e) if e == "timeout" => return Ok(false),
        Err(e) => return Err(e),
        Ok(None) => return Err("the server closed the connection".into()),
        Ok(Some(r)) if r.status == 200 => r,
        Ok(Some(r)) => {
            let text = String::from_utf8_lossy(&r.data);
            return Err(format!("status {}: {}", r.status, text.trim()));
        }
    };
    // The kernel's receive time: the link's delivery, not this thread's
    // wake-up (a busy machine delays the latter by milliseconds).
    let now = c.arrived.unwrap_or_else(Instant::now);
    seen.responses += 1;
    if seen.heads.1 == 0 {
        seen.heads.1 = resp.head_len;
    }
    seen.body_bytes += resp.body;
    let (last, ids) = poll_answer(&resp.data)?;
    *since = last;
    seen.arrivals.extend(ids.into_iter().map(|id| (id, now)));
    Ok(true)
}

async fn poll(
    seen: &mut Seen,
    addr: SocketAddr,
    interval: Duration,
    t0: Instant,
    end: Instant,
) -> Result<(), String> {
    let mut c = RawConn::connect(addr, true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut since = 0;
    for k in 0u32.. {
        let at = t0 + interval * k;
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let req = request(&format!("/poll?since={since}"));
        if !exchange(seen, &mut c, &req, end, &mut since).await? {
            break;
        }
    }
    Ok(())
}

async fn long_poll(
    seen: &mut Seen,
    addr: SocketAddr,
    hold: Duration,
    t0: Instant,
    end: Instant,
) -> Result<(), String> {
    let mut c = RawConn::connect(addr, true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::time::sleep_until(t0).await;
    let mut since = 0;
    while Instant::now() < end {
        let req = request(&format!(
            "/long-poll?since={since}&timeout={}ms",
            hold.as_millis()
        ));
        if !exchange(seen, &mut c, &req, end, &mut since).await? {
            break;
        }
    }
    Ok(())
}

async fn sse(seen: &mut Seen, addr: SocketAddr, t0: Instant, end: Instant) -> Result<(), String> {
    let mut c = RawConn::connect(addr, true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::time::sleep_until(t0).await;
    send(seen, &mut c, &request("/events")).await?;
    let (skim, mut decoder) = match c.head(end).await {
        Err(e) if e == "timeout" => return Err("no response head before the end".into()),
        Err(e) => return Err(e),
        Ok(None) => return Err("the server closed the connection".into()),
        Ok(Some(h)) if h.0.status == 200 => h,
        Ok(Some(h)) => return Err(format!("status {}", h.0.status)),
    };
    seen.heads.1 = skim.head_len;
    seen.responses += 1;
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    loop {
        match c.data(&mut decoder, end).await {
            Err(e) if e == "timeout" => return Ok(()),
            Err(e) => return Err(e),
            Ok(None) => return Ok(()),
            Ok(Some(chunk)) => {
                let now = c.arrived.unwrap_or_else(Instant::now);
                seen.body_bytes += chunk.len() as u64;
                parser
                    .feed(&chunk, &mut events)
                    .map_err(|e| e.to_string())?;
                for e in events.drain(..) {
                    let id = e.id.parse().map_err(|_| format!("event id {:?}", e.id))?;
                    seen.arrivals.push((id, now));
                }
            }
        }
    }
}

/// One WebSocket from keepwire's client: the handshake at once (before
/// `t0`), then every text message is an event (the source's JSON).
async fn websocket(seen: &mut Seen, addr: SocketAddr, end: Instant) -> Result<(), String> {
    use keepwire::ws::{self, Message};
    let client = keepwire::Client::new(keepwire::ClientConfig::default());
    seen.requests.push(Instant::now());
    let (mut socket, shake) = ws::connect(
        &client,
        &format!("ws://{addr}/ws"),
        http::HeaderMap::new(),
        ws::Config::default(),
    )
    .await
    .map_err(|e| format!("WebSocket handshake: {e}"))?;
    // The heads as keepwire wrote and read them: start line, fields, CRLF.
    let fields = |h: &http::HeaderMap| {
        h.iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
    };
    let path = shake.uri.path_and_query().map_or("/", |p| p.as_str());
    seen.heads = (
        format!("GET {path} HTTP/1.1\r\n").len() + fields(&shake.request_headers) + 2,
        format!("HTTP/1.1 {}\r\n", shake.status).len() + fields(&shake.response_headers) + 2,
    );
    seen.responses = 1;
    loop {
        let msg = match tokio::time::timeout_at(end, socket.recv()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => return Err(format!("WebSocket: {e}")),
            Ok(Some(Ok(m))) => m,
        };
        let now = Instant::now();
        if let Message::Text(text) = msg {
            seen.body_bytes += text.len() as u64;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("WebSocket event: {e}"))?;
            let id = v["id"].as_u64().ok_or("a WebSocket event without id")?;
            seen.arrivals.push((id, now));
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(1000, "done")).await;
    Ok(())
}

/// A poll answer (`{"last_id":N,"events":[{"id":..},...]}`, the event
/// source's JSON): the cursor and the event ids.
pub(super) fn poll_answer(body: &[u8]) -> Result<(u64, Vec<u64>), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("poll answer: {e}"))?;
    let last = v["last_id"].as_u64().ok_or("poll answer without last_id")?;
    let ids = v["events"]
        .as_array()
        .ok_or("poll answer without events")?
        .iter()
        .map(|e| e["id"].as_u64().ok_or("an event without id"))
        .collect::<Result<_, _>>()?;
    Ok((last, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_answers_give_the_cursor_and_the_ids() {
        let body =
            br#"{"last_id":7,"events":[{"id":6,"t":1.5,"data":"a"},{"id":7,"t":2.0,"data":"b"}]}"#;
        assert_eq!(poll_answer(body), Ok((7, vec![6, 7])));
        assert_eq!(
            poll_answer(br#"{"last_id":3,"events":[]}"#),
            Ok((3, vec![]))
        );
        assert!(poll_answer(b"{}").is_err());
    }
}
