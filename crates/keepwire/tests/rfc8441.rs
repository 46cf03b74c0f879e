//! HTTP/2 extended CONNECT (RFC 8441) between keepwire's client and
//! server: a stream switched by a CONNECT with `:protocol` carries bytes
//! both ways under flow control, ends with END_STREAM or RST_STREAM,
//! counts against the stream limit and in `tunnels_open`, outlives the
//! connection's idle timeout while it lives, and ends with the server's
//! shutdown. A handler that refuses answers plainly; a server that did not
//! advertise SETTINGS_ENABLE_CONNECT_PROTOCOL gets no extended CONNECT.
//! Over it, `keepwire::ws` client and server talk WebSocket (RFC 8441 §5).

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use keepwire::Body;
use keepwire::client::{Client, ClientConfig, ClientError};
use keepwire::upgrade::{OnUpgrade, Protocol, Upgraded, connect_protocol};
use keepwire::ws::{self, Message};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How the server's side of a tunnel ended: its read result.
type Ends = mpsc::UnboundedSender<std::io::ErrorKind>;

/// Accepts `:protocol echo` and echoes the stream (a half-close answered
/// with one), reporting how its reads ended; accepts `drop` and drops the
/// stream after one byte; refuses any other protocol.
fn echo_handler(ends: Ends) -> impl Fn(Request<Body>) -> std::future::Ready<Response<Body>> {
    move |req: Request<Body>| {
        let proto = connect_protocol(&req).map(|p| p.as_str().to_string());
        let on = req.extensions().get::<OnUpgrade>().cloned();
        let resp = match (proto.as_deref(), on) {
            (Some("echo"), Some(on)) => {
                let ends = ends.clone();
                tokio::spawn(async move {
                    let Some(up) = on.wait().await else { return };
                    assert!(up.is_h2_stream());
                    let _ = ends.send(echo(up).await);
                });
                Response::new(Body::empty())
            }
            // Reads one byte, then drops the stream unfinished.
            (Some("drop"), Some(on)) => {
                tokio::spawn(async move {
                    let Some(mut up) = on.wait().await else {
                        return;
                    };
                    let _ = up.read(&mut [0u8; 1]).await;
                });
                Response::new(Body::empty())
            }
            _ => Response::builder()
                .status(StatusCode::FORBIDDEN)
                .body(Body::from("no such protocol here"))
                .unwrap(),
        };
        std::future::ready(resp)
    }
}

/// Accepts `:protocol flood` and writes into the stream without end,
/// counting the bytes its writes took.
fn flood_handler(
    written: Arc<AtomicU64>,
) -> impl Fn(Request<Body>) -> std::future::Ready<Response<Body>> {
    move |req: Request<Body>| {
        let on = req.extensions().get::<OnUpgrade>().cloned().unwrap();
        let written = written.clone();
        tokio::spawn(async move {
            let Some(mut up) = on.wait().await else {
                return;
            };
            let chunk = vec![7u8; 16 * 1024];
            while up.write_all(&chunk).await.is_ok() {
                written.fetch_add(chunk.len() as u64, Relaxed);
            }
        });
        std::future::ready(Response::new(Body::empty()))
    }
}

/// Echoes until the peer's end; returns how reading ended (`Other`: a
/// clean end).
async fn echo(mut up: Upgraded) -> std::io::ErrorKind {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match up.read(&mut buf).await {
            Ok(0) => {
                let _ = up.shutdown().await;
                return std::io::ErrorKind::Other;
            }
            Ok(n) => {
                if let Err(e) = up.write_all(&buf[..n]).await {
                    return e.kind();
                }
            }
            Err(e) => return e.kind(),
        }
    }
}

fn h2c_client() -> Client {
    let mut cfg = ClientConfig::default();
    cfg.http2_prior_knowledge = true;
    cfg.connect_timeout = Duration::from_secs(2);
    Client::new(cfg)
}

fn extended_connect(addr: std::net::SocketAddr, protocol: &'static str) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/chat"))
        .header("x-test", "1")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(Protocol::from_static(protocol));
    req
}

