//! HTTP/2 with prior knowledge (h2c) on keepwire's server, with real peers
//! (curl, h2load) and the `h2` crate's client for what the peers cannot
//! show: GOAWAY on shutdown and on idle, no request lost or run twice.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use keepwire::Body;
use support::*;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

async fn echo(req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let body = req.into_body().collect(1 << 20).await.unwrap_or_default();
    Response::builder()
        // Connection-specific fields a handler might set out of HTTP/1
        // habit: malformed in HTTP/2 (RFC 9113 §8.2.2), so never sent.
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .header("x-method", method.as_str())
        .body(Body::from(format!("got {} bytes", body.len())))
        .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http2_with_prior_knowledge() {
    let Some(curl) = require_tool("curl", "curl") else {
        return;
    };
    let server = serve(|_| {}, echo);
    let url = format!("http://{}/x", server.local_addr());
    let out = run_tool(
        &curl,
        &args(&[
            "-s",
            "-i",
            "--http2-prior-knowledge",
            "--data",
            "hello",
            "-w",
            "\n%{http_version}",
            &url,
        ]),
        WAIT,
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let text = out.stdout.to_ascii_lowercase();
    assert!(text.starts_with("http/2 200"), "{text}");
    assert!(text.ends_with("\n2"), "{text}");
    assert!(text.contains("x-method: post"), "{text}");
    assert!(text.contains("got 5 bytes"), "{text}");
    assert!(
        !text.contains("keep-alive"),
        "connection-specific fields leaked: {text}"
    );
    assert!(!text.contains("\nconnection:"), "{text}");
    // The same port still speaks HTTP/1.1.
    let out = run_tool(&curl, &args(&["-s", "-w", "%{http_version}", &url]), WAIT).await;
    assert!(out.stdout.ends_with("1.1"), "{}", out.stdout);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_runs_without_errors() {
    let Some(h2load) = require_tool("h2load", "nghttp2-client") else {
        return;
    };
    let server = serve(|_| {}, echo);
    let url = format!("http://{}/", server.local_addr());
    let out = run_tool(
        &h2load,
        &args(&["-n", "2000", "-c", "4", "-m", "10", &url]),
        Duration::from_secs(30),
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"),
        "{}",
        out.stdout
    );
    stop(server).await;
}

async fn h2_client(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_finishes_what_it_took() {
    let gate = Arc::new(Semaphore::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let (g, r) = (gate.clone(), ran.clone());
    let server = serve(
        |c| c.shutdown_timeout = Duration::from_secs(5),
        move |_req: Request<Body>| {
            let (g, r) = (g.clone(), r.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                let _permit = g.acquire().await;
                Response::new(Body::from("done"))
            }
        },
    );
    let addr = server.local_addr();
    let (mut send, conn) = h2_client(addr).await;
    // Five streams in flight on one connection.
    let mut pending = Vec::new();
    for i in 0..5 {
        send = send.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}/{i}")).body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        pending.push(resp);
    }
    eventually("five handlers running", WAIT, || {
        ran.load(Ordering::SeqCst) == 5
    })
    .await;
    let shutdown = tokio::spawn(server.shutdown());
    // The server's GOAWAY arrives while the five are still running; then
    // they are let go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.add_permits(5);
    for resp in pending {
        let resp = within("a response", WAIT, resp).await.expect("answered");
        let mut body = resp.into_body();
        let chunk = within("body", WAIT, body.data()).await.unwrap().unwrap();
        assert_eq!(&chunk[..], b"done");
    }
    // A stream opened after GOAWAY is refused, never run.
    if let Ok(mut s) = send.ready().await {
        let req = Request::get(format!("http://{addr}/late"))
            .body(())
            .unwrap();
        if let Ok((resp, _)) = s.send_request(req, true) {
            assert!(within("late answer", WAIT, resp).await.is_err());
        }
    }
    within("server stopped", Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
    let _ = within("client connection ends", WAIT, conn).await;
    assert_eq!(
        ran.load(Ordering::SeqCst),
        5,
        "no request ran twice or late"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway() {
    let server = serve(|c| c.idle_timeout = Duration::from_millis(300), echo);
    let addr = server.local_addr();
    let (send, conn) = h2_client(addr).await;
    let mut send = send.ready().await.unwrap();
    let req = Request::get(format!("http://{addr}/")).body(()).unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    // Nothing more: the server says GOAWAY and the connection ends cleanly.
    let ended = within("GOAWAY after the idle timeout", WAIT, conn).await;
    assert!(ended.unwrap().is_ok(), "a clean GOAWAY, not an error");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_multiplexes_on_one_connection_within_the_stream_limit() {
    let (server, max) = serve_counting(|c| c.http2_max_streams = 4, "hi");
    let mut config = keepwire::ClientConfig::default();
    config.http2_prior_knowledge = true;
    let client = keepwire::Client::new(config);
    let url = format!("http://{}/", server.local_addr());
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (c, u) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let resp = c.get(&u).await.expect("response");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let meta = *resp.extensions().get::<keepwire::RequestMeta>().unwrap();
            let body = resp.into_body().collect(1024).await.unwrap();
            assert_eq!(&body[..], b"hi");
            meta.conn.id
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(within("a multiplexed GET", WAIT, t).await.unwrap());
    }
    assert_eq!(ids.len(), 1, "one connection for the origin");
    assert_eq!(
        client.metrics().connections_opened.load(Ordering::SeqCst),
        1
    );
    // SETTINGS_MAX_CONCURRENT_STREAMS 4 was honoured.
    let seen = max.load(Ordering::SeqCst);
    assert!((2..=4).contains(&seen), "{seen} streams at once");
    stop(server).await;
}

/// nginx serving HTTPS with a fresh openssl certificate for localhost
/// (`listen` flags: `"ssl http2"` offers h2 by ALPN, `"ssl"` only
/// http/1.1); the certificate file verifies it.
async fn nginx_tls(
    nginx: &std::path::Path,
    openssl: &std::path::Path,
    dir: &TempDir,
    listen: &str,
    answer: &str,
) -> (NginxProcess, std::net::SocketAddr, std::path::PathBuf) {
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = run_tool(
        openssl,
        &args(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ]),
        WAIT,
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let body = format!(
        "ssl_certificate {}; ssl_certificate_key {}; location / {{ return 200 \"{answer}\"; }}",
        cert.display(),
        key.display()
    );
    let (nginx, addr) = nginx_with(nginx, dir.path(), listen, &body).await;
    (nginx, addr, cert)
}

/// Three GETs: their versions, bodies and connection ids.
async fn three_gets(client: &keepwire::Client, url: &str) -> Vec<(http::Version, String, u64)> {
    let mut seen = Vec::new();
    for _ in 0..3 {
        let resp = within("nginx over TLS", WAIT, client.get(url))
            .await
            .unwrap();
        let id = resp
            .extensions()
            .get::<keepwire::RequestMeta>()
            .unwrap()
            .conn
            .id;
        let version = resp.version();
        let body = resp.into_body().collect(1024).await.unwrap();
        seen.push((version, String::from_utf8_lossy(&body).into_owned(), id));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_speaks_http2_over_tls_to_nginx() {
    let (Some(nginx), Some(openssl)) = (
        require_tool("nginx", "nginx"),
        require_tool("openssl", "openssl"),
    ) else {
        return;
    };
    let dir = TempDir::new("nginx-tls");
    let (_nginx, addr, cert) =
        nginx_tls(&nginx, &openssl, &dir, "ssl http2", "hello over h2").await;
    let mut config = keepwire::ClientConfig::default();
    config.tls = Some(keepwire::client::tls::config_with_ca(&cert).unwrap());
    let client = keepwire::Client::new(config);
    let url = format!("https://localhost:{}/x", addr.port());
    let seen = three_gets(&client, &url).await;
    for (version, body, id) in &seen {
        assert_eq!(*version, http::Version::HTTP_2);
        assert_eq!(body, "hello over h2");
        assert_eq!(*id, seen[0].2, "one multiplexed connection");
    }
}

/// nginx without `http2` answers ALPN with http/1.1: the client falls back
/// to its HTTP/1.1 pool over TLS, keeping the connection that learned it
/// (one TLS handshake in all), and so does the proxy towards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_falls_back_to_http1_over_tls_when_alpn_says_so() {
    let (Some(nginx), Some(openssl)) = (
        require_tool("nginx", "nginx"),
        require_tool("openssl", "openssl"),
    ) else {
        return;
    };
    let dir = TempDir::new("nginx-tls1");
    let (_nginx, addr, cert) = nginx_tls(&nginx, &openssl, &dir, "ssl", "hello over 1.1").await;
    let tls = keepwire::client::tls::config_with_ca(&cert).unwrap();
    let mut config = keepwire::ClientConfig::default();
    config.tls = Some(tls.clone());
    let client = keepwire::Client::new(config);
    let url = format!("https://localhost:{}/x", addr.port());
    let seen = three_gets(&client, &url).await;
    for (version, body, id) in &seen {
        assert_eq!(*version, http::Version::HTTP_11);
        assert_eq!(body, "hello over 1.1");
        assert_eq!(*id, seen[0].2, "one persistent connection");
    }
    let opened = client.metrics().connections_opened.load(Ordering::Relaxed);
    assert_eq!(
        opened, 1,
        "the ALPN probe's connection carried the requests"
    );

    // The proxy with nginx as an https upstream: HTTP/1.1 over TLS behind it.
    let proxy = keepwire::proxy::Proxy::new({
        let mut pc = keepwire::proxy::ProxyConfig::default();
        pc.routes = vec![keepwire::proxy::Route::new(
            None,
            "/",
            vec![keepwire::proxy::Upstream::new(format!(
                "https://localhost:{}",
                addr.port()
            ))],
        )];
        pc.upstream_tls = Some(tls);
        pc
    });
    let server = serve(|_| {}, move |req| proxy.clone().handle(req));
    let mut raw = RawClient::connect(server.local_addr()).await;
    for _ in 0..2 {
        raw.send("GET /x HTTP/1.1\r\nHost: app\r\n\r\n").await;
        let resp = raw.response().await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.body, b"hello over 1.1");
        assert_eq!(resp.header("via"), Some("1.1 keepwire"));
    }
    stop(server).await;
}

/// The preface decides before any driver reads a byte, even when its first
/// write carries only two bytes of it: the server answers with SETTINGS,
/// not with HTTP/1's 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preface_split_after_two_bytes_still_chooses_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = serve(|_| {}, echo);
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(b"PR").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    tcp.write_all(b"I * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    within("the server's first frame", WAIT, tcp.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(head[3], 4, "a SETTINGS frame, got {head:?}");
    drop(tcp);
    stop(server).await;
}
