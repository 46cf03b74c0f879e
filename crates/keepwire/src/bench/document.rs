//! A run's report as a document: the JSON `keepwire bench --json` writes,
//! the table it prints, and the merge of several loaders' documents
//! (`keepwire bench merge`).
//!
//! Why the histograms travel whole: percentiles of several loaders cannot
//! be combined from their percentiles (the p99 of two runs is not the mean
//! of their p99s), only from their distributions. So each histogram is
//! carried in HdrHistogram's own interchange form, the V2 compressed
//! (deflate) encoding in base64 — the form HdrHistogram's Java, C, Go and
//! Python implementations and their log tools decode — and a merge adds
//! them bucket by bucket. Values are nanoseconds (`"histogram_unit": "ns"`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde_json::{Map, Value, json};

use super::report::{Window, histogram, union_length};
use super::{FailureKind, Report, TimeWait};

/// The keepwire version that writes (and alone may merge) a document.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What was loaded. Documents merge only when these agree: adding the
/// latencies of different URLs, methods or protocols would describe no
/// real workload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Target {
    /// The URL as given on the command line.
    pub url: String,
    /// The request method.
    pub method: String,
    /// `http/1.1`, `http/1.0`, `h2`, `h2c`, `ws` or `sse`.
    pub protocol: String,
}

impl Target {
    /// A target from its parts.
    pub fn new(url: &str, method: &str, protocol: &str) -> Self {
        Target {
            url: url.into(),
            method: method.into(),
            protocol: protocol.into(),
        }
    }
}

/// A report with what it is about: what `keepwire bench --json` writes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Document {
    /// One line saying what ran (connections, threads, mode).
    pub summary: String,
    /// What was counted: `requests`, `messages` (WebSocket) or `events` (SSE).
    pub unit: String,
    /// What was loaded.
    pub target: Target,
    /// The start asked for with `--start-at`, if any.
    pub start_at: Option<SystemTime>,
    /// The measurements.
    pub report: Report,
}

/// HdrHistogram's V2 compressed encoding of `h`, in base64 (starts `HISTF`).
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serialising into a Vec can fail only on a histogram too large for
    // the format's 32-bit lengths, which our bounds rule out.
    let _ = V2DeflateSerializer::new().serialize(h, &mut bytes);
    BASE64.encode(bytes)
}

/// Decodes a histogram written by [`encode_histogram`] or any HdrHistogram
/// implementation (V2, compressed or not, in base64).
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an HdrHistogram V2 encoding: {e:?}"))
}

