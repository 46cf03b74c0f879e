//! `keepwire ws` as a user runs it: the real binary against Python's
//! `websockets` echo server, `keepwire serve`'s `/ws`, and keepwire's own
//! server over TLS (wss://) and HTTP/2 (RFC 8441), every child killed by
//! PID when its guard drops.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, WAIT, python_module};

/// Kills a child by PID when dropped, however the test ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PY_SERVER: &str = r#"
import asyncio, sys
from websockets.asyncio.server import serve
async def handler(ws):
    async for m in ws:
        if m == "close-normal":
            await ws.close(1000, "done")
        elif m == "close-odd":
            await ws.close(4003, "odd")
        elif m == "headers":
            await ws.send(f"{ws.request.headers.get('X-Test')} {ws.subprotocol}")
        else:
            await ws.send(m)
def select(conn, offered):
    return "chat" if "chat" in offered else None
async def main():
    async with serve(handler, "127.0.0.1", 0, ping_interval=None, select_subprotocol=select) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(120)
asyncio.run(main())
"#;

/// A Python `websockets` echo server; `None` (after saying why) when
/// python3 or its `websockets` is missing and KEEPWIRE_SKIP_PEERS=1.
fn py_server() -> Option<(Guard, String)> {
    if !python_module("websockets") {
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", PY_SERVER])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let out = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let port = rx.recv_timeout(WAIT).expect("the python server's port");
    Some((guard, format!("ws://127.0.0.1:{}/", port.trim())))
}

/// Runs `keepwire ws ARGS` with `input` on stdin, bounded in time.
fn ws(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("ws")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keepwire starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let started = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "keepwire ws {args:?} ran over {WAIT:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// stdin lines go out as text messages; the echoes come back one per
/// line; end of input closes with 1000 and exits 0. `-v` shows the
/// handshake and the close.
#[test]
fn lines_round_trip_and_verbose_shows_the_handshake() {
    let Some((_py, url)) = py_server() else {
        return;
    };
    let out = ws(&["-v", &url], "hello\nworld\n");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "hello\nworld\n", "{stderr}");
    for needle in [
        "> GET / HTTP/1.1",
        "> upgrade: websocket",
        "> sec-websocket-version: 13",
        "< HTTP/1.1 101 Switching Protocols",
        "< sec-websocket-accept: ",
        "* Sec-WebSocket-Accept matches the key sent",
        "* closed (started by us): code 1000",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
}

/// `--json`: one object per message with type, len, data and times; the
/// close frame last.
#[test]
fn json_describes_each_message() {
    let Some((_py, url)) = py_server() else {
        return;
    };
    let out = ws(&["--json", &url], "one\ntwo\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert_eq!(docs[0]["type"], "text");
    assert_eq!(docs[0]["data"], "one");
    assert_eq!(docs[0]["len"], 3);
    assert!(docs[0]["time"].as_f64().is_some_and(|t| t > 1.0e9));
    assert!(docs[1]["elapsed_ms"].as_f64().is_some());
    assert_eq!(docs[2]["type"], "close");
    assert_eq!(docs[2]["code"], 1000);
    // `--json FILE`: the objects go to FILE, the messages still to stdout.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ws.jsonl");
    let out = ws(&[&url, "--json", file.to_str().unwrap()], "three\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "three\n");
    let lines = std::fs::read_to_string(&file).unwrap();
    assert!(
        lines.starts_with("{\"") && lines.contains("\"three\""),
        "{lines}"
    );
}

/// A close from the server: 1000 exits 0, another code exits 1; either
/// is printed.
#[test]
fn a_close_from_the_server_sets_the_exit_status() {
    let Some((_py, url)) = py_server() else {
        return;
    };
    let out = ws(&["-v", "--linger", "5s", &url], "close-normal\n");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("* closed (started by the server): code 1000, reason \"done\""),
        "{stderr}"
    );
    let out = ws(&["--linger", "5s", &url], "close-odd\n");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("4003"), "{stderr}");
}

/// `-H` adds fields to the handshake, `--protocol` offers a subprotocol.
#[test]
fn headers_and_subprotocol_reach_the_server() {
    let Some((_py, url)) = py_server() else {
        return;
    };
    let out = ws(
        &["-v", "-H", "X-Test: yes", "--protocol", "chat", &url],
        "headers\n",
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "yes chat\n", "{stderr}");
    assert!(stderr.contains("* subprotocol chat"), "{stderr}");
}

/// Refusals and mistakes exit 1 with a reason; a URL that is not a
/// WebSocket's is a usage error (2) that names the ws:// spelling.
#[test]
fn errors_exit_1_with_a_reason() {
    let out = ws(&["http://127.0.0.1:1/x"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("(ws://127.0.0.1:1/x)"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("handshake"),
        "nothing was tried"
    );
    let out = ws(&["https://example.org/"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("(wss://example.org/)"));
    // So is a zero --timeout (it was "connect timed out after 0ns", exit 1).
    let out = ws(&["--timeout", "0", "ws://127.0.0.1:1/"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // A malformed -H is a usage error too, as in `get`.
    let out = ws(&["-H", "no colon", "ws://127.0.0.1:1/"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("`Name: value`"));
    let port = common::free_port();
    let out = ws(&[&format!("ws://127.0.0.1:{port}/")], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

/// wss:// against keepwire's own TLS server (self-signed): `--cacert`
/// trusts it (over HTTP/1.1 and, with `--http2`, HTTP/2), `-k` skips the
/// check, neither fails.
#[test]
fn wss_with_cacert_and_insecure() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tls, pem) = keepwire_lab::tls::self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let server = {
        let _enter = rt.enter();
        keepwire::Server::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .configure(|c| c.tls = Some(tls))
            .bind()
            .unwrap()
            .spawn(echo)
    };
    let url = format!("wss://localhost:{}/", server.local_addr().port());
    let ca = ca.to_str().unwrap();
    let out = ws(&["--cacert", ca, &url], "secure\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "secure\n");
    // The same server over HTTP/2 (ALPN h2), RFC 8441.
    let out = ws(&["--http2", "--cacert", ca, &url], "h2 secure\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "h2 secure\n");
    let out = ws(&["-k", &url], "insecure\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "insecure\n");
    let out = ws(&[&url], "untrusted\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // The error says what to do next.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("certificate")
            && stderr.contains("use --cacert FILE to trust its CA, or -k"),
        "{stderr}"
    );
    rt.block_on(async { server.shutdown().await.ok() });
}

/// `--http2-prior-knowledge`: an extended CONNECT (RFC 8441) on an h2c
/// connection to keepwire's server; `-v` shows the CONNECT and the 200; a
/// server that does not speak HTTP/2 is an error. The old spelling
/// (`--http2` on ws://) still works, with a note.
#[test]
fn http2_opens_the_websocket_with_an_extended_connect() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = {
        let _enter = rt.enter();
        keepwire::Server::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .bind()
            .unwrap()
            .spawn(echo)
    };
    let url = format!("ws://{}/chat", server.local_addr());
    let out = ws(&["-v", "--http2-prior-knowledge", &url], "over h2\n");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "over h2\n", "{stderr}");
    assert!(!stderr.contains("deprecated"), "{stderr}");
    let old = ws(&["--http2", &url], "old\n");
    assert!(old.status.success(), "{}", text(&old.stderr));
    assert_eq!(text(&old.stdout), "old\n");
    assert!(
        text(&old.stderr).contains("--http2 on ws:// is deprecated; use --http2-prior-knowledge"),
        "{}",
        text(&old.stderr)
    );
    // As curl -v shows HTTP/2 (and get -v, with the same formatter).
    let authority = server.local_addr().to_string();
    let pseudo = format!(
        "* [HTTP/2] [1] [:method: CONNECT]\n* [HTTP/2] [1] [:protocol: websocket]\n\
         * [HTTP/2] [1] [:scheme: http]\n* [HTTP/2] [1] [:authority: {authority}]\n\
         * [HTTP/2] [1] [:path: /chat]\n> CONNECT /chat HTTP/2\n"
    );
    assert!(stderr.contains(&pseudo), "no {pseudo:?} in:\n{stderr}");
    assert!(stderr.contains("\n< HTTP/2 200 \n"), "{stderr}");
    rt.block_on(async { server.shutdown().await.ok() });
    let Some((_py, url)) = py_server() else {
        return;
    };
    let out = ws(&["--http2-prior-knowledge", &url], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

/// Against `keepwire serve`'s `/ws`: what we send comes back (no events
/// at `--events-per-s 0`); with events on, they arrive as text messages
/// too, and the close is ours, with 1000.
#[test]
fn against_keepwire_serve_ws() {
    let quiet = common::serve(&["--events-per-s", "0"]);
    let url = format!("ws://{}/ws", quiet.addr);
    let out = ws(&["-v", &url], "hello\nagain\n");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "hello\nagain\n", "{stderr}");
    assert!(
        stderr.contains("* closed (started by us): code 1000"),
        "{stderr}"
    );
    // `host:port/path` means ws://, as `get` reads it with http://.
    let out = ws(&[&format!("{}/ws", quiet.addr)], "bare\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "bare\n");
    let busy = common::serve(&["--events-per-s", "50"]);
    let url = format!("ws://{}/ws", busy.addr);
    let out = ws(&["--json", "--linger", "1s", &url], "ping me\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert!(docs.iter().any(|d| d["data"] == "ping me"), "{docs:?}");
    let events = docs
        .iter()
        .filter(|d| d["type"] == "text" && d["data"] != "ping me")
        .count();
    assert!(events >= 1, "no event in a second at 50/s: {docs:?}");
    assert_eq!(docs.last().map(|d| d["code"].clone()), Some(1000.into()));
}

/// A WebSocket echo handler on keepwire's server.
async fn echo(mut req: http::Request<keepwire::Body>) -> http::Response<keepwire::Body> {
    use keepwire::ws::{self, Message};
    match ws::accept(&mut req, ws::Config::default()) {
        Err(refusal) => refusal,
        Ok((resp, accepting)) => {
            tokio::spawn(async move {
                let Some(mut sock) = accepting.await else {
                    return;
                };
                while let Some(Ok(m)) = sock.recv().await {
                    if let Message::Text(_) | Message::Binary(_) = m
                        && sock.send(m).await.is_err()
                    {
                        return;
                    }
                }
            });
            resp
        }
    }
}
