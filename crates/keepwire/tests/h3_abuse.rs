//! HTTP/3 abuse cases, as tests/h2_abuse.rs has for HTTP/2: each limit of
//! the QUIC server is pushed past by a client (quinn + h3 used directly,
//! or aioquic where h3 would refuse to misbehave) and the server's answer
//! is asserted, every wait bounded.

#[path = "support/quic.rs"]
mod quic;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use h3::error::Code;
use http::{Request, Response};
use keepwire::Body;
use keepwire::server::Handler;
use quic::*;
use support::*;

/// What the handlers of a test did.
struct Probe {
    started: AtomicUsize,
    /// Handlers dropped before they were released (cancelled).
    cancelled: AtomicUsize,
    running: AtomicUsize,
    peak: AtomicUsize,
    release: tokio::sync::Semaphore,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            started: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

/// Counts a handler's end; `released` says whether it ran to its answer.
struct Running(Arc<Probe>, bool);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
        if !self.1 {
            self.0.cancelled.fetch_add(1, SeqCst);
        }
    }
}

/// A handler that waits for a permit of `probe.release`, then answers.
fn held(probe: &Arc<Probe>) -> impl Handler + use<> {
    let probe = probe.clone();
    move |_req: Request<Body>| {
        let p = probe.clone();
        async move {
            p.started.fetch_add(1, SeqCst);
            let now = p.running.fetch_add(1, SeqCst) + 1;
            p.peak.fetch_max(now, SeqCst);
            let mut running = Running(p.clone(), false);
            let permit = p.release.acquire().await.expect("open");
            permit.forget();
            running.1 = true;
            Response::new(Body::from("released"))
        }
    }
}

fn series(text: &str, name: &str) -> u64 {
    metric(text, name)
}

#[tokio::test]
async fn a_stopped_stream_cancels_its_handler() {
    let tls = tls();
    let probe = Arc::new(Probe::default());
    let (server, metrics) = serve_h3(&tls, |_| {}, held(&probe));
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    // STOP_SENDING alone (the request already ended), then both halves
    // (what browsers send).
    for (round, both) in [(1, false), (2, true)] {
        let mut stream = h3.start(h3_get("/slow"), None).await.unwrap();
        eventually("the handler starts", WAIT, || {
            probe.started.load(SeqCst) == round
        })
        .await;
        stream.stop_sending(Code::H3_REQUEST_CANCELLED);
        if both {
            stream.stop_stream(Code::H3_REQUEST_CANCELLED);
        }
        eventually("the handler is dropped", WAIT, || {
            probe.cancelled.load(SeqCst) == round
        })
        .await;
    }
    let text = metrics();
    assert_eq!(series(&text, "h3_streams_cancelled_total"), 2);
    assert_eq!(series(&text, "h3_streams_in_flight"), 0);
    // The connection is still good.
    probe.release.add_permits(1);
    assert_eq!(h3.get("/after").await.text(), "released");
    drop(h3);
    stop(server).await;
}

#[tokio::test]
async fn a_cancel_flood_closes_the_connection_with_excessive_load() {
    let tls = tls();
    let probe = Arc::new(Probe::default());
    // Budget: max(2 × 8, 100) cancels per 10 s.
    let (server, metrics) = serve_h3(&tls, |c| c.http3_max_streams = 8, held(&probe));
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    let mut sent = 0;
    for round in 1..=130usize {
        let Ok(mut stream) = h3.start(h3_get("/x"), None).await else {
            break;
        };
        sent += 1;
        let started = within("the handler starts", WAIT, async {
            while probe.started.load(SeqCst) < round && h3.conn.close_reason().is_none() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        started.await;
        if h3.conn.close_reason().is_some() {
            break;
        }
        stream.stop_sending(Code::H3_REQUEST_CANCELLED);
        stream.stop_stream(Code::H3_REQUEST_CANCELLED);
    }
    let reason = within("the server closes", WAIT, h3.conn.closed()).await;
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                u64::from(c.error_code),
                Code::H3_EXCESSIVE_LOAD.value(),
                "{c:?}"
            )
        }
        other => panic!("closed for {other:?}"),
    }
    assert!(
        (101..=110).contains(&sent),
        "{sent} streams before the close"
    );
    let text = metrics();
    assert_eq!(series(&text, "h3_calm_closes_total"), 1);
    assert!(series(&text, "h3_streams_cancelled_total") >= 101);
    stop(server).await;
}

