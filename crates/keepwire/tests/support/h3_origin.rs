//! A test-only HTTP/3 origin (quinn + h3) with a self-signed certificate
//! for `localhost`, whose paths misbehave on purpose, so the client's
//! HTTP/3 path can be tested before (and besides) keepwire's own server:
//!
//! - `/hello`: 200 `hello h3`;
//! - `/echo`: the request body back;
//! - `/big/N`: N bytes, with their `content-length` (HEAD: none of them);
//! - `/bighead`: a 64 KiB response header;
//! - `/stall`: the head and 3 bytes, then nothing;
//! - `/silent`: nothing at all;
//! - `/reject-once`: the first such request is reset with
//!   `H3_REQUEST_REJECTED` (unprocessed), later ones get 200;
//! - `/noread`: never reads the request body, never answers (its flow
//!   control credit is never granted);
//! - `/reset-mid`: the head and 3 bytes, then the stream is reset;
//! - `/flood`: 4 MiB in 64 KiB writes, counted in `flooded` as each is
//!   taken (quinn takes no more than the client's flow control allows);
//! - `/short`, `/long`: `content-length: 10` with 3 bytes, and with 12;
//! - `/too-early-once`: 425 Too Early the first time, then 200;
//!   `/too-early`: 425 always.
//!
//! It accepts 0-RTT (the client's early data) and counts connections and
//! requests. The task ends when the origin is dropped.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bytes::{Buf, Bytes};

pub use super::support::Cert;

/// The running origin.
pub struct H3Origin {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    /// Request streams that ended in a reset rather than a FIN (in the
    /// head or the body).
    pub cut_off: Arc<AtomicU64>,
    /// Bytes of `/flood` bodies quinn took.
    pub flooded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    endpoint: quinn::Endpoint,
}

impl Drop for H3Origin {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"bye");
        self.task.abort();
    }
}

impl H3Origin {
    /// Listens on 127.0.0.1, on `port` (0: any).
    pub fn start(cert: &Cert, port: u16) -> H3Origin {
        let mut tls = cert.server_tls(&[b"h3"]);
        tls.max_early_data_size = u32::MAX;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint =
            quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let cut_off = Arc::new(AtomicU64::new(0));
        let flooded = Arc::new(AtomicU64::new(0));
        let rejected = Arc::new(AtomicBool::new(false));
        let (ep, conns, reqs) = (endpoint.clone(), connections.clone(), requests.clone());
        let cut = cut_off.clone();
        let flood = flooded.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let (conns, reqs, rejected) = (conns.clone(), reqs.clone(), rejected.clone());
                let (cut, flood) = (cut.clone(), flood.clone());
                tokio::spawn(async move {
                    let Ok(connecting) = incoming.accept() else {
                        return;
                    };
                    // Takes the client's 0-RTT data.
                    let Ok((quic, _)) = connecting.into_0rtt() else {
                        return;
                    };
                    conns.fetch_add(1, Relaxed);
                    let Ok(mut h3) = h3::server::builder()
                        .build::<_, Bytes>(h3_quinn::Connection::new(quic))
                        .await
                    else {
                        return;
                    };
                    while let Ok(Some(resolver)) = h3.accept().await {
                        reqs.fetch_add(1, Relaxed);
                        let (rejected, cut) = (rejected.clone(), cut.clone());
                        let flood = flood.clone();
                        tokio::spawn(async move {
                            match resolver.resolve_request().await {
                                Ok((req, stream)) => {
                                    let counters = Counters {
                                        rejected: &rejected,
                                        cut_off: &cut,
                                        flooded: &flood,
                                    };
                                    let _ = respond(req, stream, counters).await;
                                }
                                // Reset before its head was whole.
                                Err(_) => {
                                    cut.fetch_add(1, Relaxed);
                                }
                            }
                        });
                    }
                });
            }
        });
        H3Origin {
            addr,
            connections,
            requests,
            cut_off,
            flooded,
            task,
            endpoint,
        }
    }
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

struct Counters<'a> {
    rejected: &'a AtomicBool,
    cut_off: &'a AtomicU64,
    flooded: &'a AtomicU64,
}

async fn respond(
    req: http::Request<()>,
    mut stream: Stream,
    counters: Counters<'_>,
) -> Result<(), h3::error::StreamError> {
    let Counters {
        rejected,
        cut_off,
        flooded,
    } = counters;
    let path = req.uri().path().to_string();
    if path == "/noread" {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        return Ok(());
    }
    let mut body = Vec::new();
    loop {
        match stream.recv_data().await {
            Ok(Some(mut chunk)) => {
                let n = chunk.remaining();
                body.extend_from_slice(&chunk.copy_to_bytes(n));
            }
            Ok(None) => break,
            Err(e) => {
                cut_off.fetch_add(1, Relaxed);
                return Err(e);
            }
        }
    }
    let ok = |b: Bytes| (http::Response::builder().status(200).body(()).unwrap(), b);
    let (resp, data) = match path.as_str() {
        "/hello" => ok(Bytes::from_static(b"hello h3")),
        "/echo" => ok(Bytes::from(body)),
        "/bighead" => {
            let big = "x".repeat(64 * 1024);
            let r = http::Response::builder()
                .header("x-big", big)
                .body(())
                .unwrap();
            (r, Bytes::new())
        }
        "/silent" => {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            return Ok(());
        }
        "/stall" => {
            stream.send_response(ok(Bytes::new()).0).await?;
            stream.send_data(Bytes::from_static(b"abc")).await?;
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            return Ok(());
        }
        "/reset-mid" => {
            stream.send_response(ok(Bytes::new()).0).await?;
            stream.send_data(Bytes::from_static(b"abc")).await?;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
            return Ok(());
        }
        "/flood" => {
            stream.send_response(ok(Bytes::new()).0).await?;
            let chunk = Bytes::from(vec![b'f'; 64 * 1024]);
            for _ in 0..64 {
                stream.send_data(chunk.clone()).await?;
                flooded.fetch_add(chunk.len() as u64, Relaxed);
            }
            return stream.finish().await;
        }
        "/short" | "/long" => {
            let n = if path == "/short" { 3 } else { 12 };
            let r = http::Response::builder()
                .header("content-length", "10")
                .body(())
                .unwrap();
            (r, Bytes::from(vec![b'x'; n]))
        }
        "/too-early-once" if !rejected.swap(true, Relaxed) => (
            http::Response::builder().status(425).body(()).unwrap(),
            Bytes::new(),
        ),
        "/too-early" => (
            http::Response::builder().status(425).body(()).unwrap(),
            Bytes::new(),
        ),
        "/reject-once" if !rejected.swap(true, Relaxed) => {
            stream.stop_stream(h3::error::Code::H3_REQUEST_REJECTED);
            stream.stop_sending(h3::error::Code::H3_REQUEST_REJECTED);
            return Ok(());
        }
        "/reject-once" | "/too-early-once" => ok(Bytes::from_static(b"second")),
        p if p.starts_with("/big/") => {
            let n: usize = p[5..].parse().unwrap_or(0);
            let r = http::Response::builder()
                .header("content-length", n)
                .body(())
                .unwrap();
            (r, Bytes::from(vec![b'b'; n]))
        }
        _ => (
            http::Response::builder().status(404).body(()).unwrap(),
            Bytes::new(),
        ),
    };
    stream.send_response(resp).await?;
    // A HEAD answer has the GET's head and no body.
    if !data.is_empty() && req.method() != http::Method::HEAD {
        stream.send_data(data).await?;
    }
    stream.finish().await
}
