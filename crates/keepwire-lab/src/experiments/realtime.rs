//! Experiment 10 (R9.4, R9.2): one event stream delivered four ways,
//! polling, long polling, Server-Sent Events and WebSocket, over the link;
//! then through keepwire proxy and through a relay that buffers responses.
//!
//! Each run publishes the same scripted events at the server and times
//! their arrival at the client, counts the requests the client sent, and
//! reads the link's counters for the bytes and connections that crossed it
//! and the server thread's CPU time. The model (`realtime_model.rs`)
//! replays the run's own publish times and poll schedule across a link of
//! exactly the RTT.

use std::time::{Duration, Instant};

use super::harness::{Experiment, Lab, Outcome, Row, Timeline, outcome, row, value};
use super::realtime_client::{self, Seen, Technique};
use super::realtime_model::{self as model, Plan};
use super::realtime_server::{self as server, Origin, Path};
use super::stats::{ms, quantile};
use crate::realtime::{Config, Events};

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "realtime",
    title: "one event stream by polling, long polling, SSE and WebSocket",
    rules: "R9.4, R9.2",
    run,
    // At 1 % loss 1 run in 5 matched on its own, their medians did.
    repeats: 3,
    judge: Some(judge),
};

const COLUMNS: [&str; 15] = [
    "events",
    "delivered",
    "p50 ms",
    "model p50 ms",
    "p99 ms",
    "model p99 ms",
    "requests",
    "model requests",
    "connections",
    "model conns",
    "wire bytes",
    "HTTP bytes",
    "model HTTP bytes",
    "bytes/event",
    "server CPU ms",
];

/// Latencies must be within this fraction of the model's.
const TOLERANCE: f64 = 0.15;
/// What one retransmission may add under loss: Linux's RTO is at least
/// SRTT + 200 ms (`tcp_rto_min`; a tail-loss probe fires sooner), then the
/// resent segment crosses; with the RTT twice (added where it is used).
const RETRANSMISSION_MS: f64 = 200.0;
/// What one late wake-up may add to the worst event (p99 of 20 events is
/// about the worst one): one scheduler tick (4 ms: this kernel's
/// CONFIG_HZ=250, PREEMPT_NONE). On two cores shared by the delay line, the
/// origin, the proxy and the client, a thread woken for an event can wait
/// that long. Measured on this machine (docs/BENCHMARKS.md, issue 20): as
/// root with a real-time delay line, the worst p99 of 13 rows 28.4 ms
/// against 25; without real-time priority (as `nobody`, or root without
/// CAP_SYS_NICE) 28.8–30.2 ms in 4 of 6 runs. Not a property of the
/// techniques: polling's rows sit hundreds of ms away either way.
const WAKE_UP_MS: f64 = 4.0;
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The long poll's hold: longer than any quiet time of the plans, so the
/// model's timeouts stay theoretical; the model handles them anyway.
const HOLD: Duration = Duration::from_secs(20);
/// Time to connect (and to finish a WebSocket handshake) before `t0`.
const SETUP: Duration = Duration::from_millis(400);
/// The same on a lossy link: a lost SYN is resent after 1 s (the initial
/// RTO), and a stream that opens after the first events misses them
/// (measured at 1 % loss: a burst run delivered 2 of 5 events).
const SETUP_LOSSY: Duration = Duration::from_millis(1600);
/// Events start this long after `t0`: the SSE response head is back.
const LEAD: Duration = Duration::from_millis(200);
/// Clients stop this long after the last event: a poll comes by first.
const TAIL: Duration = Duration::from_millis(1200);
/// Event streams end this long after the last event (the buffering relay
/// forwards them then).
const FINISH: Duration = Duration::from_millis(500);

/// One run's outcome.
struct Measured {
    row: Row,
    timeline: Timeline,
}

