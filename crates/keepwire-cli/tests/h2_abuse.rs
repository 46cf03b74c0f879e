//! `keepwire serve` with default flags under the HTTP/2 abuse cases of issue
//! 14, measured from outside: the server's resident memory may grow by less
//! than 4 MiB per abusive connection. (What each case does to handlers,
//! streams and timers is tested in the library's tests/h2_abuse.rs.)

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Request;
use tokio::net::TcpStream;

/// Abusive connections per case.
const CONNS: usize = 4;
/// The target: growth per abusive connection.
const PER_CONN: u64 = 4 * 1024 * 1024;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

async fn client(
    addr: std::net::SocketAddr,
    window: Option<u32>,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut builder = h2::client::Builder::new();
    if let Some(w) = window {
        builder.initial_window_size(w);
    }
    let (send, conn) = builder.handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn check_growth(case: &str, before: u64, after: u64) {
    let grown = after.saturating_sub(before);
    eprintln!(
        "{case}: RSS {} -> {} KiB ({} KiB per connection)",
        before / 1024,
        after / 1024,
        grown / 1024 / CONNS as u64
    );
    assert!(
        grown < PER_CONN * CONNS as u64,
        "{case}: RSS grew by {grown} bytes over {CONNS} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_abuse_costs_less_than_4_mib_per_connection() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("big"), vec![b'b'; 256 * 1024]).unwrap();
    let root_arg = root.path().to_str().unwrap().to_string();
    let server = start(&["serve", "--listen", "127.0.0.1:0", "--root", &root_arg]);
    let addr = server.addr;
    let pid = server.child.id();

    // Warm up: the runtime's threads and buffers exist before measuring.
    {
        let (send, _conn) = client(addr, None).await;
        let mut send = send.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}/big")).body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let mut body = bounded("warm-up", resp).await.unwrap().into_body();
        while let Some(chunk) = bounded("warm-up body", body.data()).await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
    }

    // 1. Zero window: every stream asks for a 256 KiB file that can never
    //    be sent. All answers' heads arrive (the handlers ran) and the
    //    bodies wait for a window that never opens.
    let before = rss_bytes(pid);
    let mut held = Vec::new();
    for _ in 0..CONNS {
        let (mut send, conn) = client(addr, Some(0)).await;
        let mut pending = Vec::new();
        for i in 0..128 {
            send = bounded("a stream slot", send.ready()).await.unwrap();
            let req = Request::get(format!("http://{addr}/big?{i}"))
                .body(())
                .unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            pending.push(resp);
        }
        let mut bodies = Vec::new();
        for resp in pending {
            bodies.push(bounded("a head", resp).await.unwrap().into_body());
        }
        held.push((send, conn, bodies));
    }
    check_growth("zero window", before, rss_bytes(pid));
    drop(held);

    // 2. Oversized bodies: 64 MiB streamed without a length on each
    //    connection (nothing of it may be buffered; the server answers
    //    and resets the stream).
    let before = rss_bytes(pid);
    let mut held = Vec::new();
    for _ in 0..CONNS {
        let (send, conn) = client(addr, None).await;
        let mut send = send.ready().await.unwrap();
        let req = Request::post(format!("http://{addr}/big"))
            .body(())
            .unwrap();
        let (resp, mut body) = send.send_request(req, false).unwrap();
        let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
        let deadline = Instant::now() + Duration::from_secs(5);
        for _ in 0..1024 {
            body.reserve_capacity(chunk.len());
            let granted = tokio::time::timeout(
                Duration::from_millis(500),
                std::future::poll_fn(|cx| body.poll_capacity(cx)),
            )
            .await;
            match granted {
                Ok(Some(Ok(n))) if n > 0 => {
                    if body.send_data(chunk.slice(..n), false).is_err() {
                        break;
                    }
                }
                _ => break,
            }
            if Instant::now() > deadline {
                break;
            }
        }
        // 405 from the file handler (which never reads a body) or 413.
        let status = bounded("the answer", resp).await.map(|r| r.status());
        assert!(
            status.as_ref().is_ok_and(|s| s.is_client_error()),
            "{status:?}"
        );
        held.push((send, conn, body));
    }
    check_growth("oversized body", before, rss_bytes(pid));
    drop(held);

    // 3. Rapid reset: 1,000 streams opened and reset at once per
    //    connection; the server may end the connection (GOAWAY).
    let before = rss_bytes(pid);
    let mut held = Vec::new();
    for _ in 0..CONNS {
        let (mut send, conn) = client(addr, None).await;
        for i in 0..1000 {
            send = match bounded("a stream slot", send.clone().ready()).await {
                Ok(s) => s,
                Err(_) => break,
            };
            let req = Request::get(format!("http://{addr}/big?r{i}"))
                .body(())
                .unwrap();
            match send.send_request(req, true) {
                Ok((_resp, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(_) => break,
            }
        }
        held.push((send, conn));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    check_growth("rapid reset", before, rss_bytes(pid));
    drop(held);
}
