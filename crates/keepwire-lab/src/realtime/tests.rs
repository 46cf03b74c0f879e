//! The four ways against a real keepwire server on loopback, over raw
//! sockets: what a client sends and reads, byte for byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keepwire::{Body, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

fn serve(events: &Events) -> (keepwire::server::ServerHandle, SocketAddr) {
    let events = events.clone();
    let server = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap()
        .spawn(move |req: Request<Body>| {
            let events = events.clone();
            async move { events.handle(req).await }
        });
    let addr = server.local_addr();
    (server, addr)
}

fn source(history: usize) -> Events {
    let mut c = Config::with_rate(0.0);
    c.history = history;
    c.max_long_poll = Duration::from_secs(5);
    c.heartbeat = Duration::from_millis(200);
    Events::new(c)
}

async fn send(addr: SocketAddr, path: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Reads until `want` is in what was read (bounded by 5 s).
async fn read_until(s: &mut TcpStream, seen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains(want) {
        let mut buf = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            other => panic!("waiting for {want:?}: {other:?}; read {seen:?}"),
        }
    }
}

/// The body of a whole (Content-Length) response on a `Connection: close` request.
async fn get(addr: SocketAddr, path: &str) -> (String, serde_json::Value) {
    let mut s = send(addr, path, "Connection: close\r\n").await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (text, json)
}

fn ids(json: &serde_json::Value) -> Vec<u64> {
    json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn poll_answers_at_once_with_the_events_after_the_cursor() {
    let events = source(16);
    let (_server, addr) = serve(&events);
    for _ in 0..3 {
        events.publish("x");
    }
    let (head, json) = get(addr, "/poll?since=1").await;
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert_eq!(ids(&json), [2, 3]);
    assert_eq!(json["last_id"], 3);
    assert_eq!(json["events"][0]["data"], "x");
    assert!(json["events"][0]["t"].as_f64().unwrap() > 1.6e12);
    // No cursor: just the cursor to start from.
    let (_, json) = get(addr, "/poll").await;
    assert_eq!((ids(&json).len(), json["last_id"].as_u64()), (0, Some(3)));
    // A cursor from a server that restarted starts over at the present.
    let (_, json) = get(addr, "/poll?since=99").await;
    assert_eq!((ids(&json).len(), json["last_id"].as_u64()), (0, Some(3)));
    let (head, _) = get(addr, "/nope").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[tokio::test]
async fn the_history_is_bounded() {
    let events = source(4);
    for _ in 0..10 {
        events.publish("x");
    }
    let kept: Vec<u64> = events.since(0).iter().map(|e| e.id).collect();
    assert_eq!(kept, [7, 8, 9, 10]);
    assert_eq!(events.since(8).len(), 2);
    assert!(events.since(10).is_empty());
    let big = Events::new(Config {
        history: usize::MAX,
        ..Config::default()
    });
    assert_eq!(big.config().history, MAX_HISTORY);
}

#[tokio::test]
async fn long_poll_is_held_until_an_event() {
    let events = source(16);
    let (_server, addr) = serve(&events);
    events.publish("old");
    let started = Instant::now();
    let poll = tokio::spawn(async move { get(addr, "/long-poll?since=1&timeout=5").await });
    eventually("the long poll is held", || events.held().long_polls == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!poll.is_finished(), "answered without an event");
    events.publish("news");
    let (_, json) = poll.await.unwrap();
    assert_eq!(ids(&json), [2]);
    assert_eq!(json["events"][0]["data"], "news");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(events.held().long_polls, 0);
    // An event already there answers at once.
    let (_, json) = get(addr, "/long-poll?since=0").await;
    assert_eq!(ids(&json), [1, 2]);
}

#[tokio::test]
async fn long_poll_timeout_answers_empty_and_is_capped() {
    let mut c = Config::with_rate(0.0);
    c.max_long_poll = Duration::from_millis(400);
    let events = Events::new(c);
    let (_server, addr) = serve(&events);
    let started = Instant::now();
    let (head, json) = get(addr, "/long-poll?timeout=150ms").await;
    let took = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!((ids(&json).len(), json["last_id"].as_u64()), (0, Some(0)));
    assert!(took >= Duration::from_millis(150), "{took:?}");
    // Asking for an hour gets the server's bound.
    let started = Instant::now();
    let (_, json) = get(addr, "/long-poll?timeout=3600").await;
    let took = started.elapsed();
    assert!(ids(&json).is_empty());
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// A client that goes away releases its long poll as soon as the server
/// drops the request: an HTTP/2 client's RST_STREAM does it at once.
#[tokio::test]
async fn an_http2_client_that_cancels_releases_its_long_poll() {
    let events = source(16);
    let (_server, addr) = serve(&events);
    let mut config = keepwire::ClientConfig::default();
    config.http2_prior_knowledge = true;
    let client = keepwire::Client::new(config);
    let url = format!("http://{addr}/long-poll?timeout=30");
    let req = Request::get(url).body(Body::empty()).unwrap();
    let poll = tokio::spawn(async move { client.request(req).await.map(|r| r.version()) });
    eventually("the long poll is held", || events.held().long_polls == 1).await;
    poll.abort();
    let cancelled = Instant::now();
    eventually("the cancelled long poll is released", || {
        events.held().long_polls == 0
    })
    .await;
    assert!(cancelled.elapsed() < Duration::from_secs(2));
}

/// Over HTTP/1.1 the server watches the socket while it owes a response:
/// a client that leaves (FIN, or RST) releases its long poll at once (the
/// poll is held up to 5 s here); one that only half-closed (R8.4) still
/// reads the answer, given early with what there is.
#[tokio::test]
async fn an_http1_client_that_leaves_releases_its_long_poll() {
    let events = source(16);
    let (_server, addr) = serve(&events);
    for how in ["fin", "rst", "half-close"] {
        let mut s = send(addr, "/long-poll?timeout=30", "").await;
        eventually("the long poll is held", || events.held().long_polls == 1).await;
        let left = Instant::now();
        match how {
            "fin" => drop(s),
            "rst" => {
                keepwire::net::set_abortive_close(&s).unwrap();
                drop(s);
            }
            _ => {
                s.shutdown().await.unwrap();
                let mut seen = String::new();
                read_until(&mut s, &mut seen, "\"events\":[]").await;
            }
        }
        eventually("the long poll is released", || {
            events.held().long_polls == 0
        })
        .await;
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "{how}: {:?}",
            left.elapsed()
        );
    }
    // A quick answer to a half-closed client is whole, as before.
    let mut s = send(addr, "/poll", "").await;
    s.shutdown().await.unwrap();
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "\"events\":[]").await;
}

/// An SSE client that leaves while nothing is published ends its stream
/// without waiting for a write to fail.
#[tokio::test]
async fn an_http1_sse_client_that_leaves_ends_its_stream() {
    let mut c = Config::with_rate(0.0);
    c.heartbeat = Duration::from_secs(30);
    let events = Events::new(c);
    let (_server, addr) = serve(&events);
    let mut s = send(addr, "/events", "").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "retry: ").await;
    eventually("the stream opens", || events.held().streams == 1).await;
    let left = Instant::now();
    drop(s);
    eventually("the stream ends", || events.held().streams == 0).await;
    assert!(
        left.elapsed() < Duration::from_secs(2),
        "{:?}",
        left.elapsed()
    );
}

