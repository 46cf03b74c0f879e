//! The real-time experiment's event schedules and its model: when each
//! technique delivers an event, computed from the actual publish times and
//! the actual request schedule.
//!
//! The textbook figures (polling waits interval/2 + RTT/2 on average, long
//! polling RTT/2, streaming RTT/2) assume a poll phase uniform over the
//! interval and events far apart. Twenty events are too few for the first
//! assumption and a burst breaks the second, so the model replays the run
//! instead: it takes the times the server published each event and the
//! times the client sent each poll, and moves every message across the link
//! by exactly half the round-trip time. What the measurement adds beyond
//! that is what the software costs.

use std::time::Duration;

use crate::link::Rng;

/// When the events of one run are published, as offsets from its start,
/// and when the run ends.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// What the plan is ("20 events at random times over 10 s").
    pub name: String,
    /// Offsets of the events, sorted.
    pub events: Vec<Duration>,
    /// The clients stop at this offset.
    pub end: Duration,
}

/// `n` events at uniformly random (seeded) times in `[lead, lead + span)`,
/// the run ending `tail` after the span.
pub(super) fn random_plan(
    seed: u64,
    n: usize,
    span: Duration,
    lead: Duration,
    tail: Duration,
) -> Plan {
    let mut rng = Rng(seed.max(1));
    let mut events: Vec<Duration> = (0..n)
        .map(|_| lead + Duration::from_secs_f64(rng.unit() * span.as_secs_f64()))
        .collect();
    events.sort();
    Plan {
        name: format!(
            "{n} events at random times over {:.0} s",
            span.as_secs_f64()
        ),
        events,
        end: lead + span + tail,
    }
}

/// `n` events `spacing` apart starting at `lead`, the run ending `tail`
/// after the last.
pub(super) fn burst_plan(n: usize, spacing: Duration, lead: Duration, tail: Duration) -> Plan {
    let events: Vec<Duration> = (0..n as u32).map(|i| lead + spacing * i).collect();
    let last = events.last().copied().unwrap_or(lead);
    Plan {
        name: format!("a burst of {n} events {} ms apart", spacing.as_millis()),
        events,
        end: last + tail,
    }
}

/// Polling: a poll sent at `s` reaches the server at `s + rtt/2` and
/// answers every event published by then, arriving at `s + rtt`. All times
/// in ms from the run's start; `None`: no poll after the event.
pub(super) fn polled(published: &[f64], polls: &[f64], rtt: f64) -> Vec<Option<f64>> {
    published
        .iter()
        .map(|p| {
            polls
                .iter()
                .find(|s| *s + rtt / 2.0 >= *p)
                .map(|s| s + rtt - p)
        })
        .collect()
}

/// The time a server takes to wake a held long poll and answer it, in ms:
/// events published that close together leave in one answer. (A publisher
/// thread that the scheduler held back publishes a burst's events
/// microseconds apart; the server then answers them together, and so does
/// the model.)
pub(super) const WAKE: f64 = 1.0;

/// Long polling: the first request is sent at `first`; a request waits at
/// the server until an event is published or `hold` passes, the answer
/// carries every event published by then (and within [`WAKE`] after the
/// event that woke it), and the client sends the next request the moment
/// an answer arrives (until `end`). An event published while the next
/// request is still on its way (the re-request gap, one RTT) waits for it.
/// Returns the latencies and the requests sent.
pub(super) fn long_polled(
    published: &[f64],
    first: f64,
    hold: f64,
    rtt: f64,
    end: f64,
) -> (Vec<Option<f64>>, usize) {
    let half = rtt / 2.0;
    let mut latency = vec![None; published.len()];
    // The request waiting at the server since `at`.
    let mut at = first + half;
    let mut requests = 1;
    let mut next = 0;
    loop {
        let answer = match published.get(next) {
            Some(p) if *p <= at + hold => p.max(at),
            _ => at + hold,
        };
        while next < published.len() && published[next] <= answer + WAKE {
            latency[next] = Some(answer.max(published[next]) + half - published[next]);
            next += 1;
        }
        if answer + half >= end {
            return (latency, requests);
        }
        requests += 1;
        at = answer + rtt;
    }
}