#[tokio::test]
async fn a_client_that_grants_no_window_is_cut_off() {
    let tls = tls();
    let (server, metrics) = serve_h3(
        &tls,
        |c| c.write_timeout = Duration::from_millis(300),
        |_req: Request<Body>| async { Response::new(Body::from(vec![b'z'; 1 << 20])) },
    );
    // The client's stream window is 1 KiB, and it never reads.
    let mut client = tls.quic.clone();
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(1024u32.into())
        .receive_window(64_000u32.into());
    client.transport_config(Arc::new(transport));
    let endpoint = client_endpoint(&client);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    let _stream = h3.start(h3_get("/big"), None).await.unwrap();
    within("the server gives up", WAIT, h3.conn.closed()).await;
    let text = metrics();
    assert_eq!(series(&text, "h3_streams_stalled_total"), 1);
    eventually("the close is counted", WAIT, || {
        series(&metrics(), "connection_closes_total{reason=\"timeout\"}") == 1
    })
    .await;
    assert_eq!(series(&metrics(), "connections_open"), 0);
    stop(server).await;
}

/// RFC 9114 §4.1.2: DATA that does not add up to `content-length` makes the
/// request malformed; h3 does not check it, so keepwire does. Short or
/// long, the handler's body fails (a proxy would otherwise send on a body
/// that lied as if whole), and the connection serves the next request.
#[tokio::test]
async fn a_body_that_breaks_its_content_length_fails_in_the_handler() {
    let tls = tls();
    let handler = |req: Request<Body>| async move {
        match req.into_body().collect(1 << 20).await {
            Ok(b) => Response::new(Body::from(format!("read {}", b.len()))),
            Err(e) => Response::new(Body::from(format!("error: {e}"))),
        }
    };
    let (server, _metrics) = serve_h3(&tls, |_| {}, handler);
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    let post = |len: &str| {
        Request::post("https://localhost/b")
            .header("content-length", len)
            .body(())
            .unwrap()
    };
    // Short: 5 bytes of a declared 10.
    let short = h3
        .try_request(post("10"), Some(Bytes::from_static(b"12345")))
        .await;
    let short = short.expect("an answer");
    assert!(short.text().starts_with("error"), "{}", short.text());
    // Long: 15 bytes of a declared 10 (an answer, or the stream stopped).
    let long = h3
        .try_request(post("10"), Some(Bytes::from_static(b"123456789012345")))
        .await;
    if let Ok(resp) = &long {
        assert!(resp.text().starts_with("error"), "{}", resp.text());
    }
    // Exact: read whole, on the same connection.
    let ok = h3
        .try_request(post("10"), Some(Bytes::from_static(b"1234567890")))
        .await
        .expect("an answer");
    assert_eq!(ok.text(), "read 10");
}