#[tokio::test]
async fn sse_streams_each_event_as_published_and_resumes() {
    let events = source(16);
    let (_server, addr) = serve(&events);
    let mut s = send(addr, "/events", "").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "retry: 2000\n").await;
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert!(seen.contains("cache-control: no-cache"), "{seen}");
    for n in 1..=3 {
        events.publish(format!("e{n}"));
        // Each arrives before the next is published.
        read_until(&mut s, &mut seen, &format!("id: {n}\ndata: {{")).await;
        read_until(&mut s, &mut seen, &format!("\"data\":\"e{n}\"}}\n\n")).await;
    }
    // Idle: a comment heartbeat.
    read_until(&mut s, &mut seen, ": heartbeat\n\n").await;
    drop(s);
    // Missed 4 and 5 while away: Last-Event-ID gives them back first.
    events.publish("e4");
    events.publish("e5");
    let mut s = send(addr, "/events", "Last-Event-ID: 3\r\n").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "\"data\":\"e5\"}\n\n").await;
    assert!(
        seen.contains("id: 4\n") && !seen.contains("id: 3\n"),
        "{seen}"
    );
    eventually("the first stream is released", || {
        events.held().streams == 1
    })
    .await;
    drop(s);
    eventually("the second stream is released", || {
        events.held().streams == 0
    })
    .await;
}

#[tokio::test]
async fn sse_says_when_the_history_lost_events() {
    let events = source(2);
    for _ in 0..5 {
        events.publish("x");
    }
    let (_server, addr) = serve(&events);
    let mut s = send(addr, "/events", "Last-Event-ID: 1\r\n").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "id: 5\n").await;
    assert!(seen.contains(": 2 events missed\n\n"), "{seen}");
    assert!(!seen.contains("id: 3\n"), "{seen}");
}

#[tokio::test]
async fn the_ticker_publishes_at_its_rate_and_only_get_is_allowed() {
    let events = Events::new(Config::with_rate(50.0));
    let (_server, addr) = serve(&events);
    let (head, _) = get(addr, "/poll").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, json) = get(addr, "/long-poll?since=0").await;
    assert_eq!(json["events"][0]["data"], "tick 1");
    eventually("ticks go on", || events.last_id() >= 3).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /poll HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 405") && out.contains("allow: GET, HEAD"),
        "{out}"
    );
}

