//! The lab's HTML report: one self-contained page (inline CSS and SVG, no
//! scripts, no network resources) that reads without the terminal output:
//! per experiment its table, a measured-vs-model chart and the verdict, and
//! the page loads' waterfalls under one time axis.

use std::fmt::Write as _;

use serde::Serialize;

use crate::experiments::{Outcome, Row, Timeline};
use crate::link::Link;
use crate::load::Record;
use crate::waterfall::chart::{self, Axis, Geometry, Section};
use crate::waterfall::esc;

/// Everything a run produced: the link, the machine and every experiment's
/// outcome. `keepwire lab --json` writes it as is.
#[derive(Debug, Serialize)]
pub struct LabReport {
    /// "exact" (namespaces) or "approximate" (relay).
    pub link_kind: &'static str,
    /// Why the relay was used.
    pub fallback_reason: Option<String>,
    /// The congestion control that ran in the namespaces, read back from a
    /// socket there (exact link only).
    pub congestion_control: Option<String>,
    /// RTT in ms.
    pub rtt_ms: f64,
    /// Bits per second.
    pub bandwidth_bps: u64,
    /// Loss percent.
    pub loss_percent: f64,
    /// Reduced sizes.
    pub quick: bool,
    /// Packets the link dropped.
    pub dropped_packets: u64,
    /// Namespace inodes of the two sides (exact link only).
    pub netns: Vec<u64>,
    /// Per experiment.
    pub experiments: Vec<Outcome>,
    /// Machine facts.
    pub machine: String,
}

impl LabReport {
    /// The report of `experiments`, run over `link` (`quick`: at reduced
    /// sizes).
    pub fn new(link: &Link, quick: bool, experiments: Vec<Outcome>) -> LabReport {
        LabReport {
            link_kind: link.label(),
            fallback_reason: link.fallback_reason.clone(),
            congestion_control: link.congestion_control.clone(),
            rtt_ms: link.spec.rtt.as_secs_f64() * 1000.0,
            bandwidth_bps: link.spec.bandwidth,
            // As given (`--loss 7`), not 7.000000000000001.
            loss_percent: (link.spec.loss * 100.0 * 1e6).round() / 1e6,
            quick,
            dropped_packets: link.dropped.load(std::sync::atomic::Ordering::Relaxed),
            netns: [link.server.netns, link.client.netns]
                .into_iter()
                .flatten()
                .filter(|_| link.exact)
                .collect(),
            experiments,
            machine: machine_facts(),
        }
    }

    /// How many experiments match their rule.
    pub fn passed(&self) -> usize {
        self.experiments.iter().filter(|o| o.pass).count()
    }
}

/// A measured value as every output shows it: `-` for none, whole numbers
/// and values from 100 up without decimals, others with one.
pub fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e12 => format!("{x:.0}"),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
    }
}

/// A row's value with its spread over repeats, as every output shows it:
/// the median, then p10–p90 in brackets when they differ (N > 1).
pub fn fmt_cell(row: &Row, col: usize) -> String {
    let median = fmt_value(row.values.get(col).copied().flatten());
    match row.spread.get(col).copied().flatten() {
        Some(s) if s.n > 1 && s.p10 != s.p90 => format!(
            "{median} [{}–{}]",
            fmt_value(Some(s.p10)),
            fmt_value(Some(s.p90))
        ),
        _ => median,
    }
}

/// What loss cost an experiment, in words: `None` when nothing was lost,
/// unless `lossy` (the link drops packets: then "0" is worth saying).
pub fn fmt_losses(o: &Outcome, lossy: bool) -> Option<String> {
    let l = &o.losses;
    if !lossy
        && l.dropped_packets == 0
        && l.rto.unwrap_or(0) == 0
        && l.retransmitted_segments.unwrap_or(0) == 0
    {
        return None;
    }
    let runs = if o.repeats == 1 { "run" } else { "runs" };
    let mut s = format!(
        "over {} {runs}: {} packets dropped by the link",
        o.repeats, l.dropped_packets
    );
    if let (Some(rto), Some(re)) = (l.rto, l.retransmitted_segments) {
        s += &format!(
            ", {rto} retransmission timeouts and {re} segments retransmitted (the namespaces' TCP counters)"
        );
    }
    s += &format!(
        "; {} of {} runs matched on their own, the verdict is on the medians",
        o.runs_matched, o.repeats
    );
    Some(s)
}

