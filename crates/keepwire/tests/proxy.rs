//! The proxy from the outside (issue 5, "Tests"): real origins (nginx), real
//! proxy clients (curl), and a scripted recording origin that shows exactly
//! what crosses each hop (R3, R6, R8, R9, R10).
//!
//! The proxy runs as `keepwire proxy` wires it: keepwire's server with
//! [`Proxy::server_config`] (`proxy_connection`, `preserve_header_case`, a
//! pipelining depth of 8), serving `Arc<Proxy>` (each HTTP/1 request's
//! head reaches [`Proxy::handle_incoming`] as read). Every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Response;
use keepwire::Body;
use keepwire::proxy::{Proxy, ProxyConfig, ReusePolicy, Route, Upstream};
use keepwire::server::ServerHandle;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------
// The proxy under test.

/// A proxy served the way the CLI serves it.
struct Front {
    proxy: Arc<Proxy>,
    server: ServerHandle,
}

impl Front {
    fn start(cfg: ProxyConfig) -> Front {
        let proxy = Proxy::new(cfg);
        let p = proxy.clone();
        let server = serve(|c| *c = Proxy::server_config(), p);
        Front { proxy, server }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    async fn client(&self) -> RawClient {
        RawClient::connect(self.addr()).await
    }

    /// Upstream connections the proxy opened.
    fn opened(&self) -> u64 {
        self.proxy
            .client()
            .metrics()
            .connections_opened
            .load(Relaxed)
    }

    /// Client connections the proxy accepted.
    fn accepted(&self) -> u64 {
        self.server.metrics().connections_accepted.load(Relaxed)
    }
}

/// A reverse proxy for everything to `origin`.
fn reverse(origin: SocketAddr, reuse: ReusePolicy) -> ProxyConfig {
    {
        let mut pc = ProxyConfig::default();
        pc.routes = vec![Route::new(
            None,
            "/",
            vec![Upstream::new(origin.to_string())],
        )];
        pc.reuse = reuse;
        pc.pool_size = 4;
        pc
    }
}

/// A forward proxy that lets CONNECT reach `ports`, and every destination
/// reach loopback (where the tests' origins are).
fn forward(ports: &[u16]) -> ProxyConfig {
    {
        let mut pc = forward_default(ports);
        pc.allow_destination = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        pc
    }
}

/// A forward proxy with the default destination policy.
fn forward_default(ports: &[u16]) -> ProxyConfig {
    {
        let mut pc = ProxyConfig::default();
        pc.forward = true;
        pc.connect_ports = ports.to_vec();
        pc
    }
}

// ---------------------------------------------------------------------------
// A scripted origin that records the raw bytes of every request it gets.

/// One request as the origin received it.
#[derive(Debug, Clone)]
struct Arrival {
    /// 1-based connection number at the origin.
    conn: usize,
    /// 1-based index of the request on that connection.
    index: usize,
    /// The head exactly as received (request line, field lines, CRLFCRLF).
    head: String,
    body: Vec<u8>,
}

impl Arrival {
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    /// Field lines as spelled, in order.
    fn fields(&self) -> Vec<(String, String)> {
        self.head
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect()
    }

    /// Values of `name`, case-insensitively.
    fn values(&self, name: &str) -> Vec<String> {
        self.fields()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        !self.values(name).is_empty()
    }
}

/// What the origin does with a request.
enum Act {
    /// Write these bytes and keep reading requests.
    Reply(Vec<u8>),
    /// Write these bytes, then close.
    ReplyClose(Vec<u8>),
    /// Close without answering.
    Close,
    /// Wait, then act.
    Delay(Duration, Box<Act>),
    /// Write these bytes (a 101), then echo everything until EOF, then close.
    UpgradeEcho(Vec<u8>),
    /// Write these bytes, then act (a response in several writes).
    Then(Vec<u8>, Box<Act>),
}

type Script = Arc<dyn Fn(&Arrival) -> Act + Send + Sync>;

struct ScriptedOrigin {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    accepted: Arc<AtomicUsize>,
    /// An echoing (upgraded) connection saw the proxy's FIN.
    tunnel_eof: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        // Dropping the task's JoinSet aborts every connection task too.
        self.task.abort();
    }
}

