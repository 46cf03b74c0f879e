//! The pooled client against nginx as the origin (a real peer).

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use keepwire::{Client, RequestMeta};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_gets_to_nginx_use_at_most_six_connections() {
    let Some(bin) = require_tool("nginx", "nginx") else {
        return;
    };
    let nginx = Nginx::start(&bin).await;
    let client = Client::default();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = client.clone();
        let (name, want) = nginx.files[i % nginx.files.len()].clone();
        let url = format!("http://{}/{name}", nginx.addr);
        tasks.push(tokio::spawn(async move {
            let resp = client.get(&url).await.unwrap();
            assert_eq!(resp.status(), 200);
            let meta = *resp.extensions().get::<RequestMeta>().unwrap();
            let body = resp.into_body().collect(1 << 20).await.unwrap();
            assert!(body[..] == want[..], "wrong body for {name}");
            meta
        }));
    }
    let mut conns = HashSet::new();
    for t in tasks {
        let meta = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .unwrap()
            .unwrap();
        conns.insert(meta.conn.id);
    }
    let opened = client.metrics().connections_opened.load(Relaxed);
    assert!(opened <= 6, "client opened {opened} connections");
    assert_eq!(conns.len() as u64, opened);
    // Count at the server too: distinct connection serials in nginx's log.
    let log = nginx.access_log();
    let at_server: HashSet<u64> = log.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(log.len(), 100, "nginx logged every request");
    assert!(
        at_server.len() <= 6,
        "nginx saw {} connections",
        at_server.len()
    );
}