/// Experiment 10 (R9.4, R9.2): the four techniques, then two of them behind
/// a proxy and a buffering relay.
pub(super) fn run(lab: &Lab) -> Outcome {
    let (n, span) = (lab.sizes.realtime_events, lab.sizes.realtime_span);
    let random = model::random_plan(17, n, span, LEAD, TAIL);
    let burst = model::burst_plan(n.div_ceil(4), Duration::from_millis(3), LEAD, TAIL);
    let all = [
        Technique::Poll(POLL_INTERVAL),
        Technique::LongPoll(HOLD),
        Technique::Sse,
        Technique::WebSocket,
    ];
    let mut runs: Vec<(&Plan, &str, Technique, Path)> = Vec::new();
    for t in all {
        runs.push((&random, "random", t, Path::Direct));
    }
    for t in all {
        runs.push((&burst, "burst", t, Path::Direct));
    }
    for t in [
        Technique::LongPoll(HOLD),
        Technique::Sse,
        Technique::WebSocket,
    ] {
        runs.push((&random, "random", t, Path::Proxy));
    }
    for t in [Technique::LongPoll(HOLD), Technique::Sse] {
        runs.push((&random, "random", t, Path::Buffering));
    }
    let mut rows = Vec::new();
    let mut timelines = Vec::new();
    let mut notes = Vec::new();
    for (plan, kind, t, path) in runs {
        let label = format!("{}{}, {kind}", t.name(), path.suffix());
        match one(lab, plan, t, path, &label) {
            Ok(m) => {
                rows.push(m.row);
                timelines.push(m.timeline);
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None; COLUMNS.len()]));
            }
        }
    }
    notes.push(format!(
        "events: {} (seed 17) and {}; published by the server at scripted times, one fresh \
         event source per run; latency = arrival at the client − publication at the server \
         (one clock: both sides are threads of this process)",
        random.name, burst.name
    ));
    notes.push(format!(
        "model: every message crosses the link in exactly RTT/2, the software costs nothing. \
         Polling: a poll sent at s answers what was published by s + RTT/2 and arrives at \
         s + RTT, computed from this run's actual poll times (the textbook mean interval/2 + \
         RTT/2 = {:.0} ms assumes a uniformly random phase, which {} events do not give). Long \
         polling: RTT/2, except events published while the next request is on its way (one RTT \
         after an answer), which wait for it; an answer carries the events published within {} \
         ms of the one that woke it; hold {} s. SSE and WebSocket: RTT/2. Through the \
         buffering relay: the stream's end + RTT/2",
        ms(POLL_INTERVAL) / 2.0 + lab.r_ms() / 2.0,
        random.events.len(),
        model::WAKE,
        HOLD.as_secs()
    ));
    notes.push(format!(
        "bytes from the link's counters: wire bytes are IP packets both ways (IP and TCP \
         headers, handshakes and ACKs included), HTTP bytes their TCP payload; model HTTP bytes \
         = requests × request head + responses × response head (as first seen) + body bytes \
         received \
         (chunked framing and WebSocket frame headers are the difference); server CPU is the \
         server side's thread (event source, proxy or relay{}; the events are published from \
         another thread)",
        if lab.link.exact {
            ""
        } else {
            ", and the loopback relay standing in for the link"
        }
    ));
    notes.push(format!(
        "buffering relay: forwards whole {} KiB buffers or what is left at the response's end, \
         as a reverse proxy with response buffering on (nginx's default) does; the origin ends \
         its event streams {} ms after the last event",
        server::RELAY_BUFFER / 1024,
        FINISH.as_millis()
    ));
    lab.note_link(&mut notes);
    let (pass, verdict) = judge(lab, &rows);
    let mut o = outcome(
        &EXPERIMENT,
        &COLUMNS,
        rows,
        (2, Some(3)),
        pass,
        verdict,
        notes,
    );
    o.timelines = timelines;
    o
}

