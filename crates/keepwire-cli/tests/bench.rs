//! `keepwire bench` as a user runs it: the real binary against `keepwire
//! serve` started as a child process, reading `--json`, and every kind of
//! bad input answered with a message and a failing exit status.

mod common;

use std::time::Duration;

use common::{Running, run, start};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn serve() -> Running {
    start(&["serve", "--listen", "127.0.0.1:0"])
}

fn bench_json(args: &[&str]) -> Value {
    let mut all = vec!["bench", "--json", "--timeout", "5s"];
    all.extend_from_slice(args);
    let out = run(&all, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keepwire {all:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON document")
}

fn n(doc: &Value, path: &[&str]) -> f64 {
    let mut v = doc;
    for p in path {
        v = &v[*p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {doc}"))
}

#[test]
fn json_report_adds_up() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let doc = bench_json(&["-c", "3", "-n", "300", "-t", "2", &url]);
    assert_eq!(n(&doc, &["sent"]), 300.0, "{doc}");
    assert_eq!(n(&doc, &["responses"]), 300.0);
    assert_eq!(n(&doc, &["error_total"]), 0.0);
    assert_eq!(n(&doc, &["statuses", "200"]), 300.0);
    assert_eq!(n(&doc, &["connections"]), 3.0);
    assert_eq!(n(&doc, &["requests_per_connection", "mean"]), 100.0);
    assert_eq!(n(&doc, &["latency", "count"]), 300.0);
    for q in ["p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"] {
        assert!(n(&doc, &["latency", q]) > 0.0, "{q}");
        assert!(n(&doc, &["first_byte", q]) > 0.0, "{q}");
    }
    assert!(n(&doc, &["latency", "p50_us"]) <= n(&doc, &["latency", "max_us"]));
    assert_eq!(n(&doc, &["connect", "count"]), 3.0);
    assert!(doc["time_wait"]["client"].is_u64(), "{doc}");
    assert!(n(&doc, &["bytes_read"]) > 0.0);
}

#[test]
fn keep_alive_off_reports_a_connection_per_request_and_time_wait() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let doc = bench_json(&["-c", "2", "-n", "100", "--keep-alive", "off", &url]);
    assert_eq!(n(&doc, &["responses"]), 100.0, "{doc}");
    assert_eq!(n(&doc, &["connections"]), 100.0);
    assert_eq!(n(&doc, &["requests_per_connection", "max"]), 1.0);
    let tw = n(&doc, &["time_wait", "client"]) + n(&doc, &["time_wait", "server"]);
    assert!(
        tw >= 100.0,
        "every closed connection leaves one TIME_WAIT: {doc}"
    );
}

#[test]
fn a_post_with_a_body_and_headers_is_sent_as_given() {
    let s = serve();
    // The demo site answers POST / with 405; the point is that every
    // request went out whole and got its answer on the same connection.
    let url = format!("http://{}/", s.addr);
    let doc = bench_json(&[
        "-c",
        "1",
        "-n",
        "20",
        "-X",
        "POST",
        "--body",
        "hello",
        "-H",
        "X-Test: 1",
        &url,
    ]);
    assert_eq!(n(&doc, &["responses"]), 20.0, "{doc}");
    assert_eq!(n(&doc, &["connections"]), 1.0, "{doc}");
    assert_eq!(n(&doc, &["bytes_written"]) as u64 % 20, 0);
}

#[test]
fn http2_runs_multiplexed_on_the_asked_connections() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let doc = bench_json(&["--http2", "-c", "2", "-n", "200", "--pipeline", "10", &url]);
    assert_eq!(n(&doc, &["responses"]), 200.0, "{doc}");
    assert_eq!(n(&doc, &["error_total"]), 0.0, "{doc}");
    assert_eq!(n(&doc, &["connections"]), 2.0, "{doc}");
    assert!(doc["summary"].as_str().unwrap().contains("HTTP/2"));
}

#[test]
fn the_table_names_every_section() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let out = run(
        &["bench", "-c", "2", "-d", "300ms", "--pipeline", "4", &url],
        LIMIT,
    );
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for section in [
        "Requests",
        "Throughput",
        "Latency",
        "First byte",
        "Connect",
        "Status",
        "Errors",
        "Connections",
        "TIME_WAIT",
    ] {
        assert!(table.contains(section), "{section} missing from:\n{table}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline 4"));
}

