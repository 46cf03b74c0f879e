//! The HTTP/3 worker: QUIC connections (quinn, one UDP socket each, as
//! each TCP connection of the other workers has its own port) one after
//! another, each carrying `pipeline` concurrent request streams, as the
//! HTTP/2 worker does (h2load's `-m`). The connect time is the QUIC
//! handshake, which is the TLS handshake too.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};

use super::{FailureKind, Plan, Worker};

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
type Driver = h3::client::Connection<h3_quinn::Connection, Bytes>;

/// quinn's settings for a run: the plan's TLS verification, ALPN `h3`.
pub(super) fn quic_config(plan: &Plan) -> io::Result<quinn::ClientConfig> {
    let tls = plan
        .tls
        .as_ref()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "HTTP/3 needs https://"))?;
    let mut config = (*tls.config).clone();
    config.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| io::Error::other(format!("TLS for QUIC: {e}")))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// One QUIC connection with HTTP/3 on it, its own UDP socket.
pub(super) async fn open(
    plan: &Plan,
    config: quinn::ClientConfig,
) -> io::Result<(quinn::Endpoint, SendRequest, Driver)> {
    let bind: SocketAddr = if plan.addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = quinn::Endpoint::client(bind)?;
    let name = match &plan.tls {
        Some(t) => t.server_name.to_str().into_owned(),
        None => return Err(io::Error::other("HTTP/3 needs https://")),
    };
    let quic = endpoint
        .connect_with(config, plan.addr, &name)
        .map_err(io::Error::other)?
        .await
        .map_err(|e| io::Error::other(format!("QUIC: {e}")))?;
    let (driver, send) = h3::client::new(h3_quinn::Connection::new(quic))
        .await
        .map_err(|e| io::Error::other(format!("HTTP/3: {e}")))?;
    Ok((endpoint, send, driver))
}

impl Worker {
    /// HTTP/3 connections one after another, each carrying `pipeline`
    /// concurrent streams until the run ends or the server ends it.
    pub(super) async fn run_http3(self: Rc<Self>) {
        let plan = &self.shared.plan;
        let Some(config) = self.shared.quic.clone() else {
            return;
        };
        while self.shared.has_work() {
            let opened = self.open_within(open(plan, config.clone())).await;
            let Some((endpoint, send, mut driver)) = opened else {
                continue;
            };
            let driver = tokio::task::spawn_local(async move {
                std::future::poll_fn(|cx| driver.poll_close(cx)).await
            });
            let carried = Rc::new(Cell::new(0u64));
            let streams: Vec<_> = (0..plan.pipeline)
                .map(|_| {
                    tokio::task::spawn_local(self.clone().h3_stream(send.clone(), carried.clone()))
                })
                .collect();
            drop(send);
            for s in streams {
                let _ = s.await;
            }
            driver.abort();
            endpoint.close(0u32.into(), b"");
            let mut t = self.tally.borrow_mut();
            t.max_per_conn = t.max_per_conn.max(carried.get());
        }
    }

    /// One stream slot: a request at a time until the run or the
    /// connection ends.
    async fn h3_stream(self: Rc<Self>, mut send: SendRequest, carried: Rc<Cell<u64>>) {
        let plan = &self.shared.plan;
        let Some(spec) = plan.http2.as_ref() else {
            return;
        };
        loop {
            if self.shared.claim(1) == 0 {
                return;
            }
            let (req, written) = self.request_out(spec);
            let exchange = async {
                let mut stream = send.send_request(req).await?;
                if !spec.body.is_empty() {
                    stream.send_data(spec.body.clone()).await?;
                }
                stream.finish().await?;
                let resp = stream.recv_response().await?;
                let first = Instant::now();
                let status = resp.status().as_u16();
                let mut n = 0u64;
                while let Some(chunk) = stream.recv_data().await? {
                    n += chunk.remaining() as u64;
                }
                Ok::<_, h3::error::StreamError>((status, first, n))
            };
            match tokio::time::timeout(plan.timeout, exchange).await {
                Ok(Ok((status, first, n))) => {
                    carried.set(carried.get() + 1);
                    self.answered(written, status, first, n);
                }
                Ok(Err(e)) if unprocessed(&e) => {
                    // Rejected or after GOAWAY: never processed, so it goes
                    // again on the next connection (the multiplexed R8.3).
                    self.goes_again();
                    return;
                }
                Ok(Err(e)) => {
                    let kind = h3_error_kind(&e);
                    self.fail(kind, 1);
                    if kind != FailureKind::Reset {
                        return;
                    }
                }
                Err(_) => {
                    self.fail(FailureKind::Timeout, 1);
                    return;
                }
            }
        }
    }
}

fn unprocessed(e: &h3::error::StreamError) -> bool {
    use h3::error::{Code, StreamError};
    match e {
        StreamError::RemoteClosing { .. } => true,
        StreamError::RemoteTerminate { code, .. } => *code == Code::H3_REQUEST_REJECTED,
        _ => false,
    }
}

fn h3_error_kind(e: &h3::error::StreamError) -> FailureKind {
    use h3::error::{ConnectionError, StreamError};
    match e {
        StreamError::RemoteTerminate { .. } => FailureKind::Reset,
        StreamError::ConnectionError { 0: c, .. } => match c {
            ConnectionError::Timeout { .. } => FailureKind::Timeout,
            _ => FailureKind::Closed,
        },
        StreamError::HeaderTooBig { .. } | StreamError::StreamError { .. } => FailureKind::Parse,
        _ => FailureKind::Other,
    }
}
