//! What a quinn + h3 client sees of the server's stream handling, where a
//! network test cannot reach it (a stream over the limit: quinn's stream
//! credit keeps clients from opening one).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h3::error::{Code, StreamError};

use super::{Config, bind, quic, reject, server_config};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_rejected_stream_is_reset_with_h3_request_rejected() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    let endpoint = bind(
        "127.0.0.1:0".parse().unwrap(),
        server_config(&tls, &Config::default()).unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let quic = quic::Connection::new(conn);
        let mut h3c = h3::server::builder().build::<_, Bytes>(quic).await.unwrap();
        let resolver = h3c.accept().await.unwrap().unwrap();
        reject(resolver);
        // Held until the client has its answer and goes.
        let _ = h3c.accept().await;
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(c).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let answer = tokio::time::timeout(WAIT, async {
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .unwrap();
        let drive = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let req = http::Request::get("https://localhost/").body(()).unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        // Stopped by the server: finishing may fail, the answer says why.
        let _ = stream.finish().await;
        let answer = stream.recv_response().await;
        drive.abort();
        answer
    })
    .await
    .expect("the client's answer, in time");
    match answer {
        Err(StreamError::RemoteTerminate { code, .. }) => {
            assert_eq!(code, Code::H3_REQUEST_REJECTED);
        }
        other => panic!("not rejected: {other:?}"),
    }
    server.abort();
}