#[tokio::test]
async fn oversized_bodies_get_413_and_the_connection_lives_on() {
    let tls = tls();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let handler = move |req: Request<Body>| {
        let s = s.clone();
        async move {
            s.fetch_add(1, SeqCst);
            match req.into_body().collect(1 << 20).await {
                Ok(b) => Response::new(Body::from(format!("{}", b.len()))),
                Err(e) => Response::new(Body::from(format!("error: {e}"))),
            }
        }
    };
    let (server, _metrics) = serve_h3(&tls, |c| c.limits.max_body_bytes = Some(10_000), handler);
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    // Declared too large: refused before the handler runs.
    let req = Request::post("https://localhost/d")
        .header("content-length", "20000")
        .body(())
        .unwrap();
    let resp = h3
        .try_request(req, Some(Bytes::from(vec![1u8; 20_000])))
        .await;
    let resp = resp.expect("an answer");
    assert_eq!(resp.status(), 413);
    assert_eq!(seen.load(SeqCst), 0);
    // Streamed past the limit without a length: 413 whatever the handler says.
    let req = Request::post("https://localhost/s").body(()).unwrap();
    let mut stream = h3.send.send_request(req).await.unwrap();
    let mut status = None;
    for _ in 0..10 {
        if stream
            .send_data(Bytes::from(vec![2u8; 4_000]))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = stream.finish().await;
    if let Ok(Ok(head)) = tokio::time::timeout(WAIT, stream.recv_response()).await {
        status = Some(head.status().as_u16());
    }
    assert_eq!(status, Some(413));
    assert_eq!(seen.load(SeqCst), 1);
    // Within the limit, on the same connection.
    let req = Request::post("https://localhost/ok").body(()).unwrap();
    let resp = h3
        .try_request(req, Some(Bytes::from(vec![3u8; 9_000])))
        .await;
    assert_eq!(resp.unwrap().text(), "9000");
    drop(h3);
    stop(server).await;
}

#[tokio::test]
async fn connections_from_one_address_are_capped_with_the_tcp_ones() {
    let tls = tls();
    let (server, metrics) = serve_h3(
        &tls,
        |c| c.max_connections_per_ip = 2,
        |_req: Request<Body>| async { Response::new(Body::from("hi")) },
    );
    // One over TCP (TLS), one over QUIC: the address's two.
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls.tcp.clone());
    let tcp = within("TLS handshake", WAIT, connector.connect(name, tcp))
        .await
        .unwrap();
    let endpoint = client_endpoint(&tls.quic);
    let mut first = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    assert_eq!(first.get("/").await.text(), "hi");
    // A third is refused before its handshake.
    let refused = within("a refused handshake", WAIT, async {
        endpoint
            .connect(server.quic_addrs()[0], "localhost")
            .unwrap()
            .await
    })
    .await;
    assert!(refused.is_err(), "a third connection was admitted");
    assert_eq!(
        series(&metrics(), "connection_closes_total{reason=\"limit\"}"),
        1
    );
    // When the TCP connection goes, QUIC gets its place.
    drop(tcp);
    eventually("the TCP connection is gone", WAIT, || {
        series(&metrics(), "connections_open") == 1
    })
    .await;
    let mut second = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    assert_eq!(second.get("/").await.text(), "hi");
    drop((first, second));
    stop(server).await;
}

#[tokio::test]
async fn streams_in_flight_never_pass_the_limit() {
    let tls = tls();
    let probe = Arc::new(Probe::default());
    let (server, metrics) = serve_h3(&tls, |c| c.http3_max_streams = 2, held(&probe));
    let endpoint = client_endpoint(&tls.quic);
    let h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..5 {
        let mut send = h3.send.clone();
        tasks.spawn(async move {
            let req = h3_get(&format!("/{i}"));
            let mut stream = send.send_request(req).await.map_err(|e| e.to_string())?;
            stream.finish().await.map_err(|e| e.to_string())?;
            read(stream).await
        });
    }
    eventually("two handlers run", WAIT, || probe.started.load(SeqCst) == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        probe.started.load(SeqCst),
        2,
        "a third stream got past the credit"
    );
    probe.release.add_permits(5);
    let mut ok = 0;
    while let Some(done) = within("the requests", WAIT * 2, tasks.join_next()).await {
        assert_eq!(done.unwrap().unwrap().text(), "released");
        ok += 1;
    }
    assert_eq!(ok, 5);
    assert_eq!(probe.peak.load(SeqCst), 2);
    let text = metrics();
    assert_eq!(series(&text, "h3_streams_in_flight_max_per_connection"), 2);
    assert_eq!(series(&text, "h3_streams_refused_total"), 0);
    drop(h3);
    stop(server).await;
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    if !have_aioquic() {
        eprintln!("skipped: python3 aioquic missing (scripts/test installs it)");
        return;
    }
    let tls = tls();
    let (server, _metrics) = serve_h3(
        &tls,
        |c| c.limits.max_head_bytes = 2048,
        |_req: Request<Body>| async { Response::new(Body::from("hi")) },
    );
    let addr = server.quic_addrs()[0];
    let lines = aioquic(&tls, addr, &["--header-bytes", "8000", "/big"]).await;
    assert_eq!(lines[0]["status"], 431, "{lines:?}");
    let lines = aioquic(&tls, addr, &["--header-bytes", "500", "/small"]).await;
    assert_eq!(lines[0]["status"], 200, "{lines:?}");
    stop(server).await;
}