/// Every run within the tolerance of its model at p50 and p99, every event
/// delivered, requests and connections exact.
///
/// With loss, p99 (with 20 events, about the worst one) may exceed the
/// lossless model by one retransmission: a lost segment, or one an event
/// queues behind, is resent after a tail-loss probe or a timeout (Linux:
/// 200 ms at least) and crosses once more. At 1 % loss about one row in
/// five loses a segment per run (measured: 5 of 13 rows off at p99 in one
/// run, by 6–48 ms), so repeats cannot steady it; the allowance can. Long
/// polling, with the most packets, lost one in 2 of 3 repeats of a run:
/// p99 293 ms, and 20 requests against 21, since the events that arrive
/// while an answer is late go out in one answer. So under loss a run may
/// also send one request fewer than the model.
fn judge(lab: &Lab, rows: &[Row]) -> (bool, String) {
    let allowance = if lab.link.spec.loss > 0.0 {
        RETRANSMISSION_MS + 2.0 * lab.r_ms()
    } else {
        0.0
    };
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| off(&r.values, allowance).map(|o| format!("{} ({o})", r.label)))
        .collect();
    let sse = |path: Path| {
        let label = format!("{}{}, random", Technique::Sse.name(), path.suffix());
        value(rows, &label, 2).map_or("-".to_string(), |v| format!("{v:.0} ms"))
    };
    let streaming = format!(
        "SSE at the median: {} direct, {} through keepwire proxy, {} through the buffering \
         relay (streaming needs a proxy that flushes)",
        sse(Path::Direct),
        sse(Path::Proxy),
        sse(Path::Buffering)
    );
    if failed.is_empty() && !rows.is_empty() {
        let tail = if allowance > 0.0 {
            format!(
                " (p99 plus {WAKE_UP_MS:.0} ms for a late wake-up, plus {allowance:.0} ms and \
                 one request fewer for one retransmission under loss)"
            )
        } else {
            format!(" (p99 plus {WAKE_UP_MS:.0} ms for a late wake-up)")
        };
        let verdict = format!(
            "every run within {:.0} % of its model at p50 and p99{tail}, requests and \
             connections exact; {streaming}",
            TOLERANCE * 100.0
        );
        (true, verdict)
    } else {
        (
            false,
            format!("off the model: {}; {streaming}", failed.join("; ")),
        )
    }
}

/// Where a row is off its model, if it is (columns as in `COLUMNS`); with
/// an `allowance` (a lossy link) p99 may exceed it by that many ms, and the
/// requests fall short by one; p99 may always exceed it by one late
/// wake-up ([`WAKE_UP_MS`]).
fn off(values: &[Option<f64>], allowance: f64) -> Option<String> {
    let v = |i: usize| values.get(i).copied().flatten();
    let (Some(events), Some(delivered), Some(requests), Some(model_requests)) =
        (v(0), v(1), v(6), v(7))
    else {
        return Some("failed".into());
    };
    let within = |m: f64, x: f64| (x - m).abs() <= TOLERANCE * m;
    let mut off = Vec::new();
    if delivered != events {
        off.push(format!("{delivered} of {events} delivered"));
    }
    let worst = allowance + WAKE_UP_MS;
    for (what, x, m, extra) in [("p50", v(2), v(3), 0.0), ("p99", v(4), v(5), worst)] {
        match (x, m) {
            (Some(x), Some(m))
                if !(within(m, x) || x > m && x <= m * (1.0 + TOLERANCE) + extra) =>
            {
                off.push(format!("{what} {x:.1} vs {m:.1} ms"))
            }
            (Some(_), Some(_)) => {}
            _ => off.push(format!("{what} not measured")),
        }
    }
    let short = if allowance > 0.0 { 1.0 } else { 0.0 };
    if requests > model_requests || requests < model_requests - short {
        off.push(format!("{requests} requests vs {model_requests}"));
    }
    if let Some(c) = v(8).filter(|c| *c != 1.0) {
        off.push(format!("{c} connections vs 1"));
    }
    (!off.is_empty()).then(|| off.join(", "))
}

