//! The library as an application uses it (issue 18 item 10): the client
//! built reqwest-style, streaming request bodies and what a retry may do
//! with them (R8.3), and a server on a listener bound elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use keepwire::{Body, Client, ClientError, Server};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took over {WAIT:?}"))
}

/// Answers with the request's `User-Agent`, or its body's length and
/// framing for a PUT.
async fn echo(req: Request<Body>) -> Response<Body> {
    let ua = req
        .headers()
        .get("user-agent")
        .map(|v| v.to_str().unwrap_or("?").to_string());
    let chunked = req.headers().contains_key("transfer-encoding");
    let body = req.into_body().collect(1 << 24).await.unwrap_or_default();
    let text = format!("ua={ua:?} len={} chunked={chunked}", body.len());
    Response::new(Body::from(text))
}

fn echo_server() -> keepwire::server::ServerHandle {
    Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap()
        .spawn(echo)
}

async fn text(resp: Response<Body>) -> String {
    let body = resp.into_body().collect(1 << 20).await.unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn builder_sets_timeouts_pool_and_a_default_user_agent() {
    let server = echo_server();
    let client = Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(5))
        .pool_max_per_host(1)
        .user_agent("lib-test/1.0")
        .build()
        .unwrap();
    let url = format!("http://{}/", server.local_addr());
    let r = within("get", client.get(&url)).await.unwrap();
    assert_eq!(
        text(r).await,
        "ua=Some(\"lib-test/1.0\") len=0 chunked=false"
    );
    // A request's own header wins.
    let req = Request::get(&url)
        .header("user-agent", "mine")
        .body(Body::empty())
        .unwrap();
    let r = within("request", client.request(req)).await.unwrap();
    assert_eq!(text(r).await, "ua=Some(\"mine\") len=0 chunked=false");
    assert_eq!(
        client.pool_counts(&url.parse().unwrap()),
        (1, 1),
        "one connection, reused"
    );
    // A bad value is reported by build, not by a panic.
    let bad = Client::builder().user_agent("bad\nvalue").build();
    assert!(
        matches!(bad, Err(ClientError::Config(_))),
        "{:?}",
        bad.err()
    );
    let bad = Client::builder()
        .add_root_certificates_pem(b"not pem")
        .build();
    assert!(matches!(bad, Err(ClientError::Config(_))));
    let none = Client::builder().tls_built_in_root_certs(false).build();
    assert!(
        matches!(none, Err(ClientError::Config(_))),
        "trusting nothing is an error"
    );
    drop(client);
    server.shutdown().await.unwrap();
}

/// A TLS server for `localhost` with a fresh self-signed certificate, and
/// that certificate's PEM.
fn tls_server() -> (keepwire::server::ServerHandle, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .configure(|c| c.tls = Some(Arc::new(tls)))
        .bind()
        .unwrap()
        .spawn(echo);
    (server, ck.cert.pem())
}

#[tokio::test]
async fn builder_trust_settings_decide_the_handshake() {
    let (server, pem) = tls_server();
    let url = format!("https://localhost:{}/", server.local_addr().port());
    let default = Client::builder().build().unwrap();
    let err = within("untrusted", default.get(&url)).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let trusting = Client::builder()
        .add_root_certificates_pem(pem.as_bytes())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let r = within("trusted", trusting.get(&url)).await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2, "ALPN h2 by default");
    let h1 = Client::builder()
        .add_root_certificates_pem(pem.as_bytes())
        .http1_only()
        .build()
        .unwrap();
    let r = within("http1", h1.get(&url)).await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_11);
    let insecure = Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert_eq!(
        within("insecure", insecure.get(&url))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    drop((default, trusting, h1, insecure));
    server.shutdown().await.unwrap();
}

/// A stream of `n` chunks of `size` bytes each, the byte value the index.
fn chunks(
    n: usize,
    size: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::iter((0..n).map(move |i| Ok(Bytes::from(vec![i as u8; size]))))
}

