//! WebSocket (`keepwire::ws`) against independent peers: Python's
//! `websockets` as client and as server, and hand-written frames over a
//! raw socket for what a polite library will not send (invalid UTF-8, a
//! peer that goes silent). Close handshakes both ways, ping/pong,
//! fragmentation, the size caps (1009), UTF-8 (1007), the dead-peer
//! timeout, bad handshakes, and a WebSocket still counted as a connection.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use keepwire::ws::{self, CloseFrame, Config, Message};
use keepwire::{Body, Client};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// What the server saw, for the test to check.
#[derive(Debug)]
enum Seen {
    Msg(Message),
    Err(String),
    End,
}

/// A handler that accepts WebSockets with `cfg` and echoes text and
/// binary messages, reporting what it saw into `tx`. A text message
/// "close-me" makes it close with 4001 "server bye".
fn echo_server(
    cfg: Config,
    tx: mpsc::UnboundedSender<Seen>,
) -> impl Fn(Request<Body>) -> std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>
+ Send
+ Sync
+ 'static {
    move |mut req: Request<Body>| {
        let cfg = cfg.clone();
        let tx = tx.clone();
        Box::pin(async move {
            if !ws::is_upgrade(&req) {
                return Response::new(Body::from("plain"));
            }
            let (resp, accepting) = match ws::accept(&mut req, cfg) {
                Ok(v) => v,
                Err(refusal) => return refusal,
            };
            tokio::spawn(async move {
                let Some(mut sock) = accepting.await else {
                    return;
                };
                loop {
                    match sock.recv().await {
                        None => {
                            let _ = tx.send(Seen::End);
                            return;
                        }
                        Some(Err(e)) => {
                            let _ = tx.send(Seen::Err(e.to_string()));
                            return;
                        }
                        Some(Ok(m)) => {
                            let _ = tx.send(Seen::Msg(m.clone()));
                            match m {
                                Message::Text(t) if t == "close-me" => {
                                    let r = sock.close(4001, "server bye").await;
                                    let _ = tx.send(match r {
                                        Ok(()) => Seen::End,
                                        Err(e) => Seen::Err(e.to_string()),
                                    });
                                    return;
                                }
                                Message::Text(_) | Message::Binary(_)
                                    if sock.send(m.clone()).await.is_err() =>
                                {
                                    return;
                                }
                                _ => {}
                            }
                        }
                    }
                }
            });
            resp
        })
    }
}

fn python() -> Option<PathBuf> {
    let py = require_tool("python3", "python3")?;
    let ok = std::process::Command::new(&py)
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") {
            eprintln!("skipping: python3 has no `websockets` (pip install websockets)");
            return None;
        }
        panic!("python3 has no `websockets`: `bash scripts/test` installs it");
    }
    Some(py)
}

/// Runs a Python `websockets` client script against `url` (argv[1]).
async fn py_client(script: &str, url: &str) -> ToolOutput {
    let py = python().expect("python3 with websockets");
    let out = run_tool(
        &py,
        &["-c".into(), script.into(), url.into()],
        Duration::from_secs(20),
    )
    .await;
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    out
}

/// Waits for the next report of the server.
async fn seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("the server's next report", WAIT, rx.recv())
        .await
        .expect("server reports")
}

/// Reports until the end or an error, data and control messages alike.
async fn seen_all(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut all = Vec::new();
    loop {
        let s = seen(rx).await;
        let last = matches!(s, Seen::End | Seen::Err(_));
        all.push(s);
        if last {
            return all;
        }
    }
}

const PY_ECHO_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], ping_interval=None) as ws:
        await ws.send("hello")
        print("text", await ws.recv(), flush=True)
        await ws.send(b"\x00\x01\x02")
        print("binary", (await ws.recv()).hex(), flush=True)
        await ws.send(["frag", "ment", "ed"])
        print("fragmented", await ws.recv(), flush=True)
        pong = await ws.ping(b"are you there")
        latency = await asyncio.wait_for(pong, 5)
        print("pong ok", flush=True)
        await ws.close(4000, "client bye")
        print("closed", ws.close_code, ws.close_reason, flush=True)
