//! HTTP/3 on keepwire's server, against independent stacks: quinn + h3
//! used directly as the client (not keepwire's), and aioquic (Python) as
//! an interop peer. The handler API is the one HTTP/1 and HTTP/2 reach.

#[path = "support/quic.rs"]
mod quic;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use keepwire::Body;
use keepwire::server::ConnInfo;
use quic::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers with what the request said about itself.
async fn echo(req: Request<Body>) -> Response<Body> {
    let version = format!("{:?}", req.version());
    let info = req.extensions().get::<ConnInfo>().copied();
    // A request whose stream ended with its head says so (END_STREAM's
    // HTTP/3 equivalent: the FIN came with HEADERS).
    let end = http_body::Body::is_end_stream(req.body());
    let line = format!(
        "{} {} {version} req={} end={end}\n",
        req.method(),
        req.uri().path(),
        info.map_or(0, |i| i.request_index)
    );
    let body = req.into_body().collect(1 << 20).await.unwrap_or_default();
    Response::new(Body::from(format!("{line}{}", body.len())))
}

#[tokio::test]
async fn the_quic_endpoint_is_on_the_tcp_port() {
    let tls = tls();
    let (server, _m) = serve_h3(&tls, |_| {}, echo);
    assert_eq!(server.quic_addrs().len(), 1);
    assert_eq!(server.quic_addrs()[0], server.local_addr());
    stop(server).await;
    // Without TLS there is no QUIC (it needs TLS 1.3).
    let plain = serve(|_| {}, echo);
    assert!(plain.quic_addrs().is_empty());
    stop(plain).await;
    // And none when it is turned off.
    let (off, _m) = serve_h3(&tls, |c| c.http3 = false, echo);
    assert!(off.quic_addrs().is_empty());
    stop(off).await;
}

#[tokio::test]
async fn a_get_over_http3_reaches_the_same_handler() {
    let tls = tls();
    let (server, metrics) = serve_h3(&tls, |_| {}, echo);
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    for i in 1..=3u64 {
        let resp = h3.get(&format!("/hello/{i}")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.text(),
            format!("GET /hello/{i} HTTP/3.0 req={i} end=true\n0")
        );
        assert!(resp.head.headers().contains_key("date"));
        assert_eq!(
            resp.head.headers()["content-length"],
            resp.body.len().to_string()
        );
    }
    let req = Request::post("https://localhost/up").body(()).unwrap();
    let resp = h3
        .try_request(req, Some(Bytes::from(vec![7u8; 100_000])))
        .await
        .unwrap();
    assert_eq!(resp.text(), "POST /up HTTP/3.0 req=4 end=false\n100000");
    let text = metrics();
    assert_eq!(
        metric(&text, "requests_by_protocol_total{protocol=\"h3\"}"),
        4
    );
    assert_eq!(
        metric(&text, "requests_by_protocol_total{protocol=\"h2\"}"),
        0
    );
    assert_eq!(
        metric(
            &text,
            "connections_accepted_by_transport_total{transport=\"quic\"}"
        ),
        1
    );
    assert_eq!(metric(&text, "connections_open"), 1);
    drop(h3);
    stop(server).await;
    assert_eq!(metric(&metrics(), "connections_open"), 0);
}

#[tokio::test]
async fn aioquic_gets_from_keepwire_over_http3() {
    if !have_aioquic() {
        eprintln!("skipped: python3 aioquic missing (scripts/test installs it)");
        return;
    }
    let tls = tls();
    let (server, metrics) = serve_h3(&tls, |_| {}, echo);
    let paths: Vec<String> = (1..=5).map(|i| format!("/a/{i}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let lines = aioquic(&tls, server.quic_addrs()[0], &paths).await;
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["status"], 200, "{l}");
        let text = l["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("GET /a/{} HTTP/3.0", i + 1)),
            "{text}"
        );
    }
    assert_eq!(
        metric(&metrics(), "requests_by_protocol_total{protocol=\"h3\"}"),
        5
    );
    stop(server).await;
}

/// A handler that counts its calls and answers once `go` has a permit.
fn gated(
    calls: &Arc<AtomicUsize>,
    go: &Arc<tokio::sync::Semaphore>,
) -> impl keepwire::server::Handler + use<> {
    let (calls, go) = (calls.clone(), go.clone());
    move |_req: Request<Body>| {
        let (calls, go) = (calls.clone(), go.clone());
        async move {
            calls.fetch_add(1, SeqCst);
            go.acquire().await.expect("open").forget();
            Response::new(Body::from("finished"))
        }
    }
}

