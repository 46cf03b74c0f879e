//! The client's HTTP/3 path (`client/h3.rs`): requests over QUIC, the
//! modes (`Only`, `Prefer` racing TCP, `AltSvc` after an advertisement),
//! 0-RTT for idempotent requests only (RFC 8470), and every bound on what
//! it reads (head size, body size, read and handshake timeouts).
//!
//! The peers are a test-only quinn/h3 origin (`support/h3_origin.rs`),
//! whose paths misbehave on purpose, and keepwire's own server. Interop
//! with an independent server (aioquic, `support/aioquic_h3_server.py`)
//! is in keepwire-cli's `tests/get_h3.rs`, through the binary.

#[path = "support/h3_origin.rs"]
mod h3_origin;
mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use h3_origin::{Cert, H3Origin};
use http::{Request, Version};
use keepwire::client::Http3Mode;
use keepwire::{Body, Client, ClientError, RequestMeta};
use support::{WAIT, within};

fn h3_client(
    cert: &Cert,
    mode: Http3Mode,
    configure: impl FnOnce(&mut keepwire::ClientConfig),
) -> Client {
    Client::builder()
        .tls_config(cert.client_tls())
        .http3(mode)
        .connect_timeout(Duration::from_secs(2))
        .configure(configure)
        .build()
        .unwrap()
}

fn meta(resp: &http::Response<Body>) -> RequestMeta {
    *resp
        .extensions()
        .get::<RequestMeta>()
        .expect("always there")
}

#[tokio::test]
async fn http3_only_gets_over_quic_and_reuses_the_connection() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |_| {});
    let url = format!("https://localhost:{}/hello", origin.addr.port());
    let mut ids = Vec::new();
    for i in 0..3 {
        let resp = within("an HTTP/3 answer", WAIT, client.get(&url))
            .await
            .unwrap();
        assert_eq!(resp.version(), Version::HTTP_3);
        let m = meta(&resp);
        let body = resp.into_body().collect(1 << 20).await.unwrap();
        assert_eq!(&body[..], b"hello h3");
        let quic = m.conn.quic.expect("QUIC facts");
        assert_eq!(quic.version, 1);
        assert_eq!(quic.zero_rtt, None, "early data is off");
        assert_eq!(m.conn.tls.and_then(|t| t.alpn), Some("h3"));
        assert_eq!(m.reused, i > 0);
        if i == 0 {
            // The QUIC handshake is both the connect and the TLS phase.
            let t = m.timings;
            assert!(t.connect.is_some() && t.connect == t.tls, "{t:?}");
            assert!(t.first_byte >= t.written, "{t:?}");
        }
        ids.push(m.conn.id);
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one connection: {ids:?}"
    );
    assert_eq!(origin.connections.load(Relaxed), 1);
    assert_eq!(origin.requests.load(Relaxed), 3);
}

#[tokio::test]
async fn a_request_body_goes_up_and_comes_back() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |_| {});
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let req = Request::post(format!("https://localhost:{}/echo", origin.addr.port()))
        .body(Body::from(data.clone()))
        .unwrap();
    let resp = within("the echo", WAIT, client.request(req)).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_3);
    let body = within("the echoed body", WAIT, resp.into_body().collect(1 << 20))
        .await
        .unwrap();
    assert_eq!(body.len(), data.len());
    assert!(body[..] == data[..], "the echo differs");
}

#[tokio::test]
async fn a_request_rejected_unprocessed_goes_again() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |_| {});
    let req = Request::post(format!(
        "https://localhost:{}/reject-once",
        origin.addr.port()
    ))
    .body(Body::from("x"))
    .unwrap();
    let resp = within("the retried answer", WAIT, client.request(req))
        .await
        .unwrap();
    assert_eq!(
        meta(&resp).retries,
        1,
        "H3_REQUEST_REJECTED: never processed"
    );
    let body = resp.into_body().collect(1024).await.unwrap();
    assert_eq!(&body[..], b"second");
}

#[tokio::test]
async fn an_oversized_response_head_is_refused() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |c| {
        c.limits.max_head_bytes = 16 * 1024
    });
    let url = format!("https://localhost:{}/bighead", origin.addr.port());
    let err = within("the refusal", WAIT, client.get(&url))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Http3(_)), "{err}");
    // Within the cap, the same head is taken.
    let client = client_with_head_cap(&cert, 128 * 1024);
    let resp = within("the big head", WAIT, client.get(&url))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-big"].len(), 64 * 1024);
}

