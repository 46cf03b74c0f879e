//! The waterfall chart itself: one inline SVG that `keepwire get
//! --waterfall` and the lab report both draw with, so the two pictures
//! read the same way (R4).
//!
//! Why it looks as it does:
//! - time zero is the first request's start (the records' clock), and one
//!   [`Axis`] with ticks serves every page load drawn together, so a serial
//!   load of 1,334 ms is drawn nine times as wide as a pipelined one of
//!   154 ms: widths compare across strategies;
//! - each bar is split by phase and coloured as browser devtools do
//!   (queued, DNS, connect, TLS, request sent, waiting, download), with a
//!   legend (R1.2);
//! - queued time is drawn hollow: nothing is on the wire while a request
//!   waits for a connection or for its turn on one;
//! - rows are grouped by the connection that carried them (R1.1): a
//!   header per connection, or in the compact form a shaded lane and the
//!   connection's number on each row.

use std::fmt::Write as _;

use super::esc;
use crate::load::{Phases, Record};

/// Phases in drawing order: CSS class, legend label, colour (queued: its
/// outline; it is drawn hollow).
pub const PHASES: [(&str, &str, &str); 7] = [
    ("queued", "queued", "#868e96"),
    ("dns", "DNS", "#0c8599"),
    ("connect", "connect", "#f08c00"),
    ("tls", "TLS", "#ae3ec9"),
    ("send", "request sent", "#495057"),
    ("wait", "waiting (TTFB)", "#2f9e44"),
    ("download", "download", "#1c7ed6"),
];

/// A request that failed (bar and legend).
pub const FAILED: &str = "#e03131";

const RIGHT_PAD: f64 = 80.0;
const GROUP_H: f64 = 24.0;
const SECTION_H: f64 = 26.0;
const LEGEND_H: f64 = 30.0;
const AXIS_H: f64 = 24.0;
const BAR_H: f64 = 10.0;

/// The chart's CSS: include it once in a page that draws charts.
pub fn style() -> String {
    let mut s = String::from(
        "svg.waterfall text{font:12px system-ui,-apple-system,'Segoe UI',sans-serif;fill:#1b1f24}\n\
         svg.waterfall text.meta{fill:#555}\n\
         svg.waterfall text.conn,svg.waterfall text.section{font-weight:600}\n\
         svg.waterfall text.tick{fill:#666;font-size:11px}\n\
         svg.waterfall line.grid{stroke:#dee2e6;stroke-width:1}\n\
         svg.waterfall rect.band{fill:#f4f5f7}\n\
         svg.waterfall rect,svg.waterfall line{shape-rendering:crispEdges}\n\
         svg.waterfall g.req:hover rect.hover{fill:#fff3bf}\n\
         svg.waterfall rect.hover{fill:transparent}\n",
    );
    for (class, _, colour) in PHASES {
        if class == "queued" {
            let _ = writeln!(
                s,
                "svg.waterfall rect.queued{{fill:#fff;stroke:{colour};stroke-width:1}}"
            );
        } else {
            let _ = writeln!(s, "svg.waterfall rect.{class}{{fill:{colour}}}");
        }
    }
    let _ = writeln!(s, "svg.waterfall rect.err{{fill:{FAILED}}}");
    s
}

/// How a chart is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Width of the labels left of the time axis.
    pub label_w: f64,
    /// Width of the time axis.
    pub chart_w: f64,
    /// Height of a request's row.
    pub row_h: f64,
    /// A header row per connection; else the connection on each row.
    pub group_headers: bool,
}

impl Geometry {
    /// `keepwire get --waterfall`: one page load, room for URLs.
    pub const PAGE: Geometry = Geometry {
        label_w: 380.0,
        chart_w: 760.0,
        row_h: 18.0,
        group_headers: true,
    };
    /// The lab report: several page loads under one axis.
    pub const COMPACT: Geometry = Geometry {
        label_w: 300.0,
        chart_w: 560.0,
        row_h: 15.0,
        group_headers: false,
    };
}

/// The time axis: 0 to `max_ms`, a tick every `step` ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    max_ms: f64,
    step: f64,
}