asyncio.run(main())
"#;

/// Python's client against keepwire's server: text, binary, a fragmented
/// message reassembled, a ping answered, and the client's close handshake
/// with its code and reason seen by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_echo_ping_fragments_and_close() {
    if python().is_none() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_server(Config::default(), tx));
    let url = format!("ws://{}/ws", server.local_addr());
    let out = py_client(PY_ECHO_CLIENT, &url).await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "text hello",
            "binary 000102",
            "fragmented fragmented",
            "pong ok",
            "closed 4000 client bye"
        ],
        "{}",
        out.stderr
    );
    let all = seen_all(&mut rx).await;
    assert!(
        all.iter()
            .any(|s| matches!(s, Seen::Msg(Message::Text(t)) if t == "fragmented")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|s| matches!(s, Seen::Msg(Message::Ping(p)) if p == "are you there")),
        "{all:?}"
    );
    let close = all.iter().find_map(|s| match s {
        Seen::Msg(Message::Close(c)) => Some(c.clone()),
        _ => None,
    });
    assert_eq!(
        close,
        Some(Some(CloseFrame {
            code: 4000,
            reason: "client bye".into()
        }))
    );
    assert!(matches!(all.last(), Some(Seen::End)), "{all:?}");
    stop(server).await;
}

const PY_SERVER_CLOSES: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
async def main():
    async with connect(sys.argv[1], ping_interval=None) as ws:
        await ws.send("close-me")
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            print("closed", e.rcvd.code, e.rcvd.reason, flush=True)
asyncio.run(main())
"#;

/// keepwire's server closes with a code and reason; Python's client gets
/// them and answers, and the server's `close` returns once it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_handshake_reaches_python() {
    if python().is_none() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_server(Config::default(), tx));
    let url = format!("ws://{}/ws", server.local_addr());
    let out = py_client(PY_SERVER_CLOSES, &url).await;
    assert_eq!(
        out.stdout.trim(),
        "closed 4001 server bye",
        "{}",
        out.stderr
    );
    let all = seen_all(&mut rx).await;
    assert!(matches!(all.last(), Some(Seen::End)), "{all:?}");
    stop(server).await;
}

const PY_OVERSIZED: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
async def main():
    async with connect(sys.argv[1], ping_interval=None, max_size=None) as ws:
        await ws.send("x" * int(sys.argv[2]))
        try:
            await ws.recv()
        except ConnectionClosed as e:
            print("closed", e.rcvd.code if e.rcvd else None, flush=True)
asyncio.run(main())
"#;

/// A frame over `max_frame_size` and a message over `max_message_size`
/// (in small fragments) both close with 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_and_message_close_with_1009() {
    let Some(py) = python() else { return };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut cfg = Config::default();
    cfg.max_frame_size = 1024;
    cfg.max_message_size = 4096;
    let server = serve(|_| {}, echo_server(cfg, tx));
    let url = format!("ws://{}/ws", server.local_addr());
    // One 64 KiB frame: refused at its header.
    let out = run_tool(
        &py,
        &[
            "-c".into(),
            PY_OVERSIZED.into(),
            url.clone(),
            "65536".into(),
        ],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(out.stdout.trim(), "closed 1009", "{}", out.stderr);
    let all = seen_all(&mut rx).await;
    assert!(
        matches!(all.last(), Some(Seen::Err(e)) if e.contains("1009")),
        "{all:?}"
    );
    // A message of 1000-byte fragments that adds up past 4096.
    let mut raw = RawWs::connect(server.local_addr()).await;
    for i in 0..6 {
        let opcode = if i == 0 { 1 } else { 0 };
        raw.frame(false, opcode, &[b'y'; 1000]).await;
    }
    assert_eq!(raw.close_code().await, Some(1009));
    drop(raw);
    let all = seen_all(&mut rx).await;
    assert!(
        matches!(all.last(), Some(Seen::Err(e)) if e.contains("1009")),
        "{all:?}"
    );
    stop(server).await;
}