#[tokio::test]
async fn shutdown_sends_goaway_and_lets_the_stream_in_flight_finish() {
    let tls = tls();
    let (calls, go) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(tokio::sync::Semaphore::new(0)),
    );
    let (server, metrics) = serve_h3(&tls, |_| {}, gated(&calls, &go));
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    let stream = h3.start(h3_get("/in-flight"), None).await.unwrap();
    eventually("the handler runs", WAIT, || calls.load(SeqCst) == 1).await;
    let stopping = tokio::spawn(server.shutdown());
    // After GOAWAY, a new request is never run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = match h3.start(h3_get("/late"), None).await {
        Ok(s) => within("the late answer", WAIT, read(s))
            .await
            .map(|r| r.status()),
        Err(e) => Err(e),
    };
    assert!(
        late.is_err(),
        "a request after GOAWAY was answered: {late:?}"
    );
    go.add_permits(1);
    let resp = within("the answer in flight", WAIT, read(stream)).await;
    let resp = resp.unwrap_or_else(|e| panic!("{e}\n{}", metrics()));
    assert_eq!(resp.text(), "finished");
    within("shutdown", WAIT, stopping).await.unwrap().unwrap();
    assert_eq!(calls.load(SeqCst), 1);
    let text = metrics();
    assert_eq!(
        metric(&text, "connection_closes_total{reason=\"shutdown\"}"),
        1
    );
    assert_eq!(metric(&text, "connections_open"), 0);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let tls = tls();
    let (server, metrics) = serve_h3(
        &tls,
        |c| c.idle_timeout = Duration::from_millis(300),
        |_req: Request<Body>| async { Response::new(Body::from("hi")) },
    );
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    assert_eq!(h3.get("/").await.text(), "hi");
    let started = std::time::Instant::now();
    within("the idle close", WAIT, h3.conn.closed()).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    eventually("the close is counted", WAIT, || {
        metric(
            &metrics(),
            "connection_closes_total{reason=\"idle_timeout\"}",
        ) == 1
    })
    .await;
    stop(server).await;
}

/// `GET /` over HTTP/1.1 and TLS; the response head.
async fn tcp_head(tls: &Tls, addr: std::net::SocketAddr) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls.tcp.clone());
    let mut s = within("TLS handshake", WAIT, connector.connect(name, tcp))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    within("the response", WAIT, s.read_to_end(&mut all))
        .await
        .ok();
    let text = String::from_utf8_lossy(&all).into_owned();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[tokio::test]
async fn tcp_responses_over_tls_advertise_http3() {
    let tls = tls();
    let (server, _m) = serve_h3(&tls, |_| {}, echo);
    let port = server.quic_addrs()[0].port();
    let head = tcp_head(&tls, server.local_addr()).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("\r\nalt-svc: h3=\":{port}\"; ma=86400")),
        "{head}"
    );
    // HTTP/2 too (keepwire's client, ALPN h2).
    let dir = TempDir::new("altsvc");
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, pem_of(&tls.cert)).unwrap();
    let mut config = keepwire::client::ClientConfig::default();
    config.tls = Some(keepwire::client::tls::config_with_ca(&pem).unwrap());
    let client = keepwire::Client::new(config);
    let url = format!("https://localhost:{}/", server.local_addr().port());
    let resp = within("GET over h2", WAIT, client.get(&url)).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.headers()["alt-svc"],
        format!("h3=\":{port}\"; ma=86400")
    );
    stop(server).await;
    // Nothing to advertise without HTTP/3.
    let (off, _m) = serve_h3(&tls, |c| c.http3 = false, echo);
    let head = tcp_head(&tls, off.local_addr()).await;
    assert!(
        head.starts_with("http/1.1 200") && !head.contains("alt-svc"),
        "{head}"
    );
    stop(off).await;
}

#[tokio::test]
async fn the_access_log_says_http3() {
    let tls = tls();
    let dir = TempDir::new("h3log");
    let path = dir.path().join("access.log");
    let log = Arc::new(keepwire::server::access::AccessLog::append_to(&path).unwrap());
    let (server, _m) = serve_h3(&tls, |c| c.access_log = Some(log), echo);
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    h3.get("/logged?q=1").await;
    drop(h3);
    stop(server).await;
    eventually("the line is written", WAIT, || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("proto=HTTP/3"))
    })
    .await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"GET /logged?q=1 HTTP/3.0\" 200 "), "{text}");
}

/// What an origin saw: the request's fields, one `name: value` a line.
async fn fields(req: Request<Body>) -> Response<Body> {
    let mut text = String::new();
    for (name, value) in req.headers() {
        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
    }
    Response::new(Body::from(text))
}

