//! Tunnels are still connections (R9.5): after a 101 the connection keeps
//! its place under `max_connections` and the per-IP cap until the tunnel
//! ends, and shows in the `tunnels_open` gauge.

mod support;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use keepwire::Body;
use keepwire::upgrade::OnUpgrade;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers 101 and echoes the upgraded stream until the client closes.
async fn echo_upgrade(req: Request<Body>) -> Response<Body> {
    if let Some(on) = req.extensions().get::<OnUpgrade>().cloned() {
        tokio::spawn(async move {
            if let Some(mut up) = on.wait().await {
                let mut buf = [0u8; 1024];
                loop {
                    match up.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if up.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Body::empty())
            .unwrap();
    }
    Response::new(Body::from("plain"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_keeps_its_place_under_the_per_ip_cap() {
    let (server, metrics) = serve_with_metrics(
        |c| {
            c.max_connections_per_ip = 1;
            c.shutdown_timeout = Duration::from_millis(500);
        },
        echo_upgrade,
    );
    let addr = server.local_addr();
    let mut tunnel = RawClient::connect(addr).await;
    tunnel
        .send("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await;
    let resp = tunnel.head_response().await;
    assert_eq!(resp.status, 101);
    tunnel.send("ping").await;
    assert_eq!(tunnel.read_exact_raw(4).await, b"ping");
    eventually("the tunnel is counted", WAIT, || {
        metric(&metrics(), "tunnels_open") == 1
    })
    .await;
    assert_eq!(metric(&metrics(), "connections_open"), 1);
    // A second connection from the same IP is over the cap while the
    // tunnel lives.
    let mut second = RawClient::connect(addr).await;
    second.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(second.response().await.status, 503);
    // The tunnel ends: its place is given back.
    drop(tunnel);
    eventually("the tunnel's slot is given back", WAIT, || {
        let m = metrics();
        metric(&m, "tunnels_open") == 0 && metric(&m, "connections_open") == 0
    })
    .await;
    let mut third = RawClient::connect(addr).await;
    third.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(third.response().await.status, 200);
    stop(server).await;
}