/// Opens an `echo` tunnel.
async fn open(client: &Client, addr: std::net::SocketAddr) -> Upgraded {
    let resp = within(
        "extended CONNECT",
        WAIT,
        client.request(extended_connect(addr, "echo")),
    )
    .await
    .expect("extended CONNECT answered");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let on = resp
        .extensions()
        .get::<OnUpgrade>()
        .cloned()
        .expect("OnUpgrade");
    let up = within("the stream", WAIT, on.wait())
        .await
        .expect("the stream");
    assert!(up.is_h2_stream());
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_bytes_both_ways_past_the_idle_timeout_and_ends_with_end_stream() {
    let (ends, mut ended) = mpsc::unbounded_channel();
    let (server, metrics) = serve_with_metrics(
        |c| {
            c.idle_timeout = Duration::from_millis(300);
            // An idle GOAWAY would end the tunnel this soon after.
            c.shutdown_timeout = Duration::from_millis(200);
        },
        echo_handler(ends),
    );
    let client = h2c_client();
    let mut up = open(&client, server.local_addr()).await;
    up.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    within("the echo", WAIT, up.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"hello");
    eventually("the stream is counted as a tunnel", WAIT, || {
        metric(&metrics(), "tunnels_open") == 1
    })
    .await;
    // Quiet for longer than the connection's idle timeout: the tunnel is
    // the connection's work, so no GOAWAY ends it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    // 1 MiB each way at once: more than the 64 KiB windows, so both
    // directions wait for WINDOW_UPDATEs the reader sends as it consumes.
    let data = pattern(1 << 20);
    let (mut rd, mut wr) = tokio::io::split(up);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            wr.write_all(&data).await.unwrap();
            // END_STREAM: the half-close.
            wr.shutdown().await.unwrap();
        })
    };
    let mut back = Vec::new();
    within(
        "the echo of 1 MiB, then the end",
        WAIT * 2,
        rd.read_to_end(&mut back),
    )
    .await
    .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(fnv(FNV_START, &back), fnv(FNV_START, &data));
    assert_eq!(
        within("the server's end", WAIT, ended.recv()).await,
        Some(std::io::ErrorKind::Other),
        "the server saw END_STREAM as the end"
    );
    drop(rd);
    eventually("the tunnel is no longer counted", WAIT, || {
        metric(&metrics(), "tunnels_open") == 0
    })
    .await;
    // The connection is still there for ordinary requests.
    let resp = client
        .get(&format!("http://{}/", server.local_addr()))
        .await;
    assert_eq!(resp.unwrap().status(), StatusCode::FORBIDDEN);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_from_the_client_ends_the_servers_stream() {
    let (ends, mut ended) = mpsc::unbounded_channel();
    let (server, metrics) = serve_with_metrics(|_| {}, echo_handler(ends));
    let client = h2c_client();
    let mut up = open(&client, server.local_addr()).await;
    up.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    up.read_exact(&mut one).await.unwrap();
    // Dropped before either end: h2 resets the stream (RST_STREAM CANCEL).
    drop(up);
    assert_eq!(
        within("the server's end", WAIT, ended.recv()).await,
        Some(std::io::ErrorKind::ConnectionReset)
    );
    eventually("the tunnel is no longer counted", WAIT, || {
        metric(&metrics(), "tunnels_open") == 0
    })
    .await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_server_drops_is_a_reset_to_the_client() {
    let (ends, _ended) = mpsc::unbounded_channel();
    let (server, metrics) = serve_with_metrics(|_| {}, echo_handler(ends));
    let client = h2c_client();
    let mut req = extended_connect(server.local_addr(), "echo");
    req.extensions_mut().insert(Protocol::from_static("drop"));
    let resp = within("extended CONNECT", WAIT, client.request(req))
        .await
        .unwrap();
    let on = resp.extensions().get::<OnUpgrade>().cloned().unwrap();
    let mut up = within("the stream", WAIT, on.wait()).await.unwrap();
    up.write_all(b"x").await.unwrap();
    let read = within("the reset", WAIT, up.read(&mut [0u8; 8])).await;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    eventually("the tunnel is no longer counted", WAIT, || {
        metric(&metrics(), "tunnels_open") == 0
    })
    .await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_refuses_answers_plainly() {
    let (ends, _ended) = mpsc::unbounded_channel();
    let server = serve(|_| {}, echo_handler(ends));
    let client = h2c_client();
    let resp = client
        .request(extended_connect(server.local_addr(), "nope"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.extensions().get::<OnUpgrade>().is_none());
    let body = resp.into_body().collect(1024).await.unwrap();
    assert_eq!(&body[..], b"no such protocol here");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_counts_against_the_stream_limit() {
    let (ends, mut ended) = mpsc::unbounded_channel();
    let server = serve(|c| c.http2_max_streams = 1, echo_handler(ends));
    let client = h2c_client();
    let url = format!("http://{}/", server.local_addr());
    let up = open(&client, server.local_addr()).await;
    // The one stream is taken: a request waits for it.
    let waited = tokio::time::timeout(Duration::from_millis(500), client.get(&url)).await;
    assert!(waited.is_err(), "a request got a stream: {waited:?}");
    drop(up);
    // The server's side of the tunnel ends (and gives its stream back)
    // before the next request: on a loaded machine the request could
    // otherwise reach the server first and be refused, and the client's
    // immediate retries with it.
    within("the tunnel ends on the server", WAIT, ended.recv()).await;
    let resp = within("a request after the tunnel", WAIT, client.get(&url)).await;
    assert_eq!(resp.unwrap().status(), StatusCode::FORBIDDEN);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_an_open_stream_after_goaway() {
    let (ends, _ended) = mpsc::unbounded_channel();
    let server = serve(
        |c| c.shutdown_timeout = Duration::from_millis(300),
        echo_handler(ends),
    );
    let client = h2c_client();
    let mut up = open(&client, server.local_addr()).await;
    within("shutdown", WAIT, server.shutdown())
        .await
        .expect("shutdown");
    // The stream ended with its connection.
    let mut buf = [0u8; 16];
    let read = within("the stream's end", WAIT, up.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_a_server_that_did_not_enable_it() {
    // The `h2` crate's server with its default settings: no
    // SETTINGS_ENABLE_CONNECT_PROTOCOL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        while let Some(Ok((_, mut respond))) = conn.accept().await {
            let resp = Response::new(());
            let mut send = respond.send_response(resp, false).unwrap();
            let _ = send.send_data(Bytes::from_static(b"ok"), true);
        }
    });
    let client = h2c_client();
    let err = within(
        "extended CONNECT",
        WAIT,
        client.request(extended_connect(addr, "echo")),
    )
    .await
    .expect_err("no extended CONNECT without the setting");
    assert!(matches!(err, ClientError::ExtendedConnect(_)), "{err:?}");
    assert!(
        err.to_string().contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
        "{err}"
    );
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_stops_the_writer_at_the_window() {
    let written = Arc::new(AtomicU64::new(0));
    let server = serve(|_| {}, flood_handler(written.clone()));
    let client = h2c_client();
    let mut req = extended_connect(server.local_addr(), "echo");
    req.extensions_mut().insert(Protocol::from_static("flood"));
    let resp = within("extended CONNECT", WAIT, client.request(req))
        .await
        .unwrap();
    let on = resp.extensions().get::<OnUpgrade>().cloned().unwrap();
    let mut up = within("the stream", WAIT, on.wait()).await.unwrap();
    // Nothing read: the writer stops once the stream's window (64 KiB by
    // default) is used up, and nothing piles up behind it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled = written.load(Relaxed);
    assert!(
        stalled > 0 && stalled <= 128 * 1024,
        "wrote {stalled} bytes"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(written.load(Relaxed), stalled, "the writer went on");
    // Reading opens the window again: the writer moves on.
    let mut buf = vec![0u8; 256 * 1024];
    within("the flood", WAIT, up.read_exact(&mut buf))
        .await
        .unwrap();
    eventually("the writer resumed", WAIT, || {
        written.load(Relaxed) > stalled
    })
    .await;
    drop(up);
    stop(server).await;
}

// ---------------------------------------------------------------------------
// keepwire::ws over HTTP/2: client and server both keepwire's.

/// A WebSocket server (`keepwire::ws`) that greets first, echoes text as
/// "echo: …", closes with 4001 on "close-me", and reports what it saw.
fn ws_server(
    seen: mpsc::UnboundedSender<String>,
) -> impl Fn(Request<Body>) -> std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>
+ Send
+ Sync
+ 'static {
    move |mut req: Request<Body>| {
        let seen = seen.clone();
        Box::pin(async move {
            if !ws::is_upgrade(&req) {
                return Response::new(Body::from("plain"));
            }
            let _ = seen.send(format!("{:?} {}", req.version(), req.method()));
            let mut cfg = ws::Config::default();
            cfg.protocols = vec!["chat".into()];
            let (resp, accepting) = match ws::accept(&mut req, cfg) {
                Ok(v) => v,
                Err(refusal) => return refusal,
            };
            tokio::spawn(async move {
                let Some(mut sock) = accepting.await else {
                    return;
                };
                let _ = sock.send(Message::Text("welcome".into())).await;
                while let Some(m) = sock.recv().await {
                    match m {
                        Ok(Message::Text(t)) if t == "close-me" => {
                            let r = sock.close(4001, "server bye").await;
                            let _ = seen.send(format!("closed {r:?}"));
                            return;
                        }
                        Ok(Message::Text(t)) => {
                            let _ = sock.send(Message::Text(format!("echo: {t}"))).await;
                        }
                        Ok(Message::Close(Some(c))) => {
                            let _ = seen.send(format!("close {} {}", c.code, c.reason));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = seen.send(format!("error {e}"));
                            return;
                        }
                    }
                }
                let _ = seen.send("end".into());
            });
            resp
        })
    }
}

fn ws_over_h2() -> ws::Config {
    let mut cfg = ws::Config::default();
    cfg.http2 = true;
    cfg.protocols = vec!["chat".into()];
    cfg
}

async fn next_text(sock: &mut ws::WebSocket) -> String {
    match within("a message", WAIT, sock.recv()).await {
        Some(Ok(Message::Text(t))) => t,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepwire_ws_client_and_server_over_http2_both_ways_and_close() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let (server, metrics) = serve_with_metrics(|_| {}, ws_server(tx));
    let client = h2c_client();
    let url = format!("ws://{}/ws", server.local_addr());
    let (mut sock, shake) = within(
        "the handshake",
        WAIT,
        ws::connect(&client, &url, http::HeaderMap::new(), ws_over_h2()),
    )
    .await
    .expect("connected over HTTP/2");
    assert_eq!(
        (shake.method.clone(), shake.version, shake.status),
        (Method::CONNECT, http::Version::HTTP_2, StatusCode::OK)
    );
    assert!(!shake.accept_checked);
    assert_eq!(shake.protocol.as_deref(), Some("chat"));
    let transcript = shake.transcript();
    // curl -v's HTTP/2 form: pseudo-headers as `* [HTTP/2]` lines first.
    assert!(
        transcript.starts_with("* [HTTP/2] [1] [:method: CONNECT]\n"),
        "{transcript}"
    );
    assert!(
        transcript.contains("[:path: /ws]\n> CONNECT /ws HTTP/2\n"),
        "{transcript}"
    );
    assert!(
        transcript.contains("* [HTTP/2] [1] [:protocol: websocket]\n"),
        "{transcript}"
    );
    assert_eq!(seen.recv().await.as_deref(), Some("HTTP/2.0 CONNECT"));
    // Server to client, then both ways.
    assert_eq!(next_text(&mut sock).await, "welcome");
    for text in ["hi", &"x".repeat(200_000)] {
        sock.send(Message::Text(text.to_string())).await.unwrap();
        assert_eq!(next_text(&mut sock).await, format!("echo: {text}"));
    }
    assert_eq!(metric(&metrics(), "tunnels_open"), 1);
    within("the close handshake", WAIT, sock.close(1000, "done"))
        .await
        .unwrap();
    assert_eq!(
        within("the server's view", WAIT, seen.recv())
            .await
            .as_deref(),
        Some("close 1000 done")
    );
    assert_eq!(
        within("the server's end", WAIT, seen.recv())
            .await
            .as_deref(),
        Some("end")
    );
    eventually("the stream is gone", WAIT, || {
        metric(&metrics(), "tunnels_open") == 0
    })
    .await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_close_over_http2_reaches_the_client() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let server = serve(|_| {}, ws_server(tx));
    let client = h2c_client();
    let url = format!("ws://{}/ws", server.local_addr());
    let (mut sock, _) = ws::connect(&client, &url, http::HeaderMap::new(), ws_over_h2())
        .await
        .expect("connected");
    assert_eq!(next_text(&mut sock).await, "welcome");
    sock.send(Message::Text("close-me".into())).await.unwrap();
    match within("the server's close", WAIT, sock.recv()).await {
        Some(Ok(Message::Close(Some(c)))) => {
            assert_eq!((c.code, c.reason.as_str()), (4001, "server bye"))
        }
        other => panic!("{other:?}"),
    }
    assert!(within("the end", WAIT, sock.recv()).await.is_none());
    let _ = seen.recv().await; // the handshake
    assert_eq!(
        within("the server's close result", WAIT, seen.recv())
            .await
            .as_deref(),
        Some("closed Ok(())")
    );
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_over_http2_names_the_missing_setting() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        while conn.accept().await.is_some() {}
    });
    let client = h2c_client();
    let url = format!("ws://{addr}/ws");
    let err = within(
        "the handshake",
        WAIT,
        ws::connect(&client, &url, http::HeaderMap::new(), ws_over_h2()),
    )
    .await
    .expect_err("no RFC 8441 without the setting");
    assert!(
        err.to_string().contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
        "{err}"
    );
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_extended_connect_is_sent_again_on_a_new_connection() {
    // The `h2` crate's server with extended CONNECT enabled: the first
    // connection refuses the stream unprocessed (REFUSED_STREAM), the
    // second accepts it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut conns = Vec::new();
        for n in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            conns.push(tokio::spawn(async move {
                let mut builder = h2::server::Builder::new();
                builder.enable_connect_protocol();
                let mut conn = builder.handshake::<_, Bytes>(tcp).await.unwrap();
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    if n == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    } else {
                        let _ = respond.send_response(Response::new(()), false);
                    }
                }
            }));
        }
        for c in conns {
            let _ = c.await;
        }
    });
    let client = h2c_client();
    let resp = within(
        "extended CONNECT",
        WAIT,
        client.request(extended_connect(addr, "echo")),
    )
    .await
    .expect("answered on the second connection");
    assert_eq!(resp.status(), StatusCode::OK);
    let meta = resp
        .extensions()
        .get::<keepwire::client::RequestMeta>()
        .unwrap();
    assert_eq!(meta.retries, 1);
    assert_eq!(client.metrics().connections_opened.load(Relaxed), 2);
    assert!(resp.extensions().get::<OnUpgrade>().is_some());
    peer.abort();
}

/// The access log has a line for an extended CONNECT, written when its
/// tunnel ends (`CONNECT /chat HTTP/2.0` 200, `proto=HTTP/2`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_connect_is_in_the_access_log_when_its_tunnel_ends() {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let log = keepwire::server::access::AccessLog::to_writer(lines.clone());
    let log = std::sync::Arc::new(log);
    let (ends, mut ended) = mpsc::unbounded_channel();
    let server = serve(|c| c.access_log = Some(log), echo_handler(ends));
    let client = h2c_client();
    let mut up = open(&client, server.local_addr()).await;
    up.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    up.read_exact(&mut one).await.unwrap();
    drop(up);
    within("the server's end", WAIT, ended.recv()).await;
    let text = || String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
    eventually("the line", WAIT, || text().contains("CONNECT")).await;
    let t = text();
    assert!(t.contains("\"CONNECT /chat HTTP/2.0\" 200 0 "), "{t}");
    assert!(t.contains(" req=1 ") && t.contains(" proto=HTTP/2 "), "{t}");
    stop(server).await;
}