const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("max", 100.0),
];

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// `812µs`, `12.4ms`, `1.20s`.
fn human(ns: u64) -> String {
    let us = micros(ns);
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn distribution(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let mut parts: Vec<String> = PERCENTILES
        .iter()
        .map(|(name, q)| format!("{name} {}", human(h.value_at_percentile(*q))))
        .collect();
    parts.push(format!("mean {}", human(h.mean() as u64)));
    parts.join("  ")
}

fn histogram_json(h: &Histogram<u64>) -> Value {
    let mut map = Map::new();
    map.insert("count".into(), json!(h.len()));
    if !h.is_empty() {
        for (name, q) in PERCENTILES {
            map.insert(
                format!("{}_us", name.replace('.', "_")),
                json!(micros(h.value_at_percentile(q))),
            );
        }
        map.insert("mean_us".into(), json!(h.mean() / 1000.0));
        map.insert("min_us".into(), json!(micros(h.min())));
    }
    map.insert("hdr".into(), json!(encode_histogram(h)));
    Value::Object(map)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

impl Document {
    /// A document for `report`.
    pub fn new(report: Report, unit: &str, target: Target, summary: &str) -> Self {
        Document {
            summary: summary.into(),
            unit: unit.into(),
            target,
            start_at: None,
            report,
        }
    }

    /// The JSON document (one line; times in microseconds, histograms
    /// encoded in `hdr` fields, in nanoseconds).
    pub fn to_json(&self) -> String {
        let r = &self.report;
        let unit = self.unit.as_str();
        let errors: Map<String, Value> = FailureKind::ALL
            .iter()
            .map(|k| {
                let n = r.errors.get(k).copied().unwrap_or(0);
                (k.name().to_string(), json!(n))
            })
            .collect();
        let statuses: Map<String, Value> = r
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        let windows: Vec<Value> = r
            .windows
            .iter()
            .map(|w| json!({"start": rfc3339(w.start), "end": rfc3339(w.end)}))
            .collect();
        let mut doc = json!({
            "keepwire": VERSION,
            "summary": self.summary,
            "unit": unit,
            "target": {
                "url": self.target.url,
                "method": self.target.method,
                "protocol": self.target.protocol,
            },
            "start_at": self.start_at.map(rfc3339),
            "started_at": r.windows.iter().map(|w| w.start).min().map(rfc3339),
            "windows": windows,
            "loaders": r.windows.len(),
            "elapsed_s": r.elapsed.as_secs_f64(),
            "sent": r.sent,
            "responses": r.responses,
            "errors": errors,
            "error_total": r.error_total(),
            "resent": r.resent,
            "requests_per_s": r.rate(),
            "bytes_read": r.bytes_read,
            "bytes_written": r.bytes_written,
            "statuses": statuses,
            "histogram_unit": "ns",
            "latency": histogram_json(&r.latency),
            "first_byte": histogram_json(&r.first_byte),
            "connect": histogram_json(&r.connect),
            "connections": r.connections,
            "requests_per_connection": {
                "mean": r.mean_requests_per_connection(),
                "max": r.max_requests_per_connection,
            },
            "time_wait": match &r.time_wait {
                Ok(tw) => json!({"client": tw.client, "server": tw.server}),
                Err(e) => json!({"error": e}),
            },
        });
        // The rate under its own name too (`messages_per_s`, `events_per_s`).
        doc[format!("{unit}_per_s")] = json!(r.rate());
        if unit == "events" {
            doc["bytes_per_event"] = json!(r.bytes_read as f64 / r.responses.max(1) as f64);
        }
        doc.to_string()
    }

    /// Reads a document written by [`to_json`](Self::to_json) of this
    /// keepwire version; says which field is missing or wrong.
    pub fn from_json(text: &str) -> Result<Document, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let version = doc["keepwire"].as_str().unwrap_or("an unknown version");
        if version != VERSION {
            return Err(format!(
                "written by keepwire {version}, this is keepwire {VERSION}: \
                 merge the reports of one keepwire version"
            ));
        }
        let unit = doc["histogram_unit"].as_str();
        if unit != Some("ns") {
            return Err(format!("histogram_unit is {unit:?}, not \"ns\""));
        }
        let field = |path: &str| -> Result<&Value, String> {
            let v = doc.pointer(path).unwrap_or(&Value::Null);
            (!v.is_null())
                .then_some(v)
                .ok_or_else(|| format!("no {} field", &path[1..]))
        };
        let str_at = |path: &str| -> Result<String, String> {
            field(path)?
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{} is not a string", &path[1..]))
        };
        let u64_at = |path: &str| -> Result<u64, String> {
            field(path)?
                .as_u64()
                .ok_or_else(|| format!("{} is not a count", &path[1..]))
        };
        let hist = |name: &str| -> Result<Histogram<u64>, String> {
            let decoded = decode_histogram(&str_at(&format!("/{name}/hdr"))?)
                .map_err(|e| format!("{name}.hdr: {e}"))?;
            let mut h = histogram();
            h.add(&decoded)
                .map_err(|e| format!("{name}.hdr: values out of range ({e:?})"))?;
            Ok(h)
        };
        let time = |s: &str| {
            humantime::parse_rfc3339(s).map_err(|e| format!("windows: {s:?} is not RFC 3339: {e}"))
        };
        let mut windows = Vec::new();
        for w in field("/windows")?
            .as_array()
            .ok_or("windows is not a list")?
        {
            let (start, end) = (w["start"].as_str(), w["end"].as_str());
            let (Some(start), Some(end)) = (start, end) else {
                return Err("windows: each needs a start and an end".into());
            };
            windows.push(Window {
                start: time(start)?,
                end: time(end)?,
            });
        }
        if windows.is_empty() {
            return Err("windows is empty: no run went into it".into());
        }
        let mut errors = BTreeMap::new();
        for k in FailureKind::ALL {
            let n = doc["errors"][k.name()].as_u64().unwrap_or(0);
            if n > 0 {
                errors.insert(k, n);
            }
        }
        let mut statuses = BTreeMap::new();
        for (code, n) in field("/statuses")?.as_object().ok_or("statuses")? {
            let code = code.parse().map_err(|_| format!("status {code:?}"))?;
            statuses.insert(code, n.as_u64().ok_or("statuses: not a count")?);
        }
        let time_wait = match doc["time_wait"]["error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(TimeWait {
                client: u64_at("/time_wait/client")?,
                server: u64_at("/time_wait/server")?,
                closing: 0,
            }),
        };
        let start_at = match doc["start_at"].as_str() {
            Some(s) => Some(time(s)?),
            None => None,
        };
        let report = Report {
            elapsed: union_length(&windows),
            windows,
            sent: u64_at("/sent")?,
            responses: u64_at("/responses")?,
            errors,
            resent: u64_at("/resent")?,
            statuses,
            bytes_read: u64_at("/bytes_read")?,
            bytes_written: u64_at("/bytes_written")?,
            latency: hist("latency")?,
            connect: hist("connect")?,
            first_byte: hist("first_byte")?,
            connections: u64_at("/connections")?,
            max_requests_per_connection: u64_at("/requests_per_connection/max")?,
            time_wait,
        };
        Ok(Document {
            summary: str_at("/summary")?,
            unit: str_at("/unit")?,
            target: Target::new(
                &str_at("/target/url")?,
                &str_at("/target/method")?,
                &str_at("/target/protocol")?,
            ),
            start_at,
            report,
        })
    }

    /// Adds another loader's document (see [`Report::merge`]); refuses one
    /// that counted another unit or loaded another target.
    pub fn merge(&mut self, other: &Document) -> Result<(), String> {
        if other.unit != self.unit {
            return Err(format!(
                "it counts {}, the first counts {}: merge runs of one kind",
                other.unit, self.unit
            ));
        }
        if other.target != self.target {
            let show = |t: &Target| format!("{} {} over {}", t.method, t.url, t.protocol);
            return Err(format!(
                "it loaded {}, the first loaded {}: merge runs of one target",
                show(&other.target),
                show(&self.target)
            ));
        }
        if other.start_at != self.start_at {
            self.start_at = None;
        }
        self.report.merge(&other.report)
    }

    /// The human-readable report (what `keepwire bench` prints).
    pub fn table(&self) -> String {
        table(&self.report, &self.unit)
    }
}

