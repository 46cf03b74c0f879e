//! What crossed the lab's link, counted where it crosses: packets, bytes
//! and new connections per direction.
//!
//! An experiment that compares techniques by their cost on the wire (the
//! real-time one: polling sends a request head per poll, streaming one per
//! connection) needs the bytes headers included, which no client or server
//! API reports. The delay line sees every IP packet, so it counts them; the
//! userspace relay sees only the TCP payload it copies and the connections
//! it accepts, so there the IP-level numbers are absent.

use std::sync::atomic::{AtomicU64, Ordering};

/// Client to server.
pub const UP: usize = 0;
/// Server to client.
pub const DOWN: usize = 1;

/// Running totals, per direction ([`UP`], [`DOWN`]).
#[derive(Debug, Default)]
pub struct WireCounters {
    packets: [AtomicU64; 2],
    ip_bytes: [AtomicU64; 2],
    payload_bytes: [AtomicU64; 2],
    /// Client-to-server SYNs without ACK: connections opened.
    syns: AtomicU64,
}

/// The totals at one moment; subtract two to get what crossed between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WireSnapshot {
    /// IP packets per direction (0 on the relay).
    pub packets: [u64; 2],
    /// IP bytes per direction, IP and TCP headers included (0 on the relay).
    pub ip_bytes: [u64; 2],
    /// TCP payload bytes per direction: what the applications wrote.
    pub payload_bytes: [u64; 2],
    /// Connections opened (SYNs from the client side, or relay accepts).
    pub connections: u64,
}

impl std::ops::Sub for WireSnapshot {
    type Output = WireSnapshot;
    fn sub(self, o: WireSnapshot) -> WireSnapshot {
        let d = |a: [u64; 2], b: [u64; 2]| [a[0] - b[0], a[1] - b[1]];
        WireSnapshot {
            packets: d(self.packets, o.packets),
            ip_bytes: d(self.ip_bytes, o.ip_bytes),
            payload_bytes: d(self.payload_bytes, o.payload_bytes),
            connections: self.connections - o.connections,
        }
    }
}

/// The TCP facts of an IPv4 packet: payload length and whether it is a
/// bare SYN. `None` for anything else (IPv6, UDP, truncated).
fn tcp_facts(p: &[u8]) -> Option<(usize, bool)> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 6 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let tcp = p.get(ihl..total.min(p.len()))?;
    if tcp.len() < 20 {
        return None;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    let syn_only = flags & 0x02 != 0 && flags & 0x10 == 0;
    Some((tcp.len().saturating_sub(doff), syn_only))
}

impl WireCounters {
    /// One IP packet delivered in direction `dir` by the delay line.
    pub fn packet(&self, dir: usize, p: &[u8]) {
        self.packets[dir].fetch_add(1, Ordering::Relaxed);
        self.ip_bytes[dir].fetch_add(p.len() as u64, Ordering::Relaxed);
        if let Some((payload, syn)) = tcp_facts(p) {
            self.payload_bytes[dir].fetch_add(payload as u64, Ordering::Relaxed);
            if syn && dir == UP {
                self.syns.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `n` payload bytes copied in direction `dir` by the relay.
    pub fn relayed(&self, dir: usize, n: usize) {
        self.payload_bytes[dir].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A connection accepted by the relay.
    pub fn accepted(&self) {
        self.syns.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals now.
    pub fn snapshot(&self) -> WireSnapshot {
        let two = |a: &[AtomicU64; 2]| [0, 1].map(|i| a[i].load(Ordering::Relaxed));
        WireSnapshot {
            packets: two(&self.packets),
            ip_bytes: two(&self.ip_bytes),
            payload_bytes: two(&self.payload_bytes),
            connections: self.syns.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/TCP packet with `payload` bytes and the given TCP flags
    /// (20-byte IP header, 32-byte TCP header as Linux sends with timestamps).
    fn packet(payload: usize, flags: u8) -> Vec<u8> {
        let total = 20 + 32 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[9] = 6;
        p[20 + 12] = 8 << 4;
        p[20 + 13] = flags;
        p
    }

    #[test]
    fn counts_payload_and_syns_per_direction() {
        let c = WireCounters::default();
        let before = c.snapshot();
        c.packet(UP, &packet(0, 0x02)); // SYN
        c.packet(DOWN, &packet(0, 0x12)); // SYN-ACK: not a new connection
        c.packet(UP, &packet(100, 0x18));
        c.packet(DOWN, &packet(300, 0x18));
        c.packet(UP, &[0x60; 40]); // IPv6: bytes only
        let d = c.snapshot() - before;
        assert_eq!(d.packets, [3, 2]);
        assert_eq!(d.ip_bytes, [52 + 152 + 40, 52 + 352]);
        assert_eq!(d.payload_bytes, [100, 300]);
        assert_eq!(d.connections, 1);
        c.relayed(DOWN, 7);
        c.accepted();
        let d = c.snapshot() - before;
        assert_eq!((d.payload_bytes[DOWN], d.connections), (307, 2));
    }

    #[test]
    fn malformed_packets_count_as_bytes_only() {
        assert_eq!(tcp_facts(&[0x45; 10]), None);
        let mut short = packet(0, 0x02);
        short[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(tcp_facts(&short), None);
        assert_eq!(tcp_facts(&packet(5, 0x10)), Some((5, false)));
    }
}
