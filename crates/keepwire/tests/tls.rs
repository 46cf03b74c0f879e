//! HTTP/1.1 over TLS on keepwire's server, at the byte level: the same
//! persistence and close rules as cleartext, and TLS's own close
//! (`close_notify`, RFC 8446 §6.1), without which a client cannot tell the
//! server's close from a truncation.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use keepwire::Body;
use keepwire::metrics::CloseReason;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A server certificate for `localhost` and a client that trusts it and
/// offers `alpn`.
fn tls_pair(alpn: &[&[u8]]) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (Arc::new(server), Arc::new(client))
}

async fn hello(_req: Request<Body>) -> Response<Body> {
    Response::new(Body::from("hello over tls"))
}

async fn connect(
    addr: std::net::SocketAddr,
    client: &Arc<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    within(
        "TLS handshake",
        WAIT,
        tokio_rustls::TlsConnector::from(client.clone()).connect(name, tcp),
    )
    .await
    .unwrap()
}

/// Reads until the server's close: `Ok` with everything if it ended with
/// `close_notify`, `Err` if the TCP connection ended without it.
async fn read_to_close(tls: &mut TlsStream<TcpStream>) -> Result<String, std::io::Error> {
    let mut all = Vec::new();
    within("the server's close", WAIT, tls.read_to_end(&mut all)).await?;
    Ok(String::from_utf8_lossy(&all).into_owned())
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_persists_and_closes_with_close_notify() {
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let (server_tls, client_tls) = tls_pair(alpn);
        let server = serve(|c| c.tls = Some(server_tls), hello);
        let mut tls = connect(server.local_addr(), &client_tls).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), alpn.first().copied());
        // Two requests on one connection (R5.3 persistence), then a last
        // one that says close.
        tls.write_all(get("/a").as_bytes()).await.unwrap();
        tls.write_all(get("/b").as_bytes()).await.unwrap();
        tls.write_all(b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = read_to_close(&mut tls)
            .await
            .expect("the close comes with close_notify");
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
        assert_eq!(text.matches("hello over tls").count(), 3, "{text}");
        assert!(text.contains("connection: close"), "{text}");
        stop(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_connection_is_closed_with_close_notify() {
    let (server_tls, client_tls) = tls_pair(&[b"http/1.1"]);
    let server = serve(
        |c| {
            c.tls = Some(server_tls);
            c.idle_timeout = Duration::from_millis(300);
        },
        hello,
    );
    let mut tls = connect(server.local_addr(), &client_tls).await;
    tls.write_all(get("/").as_bytes()).await.unwrap();
    let text = read_to_close(&mut tls)
        .await
        .expect("the idle close comes with close_notify");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    eventually("counted as an idle timeout", WAIT, || {
        server.metrics().closes(CloseReason::IdleTimeout) == 1
    })
    .await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_tls_without_close_notify_is_a_client_close() {
    let (server_tls, client_tls) = tls_pair(&[b"http/1.1"]);
    let server = serve(|c| c.tls = Some(server_tls), hello);
    let mut tls = connect(server.local_addr(), &client_tls).await;
    tls.write_all(get("/").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("a response", WAIT, tls.read(&mut buf))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    // Drop the TCP socket under TLS: a FIN, no close_notify.
    let (tcp, _) = tls.into_inner();
    drop(tcp);
    eventually("counted as the client's close", WAIT, || {
        server.metrics().closes(CloseReason::ClientClose) == 1
    })
    .await;
    assert_eq!(server.metrics().closes(CloseReason::Error), 0);
    stop(server).await;
}

/// A handler that waits on `PeerGone` learns that its TLS client left
/// while its answer was owed: by a bare FIN, and by `close_notify` (a TLS
/// half-close, which still reads the answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_learns_when_its_tls_client_leaves() {
    let (server_tls, client_tls) = tls_pair(&[b"http/1.1"]);
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = left.clone();
    let server = serve(
        |c| c.tls = Some(server_tls),
        move |req: Request<Body>| {
            let counted = counted.clone();
            let peer = keepwire::server::PeerGone::of(&req);
            async move {
                tokio::select! {
                    () = peer.wait() => {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                Response::new(Body::from(if peer.is_gone() { "gone" } else { "here" }))
            }
        },
    );
    let count = || left.load(std::sync::atomic::Ordering::SeqCst);
    let mut tls = connect(server.local_addr(), &client_tls).await;
    tls.write_all(get("/hold").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (tcp, _) = tls.into_inner();
    drop(tcp);
    eventually("a bare FIN noticed", Duration::from_secs(2), || {
        count() == 1
    })
    .await;
    let mut tls = connect(server.local_addr(), &client_tls).await;
    tls.write_all(get("/hold").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tls.shutdown().await.unwrap();
    let text = within("the early answer", Duration::from_secs(2), async {
        let mut all = Vec::new();
        let _ = tls.read_to_end(&mut all).await;
        String::from_utf8_lossy(&all).into_owned()
    })
    .await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("gone"),
        "{text}"
    );
    assert_eq!(count(), 2);
    stop(server).await;
}

/// A one-connection HTTPS origin: answers one request, then reports whether
/// the client ended the connection with `close_notify` (`Ok`) or just
/// closed TCP (`Err`).
async fn origin_reporting_close(
    tls: Arc<rustls::ServerConfig>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await?;
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.map(|_| ())
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ends_idle_tls_connections_with_close_notify() {
    let (server_tls, client_tls) = tls_pair(&[b"http/1.1"]);
    // Retired by the pool's idle timeout, before the server closes.
    let (addr, origin) = origin_reporting_close(server_tls.clone()).await;
    let mut config = keepwire::ClientConfig::default();
    config.tls = Some(client_tls.clone());
    config.pool.idle_timeout = Duration::from_millis(50);
    let client = keepwire::Client::new(config);
    let url = format!("https://localhost:{}/", addr.port());
    let resp = within("a response", WAIT, client.get(&url)).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    drop(resp);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The next request finds it expired, retires it, and opens another
    // (to nobody: the origin takes one connection; the error is expected).
    let _ = within("a second attempt", WAIT, client.get(&url)).await;
    let ended = within("the origin", WAIT, origin).await.unwrap();
    assert!(ended.is_ok(), "retired without close_notify: {ended:?}");

    // Dropped with the client.
    let (addr, origin) = origin_reporting_close(server_tls).await;
    let mut config = keepwire::ClientConfig::default();
    config.tls = Some(client_tls);
    let client = keepwire::Client::new(config);
    let url = format!("https://localhost:{}/", addr.port());
    let resp = within("a response", WAIT, client.get(&url)).await.unwrap();
    drop(resp);
    drop(client);
    let ended = within("the origin", WAIT, origin).await.unwrap();
    assert!(ended.is_ok(), "dropped without close_notify: {ended:?}");
}
