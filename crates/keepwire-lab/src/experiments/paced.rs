//! `/lab/paced/N` on the lab's origin: a download sent at a set rate (a
//! video stream, say) rather than as fast as the connection allows, so
//! two protocols carry the same load beside what an experiment measures
//! (`transport-hol`).

use std::time::Duration;

use keepwire::Body;

/// The bulk download's size: only a cap, as it is dropped once the page is
/// in; at [`BULK_RATE`] it lasts 20 s.
pub(super) const BULK: usize = 16 << 20;
/// The rate the server sends the bulk download at (a video stream, say),
/// bits per second. Paced, so both protocols carry the same load beside
/// the page (unpaced, each would run at what its congestion control and
/// flow-control windows allow, and the page would measure those), and below
/// what HTTP/2's 64 KiB flow-control window lets through per round trip
/// (10 Mbit/s at 50 ms), so the window is not what the small objects wait
/// for.
pub(super) const BULK_RATE: u64 = 6_000_000;

/// `/lab/paced/N`: `n` bytes sent at [`BULK_RATE`], in 8 KiB chunks, until
/// the client goes away.
pub(super) fn paced(n: usize) -> http::Response<Body> {
    const CHUNK: usize = 8 * 1024;
    let (tx, body) = Body::channel(2);
    tokio::spawn(async move {
        let every = Duration::from_secs_f64(CHUNK as f64 * 8.0 / BULK_RATE as f64);
        let mut tick = tokio::time::interval(every);
        // Behind (the connection pushed back): go on at the rate, no burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut left = n.min(BULK);
        while left > 0 {
            tick.tick().await;
            let k = left.min(CHUNK);
            if tx.send(bytes::Bytes::from(vec![b'v'; k])).await.is_err() {
                return;
            }
            left -= k;
        }
    });
    http::Response::new(body)
}
