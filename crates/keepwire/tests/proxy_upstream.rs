//! The proxy's upstream hop under pressure (issue 14, items 2 and 5): large
//! request bodies stream instead of being buffered for a retry copy, what
//! a client connection keeps is bounded, non-idempotent pipelined requests
//! go upstream alone and in order, and a slow, silent or stalling upstream
//! neither blocks the others nor hangs the client.
//!
//! Every wait is bounded; origins are keepwire servers (HTTP/1 and h2c) or
//! raw sockets where the misbehaviour must be exact.

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as _;
use keepwire::Body;
use keepwire::proxy::{Proxy, ProxyConfig, ReusePolicy, Route, Upstream};
use keepwire::server::{Config, ServerHandle};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy served as the CLI serves it (pipelining depth 8), with no
/// request-body limit so large uploads reach the upstream hop.
struct Front {
    proxy: Arc<Proxy>,
    server: ServerHandle,
}

impl Front {
    fn start(cfg: ProxyConfig) -> Front {
        let proxy = Proxy::new(cfg);
        let p = proxy.clone();
        let server = serve(
            |c: &mut Config| {
                *c = Proxy::server_config();
                c.limits.max_body_bytes = None;
            },
            p,
        );
        Front { proxy, server }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The most request-body bytes the proxy ever kept for resends at once.
    fn retained_peak(&self) -> u64 {
        self.proxy.metrics().retained.peak.load(Relaxed)
    }
}

fn route(upstreams: Vec<Upstream>) -> Vec<Route> {
    vec![Route::new(None, "/", upstreams)]
}

/// Reads a request body frame by frame (never whole): its length and hash.
async fn consume(mut body: Body, seen: &AtomicU64) -> (u64, u64) {
    let mut hash = FNV_START;
    let mut n = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            hash = fnv(hash, &data);
            n += data.len() as u64;
            seen.fetch_add(data.len() as u64, Relaxed);
        }
    }
    (n, hash)
}

/// An origin (HTTP/1 and h2c) that answers "N bytes, fnv H" for the body it
/// streamed in; `seen` counts body bytes as they arrive.
fn hashing_origin() -> (ServerHandle, Arc<AtomicU64>) {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let server = serve(
        |c| c.limits.max_body_bytes = None,
        move |req: Request<Body>| {
            let s = s.clone();
            async move {
                let (n, h) = consume(req.into_body(), &s).await;
                Response::new(Body::from(format!("{n} bytes, fnv {h:x}")))
            }
        },
    );
    (server, seen)
}

const BIG: usize = 16 * 1024 * 1024;
const PIECE: usize = 256 * 1024;

/// Item 2: a 16 MiB upload over HTTP/1 streams through (the origin has
/// most of the first MiB before the client sent the rest: nothing waits for
/// the whole body), arrives intact, and the proxy keeps no more than its
/// retry bound of it (it used to keep all of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_http1_post_streams_through_keeping_at_most_the_retry_bound() {
    let (origin, seen) = hashing_origin();
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![Upstream::new(origin.local_addr().to_string())]);
        pc
    });
    let body = pattern(BIG);
    let mut c = RawClient::connect(front.addr()).await;
    c.send(format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\n\r\n"
    ))
    .await;
    let (first, rest) = body.split_at(1024 * 1024);
    c.send(first).await;
    eventually("the origin streaming the first MiB", WAIT, || {
        seen.load(Relaxed) >= 512 * 1024
    })
    .await;
    for piece in rest.chunks(PIECE) {
        c.send(piece).await;
    }
    let r = c.response().await;
    assert_eq!(
        r.text(),
        format!("{BIG} bytes, fnv {:x}", fnv(FNV_START, &body)),
        "{}",
        r.raw_head
    );
    let peak = front.retained_peak();
    assert!(peak <= 64 * 1024, "kept {peak} bytes for a resend");
    assert_eq!(front.proxy.metrics().retained.current.load(Relaxed), 0);
}

