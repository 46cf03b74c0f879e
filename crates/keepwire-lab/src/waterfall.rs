//! `keepwire get --waterfall FILE.html`: the requests as a browser's network
//! waterfall, one self-contained HTML page (inline SVG and CSS, no scripts,
//! fonts or other assets), so the strategies of R4 can be compared by
//! eye: rows are grouped by connection (R1.1), each row has a bar per phase
//! (R1.2), and the title says how long the whole took and how many
//! connections it opened.

use std::fmt::Write as _;

use crate::load::{Phases, Record, Strategy, Summary};

/// Phases in drawing order: CSS class, legend label, colour.
const PHASES: [(&str, &str, &str); 6] = [
    ("queued", "queued", "#c3c8cf"),
    ("dns", "DNS", "#17a2b8"),
    ("connect", "connect", "#f08c00"),
    ("send", "sent", "#7048e8"),
    ("wait", "waiting (TTFB)", "#2f9e44"),
    ("download", "download", "#1c7ed6"),
];

const LABEL_W: f64 = 380.0;
const CHART_W: f64 = 760.0;
const RIGHT_PAD: f64 = 80.0;
const ROW_H: f64 = 18.0;
const GROUP_H: f64 = 24.0;
const LEGEND_H: f64 = 30.0;
const AXIS_H: f64 = 24.0;
const BAR_H: f64 = 10.0;

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A tick step of 1, 2 or 5 × 10^k giving at most about `ticks` ticks.
fn tick_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(1e-6);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow)
}

fn fmt_ms(v: f64, step: f64) -> String {
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
fn shorten(s: &str, max: usize) -> String {
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

/// Phase spans of a record as (class, start ms, end ms), absolute.
fn spans(r: &Record) -> Vec<(&'static str, f64, f64)> {
    if r.phases_ms.is_none() {
        return Vec::new();
    }
    let durations = Phases::in_order(r.phases_ms).map(|d| d.unwrap_or(0.0));
    let mut at = r.start_ms;
    let mut out = Vec::new();
    for ((class, _, _), d) in PHASES.iter().zip(durations) {
        if d > 0.0 {
            out.push((*class, at, at + d));
        }
        at += d;
    }
    out
}

/// The tooltip of a row.
fn describe(r: &Record) -> String {
    let mut s = format!("#{} GET {}", r.index, r.url);
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
    if let Some(p) = r.phases_ms {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        let _ = write!(
            s,
            "\nqueued {:.2} ms, DNS {}, connect {}, sent {:.2} ms, waiting (TTFB) {:.2} ms, download {:.2} ms",
            p.queued,
            opt(p.dns),
            opt(p.connect),
            p.send,
            p.wait,
            p.download
        );
    }
    let _ = write!(s, "\ntotal {:.2} ms", r.total_ms);
    s
}

/// One connection's rows.
struct Group<'a> {
    conn: Option<u64>,
    rows: Vec<&'a Record>,
}

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

/// The whole page: the head and its styles, the headline, the chart
/// (legend, time axis, one group of rows per connection) and the same
/// numbers as a table.
pub fn render(records: &[Record], summary: &Summary) -> String {
    let layout = Layout::new(records, summary);
    let title_urls = summary.urls.join(" ");
    let mut h = String::new();
    head(&mut h, &title_urls, summary);
    let _ = writeln!(
        h,
        "<h1>keepwire get: {}</h1>",
        esc(&headline(&title_urls, summary))
    );
    let _ = writeln!(h, "<p class=\"facts\">{}</p>", esc(&facts(summary)));
    let _ = writeln!(
        h,
        "<div class=\"chart\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"{}\">",
        esc(&format!(
            "Waterfall of {} requests over {} connections",
            summary.requests, summary.connections_opened
        )),
        w = layout.width,
        ht = layout.height,
    );
    legend(&mut h);
    axis(&mut h, &layout);
    let base = records
        .first()
        .map(|r| origin_prefix(&r.url))
        .unwrap_or_default();
    let mut y = layout.top;
    for (gi, g) in layout.groups.iter().enumerate() {
        y = connection(&mut h, &layout, g, gi, y, &base);
    }
    h.push_str("</svg></div>\n");
    table(&mut h, records);
    h.push_str("<p class=\"facts\">Times in milliseconds from the first request. Hover a row for its details. Made by <code>keepwire get --waterfall</code>.</p>\n");
    h.push_str("</body>\n</html>\n");
    h
}

/// The chart's geometry: the time axis and the rows' groups.
struct Layout<'a> {
    step: f64,
    axis_max: f64,
    groups: Vec<Group<'a>>,
    /// Where the first row starts.
    top: f64,
    width: f64,
    height: f64,
}