/// A text frame that is not UTF-8 closes with 1007, whole or split over
/// fragments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_server(Config::default(), tx));
    let mut raw = RawWs::connect(server.local_addr()).await;
    raw.frame(true, 1, b"ok").await;
    assert_eq!(raw.read_frame().await, Some((1, b"ok".to_vec())));
    raw.frame(true, 1, b"bad \xff\xfe").await;
    assert_eq!(raw.close_code().await, Some(1007));
    drop(raw);
    let all = seen_all(&mut rx).await;
    assert!(
        matches!(all.last(), Some(Seen::Err(e)) if e.contains("1007")),
        "{all:?}"
    );
    let mut raw = RawWs::connect(server.local_addr()).await;
    raw.frame(false, 1, b"caf\xc3").await;
    raw.frame(true, 0, b"\x28").await;
    assert_eq!(raw.close_code().await, Some(1007));
    stop(server).await;
}

/// A protocol error (a continuation with nothing to continue) closes with
/// 1002.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_closes_with_1002() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_server(Config::default(), tx));
    let mut raw = RawWs::connect(server.local_addr()).await;
    raw.frame(true, 0, b"orphan").await;
    assert_eq!(raw.close_code().await, Some(1002));
    stop(server).await;
}

/// A peer that completes the handshake and then goes silent (answers no
/// ping) is dropped after the dead-peer timeout, and `recv` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_after_the_dead_peer_timeout() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut cfg = Config::default();
    cfg.ping_interval = Some(Duration::from_millis(200));
    cfg.dead_peer_timeout = Duration::from_millis(300);
    let (server, metrics) = serve_with_metrics(|_| {}, echo_server(cfg, tx));
    let mut raw = RawWs::connect(server.local_addr()).await;
    // The server pings; the peer reads the ping but never answers.
    let (op, _) = raw.read_frame().await.expect("a ping");
    assert_eq!(op, 9);
    let report = seen(&mut rx).await;
    assert!(
        matches!(&report, Seen::Err(e) if e.contains("dead peer")),
        "{report:?}"
    );
    // The connection is gone, and so is its place.
    within("the server drops the connection", WAIT, raw.until_eof()).await;
    eventually("the slot is given back", WAIT, || {
        metric(&metrics(), "connections_open") == 0
    })
    .await;
    stop(server).await;
}

/// A peer that answers the pings is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_pings_is_kept() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut cfg = Config::default();
    cfg.ping_interval = Some(Duration::from_millis(100));
    cfg.dead_peer_timeout = Duration::from_millis(200);
    let server = serve(|_| {}, echo_server(cfg, tx));
    let mut raw = RawWs::connect(server.local_addr()).await;
    for _ in 0..5 {
        let (op, payload) = raw.read_frame().await.expect("a ping");
        assert_eq!(op, 9);
        raw.frame(true, 10, &payload).await;
    }
    raw.frame(true, 1, b"still here").await;
    loop {
        let (op, payload) = raw.read_frame().await.expect("a frame");
        if op == 1 {
            assert_eq!(payload, b"still here");
            break;
        }
    }
    while let Ok(s) = rx.try_recv() {
        assert!(!matches!(s, Seen::Err(_) | Seen::End), "{s:?}");
    }
    stop(server).await;
}

/// Nothing sent either way for the idle timeout: closed with 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_is_closed_with_1001() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut cfg = Config::default();
    cfg.idle_timeout = Some(Duration::from_millis(300));
    let server = serve(|_| {}, echo_server(cfg, tx));
    let mut raw = RawWs::connect(server.local_addr()).await;
    assert_eq!(raw.close_code().await, Some(1001));
    drop(raw);
    let report = seen(&mut rx).await;
    assert!(
        matches!(&report, Seen::Err(e) if e.contains("idle")),
        "{report:?}"
    );
    stop(server).await;
}