#[tokio::test]
async fn a_handshake_that_stalls_times_out() {
    let tls = tls();
    let (server, metrics) = serve_h3(
        &tls,
        |c| c.header_timeout = Duration::from_millis(300),
        |_req: Request<Body>| async { Response::new(Body::from("hi")) },
    );
    // A real client's first flight, caught on a socket of ours, then sent
    // to the server from another that never answers.
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let endpoint = client_endpoint(&tls.quic);
    let _connecting = endpoint
        .connect(catcher.local_addr().unwrap(), "localhost")
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = within("the client's Initial", WAIT, catcher.recv_from(&mut buf))
        .await
        .unwrap();
    let mute = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    mute.send_to(&buf[..n], server.quic_addrs()[0])
        .await
        .unwrap();
    eventually("the server answers the Initial", WAIT, || {
        series(&metrics(), "connections_open") == 1
    })
    .await;
    eventually("the handshake times out", WAIT, || {
        series(&metrics(), "connection_closes_total{reason=\"timeout\"}") == 1
    })
    .await;
    assert_eq!(series(&metrics(), "connections_open"), 0);
    stop(server).await;
}

#[tokio::test]
async fn a_body_that_stalls_gets_408() {
    let tls = tls();
    let handler = |req: Request<Body>| async move {
        match req.into_body().collect(1 << 20).await {
            Ok(b) => Response::new(Body::from(format!("{}", b.len()))),
            Err(e) => Response::new(Body::from(format!("error: {e}"))),
        }
    };
    let (server, _m) = serve_h3(
        &tls,
        |c| c.body_timeout = Duration::from_millis(300),
        handler,
    );
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    let req = Request::post("https://localhost/slow")
        .header("content-length", "10000")
        .body(())
        .unwrap();
    let mut stream = h3.send.send_request(req).await.unwrap();
    stream
        .send_data(Bytes::from(vec![1u8; 1000]))
        .await
        .unwrap();
    // ... and nothing more.
    let started = std::time::Instant::now();
    let head = within("the 408", WAIT, stream.recv_response())
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 408);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h3.get("/").await.status(), 200);
    drop(h3);
    stop(server).await;
}

#[tokio::test]
async fn a_stream_whose_head_never_ends_is_dropped_at_the_header_timeout() {
    let tls = tls();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handler = move |_req: Request<Body>| {
        c.fetch_add(1, SeqCst);
        async { Response::new(Body::from("hi")) }
    };
    let (server, metrics) = serve_h3(
        &tls,
        |c| c.header_timeout = Duration::from_millis(300),
        handler,
    );
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    // Past the handshake's own bound.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A request stream of quinn's, beside h3's: a HEADERS frame that
    // announces 1000 bytes and sends 3.
    let (mut send, mut recv) = h3.conn.open_bi().await.unwrap();
    send.write_all(&[0x01, 0x43, 0xe8, 0, 0, 0]).await.unwrap();
    let started = std::time::Instant::now();
    let read = within("the server drops the stream", WAIT, recv.read_to_end(1024)).await;
    assert!(read.is_err() || read.is_ok_and(|b| b.is_empty()));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // The connection is still good; the broken head was never a request.
    assert_eq!(h3.get("/").await.text(), "hi");
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(
        metric(&metrics(), "requests_by_protocol_total{protocol=\"h3\"}"),
        1
    );
    drop(h3);
    stop(server).await;
}

#[tokio::test]
async fn connect_over_http3_is_not_implemented() {
    if !have_aioquic() {
        eprintln!("skipped: python3 aioquic missing (scripts/test installs it)");
        return;
    }
    let tls = tls();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handler = move |_req: Request<Body>| {
        c.fetch_add(1, SeqCst);
        async { Response::new(Body::from("hi")) }
    };
    let (server, _m) = serve_h3(&tls, |_| {}, handler);
    let addr = server.quic_addrs()[0];
    let lines = aioquic(&tls, addr, &["--method", "CONNECT", "example.test:443"]).await;
    assert_eq!(lines[0]["status"], 501, "{lines:?}");
    assert_eq!(calls.load(SeqCst), 0);
    stop(server).await;
}

