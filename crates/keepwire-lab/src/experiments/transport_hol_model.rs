//! The model `transport-hol` is judged against: what one lost packet costs
//! the streams of a connection over TCP (HTTP/2) and over QUIC (HTTP/3).
//!
//! TCP delivers one ordered byte stream. When a packet is lost, every byte
//! behind it waits in the receiver's buffer until the retransmission
//! arrives, at least one round trip later (a fast retransmit needs the
//! duplicate ACKs to reach the sender and the new copy to come back; a
//! timeout costs more) — so every HTTP/2 stream with data behind the hole
//! stalls, whichever stream the lost packet belonged to. QUIC orders bytes
//! per stream: a loss stalls only the stream whose packet it was.
//!
//! The model plays this packet by packet ([`simulate`]): packets leave
//! one every `RTT / window`, each is lost at the loss rate (again on every
//! retransmission) and its copy arrives one round trip after the original
//! would have. Over TCP a packet reaches the application only when every
//! packet before it has; over QUIC when every earlier packet of its own
//! stream has. So a lost packet stalls its own stream a full round trip,
//! and over TCP every packet behind it, sent within that round trip, for
//! the rest of it. The chance that an object stalls at all has a closed
//! form ([`stall_chance`]):
//!
//! - QUIC: one of the object's own packets is lost, `1 − (1 − p)^own`;
//! - TCP: one of its own packets, or one of the `ahead` packets of other
//!   streams sent in the round trip before it, is lost:
//!   `1 − (1 − p)^(own + ahead)`. Beside a bulk download, `ahead` is the
//!   bulk's window (its packets per round trip): TCP's stalls grow with the
//!   bulk's rate, QUIC's do not.
//!
//! [`Scenario::predict`] builds the experiment's packet order (the page
//! beside a bulk download) and reads the median page delay and the p90
//! small-object delay off many seeded plays. The model ignores what the
//! real stacks add (timeouts longer than one RTT, windows halved after a
//! loss, lost requests and ACKs): measured stalls are at least the model's.

use crate::link::Rng;

/// The two transports compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// TCP (HTTP/2): one ordered byte stream for all streams.
    Tcp,
    /// QUIC (HTTP/3): bytes ordered per stream.
    Quic,
}

/// The chance that at least one of `n` packets is lost at rate `p`.
fn any_lost(p: f64, n: f64) -> f64 {
    if p <= 0.0 || n <= 0.0 {
        return 0.0;
    }
    1.0 - (1.0 - p.min(1.0)).powf(n)
}

/// The chance that an object of `own` packets stalls at loss rate `p` when
/// `ahead` packets of other streams are in flight before it (the round
/// trip's worth a loss among them would hold it behind).
pub(super) fn stall_chance(t: Transport, p: f64, own: f64, ahead: f64) -> f64 {
    match t {
        Transport::Tcp => any_lost(p, own + ahead),
        Transport::Quic => any_lost(p, own),
    }
}

/// The page beside a bulk download on one connection: the HTML in one
/// round of `html_packets`, then `objects` small objects of one packet
/// each, one round trip later, interleaved with the bulk's packets as a
/// fair server interleaves streams; the bulk sends `bulk_window` packets
/// per round trip throughout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Scenario {
    /// Loss rate per packet (0–1).
    pub(super) loss: f64,
    /// Packets of the HTML.
    pub(super) html_packets: usize,
    /// Small objects on the page (one packet each).
    pub(super) objects: usize,
    /// The bulk download's packets per round trip.
    pub(super) bulk_window: usize,
}

/// What the model predicts for one transport, delays in RTTs over the
/// lossless load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Prediction {
    /// The median page delay (the HTML's, then the last object's).
    pub(super) page_median: f64,
    /// The p90 of the small objects' delays.
    pub(super) object_p90: f64,
    /// The share of loads in which some object stalled.
    pub(super) page_stalled: f64,
    /// The share of small objects that stalled.
    pub(super) object_stalled: f64,
}

/// Streams in [`Scenario::packets`]: the bulk, the HTML, then the objects.
const BULK: usize = 0;
const HTML: usize = 1;

impl Scenario {
    /// The order packets leave the server in, by stream: a round trip of
    /// the bulk, the HTML beside it, a round trip of the bulk while the
    /// objects' requests travel, the objects each beside a bulk packet,
    /// then a round trip of the bulk (so the last objects have a full
    /// round trip of packets around them).
    pub(super) fn packets(&self) -> Vec<usize> {
        let w = self.bulk_window;
        let mut s = vec![BULK; w];
        for _ in 0..self.html_packets {
            s.extend([HTML, BULK]);
        }
        s.extend(std::iter::repeat_n(BULK, w));
        for o in 0..self.objects {
            s.extend([HTML + 1 + o, BULK]);
        }
        s.extend(std::iter::repeat_n(BULK, w));
        s
    }

