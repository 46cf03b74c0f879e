//! TEMPORARY (issue 19): HTTP/3 for the lab driven with `quinn` and `h3`
//! directly, until keepwire's own HTTP/3 server and client are on main;
//! then `Lab` serves HTTP/3 from its HTTPS origin (`server::Config::http3`)
//! and `quic::Proto::H3` is a keepwire `Client` with `Http3Mode::Only`, and
//! this file goes.
//!
//! The server answers GETs on UDP beside the lab's HTTPS origin (the same
//! port, the same certificate, the same handler); the client opens one
//! QUIC connection and sends every request on it as its own stream, with
//! 0-RTT early data when asked and a session ticket is at hand.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body_util::BodyExt;
use keepwire::Body;

/// Serves `handle` over HTTP/3 at `addr` (UDP) with the TLS settings
/// `tls` (ALPN switched to `h3`, 0-RTT accepted) and the congestion
/// control TCP runs beside it (`cc`, the kernel's name: bbr, reno, else
/// quinn's default cubic), so the two transports differ in ordering, not
/// in how they react to loss. Runs on the calling side's runtime; returns
/// the bound address.
pub(super) fn serve<F, Fut>(
    addr: SocketAddr,
    tls: &rustls::ServerConfig,
    cc: Option<&str>,
    handle: F,
) -> std::io::Result<SocketAddr>
where
    F: Fn(Request<Body>) -> Fut + Clone + 'static,
    Fut: Future<Output = Response<Body>> + 'static,
{
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = u32::MAX;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(std::io::Error::other)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    match cc {
        Some("bbr") => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
        Some("reno") => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default())),
        _ => &mut transport,
    };
    config.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::server(config, addr)?;
    let bound = endpoint.local_addr()?;
    tokio::task::spawn_local(async move {
        while let Some(incoming) = endpoint.accept().await {
            let handle = handle.clone();
            tokio::task::spawn_local(async move {
                let Ok(connecting) = incoming.accept() else {
                    return;
                };
                // Take 0-RTT requests before the handshake completes.
                let conn = match connecting.into_0rtt() {
                    Ok((conn, _)) => conn,
                    Err(connecting) => match connecting.await {
                        Ok(conn) => conn,
                        Err(_) => return,
                    },
                };
                let Ok(mut h3) = h3::server::builder()
                    .build::<_, Bytes>(h3_quinn::Connection::new(conn))
                    .await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    let handle = handle.clone();
                    tokio::task::spawn_local(async move {
                        let Ok((req, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        let (parts, ()) = req.into_parts();
                        let resp = handle(Request::from_parts(parts, Body::empty())).await;
                        let (head, mut body) = resp.into_parts();
                        if stream
                            .send_response(Response::from_parts(head, ()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data()
                                && stream.send_data(data).await.is_err()
                            {
                                return;
                            }
                        }
                        let _ = stream.finish().await;
                    });
                }
            });
        }
    });
    Ok(bound)
}

/// One HTTP/3 connection to the lab's origin.
pub(super) struct Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    /// Whether the server accepted 0-RTT data: `None` while unknown or
    /// when none was sent.
    early_data: Rc<Cell<Option<bool>>>,
}

impl Client {
    /// Connects to `addr` with `tls` (its session cache shared with every
    /// client made from the same settings); `early_data`: send the first
    /// requests in 0-RTT when a session ticket is at hand.
    pub(super) async fn connect(
        addr: SocketAddr,
        tls: &rustls::ClientConfig,
        early_data: bool,
    ) -> Result<Client, String> {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        tls.enable_early_data = early_data;
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut endpoint =
            quinn::Endpoint::client(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0))
                .map_err(|e| e.to_string())?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connecting = endpoint
            .connect(addr, &addr.ip().to_string())
            .map_err(|e| e.to_string())?;
        let (conn, accepted) = match connecting.into_0rtt() {
            Ok((conn, accepted)) if early_data => (conn, Some(accepted)),
            Ok((conn, _)) => (conn, None),
            Err(connecting) => (connecting.await.map_err(|e| e.to_string())?, None),
        };
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_local(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        // Known once the handshake completes: not waited for here, or the
        // first request would wait for it too.
        let early_data = Rc::new(Cell::new(None));
        if let Some(accepted) = accepted {
            let flag = early_data.clone();
            tokio::task::spawn_local(async move { flag.set(Some(accepted.await)) });
        }
        Ok(Client {
            send,
            conn,
            _endpoint: endpoint,
            early_data,
        })
    }

    /// Whether the server accepted 0-RTT data (`None`: none sent, or not
    /// known yet).
    pub(super) fn early_data(&self) -> Option<bool> {
        self.early_data.get()
    }

    /// GETs `url`: the response head, its body streaming as it arrives.
    pub(super) async fn get(&self, url: &str) -> Result<Response<Body>, String> {
        let mut send = self.send.clone();
        let req = Request::get(url).body(()).map_err(|e| e.to_string())?;
        let mut stream = send.send_request(req).await.map_err(|e| e.to_string())?;
        stream.finish().await.map_err(|e| e.to_string())?;
        let head = stream.recv_response().await.map_err(|e| e.to_string())?;
        let (tx, body) = Body::channel(16);
        tokio::task::spawn_local(async move {
            loop {
                match stream.recv_data().await {
                    Ok(Some(mut chunk)) => {
                        let bytes = chunk.copy_to_bytes(chunk.remaining());
                        if tx.send(bytes).await.is_err() {
                            // The reader is gone: tell the server to stop.
                            stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(_) => return tx.abort().await,
                }
            }
        });
        let (parts, ()) = head.into_parts();
        Ok(Response::from_parts(parts, body))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"done");
    }
}