/// A peer that never answers our close cannot hold the connection past
/// the close timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_without_reply_ends_at_the_close_timeout() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut cfg = Config::default();
    cfg.close_timeout = Duration::from_millis(300);
    let server = serve(|_| {}, echo_server(cfg, tx));
    let mut raw = RawWs::connect(server.local_addr()).await;
    raw.frame(true, 1, b"close-me").await;
    let (op, _) = raw.read_frame().await.expect("the close");
    assert_eq!(op, 8);
    // No reply: the server gives up on its own.
    let all = seen_all(&mut rx).await;
    assert!(
        matches!(all.last(), Some(Seen::Err(e)) if e.contains("close handshake")),
        "{all:?}"
    );
    within("the server drops the connection", WAIT, raw.until_eof()).await;
    stop(server).await;
}

/// Bad handshakes: another version → 426 naming 13; no key, a short key
/// → 400; not a GET → 405; a plain request passes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_are_refused() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_server(Config::default(), tx));
    let addr = server.local_addr();
    let ask = |extra: &str, method: &str| {
        format!(
            "{method} /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        )
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let mut c = RawClient::connect(addr).await;
    c.send(ask(&format!("{key}Sec-WebSocket-Version: 8\r\n"), "GET"))
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    // The connection stays usable for HTTP after a refusal.
    c.send(ask("Sec-WebSocket-Version: 13\r\n", "GET")).await;
    assert_eq!(c.response().await.status, 400);
    c.send(ask(
        "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n",
        "GET",
    ))
    .await;
    assert_eq!(c.response().await.status, 400);
    c.send(ask(
        &format!("{key}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n"),
        "POST",
    ))
    .await;
    assert_eq!(c.response().await.status, 405);
    c.send(get("/")).await;
    let r = c.response().await;
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    stop(server).await;
}

/// A WebSocket holds its connection's place under `max_connections`: with
/// two open, a third connection is refused; one closed, it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_websockets_count_under_max_connections() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let (server, metrics) = serve_with_metrics(
        |c| c.max_connections = 2,
        echo_server(Config::default(), tx),
    );
    let url = format!("ws://{}/ws", server.local_addr());
    let client = Client::default();
    let (mut a, _) = ws::connect(&client, &url, HeaderMap::new(), Config::default())
        .await
        .expect("first");
    let (b, _) = ws::connect(&client, &url, HeaderMap::new(), Config::default())
        .await
        .expect("second");
    a.send(Message::Text("hi".into())).await.unwrap();
    assert_eq!(a.recv().await.unwrap().unwrap(), Message::Text("hi".into()));
    eventually("two connections open", WAIT, || {
        metric(&metrics(), "connections_open") == 2
    })
    .await;
    let mut third = RawClient::connect(server.local_addr()).await;
    third.send(get("/")).await;
    match third.try_response(false).await {
        Ok(r) => assert_eq!(r.status, 503),
        Err(e) => eprintln!("refused by closing: {e:?}"),
    }
    drop(b);
    eventually("the closed WebSocket's slot is given back", WAIT, || {
        metric(&metrics(), "connections_open") == 1
    })
    .await;
    let mut fourth = RawClient::connect(server.local_addr()).await;
    fourth.send(get("/")).await;
    assert_eq!(fourth.response().await.status, 200);
    a.close(1000, "done").await.unwrap();
    stop(server).await;
}