impl ScriptedOrigin {
    async fn start(script: impl Fn(&Arrival) -> Act + Send + Sync + 'static) -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let script: Script = Arc::new(script);
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let tunnel_eof = Arc::new(AtomicBool::new(false));
        let (a, n, e) = (arrivals.clone(), accepted.clone(), tunnel_eof.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((stream, _)) = r else { return };
                        let _ = stream.set_nodelay(true);
                        let id = n.fetch_add(1, Relaxed) + 1;
                        conns.spawn(origin_conn(stream, id, script.clone(), a.clone(), e.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        ScriptedOrigin {
            addr,
            arrivals,
            accepted,
            tunnel_eof,
            task,
        }
    }

    /// Answers every request with `200` and "origin: PATH", keep-alive.
    async fn echo_path() -> ScriptedOrigin {
        ScriptedOrigin::start(|a| Act::Reply(ok(&format!("origin: {}", a.path())))).await
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    fn count(&self, path: &str) -> usize {
        self.arrivals().iter().filter(|a| a.path() == path).count()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Relaxed)
    }
}

async fn origin_conn(
    mut s: TcpStream,
    conn: usize,
    script: Script,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    tunnel_eof: Arc<AtomicBool>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 16 * 1024];
    let mut index = 0;
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let len = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < len {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        index += 1;
        let arrival = Arrival {
            conn,
            index,
            head,
            body,
        };
        arrivals.lock().unwrap().push(arrival.clone());
        let mut act = script(&arrival);
        loop {
            match act {
                Act::Delay(d, next) => {
                    tokio::time::sleep(d).await;
                    act = *next;
                }
                Act::Reply(bytes) => {
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                    break;
                }
                Act::ReplyClose(bytes) => {
                    let _ = s.write_all(&bytes).await;
                    let _ = s.shutdown().await;
                    return;
                }
                Act::Close => return,
                Act::Then(bytes, next) => {
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                    act = *next;
                }
                Act::UpgradeEcho(bytes) => {
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                    if !buf.is_empty() && s.write_all(&buf).await.is_err() {
                        return;
                    }
                    loop {
                        match s.read(&mut tmp).await {
                            Ok(0) => {
                                tunnel_eof.store(true, Relaxed);
                                let _ = s.shutdown().await;
                                return;
                            }
                            Ok(n) => {
                                if s.write_all(&tmp[..n]).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                }
            }
        }
    }
}

/// `200 OK` with a Content-Length body.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A plain TCP echo server (a CONNECT target); counts connections.
async fn tcp_echo() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Relaxed);
            conns.spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, count, task)
}

/// Sleeps a little so that anything that was going to reach an origin has.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

// ---------------------------------------------------------------------------
// 1. nginx as the origin.

/// The nginx master. SIGKILL (what [`ChildGuard`] sends) would orphan its
/// worker, so on drop it is first asked to stop (SIGTERM: nginx's fast
/// shutdown, which ends the worker too) and waited for, bounded; the guard
/// kills it only if that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_origin_100_requests_one_client_connection_few_upstream_connections() {
    let Some(bin) = require_tool("nginx", "nginx") else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let front = Front::start(reverse(nginx.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    for i in 0..100 {
        let (name, want) = &nginx.files[i % nginx.files.len()];
        c.send(get(&format!("/{name}"))).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "request {i}: {:?}", r.raw_head);
        assert!(r.body == *want, "request {i}: wrong body for {name}");
        assert!(
            r.all("via").iter().any(|v| v.contains("1.1 keepwire")),
            "no Via on {:?}",
            r.raw_head
        );
        assert!(r.header("connection").is_none_or(|v| !v.contains("close")));
    }
    let opened = front.opened();
    assert!(
        opened <= 4,
        "{opened} upstream connections over a pool cap of 4"
    );
    // Safe reuse sends a client connection's first request on a fresh
    // upstream connection; the 99 others reuse it (serial client).
    assert_eq!(opened, 1, "upstream connections opened");
    assert_eq!(
        front.proxy.client().metrics().reused.load(Relaxed),
        99,
        "requests on a reused upstream connection"
    );
    assert_eq!(front.accepted(), 1, "client connections accepted");
    // nginx's side agrees: 100 requests on `opened` connections.
    let log = Arc::new(Mutex::new(Vec::new()));
    eventually("nginx logged 100 requests", WAIT, || {
        let l = nginx.access_log();
        let n = l.len();
        *log.lock().unwrap() = l;
        n >= 100
    })
    .await;
    let log = log.lock().unwrap().clone();
    let mut conns: Vec<u64> = log.iter().map(|(c, _, _)| *c).collect();
    conns.sort_unstable();
    conns.dedup();
    assert_eq!(conns.len() as u64, opened, "nginx connections: {conns:?}");
    assert_eq!(log.iter().map(|(_, n, _)| *n).max(), Some(100));
    // The client connection is still open and usable.
    c.send(get("/f0.txt")).await;
    assert_eq!(c.response().await.status, 200);
}

// ---------------------------------------------------------------------------
// 2. curl as a forward-proxy client, CONNECT tunnels.

/// An in-process origin answering "origin saw TARGET".
fn small_http_origin() -> ServerHandle {
    serve(
        |_| {},
        |req: http::Request<Body>| async move {
            Response::new(Body::from(format!("origin saw {}", req.uri())))
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_forward_proxy_absolute_form_and_connect_tunnel() {
    let Some(curl) = require_tool("curl", "curl") else {
        return;
    };
    let origin = small_http_origin();
    let denied = small_http_origin();
    let op = origin.local_addr().port();
    let front = Front::start(forward(&[op]));
    let proxy = format!("http://{}", front.addr());
    let run = |args: Vec<String>| {
        let curl = curl.clone();
        async move { run_tool(&curl, &args, Duration::from_secs(15)).await }
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();

    // Absolute-form through `-x`.
    let out = run(s(&[
        "-sS",
        "--max-time",
        "10",
        "-i",
        "-x",
        &proxy,
        &format!("http://127.0.0.1:{op}/path?q=1"),
    ]))
    .await;
    assert!(out.status.success(), "curl -x failed: {out:?}");
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(out.stdout.ends_with("origin saw /path?q=1"), "{out:?}");
    assert!(
        out.stdout
            .to_ascii_lowercase()
            .contains("via: 1.1 keepwire"),
        "{out:?}"
    );

    // `-p`: CONNECT 127.0.0.1:op, then plain HTTP inside the tunnel.
    let out = run(s(&[
        "-sS",
        "--max-time",
        "10",
        "-p",
        "-x",
        &proxy,
        "-w",
        "\n%{http_connect}",
        &format!("http://127.0.0.1:{op}/tunnelled"),
    ]))
    .await;
    assert!(out.status.success(), "curl -p failed: {out:?}");
    assert_eq!(out.stdout, "origin saw /tunnelled\n200", "{out:?}");
    assert_eq!(front.proxy.metrics().tunnels.load(Relaxed), 1);

    // CONNECT to a port that is not allowed: 403, and curl fails.
    let dp = denied.local_addr().port();
    let out = run(s(&[
        "-sS",
        "--max-time",
        "10",
        "-p",
        "-x",
        &proxy,
        "-w",
        "%{http_connect}",
        &format!("http://127.0.0.1:{dp}/"),
    ]))
    .await;
    assert!(!out.status.success(), "CONNECT to {dp} succeeded: {out:?}");
    assert!(out.stdout.contains("403"), "{out:?}");
    assert_eq!(
        denied.metrics().connections_accepted.load(Relaxed),
        0,
        "the denied port was contacted"
    );
}

#[tokio::test]
async fn connect_tunnel_relays_raw_tcp_and_refuses_other_ports() {
    let (echo, echo_conns, _task) = tcp_echo().await;
    let (other, other_conns, _task2) = tcp_echo().await;
    let front = Front::start(forward(&[echo.port()]));

    let mut c = front.client().await;
    c.send(format!(
        "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nProxy-Connection: keep-alive\r\n\r\n"
    ))
    .await;
    let r = c.head_response().await;
    assert_eq!(r.status, 200, "{:?}", r.raw_head);
    assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none());
    for round in 0..3 {
        let msg = format!("not http at all, round {round}\n").into_bytes();
        c.send(&msg).await;
        assert_eq!(c.read_exact_raw(msg.len()).await, msg);
    }
    let big = pattern(256 * 1024);
    let mut w = c.take_writer();
    let b = big.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&b).await.unwrap();
        w.shutdown().await.unwrap();
    });
    assert!(
        c.read_exact_raw(big.len()).await == big,
        "echoed bytes differ"
    );
    within("writer", WAIT, writer).await.unwrap();
    // Our FIN went through; the echo server's FIN came back.
    let (rest, _) = c.read_to_eof().await;
    assert!(rest.is_empty());
    assert_eq!(echo_conns.load(Relaxed), 1);

    // A port outside connect_ports: 403, nothing connects there.
    let mut c = front.client().await;
    c.send(format!("CONNECT {other} HTTP/1.1\r\nHost: {other}\r\n\r\n"))
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 403, "{:?}", r.raw_head);
    // The connection is still HTTP: another request is answered.
    c.send(format!(
        "GET http://{echo}/ HTTP/1.1\r\nHost: {echo}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    let _ = c.try_response(false).await;
    settle().await;
    assert_eq!(
        other_conns.load(Relaxed),
        0,
        "the refused port was contacted"
    );

    // Reverse mode never tunnels.
    let origin = ScriptedOrigin::echo_path().await;
    let rev = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = rev.client().await;
    c.send(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n"))
        .await;
    assert_eq!(c.response().await.status, 405);
}

// ---------------------------------------------------------------------------
// 3. What crosses the hop, both ways.

#[tokio::test]
async fn hop_by_hop_fields_never_cross_and_end_to_end_fields_keep_order_and_case() {
    let origin = ScriptedOrigin::start(|_| {
        Act::Reply(
            b"HTTP/1.1 200 OK\r\n\
              X-Resp-One: 1\r\n\
              Connection: X-Bar\r\n\
              X-Bar: secret\r\n\
              Keep-Alive: timeout=5, max=100\r\n\
              Proxy-Authenticate: Basic realm=\"origin\"\r\n\
              Content-Length: 2\r\n\
              x-RESP-two: 2\r\n\
              \r\n\
              ok"
            .to_vec(),
        )
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send(
        "GET /rec?x=1 HTTP/1.1\r\n\
         Host: origin.test\r\n\
         X-Custom-Header: a\r\n\
         Connection: X-Foo, keep-alive\r\n\
         X-Foo: 1\r\n\
         content-TYPE: text/plain\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive, X-Pc\r\n\
         X-Pc: named by Proxy-Connection\r\n\
         TE: trailers\r\n\
         Trailer: X-Checksum\r\n\
         Upgrade: h2c\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         X-Multi: one\r\n\
         X-Multi: two\r\n\
         x-MiXeD: c\r\n\
         connection: x-late\r\n\
         X-Late: named on a second Connection line\r\n\
         Accept: */*\r\n\
         \r\n",
    )
    .await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{:?}", r.raw_head);
    assert_eq!(r.text(), "ok");

    let arrivals = origin.arrivals();
    assert_eq!(arrivals.len(), 1);
    let a = &arrivals[0];
    assert_eq!(a.request_line(), "GET /rec?x=1 HTTP/1.1");
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "x-foo",
        "x-pc",
        "x-late",
    ] {
        assert!(!a.has(hop), "{hop} crossed the hop:\n{}", a.head);
    }
    assert_eq!(a.values("via"), ["1.1 keepwire"], "{}", a.head);
    // End-to-end fields: same order, same spelling, same values. (Via and a
    // framing field of the proxy's own are the only additions allowed.)
    let kept: Vec<(String, String)> = a
        .fields()
        .into_iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("via") && !n.eq_ignore_ascii_case("content-length")
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("Host", "origin.test"),
        ("X-Custom-Header", "a"),
        ("content-TYPE", "text/plain"),
        ("X-Multi", "one"),
        ("X-Multi", "two"),
        ("x-MiXeD", "c"),
        ("Accept", "*/*"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(kept, want, "arrived head:\n{}", a.head);
    if let Some(cl) = a.values("content-length").first() {
        assert_eq!(cl, "0");
    }

    // The origin's hop-by-hop response fields stop at the proxy.
    assert!(r.header("x-bar").is_none(), "{}", r.raw_head);
    assert!(r.header("proxy-authenticate").is_none(), "{}", r.raw_head);
    for v in r.all("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-bar"), "{}", r.raw_head);
    }
    for v in r.all("keep-alive") {
        // The proxy may announce its own client-side timeout; never the
        // origin's hint.
        assert!(
            !v.contains("max=100") && !v.contains("timeout=5,"),
            "{}",
            r.raw_head
        );
    }
    assert!(
        r.raw_head.contains("\r\nX-Resp-One: 1\r\n"),
        "{}",
        r.raw_head
    );
    assert!(
        r.raw_head.contains("\r\nx-RESP-two: 2\r\n"),
        "{}",
        r.raw_head
    );
    let one = r.raw_head.find("X-Resp-One").unwrap();
    let two = r.raw_head.find("x-RESP-two").unwrap();
    assert!(one < two, "response field order changed: {}", r.raw_head);
    assert!(
        r.all("via").iter().any(|v| v.contains("1.1 keepwire")),
        "{}",
        r.raw_head
    );
}

#[tokio::test]
async fn a_request_that_already_passed_the_proxy_is_a_loop() {
    let origin = ScriptedOrigin::echo_path().await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send("GET / HTTP/1.1\r\nHost: t\r\nVia: 1.0 other, 1.1 keepwire\r\n\r\n")
        .await;
    assert_eq!(c.response().await.status, 508);
    settle().await;
    assert_eq!(origin.accepted(), 0);
}

// ---------------------------------------------------------------------------
// 4. The dumb-proxy scenario (R6.1, R6.2, R6.4).

/// An HTTP/1.0 origin: keeps the connection only when asked with
/// `Connection: Keep-Alive` (then says so), otherwise answers and closes.
async fn http10_origin() -> ScriptedOrigin {
    ScriptedOrigin::start(|a| {
        let body = format!("1.0 origin: {}", a.path());
        let asked = a
            .values("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("keep-alive"));
        if asked {
            Act::Reply(
                format!(
                    "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=30\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        } else {
            Act::ReplyClose(
                format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    .into_bytes(),
            )
        }
    })
    .await
}

#[tokio::test]
async fn http10_keep_alive_client_through_the_proxy_never_hangs() {
    let origin = http10_origin().await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.read_timeout = Duration::from_secs(3);
    for path in ["/one", "/two", "/three"] {
        let started = Instant::now();
        c.send(format!(
            "GET {path} HTTP/1.0\r\nHost: t\r\nConnection: Keep-Alive\r\n\r\n"
        ))
        .await;
        let r = within(
            "a response on the HTTP/1.0 keep-alive connection",
            Duration::from_secs(3),
            c.response(),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.raw_head);
        assert_eq!(r.text(), format!("1.0 origin: {path}"));
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "the proxy must grant HTTP/1.0 keep-alive itself: {:?}",
            r.raw_head
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert_eq!(front.accepted(), 1, "the client connection persisted");
    // The client's Connection: Keep-Alive never reached the origin as such.
    let arrivals = origin.arrivals();
    assert_eq!(arrivals.len(), 3);
    assert!(
        !arrivals[0].has("keep-alive") && !arrivals[0].has("connection"),
        "{}",
        arrivals[0].head
    );
}

#[tokio::test]
async fn http10_proxy_connection_keep_alive_is_honoured_for_the_client_hop_only() {
    let origin = ScriptedOrigin::echo_path().await;
    let front = Front::start(forward(&[]));
    let o = origin.addr;
    let mut c = front.client().await;
    c.read_timeout = Duration::from_secs(3);
    for path in ["/a", "/b"] {
        c.send(format!(
            "GET http://{o}{path} HTTP/1.0\r\nHost: {o}\r\nProxy-Connection: keep-alive\r\nUser-Agent: old\r\n\r\n"
        ))
        .await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{:?}", r.raw_head);
        assert_eq!(r.text(), format!("origin: {path}"));
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "{:?}",
            r.raw_head
        );
        assert!(r.header("proxy-connection").is_none());
    }
    assert_eq!(front.accepted(), 1);
    for a in origin.arrivals() {
        assert!(!a.has("proxy-connection"), "{}", a.head);
        assert!(!a.has("connection"), "{}", a.head);
        assert_eq!(a.values("user-agent"), ["old"]);
        assert_eq!(a.values("host"), [o.to_string()]);
        assert!(a.request_line().starts_with("GET /"), "{}", a.head);
    }

    // Without keep-alive an HTTP/1.0 client's connection closes after the
    // response (R6.4), and the origin-side connection is unaffected.
    let mut c = front.client().await;
    c.send(format!("GET http://{o}/c HTTP/1.0\r\nHost: {o}\r\n\r\n"))
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    c.expect_eof().await;
}

// ---------------------------------------------------------------------------
// 5. Truncated upstream bodies (R8.2).

#[tokio::test]
async fn truncated_content_length_body_reaches_the_client_truncated_then_closes() {
    let origin = ScriptedOrigin::start(|_| {
        let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
        r.extend_from_slice(&[b'x'; 40]);
        Act::ReplyClose(r)
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send(get("/cut")).await;
    let (raw, _clean) = c.read_to_eof().await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-length: 100"),
        "the length must not be fixed: {head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert_eq!(body.len(), 40, "body bytes before the close");
    assert!(c.at_eof(), "the client connection must close");
    eventually("the truncation counted", WAIT, || {
        front.proxy.client().metrics().truncated.load(Relaxed) == 1
    })
    .await;
}

#[tokio::test]
async fn truncated_chunked_body_reaches_the_client_without_its_last_chunk() {
    let origin = ScriptedOrigin::start(|_| {
        Act::ReplyClose(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n"
                .to_vec(),
        )
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send(get("/cut")).await;
    let (raw, _clean) = c.read_to_eof().await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked"),
        "{head}"
    );
    assert!(
        body.contains("hello") && body.contains(" world"),
        "{body:?}"
    );
    assert!(
        !body.contains("\r\n0\r\n") && !body.starts_with("0\r\n"),
        "a terminating chunk was invented: {body:?}"
    );
    assert!(c.at_eof());
}

// ---------------------------------------------------------------------------
// 6. Failures and retries (R8.1, R8.3).

#[tokio::test]
async fn origin_closing_on_a_post_gives_502_and_one_arrival() {
    let origin = ScriptedOrigin::start(|a| {
        if a.request_line().starts_with("POST") {
            Act::Close
        } else {
            Act::Reply(ok("fine"))
        }
    })
    .await;
    // Safe: the POST goes on a fresh upstream connection.
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send("POST /order HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 502, "{:?}", r.raw_head);
    settle().await;
    assert_eq!(origin.count("/order"), 1, "the POST was resent");
    assert_eq!(origin.arrivals()[0].body, b"hello");
    assert_eq!(front.proxy.client().metrics().retries.load(Relaxed), 0);

    // Always: the POST rides a reused connection that the origin then closes
    // (the stale-connection race): still never resent.
    let origin = ScriptedOrigin::start(|a| {
        if a.request_line().starts_with("POST") {
            Act::Close
        } else {
            Act::Reply(ok("fine"))
        }
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Always));
    let mut c = front.client().await;
    c.send(get("/warm")).await;
    assert_eq!(c.response().await.status, 200);
    c.send("POST /order HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 502, "{:?}", r.raw_head);
    settle().await;
    let posts: Vec<Arrival> = origin
        .arrivals()
        .into_iter()
        .filter(|a| a.path() == "/order")
        .collect();
    assert_eq!(posts.len(), 1, "the POST was resent");
    assert_eq!(
        (posts[0].conn, posts[0].index),
        (1, 2),
        "the POST rode the reused connection"
    );
    assert_eq!(front.opened(), 1);
}

#[tokio::test]
async fn get_on_a_reused_connection_the_origin_closes_is_retried_once_transparently() {
    // Request 1 on a connection is answered keep-alive; request 2 on the same
    // connection makes the origin close without answering; on a new
    // connection it answers.
    let origin = ScriptedOrigin::start(|a| {
        if a.index == 2 {
            Act::Close
        } else {
            Act::Reply(ok(&format!("conn {} answered {}", a.conn, a.path())))
        }
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send(get("/one")).await;
    assert_eq!(c.response().await.text(), "conn 1 answered /one");
    c.send(get("/two")).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{:?}", r.raw_head);
    assert_eq!(r.text(), "conn 2 answered /two");
    assert_eq!(
        origin.count("/two"),
        2,
        "request 2: once on conn 1, once on conn 2"
    );
    assert_eq!(front.proxy.client().metrics().retries.load(Relaxed), 1);
    assert_eq!(front.opened(), 2);
    assert_eq!(front.accepted(), 1);
}

// ---------------------------------------------------------------------------
// 7. Upgrades (R9.1).

#[tokio::test]
async fn websocket_style_upgrade_relays_bytes_both_ways_and_half_close() {
    let origin = ScriptedOrigin::start(|a| {
        if a.values("upgrade").iter().any(|v| v == "websocket") {
            Act::UpgradeEcho(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Act::Reply(ok("no upgrade"))
        }
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send(
        "GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let r = c.head_response().await;
    assert_eq!(r.status, 101, "{:?}", r.raw_head);
    assert_eq!(r.header("upgrade"), Some("websocket"), "{}", r.raw_head);
    assert!(
        r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{}",
        r.raw_head
    );
    assert!(r.header("sec-websocket-accept").is_some());
    // What the origin got: the upgrade relayed, with this hop's Connection.
    let a = &origin.arrivals()[0];
    assert_eq!(a.values("upgrade"), ["websocket"], "{}", a.head);
    assert!(
        a.values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("upgrade")),
        "{}",
        a.head
    );
    assert_eq!(a.values("sec-websocket-key"), ["dGhlIHNhbXBsZSBub25jZQ=="]);

    for msg in [&b"\x81\x05hello"[..], b"second frame", &pattern(100_000)] {
        c.send(msg).await;
        assert!(c.read_exact_raw(msg.len()).await == msg, "echo differs");
    }
    // Half-close from the client reaches the origin, whose own FIN comes
    // back.
    c.shutdown_write().await;
    eventually("the origin saw the client's FIN", WAIT, || {
        origin.tunnel_eof.load(Relaxed)
    })
    .await;
    let (rest, _) = c.read_to_eof().await;
    assert!(rest.is_empty());
    assert_eq!(front.proxy.metrics().tunnels.load(Relaxed), 1);
}

// ---------------------------------------------------------------------------
// 8. Re-framing a close-delimited origin response (R5.4).

#[tokio::test]
async fn close_delimited_http10_response_goes_out_chunked_and_the_client_connection_stays() {
    let body = pattern(70_000);
    let b = body.clone();
    let origin = ScriptedOrigin::start(move |_| {
        let mut r = b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        r.extend_from_slice(&b);
        Act::ReplyClose(r)
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    for i in 0..2 {
        c.send(get("/old")).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{:?}", r.raw_head);
        assert_eq!(r.version, "HTTP/1.1");
        assert_eq!(r.framing, Framing::Chunked, "response {i}: {}", r.raw_head);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert!(r.body == body, "response {i}: body differs");
        assert!(r.header("connection").is_none_or(|v| !v.contains("close")));
    }
    assert_eq!(front.accepted(), 1);
    assert_eq!(
        origin.accepted(),
        2,
        "each close-delimited response costs a connection"
    );
}

// ---------------------------------------------------------------------------
// 9. Smuggling vectors stop at the proxy (R10.1).

#[tokio::test]
async fn smuggling_vectors_get_400_and_nothing_reaches_the_origin() {
    let origin = ScriptedOrigin::echo_path().await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    for vector in [
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG",
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nContent-Length: 5\r\n\r\nhello!",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
    ] {
        let mut c = front.client().await;
        c.send(vector).await;
        let r = c.response().await;
        assert_eq!(r.status, 400, "{vector:?}: {:?}", r.raw_head);
        let (rest, _) = c.read_to_eof().await;
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
            "{vector:?}: a second response followed: {rest:?}"
        );
    }
    settle().await;
    assert_eq!(origin.accepted(), 0, "the origin was contacted");
    assert!(origin.arrivals().is_empty());
}

// ---------------------------------------------------------------------------
// 10. Pipelining (R7.2).

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_though_the_first_is_slow() {
    let origin = ScriptedOrigin::start(|a| {
        let reply = ok(&format!("answer to {}", a.path()));
        if a.path() == "/slow" {
            Act::Delay(Duration::from_millis(400), Box::new(Act::Reply(reply)))
        } else {
            Act::Reply(reply)
        }
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    let paths = ["/slow", "/1", "/2", "/3", "/4"];
    let burst: String = paths.iter().map(|p| get(p)).collect();
    let started = Instant::now();
    c.send(burst).await;
    for p in paths {
        let r = c.response().await;
        assert_eq!(r.status, 200, "{p}: {:?}", r.raw_head);
        assert_eq!(r.text(), format!("answer to {p}"), "out of order");
    }
    let took = started.elapsed();
    // The four fast ones were fetched while the slow one was pending (on
    // other upstream connections), not after it.
    let arrivals = origin.arrivals();
    assert_eq!(arrivals.len(), 5);
    assert!(
        front.opened() >= 2,
        "fetched one after another: {arrivals:?}"
    );
    assert!(
        took < Duration::from_millis(400 * 2),
        "the pipeline took {took:?}"
    );
    // And the connection is still good.
    c.send(get("/after")).await;
    assert_eq!(c.response().await.text(), "answer to /after");
    assert_eq!(front.accepted(), 1);
}

// ---------------------------------------------------------------------------
// Beyond the issue's list: edges of the same rules, and regressions for the
// bugs these tests found.

#[tokio::test]
async fn connect_tunnel_carries_bytes_sent_with_the_connect_head() {
    let (echo, _n, _t) = tcp_echo().await;
    let front = Front::start(forward(&[echo.port()]));
    let mut c = front.client().await;
    c.send(format!(
        "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nearly bytes"
    ))
    .await;
    let r = c.head_response().await;
    assert_eq!(r.status, 200, "{:?}", r.raw_head);
    assert_eq!(c.read_exact_raw(11).await, b"early bytes");
}

#[tokio::test]
async fn upgrade_carries_bytes_sent_right_behind_either_head() {
    let origin = ScriptedOrigin::start(|_| {
        Act::UpgradeEcho(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGREETING"
                .to_vec(),
        )
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send(
        "GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLY",
    )
    .await;
    let r = c.head_response().await;
    assert_eq!(r.status, 101, "{:?}", r.raw_head);
    // The origin's bytes behind its 101, then our early bytes echoed.
    let got = c.read_exact_raw(13).await;
    assert_eq!(String::from_utf8_lossy(&got), "GREETINGEARLY");
}

#[tokio::test]
async fn a_refused_upgrade_leaves_the_client_connection_plain_http() {
    let origin = ScriptedOrigin::start(|a| Act::Reply(ok(&format!("plain {}", a.path())))).await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send("GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!((r.status, r.text().as_str()), (200, "plain /ws"));
    assert!(r.header("upgrade").is_none(), "{}", r.raw_head);
    c.send(get("/next")).await;
    assert_eq!(c.response().await.text(), "plain /next");
    assert_eq!(front.proxy.metrics().tunnels.load(Relaxed), 0);
}

#[tokio::test]
async fn head_and_304_responses_keep_their_framing() {
    let origin = ScriptedOrigin::start(|a| {
        if a.request_line().starts_with("HEAD") {
            Act::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec())
        } else {
            Act::Reply(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec())
        }
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send("HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = c.head_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1234"), "{}", r.raw_head);
    c.send(get("/cond")).await;
    let r = c.response().await;
    assert_eq!(r.status, 304, "{}", r.raw_head);
    assert_eq!(r.header("etag"), Some("\"x\""));
    c.send("HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.head_response().await.status, 200);
    // Nothing stray followed any of them.
    assert!(c.read_some(Duration::from_millis(100)).await.is_none());
    assert!(c.buffered().is_empty());
}

#[tokio::test]
async fn request_bodies_are_relayed_whole_and_reframed() {
    let origin = ScriptedOrigin::start(|a| {
        Act::Reply(ok(&format!(
            "{} bytes, fnv {:x}, te {:?}, cl {:?}",
            a.body.len(),
            fnv(FNV_START, &a.body),
            a.values("transfer-encoding"),
            a.values("content-length"),
        )))
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    let body = pattern(300_000);
    c.send(format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ))
    .await;
    c.send(&body).await;
    let r = c.response().await;
    assert_eq!(
        r.text(),
        format!(
            "300000 bytes, fnv {:x}, te [], cl [\"300000\"]",
            fnv(FNV_START, &body)
        )
    );
    // Expect: 100-continue: the proxy asks for the body itself.
    c.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.head_response().await;
    assert_eq!(r.status, 100, "{}", r.raw_head);
    c.send("hello").await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("5 bytes,"), "{}", r.text());
    // A chunked request body leaves with a Content-Length.
    c.send(
        "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let r = c.response().await;
    assert_eq!(
        r.text(),
        format!(
            "5 bytes, fnv {:x}, te [], cl [\"5\"]",
            fnv(FNV_START, b"hello")
        )
    );
}

/// Regression: a response timeout on a reused upstream connection was
/// taken for the stale-connection race and the request sent again, so a
/// slow origin got it twice and the client its 504 after twice the
/// configured timeout (client/mod.rs).
#[tokio::test]
async fn refused_upstream_is_skipped_and_a_slow_one_gives_504_without_a_resend() {
    let origin = ScriptedOrigin::start(|a| {
        if a.path() == "/slow" {
            Act::Delay(Duration::from_secs(3), Box::new(Act::Reply(ok("late"))))
        } else {
            Act::Reply(ok("alive"))
        }
    })
    .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let timeout = Duration::from_millis(400);
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = vec![Route::new(
            None,
            "/",
            vec![
                Upstream::new(dead.to_string()),
                Upstream::new(origin.addr.to_string()),
            ],
        )];
        pc.upstream_timeout = timeout;
        pc
    });
    let mut c = front.client().await;
    for _ in 0..4 {
        c.send(get("/x")).await;
        let r = c.response().await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "alive"),
            "{}",
            r.raw_head
        );
    }
    assert!(front.proxy.metrics().upstream_errors[0].load(Relaxed) >= 1);
    let retries = || front.proxy.client().metrics().retries.load(Relaxed);
    let retries_before = retries();
    let started = Instant::now();
    c.send(get("/slow")).await;
    let r = c.response().await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.raw_head);
    assert!(
        took < timeout * 2,
        "504 after {took:?} with an upstream timeout of {timeout:?}"
    );
    assert_eq!(origin.count("/slow"), 1, "the timed-out GET was sent again");
    assert_eq!(retries(), retries_before);
    c.send(get("/x")).await;
    assert_eq!(c.response().await.status, 200);
}

/// Regression: a request future dropped mid-attempt (the proxy's client
/// reset its connection while the upstream was slow) never gave its pool
/// slot back, so after `pool_size` of them every request waited for the
/// pool timeout (client/mod.rs).
#[tokio::test]
async fn a_client_reset_mid_request_does_not_leak_an_upstream_pool_slot() {
    let origin = ScriptedOrigin::start(|a| {
        if a.path() == "/slow" {
            Act::Delay(Duration::from_millis(500), Box::new(Act::Reply(ok("late"))))
        } else {
            Act::Reply(ok("fast"))
        }
    })
    .await;
    let mut cfg = reverse(origin.addr, ReusePolicy::Always);
    cfg.pool_size = 1;
    let front = Front::start(cfg);
    for _ in 0..2 {
        let mut s = TcpStream::connect(front.addr()).await.unwrap();
        s.write_all(get("/slow").as_bytes()).await.unwrap();
        eventually("the slow request at the origin", WAIT, || {
            origin.count("/slow") >= 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // An abortive close: the proxy's read fails and it drops the
        // connection with its handler.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    }
    let mut c = front.client().await;
    c.read_timeout = Duration::from_secs(3);
    c.send(get("/fast")).await;
    let r = c.response().await;
    assert_eq!((r.status, r.text().as_str()), (200, "fast"));
}

/// A client whose connection is lost (RST) while its request waits on a
/// slow origin takes the upstream request with it (nginx's
/// `proxy_ignore_client_abort off`): the proxy drops it, and the origin's
/// own `PeerGone` fires as the upstream connection closes, long before
/// the origin would answer. (A FIN may be a half-close: its answer is
/// relayed, as `origin_failures_and_closes_stay_on_the_origin_hop` checks.)
#[tokio::test]
async fn a_client_that_leaves_drops_its_upstream_request() {
    let left = Arc::new(AtomicUsize::new(0));
    let counted = left.clone();
    let origin = serve(
        |_| {},
        move |req: http::Request<Body>| {
            let counted = counted.clone();
            let peer = keepwire::server::PeerGone::of(&req);
            async move {
                tokio::select! {
                    () = peer.wait() => {
                        counted.fetch_add(1, Relaxed);
                    }
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                Response::new(Body::from("late"))
            }
        },
    );
    let front = Front::start(reverse(origin.local_addr(), ReusePolicy::Safe));
    let mut s = TcpStream::connect(front.addr()).await.unwrap();
    s.write_all(get("/slow").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    keepwire::net::set_abortive_close(&s).unwrap();
    drop(s);
    eventually(
        "the upstream request dropped",
        Duration::from_secs(2),
        || left.load(Relaxed) == 1,
    )
    .await;
}

/// Regression: an origin response with both Transfer-Encoding and
/// Content-Length was read chunked (RFC 9112 §6.3) but forwarded with the
/// received Content-Length, which the client hop then used for a body of
/// another size: an empty chunked body got a head that was never sent (the
/// client saw only a close), a streamed one was cut off (proxy.rs; RFC 9112
/// §6.1 says to drop the received Content-Length).
#[tokio::test]
async fn origin_response_with_te_and_cl_is_forwarded_by_its_chunked_body() {
    const HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    let origin = ScriptedOrigin::start(|a| {
        let body: &[u8] = match a.path() {
            "/empty" => b"0\r\n\r\n",
            "/small" => b"5\r\nhello\r\n0\r\n\r\n",
            // Streamed: the rest comes after the proxy started relaying.
            _ => {
                return Act::Then(
                    [HEAD, b"5\r\nhello\r\n"].concat(),
                    Box::new(Act::Delay(
                        Duration::from_millis(100),
                        Box::new(Act::ReplyClose(b"6\r\n world\r\n0\r\n\r\n".to_vec())),
                    )),
                );
            }
        };
        Act::ReplyClose([HEAD, body].concat())
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    for (path, want) in [
        ("/empty", ""),
        ("/small", "hello"),
        ("/stream", "hello world"),
    ] {
        c.send(get(path)).await;
        let r = c.response().await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, want),
            "{path}: {}",
            r.raw_head
        );
        assert_ne!(r.header("content-length"), Some("3"), "{}", r.raw_head);
    }
    assert_eq!(front.accepted(), 1);
}

#[tokio::test]
async fn origin_failures_and_closes_stay_on_the_origin_hop() {
    let origin = ScriptedOrigin::start(|a| match a.path() {
        "/midhead" => Act::ReplyClose(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()),
        "/close" => Act::ReplyClose(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nclose".to_vec(),
        ),
        p => Act::Reply(ok(&format!("mf={:?} {p}", a.values("max-forwards")))),
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    // Closed in the middle of the head (after a byte of it): 502, never
    // resent, and the client connection carries on.
    c.send(get("/midhead")).await;
    let r = c.response().await;
    assert_eq!(r.status, 502, "{}", r.raw_head);
    assert_eq!(origin.count("/midhead"), 1);
    // The origin's `Connection: close` ends the origin connection only
    // (R6.3).
    for _ in 0..3 {
        c.send(get("/close")).await;
        let r = c.response().await;
        assert_eq!((r.status, r.text().as_str()), (200, "close"));
        assert!(
            r.header("connection").is_none_or(|v| !v.contains("close")),
            "{}",
            r.raw_head
        );
    }
    // Max-Forwards counts down on OPTIONS (and TRACE), and 0 means "answer
    // here".
    c.send("OPTIONS /mf HTTP/1.1\r\nHost: t\r\nMax-Forwards: 3\r\n\r\n")
        .await;
    assert_eq!(c.response().await.text(), "mf=[\"2\"] /mf");
    let before = origin.arrivals().len();
    c.send("OPTIONS /mf HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert!(r.header("allow").is_some_and(|a| !a.contains("TRACE")));
    // TRACE is off unless `trace` is set (the echo is tested in
    // keepwire-cli's proxy_cli.rs): 405 here, whatever Max-Forwards says.
    for mf in ["Max-Forwards: 0\r\n", "Max-Forwards: 5\r\n", ""] {
        c.send(format!("TRACE /mf HTTP/1.1\r\nHost: t\r\n{mf}\r\n"))
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 405, "{}", r.raw_head);
        assert!(r.header("allow").is_some_and(|a| !a.contains("TRACE")));
    }
    assert_eq!(origin.arrivals().len(), before);
    // A half-close after the request: answered, then closed.
    c.send(get("/hc")).await;
    c.shutdown_write().await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    c.expect_eof().await;
    assert_eq!(front.accepted(), 1);

    // Forward mode to a port nobody listens on: 502, quickly.
    let f = Front::start(forward(&[]));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = f.client().await;
    c.send(format!(
        "GET http://{dead}/ HTTP/1.1\r\nHost: {dead}\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response().await.status, 502);
}

#[tokio::test]
async fn http10_client_gets_a_chunked_origin_body_without_chunk_framing() {
    let origin = ScriptedOrigin::start(|_| {
        Act::Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let front = Front::start(reverse(origin.addr, ReusePolicy::Safe));
    let mut c = front.client().await;
    c.send("GET / HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.text(), "hello world");
    assert_ne!(r.framing, Framing::Chunked, "chunked to HTTP/1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_is_proxied_to_an_http1_origin_with_via_2() {
    // The origin echoes the Via it received and the version it was spoken to.
    let origin = serve(
        |_| {},
        |req: http::Request<Body>| async move {
            let via = req
                .headers()
                .get("via")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            Response::new(Body::from(format!("{via}|{:?}", req.version())))
        },
    );
    let front = Front::start(reverse(origin.local_addr(), ReusePolicy::Always));
    let tcp = tokio::net::TcpStream::connect(front.addr()).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::get(format!("http://{}/x", front.addr()))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = within("the proxied h2 response", WAIT, resp).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The response crossed an HTTP/1.1 hop: its Via says 1.1.
    assert_eq!(resp.headers()["via"], "1.1 keepwire");
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    // RFC 9110 §7.6.3: the request was received over HTTP/2 and forwarded
    // over HTTP/1.1 (connection-specific fields made no sense in h2 anyway).
    assert_eq!(String::from_utf8(text).unwrap(), "2 keepwire|HTTP/1.1");
    stop(front.server).await;
    stop(origin).await;
}

// ---------------------------------------------------------------------------
// 14. Forward-proxy destination policy, client lists, Host, tunnels.

/// Sends `request` on a new connection to `front`; the response.
async fn one(front: &Front, request: &str) -> Resp {
    let mut c = front.client().await;
    c.send(request).await;
    c.response().await
}

#[tokio::test]
async fn forward_destinations_in_refused_ranges_get_403_naming_the_rule() {
    let origin = small_http_origin();
    let op = origin.local_addr().port();
    let front = Front::start(forward_default(&[op, 443]));
    let loopback = "refused: loopback (allow with --allow-destination)";
    for (request, want) in [
        // Absolute-form to a loopback literal, and to names and spellings
        // that reach it: checked after resolution.
        (
            format!("GET http://127.0.0.1:{op}/secret HTTP/1.1\r\nHost: 127.0.0.1:{op}\r\n\r\n"),
            format!("destination 127.0.0.1 {loopback}"),
        ),
        (
            format!("GET http://localhost:{op}/ HTTP/1.1\r\nHost: localhost:{op}\r\n\r\n"),
            "destination localhost (".to_string(),
        ),
        (
            format!("GET http://[::ffff:127.0.0.1]:{op}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            format!("destination ::ffff:127.0.0.1 (127.0.0.1) {loopback}"),
        ),
        (
            format!("GET http://127.1.2.3:{op}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            loopback.to_string(),
        ),
        // CONNECT alike.
        (
            format!("CONNECT 127.0.0.1:{op} HTTP/1.1\r\nHost: 127.0.0.1:{op}\r\n\r\n"),
            format!("destination 127.0.0.1 {loopback}"),
        ),
        (
            format!("CONNECT localhost:{op} HTTP/1.1\r\nHost: localhost:{op}\r\n\r\n"),
            loopback.to_string(),
        ),
        // Cloud metadata, private and unspecified: refused without a
        // connection attempt (a 403 at once, not a connect timeout).
        (
            "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "destination 169.254.169.254 refused: link-local".into(),
        ),
        (
            "GET http://10.1.2.3/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "refused: private".into(),
        ),
        (
            format!("GET http://0.0.0.0:{op}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            "refused: unspecified".into(),
        ),
        (
            "GET http://100.100.100.200/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "refused: shared address space".into(),
        ),
        (
            format!("GET http://[::1]:{op}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            format!("destination ::1 {loopback}"),
        ),
        (
            "GET http://[fe80::1]/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "refused: link-local".into(),
        ),
        (
            "CONNECT [fd00::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "refused: unique-local".into(),
        ),
    ] {
        let r = within("a refusal", WAIT, one(&front, &request)).await;
        assert_eq!(r.status, 403, "{request}: {}", r.text());
        assert!(r.text().contains(&want), "{request}: {}", r.text());
    }
    assert_eq!(
        origin.metrics().connections_accepted.load(Relaxed),
        0,
        "a refused destination was contacted"
    );
    assert_eq!(front.proxy.metrics().destinations_refused.load(Relaxed), 13);

    // Opened with allow_destination: the same requests are proxied.
    let open = Front::start(forward(&[op]));
    for request in [
        format!("GET http://127.0.0.1:{op}/a HTTP/1.1\r\nHost: 127.0.0.1:{op}\r\n\r\n"),
        format!("GET http://localhost:{op}/b HTTP/1.1\r\nHost: localhost:{op}\r\n\r\n"),
    ] {
        let r = one(&open, &request).await;
        assert_eq!(r.status, 200, "{request}: {}", r.text());
    }
    let r = open
        .client()
        .await
        .send_and(&format!(
            "CONNECT 127.0.0.1:{op} HTTP/1.1\r\nHost: 127.0.0.1:{op}\r\n\r\n"
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.raw_head);

    // deny_destination wins over allow_destination.
    let deny = Front::start({
        let mut pc = forward(&[op]);
        pc.deny_destination = vec!["127.0.0.1/32".parse().unwrap()];
        pc
    });
    let r = one(
        &deny,
        &format!("GET http://127.0.0.1:{op}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        r.text()
            .contains("destination 127.0.0.1 refused: denied by deny_destination"),
        "{}",
        r.text()
    );
}

impl RawClient {
    /// Sends a CONNECT (or any request whose 2xx has no body) and reads
    /// its head.
    async fn send_and(mut self, request: &str) -> Resp {
        self.send(request).await;
        self.head_response().await
    }
}

#[tokio::test]
async fn the_proxys_own_addresses_are_refused_even_when_loopback_is_allowed() {
    // A stand-in for the admin (metrics) listener.
    let admin = small_http_origin();
    let ap = admin.local_addr().port();
    let front = Front::start(forward(&[ap]));
    front.proxy.add_own_address(admin.local_addr());
    let own = front.addr();
    for request in [
        format!("GET http://127.0.0.1:{ap}/metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        format!("GET http://localhost:{ap}/metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        format!("CONNECT 127.0.0.1:{ap} HTTP/1.1\r\nHost: x\r\n\r\n"),
        // The address the request came in on is known without being told.
        format!("GET http://{own}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        let r = one(&front, &request).await;
        assert_eq!(r.status, 403, "{request}: {}", r.text());
        assert!(
            r.text().contains("refused: the proxy's own address"),
            "{request}: {}",
            r.text()
        );
    }
    assert_eq!(admin.metrics().connections_accepted.load(Relaxed), 0);
}

#[tokio::test]
async fn forward_and_reverse_modes_have_separate_client_lists() {
    let origin = ScriptedOrigin::echo_path().await;
    let target = small_http_origin();
    let tp = target.local_addr().port();
    let both = |allow: &str, allow_forward: &str| {
        let mut pc = forward(&[tp]);
        pc.routes = vec![Route::new(
            None,
            "/",
            vec![Upstream::new(origin.addr.to_string())],
        )];
        pc.allow = vec![allow.parse().unwrap()];
        pc.allow_forward = vec![allow_forward.parse().unwrap()];
        pc
    };
    let reverse_req = "GET /r HTTP/1.1\r\nHost: app\r\n\r\n".to_string();
    let forward_req = format!("GET http://127.0.0.1:{tp}/f HTTP/1.1\r\nHost: x\r\n\r\n");
    let connect_req = format!("CONNECT 127.0.0.1:{tp} HTTP/1.1\r\nHost: x\r\n\r\n");

    // Loopback may use the routes, not forward mode.
    let f = Front::start(both("127.0.0.0/8", "192.0.2.0/24"));
    assert_eq!(one(&f, &reverse_req).await.status, 200);
    for req in [&forward_req, &connect_req] {
        let r = one(&f, req).await;
        assert_eq!(r.status, 403, "{req}");
        assert!(
            r.text()
                .contains("not allowed to use the forward proxy (allow with --allow-forward)"),
            "{}",
            r.text()
        );
    }
    // And the other way round.
    let f = Front::start(both("192.0.2.0/24", "127.0.0.0/8"));
    let r = one(&f, &reverse_req).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("(allow with --allow)"), "{}", r.text());
    assert_eq!(one(&f, &forward_req).await.status, 200);
    assert_eq!(origin.count("/r"), 1);

    // Without routes every request is a forward one: an origin-form
    // request is told what a forward proxy needs, not sent to --allow.
    let f = Front::start({
        let mut pc = forward(&[]);
        pc.allow = vec!["192.0.2.0/24".parse().unwrap()];
        pc
    });
    let r = one(&f, &reverse_req).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("absolute-form"), "{}", r.text());
}

#[tokio::test]
async fn forward_https_origins_are_verified_whatever_upstream_tls_trusts() {
    // A self-signed origin; the configured-upstream TLS trusts anything.
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    let origin = serve(
        |c| c.tls = Some(Arc::new(server_tls)),
        |_req: http::Request<Body>| async { Response::new(Body::from("over tls")) },
    );
    let port = origin.local_addr().port();
    let insecure = keepwire::client::tls::insecure_config();
    let request = format!("GET https://localhost:{port}/ HTTP/1.1\r\nHost: localhost\r\n\r\n");

    let front = Front::start({
        let mut pc = forward(&[]);
        pc.upstream_tls = Some(insecure.clone());
        pc
    });
    let r = one(&front, &request).await;
    assert_eq!(r.status, 502, "{}", r.text());
    // The cause (an unverified certificate) is logged, not sent.
    assert_eq!(r.text(), "502 Bad Gateway\n");

    // forward_tls is what forward origins are verified with.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let trusting = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let front = Front::start({
        let mut pc = forward(&[]);
        pc.forward_tls = Some(Arc::new(trusting));
        pc
    });
    let r = one(&front, &request).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "over tls");

    // And upstream_tls still applies to a configured https:// upstream.
    let rev = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = vec![Route::new(
            None,
            "/",
            vec![Upstream::new(format!("https://localhost:{port}"))],
        )];
        pc.upstream_tls = Some(insecure);
        pc
    });
    let r = one(&rev, "GET / HTTP/1.1\r\nHost: app\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn the_target_authority_routes_and_is_the_one_host_sent_on() {
    let app = ScriptedOrigin::echo_path().await;
    let other = ScriptedOrigin::echo_path().await;
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = vec![
            Route::new(
                Some("app.test".into()),
                "/",
                vec![Upstream::new(app.addr.to_string())],
            ),
            Route::new(
                Some("other.test".into()),
                "/",
                vec![Upstream::new(other.addr.to_string())],
            ),
        ];
        pc
    });
    // RFC 9112 §3.2.2: the absolute-form target wins over Host, for routing
    // and for the Host the origin gets.
    let r = one(
        &front,
        "GET http://app.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(other.accepted(), 0, "routed on Host, not the target");
    let a = &app.arrivals()[0];
    assert_eq!(a.values("host"), ["app.test"], "{}", a.head);
    assert_eq!(a.request_line(), "GET /x HTTP/1.1");

    // Two Host fields, an invalid one, userinfo in the target: 400, and
    // nothing reaches an origin.
    for request in [
        "GET /y HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
        "GET /y HTTP/1.1\r\nHost: app.test/evil\r\n\r\n",
        "GET /y HTTP/1.1\r\nHost: user@app.test\r\n\r\n",
        "GET http://user@app.test/y HTTP/1.1\r\nHost: app.test\r\n\r\n",
    ] {
        let r = one(&front, request).await;
        assert_eq!(r.status, 400, "{request}: {}", r.text());
    }
    assert_eq!(app.count("/y") + other.count("/y"), 0);

    // HTTP/2: :authority routes, is the Host sent on, and a Host field
    // that disagrees with it is refused.
    let tcp = TcpStream::connect(front.addr()).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let h2_get = |path: &str, host: Option<&str>| {
        let mut b = http::Request::get(format!("http://app.test{path}"));
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    };
    for (path, host, status) in [
        ("/h2", None, 200),
        ("/h2-same", Some("APP.test"), 200),
        ("/h2-differs", Some("other.test"), 400),
    ] {
        let (resp, _) = send.send_request(h2_get(path, host), true).unwrap();
        let resp = within("an h2 response", WAIT, resp).await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        send = send.ready().await.unwrap();
    }
    assert_eq!(other.accepted(), 0);
    let h2 = app.arrivals();
    let sent: Vec<(String, Vec<String>)> = h2
        .iter()
        .filter(|a| a.path().starts_with("/h2"))
        .map(|a| (a.path().to_string(), a.values("host")))
        .collect();
    assert_eq!(
        sent,
        [
            ("/h2".to_string(), vec!["app.test".to_string()]),
            ("/h2-same".to_string(), vec!["app.test".to_string()]),
        ]
    );
}

#[tokio::test]
async fn forward_requests_send_the_targets_host_only() {
    let origin = ScriptedOrigin::echo_path().await;
    let front = Front::start(forward(&[]));
    let port = origin.addr.port();
    let r = one(
        &front,
        &format!("GET http://127.0.0.1:{port}/f HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = &origin.arrivals()[0];
    assert_eq!(
        a.values("host"),
        [format!("127.0.0.1:{port}")],
        "{}",
        a.head
    );
}

/// An origin that switches to any protocol asked for and echoes, or
/// answers "plain" when no upgrade arrived.
async fn upgrading_origin() -> ScriptedOrigin {
    ScriptedOrigin::start(|a| match a.values("upgrade").first() {
        Some(p) => Act::UpgradeEcho(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {p}\r\n\r\n"
            )
            .into_bytes(),
        ),
        None => Act::Reply(ok("plain")),
    })
    .await
}

#[tokio::test]
async fn upgrades_are_relayed_only_for_the_routes_protocols() {
    let origin = upgrading_origin().await;
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = vec![
            Route::new(None, "/", vec![Upstream::new(origin.addr.to_string())]),
            Route::new(None, "/none", vec![Upstream::new(origin.addr.to_string())])
                .with_upgrades(Vec::<String>::new()),
        ];
        pc
    });
    let upgrade = |path: &str, protocol: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
        )
    };
    // Not allowed: the request goes as a plain one (as nginx without
    // `proxy_set_header Upgrade`), the client connection stays HTTP.
    for (path, protocol) in [("/none", "websocket"), ("/h2c", "h2c"), ("/tls", "TLS/1.2")] {
        let mut c = front.client().await;
        c.send(upgrade(path, protocol)).await;
        let r = c.response().await;
        assert_eq!((r.status, r.text().as_str()), (200, "plain"), "{path}");
        let a = origin
            .arrivals()
            .into_iter()
            .find(|a| a.path() == path)
            .unwrap();
        assert!(!a.has("upgrade"), "{}", a.head);
        assert!(
            !a.values("connection")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("upgrade")),
            "{}",
            a.head
        );
        c.send("GET /after HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(c.response().await.status, 200);
    }
    // Of several offered, only the allowed ones go on.
    let mut c = front.client().await;
    c.send(upgrade("/ws", "h2c, WebSocket")).await;
    let r = c.head_response().await;
    assert_eq!(r.status, 101, "{:?}", r.raw_head);
    let a = origin
        .arrivals()
        .into_iter()
        .find(|a| a.path() == "/ws")
        .unwrap();
    assert_eq!(a.values("upgrade"), ["WebSocket"], "{}", a.head);
    c.send("ping").await;
    assert_eq!(c.read_exact_raw(4).await, b"ping");
    assert_eq!(front.proxy.metrics().tunnels.load(Relaxed), 1);
}

#[tokio::test]
async fn tunnels_close_after_the_idle_timeout_and_traffic_keeps_them_open() {
    let (echo, _conns, _task) = tcp_echo().await;
    let origin = upgrading_origin().await;
    let idle = Duration::from_millis(1500);
    let front = Front::start({
        let mut pc = forward(&[echo.port()]);
        pc.tunnel_idle_timeout = idle;
        pc.routes = vec![Route::new(
            Some("ws".into()),
            "/",
            vec![Upstream::new(origin.addr.to_string())],
        )];
        pc
    });
    let metrics = || front.proxy.render_metrics();
    let open = || front.server.metrics().tunnels_open.load(Relaxed);

    // CONNECT: bytes every 150 ms for three idle timeouts keep it open.
    let mut c = front.client().await;
    c.send(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n"))
        .await;
    assert_eq!(c.head_response().await.status, 200);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < idle * 3 {
        c.send(b"tick").await;
        assert_eq!(c.read_exact_raw(4).await, b"tick", "round {rounds}");
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(open(), 1);
    assert_eq!(front.proxy.metrics().tunnels_idle_closed.load(Relaxed), 0);
    // Then silence: the proxy closes it (the echo server never would).
    let (rest, clean) = c.read_to_eof().await;
    assert!(rest.is_empty() && clean);

    // An upgraded connection alike; the origin sees the close too.
    let mut c = front.client().await;
    c.send("GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    assert_eq!(c.head_response().await.status, 101);
    c.send("hi").await;
    assert_eq!(c.read_exact_raw(2).await, b"hi");
    let (rest, clean) = c.read_to_eof().await;
    assert!(rest.is_empty() && clean);
    eventually("the origin saw the tunnel end", WAIT, || {
        origin.tunnel_eof.load(Relaxed)
    })
    .await;
    eventually("both tunnels counted closed", WAIT, || {
        front.proxy.metrics().tunnels_idle_closed.load(Relaxed) == 2
    })
    .await;
    // The relay let go of the client connection (and its slot).
    eventually("no tunnel open", WAIT, || open() == 0).await;
    assert_eq!(metric(&metrics(), "proxy_tunnels_idle_closed_total"), 2);
}

#[tokio::test]
async fn idle_forward_origins_are_forgotten_and_their_connections_closed() {
    let origin = ScriptedOrigin::echo_path().await;
    let front = Front::start({
        let mut pc = forward(&[]);
        pc.upstream_idle_timeout = Duration::from_millis(300);
        pc
    });
    let url = format!("http://127.0.0.1:{}/", origin.addr.port());
    let r = one(&front, &format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
    assert_eq!(r.status, 200);
    let client = front.proxy.forward_client().unwrap();
    let uri: http::Uri = url.parse().unwrap();
    assert_eq!(client.pool_counts(&uri), (1, 1), "kept idle for reuse");
    // No further request to that origin: the sweep closes the idle
    // connection and forgets the origin anyway.
    eventually("the idle origin swept", Duration::from_secs(5), || {
        client.pool_counts(&uri) == (0, 0)
    })
    .await;
    assert!(client.metrics().retired_idle.load(Relaxed) >= 1);
}

#[tokio::test]
async fn the_sweep_keeps_at_most_max_origins_closing_the_least_recently_used() {
    let origins = [
        small_http_origin(),
        small_http_origin(),
        small_http_origin(),
    ];
    let client = keepwire::Client::default();
    let mut urls = Vec::new();
    for o in &origins {
        let url = format!("http://{}/", o.local_addr());
        let resp = client.get(&url).await.unwrap();
        resp.into_body().collect(1 << 20).await.unwrap();
        urls.push(url.parse::<http::Uri>().unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(urls.iter().all(|u| client.pool_counts(u) == (1, 1)));
    client.sweep_idle(1);
    let counts: Vec<_> = urls.iter().map(|u| client.pool_counts(u)).collect();
    assert_eq!(counts, [(0, 0), (0, 0), (1, 1)], "the newest stays");
}