/// The report as a table; `unit` names what was counted (`requests`,
/// `messages` for --ws, `events` for --sse).
fn table(r: &Report, unit: &str) -> String {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<13}{v}\n"));
    let counts = match unit {
        "messages" => format!("{} sent, {} echoed", r.sent, r.responses),
        "events" => format!("{} received", r.responses),
        _ => format!("{} sent, {} responses", r.sent, r.responses),
    };
    let resent = format!(", {} re-sent after Connection: close", r.resent);
    let resent = if unit == "requests" { &resent } else { "" };
    let title = unit.get(..1).unwrap_or_default().to_uppercase() + unit.get(1..).unwrap_or("");
    line(
        &title,
        format!("{counts}, {} errors{resent}", r.error_total()),
    );
    line(
        "Throughput",
        format!(
            "{:.1} {unit}/s, {:.2} MiB/s read, in {:.2}s",
            r.rate(),
            r.bytes_read as f64 / secs / (1024.0 * 1024.0),
            secs
        ),
    );
    line("Started", started(&r.windows));
    line("Latency", distribution(&r.latency));
    let opening = if unit == "requests" {
        "First byte"
    } else {
        "Handshake"
    };
    line(opening, distribution(&r.first_byte));
    line("Connect", distribution(&r.connect));
    let statuses = r
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    line(
        "Status",
        if statuses.is_empty() {
            "-".into()
        } else {
            statuses
        },
    );
    let errors = FailureKind::ALL
        .iter()
        .filter_map(|k| r.errors.get(k).map(|n| format!("{}: {n}", k.name())))
        .collect::<Vec<_>>()
        .join(", ");
    line(
        "Errors",
        if errors.is_empty() {
            "none".into()
        } else {
            errors
        },
    );
    line(
        "Connections",
        format!(
            "{} opened, {:.1} {unit} per connection on average, {} at most",
            r.connections,
            r.mean_requests_per_connection(),
            r.max_requests_per_connection
        ),
    );
    line(
        "TIME_WAIT",
        match &r.time_wait {
            Ok(tw) => format!(
                "{} client-side sockets (this host closed first), {} server-side (target on this host)",
                tw.client, tw.server
            ),
            Err(e) => e.clone(),
        },
    );
    out
}