/// Item 2 over HTTP/2 both ways (the case that took the proxy from 8 MB to
/// 140 MB): an h2c client's 16 MiB POST to an h2c upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_h2c_post_streams_through_keeping_at_most_the_retry_bound() {
    let (origin, seen) = hashing_origin();
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![Upstream::new(origin.local_addr().to_string())]);
        pc.upstream_http2 = true;
        pc
    });
    let body = Bytes::from(pattern(BIG));
    let tcp = TcpStream::connect(front.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = Request::post(format!("http://{}/up", front.addr()))
        .body(())
        .unwrap();
    let (resp, mut out) = send.send_request(req, false).unwrap();
    let mut sent = 0;
    let mut waited = false;
    while sent < BIG {
        if sent >= 1024 * 1024 && !waited {
            eventually("the origin streaming the first MiB", WAIT, || {
                seen.load(Relaxed) >= 512 * 1024
            })
            .await;
            waited = true;
        }
        let n = PIECE.min(BIG - sent);
        out.reserve_capacity(n);
        let got = within(
            "window from the proxy",
            WAIT,
            std::future::poll_fn(|cx| out.poll_capacity(cx)),
        )
        .await
        .expect("stream open")
        .expect("capacity");
        out.send_data(body.slice(sent..sent + got.min(n)), false)
            .unwrap();
        sent += got.min(n);
    }
    out.send_data(Bytes::new(), true).unwrap();
    let resp = within("the response", WAIT, resp).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut rb = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = within("the response body", WAIT, rb.data()).await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        String::from_utf8(text).unwrap(),
        format!("{BIG} bytes, fnv {:x}", fnv(FNV_START, &body))
    );
    let peak = front.retained_peak();
    assert!(peak <= 64 * 1024, "kept {peak} bytes for a resend");
}

/// Item 2: pipelined requests with bodies keep retry copies against one
/// budget per client connection. Six 60 KiB PUTs (idempotent, so they run
/// ahead together) each fit the per-request bound, but together only the
/// connection's budget is kept (it would be 360 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bodies_share_one_retry_budget_per_client_connection() {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let origin = serve(
        |_| {},
        move |req: Request<Body>| {
            let s = s.clone();
            async move {
                let (n, h) = consume(req.into_body(), &s).await;
                // Slow: every copy is held while the others arrive.
                tokio::time::sleep(Duration::from_millis(300)).await;
                Response::new(Body::from(format!("{n} bytes, fnv {h:x}")))
            }
        },
    );
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![Upstream::new(origin.local_addr().to_string())]);
        pc.retained_per_connection = 128 * 1024;
        pc.pool_size = 8;
        pc
    });
    let body = pattern(60 * 1024);
    let mut burst = Vec::new();
    for i in 0..6 {
        burst.extend_from_slice(
            format!(
                "PUT /p{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        burst.extend_from_slice(&body);
    }
    let mut c = RawClient::connect(front.addr()).await;
    c.send(&burst).await;
    let want = format!("{} bytes, fnv {:x}", body.len(), fnv(FNV_START, &body));
    for i in 0..6 {
        let r = c.response().await;
        assert_eq!(r.text(), want, "PUT /p{i}");
    }
    let peak = front.retained_peak();
    assert!(
        (60 * 1024..=128 * 1024).contains(&peak),
        "kept {peak} bytes at once"
    );
}

/// Item 2 (R7.4): pipelined GET, GET, POST, GET, GET. The GETs before the
/// POST may run together; the POST reaches the origin only after both
/// ended, and the GETs after it only after it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_post_goes_upstream_alone_and_in_order() {
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let e = events.clone();
    let origin = serve(
        |_| {},
        move |req: Request<Body>| {
            let e = e.clone();
            async move {
                let path = req.uri().path().to_string();
                e.lock().unwrap().push(format!("start {path}"));
                let _ = req.into_body().collect(1 << 20).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
                e.lock().unwrap().push(format!("end {path}"));
                Response::new(Body::from(path))
            }
        },
    );
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![Upstream::new(origin.local_addr().to_string())]);
        pc.reuse = ReusePolicy::Always;
        pc
    });
    let mut c = RawClient::connect(front.addr()).await;
    c.send(format!(
        "{}{}POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello{}{}",
        get("/a"),
        get("/b"),
        get("/c"),
        get("/d")
    ))
    .await;
    for p in ["/a", "/b", "/post", "/c", "/d"] {
        let r = c.response().await;
        assert_eq!((r.status, r.text().as_str()), (200, p), "{}", r.raw_head);
    }
    let ev = events.lock().unwrap().clone();
    let at = |s: &str| {
        ev.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no {s:?} in {ev:?}"))
    };
    // Idempotent requests still run ahead together (pipelining depth 8).
    assert!(at("start /b") < at("end /a"), "{ev:?}");
    assert!(at("start /d") < at("end /c"), "{ev:?}");
    // The POST alone, in order.
    assert!(at("start /post") > at("end /a"), "{ev:?}");
    assert!(at("start /post") > at("end /b"), "{ev:?}");
    assert_eq!(at("end /post"), at("start /post") + 1, "{ev:?}");
    assert!(at("start /c") > at("end /post"), "{ev:?}");
}