/// keepwire's client against keepwire's server: the handshake facts,
/// messages both ways, the client's close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepwire_client_to_keepwire_server() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut scfg = Config::default();
    scfg.protocols = vec!["chat".into()];
    let server = serve(|_| {}, echo_server(scfg, tx));
    let url = format!("ws://{}/ws", server.local_addr());
    let mut cfg = Config::default();
    cfg.protocols = vec!["other".into(), "chat".into()];
    let (mut sock, shake) = ws::connect(&Client::default(), &url, HeaderMap::new(), cfg)
        .await
        .expect("connect");
    assert_eq!(shake.status, 101);
    assert!(shake.accept_checked);
    assert_eq!(shake.protocol.as_deref(), Some("chat"));
    sock.send(Message::Text("hello".into())).await.unwrap();
    sock.send(Message::Binary(Bytes::from_static(b"\x01\x02")))
        .await
        .unwrap();
    assert_eq!(
        sock.recv().await.unwrap().unwrap(),
        Message::Text("hello".into())
    );
    assert_eq!(
        sock.recv().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(b"\x01\x02"))
    );
    within("close", WAIT, sock.close(4005, "client done"))
        .await
        .unwrap();
    let all = seen_all(&mut rx).await;
    assert!(
        all.iter().any(|s| matches!(s, Seen::Msg(Message::Close(Some(c))) if c.code == 4005 && c.reason == "client done")),
        "{all:?}"
    );
    stop(server).await;
}

const PY_ECHO_SERVER: &str = r#"
import asyncio, sys
from websockets.asyncio.server import serve
async def handler(ws):
    try:
        async for m in ws:
            if m == "close-me":
                await ws.close(4003, "python bye")
                return
            if m == "frag":
                await ws.send(["fr", "ag", "ment"])
                continue
            if m == "ping-me":
                await ws.ping(b"from python")
                continue
            await ws.send(m)
    finally:
        print("closed", ws.close_code, ws.close_reason, flush=True)
async def main():
    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"#;

/// A Python `websockets` echo server, killed on drop.
struct PyServer {
    port: u16,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _guard: ChildGuard,
}

impl PyServer {
    async fn start() -> Option<PyServer> {
        let py = python()?;
        let mut guard = ChildGuard::spawn(&py, &["-c".into(), PY_ECHO_SERVER.into()]);
        let out = guard.child_mut().stdout.take().expect("stdout");
        let err = guard.child_mut().stderr.take().expect("stderr");
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("python server: {l}");
            }
        });
        let mut lines = BufReader::new(out).lines();
        let port = within(
            "the python server's port",
            Duration::from_secs(10),
            lines.next_line(),
        )
        .await
        .expect("read")
        .expect("a port line")
        .trim()
        .parse()
        .expect("a port");
        Some(PyServer {
            port,
            lines,
            _guard: guard,
        })
    }

    async fn next_line(&mut self) -> String {
        within("the python server's output", WAIT, self.lines.next_line())
            .await
            .expect("read")
            .expect("a line")
    }
}

/// keepwire's client against Python's server: echo, a fragmented message
/// reassembled, a ping answered, the client's close with code and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepwire_client_to_python_server() {
    let Some(mut py) = PyServer::start().await else {
        return;
    };
    let url = format!("ws://127.0.0.1:{}/", py.port);
    let (mut sock, shake) = ws::connect(
        &Client::default(),
        &url,
        HeaderMap::new(),
        Config::default(),
    )
    .await
    .expect("connect");
    assert!(shake.accept_checked);
    assert_eq!(shake.version, http::Version::HTTP_11);
    sock.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(next(&mut sock).await, Message::Text("hello".into()));
    sock.send(Message::Text("frag".into())).await.unwrap();
    assert_eq!(next(&mut sock).await, Message::Text("fragment".into()));
    sock.send(Message::Text("ping-me".into())).await.unwrap();
    assert_eq!(
        next(&mut sock).await,
        Message::Ping(Bytes::from_static(b"from python"))
    );
    // Our pong went out: Python's echo of the next message proves the
    // connection is in order.
    sock.send(Message::Binary(Bytes::from_static(b"\x00")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut sock).await,
        Message::Binary(Bytes::from_static(b"\x00"))
    );
    within("close", WAIT, sock.close(4002, "client bye"))
        .await
        .unwrap();
    assert_eq!(py.next_line().await, "closed 4002 client bye");
}