#[tokio::test]
async fn the_proxy_in_front_says_via_3_and_passes_no_connection_fields() {
    use keepwire::proxy::{Proxy, ProxyConfig, Route, Upstream};
    let origin = serve(|_| {}, fields);
    let mut pc = ProxyConfig::default();
    let upstream = Upstream::new(origin.local_addr().to_string());
    pc.routes = vec![Route::new(None, "/", vec![upstream])];
    let proxy = Proxy::new(pc);
    let tls = tls();
    let (front, metrics) = serve_h3(
        &tls,
        |c| {
            let tls = c.tls.take();
            *c = Proxy::server_config();
            c.tls = tls;
        },
        proxy,
    );
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, front.quic_addrs()[0]).await;
    let req = Request::get("https://localhost/seen")
        .header("te", "trailers")
        .header("x-kept", "1")
        .body(())
        .unwrap();
    let resp = h3.try_request(req, None).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text());
    let seen = resp.text();
    assert!(seen.contains("via: 3 keepwire\n"), "{seen}");
    assert!(seen.contains("x-kept: 1\n"), "{seen}");
    assert!(!seen.contains("te: "), "{seen}");
    // The answer's own Via names the hop it came over (HTTP/1.1).
    assert_eq!(resp.head.headers()["via"], "1.1 keepwire");
    // Connection-specific fields make an HTTP/3 request malformed (RFC 9114
    // §4.2): refused before the proxy, never sent on.
    for (name, value) in [
        ("connection", "close"),
        ("keep-alive", "5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ] {
        let req = Request::get("https://localhost/bad")
            .header(name, value)
            .body(())
            .unwrap();
        let resp = h3.try_request(req, None).await.unwrap();
        assert_eq!(resp.status(), 400, "{name}: {}", resp.text());
    }
    assert_eq!(
        metric(&metrics(), "requests_by_protocol_total{protocol=\"h3\"}"),
        7
    );
    // The origin got the one good request.
    assert_eq!(metric(&origin.metrics().render(), "requests_total"), 1);
    // Over TCP (HTTP/1.1, the proxy's own read path), the front advertises
    // its QUIC port.
    let head = tcp_head(&tls, front.local_addr()).await;
    let port = front.quic_addrs()[0].port();
    let want = format!("\r\nalt-svc: h3=\":{port}\"; ma=86400");
    assert!(
        head.starts_with("http/1.1 200") && head.contains(&want),
        "{head}"
    );
    drop(h3);
    stop(front).await;
    stop(origin).await;
}

#[tokio::test]
async fn early_data_runs_only_replay_safe_methods() {
    let tls = tls();
    let handler = |req: Request<Body>| async move {
        let early = req
            .extensions()
            .get::<keepwire::server::EarlyData>()
            .is_some();
        // The header says the same, for the hops behind a proxy.
        assert_eq!(req.headers().contains_key("early-data"), early);
        Response::new(Body::from(format!("{} early={early}", req.method())))
    };
    let (server, _m) = serve_h3(&tls, |_| {}, handler);
    let addr = server.quic_addrs()[0];
    // 0-RTT needs a ticket from an earlier connection, kept by the config.
    let mut client = rustls::ClientConfig::clone(&tls.tcp);
    client.alpn_protocols = vec![b"h3".to_vec()];
    client.enable_early_data = true;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap();
    let endpoint = client_endpoint(&quinn::ClientConfig::new(Arc::new(crypto)));
    let mut first = H3::connect(&endpoint, addr).await;
    assert_eq!(first.get("/").await.text(), "GET early=false");
    // Let the session ticket arrive, then end the connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);
    let connecting = endpoint.connect(addr, "localhost").unwrap();
    let (conn, accepted) = connecting.into_0rtt().expect("a 0-RTT ticket");
    let (mut driver, mut send) = within(
        "HTTP/3 setup in 0-RTT",
        WAIT,
        h3::client::new(h3_quinn::Connection::new(conn.clone())),
    )
    .await
    .unwrap();
    let _driver = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let ask = |req: Request<()>| {
        let mut send = send.clone();
        async move {
            let mut s = send.send_request(req).await.unwrap();
            s.finish().await.unwrap();
            read(s).await.unwrap()
        }
    };
    let get = ask(h3_get("/early"));
    let post = ask(Request::post("https://localhost/early").body(()).unwrap());
    let (get, post) = within("answers to early data", WAIT, async {
        tokio::join!(get, post)
    })
    .await;
    assert!(accepted.await, "the server refused 0-RTT");
    assert_eq!(get.text(), "GET early=true");
    // Not replay-safe: 425, the client retries after the handshake.
    assert_eq!(post.status(), 425);
    let after = within("a POST after the handshake", WAIT, async {
        let mut s = send
            .send_request(Request::post("https://localhost/").body(()).unwrap())
            .await
            .unwrap();
        s.finish().await.unwrap();
        read(s).await.unwrap()
    })
    .await;
    assert_eq!(after.text(), "POST early=false");
    stop(server).await;
}