fn client_with_head_cap(cert: &Cert, cap: usize) -> Client {
    h3_client(cert, Http3Mode::Only, |c| c.limits.max_head_bytes = cap)
}

#[tokio::test]
async fn a_body_over_the_cap_fails_as_too_large() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |c| {
        c.limits.max_body_bytes = Some(10_000)
    });
    let url = format!("https://localhost:{}/big/50000", origin.addr.port());
    let resp = within("the head", WAIT, client.get(&url)).await.unwrap();
    let err = within("the body", WAIT, resp.into_body().collect(1 << 20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, keepwire::body::BodyError::TooLarge(10_000)),
        "{err}"
    );
    // Under the cap it is read whole.
    let url = format!("https://localhost:{}/big/9000", origin.addr.port());
    let resp = within("the head", WAIT, client.get(&url)).await.unwrap();
    let body = within("the body", WAIT, resp.into_body().collect(1 << 20)).await;
    assert_eq!(body.unwrap().len(), 9000);
}

#[tokio::test]
async fn a_stalled_body_and_a_silent_server_time_out() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let read = Duration::from_millis(300);
    let client = h3_client(&cert, Http3Mode::Only, |c| c.response_timeout = read);
    let port = origin.addr.port();
    let err = within(
        "the head timeout",
        WAIT,
        client.get(&format!("https://localhost:{port}/silent")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    let resp = within(
        "the head",
        WAIT,
        client.get(&format!("https://localhost:{port}/stall")),
    )
    .await
    .unwrap();
    let err = within("the body timeout", WAIT, resp.into_body().collect(1 << 20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, keepwire::body::BodyError::TimedOut(d) if d == read),
        "{err}"
    );
}

/// A UDP port where nothing answers: `Only` fails within the connect
/// timeout; `Prefer` falls back to TCP and stops paying the race.
#[tokio::test]
async fn quic_that_fails_is_an_error_only_with_only() {
    let cert = Cert::localhost();
    let mut tls = cert.server_tls(&[b"h2", b"http/1.1"]);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = support::serve(
        |c| {
            c.tls = Some(std::sync::Arc::new(tls));
            c.http3 = false;
        },
        |_req: Request<Body>| async { http::Response::new(Body::from("over tcp")) },
    );
    // Nothing listens on this UDP port (the TCP server has it as TCP only).
    let url = format!("https://localhost:{}/", tcp.local_addr().port());
    let only = h3_client(&cert, Http3Mode::Only, |c| {
        c.connect_timeout = Duration::from_millis(500)
    });
    let t = std::time::Instant::now();
    let err = within("the QUIC failure", WAIT, only.get(&url))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect(_)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // What QUIC cannot carry is refused, not sent over TCP.
    let err = only.get("http://127.0.0.1:1/").await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidUrl(_)), "{err}");

    let prefer = h3_client(&cert, Http3Mode::Prefer, |c| {
        c.connect_timeout = Duration::from_millis(500)
    });
    for i in 0..3 {
        let resp = within("the TCP answer", WAIT, prefer.get(&url))
            .await
            .unwrap();
        assert_eq!(resp.version(), Version::HTTP_2, "request {i}");
        tcp_won_as_reported(&meta(&resp), i);
        let body = resp.into_body().collect(1024).await.unwrap();
        assert_eq!(&body[..], b"over tcp");
    }
    drop(prefer);
    support::stop(tcp).await;

    // The same over HTTP/1.1 (ALPN): the race's TCP connection is the
    // pool's first.
    let tls = cert.server_tls(&[b"http/1.1"]);
    let tcp = support::serve(
        |c| {
            c.tls = Some(std::sync::Arc::new(tls));
            c.http3 = false;
        },
        |_req: Request<Body>| async { http::Response::new(Body::from("over tcp")) },
    );
    let url = format!("https://localhost:{}/", tcp.local_addr().port());
    let prefer = h3_client(&cert, Http3Mode::Prefer, |c| {
        c.connect_timeout = Duration::from_millis(500)
    });
    for i in 0..2 {
        let resp = within("the TCP answer", WAIT, prefer.get(&url))
            .await
            .unwrap();
        assert_eq!(resp.version(), Version::HTTP_11, "request {i}");
        tcp_won_as_reported(&meta(&resp), i);
        drop(resp.into_body().collect(1024).await);
    }
    drop(prefer);
    support::stop(tcp).await;
}

