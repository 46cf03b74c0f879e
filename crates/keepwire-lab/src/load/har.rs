//! HAR 1.2 (HTTP Archive, <http://www.softwareishard.com/blog/har-12-spec/>)
//! of a [`load`](super::load): what browser devtools import, so a
//! `keepwire get` run can be looked at in the same waterfall a browser
//! draws for its own loads, and compared with one.
//!
//! Each request is an entry; with `--page` each page is a HAR page and its
//! sub-resources point at it. Timings follow the spec: `blocked` is the
//! time queued for a connection, `dns`/`connect`/`ssl` are -1 on a reused
//! connection, `connect` includes `ssl`, and `time` is the sum of the
//! others but `ssl`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::record::{Kind, Record};

/// The HAR document for `records`, the first of which started at `t0`
/// (wall clock) minus its `start_ms`.
pub fn build(records: &[Record], t0: SystemTime) -> Value {
    let mut pages = Vec::new();
    let mut entries = Vec::new();
    let mut page: Option<String> = None;
    for r in records {
        if r.kind == Kind::Page {
            let id = format!("page_{}", r.index);
            pages.push(json!({
                "startedDateTime": iso8601(t0 + ms(r.start_ms)),
                "id": id,
                "title": r.url,
                "pageTimings": { "onContentLoad": -1, "onLoad": -1 },
            }));
            page = Some(id);
        } else if r.kind == Kind::Url {
            page = None;
        }
        let mut entry = entry(r, t0);
        if let Some(p) = &page {
            entry["pageref"] = json!(p);
        }
        entries.push(entry);
    }
    // onLoad: from the page's start to the end of its last request.
    for p in &mut pages {
        let id = p["id"].clone();
        let start = records
            .iter()
            .find(|r| format!("page_{}", r.index) == id)
            .map_or(0.0, |r| r.start_ms);
        let end = records
            .iter()
            .zip(&entries)
            .filter(|(_, e)| e["pageref"] == id)
            .map(|(r, _)| r.end_ms())
            .fold(start, f64::max);
        p["pageTimings"]["onLoad"] = json!(((end - start) * 1000.0).round() / 1000.0);
    }
    let mut log = json!({
        "version": "1.2",
        "creator": { "name": "keepwire", "version": env!("CARGO_PKG_VERSION") },
        "entries": entries,
    });
    if !pages.is_empty() {
        log["pages"] = json!(pages);
    }
    json!({ "log": log })
}

fn entry(r: &Record, t0: SystemTime) -> Value {
    let version = match r.version.as_deref() {
        Some("HTTP/2.0") => "HTTP/2",
        Some("HTTP/3.0") => "HTTP/3",
        Some("HTTP/1.0") => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let opt = |v: Option<f64>| v.map_or(json!(-1), |v| json!(v));
    let timings = match r.phases_ms {
        Some(p) => json!({
            "blocked": p.queued,
            "dns": opt(p.dns),
            "connect": opt(p.connect),
            "ssl": opt(p.tls),
            "send": p.send,
            "wait": p.wait,
            "receive": p.download,
        }),
        None => json!({
            "blocked": -1, "dns": -1, "connect": -1, "ssl": -1,
            "send": 0, "wait": 0, "receive": r.total_ms,
        }),
    };
    let time: f64 = ["blocked", "dns", "connect", "send", "wait", "receive"]
        .iter()
        .filter_map(|k| timings[*k].as_f64())
        .filter(|v| *v > 0.0)
        .sum();
    let headers = |h: &[(String, String)]| {
        h.iter()
            .map(|(n, v)| json!({ "name": n, "value": v }))
            .collect::<Vec<_>>()
    };
    let status = r.status.unwrap_or(0);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut e = json!({
        "startedDateTime": iso8601(t0 + ms(r.start_ms)),
        "time": (time * 1000.0).round() / 1000.0,
        "request": {
            "method": r.method,
            "url": r.url_effective,
            "httpVersion": version,
            "cookies": [],
            "headers": headers(&r.request_headers),
            "queryString": [],
            "headersSize": -1,
            "bodySize": r.request_body_size,
        },
        "response": {
            "status": status,
            "statusText": reason,
            "httpVersion": version,
            "cookies": [],
            "headers": headers(&r.response_headers),
            "content": {
                "size": r.size,
                "mimeType": r.content_type.clone().unwrap_or_default(),
            },
            "redirectURL": r.location.clone().unwrap_or_default(),
            "headersSize": if r.status.is_some() { r.header_size as i64 } else { -1 },
            "bodySize": if r.status.is_some() { r.size as i64 } else { -1 },
        },
        "cache": {},
        "timings": timings,
    });
    if let Some(c) = &r.connection {
        e["connection"] = json!(c.id.to_string());
        if let Ok(a) = c.peer.parse::<std::net::SocketAddr>() {
            e["serverIPAddress"] = json!(a.ip().to_string());
        }
    }
    if let Some(err) = &r.error {
        e["comment"] = json!(err);
    }
    e
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

/// `2026-12-07T06:42:01.123Z`.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso8601_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_625_721_123);
        assert_eq!(iso8601(t), "2026-12-07T06:42:01.123Z");
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