/// A client that opens a stream and never reads: the socket fills, the
/// server's write timeout ends the connection, and the stream is released
/// (memory stays bounded by the socket buffers and one batch).
#[tokio::test]
async fn a_stream_whose_client_never_reads_is_released_by_the_write_timeout() {
    let events = source(64);
    let server = {
        let events = events.clone();
        Server::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .configure(|c| c.write_timeout = Duration::from_millis(300))
            .bind()
            .unwrap()
            .spawn(move |req: Request<Body>| {
                let events = events.clone();
                async move { events.handle(req).await }
            })
    };
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(server.local_addr()).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    eventually("the stream opens", || events.held().streams == 1).await;
    let big = "x".repeat(64 * 1024);
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.held().streams == 1 {
        assert!(Instant::now() < deadline, "a stalled stream is held");
        events.publish(big.clone());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(s);
}

/// The next data message on `ws` (bounded by 5 s).
async fn next_text(ws: &mut keepwire::ws::WebSocket) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.recv())
            .await
            .expect("a message within 5 s");
        match m {
            Some(Ok(keepwire::ws::Message::Text(t))) => return t,
            Some(Ok(keepwire::ws::Message::Ping(_) | keepwire::ws::Message::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_sends_events_and_echoes_what_the_client_sends() {
    use keepwire::ws::{self, Message};
    let events = source(16);
    let (_server, addr) = serve(&events);
    events.publish("before");
    let client = keepwire::Client::default();
    let (mut socket, shake) = ws::connect(
        &client,
        &format!("ws://{addr}/ws?since=0"),
        http::HeaderMap::new(),
        ws::Config::default(),
    )
    .await
    .unwrap();
    assert!(shake.accept_checked);
    // `since=0`: the history first.
    let first: serde_json::Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
    assert_eq!(
        (first["id"].as_u64(), first["data"].as_str()),
        (Some(1), Some("before"))
    );
    eventually("the socket is counted", || events.held().websockets == 1).await;
    for n in 2..=4u64 {
        events.publish(format!("e{n}"));
        let e: serde_json::Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
        assert_eq!(e["id"].as_u64(), Some(n));
        socket
            .send(Message::Text(format!("hello {n}")))
            .await
            .unwrap();
        assert_eq!(next_text(&mut socket).await, format!("hello {n}"));
    }
    socket
        .send(Message::Binary(bytes::Bytes::from_static(b"\x00\x01")))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), socket.recv()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(&b[..], b"\x00\x01"),
        other => panic!("binary echo: {other:?}"),
    }
    socket.close(1000, "done").await.unwrap();
    eventually("the socket is released", || events.held().websockets == 0).await;

    // A plain GET is told what to upgrade to.
    let (head, _) = get(addr, "/ws").await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
}

/// `close` (a graceful shutdown) ends what never ends by itself.
#[tokio::test]
async fn close_ends_streams_long_polls_and_websockets() {
    use keepwire::ws::{self, Message};
    let events = source(16);
    let (_server, addr) = serve(&events);
    let mut stream = send(addr, "/events", "").await;
    let poll = tokio::spawn(async move { get(addr, "/long-poll?timeout=30").await });
    let client = keepwire::Client::default();
    let url = format!("ws://{addr}/ws");
    let (mut socket, _) = ws::connect(&client, &url, http::HeaderMap::new(), ws::Config::default())
        .await
        .unwrap();
    eventually("all three are held", || {
        let h = events.held();
        (h.streams, h.long_polls, h.websockets) == (1, 1, 1)
    })
    .await;
    events.close();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "\r\n0\r\n\r\n").await;
    let (_, json) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long poll answered")
        .unwrap();
    assert_eq!(json["events"], serde_json::json!([]));
    match tokio::time::timeout(Duration::from_secs(5), socket.recv()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(f.code, 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    eventually("everything is released", || {
        events.held() == Held::default()
    })
    .await;
}

#[tokio::test]
async fn the_browser_pages_are_served() {
    let events = source(4);
    let (_server, addr) = serve(&events);
    for (path, needle) in [
        ("/realtime", "new EventSource(\"/events\")"),
        ("/realtime-selftest", "<pre id=\"result\">pending</pre>"),
    ] {
        let (text, _) = get(addr, path).await;
        assert!(text.contains("content-type: text/html"), "{path}: {text}");
        assert!(text.contains(needle), "{path}");
    }
}

#[test]
fn timeouts_parse_in_seconds_or_milliseconds() {
    assert_eq!(parse_seconds("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_seconds("0.5"), Some(Duration::from_millis(500)));
    assert_eq!(parse_seconds("300ms"), Some(Duration::from_millis(300)));
    assert_eq!(parse_seconds("3s"), Some(Duration::from_secs(3)));
    assert_eq!(parse_seconds("-1"), None);
    assert_eq!(parse_seconds("NaN"), None);
    assert_eq!(parse_seconds("soon"), None);
}