impl<'a> Layout<'a> {
    fn new(records: &'a [Record], summary: &Summary) -> Self {
        let end = records
            .iter()
            .map(Record::end_ms)
            .fold(summary.wall_ms, f64::max)
            .max(0.001);
        let step = tick_step(end, 10.0);
        let groups = groups(records);
        let rows_h: f64 = groups
            .iter()
            .map(|g| GROUP_H + g.rows.len() as f64 * ROW_H)
            .sum();
        let top = LEGEND_H + AXIS_H;
        Layout {
            step,
            axis_max: (end / step).ceil().max(1.0) * step,
            groups,
            top,
            width: LABEL_W + CHART_W + RIGHT_PAD,
            height: top + rows_h + 8.0,
        }
    }

    /// The x coordinate of a time.
    fn x(&self, ms: f64) -> f64 {
        LABEL_W + ms.clamp(0.0, self.axis_max) / self.axis_max * CHART_W
    }
}

/// "page URL — strategy, limit[, depth]".
fn headline(title_urls: &str, summary: &Summary) -> String {
    let limit = match summary.strategy {
        Strategy::Serial => "one connection at a time".to_string(),
        _ => format!(
            "up to {} connection{}",
            summary.max_connections,
            if summary.max_connections == 1 {
                ""
            } else {
                "s"
            }
        ),
    };
    format!(
        "{} {} — {}, {limit}{}",
        if summary.page {
            "page"
        } else if summary.urls.len() == 1 {
            "URL"
        } else {
            "URLs"
        },
        title_urls,
        summary.strategy.name(),
        summary
            .depth
            .map_or(String::new(), |d| format!(", depth {d}"))
    )
}

/// The line of totals under the headline.
fn facts(summary: &Summary) -> String {
    format!(
        "wall time {:.2} ms · {} request{} ({} failed) · {} connection{} opened · {} reused · {} retr{} · {} body bytes",
        summary.wall_ms,
        summary.requests,
        if summary.requests == 1 { "" } else { "s" },
        summary.failed,
        summary.connections_opened,
        if summary.connections_opened == 1 {
            ""
        } else {
            "s"
        },
        summary.reused,
        summary.retries,
        if summary.retries == 1 { "y" } else { "ies" },
        summary.bytes
    )
}

/// From the doctype to `<body>`: the title and the styles.
fn head(h: &mut String, title_urls: &str, summary: &Summary) {
    h.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        h,
        "<title>keepwire get waterfall: {} ({})</title>",
        esc(title_urls),
        esc(summary.strategy.name())
    );
    h.push_str("<style>\n");
    h.push_str(
        "body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1b1f24;background:#fff}\n\
         h1{font-size:18px;margin:0 0 4px}\n\
         p.facts{margin:0 0 16px;color:#444}\n\
         .chart{overflow-x:auto}\n\
         svg text{font:12px system-ui,-apple-system,'Segoe UI',sans-serif;fill:#1b1f24}\n\
         svg text.meta{fill:#555}\n\
         svg text.conn{font-weight:600}\n\
         svg text.tick{fill:#666;font-size:11px}\n\
         svg line.grid{stroke:#e3e6ea;stroke-width:1}\n\
         svg rect.band{fill:#f6f7f9}\n\
         svg rect.err{fill:#e03131}\n\
         svg g.req:hover rect.hover{fill:#fff3bf}\n\
         svg rect.hover{fill:transparent}\n\
         table{border-collapse:collapse;margin-top:20px;font-size:12px}\n\
         th,td{padding:2px 8px;border-bottom:1px solid #e3e6ea;text-align:right;white-space:nowrap}\n\
         th{background:#f6f7f9}\n\
         td.url,th.url{text-align:left}\n\
         td.err{color:#c92a2a;text-align:left;white-space:normal}\n",
    );
    for (class, _, colour) in PHASES {
        let _ = writeln!(h, "svg rect.{class}{{fill:{colour}}}");
    }
    h.push_str("</style>\n</head>\n<body>\n");
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
        lx += 26.0 + label.len() as f64 * 7.0;
    }
    let _ = writeln!(
        h,
        "<rect class=\"err\" x=\"{lx}\" y=\"8\" width=\"14\" height=\"10\"/><text x=\"{}\" y=\"17\">failed</text>",
        lx + 18.0
    );
    h.push_str("</g>\n");
}