impl Axis {
    /// An axis from 0 to at least `end_ms`, ending on a round tick.
    pub fn covering(end_ms: f64) -> Axis {
        let end = end_ms.max(0.001);
        let step = tick_step(end, 10.0);
        Axis {
            max_ms: (end / step).ceil().max(1.0) * step,
            step,
        }
    }

    /// An axis covering every record of `loads`.
    pub fn of<'a>(loads: impl IntoIterator<Item = &'a [Record]>) -> Axis {
        Axis::covering(
            loads
                .into_iter()
                .flatten()
                .map(Record::end_ms)
                .fold(0.0, f64::max),
        )
    }

    /// Where the axis ends, ms.
    pub fn max_ms(&self) -> f64 {
        self.max_ms
    }
}

/// One page load in a chart: a title row (several loads) and its records.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    /// Drawn above the load's rows (`serial — 1334 ms, 13 connections`).
    pub title: Option<&'a str>,
    /// Its requests; `start_ms` from the load's first request.
    pub records: &'a [Record],
}

/// A tick step of 1, 2 or 5 × 10^k giving at most about `ticks` ticks.
pub(super) fn tick_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(1e-6);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow)
}

pub(super) fn fmt_ms(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

fn fmt_size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// Shortens `s` to `max` characters with an ellipsis in the middle.
pub(super) fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max / 2).collect();
    let tail: String = s.chars().skip(n - (max - max / 2 - 1)).collect();
    format!("{head}…{tail}")
}

/// The URL as a row shows it: path and query when it is on the first
/// request's origin, else the whole URL.
fn row_name(url: &str, origin: &str) -> String {
    match url.strip_prefix(origin) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => url.to_string(),
    }
}

fn origin_prefix(url: &str) -> String {
    match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            let end = after.find('/').map_or(url.len(), |j| i + 3 + j);
            url[..end].to_string()
        }
        None => String::new(),
    }
}

/// Durations in [`PHASES`] order: the TLS handshake drawn apart from the
/// TCP handshake that `connect` includes.
fn durations(p: &Phases) -> [f64; 7] {
    let tls = p.tls.unwrap_or(0.0);
    let connect = p.connect.map_or(0.0, |c| (c - tls).max(0.0));
    [
        p.queued,
        p.dns.unwrap_or(0.0),
        connect,
        tls,
        p.send,
        p.wait,
        p.download,
    ]
}

/// Phase spans of a record as (class, start ms, end ms), absolute.
fn spans(r: &Record) -> Vec<(&'static str, f64, f64)> {
    let Some(p) = &r.phases_ms else {
        return Vec::new();
    };
    let mut at = r.start_ms;
    let mut out = Vec::new();
    for ((class, _, _), d) in PHASES.iter().zip(durations(p)) {
        if d > 0.0 {
            out.push((*class, at, at + d));
        }
        at += d;
    }
    out
}

/// The tooltip of a row (the URL as the row names it: the page's
/// origin is in the title, and the lab report names no URL at all).
fn describe(r: &Record, base: &str) -> String {
    let mut s = format!("#{} {}", r.index, row_name(&r.url, base));
    match (r.status, &r.error) {
        (Some(code), None) => {
            let _ = write!(s, "\n{code}, {} body bytes", r.size);
        }
        (Some(code), Some(e)) => {
            let _ = write!(s, "\n{code}, {} body bytes, then: {e}", r.size);
        }
        (None, Some(e)) => {
            let _ = write!(s, "\nfailed: {e}");
        }
        (None, None) => {}
    }
    if let Some(c) = &r.connection {
        let how = if r.reused == Some(true) {
            format!(
                "reused (request {} on it)",
                r.conn_request_index.unwrap_or(0) + 1
            )
        } else {
            "new".to_string()
        };
        let _ = write!(s, "\nconnection #{} {how}: {} → {}", c.id, c.local, c.peer);
    }
    if r.retries > 0 {
        let _ = write!(s, "\nretries: {}", r.retries);
    }
    if r.pipelined {
        s.push_str("\npipelined");
    }
    let _ = write!(s, "\nstarted at {:.2} ms", r.start_ms);
    if let Some(p) = &r.phases_ms {
        let d = durations(p);
        let parts: Vec<String> = PHASES
            .iter()
            .zip(d)
            .filter(|((class, _, _), v)| *v > 0.0 || matches!(*class, "queued" | "send" | "wait"))
            .map(|((_, label, _), v)| format!("{label} {v:.2} ms"))
            .collect();
        let _ = write!(s, "\n{}", parts.join(", "));
    }
    let _ = write!(s, "\ntotal {:.2} ms", r.total_ms);
    s
}

