//! A real browser speaks RFC 8441 to keepwire's server: headless Chromium
//! loads a page over HTTP/2 (TLS, ALPN `h2`) from a server that advertises
//! SETTINGS_ENABLE_CONNECT_PROTOCOL, and its `new WebSocket('wss://…')`
//! then rides that connection as an extended CONNECT (`:protocol
//! websocket`) instead of opening an HTTP/1.1 one. The page writes the
//! echo into the DOM (`--dump-dom`); the server records which way each
//! handshake came.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, Version};
use keepwire::Body;
use keepwire::upgrade::{OnUpgrade, Upgraded, connect_protocol};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAGE: &str = r#"<!doctype html><html><body><p id="out">pending</p><script>
const out = document.getElementById('out');
const ws = new WebSocket('wss://' + location.host + '/ws');
ws.onopen = () => ws.send('hello over h2');
let done = false;
ws.onmessage = (e) => { out.textContent = 'echo: ' + e.data; done = true; };
ws.onerror = () => { out.textContent = 'websocket error'; done = true; };
// Headless Chromium's virtual time waits for fetches, not for WebSocket
// events, and it sometimes holds the socket's events back until a fetch
// ends: short fetches, one after another, until the echo is in.
(async () => { for (let i = 0; i < 40 && !done; i++) { await fetch('/tick'); } })();
</script></body></html>"#;

/// A self-signed server config offering h2 and http/1.1.
fn tls() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(server)
}

/// Echoes one small text frame (client frames are masked, RFC 6455 §5.3).
async fn echo_one_frame(mut up: Upgraded) {
    let mut head = [0u8; 2];
    if up.read_exact(&mut head).await.is_err() {
        return;
    }
    let len = (head[1] & 0x7f) as usize;
    if len >= 126 {
        return;
    }
    let mut rest = vec![0u8; 4 + len];
    if up.read_exact(&mut rest).await.is_err() {
        return;
    }
    let (mask, payload) = rest.split_at(4);
    let mut frame = vec![0x81, len as u8];
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let _ = up.write_all(&frame).await;
    // Hold the stream until the browser goes.
    let mut sink = [0u8; 256];
    while matches!(up.read(&mut sink).await, Ok(n) if n > 0) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_its_websocket_over_http2_with_extended_connect() {
    let Some(chromium) = require_tool("chromium", "chromium") else {
        return;
    };
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let server = serve(
        |c| c.tls = Some(tls()),
        move |req: Request<Body>| {
            let log = log.clone();
            async move {
                let how = format!(
                    "{:?} {} {}",
                    req.version(),
                    req.method(),
                    connect_protocol(&req).map_or("-", |p| p.as_str())
                );
                log.lock()
                    .unwrap()
                    .push(format!("{how} {}", req.uri().path()));
                if req.method() == Method::CONNECT && connect_protocol(&req).is_some() {
                    let on = req.extensions().get::<OnUpgrade>().cloned().unwrap();
                    tokio::spawn(async move {
                        if let Some(up) = on.wait().await {
                            echo_one_frame(up).await;
                        }
                    });
                    return Response::new(Body::empty());
                }
                if req.uri().path() == "/tick" {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    return Response::new(Body::from("tick"));
                }
                if req.uri().path() == "/" {
                    return Response::builder()
                        .header("content-type", "text/html; charset=utf-8")
                        .body(Body::from(PAGE))
                        .unwrap();
                }
                // An HTTP/1.1 WebSocket handshake would mean no RFC 8441.
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Body::empty())
                    .unwrap()
            }
        },
    );
    let url = format!("https://localhost:{}/", server.local_addr().port());
    let out = chromium_dom(&chromium, "chromium-rfc8441", url).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        out.stdout.contains("echo: hello over h2"),
        "DOM: {}\nserver saw: {seen:?}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(
        seen.iter()
            .any(|s| s == &format!("{:?} CONNECT websocket /ws", Version::HTTP_2)),
        "{seen:?}"
    );
    stop(server).await;
}
