//! Tunnels: CONNECT (R9.3) and upgraded connections (R9.1), relayed as
//! bytes once the handshake is done.
//!
//! A tunnel is no longer HTTP, so none of the proxy's message handling
//! applies; what is left is to move bytes both ways, pass each side's
//! half-close on, and not hold a connection forever for a peer that went
//! quiet (`tunnel_idle_timeout`, as HAProxy's `timeout tunnel`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::{Response, StatusCode, Uri};
use keepwire_proto::host::split_authority;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::Proxy;
use crate::body::Body;
use crate::client::{Origin, Timings};
use crate::upgrade::{OnUpgrade, Upgraded};

impl Proxy {
    /// CONNECT host:port (R9.3): a raw TCP tunnel, forward mode only.
    pub(super) async fn connect_tunnel(
        self: &Arc<Self>,
        target: &Uri,
        on_upgrade: Option<OnUpgrade>,
    ) -> Response<Body> {
        let Some(client) = &self.forward_client else {
            return self.refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT needs forward mode (--forward)",
            );
        };
        let Some((host, port)) = target
            .authority()
            .and_then(|a| split_authority(a.as_str().as_bytes()))
            .filter(|(host, _)| !host.is_empty())
        else {
            return self.refuse(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let port = port.unwrap_or(443);
        if !self.config.connect_ports.contains(&port) {
            return self.refuse(StatusCode::FORBIDDEN, "CONNECT to this port is not allowed");
        }
        let origin = Origin {
            scheme: "http".into(),
            host: host.to_ascii_lowercase(),
            port,
        };
        // Resolved, checked against the destination policy and dialled as
        // one step: the addresses checked are the addresses connected to.
        let upstream = match client.open_tcp(&origin, &mut Timings::default()).await {
            Ok(s) => s,
            Err(e) => return self.gateway_error(&e),
        };
        let _ = upstream.set_nodelay(true);
        let Some(down) = on_upgrade else {
            return self.refuse(StatusCode::INTERNAL_SERVER_ERROR, "tunnel unavailable");
        };
        let tunnel = Tunnel::open(self.clone(), Kind::Connect);
        tokio::spawn(async move {
            if let Some(client) = down.wait().await {
                tunnel
                    .relay(client, Upgraded::new(upstream.into(), Default::default()))
                    .await;
            }
        });
        Response::new(Body::empty())
    }

    /// Relays an upgraded exchange (101) once both sides hand over their
    /// connections.
    pub(super) fn relay_upgrade(self: &Arc<Self>, down: OnUpgrade, up: OnUpgrade) {
        let tunnel = Tunnel::open(self.clone(), Kind::Upgrade);
        tokio::spawn(async move {
            if let (Some(a), Some(b)) = (down.wait().await, up.wait().await) {
                tunnel.relay(a, b).await;
            }
        });
    }
}

/// What a tunnel carries: the index of its `proxy_tunnels_open` series.
#[derive(Clone, Copy)]
enum Kind {
    Connect = 0,
    Upgrade = 1,
}

/// A tunnel being set up or relayed, counted in the proxy's
/// `tunnels_open` gauge until it drops. (The server's `tunnels_open`
/// counts it too: the client side's `Upgraded` holds its connection slot
/// until [`splice`] returns.)
struct Tunnel(Arc<Proxy>, Kind);

impl Tunnel {
    fn open(proxy: Arc<Proxy>, kind: Kind) -> Tunnel {
        proxy.metrics.tunnels.fetch_add(1, Relaxed);
        proxy.metrics.tunnels_open[kind as usize].fetch_add(1, Relaxed);
        Tunnel(proxy, kind)
    }

    async fn relay(self, a: Upgraded, b: Upgraded) {
        if splice(a, b, self.0.config.tunnel_idle_timeout).await {
            self.0.metrics.tunnels_idle_closed.fetch_add(1, Relaxed);
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.0.metrics.tunnels_open[self.1 as usize].fetch_sub(1, Relaxed);
    }
}

/// Relays bytes both ways until both sides are done, passing each side's
/// half-close on to the other (R9.1), or until neither side moved a byte
/// for `idle`; true if that is what ended it. An error either way ends
/// both.
async fn splice(a: Upgraded, b: Upgraded, idle: Duration) -> bool {
    let start = Instant::now();
    // Milliseconds from `start` to the last byte moved, either way.
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Relaxed);
    // Each side reads the bytes that came with its switching head first.
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let both = async {
        tokio::try_join!(
            pump(&mut ar, &mut bw, &touch),
            pump(&mut br, &mut aw, &touch),
        )
    };
    let quiet = async {
        loop {
            let deadline = start + Duration::from_millis(last.load(Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        _ = both => false,
        () = quiet => true,
    }
}

/// Copies `r` to `w`, then passes the end on as a half-close.
async fn pump<R, W>(r: &mut R, w: &mut W, touch: &impl Fn()) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // As copy_bidirectional's: an idle WebSocket holds two of these.
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        touch();
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        touch();
    }
}
