//! The load generator against real servers on loopback: keepwire's own,
//! nginx, and small raw-socket servers that misbehave on purpose. Every run
//! is bounded by a request count or a short duration plus a timeout.
//!
//! The invariant under every test: each request is accounted for exactly
//! once (`sent == responses + errors`), and a server's own count agrees.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version};
use keepwire::Body;
use keepwire::bench::{self, FailureKind, Plan, Progress, Report, Stop};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn plan(addr: SocketAddr, version: Version, keep_alive: bool) -> Plan {
    let url = format!("http://{addr}/").parse().unwrap();
    let request = bench::request_bytes(
        &Method::GET,
        &url,
        &HeaderMap::new(),
        &Bytes::new(),
        version,
        keep_alive,
    )
    .unwrap();
    let mut p = Plan::default();
    p.addr = addr;
    p.request = request;
    p.connections = 2;
    p.threads = 2;
    p.stop = Stop::Requests(200);
    p.close_each = !keep_alive;
    p.timeout = Duration::from_secs(3);
    p
}

/// Runs a plan off the async runtime (the engine starts its own threads).
async fn run(plan: Plan) -> Report {
    let report = within(
        "the bench run",
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            bench::run(
                plan,
                Arc::new(Progress::default()),
                Arc::new(AtomicBool::new(false)),
            )
        }),
    )
    .await
    .expect("bench thread")
    .expect("bench run");
    assert_eq!(
        report.sent,
        report.responses + report.error_total(),
        "every request is a response or an error: {report:?}"
    );
    report
}

fn errors(r: &Report, kind: FailureKind) -> u64 {
    r.errors.get(&kind).copied().unwrap_or(0)
}