/// The first request over a TCP connection that won the race says it
/// opened it, and its connect phase holds QUIC's head start; the next ones
/// reuse it.
fn tcp_won_as_reported(m: &RequestMeta, i: usize) {
    if i == 0 {
        assert!(!m.reused, "{m:?}");
        let connect = m.timings.connect.expect("a connect phase");
        assert!(connect >= keepwire::client::QUIC_HEAD_START, "{m:?}");
        assert!(m.timings.tls.is_some(), "{m:?}");
    } else {
        assert!(m.reused, "request {i}: {m:?}");
        assert_eq!(m.timings.connect, None, "{m:?}");
    }
}

/// `AltSvc`: without an advertisement the client stays on TCP, even where
/// QUIC would answer; `keepwire serve`'s own `Alt-Svc: h3=":port"` moves it
/// to HTTP/3 once QUIC is up, on the same server.
#[tokio::test]
async fn alt_svc_moves_an_origin_to_http3() {
    let cert = Cert::localhost();
    // A TCP-only keepwire server, and a QUIC origin on its port number.
    let tls = cert.server_tls(&[b"h2", b"http/1.1"]);
    let tcp = support::serve(
        |c| {
            c.tls = Some(std::sync::Arc::new(tls));
            c.http3 = false;
        },
        |_req: Request<Body>| async { http::Response::new(Body::from("over tcp")) },
    );
    let port = tcp.local_addr().port();
    let origin = H3Origin::start(&cert, port);
    let url = format!("https://localhost:{port}/hello");
    let client = h3_client(&cert, Http3Mode::AltSvc, |_| {});
    for _ in 0..2 {
        let resp = within("a TCP answer", WAIT, client.get(&url))
            .await
            .unwrap();
        assert!(!resp.headers().contains_key("alt-svc"));
        assert_ne!(resp.version(), Version::HTTP_3);
        drop(resp.into_body().collect(1024).await);
    }
    assert_eq!(origin.requests.load(Relaxed), 0);
    drop((client, origin));
    support::stop(tcp).await;

    // keepwire's server with HTTP/3: TCP answers advertise the UDP port.
    let tls = cert.server_tls(&[b"h2", b"http/1.1"]);
    let server = support::serve(
        |c| c.tls = Some(std::sync::Arc::new(tls)),
        |req: Request<Body>| async move {
            http::Response::new(Body::from(format!("{:?}", req.version())))
        },
    );
    let url = format!("https://localhost:{}/hello", server.local_addr().port());
    let client = h3_client(&cert, Http3Mode::AltSvc, |_| {});
    let mut seen = Vec::new();
    for _ in 0..20 {
        let resp = within("an answer", WAIT, client.get(&url)).await.unwrap();
        let version = resp.version();
        let alt = resp.headers().get("alt-svc").cloned();
        let body = resp.into_body().collect(1024).await.unwrap();
        seen.push((version, alt, body));
        if version == Version::HTTP_3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (first_version, first_alt, _) = &seen[0];
    assert_eq!(*first_version, Version::HTTP_2, "{seen:?}");
    assert!(
        first_alt.is_some(),
        "the TCP answer advertises h3: {seen:?}"
    );
    let (last_version, _, last_body) = seen.last().unwrap();
    assert_eq!(*last_version, Version::HTTP_3, "{seen:?}");
    assert_eq!(&last_body[..], b"HTTP/3.0", "the handler saw HTTP/3");
    support::stop(server).await;
}

/// 0-RTT: a second client sharing the first's session tickets sends its
/// GET in early data and the server takes it; a POST never goes early.
#[tokio::test]
async fn early_data_carries_only_idempotent_requests() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let tls = cert.client_tls();
    let make = || {
        Client::builder()
            .tls_config(tls.clone())
            .http3(Http3Mode::Only)
            .early_data(true)
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{}/hello", origin.addr.port());
    let first = make();
    let resp = within("the first answer", WAIT, first.get(&url))
        .await
        .unwrap();
    assert_eq!(
        meta(&resp).conn.quic.unwrap().zero_rtt,
        None,
        "no ticket yet"
    );
    drop(resp.into_body().collect(1024).await);
    // The ticket arrives after the handshake; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let second = make();
    let resp = within("the early answer", WAIT, second.get(&url))
        .await
        .unwrap();
    let m = meta(&resp);
    assert_eq!(m.conn.quic.unwrap().zero_rtt, Some(true), "{m:?}");
    assert!(m.early_data, "the GET went in 0-RTT: {m:?}");
    assert_eq!(
        &resp.into_body().collect(1024).await.unwrap()[..],
        b"hello h3"
    );

    // A POST first: the connection is opened without early data.
    let third = make();
    let req = Request::post(format!("https://localhost:{}/echo", origin.addr.port()))
        .body(Body::from("not twice"))
        .unwrap();
    let resp = within("the POST answer", WAIT, third.request(req))
        .await
        .unwrap();
    let m = meta(&resp);
    assert!(!m.early_data, "{m:?}");
    assert_eq!(m.conn.quic.unwrap().zero_rtt, None, "{m:?}");
    assert_eq!(
        &resp.into_body().collect(1024).await.unwrap()[..],
        b"not twice"
    );
}

/// A server that never grants flow-control credit for the request body:
/// the upload fails after the write timeout, it does not hang.
#[tokio::test]
async fn an_upload_the_server_never_reads_times_out() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let write = Duration::from_millis(300);
    let client = h3_client(&cert, Http3Mode::Only, |c| {
        c.write_timeout = write;
        c.response_timeout = Duration::from_secs(30);
    });
    // More than any window the server opened (quinn's default stream
    // window is 1.25 MB).
    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 64 * 1024])));
    let req = Request::post(format!("https://localhost:{}/noread", origin.addr.port()))
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let t = std::time::Instant::now();
    let err = within("the upload's failure", WAIT, client.request(req))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(t.elapsed() >= write, "{:?}", t.elapsed());
}

