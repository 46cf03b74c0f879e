//! Experiment 9 (R2.1, R4.3, R4.6): the page over HTTPS. TLS 1.3 adds one
//! round trip to every new connection, so a strategy that opens one per
//! object pays it per object, and persistence saves more than over
//! cleartext. And the first request on a new connection: TCP + TLS 1.3
//! take two round trips before it, QUIC one (its handshake is TLS 1.3's,
//! inside the transport's), and none when resuming with 0-RTT data.

use std::collections::HashMap;

use super::harness::{Experiment, Lab, Outcome, PAGE_OBJECTS, Row, outcome, row, value};
use super::page_load::load_page;
use super::quic::{Proto, first_request};
use crate::load::Strategy;

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "tls",
    title: "the page over HTTPS: a TLS handshake per connection",
    rules: "R2.1, R4.3, R4.6",
    run,
    // 1 run in 5 at 1 % loss flips (a timeout in the persistent HTTPS
    // load makes its TLS cost 214 ms, over 2 RTT): 5, as slow-start.
    repeats: 5,
    judge: Some(judge),
};

/// Experiment 9 (R2.1, R4.3): the page over HTTPS. TLS 1.3 adds one round
/// trip to every new connection, so a strategy that opens one per object
/// pays it per object, and persistence saves more than over cleartext.
pub(super) fn run(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let n = PAGE_OBJECTS as f64 + 1.0;
    let http: http::Uri = format!("http://{}/", lab.origin)
        .parse()
        .expect("valid URL");
    let https: http::Uri = format!("https://{}/", lab.origin_tls)
        .parse()
        .expect("valid URL");
    // (label, URL, strategy, model wall in RTTs): a request is one round
    // trip, TCP's handshake one, TLS 1.3's one more.
    let cases: [(&str, &http::Uri, Strategy, f64); 5] = [
        ("serial, http://", &http, Strategy::Serial, 2.0 * n),
        ("serial, https://", &https, Strategy::Serial, 3.0 * n),
        (
            "persistent 1, http://",
            &http,
            Strategy::Persistent,
            1.0 + n,
        ),
        (
            "persistent 1, https://",
            &https,
            Strategy::Persistent,
            2.0 + n,
        ),
        // Connect, TLS, the page, then every object at once (ALPN h2).
        (
            "multiplexed, https:// (h2)",
            &https,
            Strategy::Multiplexed,
            4.0,
        ),
    ];
    let mut rows = Vec::new();
    let mut walls = HashMap::new();
    let mut notes = vec![format!(
        "model: 1 RTT per TCP handshake, 1 per TLS 1.3 handshake, 1 per request; \
         {} requests (the page and {PAGE_OBJECTS} objects)",
        n
    )];
    let mut waterfalls = Vec::new();
    let mut page_loads = Vec::new();
    for (label, url, strategy, model_rtts) in cases {
        let load = load_page(lab, url, strategy, 1);
        let model = model_rtts * r;
        rows.push(row(label, load.against(label, model, &mut notes)));
        walls.insert(label, load.wall);
        waterfalls.push((label.to_string(), load.bars));
        page_loads.push((label.to_string(), load.records));
    }
    let off: Vec<String> = rows
        .iter()
        .filter_map(|row| match row.values[..] {
            [_, _, Some(pct), _] if pct.abs() > 15.0 => Some(format!("{} {pct:+.0}%", row.label)),
            _ => None,
        })
        .collect();
    if !off.is_empty() {
        notes.push(format!(
            "off the model by more than 15%: {}",
            off.join(", ")
        ));
    }
    for (label, proto, resumed, handshake_rtts) in FIRST_REQUESTS {
        let model = (handshake_rtts + 1.0) * r;
        match first_request(lab, proto, resumed) {
            Ok((t, early)) => {
                if let (true, Some(accepted)) = (resumed, early) {
                    notes.push(format!(
                        "{label}: 0-RTT data {}",
                        if accepted { "accepted" } else { "REFUSED" }
                    ));
                }
                rows.push(row(
                    label,
                    vec![
                        Some(t),
                        Some(model),
                        Some((t - model) / model * 100.0),
                        Some(1.0),
                    ],
                ));
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None, Some(model), None, None]));
            }
        }
    }
    notes.push(
        "first request: one request on a new connection, handshakes included; model: \
         handshake round trips + 1. TCP + TLS 1.3: 2 (keepwire sends no TLS early data \
         over TCP, so a resumed session still takes 2; with it, TCP's 1 would remain); \
         QUIC: 1, with 0-RTT resumption 0"
            .into(),
    );
    let w = |k: &str| walls.get(k).copied().unwrap_or(0.0);
    let serial_extra = w("serial, https://") - w("serial, http://");
    let persistent_extra = w("persistent 1, https://") - w("persistent 1, http://");
    rows.push(row(
        "TLS cost, serial",
        vec![Some(serial_extra), Some(n * r), None, None],
    ));
    rows.push(row(
        "TLS cost, persistent 1",
        vec![Some(persistent_extra), Some(r), None, None],
    ));
    lab.note_link(&mut notes);
    let (pass, verdict) = judge(lab, &rows);
    let mut outcome = outcome(
        &EXPERIMENT,
        &["wall ms", "model ms", "vs model %", "connections"],
        rows,
        (0, Some(1)),
        pass,
        verdict,
        notes,
    );
    outcome.waterfalls = waterfalls;
    outcome.page_loads = page_loads;
    outcome
}