/// The CPU, its cores and the kernel.
fn machine_facts() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

const COLORS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
];

/// Renders the whole report.
pub fn render(r: &LabReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>keepwire lab report</title>\n<style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;background:#fff}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}.pass{{color:#1a7f37;font-weight:bold}}\
         .fail{{color:#c62828;font-weight:bold}}.note{{color:#555;font-size:13px}}\
         section{{border-top:2px solid #eee;margin-top:1.5em}}.wide{{overflow-x:auto}}svg text{{font:11px sans-serif}}\
         {}</style></head><body>\n<h1>keepwire lab</h1>\n<p>Link: RTT {} ms, {} Mbit/s, loss {}% — <b>{}</b>{}. {}</p>\n",
        chart::style(),
        r.rtt_ms,
        r.bandwidth_bps as f64 / 1e6,
        r.loss_percent,
        r.link_kind,
        match (&r.fallback_reason, &r.congestion_control) {
            (Some(w), _) => format!(" (userspace relay: {})", esc(w)),
            (None, cc) => format!(
                " (two network namespaces, real kernel TCP, congestion control {})",
                esc(cc.as_deref().unwrap_or("unknown"))
            ),
        },
        esc(&r.machine)
    );
    let passed = r.passed();
    let _ = writeln!(
        h,
        "<p>{passed} of {} experiments match their rule.</p>",
        r.experiments.len()
    );
    for o in &r.experiments {
        section(&mut h, o, r.loss_percent > 0.0);
    }
    h.push_str("</body></html>\n");
    h
}

fn section(h: &mut String, o: &Outcome, lossy: bool) {
    let _ = write!(
        h,
        "<section id=\"{}\"><h2>{} — {} <small>({})</small></h2>\n<div class=\"wide\"><table><tr><th></th>",
        esc(o.id),
        esc(o.id),
        esc(o.title),
        esc(o.rules)
    );
    for c in &o.columns {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("<th>N</th></tr>\n");
    for row in &o.rows {
        let _ = write!(h, "<tr><td>{}</td>", esc(&row.label));
        for i in 0..row.values.len() {
            let _ = write!(h, "<td>{}</td>", esc(&fmt_cell(row, i)));
        }
        let _ = writeln!(h, "<td>{}</td></tr>", row.n);
    }
    h.push_str("</table></div>\n");
    if o.repeats > 1 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} runs: each value is the median, [p10–p90] beside it; \
             the verdict is judged on the medians.</p>",
            o.repeats
        );
    }
    if let Some(l) = fmt_losses(o, lossy) {
        let _ = writeln!(h, "<p class=\"note\">Losses {}.</p>", esc(&l));
    }
    chart(h, o);
    let _ = writeln!(
        h,
        "<p class=\"{}\">{}: {}</p>",
        if o.pass { "pass" } else { "fail" },
        if o.pass { "MATCHES" } else { "DOES NOT MATCH" },
        esc(&o.verdict)
    );
    for n in &o.notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
    }
    waterfalls(h, &o.page_loads);
    timelines(h, &o.timelines);
    h.push_str("</section>\n");
}