/// A stream the server resets inside the body: the body fails at once.
#[tokio::test]
async fn a_body_reset_by_the_server_fails() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |_| {});
    let url = format!("https://localhost:{}/reset-mid", origin.addr.port());
    let resp = within("the head", WAIT, client.get(&url)).await.unwrap();
    let err = within("the reset", WAIT, resp.into_body().collect(1 << 20))
        .await
        .unwrap_err();
    assert!(matches!(err, keepwire::body::BodyError::Source(_)), "{err}");
    // The connection itself is still good.
    let url = format!("https://localhost:{}/hello", origin.addr.port());
    let resp = within("the next answer", WAIT, client.get(&url))
        .await
        .unwrap();
    assert!(meta(&resp).reused);
}

/// A request body whose source fails midway: the server sees the stream
/// reset, never a FIN that would make the cut-off body look whole (R8.2).
#[tokio::test]
async fn a_request_body_cut_off_is_a_reset_not_a_fin() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |_| {});
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from(vec![1u8; 100_000])),
        Err(std::io::Error::other("the source broke")),
    ];
    let req = Request::post(format!("https://localhost:{}/echo", origin.addr.port()))
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let err = within("the failure", WAIT, client.request(req))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Body(_)), "{err}");
    support::eventually("the server to see a reset", WAIT, || {
        origin.cut_off.load(Relaxed) == 1
    })
    .await;
}

