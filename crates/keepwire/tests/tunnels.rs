//! Tunnels are still connections (R9.5): after a 101 the connection keeps
//! its place under `max_connections` and the per-IP cap until the tunnel
//! ends, and shows in the `tunnels_open` gauge.
//!
//! WebSocket through `keepwire proxy` with real peers on both sides:
//! Python's `websockets` client, node `ws` and Python `websockets` as
//! origins, and the proxy's `proxy_tunnels_open` gauge while they talk.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use keepwire::Body;
use keepwire::proxy::{Proxy, ProxyConfig, Route, Upstream};
use keepwire::upgrade::OnUpgrade;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Answers 101 and echoes the upgraded stream until the client closes.
async fn echo_upgrade(req: Request<Body>) -> Response<Body> {
    if let Some(on) = req.extensions().get::<OnUpgrade>().cloned() {
        tokio::spawn(async move {
            if let Some(mut up) = on.wait().await {
                let mut buf = [0u8; 1024];
                loop {
                    match up.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if up.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Body::empty())
            .unwrap();
    }
    Response::new(Body::from("plain"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_keeps_its_place_under_the_per_ip_cap() {
    let (server, metrics) = serve_with_metrics(
        |c| {
            c.max_connections_per_ip = 1;
            c.shutdown_timeout = Duration::from_millis(500);
        },
        echo_upgrade,
    );
    let addr = server.local_addr();
    let mut tunnel = RawClient::connect(addr).await;
    tunnel
        .send("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await;
    let resp = tunnel.head_response().await;
    assert_eq!(resp.status, 101);
    tunnel.send("ping").await;
    assert_eq!(tunnel.read_exact_raw(4).await, b"ping");
    eventually("the tunnel is counted", WAIT, || {
        metric(&metrics(), "tunnels_open") == 1
    })
    .await;
    assert_eq!(metric(&metrics(), "connections_open"), 1);
    // A second connection from the same IP is over the cap while the
    // tunnel lives.
    let mut second = RawClient::connect(addr).await;
    second.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(second.response().await.status, 503);
    // The tunnel ends: its place is given back.
    drop(tunnel);
    eventually("the tunnel's slot is given back", WAIT, || {
        let m = metrics();
        metric(&m, "tunnels_open") == 0 && metric(&m, "connections_open") == 0
    })
    .await;
    let mut third = RawClient::connect(addr).await;
    third.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(third.response().await.status, 200);
    stop(server).await;
}

// ---------------------------------------------------------------------------
// WebSocket through the proxy, real peers on both sides.

/// node `ws`, installed project-locally by `scripts/test`
/// (`target/node/node_modules/ws`); `None` (after saying why) when it is
/// missing and `KEEPWIRE_SKIP_PEERS=1`.
fn node_ws() -> Option<(PathBuf, PathBuf)> {
    let node = require_tool("node", "nodejs")?;
    let module =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/node/node_modules/ws");
    if module.join("package.json").is_file() {
        return Some((node, module));
    }
    if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!("skipping: node `ws` is not under target/node and KEEPWIRE_SKIP_PEERS=1");
        return None;
    }
    panic!("node `ws` is missing: `bash scripts/test` installs it under target/node");
}

/// python3 with the `websockets` package (`scripts/test` installs it).
fn python_websockets() -> Option<PathBuf> {
    let python = require_tool("python3", "python3")?;
    let ok = std::process::Command::new(&python)
        .args(["-c", "import websockets.asyncio.client"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!("skipping: python `websockets` is missing and KEEPWIRE_SKIP_PEERS=1");
        return None;
    }
    panic!("python `websockets` is missing: `bash scripts/test` installs it");
}

/// A node `ws` echo server on 127.0.0.1:0 that agrees to the first
/// subprotocol offered; prints its port.
const NODE_ECHO: &str = r#"
const { WebSocketServer } = require(process.argv[1]);
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0,
  handleProtocols: (protocols) => protocols.values().next().value || false });
wss.on('listening', () => console.log(wss.address().port));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
"#;

/// A Python `websockets` echo server on 127.0.0.1:0, same behaviour.
const PYTHON_ECHO: &str = r#"
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", 0,
                     select_subprotocol=lambda ws, offered: offered[0] if offered else None) as s:
        print(s.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()
asyncio.run(main())
"#;

/// A Python `websockets` client: text, a 100 KB binary message, a ping,
/// then the close handshake; prints what it saw.
const PYTHON_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], subprotocols=["chat"], open_timeout=5, close_timeout=5) as ws:
        print("subprotocol", ws.subprotocol)
        await ws.send("hello")
        print("text", await asyncio.wait_for(ws.recv(), 5))
        big = bytes(range(256)) * 400
        await ws.send(big)
        back = await asyncio.wait_for(ws.recv(), 5)
        print("binary", len(back), back == big)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)
        print("pong")
        await ws.close(1000, "bye")
        print("closed", ws.close_code, ws.close_reason)
asyncio.run(main())
"#;

/// Spawns an origin script and reads the port it prints.
async fn spawn_origin(program: &std::path::Path, args: &[String]) -> (ChildGuard, SocketAddr) {
    let mut child = ChildGuard::spawn(program, args);
    let out = child.child_mut().stdout.take().expect("stdout piped");
    let mut line = String::new();
    within(
        "the origin's port",
        WAIT,
        BufReader::new(out).read_line(&mut line),
    )
    .await
    .expect("read the port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port? {line:?}"));
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A reverse proxy for everything to `origin` (upgrades: websocket, the
/// default), served as `keepwire proxy` serves it.
fn proxy_to(origin: SocketAddr) -> (Arc<Proxy>, keepwire::server::ServerHandle) {
    let mut pc = ProxyConfig::default();
    pc.routes = vec![Route::new(
        None,
        "/",
        vec![Upstream::new(origin.to_string())],
    )];
    let proxy = Proxy::new(pc);
    let server = serve(|c| *c = Proxy::server_config(), proxy.clone());
    (proxy, server)
}

/// The Python client through the proxy to `origin`.
async fn python_client_through_proxy(python: &std::path::Path, origin: SocketAddr) {
    let (proxy, server) = proxy_to(origin);
    let url = format!("ws://{}/echo", server.local_addr());
    let args = vec!["-c".to_string(), PYTHON_CLIENT.to_string(), url];
    let out = run_tool(python, &args, WAIT * 2).await;
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "subprotocol chat",
            "text hello",
            "binary 102400 True",
            "pong",
            "closed 1000 bye"
        ],
        "{}",
        out.stderr
    );
    assert_eq!(
        proxy
            .metrics()
            .tunnels
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    eventually("the relay ended", WAIT, || {
        metric(
            &proxy.render_metrics(),
            "proxy_tunnels_open{kind=\"upgrade\"}",
        ) == 0
    })
    .await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_through_the_proxy_to_node_ws() {
    let (Some(python), Some((node, module))) = (python_websockets(), node_ws()) else {
        return;
    };
    let args = vec!["-e".into(), NODE_ECHO.into(), module.display().to_string()];
    let (_node, origin) = spawn_origin(&node, &args).await;
    python_client_through_proxy(&python, origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_through_the_proxy_to_python_websockets() {
    let Some(python) = python_websockets() else {
        return;
    };
    let args = vec!["-c".into(), PYTHON_ECHO.into()];
    let (_origin_guard, origin) = spawn_origin(&python, &args).await;
    python_client_through_proxy(&python, origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_gauge_counts_an_open_websocket_to_node_ws() {
    let Some((node, module)) = node_ws() else {
        return;
    };
    let args = vec!["-e".into(), NODE_ECHO.into(), module.display().to_string()];
    let (_node, origin) = spawn_origin(&node, &args).await;
    let (proxy, server) = proxy_to(origin);
    let open = || {
        metric(
            &proxy.render_metrics(),
            "proxy_tunnels_open{kind=\"upgrade\"}",
        )
    };
    assert_eq!(open(), 0);
    let mut c = RawClient::connect(server.local_addr()).await;
    c.send(
        "GET /g HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let r = c.head_response().await;
    assert_eq!(r.status, 101, "{}", r.raw_head);
    // RFC 6455 §1.3's example key and its accept value, from node.
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    // A masked text frame "hi" comes back unmasked.
    c.send(b"\x81\x82\x01\x02\x03\x04\x69\x6b").await;
    assert_eq!(c.read_exact_raw(4).await, b"\x81\x02hi");
    assert_eq!(open(), 1);
    assert_eq!(
        metric(
            &proxy.render_metrics(),
            "proxy_tunnels_open{kind=\"connect\"}"
        ),
        0
    );
    drop(c);
    eventually("the gauge drops when the client goes", WAIT, || open() == 0).await;
    stop(server).await;
}

// ---------------------------------------------------------------------------
// RFC 8441 from an HTTP/2 client, HTTP/1.1 Upgrade to the origin.

/// A client frame (FIN set, masked as RFC 6455 §5.3 requires).
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn h2c_client() -> keepwire::Client {
    let mut cfg = keepwire::client::ClientConfig::default();
    cfg.http2_prior_knowledge = true;
    keepwire::Client::new(cfg)
}

/// An extended CONNECT for a WebSocket (RFC 8441 §5) to `addr`.
fn websocket_over_h2(addr: SocketAddr, path: &str) -> Request<Body> {
    let mut req = Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat, superchat")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(keepwire::upgrade::Protocol::from_static("websocket"));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_extended_connect_reaches_node_ws_as_an_http1_upgrade() {
    let Some((node, module)) = node_ws() else {
        return;
    };
    let args = vec!["-e".into(), NODE_ECHO.into(), module.display().to_string()];
    let (_node, origin) = spawn_origin(&node, &args).await;
    let (proxy, server) = proxy_to(origin);
    let open = || {
        metric(
            &proxy.render_metrics(),
            "proxy_tunnels_open{kind=\"upgrade\"}",
        )
    };
    let client = h2c_client();
    let resp = within(
        "the extended CONNECT",
        WAIT,
        client.request(websocket_over_h2(server.local_addr(), "/echo")),
    )
    .await
    .unwrap();
    // node answered 101 with an Accept for the proxy's key; the client
    // gets RFC 8441's 200, the subprotocol node chose, and no Accept.
    assert_eq!(resp.status(), StatusCode::OK, "{resp:?}");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let h = resp.headers();
    assert_eq!(h.get("sec-websocket-protocol").unwrap(), "chat");
    assert!(h.get("sec-websocket-accept").is_none(), "{h:?}");
    let on = resp.extensions().get::<OnUpgrade>().cloned().unwrap();
    let mut up = within("the stream", WAIT, on.wait()).await.unwrap();
    up.write_all(&masked(0x1, b"hi")).await.unwrap();
    let mut echo = [0u8; 4];
    within("the echo", WAIT, up.read_exact(&mut echo))
        .await
        .unwrap();
    assert_eq!(&echo, b"\x81\x02hi");
    assert_eq!(open(), 1);
    // The close handshake crosses both translations: node answers 1000.
    up.write_all(&masked(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let mut close = [0u8; 4];
    within("node's close", WAIT, up.read_exact(&mut close))
        .await
        .unwrap();
    assert_eq!(close, [0x88, 0x02, 0x03, 0xe8]);
    // node closes its TCP connection; the proxy ends the stream.
    let mut rest = Vec::new();
    within("the end of the stream", WAIT, up.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    drop(up);
    eventually("the relay ended", WAIT, || open() == 0).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_connect_is_refused_where_the_origin_does_not_switch_or_lies_or_the_route_forbids()
 {
    // An origin that answers every request 200, never 101.
    let origin = serve(
        |_| {},
        |_req: Request<Body>| async { Response::new(Body::from("plain")) },
    );
    // An origin that switches with an Accept for some other key.
    let liar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar_addr = liar.local_addr().unwrap();
    let liar_task = tokio::spawn(async move {
        while let Ok((mut s, _)) = liar.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).await.is_ok() {
                head.push(byte[0]);
            }
            let _ = s
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                      Upgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                )
                .await;
        }
    });
    let mut pc = ProxyConfig::default();
    let up = || vec![Upstream::new(origin.local_addr().to_string())];
    pc.routes = vec![
        Route::new(None, "/", up()),
        Route::new(None, "/none", up()).with_upgrades(Vec::<String>::new()),
        Route::new(None, "/liar", vec![Upstream::new(liar_addr.to_string())]),
    ];
    let proxy = Proxy::new(pc);
    let server = serve(|c| *c = Proxy::server_config(), proxy.clone());
    let client = h2c_client();
    for (path, status, why) in [
        ("/", StatusCode::BAD_GATEWAY, "did not switch"),
        ("/none", StatusCode::FORBIDDEN, "not relayed on this route"),
        (
            "/liar",
            StatusCode::BAD_GATEWAY,
            "Sec-WebSocket-Accept does not match",
        ),
    ] {
        let resp = within(
            "the extended CONNECT",
            WAIT,
            client.request(websocket_over_h2(server.local_addr(), path)),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert!(resp.extensions().get::<OnUpgrade>().is_none());
        let body = resp.into_body().collect(4096).await.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(why), "{path}: {body}");
    }
    eventually("no tunnel left", WAIT, || {
        metric(
            &proxy.render_metrics(),
            "proxy_tunnels_open{kind=\"upgrade\"}",
        ) == 0
    })
    .await;
    stop(server).await;
    stop(origin).await;
    liar_task.abort();
}

/// node: a page, a `/tick` fetch answered after 250 ms, and `ws` echoing
/// with the HTTP version its handshake came in.
const NODE_PAGE_AND_WS: &str = r#"
const http = require('http');
const { WebSocketServer } = require(process.argv[1]);
const page = process.argv[2];
const server = http.createServer((req, res) => {
  if (req.url === '/tick') { setTimeout(() => res.end('tick'), 250); return; }
  res.setHeader('content-type', 'text/html; charset=utf-8');
  res.end(page);
});
const wss = new WebSocketServer({ server });
wss.on('connection', (ws, req) => {
  ws.on('message', (data) => ws.send('node saw HTTP/' + req.httpVersion + ': ' + data));
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"#;

const BROWSER_PAGE: &str = r#"<!doctype html><html><body><p id="out">pending</p><script>
const out = document.getElementById('out');
let done = false;
const ws = new WebSocket('wss://' + location.host + '/ws');
ws.onopen = () => ws.send('hello');
ws.onmessage = (e) => { out.textContent = e.data; done = true; };
ws.onerror = () => { out.textContent = 'websocket error'; done = true; };
// Headless virtual time waits for fetches, not for WebSocket events (and
// sometimes holds those back until a fetch ends): short fetches, one
// after another, until the echo is in.
(async () => { for (let i = 0; i < 40 && !done; i++) { await fetch('/tick'); } })();
</script></body></html>"#;

/// Chromium → `keepwire proxy` (TLS, h2) → node `ws` (HTTP/1.1): the
/// browser's WebSocket rides its HTTP/2 connection as an extended CONNECT,
/// the proxy turns it into an HTTP/1.1 upgrade, and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_through_the_proxy_over_http2_to_node_ws() {
    let (Some(chromium), Some((node, module))) = (require_tool("chromium", "chromium"), node_ws())
    else {
        return;
    };
    let args = vec![
        "-e".into(),
        NODE_PAGE_AND_WS.into(),
        module.display().to_string(),
        BROWSER_PAGE.into(),
    ];
    let (_node, origin) = spawn_origin(&node, &args).await;
    let mut pc = ProxyConfig::default();
    pc.routes = vec![Route::new(
        None,
        "/",
        vec![Upstream::new(origin.to_string())],
    )];
    let proxy = Proxy::new(pc);
    // The proxy behind a handler that notes how each request came.
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (log, p) = (seen.clone(), proxy.clone());
    let server = serve(
        |c| {
            *c = Proxy::server_config();
            c.tls = Some(self_signed_tls());
        },
        move |req: Request<Body>| {
            let protocol = keepwire::upgrade::connect_protocol(&req).map(|p| p.as_str().to_owned());
            let line = format!("{:?} {} {protocol:?}", req.version(), req.method());
            log.lock().unwrap().push(line);
            p.clone().handle(req)
        },
    );
    let url = format!("https://localhost:{}/", server.local_addr().port());
    let out = chromium_dom(&chromium, "chromium-proxy-rfc8441", url).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        out.stdout.contains("node saw HTTP/1.1: hello"),
        "DOM: {}\nthe proxy saw: {seen:?}\nmetrics: {}\nstderr: {}",
        out.stdout,
        proxy.render_metrics(),
        out.stderr
    );
    assert!(
        seen.contains(&"HTTP/2.0 CONNECT Some(\"websocket\")".to_string()),
        "{seen:?}"
    );
    assert_eq!(
        proxy
            .metrics()
            .tunnels
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    stop(server).await;
}

/// A self-signed certificate for `localhost`; ALPN offers h2 and
/// http/1.1.
fn self_signed_tls() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(server)
}

/// The tunnel idle timeout holds for a WebSocket that came by RFC 8441
/// too: quiet for `tunnel_idle_timeout`, the proxy drops both sides and
/// the client's HTTP/2 stream ends with it (the connection stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_http2_websocket_is_closed_by_the_tunnel_idle_timeout() {
    let Some((node, module)) = node_ws() else {
        return;
    };
    let args = vec!["-e".into(), NODE_ECHO.into(), module.display().to_string()];
    let (_node, origin) = spawn_origin(&node, &args).await;
    let mut pc = ProxyConfig::default();
    pc.routes = vec![Route::new(
        None,
        "/",
        vec![Upstream::new(origin.to_string())],
    )];
    pc.tunnel_idle_timeout = Duration::from_millis(500);
    let proxy = Proxy::new(pc);
    let (server, server_metrics) =
        serve_with_metrics(|c| *c = Proxy::server_config(), proxy.clone());
    let client = h2c_client();
    let resp = within(
        "the extended CONNECT",
        WAIT,
        client.request(websocket_over_h2(server.local_addr(), "/idle")),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let on = resp.extensions().get::<OnUpgrade>().cloned().unwrap();
    let mut up = within("the stream", WAIT, on.wait()).await.unwrap();
    up.write_all(&masked(0x1, b"hi")).await.unwrap();
    let mut echo = [0u8; 4];
    within("the echo", WAIT, up.read_exact(&mut echo))
        .await
        .unwrap();
    // Then nothing either way: the proxy ends the tunnel.
    let mut rest = Vec::new();
    let end = within("the idle close", WAIT, up.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{end:?}");
    let m = proxy.render_metrics();
    assert_eq!(metric(&m, "proxy_tunnels_idle_closed_total"), 1);
    eventually("the tunnel is gone from both gauges", WAIT, || {
        metric(
            &proxy.render_metrics(),
            "proxy_tunnels_open{kind=\"upgrade\"}",
        ) == 0
            && metric(&server_metrics(), "tunnels_open") == 0
    })
    .await;
    // The HTTP/2 connection itself is still there for other requests.
    let r = client
        .get(&format!("http://{}/", server.local_addr()))
        .await;
    assert!(r.is_ok(), "{r:?}");
    let opened = &client.metrics().connections_opened;
    assert_eq!(opened.load(std::sync::atomic::Ordering::Relaxed), 1);
    stop(server).await;
}
