//! HTTP/3 on keepwire's server, against independent stacks: quinn + h3
//! used directly as the client (not keepwire's), and aioquic (Python) as
//! an interop peer. The handler API is the one HTTP/1 and HTTP/2 reach.

#[path = "support/quic.rs"]
mod quic;
mod support;

use bytes::Bytes;
use http::{Request, Response};
use keepwire::Body;
use keepwire::server::ConnInfo;
use quic::*;
use support::*;

/// Answers with what the request said about itself.
async fn echo(req: Request<Body>) -> Response<Body> {
    let version = format!("{:?}", req.version());
    let info = req.extensions().get::<ConnInfo>().copied();
    let line = format!(
        "{} {} {version} req={}\n",
        req.method(),
        req.uri().path(),
        info.map_or(0, |i| i.request_index)
    );
    let body = req.into_body().collect(1 << 20).await.unwrap_or_default();
    Response::new(Body::from(format!("{line}{}", body.len())))
}

#[tokio::test]
async fn the_quic_endpoint_is_on_the_tcp_port() {
    let tls = tls();
    let (server, _m) = serve_h3(&tls, |_| {}, echo);
    assert_eq!(server.quic_addrs().len(), 1);
    assert_eq!(server.quic_addrs()[0], server.local_addr());
    stop(server).await;
    // Without TLS there is no QUIC (it needs TLS 1.3).
    let plain = serve(|_| {}, echo);
    assert!(plain.quic_addrs().is_empty());
    stop(plain).await;
    // And none when it is turned off.
    let (off, _m) = serve_h3(&tls, |c| c.http3 = false, echo);
    assert!(off.quic_addrs().is_empty());
    stop(off).await;
}

#[tokio::test]
async fn a_get_over_http3_reaches_the_same_handler() {
    let tls = tls();
    let (server, metrics) = serve_h3(&tls, |_| {}, echo);
    let endpoint = client_endpoint(&tls.quic);
    let mut h3 = H3::connect(&endpoint, server.quic_addrs()[0]).await;
    for i in 1..=3u64 {
        let resp = h3.get(&format!("/hello/{i}")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text(), format!("GET /hello/{i} HTTP/3.0 req={i}\n0"));
        assert!(resp.head.headers().contains_key("date"));
        assert_eq!(
            resp.head.headers()["content-length"],
            resp.body.len().to_string()
        );
    }
    let req = Request::post("https://localhost/up").body(()).unwrap();
    let resp = h3
        .try_request(req, Some(Bytes::from(vec![7u8; 100_000])))
        .await
        .unwrap();
    assert_eq!(resp.text(), "POST /up HTTP/3.0 req=4\n100000");
    let text = metrics();
    assert_eq!(
        metric(&text, "requests_by_protocol_total{protocol=\"h3\"}"),
        4
    );
    assert_eq!(
        metric(&text, "requests_by_protocol_total{protocol=\"h2\"}"),
        0
    );
    assert_eq!(
        metric(
            &text,
            "connections_accepted_by_transport_total{transport=\"quic\"}"
        ),
        1
    );
    assert_eq!(metric(&text, "connections_open"), 1);
    drop(h3);
    stop(server).await;
    assert_eq!(metric(&metrics(), "connections_open"), 0);
}

#[tokio::test]
async fn aioquic_gets_from_keepwire_over_http3() {
    if !have_aioquic() {
        eprintln!("skipped: python3 aioquic missing (scripts/test installs it)");
        return;
    }
    let tls = tls();
    let (server, metrics) = serve_h3(&tls, |_| {}, echo);
    let paths: Vec<String> = (1..=5).map(|i| format!("/a/{i}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let lines = aioquic(&tls, server.quic_addrs()[0], &paths).await;
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["status"], 200, "{l}");
        let text = l["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("GET /a/{} HTTP/3.0", i + 1)),
            "{text}"
        );
    }
    assert_eq!(
        metric(&metrics(), "requests_by_protocol_total{protocol=\"h3\"}"),
        5
    );
    stop(server).await;
}