/// A listener that accepts TCP connections and never says a word (a TLS
/// or h2 handshake against it never completes).
async fn silent_listener() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Relaxed);
            held.push(s);
        }
    });
    (addr, n, task)
}

fn ok_origin() -> ServerHandle {
    serve(
        |_| {},
        |req: Request<Body>| async move {
            Response::new(Body::from(format!("ok {}", req.uri().path())))
        },
    )
}

/// Item 5: an https upstream stuck in its TLS handshake does not hold up
/// requests to another HTTP/2 upstream (a global lock was held across
/// connect and handshake: every h2 request waited for the stuck one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_tls_handshake_does_not_stall_other_http2_upstreams() {
    let (stuck, accepted, _task) = silent_listener().await;
    let healthy = ok_origin();
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = vec![
            Route::new(
                None,
                "/stuck",
                vec![Upstream::new(format!("https://{stuck}"))],
            ),
            Route::new(
                None,
                "/",
                vec![Upstream::new(healthy.local_addr().to_string())],
            ),
        ];
        pc.upstream_http2 = true;
        pc.upstream_tls = Some(keepwire::client::tls::insecure_config());
        pc.connect_timeout = Duration::from_secs(4);
        pc
    });
    let mut stuck_client = RawClient::connect(front.addr()).await;
    stuck_client.send(get("/stuck")).await;
    eventually("the stuck upstream's TCP accept", WAIT, || {
        accepted.load(Relaxed) >= 1
    })
    .await;
    let mut c = RawClient::connect(front.addr()).await;
    for path in ["/one", "/two"] {
        c.send(get(path)).await;
        let r = within(
            "the healthy upstream's answer while the other is stuck",
            Duration::from_secs(2),
            c.response(),
        )
        .await;
        assert_eq!(r.text(), format!("ok {path}"), "{}", r.raw_head);
    }
    // The stuck one ends as a connect failure (502), not a hang.
    stuck_client.read_timeout = Duration::from_secs(10);
    let r = stuck_client.response().await;
    assert_eq!(r.status, 502, "{}", r.raw_head);
}

/// Item 5: a TLS handshake that never completes is a connect failure: the
/// request fails over to the next upstream (not a 504), and the silent one
/// is skipped afterwards (passive health).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_upstream_fails_over_and_is_marked_down() {
    let (silent, accepted, _task) = silent_listener().await;
    let healthy = ok_origin();
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![
            Upstream::new(format!("https://{silent}")),
            Upstream::new(healthy.local_addr().to_string()),
        ]);
        pc.upstream_tls = Some(keepwire::client::tls::insecure_config());
        pc.connect_timeout = Duration::from_millis(300);
        pc.health_cooldown = Duration::from_secs(30);
        pc
    });
    let mut c = RawClient::connect(front.addr()).await;
    for i in 0..4 {
        c.send(get("/x")).await;
        let r = c.response().await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ok /x"),
            "request {i}: {}",
            r.raw_head
        );
    }
    assert_eq!(accepted.load(Relaxed), 1, "tried again while marked down");
    let m = front.proxy.metrics();
    assert_eq!(
        m.upstream_errors[0].load(Relaxed),
        1,
        "counted as a connect failure"
    );
    assert_eq!(m.gateway_timeout.load(Relaxed), 0);
}