/// One connection's rows.
struct Group<'a> {
    conn: Option<u64>,
    rows: Vec<&'a Record>,
}

/// Records grouped by connection (first-opened first), each group's rows
/// in the order the connection carried them; failures without a
/// connection last.
fn groups(records: &[Record]) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    for r in records {
        let conn = r.connection.as_ref().map(|c| c.id);
        match out.iter_mut().find(|g| g.conn == conn) {
            Some(g) => g.rows.push(r),
            None => out.push(Group {
                conn,
                rows: vec![r],
            }),
        }
    }
    out.sort_by_key(|g| (g.conn.is_none(), g.conn));
    for g in &mut out {
        g.rows.sort_by(|a, b| {
            (a.conn_request_index, a.index)
                .cmp(&(b.conn_request_index, b.index))
                .then(a.start_ms.total_cmp(&b.start_ms))
        });
    }
    out
}

/// Where things go: the axis, the geometry, and the three layers drawn in
/// order (backgrounds, grid, rows) so the grid shows over the bands and
/// under the bars.
struct Canvas<'a> {
    axis: &'a Axis,
    g: Geometry,
    back: String,
    front: String,
}

impl Canvas<'_> {
    fn width(&self) -> f64 {
        self.g.label_w + self.g.chart_w + RIGHT_PAD
    }

    /// The x coordinate of a time.
    fn x(&self, ms: f64) -> f64 {
        self.g.label_w + ms.clamp(0.0, self.axis.max_ms) / self.axis.max_ms * self.g.chart_w
    }
}