/// The first-request rows: label, protocol, resumed, handshake RTTs.
const FIRST_REQUESTS: [(&str, Proto, bool, f64); 4] = [
    (
        "first request, HTTP/2 (TCP + TLS 1.3)",
        Proto::H2,
        false,
        2.0,
    ),
    ("first request, HTTP/3 (QUIC)", Proto::H3, false, 1.0),
    ("resumed, HTTP/2 (TCP + TLS 1.3)", Proto::H2, true, 2.0),
    ("0-RTT resumed, HTTP/3 (QUIC)", Proto::H3, true, 0.0),
];

/// Every new connection pays the handshake: serial pays it per request,
/// persistent once, and h2 beats persistent HTTP/1.1 (column 0; over
/// repeats the TLS costs are the medians of each run's difference).
fn judge(lab: &Lab, rows: &[Row]) -> (bool, String) {
    let (r, n) = (lab.r_ms(), PAGE_OBJECTS as f64 + 1.0);
    let w = |k: &str| value(rows, k, 0).unwrap_or(0.0);
    let serial_extra = w("TLS cost, serial");
    let persistent_extra = w("TLS cost, persistent 1");
    // QUIC saves a round trip on the first request, 0-RTT another (a
    // quarter of one at least each: a debug build's QUIC handshake costs
    // 10-15 ms of CPU, half of a 20 ms RTT); the relay carries no UDP, so
    // not judged there.
    let first = |i: usize| value(rows, FIRST_REQUESTS[i].0, 0);
    let quic = match (first(0), first(1), first(3)) {
        _ if !lab.link.exact => true,
        (Some(tcp), Some(quic), Some(zero)) => quic + r / 4.0 < tcp && zero + r / 4.0 < quic,
        _ => false,
    };
    let pass = serial_extra >= 0.7 * n * r
        && persistent_extra < 2.0 * r
        && w("multiplexed, https:// (h2)") < w("persistent 1, https://")
        && quic;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let first_words = format!(
        "; the first request {} ms over TCP + TLS 1.3, {} ms over QUIC, {} ms with 0-RTT",
        ms(first(0)),
        ms(first(1)),
        ms(first(3))
    );
    let verdict = if pass {
        format!(
            "TLS cost {serial_extra:.0} ms serial ({n:.0} handshakes) vs \
             {persistent_extra:.0} ms persistent (one): persistence saves a round \
             trip more per request over HTTPS{first_words}"
        )
    } else {
        format!(
            "TLS cost {serial_extra:.0} ms serial vs {persistent_extra:.0} ms persistent{first_words}: \
             not the round trips per new connection the model predicts"
        )
    };
    (pass, verdict)
}
