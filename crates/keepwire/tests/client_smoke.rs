//! The pooled client against keepwire's own server.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::{Request, Response};
use keepwire::{Body, Client, ClientConfig, RequestMeta, Server};

fn hello_server(cfg: impl FnOnce(&mut keepwire::server::Config)) -> keepwire::server::ServerHandle {
    Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .configure(cfg)
        .bind()
        .unwrap()
        .spawn(|req: Request<Body>| async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Response::new(Body::from(format!("path={}", req.uri().path())))
        })
}

#[tokio::test]
async fn a_hundred_concurrent_gets_use_at_most_six_connections() {
    let server = hello_server(|_| {});
    let client = Client::default();
    let url = format!("http://{}/slow", server.local_addr());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client.get(&url).await.unwrap();
            let meta = *resp.extensions().get::<RequestMeta>().unwrap();
            let body = resp.into_body().collect(1 << 20).await.unwrap();
            assert_eq!(&body[..], b"path=/slow");
            meta
        }));
    }
    let mut reused = 0;
    for t in tasks {
        reused += u64::from(
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap()
                .reused,
        );
    }
    let accepted = server.metrics().connections_accepted.load(Relaxed);
    assert!(accepted <= 6, "server saw {accepted} connections");
    assert_eq!(client.metrics().connections_opened.load(Relaxed), accepted);
    assert_eq!(reused, 100 - accepted);
}

#[tokio::test]
async fn keep_alive_timeout_hint_retires_the_connection_before_the_server_closes_it() {
    // The server closes idle connections after 2 s and says so (timeout=2);
    // the pool keeps them at most 2 s - 1 s margin = 1 s.
    let server = hello_server(|c| c.idle_timeout = Duration::from_secs(2));
    let client = Client::new(ClientConfig::default());
    let url = format!("http://{}/", server.local_addr());
    let first = client.get(&url).await.unwrap();
    assert!(!first.extensions().get::<RequestMeta>().unwrap().reused);
    let again = client.get(&url).await.unwrap();
    assert!(
        again.extensions().get::<RequestMeta>().unwrap().reused,
        "reused within the hint"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = client.get(&url).await.unwrap();
    let meta = late.extensions().get::<RequestMeta>().unwrap();
    assert!(
        !meta.reused,
        "retired after timeout - margin, before the server's close"
    );
    assert_eq!(meta.retries, 0);
    assert_eq!(client.metrics().retired_idle.load(Relaxed), 1);
    assert_eq!(client.metrics().stale_idle.load(Relaxed), 0);
}

#[tokio::test]
async fn pipelined_responses_match_their_requests_in_order() {
    let server = hello_server(|c| c.pipeline_depth = 8);
    let client = Client::default();
    let reqs: Vec<_> = (0..20)
        .map(|i| {
            Request::get(format!("http://{}/obj/{i}", server.local_addr()))
                .body(Body::empty())
                .unwrap()
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(10), client.pipeline(reqs, 8))
        .await
        .unwrap();
    assert_eq!(results.len(), 20);
    for (i, r) in results.into_iter().enumerate() {
        let (resp, meta) = r.unwrap();
        assert_eq!(resp.body(), format!("path=/obj/{i}").as_bytes());
        assert_eq!(meta.conn_request_index, i as u64);
    }
    assert_eq!(server.metrics().connections_accepted.load(Relaxed), 1);
}

#[tokio::test]
async fn stale_connections_never_surface_for_gets_and_never_duplicate_posts() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    // The server closes idle connections after 1 s and does NOT say so, so
    // the client meets the close (R8.1) and must apply the retry rule.
    let posts = Arc::new(AtomicU64::new(0));
    let counter = posts.clone();
    let server = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .configure(|c| {
            c.idle_timeout = Duration::from_secs(1);
            c.advertise_keep_alive = false;
            c.keep_alive_min = Duration::ZERO;
        })
        .bind()
        .unwrap()
        .spawn(move |req: Request<Body>| {
            if req.method() == http::Method::POST {
                counter.fetch_add(1, Relaxed);
            }
            async move { Response::new(Body::from("ok")) }
        });
    let client = Client::default();
    let url = format!("http://{}/", server.local_addr());
    let mut sent_posts = 0;
    for round in 0..3 {
        let r = client
            .get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET round {round}: {e}"));
        assert_eq!(r.status(), 200);
        // Wait until the server has closed the idle connection.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let post = Request::post(&url).body(Body::from("x")).unwrap();
        match client.request(post).await {
            Ok(r) => {
                sent_posts += 1;
                assert_eq!(r.status(), 200);
            }
            Err(e) => {
                panic!("POST on a closed idle connection must go out on a fresh one (probe): {e}")
            }
        }
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    assert_eq!(
        posts.load(Relaxed),
        sent_posts,
        "no POST was delivered twice"
    );
    assert!(
        client.metrics().stale_idle.load(Relaxed) >= 1,
        "the probe saw the server's closes"
    );
}

#[tokio::test]
async fn without_a_hint_the_pool_learns_the_servers_idle_timeout_from_its_closes() {
    // The server closes idle connections after 1 s and does not advertise it.
    let server = hello_server(|c| {
        c.idle_timeout = Duration::from_secs(1);
        c.advertise_keep_alive = false;
        c.keep_alive_min = Duration::ZERO;
    });
    let client = Client::default();
    let url = format!("http://{}/", server.local_addr());
    let get = |c: &Client| {
        let c = c.clone();
        let url = url.clone();
        async move {
            *c.get(&url)
                .await
                .unwrap()
                .extensions()
                .get::<RequestMeta>()
                .unwrap()
        }
    };
    get(&client).await;
    // 1.3 s idle: the server closed first; the probe sees it (stale) and the
    // pool learns "closed after at most 1.3 s" and keeps 3/4 of that.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(!get(&client).await.reused);
    assert_eq!(client.metrics().stale_idle.load(Relaxed), 1);
    let learned = client.learned_idle_timeout(&url.parse().unwrap()).unwrap();
    assert!(
        learned >= Duration::from_millis(1300) && learned < Duration::from_millis(1600),
        "{learned:?}"
    );
    // 1.1 s idle: past the learned limit (~0.98 s), so the pool retires the
    // connection itself; the server's close is never met again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!get(&client).await.reused);
    assert_eq!(
        client.metrics().stale_idle.load(Relaxed),
        1,
        "no second stale connection"
    );
    assert_eq!(client.metrics().retired_idle.load(Relaxed), 1);
    // 0.6 s idle: within both, so the connection is reused.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(get(&client).await.reused);
}