/// 0-RTT rejected: the server lost the session (a restart), so the early
/// GET was never processed; the client says so and sends it again on a
/// full handshake, once (RFC 8470 §5.1, R8.3).
#[tokio::test]
async fn rejected_early_data_is_sent_again() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let port = origin.addr.port();
    let tls = cert.client_tls();
    let make = || {
        Client::builder()
            .tls_config(tls.clone())
            .http3(Http3Mode::Only)
            .early_data(true)
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{port}/hello");
    let first = make();
    let resp = within("the first answer", WAIT, first.get(&url))
        .await
        .unwrap();
    drop(resp.into_body().collect(1024).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);
    // The same certificate and port, a new server: the ticket means nothing.
    drop(origin);
    let mut restarted = None;
    for _ in 0..50 {
        match std::panic::catch_unwind(|| H3Origin::start(&cert, port)) {
            Ok(o) => {
                restarted = Some(o);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let restarted = restarted.expect("the port again");
    let second = make();
    let resp = within("the resent answer", WAIT, second.get(&url))
        .await
        .unwrap();
    let m = meta(&resp);
    assert!(!m.early_data, "{m:?}");
    assert_eq!(m.retries, 1, "the rejected early request went again: {m:?}");
    assert_eq!(
        &resp.into_body().collect(1024).await.unwrap()[..],
        b"hello h3"
    );
    assert_eq!(restarted.requests.load(Relaxed), 1, "processed once");
}

/// 425 Too Early to a request that went in early data: it goes again after
/// a full handshake (RFC 8470 §5.2); to one that did not, it is the answer.
#[tokio::test]
async fn too_early_is_retried_only_for_early_data() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let tls = cert.client_tls();
    let make = |early| {
        Client::builder()
            .tls_config(tls.clone())
            .http3(Http3Mode::Only)
            .early_data(early)
            .build()
            .unwrap()
    };
    let base = format!("https://localhost:{}", origin.addr.port());
    let first = make(true);
    let resp = within(
        "the first answer",
        WAIT,
        first.get(&format!("{base}/hello")),
    )
    .await
    .unwrap();
    drop(resp.into_body().collect(1024).await);
    // Not in early data (the connection is up): 425 is the answer.
    let resp = within("the 425", WAIT, first.get(&format!("{base}/too-early")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 425);
    assert_eq!(meta(&resp).retries, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let second = make(true);
    let resp = within(
        "the retried answer",
        WAIT,
        second.get(&format!("{base}/too-early-once")),
    )
    .await
    .unwrap();
    let m = meta(&resp);
    assert_eq!(resp.status(), 200, "{m:?}");
    assert_eq!(m.retries, 1, "{m:?}");
    assert!(!m.early_data, "the resend waited for the handshake: {m:?}");
}

/// h3 does not hold a body to its `content-length`; the client does: short
/// is a truncation (R8.2), long an error, HEAD's declared length no body.
#[tokio::test]
async fn a_body_that_breaks_its_content_length_fails() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |_| {});
    let base = format!("https://localhost:{}", origin.addr.port());
    let resp = within("the head", WAIT, client.get(&format!("{base}/short")))
        .await
        .unwrap();
    let err = within("the body", WAIT, resp.into_body().collect(1024))
        .await
        .unwrap_err();
    assert!(matches!(err, keepwire::body::BodyError::Closed), "{err}");
    let resp = within("the head", WAIT, client.get(&format!("{base}/long")))
        .await
        .unwrap();
    let err = within("the body", WAIT, resp.into_body().collect(1024))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("longer than its content-length"),
        "{err}"
    );
    let req = Request::head(format!("{base}/big/5000"))
        .body(Body::empty())
        .unwrap();
    let resp = within("the HEAD answer", WAIT, client.request(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = within("no body", WAIT, resp.into_body().collect(1024)).await;
    assert!(body.is_ok(), "{body:?}");
}

/// Responses nobody reads: the server can have at most the client's
/// connection window (16 MiB) taken, not each stream's window (1.25 MiB)
/// times the streams (here 20: 25 MiB). (In QUIC the connection window
/// covers HEADERS too: the later streams wait for their heads, as they
/// would over HTTP/2 for their bodies: the backpressure of a reader that
/// does not read.)
#[tokio::test]
async fn unread_responses_hold_at_most_the_connection_window() {
    let cert = Cert::localhost();
    let origin = H3Origin::start(&cert, 0);
    let client = h3_client(&cert, Http3Mode::Only, |c| {
        c.response_timeout = Duration::from_secs(30)
    });
    let url = format!("https://localhost:{}/flood", origin.addr.port());
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), url.clone());
        held.spawn(async move {
            let resp = client.get(&url).await;
            // Held, never read.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(resp);
        });
    }
    // Until what the server wrote stops growing (bounded: 50 x 100 ms).
    let mut last = u64::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = origin.flooded.load(Relaxed);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let taken = origin.flooded.load(Relaxed);
    assert!(taken <= 17 << 20, "{taken} bytes taken");
    assert!(taken >= 8 << 20, "the flood did flow: {taken}");
    held.abort_all();
}