/// One technique on one path with one plan.
fn one(lab: &Lab, plan: &Plan, t: Technique, path: Path, label: &str) -> Result<Measured, String> {
    let rtt = lab.r_ms();
    let origin = Origin::new(Events::new(Config::with_rate(0.0)));
    let (ip, client_ip) = (lab.link.server.ip, lab.link.client.ip);
    let o = origin.clone();
    let (addr, stop) = lab
        .link
        .server
        .run(move || server::start(o, path, ip, client_ip))
        .map_err(|e| format!("cannot start the servers: {e}"))?;
    let addr = lab.link.expose(addr);
    let cpu0 = lab.link.server.run(|| async { server::thread_cpu() });
    let wire0 = lab.link.wire.snapshot();
    let setup = if lab.link.spec.loss > 0.0 {
        SETUP_LOSSY
    } else {
        SETUP
    };
    let t0 = Instant::now() + setup;
    let end = t0 + plan.end;
    let offsets = plan.events.clone();
    let finish_at = t0 + *offsets.last().unwrap_or(&Duration::ZERO) + FINISH;
    let o = origin.clone();
    let (published, seen): (Vec<(u64, Instant)>, Seen) = std::thread::scope(|s| {
        let publisher = s.spawn(move || publish(&o, &offsets, t0, finish_at));
        let seen = lab
            .link
            .client
            .run(move || realtime_client::run(t, addr, t0.into(), end.into()));
        (publisher.join().expect("publisher thread"), seen)
    });
    let wire = lab.link.wire.snapshot() - wire0;
    let cpu = lab.link.server.run(|| async { server::thread_cpu() }) - cpu0;
    let _ = stop.send(());
    if let Some(e) = &seen.error {
        return Err(e.clone());
    }
    let at = |i: Instant| {
        if i >= t0 { ms(i - t0) } else { -ms(t0 - i) }
    };
    let pub_ms: Vec<f64> = published.iter().map(|(_, i)| at(*i)).collect();
    let arrived: Vec<Option<f64>> = published
        .iter()
        .map(|(id, _)| {
            seen.arrivals
                .iter()
                .find(|(a, _)| a == id)
                .map(|(_, i)| at(i.into_std()))
        })
        .collect();
    let sent: Vec<f64> = seen.requests.iter().map(|i| at(i.into_std())).collect();
    let end_ms = ms(plan.end);
    let (expected, model_requests) = match (t, path) {
        (Technique::Poll(i), _) => (
            model::polled(&pub_ms, &sent, rtt),
            model::poll_count(ms(i), end_ms),
        ),
        (Technique::LongPoll(hold), _) => model::long_polled(
            &pub_ms,
            sent.first().copied().unwrap_or(0.0),
            ms(hold),
            rtt,
            end_ms,
        ),
        (Technique::Sse, Path::Buffering) => {
            let done = origin.finished.lock().expect("finished lock").map(at);
            (model::buffered(&pub_ms, done.unwrap_or(end_ms), rtt), 1)
        }
        _ => (model::pushed(&pub_ms, rtt), 1),
    };
    let latency: Vec<f64> = pub_ms
        .iter()
        .zip(&arrived)
        .filter_map(|(p, a)| a.map(|a| a - p))
        .collect();
    let model_lat: Vec<f64> = expected.iter().flatten().copied().collect();
    let (p50, p99) = (
        quantile(latency.clone(), 0.5),
        quantile(latency.clone(), 0.99),
    );
    let (m50, m99) = (quantile(model_lat.clone(), 0.5), quantile(model_lat, 0.99));
    let delivered = latency.len();
    let events = published.len();
    let requests = seen.requests.len();
    let http_bytes = wire.payload_bytes[0] + wire.payload_bytes[1];
    // A long poll's last request is still held when the run ends.
    let model_responses = match t {
        Technique::LongPoll(_) => model_requests.saturating_sub(1),
        _ => model_requests,
    };
    let model_bytes =
        (model_requests * seen.heads.0 + model_responses * seen.heads.1) as u64 + seen.body_bytes;
    let f = |x: u64| Some(x as f64);
    let ip_bytes = wire.ip_bytes[0] + wire.ip_bytes[1];
    let row = row(
        label,
        vec![
            Some(events as f64),
            Some(delivered as f64),
            Some(p50),
            Some(m50),
            Some(p99),
            Some(m99),
            Some(requests as f64),
            Some(model_requests as f64),
            f(wire.connections),
            Some(1.0),
            lab.link.exact.then_some(ip_bytes as f64),
            f(http_bytes),
            f(model_bytes),
            Some(if lab.link.exact { ip_bytes } else { http_bytes } as f64 / events.max(1) as f64),
            Some(ms(cpu)),
        ],
    );
    Ok(Measured {
        row,
        timeline: Timeline {
            name: label.to_string(),
            end_ms,
            events: pub_ms.iter().copied().zip(arrived).collect(),
            requests: sent,
        },
    })
}