/// Horizontal bars: measured (solid, its median over repeats, with a
/// p10–p90 whisker when there were several) and model (a mark) per row.
fn chart(h: &mut String, o: &Outcome) {
    let (mi, model) = o.chart;
    // (label, measured, model, p10–p90 over repeats)
    type Bar<'a> = (&'a str, f64, Option<f64>, Option<(f64, f64)>);
    let rows: Vec<Bar> = o
        .rows
        .iter()
        .filter_map(|r| {
            let m = r.values.get(mi).copied().flatten()?;
            let model = model.and_then(|i| r.values.get(i).copied().flatten());
            let spread = r.spread.get(mi).copied().flatten();
            let whisker = spread.filter(|s| s.n > 1).map(|s| (s.p10, s.p90));
            Some((r.label.as_str(), m, model, whisker))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let max = rows
        .iter()
        .map(|(_, m, md, wh)| m.max(md.unwrap_or(0.0)).max(wh.map_or(0.0, |w| w.1)))
        .fold(0.0, f64::max)
        .max(1e-9);
    let (left, width, row_h) = (230.0, 520.0, 26.0);
    let height = rows.len() as f64 * row_h + 30.0;
    let _ = write!(
        h,
        "<svg width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"{} chart\">",
        left + width + 80.0,
        esc(o.id)
    );
    for (i, (label, m, md, whisker)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let w = m / max * width;
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" \
             height=\"{}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\">{}</text>",
            y + 14.0,
            esc(label),
            row_h - 10.0,
            COLORS[0],
            left + w + 4.0,
            y + 14.0,
            fmt_value(Some(*m))
        );
        if let Some((p10, p90)) = whisker {
            let (x1, x2, yc) = (left + p10 / max * width, left + p90 / max * width, y + 8.0);
            let _ = write!(
                h,
                "<line class=\"spread\" x1=\"{x1:.1}\" x2=\"{x2:.1}\" y1=\"{yc}\" y2=\"{yc}\" \
                 stroke=\"#222\" stroke-width=\"1.5\"><title>p10–p90: {}–{}</title></line>",
                fmt_value(Some(*p10)),
                fmt_value(Some(*p90))
            );
        }
        if let Some(md) = md {
            let x = left + md / max * width;
            let _ = write!(
                h,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"/>",
                y - 2.0,
                y + row_h - 4.0,
                COLORS[3]
            );
        }
    }
    let _ = write!(
        h,
        "<rect x=\"{left}\" y=\"{}\" width=\"12\" height=\"10\" fill=\"{}\"/>\
         <text x=\"{}\" y=\"{}\">{}</text>",
        height - 18.0,
        COLORS[0],
        left + 16.0,
        height - 9.0,
        esc(&o.columns[mi])
    );
    if let Some(i) = model {
        let _ = write!(
            h,
            "<rect x=\"{}\" y=\"{}\" width=\"3\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            left + 160.0,
            height - 19.0,
            COLORS[3],
            left + 168.0,
            height - 9.0,
            esc(&o.columns[i])
        );
    }
    h.push_str("</svg>\n");
}

/// Event deliveries: a row per run, each event a line from its publication
/// (top) to its arrival (bottom), requests as dots below; a slanted line is
/// a late event, an event that never arrived a red cross.
fn timelines(h: &mut String, runs: &[Timeline]) {
    if runs.is_empty() {
        return;
    }
    let start = runs
        .iter()
        .flat_map(|t| t.requests.iter().copied())
        .fold(0.0, f64::min);
    let end = runs.iter().map(|t| t.end_ms).fold(1.0, f64::max);
    let (left, width, row_h) = (290.0, 600.0, 34.0);
    let x = |ms: f64| left + (ms - start) / (end - start) * width;
    let height = runs.len() as f64 * row_h + 34.0;
    let _ = write!(
        h,
        "<h3>Timelines: published (top) → arrived (bottom)</h3><svg width=\"{}\" \
         height=\"{height}\" role=\"img\" aria-label=\"event timelines\">",
        left + width + 20.0
    );
    for (i, t) in runs.iter().enumerate() {
        let (top, bottom) = (i as f64 * row_h + 6.0, i as f64 * row_h + row_h - 8.0);
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{}\">{}</text><line x1=\"{left}\" x2=\"{}\" y1=\"{bottom}\" \
             y2=\"{bottom}\" stroke=\"#ddd\"/>",
            (top + bottom) / 2.0 + 4.0,
            esc(&t.name),
            left + width
        );
        for r in &t.requests {
            let _ = write!(
                h,
                "<circle cx=\"{:.1}\" cy=\"{}\" r=\"2\" fill=\"#999\"/>",
                x(*r),
                bottom + 4.0
            );
        }
        for (p, a) in &t.events {
            match a {
                Some(a) => {
                    let _ = write!(
                        h,
                        "<line x1=\"{:.1}\" y1=\"{top}\" x2=\"{:.1}\" y2=\"{bottom}\" \
                         stroke=\"{}\" stroke-width=\"1.5\"><title>published {p:.1} ms, arrived \
                         {a:.1} ms: {:.1} ms</title></line>",
                        x(*p),
                        x(*a),
                        COLORS[0],
                        a - p
                    );
                }
                None => {
                    let (cx, cy) = (x(*p), bottom - 4.0);
                    let _ = write!(
                        h,
                        "<path d=\"M{:.1} {:.1}l8 8m0 -8l-8 8\" stroke=\"{}\" stroke-width=\"2\">\
                         <title>published {p:.1} ms, never arrived</title></path>",
                        cx - 4.0,
                        cy - 4.0,
                        COLORS[3]
                    );
                }
            }
        }
    }
    let _ = writeln!(
        h,
        "<text x=\"{left}\" y=\"{}\">{start:.0} ms</text><text x=\"{}\" y=\"{}\">{end:.0} ms</text>\
         <text x=\"{}\" y=\"{}\">line: one event; grey dots: requests sent</text></svg>",
        height - 6.0,
        left + width - 50.0,
        height - 6.0,
        left + 140.0,
        height - 6.0
    );
}