#[test]
fn bad_input_fails_with_the_cause() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--keep-alive", "off", "--pipeline", "2", &url],
            "--pipeline needs --keep-alive on",
        ),
        (vec!["https://127.0.0.1:1/"], "https://127.0.0.1:1/: "),
        (
            vec!["--cacert", "/nonexistent.pem", "https://localhost:1/"],
            "--cacert /nonexistent.pem",
        ),
        (vec!["ftp://x/"], "unsupported scheme"),
        (vec!["-H", "no colon", &url], "invalid header"),
        (
            vec!["-H", "Connection: close", &url],
            "set by keepwire bench",
        ),
        (vec!["-X", "BAD METHOD", &url], "invalid method"),
        (vec!["--rate", "0", &url], "--rate must be a positive"),
        (vec!["-d", "1s", "-n", "5", &url], "cannot be used with"),
        (vec!["-c", "0", &url], "0 is not in 1..=100000"),
        (vec!["--body-file", "/nonexistent/x", &url], "--body-file"),
        (vec!["--http2", "--http1.0", &url], "cannot be used with"),
        (
            vec!["--http2", "--keep-alive", "off", &url],
            "--keep-alive off does not apply",
        ),
        (vec!["-n", "3", &closed], "no request succeeded (3 connect)"),
    ];
    for (args, want) in cases {
        let mut all = vec!["bench", "--timeout", "2s"];
        all.extend_from_slice(&args);
        let out = run(&all, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
    }
}

/// The independent peers for `--ws` and `--sse`: Python's `websockets`
/// (an echo server, optionally closing with 1001 after N messages) and a
/// standard-library `text/event-stream` source (an event every 10 ms with
/// `"ts"` in Unix microseconds, resuming after `Last-Event-ID`, optionally
/// ending each stream after N events). `ws-big` and `sse-big` answer with
/// one 2 MiB message or event instead. Prints its port, then one line per
/// `Last-Event-ID` it is asked to resume from.
const PEER: &str = r#"
import asyncio, json, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
if mode.startswith("ws"):
    from websockets.asyncio.server import serve
    async def echo(ws):
        count = 0
        async for m in ws:
            await ws.send("x" * (2 << 20) if mode == "ws-big" else m)
            count += 1
            if n and count == n:
                await ws.close(1001, "going away")
    async def main():
        async with serve(echo, "127.0.0.1", 0, max_size=None) as s:
            print(s.sockets[0].getsockname()[1], flush=True)
            await asyncio.get_running_loop().create_future()
    asyncio.run(main())