#[tokio::test]
async fn the_total_connection_cap_counts_quic_and_tcp_alike() {
    let tls = tls();
    let (server, metrics) = serve_h3(
        &tls,
        |c| c.max_connections = 1,
        |_req: Request<Body>| async { Response::new(Body::from("hi")) },
    );
    let endpoint = client_endpoint(&tls.quic);
    let mut only = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    assert_eq!(only.get("/").await.text(), "hi");
    // A second QUIC connection is refused before its handshake...
    let refused = within("a refused handshake", WAIT, async {
        endpoint
            .connect(server.quic_addrs()[0], "localhost")
            .unwrap()
            .await
    })
    .await;
    assert!(refused.is_err(), "a second connection was admitted");
    // ... and so is a TCP one (closed before TLS, counted the same).
    let mut tcp = RawClient::connect(server.local_addr()).await;
    tcp.send(b"\x16\x03\x01").await;
    let (_bytes, _eof) = within("the TCP refusal", WAIT, tcp.read_to_eof()).await;
    eventually("both refusals are counted", WAIT, || {
        metric(&metrics(), "connection_closes_total{reason=\"limit\"}") == 2
    })
    .await;
    drop(only);
    stop(server).await;
}

#[tokio::test]
async fn a_client_sent_a_retry_follows_it_and_is_served() {
    let tls = tls();
    let (server, metrics) = serve_h3(
        &tls,
        |c| c.quic_retry = keepwire::server::QuicRetry::Always,
        |_req: Request<Body>| async { Response::new(Body::from("hi")) },
    );
    // quinn's client answers the Retry with its token, transparently.
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    assert_eq!(h3.get("/").await.text(), "hi");
    let text = metrics();
    assert_eq!(series(&text, "h3_retries_total"), 1);
    // The Retry is no connection; the client's return with the token is.
    assert_eq!(
        series(
            &text,
            "connections_accepted_by_transport_total{transport=\"quic\"}"
        ),
        1
    );
    drop(h3);
    stop(server).await;
}

/// `n` QUIC Initials of a real client, each of its own connection, caught
/// on sockets of ours (never answered).
async fn initials(tls: &Tls, n: usize) -> Vec<Vec<u8>> {
    let endpoint = client_endpoint(&tls.quic);
    let mut out = Vec::new();
    for _ in 0..n {
        let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let _connecting = endpoint
            .connect(catcher.local_addr().unwrap(), "localhost")
            .unwrap();
        let mut buf = vec![0u8; 2048];
        let (len, _) = within("a client's Initial", WAIT, catcher.recv_from(&mut buf))
            .await
            .unwrap();
        buf.truncate(len);
        out.push(buf);
    }
    out
}

#[tokio::test]
async fn spoofed_initials_hold_at_most_half_of_an_address_s_slots() {
    let tls = tls();
    let (server, metrics) = serve_h3(
        &tls,
        |c| c.max_connections_per_ip = 4,
        |_req: Request<Body>| async { Response::new(Body::from("hi")) },
    );
    let addr = server.quic_addrs()[0];
    // Eight connections' Initials from an address that never answers (as
    // a spoofer's would be: the replies go to someone else).
    let mute = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for initial in initials(&tls, 8).await {
        mute.send_to(&initial, addr).await.unwrap();
    }
    // Two take the address's first half; the other six get a Retry and
    // take nothing (the handshakes of the two wait for the header timeout,
    // 60 s, far beyond this test).
    eventually("six Retries", WAIT, || {
        series(&metrics(), "h3_retries_total") == 6
    })
    .await;
    assert_eq!(series(&metrics(), "connections_open"), 2);
    // Clients that prove the address get the other half.
    let endpoint = client_endpoint(&tls.quic);
    let mut first = H3::connect(&endpoint, addr).await;
    let mut second = H3::connect(&endpoint, addr).await;
    assert_eq!(first.get("/").await.text(), "hi");
    assert_eq!(second.get("/").await.text(), "hi");
    assert_eq!(series(&metrics(), "h3_retries_total"), 8);
    assert_eq!(
        series(&metrics(), "connection_closes_total{reason=\"limit\"}"),
        0
    );
    drop((first, second));
    stop(server).await;
}