/// The time axis and its grid.
fn axis(h: &mut String, l: &Layout) {
    h.push_str("<g class=\"axis\">\n");
    let ticks = (l.axis_max / l.step).round() as usize;
    for i in 0..=ticks {
        let v = i as f64 * l.step;
        let tx = l.x(v);
        let _ = writeln!(
            h,
            "<line class=\"grid\" x1=\"{tx:.1}\" y1=\"{}\" x2=\"{tx:.1}\" y2=\"{}\"/><text class=\"tick\" x=\"{tx:.1}\" y=\"{}\" text-anchor=\"middle\">{} ms</text>",
            l.top - 4.0,
            l.height,
            l.top - 8.0,
            fmt_ms(v, l.step)
        );
    }
    h.push_str("</g>\n");
}

/// One connection's group at `y`: its label, its lifetime line, its rows.
/// Returns where the next group starts.
fn connection(h: &mut String, l: &Layout, g: &Group, gi: usize, mut y: f64, base: &str) -> f64 {
    let width = l.width;
    let group_h = GROUP_H + g.rows.len() as f64 * ROW_H;
    let label = match g.conn {
        Some(id) => {
            let first = g.rows[0];
            let c = first.connection.as_ref();
            let opened = g.rows.iter().any(|r| r.reused == Some(false));
            format!(
                "connection #{id} · {} · {} → {} · {} request{}",
                if opened { "new" } else { "reused" },
                c.map_or("", |c| c.local.as_str()),
                c.map_or("", |c| c.peer.as_str()),
                g.rows.len(),
                if g.rows.len() == 1 { "" } else { "s" }
            )
        }
        None => format!("no connection · {} failed", g.rows.len()),
    };
    let _ = writeln!(
        h,
        "<g class=\"connection\" data-conn=\"{}\">",
        g.conn.map_or("none".to_string(), |c| c.to_string())
    );
    if gi % 2 == 0 {
        let _ = writeln!(
            h,
            "<rect class=\"band\" x=\"0\" y=\"{y}\" width=\"{width}\" height=\"{group_h}\"/>"
        );
    }
    let _ = writeln!(
        h,
        "<text class=\"conn\" x=\"8\" y=\"{}\">{}</text>",
        y + 16.0,
        esc(&label)
    );
    // The connection's lifetime as seen by its requests.
    if g.conn.is_some() {
        let from = g.rows.iter().map(|r| r.start_ms).fold(f64::MAX, f64::min);
        let to = g.rows.iter().map(|r| r.end_ms()).fold(0.0, f64::max);
        let _ = writeln!(
            h,
            "<line x1=\"{:.1}\" y1=\"{}\" x2=\"{:.1}\" y2=\"{}\" stroke=\"#868e96\" stroke-width=\"2\"/>",
            l.x(from),
            y + GROUP_H - 3.0,
            l.x(to),
            y + GROUP_H - 3.0
        );
    }
    y += GROUP_H;
    for r in &g.rows {
        request(h, l, r, y, base);
        y += ROW_H;
    }
    h.push_str("</g>\n");
    y
}