/// An experiment's page loads, one section per strategy under one time
/// axis, so widths compare across strategies: a load that took nine times
/// as long is drawn nine times as wide (R4).
fn waterfalls(h: &mut String, loads: &[(String, Vec<Record>)]) {
    if loads.iter().all(|(_, r)| r.is_empty()) {
        return;
    }
    let axis = Axis::of(loads.iter().map(|(_, r)| r.as_slice()));
    let titles: Vec<String> = loads
        .iter()
        .map(|(name, records)| {
            let end = records.iter().map(Record::end_ms).fold(0.0, f64::max);
            let mut conns: Vec<u64> = records
                .iter()
                .filter_map(|r| r.connection.as_ref().map(|c| c.id))
                .collect();
            conns.sort_unstable();
            conns.dedup();
            format!(
                "{name} — {end:.0} ms, {} connection{}",
                conns.len(),
                if conns.len() == 1 { "" } else { "s" }
            )
        })
        .collect();
    let sections: Vec<Section> = loads
        .iter()
        .zip(&titles)
        .map(|((_, records), title)| Section {
            title: Some(title),
            records,
        })
        .collect();
    h.push_str(
        "<h3>Waterfalls: one time axis for every strategy, from the first request's start</h3>\n<div class=\"wide\">",
    );
    chart::svg(
        h,
        &sections,
        &axis,
        Geometry::COMPACT,
        "page-load waterfalls",
    );
    h.push_str("</div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{ConnRecord, Kind, Phases};

    /// A request on connection `conn` from `start` to `end` ms, its time
    /// waiting then downloading.
    fn record(index: usize, conn: u64, start: f64, end: f64) -> Record {
        let mut r = Record::failed(
            index,
            format!("http://h/{index}"),
            Kind::Url,
            start,
            String::new(),
        );
        r.error = None;
        r.status = Some(200);
        r.connection = Some(ConnRecord {
            id: conn,
            local: "l".into(),
            peer: "p".into(),
            tls: None,
        });
        r.total_ms = end - start;
        r.phases_ms = Some(Phases {
            queued: 1.0,
            wait: (end - start - 1.0) / 2.0,
            download: (end - start - 1.0) / 2.0,
            ..Phases::default()
        });
        r
    }

    /// Right ends of the bars drawn in `svg`, in px.
    fn bar_ends(svg: &str) -> Vec<f64> {
        svg.split("<rect class=\"")
            .skip(1)
            .filter(|r| r.starts_with("wait") || r.starts_with("download"))
            .filter_map(|r| {
                let num = |name: &str| -> Option<f64> {
                    let at = r.find(&format!(" {name}=\""))? + name.len() + 3;
                    r[at..].split('"').next()?.parse().ok()
                };
                Some(num("x")? + num("width")?)
            })
            .collect()
    }

    #[test]
    fn repeats_show_the_spread_and_n_in_table_and_chart() {
        let mut o = crate::experiments::Outcome {
            id: "nagle",
            title: "t",
            rules: "R2.3",
            columns: vec!["p50 ms".into(), "model ms".into()],
            rows: Vec::new(),
            chart: (0, Some(1)),
            pass: true,
            verdict: String::new(),
            notes: Vec::new(),
            waterfalls: Vec::new(),
            page_loads: Vec::new(),
            timelines: Vec::new(),
            repeats: 3,
            runs_matched: 2,
            losses: crate::experiments::Losses {
                dropped_packets: 7,
                rto: Some(1),
                retransmitted_segments: Some(5),
            },
        };
        let spread = |median, p10, p90| crate::experiments::Spread {
            median,
            p10,
            p90,
            n: 3,
        };
        o.rows = vec![Row {
            label: "Nagle on".into(),
            values: vec![Some(145.0), Some(140.0)],
            spread: vec![
                Some(spread(145.0, 144.2, 318.4)),
                Some(spread(140.0, 140.0, 140.0)),
            ],
            n: 3,
        }];
        let mut h = String::new();
        section(&mut h, &o, false);
        assert!(h.contains("<th>N</th>"), "{h}");
        assert!(
            h.contains("<td>145 [144–318]</td><td>140</td><td>3</td>"),
            "{h}"
        );
        assert!(h.contains("<title>p10–p90: 144–318</title>"), "{h}");
        assert!(h.contains("3 runs: each value is the median"), "{h}");
        assert!(
            h.contains("7 packets dropped by the link, 1 retransmission timeouts and 5 segments"),
            "{h}"
        );
        assert!(h.contains("2 of 3 runs matched on their own"), "{h}");
    }

    #[test]
    fn page_loads_share_one_axis_so_widths_compare() {
        let mut o = crate::experiments::Outcome {
            id: "page-load",
            title: "t",
            rules: "R4",
            columns: vec!["wall ms".into()],
            rows: Vec::new(),
            chart: (0, None),
            pass: true,
            verdict: String::new(),
            notes: Vec::new(),
            waterfalls: Vec::new(),
            page_loads: Vec::new(),
            timelines: Vec::new(),
            repeats: 1,
            runs_matched: 1,
            losses: crate::experiments::Losses::default(),
        };
        o.page_loads = vec![
            (
                "serial".into(),
                vec![record(1, 1, 0.0, 700.0), record(2, 2, 700.0, 1334.0)],
            ),
            (
                "pipelined 1".into(),
                vec![record(1, 1, 0.0, 100.0), record(2, 1, 100.0, 154.0)],
            ),
        ];
        let mut h = String::new();
        section(&mut h, &o, false);
        assert_eq!(
            h.matches("<svg class=\"waterfall\"").count(),
            1,
            "one chart"
        );
        assert!(h.contains("serial — 1334 ms, 2 connections"), "{h}");
        assert!(
            h.contains(">1400 ms</text>"),
            "the axis ends on a tick past 1334 ms"
        );
        let (serial, pipelined) = h.split_once("pipelined 1 — 154 ms").unwrap();
        let legend_end = serial.find("</g>").unwrap();
        let left = Geometry::COMPACT.label_w;
        let end = |s: &str| bar_ends(s).into_iter().fold(0.0, f64::max) - left;
        let ratio = end(&serial[legend_end..]) / end(pipelined);
        assert!((ratio - 1334.0 / 154.0).abs() < 0.01, "{ratio}");
        // Queued time is drawn, hollow (its CSS), not as an active phase.
        assert!(h.contains("<rect class=\"queued\""));
        assert!(chart::style().contains("rect.queued{fill:#fff;stroke:"));
    }
}
