//! `keepwire get --waterfall FILE.html`: the requests as a browser's network
//! waterfall, one self-contained HTML page (inline SVG and CSS, no scripts,
//! fonts or other assets), so the strategies of R4 can be compared by
//! eye. The chart is [`chart`]'s, which the lab report draws with too:
//! rows grouped by connection (R1.1), a bar per phase (R1.2) from time
//! zero at the first request's start; under it the same numbers as a
//! table, and the title says how long the whole took and how many
//! connections it opened.

pub mod chart;

use std::fmt::Write as _;

use crate::load::{Phases, Record, Strategy, Summary};
use chart::{Axis, Geometry, Section};

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

/// The whole page: the head and its styles, the headline, the chart
/// (legend, time axis, one group of rows per connection) and the same
/// numbers as a table.
pub fn render(records: &[Record], summary: &Summary) -> String {
    let title_urls = summary.urls.join(" ");
    let mut h = String::new();
    head(&mut h, &title_urls, summary);
    let _ = writeln!(
        h,
        "<h1>keepwire get: {}</h1>",
        esc(&headline(&title_urls, summary))
    );
    let _ = writeln!(h, "<p class=\"facts\">{}</p>", esc(&facts(summary)));
    h.push_str("<div class=\"chart\">");
    let axis = Axis::covering(
        records
            .iter()
            .map(Record::end_ms)
            .fold(summary.wall_ms, f64::max),
    );
    chart::svg(
        &mut h,
        &[Section {
            title: None,
            records,
        }],
        &axis,
        Geometry::PAGE,
        &format!(
            "Waterfall of {} requests over {} connections",
            summary.requests, summary.connections_opened
        ),
    );
    h.push_str("</div>\n");
    table(&mut h, records);
    h.push_str("<p class=\"facts\">Times in milliseconds from the first request's start; queued time (hollow) is waiting for a connection or for a turn on one. Hover a row for its details. Made by <code>keepwire get --waterfall</code>.</p>\n");
    h.push_str("</body>\n</html>\n");
    h
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
         table{border-collapse:collapse;margin-top:20px;font-size:12px}\n\
         th,td{padding:2px 8px;border-bottom:1px solid #e3e6ea;text-align:right;white-space:nowrap}\n\
         th{background:#f6f7f9}\n\
         td.url,th.url{text-align:left}\n\
         td.err{color:#c92a2a;text-align:left;white-space:normal}\n",
    );
    h.push_str(&chart::style());
    h.push_str("</style>\n</head>\n<body>\n");
}

/// The same numbers as a table, in request order.
fn table(h: &mut String, records: &[Record]) {
    h.push_str("<table>\n<thead><tr><th>#</th><th class=\"url\">URL</th><th>status</th><th>bytes</th><th>conn</th><th>new/reused</th><th>retries</th><th>start</th><th>queued</th><th>DNS</th><th>connect</th><th>of it TLS</th><th>sent</th><th>waiting (TTFB)</th><th>download</th><th>total</th></tr></thead>\n<tbody>\n");
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for r in records {
        let mut cells = Phases::in_order(r.phases_ms).to_vec();
        cells.insert(3, r.phases_ms.and_then(|p| p.tls));
        let phases: String = cells
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
                "<tr><td></td><td class=\"err\" colspan=\"15\">{}</td></tr>",
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
}