else:
    from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            last = self.headers.get("Last-Event-ID")
            if last:
                print("resume", last, flush=True)
            i = int(last or 0)
            if mode == "sse-big":
                self.wfile.write(b"data: " + b"x" * (2 << 20) + b"\n\n")
                self.wfile.flush()
            try:
                for _ in range(n or 10**9):
                    i += 1
                    ev = json.dumps({"id": i, "ts": time.time_ns() // 1000})
                    self.wfile.write(f": tick\nid: {i}\ndata: {ev}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.01)
            except OSError:
                pass
    s = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(s.server_address[1], flush=True)
    s.serve_forever()
"#;

/// A [`PEER`] child, killed by its PID when dropped.
struct Peer {
    child: std::process::Child,
    port: u16,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts [`PEER`] as `mode` (`ws` or `sse`) with its count `n` (0: none).
fn peer(mode: &str, n: u32) -> Peer {
    use std::io::BufRead;
    let mut child = std::process::Command::new("python3")
        .args(["-c", PEER, mode, &n.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Its tracebacks for clients that hung up on purpose are noise.
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs (scripts/test installs the websockets module)");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first = lines.recv_timeout(common::WAIT);
    let mut peer = Peer {
        child,
        port: 0,
        lines,
    };
    peer.port = match first.ok().and_then(|l| l.trim().parse().ok()) {
        Some(p) => p,
        None => panic!("the python {mode} peer printed no port (is `websockets` installed?)"),
    };
    peer
}

#[test]
fn ws_echo_counts_add_up_against_python_websockets() {
    let p = peer("ws", 0);
    let url = format!("ws://127.0.0.1:{}/", p.port);
    let doc = bench_json(&["-c", "3", "-n", "300", "--pipeline", "4", &url]);
    assert_eq!(doc["unit"], "messages", "{doc}");
    assert_eq!(n(&doc, &["sent"]), 300.0, "{doc}");
    assert_eq!(
        n(&doc, &["responses"]),
        300.0,
        "every message echoed: {doc}"
    );
    assert_eq!(n(&doc, &["error_total"]), 0.0, "{doc}");
    assert_eq!(n(&doc, &["connections"]), 3.0, "{doc}");
    assert_eq!(n(&doc, &["statuses", "101"]), 3.0, "{doc}");
    assert_eq!(n(&doc, &["latency", "count"]), 300.0, "{doc}");
    assert_eq!(n(&doc, &["first_byte", "count"]), 3.0, "a handshake each");
    assert!(n(&doc, &["messages_per_s"]) > 0.0, "{doc}");
    assert!(n(&doc, &["latency", "p50_us"]) <= n(&doc, &["latency", "p99_us"]));
    // 32-byte text frames, masked (6-byte head) out, unmasked (2) back,
    // after the handshakes.
    assert!(n(&doc, &["bytes_written"]) > 300.0 * 38.0, "{doc}");
    assert!(n(&doc, &["bytes_read"]) > 300.0 * 34.0, "{doc}");
    // A message over 64 KiB takes the 64-bit length form.
    let doc = bench_json(&[
        "--ws",
        "-c",
        "1",
        "-n",
        "20",
        "--message-size",
        "70000",
        &url,
    ]);
    assert_eq!(n(&doc, &["responses"]), 20.0, "{doc}");
}

#[test]
fn ws_counts_the_messages_a_closing_server_drops() {
    // The server closes (1001) after every 5th echo: a message sent before
    // the close arrived is lost (counted as `closed`), and the run goes on
    // over a new connection. Whether any was in flight is a race (the echo
    // and the close often arrive in one read, and then none is), so the
    // count of losses is not asserted, only that every message is
    // accounted for and no connection carried more than 5.
    let p = peer("ws", 5);
    let url = format!("http://127.0.0.1:{}/", p.port);
    let doc = bench_json(&["--ws", "-c", "1", "-n", "30", &url]);
    let (sent, echoed, errors) = (
        n(&doc, &["sent"]),
        n(&doc, &["responses"]),
        n(&doc, &["error_total"]),
    );
    assert_eq!(sent, 30.0, "{doc}");
    assert_eq!(sent, echoed + errors, "{doc}");
    assert_eq!(n(&doc, &["errors", "closed"]), errors, "{doc}");
    assert!(n(&doc, &["connections"]) >= 2.0, "{doc}");
    assert_eq!(n(&doc, &["requests_per_connection", "max"]), 5.0, "{doc}");
}

#[test]
fn sse_counts_events_and_their_latency() {
    let p = peer("sse", 0);
    let url = format!("http://127.0.0.1:{}/events", p.port);
    let doc = bench_json(&["--sse", "-c", "2", "-n", "40", &url]);
    assert_eq!(doc["unit"], "events", "{doc}");
    assert_eq!(n(&doc, &["responses"]), 40.0, "{doc}");
    assert_eq!(n(&doc, &["sent"]), 40.0, "{doc}");
    assert_eq!(n(&doc, &["error_total"]), 0.0, "{doc}");
    assert_eq!(n(&doc, &["connections"]), 2.0, "{doc}");
    assert_eq!(n(&doc, &["statuses", "200"]), 2.0, "{doc}");
    assert_eq!(n(&doc, &["latency", "count"]), 40.0, "every event stamped");
    assert!(n(&doc, &["latency", "p50_us"]) > 0.0, "{doc}");
    assert!(n(&doc, &["bytes_per_event"]) > 40.0, "{doc}");
    assert!(n(&doc, &["events_per_s"]) > 0.0, "{doc}");
}

#[test]
fn sse_resumes_with_last_event_id_when_the_server_ends_a_stream() {
    let p = peer("sse", 3);
    let url = format!("http://127.0.0.1:{}/events", p.port);
    let doc = bench_json(&["--sse", "-c", "1", "-n", "9", &url]);
    assert_eq!(n(&doc, &["sent"]), 9.0, "{doc}");
    assert_eq!(
        n(&doc, &["responses"]) + n(&doc, &["error_total"]),
        9.0,
        "{doc}"
    );
    let resumed: Vec<String> = p.lines.try_iter().collect();
    assert!(
        resumed.first().is_some_and(|l| l == "resume 3"),
        "the second stream asks to resume after event 3: {resumed:?}"
    );
}

#[test]
fn realtime_flags_that_do_not_apply_fail_with_the_cause() {
    let p = peer("sse", 0);
    let sse = format!("http://127.0.0.1:{}/", p.port);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--ws", "--http2", &sse], "cannot be used with"),
        (
            vec!["--http2", "ws://127.0.0.1:1/"],
            "--http2 does not apply",
        ),
        (vec!["--ws", "--rate", "5", &sse], "cannot be used with"),
        (vec!["--ws", "--body", "x", &sse], "cannot be used with"),
        (vec!["--ws", "-X", "POST", &sse], "do not apply"),
        (vec!["--sse", "--keep-alive", "off", &sse], "do not apply"),
        (
            vec!["--sse", "--pipeline", "2", &sse],
            "cannot be used with",
        ),
        (vec!["--sse", "--ws", &sse], "cannot be used with"),
        (vec!["--ws", "--message-size", "0", &sse], "0 is not in"),
        // An event stream is no WebSocket: the upgrade is refused.
        (
            vec!["--ws", "-n", "2", &sse],
            "no request succeeded (2 refused)",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["bench", "--timeout", "2s"];
        all.extend_from_slice(&args);
        let out = run(&all, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
    }
}

#[test]
fn sse_against_keepwire_serve_events_reads_the_stamped_time() {
    let s = start(&["serve", "--listen", "127.0.0.1:0", "--events-per-s", "200"]);
    let url = format!("http://{}/events", s.addr);
    let doc = bench_json(&["--sse", "-c", "2", "-n", "20", &url]);
    assert_eq!(n(&doc, &["responses"]), 20.0, "{doc}");
    assert_eq!(n(&doc, &["error_total"]), 0.0, "{doc}");
    assert_eq!(n(&doc, &["latency", "count"]), 20.0, "{doc}");
    assert!(n(&doc, &["bytes_per_event"]) > 20.0, "{doc}");
}

#[test]
fn ws_against_keepwire_serve_skips_the_events_it_pushes() {
    // /ws pushes each event (here 200/s) beside the echoes: only the echo
    // of the message sent counts, and nothing is an error.
    let s = start(&["serve", "--listen", "127.0.0.1:0", "--events-per-s", "200"]);
    let url = format!("ws://{}/ws", s.addr);
    let doc = bench_json(&["-c", "2", "-n", "200", "--pipeline", "2", &url]);
    assert_eq!(n(&doc, &["sent"]), 200.0, "{doc}");
    assert_eq!(n(&doc, &["responses"]), 200.0, "{doc}");
    assert_eq!(n(&doc, &["error_total"]), 0.0, "{doc}");
    assert_eq!(n(&doc, &["statuses", "101"]), 2.0, "{doc}");
}

#[test]
fn realtime_limits_fail_the_connection_with_their_kind() {
    // A frame or an event over the 1 MiB cap is refused as `parse`, never
    // buffered whole.
    let big = peer("ws-big", 0);
    let out = run(
        &[
            "bench",
            "--timeout",
            "5s",
            "-n",
            "2",
            &format!("ws://127.0.0.1:{}/", big.port),
        ],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no request succeeded (2 parse)"),
        "{stderr}"
    );
    let big = peer("sse-big", 0);
    let out = run(
        &[
            "bench",
            "--sse",
            "--timeout",
            "5s",
            "-n",
            "2",
            &format!("http://127.0.0.1:{}/", big.port),
        ],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no request succeeded (2 parse)"),
        "{stderr}"
    );
    // A server that accepts and never answers: the handshake times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    for (mode, url) in [
        ("--ws", format!("ws://{addr}/")),
        ("--sse", format!("http://{addr}/")),
    ] {
        let out = run(
            &["bench", mode, "--timeout", "300ms", "-n", "2", &url],
            LIMIT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no request succeeded (2 timeout)"),
            "{mode}: {stderr}"
        );
    }
}

#[test]
fn wss_upgrades_over_tls() {
    let s = start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--events-per-s",
        "0",
        "--tls-self-signed",
    ]);
    let url = format!("wss://{}/ws", s.addr);
    let doc = bench_json(&["-k", "-c", "2", "-n", "100", &url]);
    assert_eq!(n(&doc, &["responses"]), 100.0, "{doc}");
    assert_eq!(n(&doc, &["error_total"]), 0.0, "{doc}");
    assert_eq!(n(&doc, &["statuses", "101"]), 2.0, "{doc}");
}

/// A malformed -H is a usage error (2) as in get and ws; a reader of stdout
/// that left (`| head`) ends bench quietly with 141, as the other commands.
#[test]
fn a_bad_header_is_usage_and_a_closed_stdout_is_quiet() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let out = run(&["bench", "-H", "nocolon", &url], LIMIT);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["bench", "-n", "20", "-c", "1", &url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader leaves before the table
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bench ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