/// Python's server closes with a code and reason: the client sees the
/// close frame, then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_close_reaches_keepwire_client() {
    let Some(mut py) = PyServer::start().await else {
        return;
    };
    let url = format!("ws://127.0.0.1:{}/", py.port);
    let (mut sock, _) = ws::connect(
        &Client::default(),
        &url,
        HeaderMap::new(),
        Config::default(),
    )
    .await
    .expect("connect");
    sock.send(Message::Text("close-me".into())).await.unwrap();
    assert_eq!(
        next(&mut sock).await,
        Message::Close(Some(CloseFrame {
            code: 4003,
            reason: "python bye".into()
        }))
    );
    assert!(within("the end", WAIT, sock.recv()).await.is_none());
    assert_eq!(py.next_line().await, "closed 4003 python bye");
}

/// A `wss://` handshake is refused before any byte when the URL is not a
/// WebSocket one; a non-WebSocket server's answer is reported with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_a_refused_handshake() {
    let server = serve(
        |_| {},
        |_req: Request<Body>| async { Response::new(Body::from("no")) },
    );
    let url = format!("ws://{}/ws", server.local_addr());
    let err = ws::connect(
        &Client::default(),
        &url,
        HeaderMap::new(),
        Config::default(),
    )
    .await
    .expect_err("a 200 is not a handshake");
    match err {
        ws::Error::Handshake {
            reason,
            handshake: Some(h),
        } => {
            assert!(reason.contains("200"), "{reason}");
            assert_eq!(h.status, 200);
            assert!(!h.accept_checked);
        }
        other => panic!("{other:?}"),
    }
    let err = ws::connect(
        &Client::default(),
        "http://x/",
        HeaderMap::new(),
        Config::default(),
    )
    .await
    .expect_err("not ws://");
    assert!(err.to_string().contains("ws://"), "{err}");
    stop(server).await;
}

async fn next(sock: &mut ws::WebSocket) -> Message {
    within("a message", WAIT, sock.recv())
        .await
        .expect("a message")
        .expect("no error")
}

// ---------------------------------------------------------------------------
// A raw WebSocket client: hand-written frames, for what libraries refuse
// to send.

struct RawWs {
    s: tokio::net::TcpStream,
}

impl RawWs {
    /// Handshakes over a fresh connection to `/ws`.
    async fn connect(addr: std::net::SocketAddr) -> RawWs {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            within("the 101", WAIT, s.read_exact(&mut b)).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        RawWs { s }
    }

    /// Sends one masked frame.
    async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.s.write_all(&f).await;
    }

    /// The next frame from the server: (opcode, payload); `None` at EOF.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        within("a frame from the server", WAIT, async {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).await.ok()?;
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.s.read_exact(&mut b).await.ok()?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.s.read_exact(&mut b).await.ok()?;
                len = u64::from_be_bytes(b);
            }
            assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
            let mut payload = vec![0u8; len as usize];
            self.s.read_exact(&mut payload).await.ok()?;
            Some((h[0] & 0x0f, payload))
        })
        .await
    }

    /// Reads until a close frame; its code.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let (op, payload) = self.read_frame().await?;
            if op == 8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }

    /// Reads and drops everything until the server closes.
    async fn until_eof(&mut self) {
        let mut buf = [0u8; 4096];
        while matches!(self.s.read(&mut buf).await, Ok(n) if n > 0) {}
    }
}

