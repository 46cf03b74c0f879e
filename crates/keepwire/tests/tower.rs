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

/// The client as a `tower::Service`, under tower's own middleware.
#[tokio::test]
async fn the_client_is_a_tower_service_under_middleware() {
    use tower::{Service, ServiceBuilder, ServiceExt};
    let app = Router::new().route("/", post(|body: String| async move { body.to_uppercase() }));
    let server = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap()
        .spawn(TowerHandler(app));
    let url = format!("http://{}/", server.local_addr());
    let mut svc = ServiceBuilder::new()
        .concurrency_limit(2)
        .timeout(Duration::from_secs(5))
        .service(keepwire::Client::default());
    // Any http_body::Body is accepted as the request body.
    type Full = http_body_util::Full<bytes::Bytes>;
    let req = http::Request::post(&url)
        .body(Full::new(bytes::Bytes::from_static(b"tower")))
        .unwrap();
    let resp = ServiceExt::<http::Request<Full>>::ready(&mut svc)
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap();
    let body = resp.into_body().collect(1024).await.unwrap();
    assert_eq!(&body[..], b"TOWER");
    let req = http::Request::post(&url)
        .body(keepwire::Body::from("again"))
        .unwrap();
    let resp = keepwire::Client::default().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(svc);
    server.shutdown().await.unwrap();
}

/// axum's `ConnectInfo<SocketAddr>` extractor works under keepwire
/// (feature `axum`): it is the client's address, as `ConnInfo` has it.
#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_connect_info_is_the_peer_address() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    let app = Router::new().route(
        "/",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let server = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap()
        .spawn(TowerHandler(app));
    let h1 = keepwire::Client::default();
    let h2 = keepwire::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for client in [h1, h2] {
        let resp = client
            .get(&format!("http://{}/", server.local_addr()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let local = resp
            .extensions()
            .get::<keepwire::RequestMeta>()
            .unwrap()
            .conn
            .local;
        let body = resp.into_body().collect(1024).await.unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), local.to_string());
    }
    server.shutdown().await.unwrap();
}
