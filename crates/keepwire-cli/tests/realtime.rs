//! The real-time techniques of `keepwire serve` (issue 17) as peers see
//! them: `curl -N` on the SSE stream and the polls, and SSE relayed by
//! `keepwire proxy` without buffering. Children are killed by PID when a
//! test ends; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keepwire::{Body, Server};
use keepwire_lab::realtime::{Config, Events};

mod common;

use common::{Running, WAIT, start};

/// A child killed by PID on drop (curl).
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl -sS -N ARGS URL`, its stdout lines delivered as they come.
fn curl_lines(args: &[&str], url: &str) -> (Kill, mpsc::Receiver<(Instant, String)>) {
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "20"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl is installed (bash scripts/test installs it)");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    (Kill(child), rx)
}

/// The next `n` lines that start with `prefix`, each within [`WAIT`].
fn next_with(rx: &mpsc::Receiver<(Instant, String)>, prefix: &str, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match rx.recv_timeout(WAIT) {
            Ok((_, line)) if line.starts_with(prefix) => got.push(line),
            Ok(_) => {}
            Err(e) => panic!("no {prefix:?} line within {WAIT:?} ({e}); had {got:?}"),
        }
    }
    got
}

#[test]
fn curl_n_receives_sse_events_as_they_come_and_resumes_with_last_event_id() {
    let s = common::serve(&["--events-per-s", "10"]);
    let url = format!("http://{}/events", s.addr);
    let (mut curl, rx) = curl_lines(&["-i"], &url);
    let head = next_with(&rx, "content-type:", 1);
    assert_eq!(head[0].trim_end(), "content-type: text/event-stream");
    let ids = next_with(&rx, "id: ", 3);
    // Three events while the response goes on: delivered incrementally.
    assert!(curl.0.try_wait().unwrap().is_none(), "the stream ended");
    let first: u64 = ids[0][4..].parse().unwrap();
    let n: Vec<u64> = ids.iter().map(|l| l[4..].parse().unwrap()).collect();
    assert_eq!(n, [first, first + 1, first + 2]);
    drop(curl);

    // Back after a gap, with the last id seen: the missed events first.
    std::thread::sleep(Duration::from_millis(300));
    let (_curl, rx) = curl_lines(&["-H", &format!("Last-Event-ID: {}", n[2])], &url);
    let resumed = next_with(&rx, "id: ", 3);
    let r: Vec<u64> = resumed.iter().map(|l| l[4..].parse().unwrap()).collect();
    assert_eq!(r, [n[2] + 1, n[2] + 2, n[2] + 3], "{resumed:?}");
    let data = next_with(&rx, "data: ", 1);
    let json: serde_json::Value = serde_json::from_str(&data[0][6..]).unwrap();
    assert!(json["id"].as_u64().is_some() && json["t"].as_f64().is_some());
}

/// `curl` to completion: its stdout.
fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed");
    assert!(out.status.success(), "{url}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_polls_and_long_polls_the_same_events() {
    let s = common::serve(&["--events-per-s", "5"]);
    let base = format!("http://{}", s.addr);
    let first: serde_json::Value = serde_json::from_str(&curl(&format!("{base}/poll"))).unwrap();
    let cursor = first["last_id"].as_u64().unwrap();
    assert_eq!(first["events"], serde_json::json!([]));
    // Held until the next tick (200 ms apart), which it then carries.
    let started = Instant::now();
    let next: serde_json::Value =
        serde_json::from_str(&curl(&format!("{base}/long-poll?since={cursor}&timeout=5"))).unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    let got = next["events"].as_array().unwrap();
    assert!(!got.is_empty());
    assert_eq!(got[0]["id"].as_u64(), Some(cursor + 1));
    // A short poll sees that event in the history.
    let again: serde_json::Value =
        serde_json::from_str(&curl(&format!("{base}/poll?since={cursor}"))).unwrap();
    assert_eq!(again["events"][0], got[0]);
}

/// Reads SSE from `addr` and reports `(id, arrival)` for every event.
fn sse_reader(addr: SocketAddr, path: &str) -> mpsc::Receiver<(u64, Instant)> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = Instant::now();
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(i) = text.find("\nid: ") {
                let rest = &text[i + 5..];
                let Some(end) = rest.find('\n') else { break };
                let id = rest[..end].parse().unwrap();
                if tx.send((id, at)).is_err() {
                    return;
                }
                text.drain(..i + 5 + end);
            }
        }
    });
    rx
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// SSE through `keepwire proxy --upstream`: every event reaches the client
/// through the proxy before the next one is published (nothing waits for
/// a buffer to fill), and the delay the proxy adds per event is printed
/// (docs/BENCHMARKS.md, "SSE through keepwire proxy").
#[test]
fn sse_through_keepwire_proxy_is_relayed_event_by_event() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let events = Events::new(Config::with_rate(0.0));
    let origin = {
        let events = events.clone();
        let _guard = rt.enter();
        Server::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .bind()
            .unwrap()
            .spawn(move |req: http::Request<Body>| {
                let events = events.clone();
                async move { events.handle(req).await }
            })
    };
    let proxy: Running = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--upstream",
        &format!("http://{}", origin.local_addr()),
    ]);
    let direct = sse_reader(origin.local_addr(), "/events");
    let relayed = sse_reader(proxy.addr, "/events");
    let streams_open = Instant::now() + WAIT;
    while events.held().streams < 2 {
        assert!(Instant::now() < streams_open, "streams never opened");
        std::thread::sleep(Duration::from_millis(5));
    }
    let count: u64 = std::env::var("KEEPWIRE_SSE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut added = Vec::new();
    let (mut d_all, mut p_all) = (Vec::new(), Vec::new());
    for n in 1..=count {
        let published = Instant::now();
        assert_eq!(events.publish(format!("event {n}")).id, n);
        let (id, d_at) = direct.recv_timeout(WAIT).expect("direct event");
        assert_eq!(id, n);
        let (id, p_at) = relayed
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("event {n} not relayed by the proxy within {WAIT:?}: {e}"));
        assert_eq!(id, n, "the proxy relays event {n} before {} exists", n + 1);
        let d = d_at.duration_since(published).as_secs_f64() * 1e3;
        let p = p_at.duration_since(published).as_secs_f64() * 1e3;
        d_all.push(d);
        p_all.push(p);
        added.push(p - d);
        std::thread::sleep(Duration::from_millis(2));
    }
    for v in [&mut d_all, &mut p_all, &mut added] {
        v.sort_by(f64::total_cmp);
    }
    eprintln!(
        "SSE, {count} events, publish -> client (ms): direct p50 {:.3} p99 {:.3}; \
         through keepwire proxy p50 {:.3} p99 {:.3}; added p50 {:.3} p99 {:.3} max {:.3}",
        percentile(&d_all, 0.5),
        percentile(&d_all, 0.99),
        percentile(&p_all, 0.5),
        percentile(&p_all, 0.99),
        percentile(&added, 0.5),
        percentile(&added, 0.99),
        added[added.len() - 1],
    );
    // The streams never end: no graceful shutdown (it would wait for
    // them); dropping the runtime ends the origin.
    drop(proxy);
    drop(origin);
    drop(rt);
}

/// A real browser: headless Chromium loads `/realtime-selftest` from
/// `keepwire serve`; the page opens a WebSocket and an EventSource, sends
/// a message, receives its echo and an event on each, and writes the
/// outcome into the DOM, which `--dump-dom` prints once the page's load
/// event fires (the page holds it until the exchange is over).
#[test]
fn headless_chromium_exchanges_over_websocket_and_eventsource() {
    let Some(chromium) = ["/usr/bin/chromium", "chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
    else {
        if std::env::var_os("KEEPWIRE_SKIP_PEERS").is_some() {
            eprintln!("SKIP: chromium not installed");
            return;
        }
        panic!("chromium is missing: scripts/test installs it");
    };
    let s = common::serve(&["--events-per-s", "5"]);
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("http://{}/realtime-selftest", s.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut browser = Kill(child);
    let mut out = browser.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = out.read_to_string(&mut dom);
        let _ = tx.send(dom);
    });
    let dom = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("chromium dumped the DOM within 60 s");
    let result = dom
        .split("<pre id=\"result\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("no result in the DOM: {dom}"))
        .replace("&quot;", "\"");
    assert!(result.starts_with("PASS "), "{result}\n{dom}");
    let got: serde_json::Value = serde_json::from_str(&result[5..]).unwrap();
    assert_eq!(got["ws_echo"], true, "{got}");
    assert!(
        got["sse_event_id"].as_u64().is_some_and(|id| id >= 1),
        "{got}"
    );
    assert!(
        got["ws_event_id"].as_u64().is_some_and(|id| id >= 1),
        "{got}"
    );
    assert_eq!(
        got["sse_last_event_id"].as_str(),
        got["sse_event_id"]
            .as_u64()
            .map(|i| i.to_string())
            .as_deref(),
        "the id: line is EventSource's lastEventId"
    );
}

/// An independent client: Python's `websockets` on `keepwire serve`'s
/// `/ws` gets an event, the echo of what it sent, and a clean close.
#[test]
fn python_websockets_client_gets_events_and_its_echo() {
    let have = Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        if std::env::var_os("KEEPWIRE_SKIP_PEERS").is_some() {
            eprintln!("SKIP: python3 websockets not installed");
            return;
        }
        panic!("python3 websockets is missing: scripts/test installs it");
    }
    let s = common::serve(&["--events-per-s", "20"]);
    const SCRIPT: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
async def main(url):
    async with connect(url, open_timeout=5, close_timeout=5) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send("from python")
        while True:
            m = await asyncio.wait_for(ws.recv(), 5)
            if m == "from python":
                break
        await ws.close(1000, "bye")
        print("event", event["id"], "echo ok close", ws.close_code)
asyncio.run(main(sys.argv[1]))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, &format!("ws://{}/ws", s.addr)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the python client did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("event ") && text.trim_end().ends_with("echo ok close 1000"),
        "{text}"
    );
}

/// `/ws` over HTTP/2 (RFC 8441 extended CONNECT, h2c): `keepwire ws
/// --http2` gets `200` and the echo of its line. The route must let a
/// CONNECT through to the WebSocket accept.
#[test]
fn ws_over_http2_extended_connect_echoes() {
    let s = common::serve(&["--events-per-s", "0"]);
    let mut child = Command::new(common::BIN)
        .args(["ws", "--http2", "-v", &format!("ws://{}/ws", s.addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"over h2\n").unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ws = Kill(child);
    let echo = rx.recv_timeout(WAIT).expect("the echo within 10 s");
    assert_eq!(echo, "over h2");
    drop(stdin);
    let deadline = Instant::now() + WAIT;
    while ws.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "keepwire ws did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    ws.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("< HTTP/2 200"), "{err}");
    assert!(err.contains("[:protocol: websocket]"), "{err}");
}