/// RFC 8441: keepwire's client opens the WebSocket on a stream of an
/// HTTP/2 connection (h2c here) with an extended CONNECT; keepwire's
/// server answers 200 (no Sec-WebSocket-Accept) and speaks WebSocket on
/// the stream: messages both ways and the close handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_server(Config::default(), tx));
    let mut ccfg = keepwire::ClientConfig::default();
    ccfg.http2_prior_knowledge = true;
    let client = Client::new(ccfg);
    let mut cfg = Config::default();
    cfg.http2 = true;
    let url = format!("ws://{}/ws", server.local_addr());
    let (mut sock, shake) = within(
        "the extended CONNECT",
        WAIT,
        ws::connect(&client, &url, HeaderMap::new(), cfg),
    )
    .await
    .expect("connect over HTTP/2");
    assert_eq!(shake.version, http::Version::HTTP_2);
    assert_eq!(shake.status, 200);
    assert!(!shake.accept_checked);
    assert!(shake.transcript().contains(":protocol: websocket"));
    for i in 0..3 {
        sock.send(Message::Text(format!("over h2 {i}")))
            .await
            .unwrap();
        assert_eq!(next(&mut sock).await, Message::Text(format!("over h2 {i}")));
    }
    within("close", WAIT, sock.close(1000, "bye"))
        .await
        .unwrap();
    let all = seen_all(&mut rx).await;
    assert!(
        all.iter().any(
            |s| matches!(s, Seen::Msg(Message::Close(Some(c))) if c.code == 1000 && c.reason == "bye")
        ),
        "{all:?}"
    );
    stop(server).await;
}

/// wss:// over a server whose ALPN offers h2 first: the handshake still
/// goes over HTTP/1.1 (an Upgrade has no meaning in HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_upgrades_over_http1_even_where_alpn_offers_h2() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut stls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    stls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let mut ctls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ctls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = serve(
        |c| c.tls = Some(std::sync::Arc::new(stls)),
        echo_server(Config::default(), tx),
    );
    let mut ccfg = keepwire::ClientConfig::default();
    ccfg.tls = Some(std::sync::Arc::new(ctls));
    let url = format!("wss://localhost:{}/ws", server.local_addr().port());
    let (mut sock, shake) = ws::connect(
        &Client::new(ccfg),
        &url,
        HeaderMap::new(),
        Config::default(),
    )
    .await
    .expect("wss connect");
    assert_eq!(
        (shake.version, shake.status.as_u16()),
        (http::Version::HTTP_11, 101)
    );
    sock.send(Message::Text("secure".into())).await.unwrap();
    assert_eq!(next(&mut sock).await, Message::Text("secure".into()));
    within("close", WAIT, sock.close(1000, "")).await.unwrap();
    stop(server).await;
}