/// An h2c origin whose answer sends "partial" and then stalls forever.
fn stalling_h2_origin() -> (ServerHandle, Arc<Mutex<Vec<keepwire::BodySender>>>) {
    let held: Arc<Mutex<Vec<keepwire::BodySender>>> = Arc::default();
    let h = held.clone();
    let server = serve(
        |_| {},
        move |_req: Request<Body>| {
            let h = h.clone();
            async move {
                let (tx, body) = Body::channel(1);
                let _ = tx.send("partial").await;
                h.lock().unwrap().push(tx);
                Response::new(body)
            }
        },
    );
    (server, held)
}

/// Item 5 (R8.2): an HTTP/2 upstream body that stalls for the upstream
/// timeout ends the client's response as a truncation: an HTTP/1 client
/// sees the connection close before the last chunk, an h2 client a reset
/// stream. It used to hang for as long as the upstream did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_upstream_body_ends_as_a_truncation() {
    let (origin, _held) = stalling_h2_origin();
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![Upstream::new(origin.local_addr().to_string())]);
        pc.upstream_http2 = true;
        pc.upstream_timeout = Duration::from_millis(300);
        pc
    });
    let mut c = RawClient::connect(front.addr()).await;
    c.send(get("/stall")).await;
    match within("the truncated response", WAIT, c.try_response(false)).await {
        Err(ReadError::Eof { received }) => assert!(received > 0, "no head"),
        other => panic!("expected a truncated response, got {other:?}"),
    }

    let tcp = TcpStream::connect(front.addr()).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = Request::get(format!("http://{}/stall", front.addr()))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = within("the h2 response head", WAIT, resp).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let err = within("the h2 reset", WAIT, async {
        loop {
            match body.data().await {
                Some(Ok(b)) => got.extend_from_slice(&b),
                Some(Err(e)) => return e,
                None => panic!("the stalled body ended cleanly: {got:?}"),
            }
        }
    })
    .await;
    assert!(err.is_reset(), "{err}");
    assert_eq!(got, b"partial");
}

/// Item 5: an origin that answers 413 as soon as it has the head, before
/// the body, and closes (unread body bytes make that a reset): the client
/// gets the 413, not a 502 for the broken upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_from_the_origin_is_relayed_not_502() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _origin = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large",
                    )
                    .await;
                // Give the answer a moment on the wire, then close with
                // the body unread.
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![Upstream::new(addr.to_string())]);
        pc
    });
    expect_early_413(&front, 8 * 1024 * 1024).await;
}

/// Item 5: a connection that cannot be opened (here a TLS handshake that
/// never ends, on the HTTP/1.1 pool's path) is reported at once as a
/// connect failure, so a proxy fails over; it used to be tried four times,
/// each waiting out the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_is_reported_as_one_not_retried() {
    let (silent, accepted, _task) = silent_listener().await;
    let mut config = keepwire::ClientConfig::default();
    config.http1_only = true;
    config.tls = Some(keepwire::client::tls::insecure_config());
    config.connect_timeout = Duration::from_millis(200);
    let client = keepwire::Client::new(config);
    let err = within(
        "the connect failure",
        WAIT,
        client.get(&format!("https://{silent}/")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, keepwire::ClientError::Connect(_)), "{err:?}");
    assert_eq!(accepted.load(Relaxed), 1, "connected again after a failure");
    assert_eq!(client.metrics().retries.load(Relaxed), 0);
}