async fn hello(_req: Request<Body>) -> Response<Body> {
    Response::new(Body::from("Hello, world!"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_add_up_against_keepwire_serve() {
    let server = serve(|_| {}, hello);
    let mut p = plan(server.local_addr(), Version::HTTP_11, true);
    p.connections = 4;
    p.stop = Stop::Requests(2000);
    let r = run(p).await;
    assert_eq!(r.responses, 2000, "{r:?}");
    assert_eq!(r.error_total(), 0, "{r:?}");
    assert_eq!(r.statuses.get(&200), Some(&2000));
    assert_eq!(r.connections, 4, "keep-alive: one connection each");
    assert_eq!(r.latency.len(), 2000);
    assert_eq!(r.first_byte.len(), 2000);
    assert_eq!(r.connect.len(), 4);
    assert!(r.max_requests_per_connection >= 500);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_run_against_nginx_agrees_with_its_access_log() {
    let Some(bin) = require_tool("nginx", "nginx") else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let mut p = plan(nginx.addr, Version::HTTP_11, true);
    p.connections = 4;
    p.stop = Stop::Duration(Duration::from_millis(800));
    let r = run(p).await;
    assert_eq!(r.error_total(), 0, "{r:?}");
    assert!(r.responses > 0);
    // nginx here says keepalive_requests 1000: connections are replaced,
    // never overrun.
    assert!(r.max_requests_per_connection <= 1000, "{r:?}");
    assert!(r.connections >= 4);
    // nginx writes the access log line before the next request is read;
    // give it a moment to flush the last ones.
    eventually("nginx logged every response", WAIT, || {
        nginx.access_log().len() as u64 == r.responses
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_across_nginx_keepalive_requests_loses_and_repeats_nothing() {
    let Some(bin) = require_tool("nginx", "nginx") else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let mut p = plan(nginx.addr, Version::HTTP_11, true);
    p.connections = 2;
    // 7, not 8: batches go out whole (wrk's pipelining), and 1,000 is not a
    // multiple of 7, so requests are pipelined behind each 1,000th response.
    p.pipeline = 7;
    // 3,000 requests over connections nginx closes after 1,000 each: the
    // requests pipelined behind each 1,000th response go out again (R8.4).
    p.stop = Stop::Requests(3000);
    let r = run(p).await;
    assert_eq!(r.responses, 3000, "{r:?}");
    assert_eq!(r.error_total(), 0, "{r:?}");
    assert!(r.connections >= 3, "{r:?}");
    assert!(
        r.resent > 0,
        "requests behind Connection: close were re-sent: {r:?}"
    );
    eventually("nginx logged every request once", WAIT, || {
        nginx.access_log().len() == 3000
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_off_opens_a_connection_per_request_and_counts_time_wait() {
    let Some(bin) = require_tool("nginx", "nginx") else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let p = plan(nginx.addr, Version::HTTP_11, false);
    let r = run(p).await;
    assert_eq!(r.responses, 200, "{r:?}");
    assert_eq!(r.connections, 200, "one connection per request: {r:?}");
    assert_eq!(r.max_requests_per_connection, 1);
    let tw = r.time_wait.expect("Linux counts TIME_WAIT sockets");
    // Every gracefully closed connection leaves a TIME_WAIT socket on the
    // side that closed first (R2.4); both sides are on this host.
    assert!(tw.client + tw.server >= 200, "{tw:?}");
    // The log says connection N carried request 1, for every N.
    let log = nginx.access_log();
    assert_eq!(log.len(), 200);
    assert!(log.iter().all(|(_, index, _)| *index == 1), "{log:?}");
}

/// A server that answers only once `depth` requests are waiting (or after
/// a quiet 200 ms), recording the most requests ever unanswered at once.
async fn depth_server(depth: usize) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (max_seen, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (m, a) = (max_seen.clone(), answered.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (m, a) = (m.clone(), a.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let read =
                        tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await;
                    match read {
                        Ok(Ok(0)) | Ok(Err(_)) => return,
                        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                        Err(_) => {}
                    }
                    let waiting = buf.windows(4).filter(|w| w == b"\r\n\r\n").count();
                    m.fetch_max(waiting, Ordering::SeqCst);
                    if waiting >= depth || (read.is_err() && waiting > 0) {
                        let mut out = Vec::new();
                        for _ in 0..waiting {
                            out.extend_from_slice(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                            );
                        }
                        let end = buf
                            .windows(4)
                            .enumerate()
                            .filter(|(_, w)| w == b"\r\n\r\n")
                            .nth(waiting - 1)
                            .map(|(i, _)| i + 4)
                            .unwrap();
                        buf.drain(..end);
                        a.fetch_add(waiting, Ordering::SeqCst);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, max_seen, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_8_keeps_8_requests_in_flight() {
    let (addr, max_seen, answered) = depth_server(8).await;
    let mut p = plan(addr, Version::HTTP_11, true);
    p.connections = 1;
    p.pipeline = 8;
    p.stop = Stop::Requests(64);
    let r = run(p).await;
    assert_eq!(r.responses, 64, "{r:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 64);
    assert_eq!(max_seen.load(Ordering::SeqCst), 8, "exactly 8 in flight");
    assert_eq!(r.connections, 1);
}

/// A server that answers waiting requests one at a time, 2 ms apart,
/// counting requests that arrived while earlier ones were still unanswered
/// and the sizes of the batches that arrived onto an idle connection.
async fn trickle_server() -> (
    SocketAddr,
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Vec<usize>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let overlapped = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (o, b) = (overlapped.clone(), batches.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (o, b) = (o.clone(), b.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut waiting = 0;
                let mut chunk = [0u8; 4096];
                loop {
                    let read = if waiting == 0 {
                        Ok(s.read(&mut chunk).await)
                    } else {
                        tokio::time::timeout(Duration::from_millis(2), s.read(&mut chunk)).await
                    };
                    match read {
                        Ok(Ok(0)) | Ok(Err(_)) => return,
                        Ok(Ok(n)) => {
                            buf.extend_from_slice(&chunk[..n]);
                            let mut new = 0;
                            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                buf.drain(..end + 4);
                                new += 1;
                            }
                            if new > 0 && waiting > 0 {
                                o.fetch_add(new, Ordering::SeqCst);
                            } else if new > 0 {
                                b.lock().unwrap().push(new);
                            }
                            waiting += new;
                        }
                        Err(_) => {
                            waiting -= 1;
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, overlapped, batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_pipelining_writes_the_next_batch_once_all_are_answered() {
    let (addr, overlapped, batches) = trickle_server().await;
    let mut p = plan(addr, Version::HTTP_11, true);
    p.connections = 1;
    p.pipeline = 8;
    p.stop = Stop::Requests(40);
    let r = run(p).await;
    assert_eq!(r.responses, 40, "{r:?}");
    // As wrk's pipeline script: no request goes out while one of the last
    // batch is unanswered, and every batch is a full 8 in one write.
    assert_eq!(overlapped.load(Ordering::SeqCst), 0);
    assert_eq!(*batches.lock().unwrap(), vec![8; 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_persists_when_the_server_agrees() {
    let server = serve(|_| {}, hello);
    let mut p = plan(server.local_addr(), Version::HTTP_10, true);
    p.stop = Stop::Requests(100);
    let r = run(p).await;
    assert_eq!(r.responses, 100, "{r:?}");
    assert_eq!(r.connections, 2, "the server answered keep-alive: {r:?}");
    stop(server).await;
}

/// An HTTP/1.0 server that ignores keep-alive: answers and closes.
async fn http10_closing_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_reconnects_when_the_server_does_not_agree() {
    let addr = http10_closing_server().await;
    let mut p = plan(addr, Version::HTTP_10, true);
    p.stop = Stop::Requests(100);
    let r = run(p).await;
    assert_eq!(r.responses, 100, "{r:?}");
    assert_eq!(r.error_total(), 0, "{r:?}");
    assert_eq!(r.connections, 100, "no keep-alive in the answer: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resetting_server_shows_up_as_reset_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut chunk = [0u8; 1024];
                let _ = s.read(&mut chunk).await;
                // SO_LINGER 0: close sends RST instead of FIN.
                let _ = keepwire::net::set_abortive_close(&s);
            });
        }
    });
    let mut p = plan(addr, Version::HTTP_11, true);
    p.stop = Stop::Requests(20);
    let r = run(p).await;
    assert_eq!(r.responses, 0);
    assert_eq!(errors(&r, FailureKind::Reset), 20, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_shows_up_as_connect_errors() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut p = plan(addr, Version::HTTP_11, true);
    p.stop = Stop::Requests(5);
    let r = run(p).await;
    assert_eq!(errors(&r, FailureKind::Connect), 5, "{r:?}");
    assert_eq!(r.connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_shows_up_as_timeouts_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut p = plan(addr, Version::HTTP_11, true);
    p.stop = Stop::Requests(2);
    p.timeout = Duration::from_millis(300);
    let r = run(p).await;
    assert_eq!(errors(&r, FailureKind::Timeout), 2, "{r:?}");
}

/// Answers every request at once except the `slow`-th, which waits 300 ms.
async fn stalling_server(slow: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if seen.fetch_add(1, Ordering::SeqCst) + 1 == slow {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_charges_a_stall_to_every_request_it_delayed() {
    let slow_over = 100_000_000; // 100 ms in ns
    // Closed loop: the stall delays one request; the ones after it are sent
    // late and look fast (coordinated omission).
    let mut p = plan(stalling_server(10).await, Version::HTTP_11, true);
    p.connections = 1;
    p.stop = Stop::Requests(60);
    let closed = run(p.clone()).await;
    let slow_closed = closed.latency.count_between(slow_over, u64::MAX);
    assert_eq!(slow_closed, 1, "{closed:?}");
    // Open loop at 100 req/s: the ~30 requests due during the 300 ms stall
    // are charged from when they should have gone out.
    p.addr = stalling_server(10).await;
    p.rate = Some(100.0);
    let open = run(p).await;
    assert_eq!(open.responses, 60);
    let slow_open = open.latency.count_between(slow_over, u64::MAX);
    assert!(slow_open >= 10, "{slow_open} slow of {open:?}");
    // The schedule holds: the 60th request is due 0.59 s after the start
    // the report counts from (one clock origin for schedule and report),
    // so however loaded the machine, the run takes at least that (less the
    // 2 ms a send may go ahead of its time, bench's Schedule::EARLY).
    assert!(open.elapsed >= Duration::from_millis(588), "{open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_keeps_the_asked_streams_in_flight_on_one_connection() {
    let (server, max) = serve_counting(|_| {}, "Hello, world!");
    let addr = server.local_addr();
    let mut p = plan(addr, Version::HTTP_11, true);
    p.connections = 1;
    p.pipeline = 8;
    p.stop = Stop::Requests(64);
    p.http2 = Some(bench::Http2Request {
        uri: format!("http://{addr}/").parse().unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    });
    let r = run(p).await;
    assert_eq!(r.responses, 64, "{r:?}");
    assert_eq!(r.error_total(), 0, "{r:?}");
    assert_eq!(r.connections, 1, "multiplexed on one connection: {r:?}");
    assert_eq!(
        max.load(Ordering::SeqCst),
        8,
        "8 streams at once at the server"
    );
    stop(server).await;
}