/// Streaming and WebSocket: every event crosses once, half a round trip.
pub(super) fn pushed(published: &[f64], rtt: f64) -> Vec<Option<f64>> {
    published.iter().map(|_| Some(rtt / 2.0)).collect()
}

/// A stream through a relay that forwards only whole buffers: everything
/// written before the stream ended at `flushed` (ms) arrives half a round
/// trip after it.
pub(super) fn buffered(published: &[f64], flushed: f64, rtt: f64) -> Vec<Option<f64>> {
    published
        .iter()
        .map(|p| Some(flushed + rtt / 2.0 - p))
        .collect()
}

/// Polls sent at `0, interval, 2·interval, ...` before `end` (ms).
pub(super) fn poll_count(interval: f64, end: f64) -> usize {
    (end / interval).ceil().max(1.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[Option<f64>]) -> Vec<f64> {
        v.iter()
            .map(|x| (x.unwrap() * 1000.0).round() / 1000.0)
            .collect()
    }

    #[test]
    fn plans_are_seeded_sorted_and_inside_the_span() {
        let (span, lead, tail) = (
            Duration::from_secs(10),
            Duration::from_millis(300),
            Duration::from_secs(1),
        );
        let a = random_plan(17, 20, span, lead, tail);
        let b = random_plan(17, 20, span, lead, tail);
        assert_eq!(a.events, b.events);
        assert_eq!(a.events.len(), 20);
        assert!(a.events.windows(2).all(|w| w[0] <= w[1]));
        assert!(a.events.iter().all(|e| *e >= lead && *e < lead + span));
        assert_eq!(a.end, lead + span + tail);
        assert_ne!(random_plan(18, 20, span, lead, tail).events, a.events);
        let burst = burst_plan(5, Duration::from_millis(2), lead, tail);
        assert_eq!(burst.events[4], Duration::from_millis(308));
        assert_eq!(burst.end, Duration::from_millis(1308));
    }

    #[test]
    fn a_poll_answers_what_was_published_before_it_reached_the_server() {
        // Polls at 0, 1000, 2000; RTT 50: they reach the server at 25, 1025, 2025.
        let polls = [0.0, 1000.0, 2000.0];
        let lat = polled(&[10.0, 25.0, 26.0, 1500.0, 2100.0], &polls, 50.0);
        assert_eq!(ms(&lat[..4]), [40.0, 25.0, 1024.0, 550.0]);
        assert_eq!(lat[4], None);
        assert_eq!(poll_count(1000.0, 10_300.0), 11);
        assert_eq!(poll_count(1000.0, 10_000.0), 10);
    }

    #[test]
    fn long_polling_costs_a_round_trip_more_in_the_gap() {
        // First request at 0 (at the server from 25). An event at 100 is
        // answered at once (25 ms); the next request reaches the server at
        // 150, so events at 110 and 140 wait for it: 150 + 25 - p.
        let (lat, requests) = long_polled(&[100.0, 110.0, 140.0, 500.0], 0.0, 5000.0, 50.0, 1000.0);
        assert_eq!(ms(&lat), [25.0, 65.0, 35.0, 25.0]);
        // Answers at 100, 150 and 500, each followed by a new request.
        assert_eq!(requests, 4);
        // A hold shorter than the quiet time: an empty answer at 25 + 200,
        // the next request at the server at 275, the event at 300 at once.
        let (lat, requests) = long_polled(&[300.0], 0.0, 200.0, 50.0, 400.0);
        assert_eq!(ms(&lat), [25.0]);
        assert_eq!(requests, 3);
        // No event: one empty answer per hold until the end.
        assert_eq!(long_polled(&[], 0.0, 200.0, 50.0, 1000.0).1, 4);
        // Events within WAKE of the one that woke the request share its
        // answer; one just after waits for the next request.
        let (lat, requests) = long_polled(&[100.0, 100.5, 101.5], 0.0, 5000.0, 50.0, 400.0);
        assert_eq!(ms(&lat), [25.0, 25.0, 73.5]);
        assert_eq!(requests, 3);
    }

    #[test]
    fn pushing_costs_half_a_round_trip_and_buffering_waits_for_the_end() {
        assert_eq!(ms(&pushed(&[1.0, 2.0], 50.0)), [25.0, 25.0]);
        assert_eq!(ms(&buffered(&[100.0, 900.0], 1000.0, 50.0)), [925.0, 125.0]);
    }
}