/// One request's row at `y`: its name and status, a bar per phase, its total.
fn request(h: &mut String, l: &Layout, r: &Record, y: f64, base: &str) {
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
    let name = shorten(&row_name(&r.url, base), 34);
    let _ = writeln!(
        h,
        "<g class=\"req\" data-index=\"{}\"><title>{}</title>",
        r.index,
        esc(&describe(r))
    );
    let _ = writeln!(
        h,
        "<rect class=\"hover\" x=\"0\" y=\"{y}\" width=\"{}\" height=\"{ROW_H}\"/>",
        l.width
    );
    let _ = writeln!(
        h,
        "<text x=\"20\" y=\"{}\">#{} {}</text>",
        y + 13.0,
        r.index,
        esc(&name)
    );
    let _ = writeln!(
        h,
        "<text class=\"meta\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        LABEL_W - 10.0,
        y + 13.0,
        esc(&format!("{status} · {}{reuse}", fmt_size(r.size)))
    );
    let bar_y = y + (ROW_H - BAR_H) / 2.0;
    let spans = spans(r);
    if spans.is_empty() {
        // No phases: a failure before any response byte.
        let x0 = l.x(r.start_ms);
        let w = (l.x(r.end_ms()) - x0).max(2.0);
        let _ = writeln!(
            h,
            "<rect class=\"err\" x=\"{x0:.2}\" y=\"{bar_y}\" width=\"{w:.2}\" height=\"{BAR_H}\"/>"
        );
    }
    for (class, from, to) in spans {
        let x0 = l.x(from);
        let w = (l.x(to) - x0).max(0.5);
        let _ = writeln!(
            h,
            "<rect class=\"{class}\" x=\"{x0:.2}\" y=\"{bar_y}\" width=\"{w:.2}\" height=\"{BAR_H}\"/>"
        );
    }
    if r.status.is_some() && r.error.is_some() {
        let _ = writeln!(
            h,
            "<rect class=\"err\" x=\"{:.2}\" y=\"{bar_y}\" width=\"3\" height=\"{BAR_H}\"/>",
            l.x(r.end_ms())
        );
    }
    let _ = writeln!(
        h,
        "<text class=\"meta\" x=\"{:.1}\" y=\"{}\">{:.2} ms</text>",
        l.x(r.end_ms()) + 6.0,
        y + 13.0,
        r.total_ms
    );
    h.push_str("</g>\n");
}

/// The same numbers as a table, in request order.
fn table(h: &mut String, records: &[Record]) {
    h.push_str("<table>\n<thead><tr><th>#</th><th class=\"url\">URL</th><th>status</th><th>bytes</th><th>conn</th><th>new/reused</th><th>retries</th><th>start</th><th>queued</th><th>DNS</th><th>connect</th><th>sent</th><th>waiting (TTFB)</th><th>download</th><th>total</th></tr></thead>\n<tbody>\n");
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for r in records {
        let phases: String = Phases::in_order(r.phases_ms)
            .into_iter()
            .map(|v| format!("<td>{}</td>", opt(v)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"url\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td>{phases}<td>{:.2}</td></tr>",
            r.index,
            esc(&r.url),
            r.status.map_or("-".to_string(), |s| s.to_string()),
            r.size,
            r.connection
                .as_ref()
                .map_or("-".to_string(), |c| format!("#{}", c.id)),
            match r.reused {
                Some(true) => "reused",
                Some(false) => "new",
                None => "-",
            },
            r.retries,
            r.start_ms,
            r.total_ms
        );
        if let Some(e) = &r.error {
            let _ = writeln!(
                h,
                "<tr><td></td><td class=\"err\" colspan=\"14\">{}</td></tr>",
                esc(e)
            );
        }
    }
    h.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0, 10.0), 10.0);
        assert_eq!(tick_step(13.0, 10.0), 2.0);
        assert_eq!(tick_step(0.37, 10.0), 0.05);
        assert_eq!(fmt_ms(0.05, 0.05), "0.05");
        assert_eq!(fmt_ms(20.0, 10.0), "20");
    }

    #[test]
    fn shortens_in_the_middle() {
        assert_eq!(shorten("abcdef", 10), "abcdef");
        let s = shorten("/a/very/long/path/to/some/object.png", 12);
        assert_eq!(s.chars().count(), 12);
        assert!(s.starts_with("/a/ver") && s.ends_with(".png"), "{s}");
    }
}
