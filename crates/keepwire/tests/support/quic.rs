//! HTTP/3 test peers: a certificate for `localhost` the server and the
//! clients share, an HTTP/3 client made of quinn + h3 directly (not
//! keepwire's: the server is checked against an independent stack), and
//! the aioquic client script's runner.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};

use super::{WAIT, within};

/// A certificate for `localhost` and the configs that serve and trust it.
pub struct Tls {
    /// The server's (ALPN h2 and http/1.1, as `keepwire serve` offers; the
    /// QUIC endpoint offers h3 itself).
    pub server: Arc<rustls::ServerConfig>,
    /// A QUIC client's (ALPN h3).
    pub quic: quinn::ClientConfig,
    /// A TCP client's (ALPN http/1.1).
    pub tcp: Arc<rustls::ClientConfig>,
    /// The certificate (DER).
    pub cert: Vec<u8>,
}

/// A fresh [`Tls`].
pub fn tls() -> Tls {
    let cert = super::Cert::localhost();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = |alpn: &[u8]| {
        let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(cert.roots())
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        c
    };
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client(b"h3")).unwrap();
    Tls {
        server: Arc::new(cert.server_tls(&[b"h2", b"http/1.1"])),
        quic: quinn::ClientConfig::new(Arc::new(crypto)),
        tcp: Arc::new(client(b"http/1.1")),
        cert: cert.der.to_vec(),
    }
}

/// Serves `handler` over TLS on 127.0.0.1:0 (TCP and, beside it, QUIC),
/// with the metrics' rendering.
pub fn serve_h3(
    tls: &Tls,
    configure: impl FnOnce(&mut keepwire::server::Config),
    handler: impl keepwire::server::Handler,
) -> (
    keepwire::server::ServerHandle,
    impl Fn() -> String + Send + Sync + 'static,
) {
    let server = keepwire::Server::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .configure(|c| {
            c.tls = Some(tls.server.clone());
            configure(c);
        })
        .bind()
        .expect("bind");
    let render = server.metrics_source();
    (server.spawn(handler), render)
}

/// The PEM encoding of a DER certificate (for aioquic and Chromium).
pub fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Runs the aioquic client script against `addr` with `args` (paths and
/// options), trusting `tls`'s certificate; its JSON lines.
pub async fn aioquic(tls: &Tls, addr: SocketAddr, args: &[&str]) -> Vec<serde_json::Value> {
    let dir = super::TempDir::new("aioquic");
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, pem_of(&tls.cert)).unwrap();
    let mut all = vec![
        aioquic_script().display().to_string(),
        addr.ip().to_string(),
        addr.port().to_string(),
        "--ca".into(),
        pem.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let python = std::path::Path::new("python3");
    let out = super::run_tool(python, &all, Duration::from_secs(30)).await;
    assert!(
        out.status.success(),
        "aioquic client failed: {}",
        out.stderr
    );
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A quinn endpoint for clients, on 127.0.0.1:0.
pub fn client_endpoint(client: &quinn::ClientConfig) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    endpoint.set_default_client_config(client.clone());
    endpoint
}

/// One HTTP/3 connection (quinn + h3), its driver on a task.
pub struct H3 {
    pub conn: quinn::Connection,
    pub send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
    /// The driver's account of how the connection ended.
    pub closed: tokio::sync::oneshot::Receiver<String>,
}

impl Drop for H3 {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A response: head and body read whole.
pub struct H3Resp {
    pub head: Response<()>,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl H3Resp {
    pub fn status(&self) -> u16 {
        self.head.status().as_u16()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl H3 {
    /// Connects (QUIC handshake + HTTP/3 SETTINGS), bounded.
    pub async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> H3 {
        let conn = within("QUIC handshake", WAIT, async {
            endpoint.connect(addr, "localhost").unwrap().await
        })
        .await
        .expect("QUIC handshake");
        let (mut driver, send) = within(
            "HTTP/3 setup",
            WAIT,
            h3::client::new(h3_quinn::Connection::new(conn.clone())),
        )
        .await
        .expect("HTTP/3 setup");
        let (tx, closed) = tokio::sync::oneshot::channel();
        let driver = tokio::spawn(async move {
            let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            let _ = tx.send(e.to_string());
        });
        H3 {
            conn,
            send,
            driver,
            closed,
        }
    }

    /// Sends `req` with `body` (none: the request ends with its head).
    pub async fn start(
        &mut self,
        req: Request<()>,
        body: Option<Bytes>,
    ) -> Result<h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>, String> {
        let mut stream = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(body) = body {
            stream.send_data(body).await.map_err(|e| e.to_string())?;
        }
        stream.finish().await.map_err(|e| e.to_string())?;
        Ok(stream)
    }

    /// One exchange, bounded; `Err` names what failed.
    pub async fn try_request(
        &mut self,
        req: Request<()>,
        body: Option<Bytes>,
    ) -> Result<H3Resp, String> {
        within("an HTTP/3 exchange", WAIT * 2, async {
            let stream = self.start(req, body).await?;
            read(stream).await
        })
        .await
    }

    /// `GET https://localhost{path}`.
    pub async fn get(&mut self, path: &str) -> H3Resp {
        self.try_request(h3_get(path), None)
            .await
            .expect("GET over HTTP/3")
    }
}

/// A GET request for `path`.
pub fn h3_get(path: &str) -> Request<()> {
    Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap()
}

/// Reads a response whole.
pub async fn read(
    mut stream: h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
) -> Result<H3Resp, String> {
    let head = stream.recv_response().await.map_err(|e| e.to_string())?;
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let trailers = stream.recv_trailers().await.map_err(|e| e.to_string())?;
    Ok(H3Resp {
        head,
        body: body.freeze(),
        trailers,
    })
}

/// The aioquic client script (tests/support/h3_client.py).
pub fn aioquic_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/h3_client.py")
}

/// Whether Python's aioquic is importable (scripts/test installs it).
pub fn have_aioquic() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import aioquic"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A bound for whole-connection waits in these tests.
pub const LONG: Duration = Duration::from_secs(20);
