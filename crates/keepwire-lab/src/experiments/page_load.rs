//! Experiment 1 (R4): the chapter's page of embedded objects loaded by
//! each strategy, through the same engine as `keepwire get --page`, so the
//! round trips each strategy saves show as wall time and connections.

use std::collections::HashMap;
use std::time::Duration;

use super::harness::{
    Bar, Experiment, Lab, OBJECT_SIZE, Outcome, PAGE_OBJECTS, Row, outcome, row, value,
};
use super::stats::median;
use crate::load::{LoadConfig, Record, Strategy, load};

/// Its entry in the catalogue.
pub(super) const EXPERIMENT: Experiment = Experiment {
    id: "page-load",
    title: "a page of 12 objects: serial, parallel, persistent, pipelined, multiplexed",
    rules: "R4",
    run,
    repeats: 3,
    judge: Some(judge),
};

/// Experiment 1 (R4): wall time and connections of a page load per strategy.
pub(super) fn run(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let n = PAGE_OBJECTS as f64;
    let wave = |c: f64| (n / c).ceil();
    // (label, strategy, connections, model wall in RTTs, model connections)
    let strategies: [(&str, Strategy, u16, f64, f64); 7] = [
        ("serial", Strategy::Serial, 1, 2.0 * (n + 1.0), n + 1.0),
        (
            "parallel 4",
            Strategy::Parallel,
            4,
            2.0 + 2.0 * wave(4.0),
            n + 1.0,
        ),
        (
            "parallel 6",
            Strategy::Parallel,
            6,
            2.0 + 2.0 * wave(6.0),
            n + 1.0,
        ),
        (
            "persistent 1",
            Strategy::Persistent,
            1,
            1.0 + (n + 1.0),
            1.0,
        ),
        // HTML on one connection (2 RTT); then 5 new connections (2 RTT for
        // their first object) beside the reused one, then one more round.
        (
            "persistent 6",
            Strategy::Persistent,
            6,
            2.0 + 2.0 + (wave(6.0) - 1.0),
            6.0,
        ),
        // Connect, the page, then every object in one round trip.
        ("pipelined 1", Strategy::Pipelined, 1, 3.0, 1.0),
        // The same round trips as pipelining, without its ordering (R4.5).
        ("multiplexed (HTTP/2)", Strategy::Multiplexed, 1, 3.0, 1.0),
    ];
    let url: http::Uri = format!("http://{}/", lab.origin)
        .parse()
        .expect("valid URL");
    let mut rows = Vec::new();
    let mut waterfalls = Vec::new();
    let mut page_loads = Vec::new();
    let mut walls = HashMap::new();
    let mut notes = vec![format!(
        "model: the chapter's round trips only (1 RTT per handshake, 1 per request), \
         {PAGE_OBJECTS} objects of {OBJECT_SIZE} B so transfer time and slow start do not matter"
    )];
    for (label, strategy, conns, model_rtts, model_conns) in strategies {
        let load = load_page(lab, &url, strategy, conns);
        let wall = load.wall;
        let model = model_rtts * r;
        let mut values = load.against(label, model, &mut notes);
        values.push(Some(model_conns));
        rows.push(row(label, values));
        walls.insert(label, (wall, model));
        waterfalls.push((label.to_string(), load.bars));
        page_loads.push((label.to_string(), load.records));
    }
    let within: Vec<String> = ["serial", "persistent 1", "pipelined 1"]
        .iter()
        .filter_map(|k| {
            let (wall, model) = walls.get(k)?;
            let off = (wall - model) / model * 100.0;
            (off.abs() > 15.0).then(|| format!("{k} {off:+.0}%"))
        })
        .collect();
    if !within.is_empty() {
        notes.push(format!(
            "off the model by more than 15%: {}",
            within.join(", ")
        ));
    }
    lab.note_link(&mut notes);
    let (ordered, verdict) = judge(lab, &rows);
    let mut outcome = outcome(
        &EXPERIMENT,
        &[
            "wall ms",
            "model ms",
            "vs model %",
            "connections",
            "model conns",
        ],
        rows,
        (0, Some(1)),
        ordered,
        verdict,
        notes,
    );
    outcome.waterfalls = waterfalls;
    outcome.page_loads = page_loads;
    outcome
}

/// The strategies order by the round trips they save (walls, column 0).
fn judge(_lab: &Lab, rows: &[Row]) -> (bool, String) {
    let w = |k: &str| value(rows, k, 0).unwrap_or(0.0);
    let ordered = w("pipelined 1") < w("persistent 1")
        && w("persistent 1") < w("serial")
        && w("parallel 6") < w("serial")
        && w("persistent 6") < w("persistent 1")
        && w("multiplexed (HTTP/2)") < w("persistent 1");
    let verdict = if ordered {
        "pipelined < persistent < serial, parallel < serial, persistent+parallel < persistent: \
         every round trip saved shows"
    } else {
        "the strategies did not order as the round-trip model predicts"
    };
    (ordered, verdict.into())
}

/// A page load's medians over the repetitions, and the last one's
/// waterfall.
pub(super) struct PageLoad {
    pub wall: f64,
    opened: f64,
    failed: usize,
    pub bars: Vec<Bar>,
    /// The last load's records, which `bars` summarise.
    pub records: Vec<Record>,
}

impl PageLoad {
    /// Wall, model, distance from the model in %, connections; failures
    /// noted.
    pub fn against(&self, label: &str, model: f64, notes: &mut Vec<String>) -> Vec<Option<f64>> {
        if self.failed > 0 {
            notes.push(format!("{label}: {} requests failed", self.failed));
        }
        vec![
            Some(self.wall),
            Some(model),
            Some((self.wall - model) / model * 100.0),
            Some(self.opened),
        ]
    }
}

/// Loads the page at `url` `page_reps` times with `strategy`, as
/// `keepwire get --page` does. `https://` is not verified (the lab's
/// servers are self-signed), and speaks HTTP/2 only for the multiplexed
/// strategy: the others are the chapter's HTTP/1.1 strategies.
pub(super) fn load_page(lab: &Lab, url: &http::Uri, strategy: Strategy, conns: u16) -> PageLoad {
    let mut config = LoadConfig::default()
        .strategy(strategy)
        .connections(conns)
        .timeout(Duration::from_secs(30))
        .page(true)
        .http1_only(strategy.http1());
    if url.scheme_str() == Some("https") {
        config = config.tls(keepwire::client::tls::insecure_config());
    }
    let mut samples = Vec::new();
    let mut last = None;
    for _ in 0..lab.sizes.page_reps {
        let (url, config) = (url.to_string(), config.clone());
        let loaded = lab
            .link
            .client
            .run(move || async move { load(&[url], &config, &mut |_| {}).await });
        let s = &loaded.summary;
        samples.push((s.wall_ms, s.connections_opened, s.failed));
        last = Some(loaded.records);
    }
    let records = last.unwrap_or_default();
    let bars = records
        .iter()
        .map(|rec| Bar {
            path: rec
                .url
                .parse::<http::Uri>()
                .map(|u| u.path().to_string())
                .unwrap_or_else(|_| rec.url.clone()),
            conn: rec.connection.as_ref().map(|c| c.id),
            start_ms: rec.start_ms,
            end_ms: rec.end_ms(),
            new_conn: rec.reused == Some(false),
            phases_ms: rec.phases_ms,
        })
        .collect();
    PageLoad {
        wall: median(samples.iter().map(|s| s.0).collect()),
        opened: median(samples.iter().map(|s| s.1 as f64).collect()),
        failed: samples.iter().map(|s| s.2).sum(),
        bars,
        records,
    }
}