/// Item 2 with `--reuse safe`: a body too large to keep a copy of could
/// not be resent after the stale-connection race, so it gets a fresh
/// upstream connection, as non-idempotent requests do; a small one still
/// rides the warm connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_reuse_safe_a_body_past_the_retry_bound_gets_a_fresh_connection() {
    let origin = serve(
        |_| {},
        |req: Request<Body>| async move {
            let conn = req
                .extensions()
                .get::<keepwire::ConnInfo>()
                .map_or(0, |i| i.id);
            let n = req
                .into_body()
                .collect(1 << 20)
                .await
                .map_or(0, |b| b.len());
            Response::new(Body::from(format!("conn {conn}, {n} bytes")))
        },
    );
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![Upstream::new(origin.local_addr().to_string())]);
        pc.reuse = ReusePolicy::Safe;
        pc
    });
    let mut c = RawClient::connect(front.addr()).await;
    let put = |n: usize| {
        let mut req =
            format!("PUT /p HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        req.extend_from_slice(&pattern(n));
        req
    };
    c.send(get("/warm")).await;
    let warm = c.response().await.text();
    let warm_conn = warm.split(',').next().unwrap().to_string();
    c.send(put(1024)).await;
    assert_eq!(
        c.response().await.text(),
        format!("{warm_conn}, 1024 bytes")
    );
    c.send(put(200 * 1024)).await;
    let r = c.response().await.text();
    assert!(r.ends_with(", 204800 bytes"), "{r}");
    assert!(
        !r.starts_with(&format!("{warm_conn},")),
        "rode the warm connection: {r}"
    );
}

/// An origin that answers at once and streams the request body back as
/// it reads it (an echo): its answer arrives while the upload is under
/// way, and the upload must go on, or both sides wait for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_answers_while_reading_still_gets_the_whole_body() {
    let origin = serve(
        |c| c.limits.max_body_bytes = None,
        |req: Request<Body>| async move { Response::new(req.into_body()) },
    );
    for (h2c, len) in [(true, 1024 * 1024), (false, 256 * 1024)] {
        let front = Front::start({
            let mut pc = ProxyConfig::default();
            pc.routes = route(vec![Upstream::new(origin.local_addr().to_string())]);
            pc.upstream_http2 = h2c;
            pc
        });
        let body = pattern(len);
        let mut c = RawClient::connect(front.addr()).await;
        c.send(format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n"
        ))
        .await;
        let mut w = c.take_writer();
        let upload = body.clone();
        tokio::spawn(async move {
            for piece in upload.chunks(16 * 1024) {
                if w.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let r = c.response().await;
        assert_eq!(r.status, 200, "h2c {h2c}: {}", r.raw_head);
        assert_eq!(r.body.len(), len, "h2c {h2c}");
        assert!(r.body == body, "h2c {h2c}: the echo differs");
    }
}

/// Item 5 over HTTP/2: an h2c origin that answers 413 without reading the
/// body (its stream is then reset) gets its answer relayed, and the upload
/// stops instead of failing the exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_from_an_h2c_origin_is_relayed_not_502() {
    let origin = serve(
        |c| c.limits.max_body_bytes = None,
        |_req: Request<Body>| async move {
            let mut r = Response::new(Body::from("too large"));
            *r.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
            r
        },
    );
    let front = Front::start({
        let mut pc = ProxyConfig::default();
        pc.routes = route(vec![Upstream::new(origin.local_addr().to_string())]);
        pc.upstream_http2 = true;
        pc
    });
    expect_early_413(&front, 4 * 1024 * 1024).await;
}

/// Uploads `len` bytes through `front` to an origin that answers 413 "too
/// large" early: the client gets that answer (not 502) while the upload
/// goes on in the background for as long as the proxy takes it.
async fn expect_early_413(front: &Front, len: usize) {
    let mut c = RawClient::connect(front.addr()).await;
    c.send(format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n"
    ))
    .await;
    let mut w = c.take_writer();
    let upload = tokio::spawn(async move {
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..len / piece.len() {
            if w.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let r = c.response().await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (413, "too large"),
        "{}",
        r.raw_head
    );
    assert_eq!(front.proxy.metrics().bad_gateway.load(Relaxed), 0);
    upload.abort();
}