/// When the load started (UTC); for several loaders, the first start and
/// how far apart the starts were.
fn started(windows: &[Window]) -> String {
    let (Some(first), Some(last)) = (
        windows.iter().map(|w| w.start).min(),
        windows.iter().map(|w| w.start).max(),
    ) else {
        return "-".into();
    };
    let at = humantime::format_rfc3339_micros(first).to_string();
    if windows.len() == 1 {
        return at;
    }
    let spread = last.duration_since(first).unwrap_or(Duration::ZERO);
    format!(
        "{at}, {} loaders, the last {} after the first",
        windows.len(),
        human(u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run whose requests took `latencies` (µs), in `window`.
    fn run_of(latencies: &[u64], window: Window) -> Report {
        let mut latency = histogram();
        for us in latencies {
            latency.record(us * 1000).unwrap();
        }
        let n = latencies.len() as u64;
        Report {
            elapsed: window.end.duration_since(window.start).unwrap(),
            windows: vec![window],
            sent: n,
            responses: n,
            errors: BTreeMap::new(),
            resent: 0,
            statuses: BTreeMap::from([(200, n)]),
            bytes_read: 100 * n,
            bytes_written: 50 * n,
            first_byte: latency.clone(),
            connect: histogram(),
            latency,
            connections: 1,
            max_requests_per_connection: n,
            time_wait: Ok(TimeWait::default()),
        }
    }

    fn doc(r: Report) -> Document {
        Document::new(
            r,
            "requests",
            Target::new("http://x/", "GET", "http/1.1"),
            "s",
        )
    }

    #[test]
    fn two_halves_merged_report_as_one_run_of_all_requests() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = Window {
            start: t0,
            end: t0 + Duration::from_secs(2),
        };
        // Skewed halves: averaging their p99s would be far off.
        let fast: Vec<u64> = (1..=900).collect();
        let slow: Vec<u64> = (1..=100).map(|i| 10_000 + i * 100).collect();
        let all: Vec<u64> = fast.iter().chain(&slow).copied().collect();
        let mut merged = doc(run_of(&fast, w));
        // Through JSON, as `bench merge` reads them.
        let a = Document::from_json(&merged.to_json()).unwrap();
        let b = Document::from_json(&doc(run_of(&slow, w)).to_json()).unwrap();
        merged = a;
        merged.merge(&b).unwrap();
        let mut one = doc(run_of(&all, w));
        one.report.connections = 2;
        one.report.max_requests_per_connection = 900;
        let skip_started = |t: String| -> Vec<String> {
            t.lines()
                .filter(|l| !l.contains("Started"))
                .map(String::from)
                .collect()
        };
        assert_eq!(skip_started(merged.table()), skip_started(one.table()));
        assert_eq!(merged.report.latency, one.report.latency);
        assert!(
            merged
                .table()
                .contains("2 loaders, the last 0µs after the first")
        );
        assert_eq!(
            merged.report.latency.value_at_quantile(0.99),
            one.report.latency.value_at_quantile(0.99)
        );
    }

    #[test]
    fn throughput_runs_over_the_union_of_the_windows() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = Duration::from_secs;
        let w = |a, b| Window {
            start: t0 + s(a),
            end: t0 + s(b),
        };
        // Overlap counted once; a gap not at all; a window inside another adds nothing.
        assert_eq!(union_length(&[w(0, 10), w(5, 12)]), s(12));
        assert_eq!(union_length(&[w(0, 10), w(20, 25)]), s(15));
        assert_eq!(union_length(&[w(0, 10), w(2, 3), w(10, 11)]), s(11));
        let mut a = run_of(&[1; 100], w(0, 10));
        a.merge(&run_of(&[1; 100], w(5, 10))).unwrap();
        assert_eq!(a.elapsed, s(10));
        assert_eq!(a.rate(), 20.0);
    }

    #[test]
    fn documents_that_disagree_are_refused() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = Window {
            start: t0,
            end: t0 + Duration::from_secs(1),
        };
        let base = doc(run_of(&[5], w));
        let mut other = base.clone();
        other.target.url = "http://y/".into();
        let e = base.clone().merge(&other).unwrap_err();
        assert!(
            e.contains("GET http://y/ over http/1.1") && e.contains("one target"),
            "{e}"
        );
        let mut other = base.clone();
        other.unit = "events".into();
        assert!(
            base.clone()
                .merge(&other)
                .unwrap_err()
                .contains("counts events")
        );
        let json = base.to_json().replace(VERSION, "0.0.0-other");
        let e = Document::from_json(&json).unwrap_err();
        assert!(e.contains("written by keepwire 0.0.0-other"), "{e}");
        let json = base.to_json().replace("\"ns\"", "\"us\"");
        assert!(
            Document::from_json(&json)
                .unwrap_err()
                .contains("histogram_unit")
        );
        let json = base.to_json().replace("HISTF", "XX");
        assert!(
            Document::from_json(&json)
                .unwrap_err()
                .contains("latency.hdr")
        );
        assert!(Document::from_json("{").unwrap_err().contains("not JSON"));
    }
}
