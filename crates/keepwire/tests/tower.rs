//! An axum `Router` behind keepwire's server (feature `tower`).
#![cfg(feature = "tower")]

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use keepwire::Server;
use keepwire::tower::TowerHandler;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn axum_router_is_served_with_keepwire_persistence() {
    let app = Router::new().route("/", get(|| async { "root" })).route(
        "/upper",
        post(|body: String| async move { body.to_uppercase() }),
    );
    let server = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap()
        .spawn(TowerHandler(app));
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPOST /upper HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nwireGET /missing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("server answers and closes")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let statuses: Vec<_> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "404"], "{text}");
    assert!(text.contains("\r\n\r\nroot"), "{text}");
    assert!(text.contains("\r\n\r\nWIRE"), "{text}");
    assert_eq!(
        server
            .metrics()
            .connections_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(s);
    server.shutdown().await.unwrap();
}