#[tokio::test]
async fn streamed_bodies_go_chunked_without_being_read_whole() {
    let server = echo_server();
    let url = format!("http://{}/", server.local_addr());
    let client = Client::default();
    // Over the replay bound (64 KiB): streamed, chunked.
    let put = |body| Request::put(&url).body(body).unwrap();
    let r = within(
        "stream",
        client.request(put(Body::from_stream(chunks(20, 10_000)))),
    )
    .await;
    assert_eq!(text(r.unwrap()).await, "ua=None len=200000 chunked=true");
    // Small: read ahead whole, sent with a Content-Length.
    let r = within(
        "small",
        client.request(put(Body::from_stream(chunks(3, 100)))),
    )
    .await;
    assert_eq!(text(r.unwrap()).await, "ua=None len=300 chunked=false");
    // From an AsyncRead.
    let (mut w, r) = tokio::io::duplex(4096);
    let writer = tokio::spawn(async move {
        for _ in 0..50 {
            w.write_all(&[7u8; 3000]).await.unwrap();
        }
    });
    let resp = within("reader", client.request(put(Body::from_reader(r)))).await;
    assert_eq!(text(resp.unwrap()).await, "ua=None len=150000 chunked=true");
    writer.await.unwrap();
    // Over HTTP/2 (h2c): DATA frames, no chunked framing.
    let h2 = Client::builder().http2_prior_knowledge().build().unwrap();
    let r = within("h2", h2.request(put(Body::from_stream(chunks(20, 10_000))))).await;
    let r = r.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(text(r).await, "ua=None len=200000 chunked=false");
    drop(h2);

    // The server has the first bytes while the stream is still open.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<usize>(1);
    let counting = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap()
        .spawn(move |req: Request<Body>| {
            let seen = seen_tx.clone();
            async move {
                use http_body_util::BodyExt;
                let mut body = req.into_body();
                let mut n = 0;
                let mut told = false;
                while let Some(Ok(frame)) = body.frame().await {
                    n += frame.into_data().map_or(0, |d| d.len());
                    if n >= 100_000 && !told {
                        told = true;
                        let _ = seen.send(n).await;
                    }
                }
                Response::new(Body::from(n.to_string()))
            }
        });
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let req = Request::put(format!("http://{}/", counting.local_addr()))
        .body(Body::from_stream(stream))
        .unwrap();
    let c = client.clone();
    let sending = tokio::spawn(async move { c.request(req).await });
    for _ in 0..10 {
        tx.send(Bytes::from(vec![1u8; 10_000])).await.unwrap();
    }
    let seen = within("first 100 kB at the server", seen_rx.recv())
        .await
        .unwrap();
    assert!(seen >= 100_000);
    tx.send(Bytes::from(vec![1u8; 5])).await.unwrap();
    drop(tx);
    let resp = within("response", sending).await.unwrap().unwrap();
    assert_eq!(text(resp).await, "100005");
    drop(client);
    counting.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A raw HTTP/1.1 origin that answers `GET /warm` with keep-alive, cuts
/// the first PUT off after reading its head (the stale-connection race: it
/// closed while the request was on its way), and answers later PUTs with
/// their body's length. Returns its address and the PUT heads it saw.
async fn racing_origin() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let puts = Arc::new(AtomicUsize::new(0));
    let seen = puts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let puts = seen.clone();
            tokio::spawn(async move {
                let mut s = BufReader::new(stream);
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push(line.to_ascii_lowercase());
                    }
                    if head[0].starts_with("get") {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        continue;
                    }
                    if puts.fetch_add(1, SeqCst) == 0 {
                        return; // closed unanswered
                    }
                    let len = read_body(&mut s, &head).await;
                    let reply = format!("{len}");
                    let msg = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    let _ = s.write_all(msg.as_bytes()).await;
                }
            });
        }
    });
    (addr, puts)
}

/// Reads a request body framed by Content-Length or chunked; its length.
async fn read_body(s: &mut BufReader<tokio::net::TcpStream>, head: &[String]) -> usize {
    if let Some(n) = head
        .iter()
        .find_map(|h| h.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).await.unwrap();
        return n;
    }
    let mut total = 0;
    loop {
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        let mut buf = vec![0; size + 2];
        if size == 0 {
            s.read_line(&mut String::new()).await.unwrap();
            return total;
        }
        s.read_exact(&mut buf).await.unwrap();
        total += size;
    }
}

