//! The fallback relay (no namespaces): a loopback TCP relay in front of
//! each server that delays set-up by one RTT and every chunk by half an RTT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::LinkSpec;
use crate::wire::{self, WireCounters};

/// Fallback relay: accepts on `listener`, delays set-up by one RTT, then
/// relays to `upstream` with half an RTT on every chunk each way.
pub(super) async fn relay_accept(
    listener: TcpListener,
    upstream: SocketAddr,
    spec: LinkSpec,
    wire: Arc<WireCounters>,
) {
    while let Ok((client, _)) = listener.accept().await {
        wire.accepted();
        let wire = wire.clone();
        tokio::task::spawn_local(async move {
            let _ = client.set_nodelay(true);
            // The handshake a real link would cost.
            tokio::time::sleep(spec.rtt).await;
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::task::spawn_local(delayed_copy(cr, sw, spec, (wire.clone(), wire::UP)));
            tokio::task::spawn_local(delayed_copy(sr, cw, spec, (wire, wire::DOWN)));
        });
    }
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    spec: LinkSpec,
    (wire, dir): (Arc<WireCounters>, usize),
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let one_way = spec.rtt / 2;
    let writer = tokio::task::spawn_local(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if chunk.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut link_free = tokio::time::Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        wire.relayed(dir, n);
        let now = tokio::time::Instant::now();
        let serialise = Duration::from_secs_f64(n as f64 * 8.0 / spec.bandwidth as f64);
        link_free = link_free.max(now) + serialise;
        if tx.send((link_free + one_way, buf[..n].to_vec())).is_err() || n == 0 {
            break;
        }
    }
    let _ = writer.await;
}
