//! Raw-socket tests of keepwire's server: hand-written request bytes in,
//! responses parsed by the independent parser in `support`, exact checks on
//! framing, connection fields and how (and when) the server closes.
//!
//! Rules under test (docs/CONNECTION-RULES.md): R5 (persistence,
//! HTTP/1.0 keep-alive, max requests), R7 (pipelining), R8 (lingering close,
//! half close), R10 (framing safety and limits).

mod support;

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use keepwire::Body;
use keepwire::metrics::CloseReason;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Records handler events in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn position(&self, s: &str) -> usize {
        let log = self.snapshot();
        log.iter()
            .position(|e| e == s)
            .unwrap_or_else(|| panic!("{s:?} not in log {log:?}"))
    }
}

fn echo_path(req: Request<Body>) -> impl Future<Output = Response<Body>> {
    let path = req.uri().path().to_owned();
    async move { Response::new(Body::from(path)) }
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r
}

// ---------------------------------------------------------------------------
// 1. Pipelining (R7.2)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_answered_in_order() {
    let srv = serve(|_| {}, echo_path);
    let mut c = RawClient::connect(srv.local_addr()).await;
    let burst: String = (1..=10).map(|i| get(&format!("/r{i}"))).collect();
    c.send(burst).await;
    for i in 1..=10 {
        let r = c.response().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("/r{i}"), "response {i} out of order");
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.framing, Framing::Length(format!("/r{i}").len()));
    }
    // Nothing else was sent and the connection stays open.
    assert!(c.read_some(Duration::from_millis(200)).await.is_none());
    assert!(c.buffered().is_empty());
    let m = srv.metrics();
    assert_eq!(m.requests.load(Relaxed), 10);
    assert_eq!(m.connections_accepted.load(Relaxed), 1);
    drop(c);
    stop(srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_handlers_run_ahead_but_responses_stay_in_order() {
    let log = Log::default();
    let handler_log = log.clone();
    let srv = serve(
        |c| c.pipeline_depth = 4,
        move |req: Request<Body>| {
            let log = handler_log.clone();
            async move {
                let path = req.uri().path().to_owned();
                log.push(format!("start {path}"));
                if path == "/r1" {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                log.push(format!("end {path}"));
                Response::new(Body::from(path))
            }
        },
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    let burst: String = (1..=10).map(|i| get(&format!("/r{i}"))).collect();
    let t0 = Instant::now();
    c.send(burst).await;
    for i in 1..=10 {
        let r = c.response().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("/r{i}"), "response {i} out of order");
    }
    assert!(t0.elapsed() >= Duration::from_millis(50));
    // Handlers 2–4 ran while 1 slept (depth 4) ...
    let end1 = log.position("end /r1");
    for i in 2..=4 {
        assert!(
            log.position(&format!("end /r{i}")) < end1,
            "handler {i} did not run ahead: {:?}",
            log.snapshot()
        );
    }
    // ... but not 5: read-ahead is bounded by the depth.
    assert!(
        log.position("start /r5") > end1,
        "read ahead beyond depth 4: {:?}",
        log.snapshot()
    );
    assert_eq!(log.snapshot().len(), 20);
    drop(c);
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 2. `Connection: close` in the middle of a pipeline (R5.3, R7.2)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_in_the_middle_of_a_pipeline() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let srv = serve(
        |_| {},
        move |req: Request<Body>| {
            counted.fetch_add(1, SeqCst);
            echo_path(req)
        },
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    let burst = format!(
        "{}{}{}{}{}",
        get("/r1"),
        get("/r2"),
        get_close("/r3"),
        get("/r4"),
        get("/r5")
    );
    c.send(burst).await;
    for i in 1..=3 {
        let r = c.response().await;
        assert_eq!(r.text(), format!("/r{i}"));
        let expect = if i == 3 { "close" } else { "keep-alive" };
        assert_eq!(r.header("connection"), Some(expect), "response {i}");
    }
    c.expect_eof().await;
    assert_eq!(calls.load(SeqCst), 3, "requests after the close were run");
    assert_eq!(srv.metrics().closes(CloseReason::NotPersistent), 1);
    drop(c);
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 3. Requests pipelined after `Connection: close` must not reset away the
//    response (R8.4, R8.5: lingering close).

const BIG: usize = 1024 * 1024;

/// `GET /big` with `Connection: close`, then ~200 KB of further pipelined
/// requests, all in one buffer.
fn close_then_flood() -> Vec<u8> {
    let mut out = get_close("/big").into_bytes();
    let filler = get("/after-close");
    while out.len() < 200 * 1024 {
        out.extend_from_slice(filler.as_bytes());
    }
    out
}

/// How a client fared reading the 1 MiB response and what followed it.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Whole response, then a clean EOF.
    Clean,
    /// Whole response, then a reset instead of EOF.
    ResetAfter,
    /// The response broke off (`received` bytes of it).
    Truncated { received: usize },
}

async fn flood_and_read(c: &mut RawClient) -> (Fate, tokio::task::JoinHandle<std::io::Result<()>>) {
    let mut wr = c.take_writer();
    let flood = close_then_flood();
    // The writer runs beside the reader: the server does not read while it
    // writes the response, so a write-then-read client could deadlock.
    let writer = tokio::spawn(async move {
        within("flood write", WAIT, wr.write_all(&flood)).await?;
        within("flood shutdown", WAIT, wr.shutdown()).await
    });
    let fate = match c.try_response(false).await {
        Ok(r) => {
            assert_eq!(r.status, 200);
            assert_eq!(r.header("connection"), Some("close"));
            assert_eq!(r.body.len(), BIG);
            assert!(r.body == pattern(BIG), "response body corrupted");
            match c.read_some(WAIT).await {
                Some(Ok(0)) => Fate::Clean,
                Some(Ok(n)) => panic!("{n} bytes after the last response"),
                Some(Err(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                    Fate::ResetAfter
                }
                None => panic!("no EOF after the last response"),
            }
        }
        Err(e) => Fate::Truncated {
            received: e.received(),
        },
    };
    (fate, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_after_close_does_not_reset_the_response() {
    let paths = Log::default();
    let seen = paths.clone();
    let srv = serve(
        |_| {},
        move |req: Request<Body>| {
            seen.push(req.uri().path());
            async move { Response::new(Body::from(pattern(BIG))) }
        },
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    let (fate, writer) = flood_and_read(&mut c).await;
    assert_eq!(
        fate,
        Fate::Clean,
        "lingering close must deliver the response and a FIN"
    );
    // The server drained the pipelined bytes instead of resetting: every
    // one of our writes succeeded.
    within("writer", WAIT, writer)
        .await
        .unwrap()
        .expect("writing the pipelined requests after close failed");
    assert_eq!(paths.snapshot(), vec!["/big".to_string()]);
    let m = srv.metrics();
    eventually("the lingering close to end with FIN", WAIT, || {
        m.linger_fin.load(Relaxed) == 1
    })
    .await;
    assert_eq!(m.linger_bounded.load(Relaxed), 0);
    let discarded = m.linger_discarded_bytes.load(Relaxed);
    assert!(
        (150 * 1024..=200 * 1024).contains(&discarded),
        "discarded {discarded} bytes while lingering"
    );
    drop(c);
    stop(srv).await;
}

/// The control for the test above: the same exchange against servers that
/// close without lingering, with the pipelined requests unread: a plain
/// `close()` (the kernel answers the unread input with RST) and an abortive
/// one (`keepwire::net::set_abortive_close`, SO_LINGER 0). The client loses
/// the end of the response, or at least sees a reset instead of EOF. If
/// either ever comes out `Clean`, the test above is not testing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_close_without_lingering_resets_the_response() {
    for abortive in [false, true] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let mut resp =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\nconnection: close\r\n\r\n")
                    .into_bytes();
            resp.extend_from_slice(&pattern(BIG));
            s.write_all(&resp).await.unwrap();
            if abortive {
                keepwire::net::set_abortive_close(&s).unwrap();
            }
            drop(s); // close() with unread input
        });
        let mut c = RawClient::connect(addr).await;
        let (fate, writer) = flood_and_read(&mut c).await;
        let _ = within("control writer", WAIT, writer).await;
        within("control server", WAIT, server).await.unwrap();
        eprintln!("close without lingering (abortive: {abortive}): {fate:?}");
        assert_ne!(
            fate,
            Fate::Clean,
            "a close without lingering (abortive: {abortive}) behaved like a lingering close"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. Client half-close (R8.4)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_still_gets_the_whole_response() {
    let srv = serve(
        |_| {},
        |_req: Request<Body>| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Response::new(Body::from(pattern(100_000)))
        },
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    c.send(get("/half")).await;
    c.shutdown_write().await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Length(100_000));
    assert!(r.body == pattern(100_000));
    c.expect_eof().await;
    let m = srv.metrics();
    eventually("close counted", WAIT, || {
        m.closes(CloseReason::ClientClose) == 1
    })
    .await;
    stop(srv).await;
}

/// While it owes a response the server does not read, but it watches: a
/// handler that waits on `PeerGone` learns at once that its client left
/// (FIN, or RST), while a pipelined request behind it is no departure.
/// The signal only tells: a half-closed client (R8.4) still gets the
/// answer the handler gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_learns_when_its_http1_client_leaves() {
    let left = Arc::new(AtomicUsize::new(0));
    let counted = left.clone();
    let srv = serve(
        |_| {},
        move |req: Request<Body>| {
            let counted = counted.clone();
            let peer = keepwire::server::PeerGone::of(&req);
            let hold = match req.uri().path() {
                "/hold" => Duration::from_secs(30),
                "/brief" => Duration::from_millis(300),
                _ => Duration::ZERO,
            };
            async move {
                tokio::select! {
                    () = peer.wait() => {
                        counted.fetch_add(1, SeqCst);
                    }
                    () = tokio::time::sleep(hold) => {}
                }
                let said = match (peer.is_lost(), peer.is_gone()) {
                    (true, _) => "lost",
                    (_, true) => "gone",
                    _ => "here",
                };
                Response::new(Body::from(said))
            }
        },
    );
    let addr = srv.local_addr();
    for (n, reset) in [(1, false), (2, true)] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(get("/hold").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if reset {
            keepwire::net::set_abortive_close(&s).unwrap();
        }
        drop(s);
        let what = if reset { "RST noticed" } else { "FIN noticed" };
        eventually(what, Duration::from_secs(2), || left.load(SeqCst) == n).await;
    }
    // A pipelined request waiting in the socket is not a departure.
    let mut c = RawClient::connect(addr).await;
    c.send(format!("{}{}", get("/brief"), get("/now"))).await;
    for _ in 0..2 {
        assert_eq!(c.response().await.body, b"here");
    }
    assert_eq!(left.load(SeqCst), 2);
    // A half-close is noticed (gone, not lost), and the handler's answer
    // still arrives.
    c.send(get("/hold")).await;
    c.shutdown_write().await;
    let r = within("the early answer", Duration::from_secs(2), c.response()).await;
    assert_eq!(r.body, b"gone");
    assert_eq!(left.load(SeqCst), 3);
    c.expect_eof().await;
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 5. Slowloris and the header timeout (R10.2)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_gets_408_from_the_header_timeout() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let srv = serve(
        |c| c.header_timeout = Duration::from_millis(300),
        move |req: Request<Body>| {
            counted.fetch_add(1, SeqCst);
            echo_path(req)
        },
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    let t0 = Instant::now();
    let mut wr = c.take_writer();
    let trickle = tokio::spawn(async move {
        // At most 40 bytes, one per 100 ms: bounded at 4 s.
        for b in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaa".iter() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let r = c.response().await;
    let answered = t0.elapsed();
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof().await;
    let closed = t0.elapsed();
    assert!(
        answered >= Duration::from_millis(250),
        "408 before the header timeout: {answered:?}"
    );
    assert!(
        closed < Duration::from_millis(1200),
        "closed after {closed:?}"
    );
    assert_eq!(calls.load(SeqCst), 0);
    assert_eq!(srv.metrics().closes(CloseReason::Timeout), 1);
    trickle.abort();
    drop(c);
    stop(srv).await;
}

/// The header timeout runs from the first byte of a head, not from the
/// previous request: a keep-alive connection that idled longer than the
/// header timeout may still send its next head in pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_starts_at_the_first_byte_of_the_head() {
    let srv = serve(
        |c| {
            c.header_timeout = Duration::from_millis(300);
            c.idle_timeout = Duration::from_secs(5);
        },
        echo_path,
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    c.send(get("/one")).await;
    assert_eq!(c.response().await.text(), "/one");
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.send("GET /two HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send("Host: test\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "/two");
    assert_eq!(srv.metrics().connections_idle.load(Relaxed), 1);
    drop(c);
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 6. Smuggling vectors and limits (R10.1, R10.2)

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n";

fn bad_requests() -> Vec<(&'static str, Vec<u8>, u16)> {
    let many_headers: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_head: String = (0..40)
        .map(|i| format!("X-Big{i}: {}\r\n", "b".repeat(1000)))
        .collect();
    let v = vec![
        (
            "TE + CL",
            "POST /te-cl HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "two differing CL",
            "POST /cl-cl HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd".to_string(),
            400,
        ),
        (
            "CL list with differing values",
            "POST /cl-list HTTP/1.1\r\nHost: t\r\nContent-Length: 4, 5\r\n\r\nabcd".to_string(),
            400,
        ),
        (
            "invalid CL (sign)",
            "POST /cl-sign HTTP/1.1\r\nHost: t\r\nContent-Length: +4\r\n\r\nabcd".to_string(),
            400,
        ),
        (
            "invalid CL (hex)",
            "POST /cl-hex HTTP/1.1\r\nHost: t\r\nContent-Length: 0x4\r\n\r\nabcd".to_string(),
            400,
        ),
        (
            "TE chunked, gzip",
            "POST /te-chunked-gzip HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "TE gzip",
            "POST /te-gzip HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "TE in HTTP/1.0",
            "POST /te-10 HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "space before colon",
            "GET /space HTTP/1.1\r\nHost : t\r\n\r\n".to_string(),
            400,
        ),
        (
            "invalid chunk size",
            "POST /chunk HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "empty chunk-size line",
            "POST /chunk-empty HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "whitespace chunk-size line",
            "POST /chunk-space HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n \r\nhello\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "chunk extension ended by bare LF",
            "POST /chunk-ext-lf HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "control byte in chunk extension",
            "POST /chunk-ext-ctl HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "trailer section ended by bare LF",
            "POST /trailer-lf HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\n".to_string(),
            400,
        ),
        (
            "Content-Length: ,",
            "POST /cl-comma HTTP/1.1\r\nHost: t\r\nContent-Length: ,\r\n\r\n".to_string(),
            400,
        ),
        (
            "Content-Length with an empty list member",
            "POST /cl-empty-member HTTP/1.1\r\nHost: t\r\nContent-Length: 4,\r\n\r\nabcd".to_string(),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            "GET /no-host HTTP/1.1\r\n\r\n".to_string(),
            400,
        ),
        (
            "absolute-form HTTP/1.1 without Host",
            "GET http://t/no-host-abs HTTP/1.1\r\n\r\n".to_string(),
            400,
        ),
        (
            "two Host fields",
            "GET /two-hosts HTTP/1.1\r\nHost: t\r\nHost: evil\r\n\r\n".to_string(),
            400,
        ),
        (
            "invalid Host",
            "GET /bad-host HTTP/1.1\r\nHost: t/../evil\r\n\r\n".to_string(),
            400,
        ),
        (
            "Host with a bad port",
            "GET /bad-port HTTP/1.1\r\nHost: t:8o\r\n\r\n".to_string(),
            400,
        ),
        (
            "absolute-form target with userinfo",
            "GET http://user@t/userinfo HTTP/1.1\r\nHost: t\r\n\r\n".to_string(),
            400,
        ),
        (
            "URI over 8 KiB",
            format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000)),
            414,
        ),
        (
            "header line over 8 KiB",
            format!("GET /long-line HTTP/1.1\r\nHost: t\r\nX-Long: {}\r\n\r\n", "b".repeat(9000)),
            431,
        ),
        (
            "101 header fields",
            format!("GET /many HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n"),
            431,
        ),
        (
            "head over 32 KiB",
            format!("GET /big-head HTTP/1.1\r\nHost: t\r\n{big_head}\r\n"),
            431,
        ),
        (
            "Content-Length over max_body_bytes",
            format!("POST /cl-big HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n{}", "c".repeat(1001)),
            413,
        ),
        (
            "chunked body over max_body_bytes",
            format!(
                "POST /chunk-big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n7d1\r\n{}\r\n0\r\n\r\n",
                "c".repeat(2001)
            ),
            413,
        ),
    ];
    v.into_iter()
        .map(|(name, req, status)| {
            let mut bytes = req.into_bytes();
            bytes.extend_from_slice(SMUGGLED.as_bytes());
            (name, bytes, status)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_vectors_and_limits_get_their_status_and_a_close() {
    let paths = Log::default();
    let seen = paths.clone();
    let srv = serve(
        |c| c.limits.max_body_bytes = Some(1000),
        move |req: Request<Body>| {
            seen.push(req.uri().path());
            async move {
                // A handler that reads the body and answers 200 if it could.
                match req.into_body().collect(1 << 20).await {
                    Ok(b) => text(StatusCode::OK, format!("read {} bytes", b.len())),
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("handler saw {e}"),
                    ),
                }
            }
        },
    );
    let mut failures = Vec::new();
    for (name, bytes, status) in bad_requests() {
        let mut c = RawClient::connect(srv.local_addr()).await;
        c.send(&bytes).await;
        let r = match c.try_response(false).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: no response: {e:?}"));
                continue;
            }
        };
        if r.status != status {
            failures.push(format!(
                "{name}: status {} ({:?}), want {status}",
                r.status,
                r.text()
            ));
        }
        if r.header("connection") != Some("close") {
            failures.push(format!("{name}: connection {:?}", r.header("connection")));
        }
        if !c.buffered().is_empty() {
            failures.push(format!(
                "{name}: more after the response: {:?}",
                String::from_utf8_lossy(c.buffered())
            ));
            continue;
        }
        match c.read_some(WAIT).await {
            Some(Ok(0)) => {}
            other => failures.push(format!("{name}: no clean EOF: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Only the requests whose heads are valid (the body is what is broken)
    // reached the handler; the smuggled request never did.
    assert_eq!(
        paths.snapshot(),
        [
            "/chunk",
            "/chunk-empty",
            "/chunk-space",
            "/chunk-ext-lf",
            "/chunk-ext-ctl",
            "/trailer-lf",
            "/chunk-big"
        ]
    );
    stop(srv).await;
}

/// The strict parser still serves what RFC 9112 allows: chunk extensions
/// with quoted strings and BWS around `;` and `=`, trailers ended by CRLF
/// CRLF, a Content-Length list of one value, HTTP/1.0 without Host, an
/// absolute-form target with its Host, an IPv6 Host; all on one
/// connection, which stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_but_valid_forms_are_served_on_one_connection() {
    let srv = serve(
        |_| {},
        |req: Request<Body>| async move {
            let path = req.uri().path().to_owned();
            match req.into_body().collect(1 << 20).await {
                Ok(b) => text(
                    StatusCode::OK,
                    format!("{path} {}", String::from_utf8_lossy(&b)),
                ),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        },
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    let requests = [
        (
            "POST /ext HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             5 ;a = b\t; q=\"x;y \\\"z\"\r\nhello\r\n0;last\r\nX-Sum: 5\r\n\r\n",
            "/ext hello",
        ),
        (
            "POST /cl-list HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nworld",
            "/cl-list world",
        ),
        (
            "GET /http10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "/http10 ",
        ),
        (
            "GET http://t/absolute HTTP/1.1\r\nHost: other\r\n\r\n",
            "/absolute ",
        ),
        ("GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "/v6 "),
    ];
    for (request, want) in requests {
        c.send(request).await;
        let r = c.response().await;
        assert_eq!((r.status, r.text()), (200, want.to_string()), "{request:?}");
        assert_ne!(r.header("connection"), Some("close"), "{request:?}");
    }
    assert!(c.read_some(Duration::from_millis(100)).await.is_none());
    drop(c);
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 7. Max requests per connection (R5.2, R5.6)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_counts_down_and_closes() {
    let srv = serve(
        |c| {
            c.max_requests = Some(3);
            c.idle_timeout = Duration::from_secs(7);
        },
        echo_path,
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    let m = srv.metrics();
    let expect = [
        (Some("keep-alive"), Some("timeout=7, max=2")),
        (Some("keep-alive"), Some("timeout=7, max=1")),
        (Some("close"), None),
    ];
    for (i, (conn, ka)) in expect.into_iter().enumerate() {
        let path = format!("/r{}", i + 1);
        c.send(get(&path)).await;
        let r = c.response().await;
        assert_eq!(r.text(), path);
        assert_eq!(r.header("connection"), conn, "response {}", i + 1);
        assert_eq!(r.header("keep-alive"), ka, "response {}", i + 1);
        if i < 2 {
            // Between requests the connection counts as idle, once.
            assert_eq!(
                m.connections_idle.load(Relaxed),
                1,
                "after response {}",
                i + 1
            );
            assert_eq!(m.connections_open.load(Relaxed), 1);
        }
    }
    c.expect_eof().await;
    assert_eq!(m.closes(CloseReason::MaxRequests), 1);
    eventually("gauges back to zero", WAIT, || {
        m.connections_open.load(Relaxed) == 0 && m.connections_idle.load(Relaxed) == 0
    })
    .await;
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 8. Idle timeout (R5.6)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_after_the_idle_timeout() {
    let srv = serve(|c| c.idle_timeout = Duration::from_millis(300), echo_path);
    let mut c = RawClient::connect(srv.local_addr()).await;
    c.send(get("/once")).await;
    let r = c.response().await;
    let t0 = Instant::now();
    assert_eq!(r.text(), "/once");
    // Advertised (rounded up to whole seconds, the header's unit).
    assert_eq!(r.header("keep-alive"), Some("timeout=1, max=999"));
    c.expect_eof().await;
    let idle = t0.elapsed();
    assert!(idle >= Duration::from_millis(250), "closed early: {idle:?}");
    assert!(idle < Duration::from_secs(1), "closed late: {idle:?}");
    let m = srv.metrics();
    assert_eq!(m.closes(CloseReason::IdleTimeout), 1);
    drop(c);
    eventually("linger done", WAIT, || m.linger_fin.load(Relaxed) == 1).await;
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 9. Per-IP connection cap (R4.2)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_refuses_the_third_connection() {
    let srv = serve(|c| c.max_connections_per_ip = 2, echo_path);
    let addr = srv.local_addr();
    let mut a = RawClient::connect(addr).await;
    let mut b = RawClient::connect(addr).await;
    for (c, p) in [(&mut a, "/a1"), (&mut b, "/b1")] {
        c.send(get(p)).await;
        assert_eq!(c.response().await.text(), p);
    }
    let mut third = RawClient::connect(addr).await;
    third.send(get("/third")).await;
    let r = third.response().await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("retry-after"), Some("1"));
    third.expect_eof().await;
    drop(third);
    // The first two are unaffected.
    for (c, p) in [(&mut a, "/a2"), (&mut b, "/b2")] {
        c.send(get(p)).await;
        let r = c.response().await;
        assert_eq!(r.text(), p);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    let m = srv.metrics();
    // The refusal is counted once its lingering close ends (after `third`
    // went away), which a loaded machine may not have finished yet.
    eventually("the refusal counted", WAIT, || {
        m.closes(CloseReason::Limit) == 1
    })
    .await;
    assert_eq!(m.requests.load(Relaxed), 4);
    // Once one closes, a new connection is admitted again.
    drop(a);
    eventually("the slot to free up", WAIT, || {
        m.connections_open.load(Relaxed) == 1
    })
    .await;
    let mut d = RawClient::connect(addr).await;
    d.send(get("/d")).await;
    assert_eq!(d.response().await.status, 200);
    drop((b, d));
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 10. HTTP/1.0 with and without keep-alive (R5.1)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_closes_unless_keep_alive_is_asked_for() {
    let srv = serve(|c| c.idle_timeout = Duration::from_secs(9), echo_path);
    let addr = srv.local_addr();

    let mut c = RawClient::connect(addr).await;
    c.send("GET /plain HTTP/1.0\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.text(), "/plain");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("keep-alive"), None);
    c.expect_eof().await;

    let mut c = RawClient::connect(addr).await;
    for path in ["/ka1", "/ka2"] {
        c.send(format!(
            "GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ))
        .await;
        let r = c.response().await;
        assert_eq!(r.text(), path);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert!(r.header("keep-alive").unwrap().starts_with("timeout=9"));
        assert!(r.header("content-length").is_some());
    }
    // Dropping keep-alive on a later request ends it.
    c.send("GET /ka3 HTTP/1.0\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof().await;
    assert_eq!(srv.metrics().connections_accepted.load(Relaxed), 2);
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 11. Streaming response bodies: chunked to 1.1, close-delimited to 1.0 (R5.4)

fn streaming_handler(req: Request<Body>) -> impl Future<Output = Response<Body>> {
    let path = req.uri().path().to_owned();
    async move {
        if path != "/stream" {
            return Response::new(Body::from(path));
        }
        let (tx, body) = Body::channel(1);
        tokio::spawn(async move {
            for part in ["alpha", "beta", "gamma"] {
                if tx.send(part).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Response::new(body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_body_is_chunked_for_11_and_close_delimited_for_10() {
    let srv = serve(|_| {}, streaming_handler);
    let addr = srv.local_addr();

    let mut c = RawClient::connect(addr).await;
    c.send(get("/stream")).await;
    let r = c.response().await;
    assert_eq!(r.framing, Framing::Chunked);
    assert_eq!(r.chunks, vec![5, 4, 5]);
    assert_eq!(r.text(), "alphabetagamma");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    // Self-delimited: the connection goes on.
    c.send(get("/after")).await;
    assert_eq!(c.response().await.text(), "/after");
    drop(c);

    for req in [
        "GET /stream HTTP/1.0\r\n\r\n",
        "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let mut c = RawClient::connect(addr).await;
        c.send(req).await;
        let r = c.response().await;
        assert_eq!(r.framing, Framing::Close, "{req:?}");
        assert_eq!(r.text(), "alphabetagamma");
        assert_eq!(r.header("transfer-encoding"), None);
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("connection"), Some("close"), "{req:?}");
        assert!(c.at_eof());
        c.expect_eof().await;
    }
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 12. Expect: 100-continue

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_is_sent_only_when_the_handler_reads_the_body() {
    let gate = Arc::new(Notify::new());
    let handler_gate = gate.clone();
    let srv = serve(
        |_| {},
        move |req: Request<Body>| {
            let gate = handler_gate.clone();
            async move {
                match req.uri().path() {
                    "/read" => {
                        within("gate", WAIT, gate.notified()).await;
                        let body = req.into_body().collect(1024).await.unwrap();
                        text(
                            StatusCode::OK,
                            format!("got {}", String::from_utf8_lossy(&body)),
                        )
                    }
                    "/refuse" => text(StatusCode::PAYLOAD_TOO_LARGE, "no thanks"),
                    p => text(StatusCode::OK, p.to_owned()),
                }
            }
        },
    );
    let addr = srv.local_addr();
    let expect_head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
    };

    // A handler that reads: 100 only once it starts reading.
    let mut c = RawClient::connect(addr).await;
    c.send(expect_head("/read")).await;
    assert!(
        c.read_some(Duration::from_millis(300)).await.is_none(),
        "sent something before the handler read the body: {:?}",
        String::from_utf8_lossy(c.buffered())
    );
    gate.notify_one();
    let r = c.response().await;
    assert_eq!((r.status, r.version.as_str()), (100, "HTTP/1.1"));
    assert!(r.headers.is_empty());
    c.send("hello").await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "got hello");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(get("/next")).await;
    assert_eq!(c.response().await.text(), "/next");
    drop(c);

    // A handler that never reads: the final answer, no 100, then a close
    // (the unread body's end cannot be found), announced on the response.
    let mut c = RawClient::connect(addr).await;
    c.send(expect_head("/refuse")).await;
    let r = c.response().await;
    assert_eq!(r.status, 413);
    assert_eq!(r.text(), "no thanks");
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof().await;
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 13. HEAD, 204, 304

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_have_no_body() {
    let srv = serve(
        |_| {},
        |req: Request<Body>| async move {
            match req.uri().path() {
                "/nc" => text(StatusCode::NO_CONTENT, Body::empty()),
                "/nm" => text(StatusCode::NOT_MODIFIED, Body::empty()),
                _ => text(StatusCode::OK, "hello world"),
            }
        },
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    // Pipelined, so any stray body byte would corrupt the next response.
    let head = "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n";
    c.send(format!("{head}{}{head}", get("/"))).await;
    let r = c.head_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let r = c.response().await;
    assert_eq!(r.text(), "hello world");
    let r = c.head_response().await;
    assert_eq!(r.header("content-length"), Some("11"));
    for (path, status) in [("/nc", 204), ("/nm", 304)] {
        c.send(get(path)).await;
        let r = c.response().await;
        assert_eq!(r.status, status);
        assert_eq!(r.header("content-length"), None, "{status}");
        assert_eq!(r.header("transfer-encoding"), None, "{status}");
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    c.send(get("/")).await;
    assert_eq!(c.response().await.text(), "hello world");
    assert!(c.read_some(Duration::from_millis(100)).await.is_none());
    drop(c);
    stop(srv).await;
}

// ---------------------------------------------------------------------------
// 14. Graceful shutdown under load

#[derive(Debug, Default)]
struct LoadTally {
    ok: usize,
    /// Responses that announced `Connection: close` (the server's last).
    closed_by_server: usize,
    /// EOF before any response byte on a request sent after shutdown began.
    retryable: usize,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_under_load_fails_no_in_flight_request() {
    const CLIENTS: usize = 8;
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
    let (srv, render) = serve_with_metrics(
        |c| c.shutdown_timeout = SHUTDOWN_TIMEOUT,
        |_req: Request<Body>| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            text(StatusCode::OK, "ok")
        },
    );
    let addr = srv.local_addr();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        let shutting_down = shutting_down.clone();
        clients.push(tokio::spawn(async move {
            let mut t = LoadTally::default();
            let mut c = RawClient::connect(addr).await;
            let deadline = Instant::now() + Duration::from_secs(2);
            // Bounded: 200 requests × ≥20 ms ≥ 4 s, cut at 2 s.
            for i in 0..200 {
                if Instant::now() > deadline {
                    t.failures
                        .push(format!("client {id}: still running at the deadline"));
                    break;
                }
                // Read before writing: if false, this request is in flight
                // before shutdown began and must be answered.
                let after = shutting_down.load(SeqCst);
                if let Err(e) = c.try_send(get(&format!("/c{id}/{i}"))).await {
                    if after {
                        t.retryable += 1;
                    } else {
                        t.failures
                            .push(format!("client {id} req {i}: write failed: {e}"));
                    }
                    break;
                }
                match c.try_response(false).await {
                    Ok(r) if r.status == 200 && r.text() == "ok" => {
                        t.ok += 1;
                        if r.header("connection") == Some("close") {
                            t.closed_by_server += 1;
                            match c.read_some(WAIT).await {
                                Some(Ok(0)) => {}
                                other => t.failures.push(format!(
                                    "client {id}: no clean EOF after close: {other:?}"
                                )),
                            }
                            break;
                        }
                    }
                    Ok(r) => {
                        t.failures.push(format!("client {id} req {i}: {r:?}"));
                        break;
                    }
                    Err(ReadError::Eof { received: 0 }) if after => {
                        t.retryable += 1;
                        break;
                    }
                    Err(e) => {
                        t.failures.push(format!(
                            "client {id} req {i} (sent after shutdown began: {after}): {e:?}"
                        ));
                        break;
                    }
                }
            }
            t
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = srv.metrics().requests.load(Relaxed);
    assert!(before >= CLIENTS as u64 * 5, "too little load: {before}");
    shutting_down.store(true, SeqCst);
    let t0 = Instant::now();
    within("shutdown", SHUTDOWN_TIMEOUT * 2, srv.shutdown())
        .await
        .expect("shutdown");
    let took = t0.elapsed();
    let mut total = LoadTally::default();
    for c in clients {
        let t = within("client task", WAIT, c).await.unwrap();
        total.ok += t.ok;
        total.closed_by_server += t.closed_by_server;
        total.retryable += t.retryable;
        total.failures.extend(t.failures);
    }
    eprintln!("{total:?}, shutdown took {took:?}");
    assert!(total.failures.is_empty(), "{:#?}", total.failures);
    assert_eq!(total.closed_by_server + total.retryable, CLIENTS);
    assert!(total.ok as u64 >= before);
    assert!(took < SHUTDOWN_TIMEOUT, "shutdown took {took:?}");
    let metrics = render();
    assert_eq!(
        metric(&metrics, "connection_closes_total{reason=\"shutdown\"}"),
        CLIENTS as u64
    );
    assert_eq!(metric(&metrics, "connections_open"), 0);
    assert_eq!(
        metric(&metrics, "connection_closes_total{reason=\"error\"}"),
        0
    );
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Shutdown does not close a just-used idle connection inside
/// `keep_alive_min` (nginx's `keepalive_min_timeout`): a client's
/// back-to-back request must not race the close (R8.1). That request is
/// answered with `Connection: close`; a connection that stays quiet is closed
/// once the window has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_spares_a_just_used_connection_for_keep_alive_min() {
    let (srv, render) = serve_with_metrics(
        |c| {
            c.keep_alive_min = Duration::from_millis(600);
            c.shutdown_timeout = Duration::from_secs(5);
        },
        echo_path,
    );
    let addr = srv.local_addr();
    let mut busy = RawClient::connect(addr).await;
    let mut quiet = RawClient::connect(addr).await;
    for (c, p) in [(&mut busy, "/b1"), (&mut quiet, "/q1")] {
        c.send(get(p)).await;
        assert_eq!(c.response().await.header("connection"), Some("keep-alive"));
    }
    let answered = Instant::now();
    let shutdown = tokio::spawn(srv.shutdown());
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Back-to-back, inside the window: answered, and told this is the last.
    busy.send(get("/b2")).await;
    let r = busy.response().await;
    assert_eq!(r.text(), "/b2");
    assert_eq!(r.header("connection"), Some("close"));
    busy.expect_eof().await;
    // The quiet one is closed when the window ends, not at once.
    quiet.expect_eof().await;
    let waited = answered.elapsed();
    assert!(
        waited >= Duration::from_millis(550),
        "closed inside the window: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "closed late: {waited:?}"
    );
    drop((busy, quiet));
    within("shutdown", WAIT, shutdown).await.unwrap().unwrap();
    let m = render();
    assert_eq!(
        metric(&m, "connection_closes_total{reason=\"shutdown\"}"),
        2
    );
    assert_eq!(metric(&m, "requests_total"), 3);
}

// ---------------------------------------------------------------------------
// 15. Request body streaming with backpressure

const UPLOAD: usize = 5 * 1024 * 1024;

fn upload_server(gate: Arc<Notify>) -> keepwire::server::ServerHandle {
    serve(
        |c| c.limits.max_body_bytes = Some(16 * 1024 * 1024),
        move |req: Request<Body>| {
            let gate = gate.clone();
            async move {
                within("upload gate", WAIT, gate.notified()).await;
                let mut body = req.into_body();
                let (mut n, mut h, mut frames) = (0usize, FNV_START, 0usize);
                while let Some(frame) = body.frame().await {
                    let data: Bytes = match frame.map(|f| f.into_data()) {
                        Ok(Ok(d)) => d,
                        Ok(Err(_)) => continue,
                        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}")),
                    };
                    n += data.len();
                    h = fnv(h, &data);
                    frames += 1;
                    // A slow reader.
                    if frames % 8 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                text(StatusCode::OK, format!("{n} {h:016x}"))
            }
        },
    )
}

async fn upload(chunked: bool) {
    let gate = Arc::new(Notify::new());
    let srv = upload_server(gate.clone());
    let stream = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    // A fixed send buffer, so what the kernel can absorb is bounded too.
    socket2::SockRef::from(&stream)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    let mut c = RawClient::from_stream(stream);
    let data = pattern(UPLOAD);
    let expect = format!("{UPLOAD} {:016x}", fnv(FNV_START, &data));
    let written = Arc::new(AtomicUsize::new(0));
    let mut wr = c.take_writer();
    let progress = written.clone();
    let writer = tokio::spawn(async move {
        let head = if chunked {
            "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
        } else {
            format!("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {UPLOAD}\r\n\r\n")
        };
        wr.write_all(head.as_bytes()).await?;
        // Odd piece sizes so chunk and read boundaries never line up.
        for piece in data.chunks(50_001) {
            if chunked {
                wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
            }
            wr.write_all(piece).await?;
            if chunked {
                wr.write_all(b"\r\n").await?;
            }
            progress.fetch_add(piece.len(), SeqCst);
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    // The handler is not reading yet: the server must stop reading too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled_at = written.load(SeqCst);
    assert!(
        stalled_at < UPLOAD / 4,
        "{stalled_at} bytes accepted while the handler read nothing: no backpressure"
    );
    gate.notify_one();
    let _wr = within("upload write", Duration::from_secs(20), writer)
        .await
        .unwrap()
        .expect("upload write");
    c.read_timeout = Duration::from_secs(20);
    let r = c.response().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), expect);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    drop((c, _wr));
    stop(srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_content_length_streams_with_backpressure() {
    upload(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_chunked_streams_with_backpressure() {
    upload(true).await;
}

/// R5.6: a connection older than `max_age` is not kept alive: the first
/// request after that age is answered with `Connection: close`.
#[tokio::test]
async fn max_age_ends_keep_alive_at_the_next_response() {
    let srv = serve(
        |c| {
            c.max_age = Some(Duration::from_millis(300));
            c.max_requests = None;
        },
        echo_path,
    );
    let mut c = RawClient::connect(srv.local_addr()).await;
    c.send(get("/young")).await;
    let r = c.response().await;
    assert_eq!(r.text(), "/young");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.send(get("/old")).await;
    let r = c.response().await;
    assert_eq!(r.text(), "/old");
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof().await;
    assert_eq!(srv.metrics().closes(CloseReason::MaxRequests), 1);
    stop(srv).await;
}

/// R7.2 with a client that pipelines and never reads: responses waiting for
/// the socket are bounded, and the server stops reading requests instead of
/// buffering answers without end, so the client's own writes stall.
#[tokio::test]
async fn a_pipelining_client_that_never_reads_cannot_grow_the_server_unbounded() {
    let big = Bytes::from(vec![b'z'; 64 * 1024]);
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let srv = serve(
        |c| c.max_requests = None,
        move |_req: Request<Body>| {
            count.fetch_add(1, SeqCst);
            let body = big.clone();
            async move { Response::new(Body::full(body)) }
        },
    );
    let mut s = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    // 3,000 requests of ~6 KiB each: 18 MiB, far beyond both socket buffers.
    let filler = "x".repeat(6000);
    let one = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Pad: {filler}\r\n\r\n");
    let all = one.repeat(3000).into_bytes();
    let total = all.len();
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    let writer = tokio::spawn(async move {
        let mut off = 0;
        while off < all.len() {
            match s.write(&all[off..(off + 16 * 1024).min(all.len())]).await {
                Ok(n) => {
                    off += n;
                    w.store(off, SeqCst);
                }
                Err(_) => return,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = written.load(SeqCst);
    let answered = served.load(SeqCst);
    writer.abort();
    assert!(
        sent < total / 2,
        "the client wrote {sent} of {total} bytes: the server kept reading"
    );
    // Each answered request is 64 KiB of response; only what fits in the
    // socket buffers (a few MiB at most on loopback) can be pending.
    assert!(
        answered < 200,
        "{answered} responses produced for a client that reads none"
    );
    stop(srv).await;
}