#[tokio::test]
async fn a_streamed_body_is_resent_only_while_it_was_kept_whole() {
    use std::sync::atomic::Ordering::SeqCst;
    for (size, resent) in [(30_000usize, true), (300_000, false)] {
        let (addr, puts) = racing_origin().await;
        let client = Client::default();
        let warm = within("warm", client.get(&format!("http://{addr}/warm"))).await;
        assert_eq!(text(warm.unwrap()).await, "ok");
        // PUT is idempotent: after the race it may go again, if it can.
        let req = Request::put(format!("http://{addr}/up"))
            .body(Body::from_stream(chunks(size / 1000, 1000)))
            .unwrap();
        let result = within("put", client.request(req)).await;
        if resent {
            let resp = result.expect("resent on a fresh connection");
            assert_eq!(text(resp).await, size.to_string(), "the same bytes again");
            assert_eq!(puts.load(SeqCst), 2);
            assert_eq!(client.metrics().retries.load(SeqCst), 1);
        } else {
            let err = result.expect_err("a partly sent body it did not keep is never resent");
            assert!(!matches!(err, ClientError::Config(_)), "{err}");
            assert_eq!(puts.load(SeqCst), 1, "sent once");
            assert_eq!(client.metrics().retries.load(SeqCst), 0);
        }
    }
}

#[tokio::test]
async fn server_from_a_std_or_tokio_listener() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let a = Server::from_listener(std_listener).unwrap().spawn(echo);
    assert_eq!(a.local_addr(), addr);
    let tokio_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = Server::builder()
        .listener(tokio_listener)
        .listen("127.0.0.1:0".parse().unwrap())
        .configure(|c| c.max_requests = Some(1))
        .bind()
        .unwrap()
        .spawn(echo);
    assert_eq!(
        b.local_addrs().len(),
        2,
        "the listener and the bound address"
    );
    let client = Client::default();
    for addr in [a.local_addr(), b.local_addrs()[0], b.local_addrs()[1]] {
        let r = within("get", client.get(&format!("http://{addr}/")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let close = r.headers().get("connection").is_some_and(|v| v == "close");
        assert_eq!(close, addr != a.local_addr(), "b's config applies to both");
    }
    drop(client);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn builder_proxy_goes_through_a_forward_proxy() {
    use keepwire::proxy::{Proxy, ProxyConfig};
    let origin = echo_server();
    let mut pc = ProxyConfig::default();
    pc.forward = true;
    pc.allow_destination = vec!["127.0.0.0/8".parse().unwrap()];
    let proxy = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .config(Proxy::server_config())
        .bind()
        .unwrap()
        .spawn(Proxy::new(pc));
    let client = Client::builder()
        .proxy(&format!("http://{}", proxy.local_addr()))
        .user_agent("via-proxy")
        .build()
        .unwrap();
    let r = within(
        "through the proxy",
        client.get(&format!("http://{}/", origin.local_addr())),
    )
    .await
    .unwrap();
    assert!(r.headers().contains_key("via"), "{:?}", r.headers());
    assert_eq!(
        r.extensions()
            .get::<keepwire::RequestMeta>()
            .unwrap()
            .conn
            .peer,
        proxy.local_addr(),
        "the connection is to the proxy"
    );
    assert_eq!(text(r).await, "ua=Some(\"via-proxy\") len=0 chunked=false");
    let bad = Client::builder().proxy("socks5://127.0.0.1:1").build();
    assert!(matches!(bad, Err(ClientError::Config(_))));
    drop(client);
    proxy.shutdown().await.unwrap();
    origin.shutdown().await.unwrap();
}

#[tokio::test]
async fn builder_timeout_bounds_the_whole_request_body_included() {
    // `/slow-head` answers after 5 s; `/trickle` sends a byte every 50 ms
    // for 5 s, which no per-read timeout would stop.
    let server = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .configure(|c| c.shutdown_timeout = Duration::from_millis(100))
        .bind()
        .unwrap()
        .spawn(|req: Request<Body>| async move {
            if req.uri().path() == "/slow-head" {
                tokio::time::sleep(Duration::from_secs(5)).await;
                return Response::new(Body::from("late"));
            }
            let (tx, body) = Body::channel(1);
            tokio::spawn(async move {
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if tx.send(Bytes::from_static(b".")).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(body)
        });
    let client = Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let addr = server.local_addr();
    let started = tokio::time::Instant::now();
    let err = within("slow head", client.get(&format!("http://{addr}/slow-head")))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let resp = within("trickle", client.get(&format!("http://{addr}/trickle")))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = within("trickled body", resp.into_body().collect(1 << 20))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("total timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(client);
    server.shutdown().await.unwrap();
}