/// Publishes the plan's events at their times, then ends the event
/// streams at `finish_at`; returns each event's id and publish time.
///
/// It runs on a thread of its own, not on the server side's runtime:
/// there, a timer that fires late under load would publish a burst's
/// events back to back, and its time would count as the server's CPU.
fn publish(
    origin: &Origin,
    offsets: &[Duration],
    t0: Instant,
    finish_at: Instant,
) -> Vec<(u64, Instant)> {
    let sleep_until = |due: Instant| {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    };
    let mut out = Vec::with_capacity(offsets.len());
    for (i, off) in offsets.iter().enumerate() {
        sleep_until(t0 + *off);
        let at = Instant::now();
        let event = origin
            .source
            .publish(format!("event {i:03} of the lab's real-time run"));
        out.push((event.id, at));
    }
    sleep_until(finish_at);
    origin.finish();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long-polling row: p99 and requests as given, the rest on the model.
    fn long_poll(p99: f64, requests: f64) -> Vec<Option<f64>> {
        [20.0, 20.0, 25.5, 25.0, p99, 25.0, requests, 21.0, 1.0, 1.0]
            .into_iter()
            .map(Some)
            .collect()
    }

    #[test]
    fn under_loss_one_retransmission_is_allowed_and_no_more() {
        // As measured at 1 % loss: one late answer.
        assert_eq!(off(&long_poll(293.0, 20.0), 300.0), None);
        // Lossless: the same row is off.
        let lossless = off(&long_poll(293.0, 20.0), 0.0).expect("off");
        assert!(lossless.contains("p99 293.0 vs 25.0") && lossless.contains("20 requests"));
        // Under loss, two retransmissions' worth, or two requests short.
        assert!(off(&long_poll(400.0, 21.0), 300.0).is_some());
        assert!(off(&long_poll(26.0, 19.0), 300.0).is_some());
        assert!(off(&long_poll(26.0, 22.0), 300.0).is_some(), "never more");
        assert_eq!(off(&long_poll(26.0, 21.0), 0.0), None);
    }

    #[test]
    fn one_late_wake_up_is_allowed_at_p99_and_no_more() {
        // Measured without real-time priority: 30.2 ms against 25.
        assert_eq!(off(&long_poll(30.2, 21.0), 0.0), None);
        // 25 + 15 % + 4 ms = 32.75: beyond it, off.
        let late = off(&long_poll(33.0, 21.0), 0.0).expect("off");
        assert!(late.contains("p99 33.0 vs 25.0"), "{late}");
        // Measured under load once: 40.6 ms, more than one tick.
        assert!(off(&long_poll(40.6, 21.0), 0.0).is_some());
        // p50 gets no such slack.
        let mut row = long_poll(25.0, 21.0);
        row[2] = Some(29.0);
        assert!(off(&row, 0.0).expect("off").contains("p50 29.0"));
    }
}
