//! HTTP/2 held to the HTTP/1 driver's discipline (R10.4), tried as a hostile
//! client would with the `h2` crate's client: reset streams cancel their
//! handlers, handlers in flight never pass the advertised stream limit, a
//! reset flood gets GOAWAY `ENHANCE_YOUR_CALM`, bodies are bounded in size
//! and time, and a client that opens no flow-control window loses the
//! connection within the write timeout.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use keepwire::Body;
use support::*;
use tokio::net::TcpStream;

/// Counts handlers running now and the most ever running at once; a handler
/// that is dropped (cancelled) leaves the count when it drops.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    max: AtomicUsize,
    started: AtomicUsize,
}

struct Ticket(Arc<Running>);

impl Running {
    fn enter(self: &Arc<Self>) -> Ticket {
        self.started.fetch_add(1, Ordering::SeqCst);
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        Ticket(self.clone())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A handler that takes a long time (an upstream that is slow).
fn slow(running: Arc<Running>) -> impl keepwire::server::Handler {
    move |_req: Request<Body>| {
        let running = running.clone();
        async move {
            let _ticket = running.enter();
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(Body::from("late"))
        }
    }
}

async fn h2_client(
    addr: std::net::SocketAddr,
    builder: h2::client::Builder,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = builder.handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

/// A GET of `/slow` on a new connection: the client, its connection task
/// and the request's stream (to reset).
async fn get_slow(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    h2::SendStream<Bytes>,
) {
    let (send, conn) = h2_client(addr, h2::client::Builder::new()).await;
    let mut send = send.ready().await.unwrap();
    let req = Request::get(format!("http://{addr}/slow"))
        .body(())
        .unwrap();
    let (_resp, stream) = send.send_request(req, true).unwrap();
    (send, conn, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_cancels_its_handler() {
    let running = Arc::new(Running::default());
    let (server, metrics) = serve_with_metrics(
        |c| c.shutdown_timeout = Duration::from_millis(500),
        slow(running.clone()),
    );
    let addr = server.local_addr();
    let (send, _conn, mut stream) = get_slow(addr).await;
    eventually("the handler runs", WAIT, || {
        running.now.load(Ordering::SeqCst) == 1
    })
    .await;
    stream.send_reset(h2::Reason::CANCEL);
    eventually("the reset drops the handler", WAIT, || {
        running.now.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(metric(&metrics(), "h2_streams_cancelled_total"), 1);
    assert_eq!(metric(&metrics(), "h2_streams_in_flight"), 0);
    // The connection itself is fine.
    let mut send = send.ready().await.unwrap();
    let req = Request::get(format!("http://{addr}/again"))
        .body(())
        .unwrap();
    let (_resp, _stream) = send.send_request(req, true).unwrap();
    eventually("a second stream runs", WAIT, || {
        running.started.load(Ordering::SeqCst) == 2
    })
    .await;
    stop(server).await;
}

/// The Rapid Reset class (CVE-2023-44487): streams opened and reset ~100 ms
/// later, round after round. Before this was fixed, 2,000 handlers ran on
/// one connection whose stream limit is 128.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_flood_stays_within_the_stream_limit_and_gets_enhance_your_calm() {
    let running = Arc::new(Running::default());
    let (server, metrics) = serve_with_metrics(|_| {}, slow(running.clone()));
    let addr = server.local_addr();
    let (send, conn) = h2_client(addr, h2::client::Builder::new()).await;
    let mut send = send;
    let mut opened = 0usize;
    let started_at = Instant::now();
    'rounds: for _ in 0..16 {
        let mut round = Vec::new();
        for i in 0..128 {
            send = match send.ready().await {
                Ok(s) => s,
                Err(_) => break 'rounds,
            };
            let req = Request::get(format!("http://{addr}/{opened}-{i}"))
                .body(())
                .unwrap();
            match send.send_request(req, true) {
                Ok((_resp, stream)) => round.push(stream),
                Err(_) => break 'rounds,
            }
            opened += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for mut stream in round {
            stream.send_reset(h2::Reason::CANCEL);
        }
        if started_at.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let ended = within("the server ends the connection", WAIT, conn)
        .await
        .expect("joined");
    let err = ended.expect_err("GOAWAY with an error code");
    assert_eq!(
        err.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "after {opened} streams: {err}"
    );
    assert!(
        opened < 2048,
        "the flood was stopped early ({opened} streams)"
    );
    eventually("every handler cancelled", WAIT, || {
        running.now.load(Ordering::SeqCst) == 0
    })
    .await;
    let max = running.max.load(Ordering::SeqCst);
    assert!(max <= 128, "{max} handlers ran at once on one connection");
    let text = metrics();
    assert!(metric(&text, "h2_streams_in_flight_max_per_connection") <= 128);
    assert_eq!(metric(&text, "h2_streams_in_flight"), 0);
    assert!(metric(&text, "h2_calm_goaways_total") >= 1);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_request_bodies_are_held_to_max_body() {
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let server = serve(
        |c| c.limits.max_body_bytes = Some(1024),
        move |req: Request<Body>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                match req.into_body().collect(usize::MAX).await {
                    Ok(b) => Response::new(Body::from(format!("got {}", b.len()))),
                    Err(_) => Response::builder()
                        .status(StatusCode::BAD_GATEWAY)
                        .body(Body::empty())
                        .unwrap(),
                }
            }
        },
    );
    let addr = server.local_addr();
    let (send, _conn) = h2_client(addr, h2::client::Builder::new()).await;
    // Declared over the limit: refused before the handler runs.
    let mut send = send.ready().await.unwrap();
    let req = Request::post(format!("http://{addr}/declared"))
        .header("content-length", "4096")
        .body(())
        .unwrap();
    let (resp, _body) = send.send_request(req, false).unwrap();
    let resp = within("413", WAIT, resp).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(called.load(Ordering::SeqCst), 0);
    // Streamed without a length: counted, and the answer is 413 whatever
    // the handler made of the broken body. Within the limit: served.
    for (size, want) in [
        (4096, StatusCode::PAYLOAD_TOO_LARGE),
        (1000, StatusCode::OK),
    ] {
        let mut send = send.clone().ready().await.unwrap();
        let req = Request::post(format!("http://{addr}/streamed"))
            .body(())
            .unwrap();
        let (resp, mut body) = send.send_request(req, false).unwrap();
        body.send_data(Bytes::from(vec![b'x'; size]), true).unwrap();
        let resp = within("the answer", WAIT, resp).await.unwrap();
        assert_eq!(resp.status(), want, "{size} bytes");
    }
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_that_stops_coming_gets_408() {
    let server = serve(
        |c| c.body_timeout = Duration::from_millis(300),
        |req: Request<Body>| async move {
            let got = req.into_body().collect(1 << 20).await;
            Response::new(Body::from(format!("{}", got.is_ok())))
        },
    );
    let addr = server.local_addr();
    let (send, _conn) = h2_client(addr, h2::client::Builder::new()).await;
    let mut send = send.ready().await.unwrap();
    let req = Request::post(format!("http://{addr}/")).body(()).unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"some"), false).unwrap();
    let resp = within("408", WAIT, resp).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    stop(server).await;
}

/// SETTINGS_INITIAL_WINDOW_SIZE 0 and never a WINDOW_UPDATE: the answer can
/// never be sent. The stream is reset and, with nothing else making
/// progress, the connection closed within the write timeout (+1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_opens_no_window_loses_the_connection_within_write_timeout() {
    for size in [10usize, 200_000] {
        let (server, metrics) = serve_with_metrics(
            |c| c.write_timeout = Duration::from_secs(1),
            move |_req: Request<Body>| async move { Response::new(Body::from(vec![b'z'; size])) },
        );
        let addr = server.local_addr();
        let mut builder = h2::client::Builder::new();
        builder.initial_window_size(0);
        let (send, conn) = h2_client(addr, builder).await;
        let mut send = send.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}/big")).body(()).unwrap();
        let (resp, _stream) = send.send_request(req, true).unwrap();
        let resp = within("the answer's head", WAIT, resp).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let head_at = Instant::now();
        let _body = resp.into_body();
        let ended = within("the connection closes", WAIT, conn).await;
        let took = head_at.elapsed();
        assert!(ended.is_ok());
        assert!(
            took <= Duration::from_millis(2000),
            "{size}-byte answer: closed after {took:?} (write timeout 1 s)"
        );
        assert_eq!(metric(&metrics(), "h2_streams_stalled_total"), 1);
        stop(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_agree_with_authority() {
    let server = serve(
        |_| {},
        |_req: Request<Body>| async move { Response::new(Body::from("ok")) },
    );
    let addr = server.local_addr();
    let (send, _conn) = h2_client(addr, h2::client::Builder::new()).await;
    let cases = [
        (format!("{addr}"), StatusCode::OK),
        ("other.example".to_string(), StatusCode::BAD_REQUEST),
    ];
    let mut send = send;
    for (host, want) in cases {
        send = send.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}/"))
            .header("host", host.as_str())
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = within("answer", WAIT, resp).await.unwrap();
        assert_eq!(resp.status(), want, "host {host}");
    }
    stop(server).await;
}

/// Through the proxy, a reset stream's handler is a whole upstream request:
/// the reset must reach it (here: the upstream connection is closed, since
/// an HTTP/1 request cannot be cancelled any other way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_cancels_the_proxys_upstream_request() {
    use keepwire::proxy::{Proxy, ProxyConfig, Route, Upstream};
    use tokio::io::AsyncReadExt;
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap();
    // The origin reads the request, never answers, and reports when the
    // proxy gives the request up (EOF on its connection).
    let (saw_request, got_request) = tokio::sync::oneshot::channel();
    let upstream = tokio::spawn(async move {
        let (mut s, _) = origin.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let _ = saw_request.send(n);
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let proxy = Proxy::new({
        let mut pc = ProxyConfig::default();
        pc.routes = vec![Route::new(
            None,
            "/",
            vec![Upstream::new(origin_addr.to_string())],
        )];
        pc
    });
    let p = proxy.clone();
    let (server, metrics) = serve_with_metrics(
        |c| c.shutdown_timeout = Duration::from_millis(500),
        move |req| p.clone().handle(req),
    );
    let addr = server.local_addr();
    let (_send, _conn, mut stream) = get_slow(addr).await;
    within("the origin sees the request", WAIT, got_request)
        .await
        .unwrap();
    stream.send_reset(h2::Reason::CANCEL);
    within("the upstream request is dropped", WAIT, upstream)
        .await
        .unwrap();
    eventually("counted", WAIT, || {
        metric(&metrics(), "h2_streams_cancelled_total") == 1
    })
    .await;
    stop(server).await;
}

/// A client that opens every window, asks for 64 answers of 250 KB and
/// never reads the socket (a slow read). Every answer fits h2's send buffer,
/// so every stream's work is done at once and no stream waits for a window;
/// what is left is 16 MB that h2 holds for a socket that takes nothing.
/// After the write timeout the connection is closed, as over HTTP/1
/// (before: at the idle timeout, 75 s by default, plus the shutdown grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_the_connection_within_write_timeout() {
    use tokio::io::AsyncWriteExt;
    let (server, metrics) = serve_with_metrics(
        |c| c.write_timeout = Duration::from_secs(1),
        |_req: Request<Body>| async move { Response::new(Body::from(vec![b'w'; 250_000])) },
    );
    let addr = server.local_addr();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    // SETTINGS: INITIAL_WINDOW_SIZE 2^31-1.
    out.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 4, 0x7f, 0xff, 0xff, 0xff]);
    // WINDOW_UPDATE on the connection up to 2^31-1.
    out.extend_from_slice(&[0, 0, 4, 8, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&(0x7fff_ffffu32 - 65_535).to_be_bytes());
    // HEADERS, stream 1, END_STREAM | END_HEADERS: GET http://x/ (static
    // HPACK indices; :authority as a literal).
    let block = [0x82, 0x86, 0x84, 0x01, 0x01, b'x'];
    for stream in (1u32..128).step_by(2) {
        out.extend_from_slice(&[0, 0, block.len() as u8, 1, 5]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&block);
    }
    tcp.write_all(&out).await.unwrap();
    // Never read: the socket buffers fill and the server's writes block.
    let started = Instant::now();
    eventually(
        "closed for the write timeout",
        Duration::from_secs(10),
        || {
            let m = metrics();
            m.contains("keepwire_connection_closes_total{reason=\"timeout\"} 1")
                && metric(&m, "connections_open") == 0
        },
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    drop(tcp);
    stop(server).await;
}