/// The client side of the dead-peer timeout: a server that completes the
/// handshake and then never sends a frame (nor answers a ping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_drops_a_server_that_goes_silent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-key: "))
            .expect("a key")
            .trim()
            .to_string();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        s.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        // Silent from here on, but holding the connection open.
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    });
    let mut cfg = Config::default();
    cfg.ping_interval = Some(Duration::from_millis(200));
    cfg.dead_peer_timeout = Duration::from_millis(300);
    let url = format!("ws://{addr}/");
    let (mut sock, _) = ws::connect(&Client::default(), &url, HeaderMap::new(), cfg)
        .await
        .expect("connect");
    let got = within("the dead-peer timeout", WAIT, sock.recv()).await;
    match got {
        Some(Err(ws::Error::DeadPeer(d))) => assert_eq!(d, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
    assert!(sock.recv().await.is_none());
    drop(sock);
    silent.abort();
}

/// `recv` is cancel-safe: raced in `select!` against a timer that wins
/// often, it loses no message and keeps the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_is_cancel_safe_in_select() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_server(Config::default(), tx));
    let url = format!("ws://{}/ws", server.local_addr());
    let (sock, _) = ws::connect(
        &Client::default(),
        &url,
        HeaderMap::new(),
        Config::default(),
    )
    .await
    .expect("connect");
    let (sender, mut receiver) = sock.split();
    const N: usize = 500;
    let writer = tokio::spawn(async move {
        for i in 0..N {
            sender.send(Message::Text(format!("m{i}"))).await.unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        sender
    });
    let mut got = 0;
    let mut ticks = 0u64;
    within("all echoes", Duration::from_secs(20), async {
        while got < N {
            tokio::select! {
                m = receiver.recv() => {
                    assert_eq!(m.unwrap().unwrap(), Message::Text(format!("m{got}")));
                    got += 1;
                }
                _ = tokio::time::sleep(Duration::from_micros(50)) => ticks += 1,
            }
        }
    })
    .await;
    eprintln!("{N} messages, {ticks} timer wins");
    let sender = writer.await.unwrap();
    sender.close(1000, "").await.unwrap();
    assert!(matches!(
        within("the close reply", WAIT, receiver.recv()).await,
        Some(Ok(Message::Close(_)))
    ));
    stop(server).await;
}

/// `pipe_lines`, the engine of `keepwire ws`: lines out as text
/// messages, the echoes handed over, then (after the linger) our close
/// with 1000; and a close the server starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_lines_sends_lines_and_closes_after_the_input() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_server(Config::default(), tx));
    let url = format!("ws://{}/ws", server.local_addr());
    let client = Client::default();
    let (sock, _) = ws::connect(&client, &url, HeaderMap::new(), Config::default())
        .await
        .expect("connect");
    let mut got = Vec::new();
    let input: &[u8] = b"one\ntwo\n";
    let closed = within(
        "the piped session",
        WAIT,
        ws::pipe_lines(sock, input, Duration::from_millis(300), |m| {
            got.push(m.clone())
        }),
    )
    .await
    .expect("a clean close");
    assert_eq!(
        (closed.code, closed.by_peer, closed.is_normal()),
        (1000, false, true)
    );
    assert_eq!(
        &got[..2],
        [Message::Text("one".into()), Message::Text("two".into())]
    );
    assert!(matches!(got.last(), Some(Message::Close(Some(c))) if c.code == 1000));
    // The server closes first ("close-me" → 4001): not a normal end.
    let (sock, _) = ws::connect(&client, &url, HeaderMap::new(), Config::default())
        .await
        .expect("connect");
    let input: &[u8] = b"close-me\n";
    let closed = within(
        "the piped session",
        WAIT,
        ws::pipe_lines(sock, input, Duration::from_secs(5), |_| {}),
    )
    .await
    .expect("a clean close");
    assert_eq!(
        (
            closed.code,
            closed.reason.as_str(),
            closed.by_peer,
            closed.is_normal()
        ),
        (4001, "server bye", true, false)
    );
    stop(server).await;
}

/// Both halves write to one socket: while the sender waits on a peer that
/// does not read, the receiver answers a ping (its pong waits too). Once
/// the peer reads again, both go on: the sender is not left asleep until
/// its write timeout. (Without `Shared::poll_write`'s wake the stranding
/// depends on which half polled last: seen once with tracing, the sender
/// asleep 9 s; this run is its guard, not a deterministic trigger.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_while_the_sender_waits_does_not_strand_the_sender() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-key: "))
            .expect("a key")
            .trim()
            .to_string();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        s.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        // Not reading: the client's sends fill the socket buffers. Then a
        // ping, whose pong cannot go out either.
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[0x89, 0x02, b'h', b'i']).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Now read everything until the client closes.
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            match tokio::time::timeout(Duration::from_secs(15), s.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => return total,
            }
        }
    });
    let mut cfg = Config::default();
    cfg.write_timeout = Duration::from_secs(20);
    let url = format!("ws://{addr}/");
    let (sock, _) = ws::connect(&Client::default(), &url, HeaderMap::new(), cfg)
        .await
        .expect("connect");
    let (tx, mut rx) = sock.split();
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(m)) = rx.recv().await {
            if let Message::Ping(_) = m {
                pings += 1;
            }
        }
        pings
    });
    let started = std::time::Instant::now();
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    within(
        "the sends (the peer reads after 1 s)",
        Duration::from_secs(5),
        async {
            for _ in 0..200 {
                tx.send(Message::Binary(chunk.clone())).await.expect("send");
            }
        },
    )
    .await;
    eprintln!("200 x 64 KiB sent in {:?}", started.elapsed());
    drop(tx);
    reader.abort();
    let _ = reader.await;
    let got = within("the peer's count", Duration::from_secs(20), peer)
        .await
        .unwrap();
    assert!(got >= 200 * 64 * 1024, "{got}");
}