    /// Plays the scenario `trials` times over transport `t` (seeded, so
    /// the same prediction every time).
    pub(super) fn predict(&self, t: Transport, trials: usize) -> Prediction {
        let packets = self.packets();
        let window = self.bulk_window.max(1) as f64;
        let mut rng = Rng(0x7A4E_5EED_0000_0001);
        let (mut pages, mut objects) = (Vec::new(), Vec::new());
        for _ in 0..trials.max(1) {
            let d = simulate(t, self.loss, &packets, window, &mut rng);
            let small = &d[HTML + 1..];
            // The objects are asked for once the HTML is in: its stall
            // delays them all.
            pages.push(d[HTML] + small.iter().copied().fold(0.0, f64::max));
            objects.extend_from_slice(small);
        }
        let stalled = |v: &[f64]| v.iter().filter(|d| **d > 0.0).count() as f64 / v.len() as f64;
        Prediction {
            page_stalled: stalled(&pages),
            object_stalled: stalled(&objects),
            page_median: super::stats::quantile(pages, 0.5),
            object_p90: super::stats::quantile(objects, 0.9),
        }
    }
}

/// Plays the model packet by packet: `streams[i]` is the stream of the
/// i-th packet sent, one every `1 / window` round trips; each is lost at
/// rate `p` (again on every retransmission, at most 64 times) and a loss
/// costs one round trip. Returns per stream (by id, `0..n`) the delay of
/// its completion over the lossless one, in RTTs.
pub(super) fn simulate(
    t: Transport,
    p: f64,
    streams: &[usize],
    window: f64,
    rng: &mut Rng,
) -> Vec<f64> {
    let n = streams.iter().max().map_or(0, |m| m + 1);
    let spacing = 1.0 / window.max(1e-9);
    let mut done = vec![0.0f64; n];
    let mut lossless = vec![0.0f64; n];
    let mut in_order = 0.0f64;
    for (i, &s) in streams.iter().enumerate() {
        let sent = i as f64 * spacing;
        let mut arrives = sent + 0.5;
        for _ in 0..64 {
            if p <= 0.0 || rng.unit() >= p {
                break;
            }
            arrives += 1.0;
        }
        let delivered = match t {
            Transport::Tcp => {
                in_order = in_order.max(arrives);
                in_order
            }
            Transport::Quic => arrives,
        };
        done[s] = done[s].max(delivered);
        lossless[s] = lossless[s].max(sent + 0.5);
    }
    done.iter().zip(&lossless).map(|(d, l)| d - l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Transport; 2] = [Transport::Tcp, Transport::Quic];
    const TRIALS: usize = 2000;

    /// The lab's page (an HTML of 2 packets, 12 one-packet objects) beside
    /// a bulk of `window` packets per round trip.
    fn page(loss: f64, window: usize) -> Scenario {
        Scenario {
            loss,
            html_packets: 2,
            objects: 12,
            bulk_window: window,
        }
    }

    #[test]
    fn without_loss_nothing_stalls() {
        for t in ALL {
            let got = page(0.0, 100).predict(t, TRIALS);
            assert_eq!(
                got,
                Prediction {
                    page_median: 0.0,
                    object_p90: 0.0,
                    page_stalled: 0.0,
                    object_stalled: 0.0,
                }
            );
            assert_eq!(stall_chance(t, 0.0, 1.0, 100.0), 0.0);
        }
    }

    #[test]
    fn at_three_percent_tcp_stalls_the_median_page_and_the_p90_quic_neither() {
        let s = page(0.03, 20);
        let (tcp, quic) = (
            s.predict(Transport::Tcp, TRIALS),
            s.predict(Transport::Quic, TRIALS),
        );
        // A small object over QUIC stalls when its own packet is lost:
        // 3 %, so its p90 is the lossless time; over TCP a loss among the
        // bulk's packets ahead stalls it too.
        assert!((quic.object_stalled - 0.03).abs() < 0.01, "{quic:?}");
        assert!(tcp.object_stalled > 0.3, "{tcp:?}");
        assert_eq!(quic.object_p90, 0.0, "{quic:?}");
        assert!(tcp.object_p90 > 0.5, "{tcp:?}");
        // The page: 14 packets of its own over QUIC, stalled in about one
        // load of three, so not at the median; over TCP in most loads.
        assert!((quic.page_stalled - any_lost(0.03, 14.0)).abs() < 0.04);
        assert_eq!(quic.page_median, 0.0, "{quic:?}");
        assert!(tcp.page_stalled > 0.7, "{tcp:?}");
        assert!(tcp.page_median > 0.5, "{tcp:?}");
    }

    #[test]
    fn at_one_percent_the_bulk_still_stalls_tcps_p90() {
        let s = page(0.01, 20);
        let tcp = s.predict(Transport::Tcp, TRIALS);
        let quic = s.predict(Transport::Quic, TRIALS);
        assert!(tcp.object_stalled > 0.1, "{tcp:?}");
        assert!(tcp.object_p90 > 0.0, "{tcp:?}");
        assert_eq!((quic.object_p90, quic.page_median), (0.0, 0.0), "{quic:?}");
        // Without the bulk, TCP's small objects stall no more than QUIC's
        // in the p90 either: the difference is the other streams' packets.
        let alone = page(0.01, 1).predict(Transport::Tcp, TRIALS);
        assert_eq!(alone.object_p90, 0.0, "{alone:?}");
    }

    #[test]
    fn stalls_grow_with_loss_and_the_bulk_and_quic_never_waits_longer() {
        let mut last = 0.0;
        for loss in [0.0, 0.005, 0.01, 0.03, 0.1] {
            for w in [1, 5, 20, 100] {
                let tcp = stall_chance(Transport::Tcp, loss, 1.0, w as f64);
                let quic = stall_chance(Transport::Quic, loss, 1.0, w as f64);
                assert!(tcp >= quic);
                // QUIC does not care how fast the bulk runs.
                assert_eq!(quic, stall_chance(Transport::Quic, loss, 1.0, 0.0));
            }
            let tcp = stall_chance(Transport::Tcp, loss, 1.0, 20.0);
            assert!(tcp >= last, "{loss}: {tcp} < {last}");
            last = tcp;
        }
        assert_eq!(any_lost(0.5, 2.0), 0.75);
    }

    #[test]
    fn the_played_stalls_agree_with_the_closed_form() {
        // One object (stream 1) sent after a full round trip of the bulk.
        let (p, window, trials) = (0.03, 20usize, 20_000);
        let mut streams = vec![BULK; window];
        streams.push(1);
        let mut rng = Rng(0x5EED_0000_0000_0001);
        for t in ALL {
            let stalled = (0..trials)
                .filter(|_| simulate(t, p, &streams, window as f64, &mut rng)[1] > 0.0)
                .count() as f64
                / trials as f64;
            // The first bulk packet's copy arrives with the object: the
            // other window − 1 are the ones ahead within the round trip.
            let want = stall_chance(t, p, 1.0, window as f64 - 1.0);
            assert!(
                (stalled - want).abs() < 0.015,
                "{t:?}: played {stalled:.3}, closed form {want:.3}"
            );
        }
    }

    #[test]
    fn a_loss_costs_its_stream_a_round_trip_and_tcp_is_never_earlier() {
        // Four streams of many packets, and twelve of one packet each.
        let long: Vec<usize> = (0..300).map(|i| i % 4).collect();
        let short: Vec<usize> = (0..12).chain(std::iter::repeat_n(0, 50)).collect();
        let mut rng = Rng(0x5EED_0000_0000_0002);
        for _ in 0..200 {
            let seed = rng.0;
            for streams in [&long, &short] {
                let tcp = simulate(Transport::Tcp, 0.05, streams, 50.0, &mut Rng(seed));
                let quic = simulate(Transport::Quic, 0.05, streams, 50.0, &mut Rng(seed));
                // The same losses: QUIC never waits longer than TCP.
                assert!(
                    tcp.iter().zip(&quic).all(|(a, b)| a >= b),
                    "{tcp:?} {quic:?}"
                );
            }
            // A one-packet stream over QUIC waits whole round trips or not
            // at all (the stream after it, the filler, may finish early).
            let quic = simulate(Transport::Quic, 0.05, &short, 50.0, &mut Rng(seed));
            for d in &quic[1..12] {
                assert!((d - d.round()).abs() < 1e-9, "{quic:?}");
            }
            rng.unit();
        }
        let none = simulate(Transport::Tcp, 0.0, &long, 50.0, &mut rng);
        assert!(none.iter().all(|d| *d == 0.0), "{none:?}");
    }

    #[test]
    fn the_packet_order_puts_each_object_beside_the_bulk() {
        let s = page(0.0, 3).packets();
        assert_eq!(
            s,
            [
                vec![0, 0, 0, 1, 0, 1, 0, 0, 0, 0],
                (2..14).flat_map(|o| [o, 0]).collect(),
                vec![0, 0, 0],
            ]
            .concat()
        );
    }
}