/// Draws `sections` as one SVG under one time axis.
pub fn svg(h: &mut String, sections: &[Section<'_>], axis: &Axis, g: Geometry, label: &str) {
    let mut c = Canvas {
        axis,
        g,
        back: String::new(),
        front: String::new(),
    };
    let top = LEGEND_H + AXIS_H;
    let mut y = top;
    for s in sections {
        let base = s
            .records
            .first()
            .map(|r| origin_prefix(&r.url))
            .unwrap_or_default();
        if let Some(title) = s.title {
            let _ = writeln!(
                c.front,
                "<text class=\"section\" x=\"8\" y=\"{}\">{}</text>",
                y + 18.0,
                esc(title)
            );
            y += SECTION_H;
        }
        for (gi, grp) in groups(s.records).iter().enumerate() {
            y = connection(&mut c, grp, gi, y, &base);
        }
    }
    let height = y + 8.0;
    let width = c.width();
    let _ = writeln!(
        h,
        "<svg class=\"waterfall\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
    legend(h);
    h.push_str(&c.back);
    grid(h, &c, top, height);
    h.push_str(&c.front);
    h.push_str("</svg>\n");
}

/// The phases' colours, and failure's.
fn legend(h: &mut String) {
    let mut lx = 8.0;
    h.push_str("<g class=\"legend\">\n");
    for (class, label, _) in PHASES {
        let _ = writeln!(
            h,
            "<rect class=\"{class}\" x=\"{lx}\" y=\"8\" width=\"14\" height=\"10\"/><text x=\"{}\" y=\"17\">{}</text>",
            lx + 18.0,
            esc(label)
        );
        lx += 30.0 + label.chars().count() as f64 * 6.5;
    }
    let _ = writeln!(
        h,
        "<rect class=\"err\" x=\"{lx}\" y=\"8\" width=\"14\" height=\"10\"/><text x=\"{}\" y=\"17\">failed</text>",
        lx + 18.0
    );
    h.push_str("</g>\n");
}

/// The time axis's ticks and their grid lines down the whole chart.
fn grid(h: &mut String, c: &Canvas, top: f64, height: f64) {
    h.push_str("<g class=\"axis\">\n");
    let ticks = (c.axis.max_ms / c.axis.step).round() as usize;
    for i in 0..=ticks {
        let v = i as f64 * c.axis.step;
        let tx = c.x(v).round();
        let _ = writeln!(
            h,
            "<line class=\"grid\" x1=\"{tx}\" y1=\"{}\" x2=\"{tx}\" y2=\"{height}\"/><text class=\"tick\" x=\"{tx}\" y=\"{}\" text-anchor=\"middle\">{} ms</text>",
            top - 4.0,
            top - 8.0,
            fmt_ms(v, c.axis.step)
        );
    }
    h.push_str("</g>\n");
}

/// One connection's rows at `y`, with its header (or lane) and lifetime
/// line. Returns where the next group starts.
fn connection(c: &mut Canvas, grp: &Group, gi: usize, mut y: f64, base: &str) -> f64 {
    let header = if c.g.group_headers { GROUP_H } else { 0.0 };
    let group_h = header + grp.rows.len() as f64 * c.g.row_h;
    if gi % 2 == 0 {
        let _ = writeln!(
            c.back,
            "<rect class=\"band\" x=\"0\" y=\"{y}\" width=\"{}\" height=\"{group_h}\"/>",
            c.width()
        );
    }
    let _ = writeln!(
        c.front,
        "<g class=\"connection\" data-conn=\"{}\">",
        grp.conn.map_or("none".to_string(), |c| c.to_string())
    );
    if c.g.group_headers {
        let label = match grp.conn {
            Some(id) => {
                let conn = grp.rows[0].connection.as_ref();
                let opened = grp.rows.iter().any(|r| r.reused == Some(false));
                format!(
                    "connection #{id} · {} · {} → {} · {} request{}",
                    if opened { "new" } else { "reused" },
                    conn.map_or("", |c| c.local.as_str()),
                    conn.map_or("", |c| c.peer.as_str()),
                    grp.rows.len(),
                    if grp.rows.len() == 1 { "" } else { "s" }
                )
            }
            None => format!("no connection · {} failed", grp.rows.len()),
        };
        let _ = writeln!(
            c.front,
            "<text class=\"conn\" x=\"8\" y=\"{}\">{}</text>",
            y + 16.0,
            esc(&label)
        );
        // The connection's lifetime as its requests saw it.
        if grp.conn.is_some() {
            let from = grp.rows.iter().map(|r| r.start_ms).fold(f64::MAX, f64::min);
            let to = grp.rows.iter().map(|r| r.end_ms()).fold(0.0, f64::max);
            let ly = y + GROUP_H - 3.0;
            let _ = writeln!(
                c.front,
                "<line x1=\"{:.1}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"#868e96\" stroke-width=\"2\"/>",
                c.x(from),
                c.x(to),
            );
        }
    }
    y += header;
    for r in &grp.rows {
        request(c, r, y, base);
        y += c.g.row_h;
    }
    c.front.push_str("</g>\n");
    y
}

/// One request's row at `y`: its name and status, a bar per phase, its total.
fn request(c: &mut Canvas, r: &Record, y: f64, base: &str) {
    let g = c.g;
    let status = match (r.status, &r.error) {
        (Some(s), None) => s.to_string(),
        (Some(s), Some(_)) => format!("{s} (error)"),
        (None, _) => "failed".to_string(),
    };
    let reuse = match r.reused {
        Some(true) => " · reused",
        Some(false) => " · new",
        None => "",
    };
    let meta = if g.group_headers {
        format!("{status} · {}{reuse}", fmt_size(r.size))
    } else {
        let conn = r
            .connection
            .as_ref()
            .map_or("no connection".to_string(), |c| format!("conn #{}", c.id));
        format!("{status} · {conn}{reuse}")
    };
    let max_name = if g.group_headers { 34 } else { 22 };
    let name = shorten(&row_name(&r.url, base), max_name);
    let text_y = y + g.row_h / 2.0 + 4.0;
    let h = &mut c.front;
    let _ = writeln!(
        h,
        "<g class=\"req\" data-index=\"{}\"><title>{}</title>",
        r.index,
        esc(&describe(r, base))
    );
    let _ = writeln!(
        h,
        "<rect class=\"hover\" x=\"0\" y=\"{y}\" width=\"{}\" height=\"{}\"/>",
        g.label_w + g.chart_w + RIGHT_PAD,
        g.row_h
    );
    let _ = writeln!(
        h,
        "<text x=\"{}\" y=\"{text_y}\">#{} {}</text>",
        if g.group_headers { 20.0 } else { 8.0 },
        r.index,
        esc(&name)
    );
    let _ = writeln!(
        h,
        "<text class=\"meta\" x=\"{}\" y=\"{text_y}\" text-anchor=\"end\">{}</text>",
        g.label_w - 10.0,
        esc(&meta)
    );
    let bar_h = BAR_H.min(g.row_h - 4.0);
    let bar_y = (y + (g.row_h - bar_h) / 2.0).round();
    let spans = spans(r);
    let mut bars = String::new();
    if spans.is_empty() {
        // No phases: a failure before any response byte.
        let x0 = c.x(r.start_ms);
        let w = (c.x(r.end_ms()) - x0).max(2.0);
        let _ = writeln!(
            bars,
            "<rect class=\"err\" x=\"{x0:.2}\" y=\"{bar_y}\" width=\"{w:.2}\" height=\"{bar_h}\"/>"
        );
    }
    for (class, from, to) in spans {
        let x0 = c.x(from);
        let w = (c.x(to) - x0).max(0.5);
        let (x0, w, by, bh) = if class == "queued" {
            // Hollow, its outline inside the row's bar height.
            (x0 + 0.5, (w - 1.0).max(0.5), bar_y + 0.5, bar_h - 1.0)
        } else {
            (x0, w, bar_y, bar_h)
        };
        let _ = writeln!(
            bars,
            "<rect class=\"{class}\" x=\"{x0:.2}\" y=\"{by}\" width=\"{w:.2}\" height=\"{bh}\"/>"
        );
    }
    if r.status.is_some() && r.error.is_some() {
        let _ = writeln!(
            bars,
            "<rect class=\"err\" x=\"{:.2}\" y=\"{bar_y}\" width=\"3\" height=\"{bar_h}\"/>",
            c.x(r.end_ms())
        );
    }
    let _ = writeln!(
        bars,
        "<text class=\"meta\" x=\"{:.1}\" y=\"{text_y}\">{:.2} ms</text>",
        c.x(r.end_ms()) + 6.0,
        r.total_ms
    );
    let h = &mut c.front;
    h.push_str(&bars);
    h.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0, 10.0), 10.0);
        assert_eq!(tick_step(13.0, 10.0), 2.0);
        assert_eq!(tick_step(0.37, 10.0), 0.05);
        assert_eq!(fmt_ms(0.05, 0.05), "0.05");
        assert_eq!(fmt_ms(20.0, 10.0), "20");
        assert_eq!(Axis::covering(1334.0).max_ms(), 1400.0);
    }

    #[test]
    fn shortens_in_the_middle() {
        assert_eq!(shorten("abcdef", 10), "abcdef");
        let s = shorten("/a/very/long/path/to/some/object.png", 12);
        assert_eq!(s.chars().count(), 12);
        assert!(s.starts_with("/a/ver") && s.ends_with(".png"), "{s}");
    }

    #[test]
    fn tls_is_drawn_apart_from_the_tcp_handshake() {
        let p = Phases {
            queued: 1.0,
            dns: Some(0.5),
            connect: Some(30.0),
            tls: Some(20.0),
            send: 0.1,
            wait: 5.0,
            download: 2.0,
        };
        assert_eq!(durations(&p), [1.0, 0.5, 10.0, 20.0, 0.1, 5.0, 2.0]);
    }
}
