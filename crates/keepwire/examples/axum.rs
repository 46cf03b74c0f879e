//! An axum `Router` served by keepwire's server (feature `tower`):
//! `cargo run -p keepwire --features tower --example axum -- 127.0.0.1:8080`.
//!
//! Handlers see the connection through keepwire's [`ConnInfo`] extension
//! (`/whoami`: the 4-tuple, and which request this is on the connection,
//! which shows keep-alive at work: `curl localhost:8080/whoami
//! localhost:8080/whoami`). With the `axum` feature, axum's own
//! `ConnectInfo<SocketAddr>` extractor works too.

use axum::routing::get;
use axum::{Extension, Router};
use keepwire::tower::TowerHandler;
use keepwire::{ConnInfo, Server};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("address: {e}"))
        })?;
    let app = Router::new()
        .route("/", get(|| async { "Hello from axum on keepwire\n" }))
        .route(
            "/whoami",
            get(|Extension(c): Extension<ConnInfo>| async move {
                format!(
                    "you are {} talking to {}, request {} on connection {}\n",
                    c.peer, c.local, c.request_index, c.id
                )
            }),
        )
        .route(
            "/echo/{word}",
            get(|axum::extract::Path(w): axum::extract::Path<String>| async move { w }),
        );
    let server = Server::builder().listen(addr).bind()?;
    eprintln!("axum on keepwire: http://{}/", server.local_addrs()[0]);
    server
        .run(TowerHandler(app), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
