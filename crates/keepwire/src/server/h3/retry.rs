//! QUIC address validation: when a client is sent a Retry (RFC 9000 §8.1)
//! before it counts in the connection limits.
//!
//! A QUIC connection counts in the limits (total and per client IP) from
//! its first packet, and its Initial is a single UDP datagram: its source
//! address can be anyone's. Without a Retry, a flood of Initials spoofing
//! an address holds that address's per-IP slots until each handshake times
//! out (the header timeout), locking the real owner out. A Retry is
//! stateless (quinn mints the token with its own key and checks it when
//! the client comes back): only a client that receives packets at its
//! address returns it, and only then does it take a slot.
//!
//! The cost is one round trip more on the handshake, so it is not paid
//! always. nginx's `quic_retry` is off by default (every Initial counts at
//! once); here the default, [`QuicRetry::OverHalf`], asks for a Retry only
//! when admitting an unvalidated client would take its address over half
//! the per-IP cap, or the server over half the total cap: a normal client
//! never sees one, and spoofed Initials can hold at most half of an
//! address's slots (or of the server's), the other half staying for
//! clients that prove their address. A client whose address is already
//! validated (a Retry token, or a NEW_TOKEN token from an earlier
//! connection) is never sent one.

use super::Config;

/// When a QUIC client with an unvalidated address is sent a Retry before
/// it counts in the connection limits (`server::Config::quic_retry`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QuicRetry {
    /// Never: every Initial counts at once (nginx's `quic_retry off`).
    Off,
    /// When admitting the client would take its address over half of
    /// `max_connections_per_ip`, or the server over half of
    /// `max_connections` (the default).
    #[default]
    OverHalf,
    /// Always (nginx's `quic_retry on`): one more round trip for every
    /// new client.
    Always,
}

impl QuicRetry {
    /// Whether a client is sent a Retry, given whether its address is
    /// validated and the connections open and from its address with it
    /// counted (`ConnSlot::open`).
    pub(super) fn wanted(self, validated: bool, open: usize, per_ip: usize, cfg: &Config) -> bool {
        if validated {
            return false;
        }
        match self {
            QuicRetry::Off => false,
            QuicRetry::Always => true,
            QuicRetry::OverHalf => {
                per_ip > cfg.max_connections_per_ip / 2 || open > cfg.max_connections / 2
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(total: usize, per_ip: usize) -> Config {
        Config {
            max_connections: total,
            max_connections_per_ip: per_ip,
            ..Config::default()
        }
    }

    #[test]
    fn over_half_asks_beyond_half_of_either_cap() {
        let c = cfg(100, 4);
        let r = QuicRetry::OverHalf;
        assert!(!r.wanted(false, 1, 1, &c));
        assert!(!r.wanted(false, 50, 2, &c));
        assert!(r.wanted(false, 50, 3, &c), "over half the per-IP cap");
        assert!(r.wanted(false, 51, 1, &c), "over half the total cap");
        assert!(!r.wanted(true, 99, 4, &c), "a validated address");
    }

    #[test]
    fn off_never_and_always_always_unless_validated() {
        let c = cfg(100, 4);
        assert!(!QuicRetry::Off.wanted(false, 100, 4, &c));
        assert!(QuicRetry::Always.wanted(false, 1, 1, &c));
        assert!(!QuicRetry::Always.wanted(true, 1, 1, &c));
        assert_eq!(QuicRetry::default(), QuicRetry::OverHalf);
    }
}
