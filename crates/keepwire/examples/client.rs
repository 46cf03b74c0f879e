//! The pooled client, built as reqwest users expect:
//! `cargo run -p keepwire --example client -- http://127.0.0.1:8080/ http://127.0.0.1:8080/a`.
//!
//! Prints, per URL, the status, the body's size, and the connection that
//! answered: the second request to an origin reuses the first's.
//! `HTTPS_PROXY`/`http_proxy`/`NO_PROXY` are honoured as curl reads them.

use std::time::Duration;

use keepwire::{Client, RequestMeta};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        return Err("usage: client URL [URL...]".into());
    }
    let client = Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30))
        .pool_max_per_host(2)
        .user_agent(concat!("keepwire-example/", env!("CARGO_PKG_VERSION")))
        .proxy_from_env()
        .build()?;
    for url in &urls {
        let resp = client.get(url).await?;
        let status = resp.status();
        let meta = *resp
            .extensions()
            .get::<RequestMeta>()
            .expect("set by the client");
        let body = resp.into_body().collect(64 << 20).await?;
        println!(
            "{url}: {status}, {} bytes, connection #{} {} -> {}{}",
            body.len(),
            meta.conn.id,
            meta.conn.local,
            meta.conn.peer,
            if meta.reused { " (reused)" } else { "" }
        );
    }
    Ok(())
}
