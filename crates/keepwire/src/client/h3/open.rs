//! Opening an HTTP/3 connection: quinn's settings from the client's TLS,
//! the QUIC handshake (in 0-RTT when asked and a ticket allows), HTTP/3's
//! control streams on it, and the facts `-v` shows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{H3Conn, QUIC_V1, QuicInfo, SendRequest};
use crate::client::conn::ConnMeta;
use crate::client::pool::Origin;
use crate::client::{Client, ClientError, Timings};

impl Client {
    /// The origin's HTTP/3 connection, opened if there is none, or if
    /// `fresh` (single flight per origin, as HTTP/2's); `true` if this
    /// call opened it.
    pub(super) async fn h3_conn(
        &self,
        origin: &Origin,
        port: u16,
        early: bool,
        fresh: bool,
        timings: &mut Timings,
    ) -> Result<(H3Conn, bool), ClientError> {
        let inner = &self.inner;
        let cfg = &inner.config;
        let slot = inner.h3.slot(origin);
        let mut current = slot.lock().await;
        if let Some(c) = current.as_ref()
            && c.alive.load(Relaxed)
            && !fresh
        {
            return Ok((c.clone(), false));
        }
        *current = None;
        let config = inner
            .h3
            .quic
            .get_or_init(|| quic_config(&inner.tls_any, cfg.early_data, cfg.pool.idle_timeout))
            .clone()
            .map_err(ClientError::Config)?;
        let t = Instant::now();
        let mut addrs = self.resolve(origin).await?;
        timings.dns = Some(t.elapsed());
        for a in &mut addrs {
            a.set_port(port);
        }
        let name = origin.host.trim_matches(['[', ']']).to_string();
        let t = Instant::now();
        let state = &inner.h3;
        let delay = crate::client::connect::ATTEMPT_DELAY;
        let (quic, accepted) =
            crate::client::connect::race(&addrs, delay, cfg.connect_timeout, |addr| {
                let endpoint = state.endpoint(addr);
                let (config, name) = (config.clone(), name.clone());
                async move { handshake(endpoint?, config, addr, &name, early).await }
            })
            .await
            .map_err(|e| {
                ClientError::Connect(std::io::Error::new(e.kind(), format!("QUIC: {e}")))
            })?;
        let (send, alive) = h3_handshake(&quic, cfg).await?;
        let handshake_time = t.elapsed();
        timings.connect = Some(handshake_time);
        timings.tls = Some(handshake_time);
        let early = accepted.map(|accepted| {
            let (tx, rx) = watch::channel(None);
            tokio::spawn(async move {
                let _ = tx.send(Some(accepted.await));
            });
            rx
        });
        let local_port = state
            .endpoint(quic.remote_address())
            .map_or(0, |e| e.local_addr().map_or(0, |a| a.port()));
        let local_ip = quic
            .local_ip()
            .or_else(|| source_ip(quic.remote_address()))
            .unwrap_or(if quic.remote_address().is_ipv6() {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            });
        let meta = ConnMeta {
            id: inner.next_id.fetch_add(1, Relaxed) + 1,
            local: SocketAddr::new(local_ip, local_port),
            peer: quic.remote_address(),
            tls: Some(crate::transport::TlsInfo {
                version: "TLSv1_3",
                cipher: "unknown",
                alpn: Some("h3"),
            }),
            quic: Some(QuicInfo {
                version: QUIC_V1,
                zero_rtt: None,
            }),
        };
        inner.metrics.connections_opened.fetch_add(1, Relaxed);
        let conn = H3Conn {
            send,
            meta,
            requests: Arc::new(AtomicU64::new(0)),
            alive,
            early,
        };
        *current = Some(conn.clone());
        Ok((conn, true))
    }
}

/// quinn's client settings from the client's TLS (ALPN `h3`, TLS 1.3).
fn quic_config(
    tls: &rustls::ClientConfig,
    early_data: bool,
    idle: Duration,
) -> Result<quinn::ClientConfig, String> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.enable_early_data = early_data;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| format!("TLS for QUIC: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // An idle connection ends as a pooled one does.
    let idle = quinn::IdleTimeout::try_from(idle).map_err(|e| format!("idle timeout: {e}"))?;
    transport.max_idle_timeout(Some(idle));
    // What the server may make us hold: quinn's default connection window
    // is unbounded (only each stream's 1.25 MB is); 16 MiB in flight per
    // connection. No bidirectional streams from the server (RFC 9114
    // §6.1 forbids them), and a few unidirectional ones (control and the
    // two QPACK streams need three).
    transport.receive_window(quinn::VarInt::from_u32(16 << 20));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
    config.transport_config(Arc::new(transport));
    config.version(QUIC_V1);
    Ok(config)
}

/// The QUIC handshake to `addr`, in 0-RTT if `early` and a ticket allow
/// (then the handshake completes in the background and the second value
/// says, once it has, whether the early data was accepted).
async fn handshake(
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    name: &str,
    early: bool,
) -> std::io::Result<(quinn::Connection, Option<quinn::ZeroRttAccepted>)> {
    let mut connecting = endpoint
        .connect_with(config, addr, name)
        .map_err(std::io::Error::other)?;
    if early {
        match connecting.into_0rtt() {
            Ok((conn, accepted)) => return Ok((conn, Some(accepted))),
            Err(c) => connecting = c,
        }
    }
    let conn = connecting.await.map_err(std::io::Error::other)?;
    Ok((conn, None))
}

/// HTTP/3 on a QUIC connection (the control streams and SETTINGS), its
/// driver on a task that clears `alive` when the connection ends.
async fn h3_handshake(
    quic: &quinn::Connection,
    cfg: &crate::client::ClientConfig,
) -> Result<(SendRequest, Arc<AtomicBool>), ClientError> {
    let mut builder = h3::client::builder();
    builder.max_field_section_size(cfg.limits.max_head_bytes as u64);
    let build = builder.build::<_, _, Bytes>(h3_quinn::Connection::new(quic.clone()));
    let (mut driver, send) = match tokio::time::timeout(cfg.connect_timeout, build).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let e = std::io::Error::other(format!("HTTP/3 handshake: {e}"));
            return Err(ClientError::Connect(e));
        }
        Err(_) => {
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP/3 handshake");
            return Err(ClientError::Connect(e));
        }
    };
    let alive = Arc::new(AtomicBool::new(true));
    let flag = alive.clone();
    tokio::spawn(async move {
        let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        tracing::debug!(error = %e, "h3 connection ended");
        flag.store(false, Relaxed);
    });
    Ok((send, alive))
}

/// The address the kernel sends from to `peer` (the endpoint's socket is
/// bound to the unspecified address, and quinn knows the local one only
/// where the platform reports it per packet): what `-v` shows.
fn source_ip(peer: SocketAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr = if peer.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(peer).ok()?;
    Some(probe.local_addr().ok()?.ip())
}
