//! `keepwire bench` beyond one machine, as a user runs it: several loaders
//! started together with `--start-at`, each writing `--json` with its
//! histograms, and `keepwire bench merge` adding them into one report; the
//! histograms checked against an independent decoder (Python's `hdrh`,
//! HdrHistogram's Python implementation) and against the two loaders'
//! histograms added here. Also the output flags (`--json [FILE]`,
//! `--report [FILE]`) and the HTTP/2 flags.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use common::{Running, run, start};
use hdrhistogram::Histogram;
use keepwire::bench::decode_histogram;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn serve() -> Running {
    start(&["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
}

fn ok(args: &[&str]) -> Output {
    let out = run(args, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keepwire {args:?} failed: {stderr}");
    out
}

fn fails(args: &[&str], want: &str) {
    let out = run(args, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "keepwire {args:?} should fail");
    assert!(
        stderr.contains(want),
        "keepwire {args:?}: want {want:?} in {stderr}"
    );
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the JSON file was written");
    serde_json::from_str(&text).expect("one JSON document")
}

fn hdr(doc: &Value, name: &str) -> Histogram<u64> {
    let text = doc[name]["hdr"].as_str().expect("an hdr field");
    decode_histogram(text).expect("a V2 histogram")
}

fn time(doc: &Value, path: &str) -> SystemTime {
    let s = doc.pointer(path).and_then(Value::as_str).expect(path);
    humantime::parse_rfc3339(s).expect("RFC 3339")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Two loaders given one `--start-at` 2 s ahead, merged: the merge holds
/// every request of both (counts summed), and its percentiles are those of
/// the two loaders' histograms added here, never an average of theirs.
#[test]
fn two_loaders_started_together_merge_into_one_report_of_all_requests() {
    let server = serve();
    let url = format!("http://{}/", server.addr);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let at = SystemTime::now() + Duration::from_secs(2);
    let at_text = humantime::format_rfc3339_millis(at).to_string();
    let at = humantime::parse_rfc3339(&at_text).unwrap();
    let loader = |file: &Path, n: &str| {
        let json = format!("--json={}", s(file));
        let args = [
            "bench",
            "--no-progress",
            "--timeout",
            "5s",
            "-c",
            "2",
            "-n",
            n,
            "--start-at",
            &at_text,
            &json,
            &url,
        ];
        let out = ok(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(stderr.contains("after --start-at"), "{stderr}");
    };
    std::thread::scope(|scope| {
        scope.spawn(|| loader(&a, "300"));
        scope.spawn(|| loader(&b, "500"));
    });
    let (da, db) = (read(&a), read(&b));
    for d in [&da, &db] {
        let started = time(d, "/started_at");
        // Never before the asked time; the bound above is generous (a
        // loaded CI machine), the point is that it waited.
        assert!(started >= at, "started before --start-at: {d}");
        assert!(started < at + Duration::from_secs(2), "{d}");
        assert_eq!(
            d["start_at"].as_str(),
            Some(&*humantime::format_rfc3339_nanos(at).to_string())
        );
    }

    let merged_json = dir.path().join("merged.json");
    let out = ok(&[
        "bench",
        "merge",
        s(&a),
        s(&b),
        &format!("--json={}", s(&merged_json)),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    let m = read(&merged_json);

    // Counts add up.
    for key in ["sent", "responses", "connections", "bytes_read", "resent"] {
        assert_eq!(
            m[key].as_u64().unwrap(),
            da[key].as_u64().unwrap() + db[key].as_u64().unwrap(),
            "{key}"
        );
    }
    assert_eq!(m["responses"], 800);
    assert_eq!(m["statuses"]["200"], 800);
    assert_eq!(m["error_total"], 0);
    assert_eq!(m["loaders"], 2);
    assert!(
        table.contains("800 sent, 800 responses, 0 errors"),
        "{table}"
    );
    assert!(table.contains("2 loaders, the last "), "{table}");
    assert!(table.contains("Connections  4 opened"), "{table}");

    // Histograms: the merge equals the two added independently here.
    for name in ["latency", "first_byte", "connect"] {
        let mut sum = hdr(&da, name);
        sum.add(hdr(&db, name)).unwrap();
        let merged = hdr(&m, name);
        assert_eq!(merged, sum, "{name}: merged histogram");
        assert_eq!(m[name]["count"].as_u64(), Some(sum.len()), "{name}");
        for (field, q) in [
            ("p50_us", 50.0),
            ("p90_us", 90.0),
            ("p99_us", 99.0),
            ("p99_9_us", 99.9),
            ("max_us", 100.0),
        ] {
            let want = sum.value_at_percentile(q) as f64 / 1000.0;
            assert_eq!(m[name][field].as_f64(), Some(want), "{name} {field}");
        }
        assert_eq!(m[name]["min_us"].as_f64(), Some(sum.min() as f64 / 1000.0));
    }
    // Throughput runs over the union of the two windows.
    let windows: Vec<(SystemTime, SystemTime)> = [&da, &db]
        .iter()
        .map(|d| (time(d, "/windows/0/start"), time(d, "/windows/0/end")))
        .collect();
    let start = windows.iter().map(|w| w.0).min().unwrap();
    let end = windows.iter().map(|w| w.1).max().unwrap();
    let overlap = windows[0].1.min(windows[1].1) >= windows[0].0.max(windows[1].0);
    if overlap {
        let union = end.duration_since(start).unwrap().as_secs_f64();
        let elapsed = m["elapsed_s"].as_f64().unwrap();
        assert!((elapsed - union).abs() < 1e-6, "{elapsed} vs {union}");
        let rate = m["requests_per_s"].as_f64().unwrap();
        assert!((rate - 800.0 / union).abs() < 1e-6 * rate, "{rate}");
    }

    // In merge, --json takes a FILE only as --json=FILE: `--json a b`
    // merges both to stdout and leaves a.json alone.
    let before = std::fs::read(&a).unwrap();
    let out = ok(&["bench", "merge", "--json", s(&a), s(&b)]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["responses"], 800);
    assert_eq!(std::fs::read(&a).unwrap(), before);

    // A merge can be merged again: (a) + b equals a + b.
    let just_a = dir.path().join("just-a.json");
    ok(&["bench", "merge", s(&a), &format!("--json={}", s(&just_a))]);
    let again = ok(&["bench", "merge", s(&just_a), s(&b), "--json"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(hdr(&again, "latency"), hdr(&m, "latency"));
    assert_eq!(again["responses"], 800);
    assert_eq!(again["windows"], m["windows"]);
}

/// `bench merge A.json` prints exactly the table that run printed itself.
#[test]
fn a_merge_of_one_file_prints_that_runs_own_report() {
    let server = serve();
    let url = format!("http://{}/", server.addr);
    let dir = tempfile::tempdir().unwrap();
    let (json, report) = (dir.path().join("a.json"), dir.path().join("a.txt"));
    ok(&[
        "bench",
        "-c",
        "3",
        "-n",
        "300",
        "--pipeline",
        "2",
        &format!("--json={}", s(&json)),
        &format!("--report={}", s(&report)),
        &url,
    ]);
    let own = std::fs::read_to_string(&report).unwrap();
    assert!(own.contains("300 sent, 300 responses"), "{own}");
    // The report states when the run actually started.
    let started = time(&read(&json), "/started_at");
    let stamp = humantime::format_rfc3339_micros(started).to_string();
    assert!(
        own.contains(&format!("Started      {stamp}\n")),
        "{stamp} in {own}"
    );
    let out = ok(&["bench", "merge", s(&json)]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), own);
    let merged = ok(&["bench", "merge", s(&json), "--json"]);
    let (mut merged, mut doc): (Value, Value) =
        (serde_json::from_slice(&merged.stdout).unwrap(), read(&json));
    merged["start_at"] = Value::Null;
    doc["start_at"] = Value::Null;
    assert_eq!(merged, doc, "the merge of one document is that document");
}

/// The histograms decode with HdrHistogram's Python implementation to the
/// same counts and percentiles (HdrHistogram's tools read this form).
#[test]
fn histograms_decode_with_hdrhistogram_python() {
    let server = serve();
    let url = format!("http://{}/", server.addr);
    let out = ok(&["bench", "-c", "2", "-n", "200", &url, "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let script = r#"
import json, sys
from hdrh.histogram import HdrHistogram
doc = json.load(sys.stdin)
for name in ("latency", "first_byte", "connect"):
    h = HdrHistogram.decode(doc[name]["hdr"])
    print(name, h.get_total_count(), h.get_value_at_percentile(50), h.get_max_value())
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let py = child.wait_with_output().unwrap();
    assert!(
        py.status.success(),
        "python hdrh (pip install hdrhistogram): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let lines = String::from_utf8(py.stdout).unwrap();
    for line in lines.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let h = &doc[f[0]];
        assert_eq!(f[1].parse::<u64>().ok(), h["count"].as_u64(), "{line}");
        let p50: f64 = f[2].parse().unwrap();
        let max: f64 = f[3].parse().unwrap();
        assert_eq!(Some(p50 / 1000.0), h["p50_us"].as_f64(), "{line}");
        assert_eq!(Some(max / 1000.0), h["max_us"].as_f64(), "{line}");
    }
    assert_eq!(lines.lines().count(), 3);
}

/// What must agree for a merge: the keepwire version that wrote the
/// documents, what was counted (unit, histogram unit) and the target
/// (URL, method, protocol). Everything else (connections, threads, rate,
/// duration) may differ between loaders.
#[test]
fn merge_refuses_files_that_do_not_agree() {
    let server = serve();
    let url = format!("http://{}/", server.addr);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    ok(&["bench", "-n", "20", &format!("--json={}", s(&a)), &url]);
    let other_url = dir.path().join("other-url.json");
    let url2 = format!("http://{}/page", server.addr);
    ok(&[
        "bench",
        "-n",
        "20",
        &format!("--json={}", s(&other_url)),
        &url2,
    ]);
    let h2 = dir.path().join("h2.json");
    ok(&[
        "bench",
        "-n",
        "20",
        "--http2-prior-knowledge",
        &format!("--json={}", s(&h2)),
        &url,
    ]);
    let text = std::fs::read_to_string(&a).unwrap();
    let edited = |name: &str, from: &str, to: &str| {
        let p = dir.path().join(name);
        assert!(text.contains(from), "{from} in {text}");
        std::fs::write(&p, text.replace(from, to)).unwrap();
        p
    };
    let version = format!("\"keepwire\":\"{}\"", env!("CARGO_PKG_VERSION"));
    let old = edited("old.json", &version, "\"keepwire\":\"0.0.1\"");
    let events = edited(
        "events.json",
        "\"unit\":\"requests\"",
        "\"unit\":\"events\"",
    );
    let micros = edited(
        "us.json",
        "\"histogram_unit\":\"ns\"",
        "\"histogram_unit\":\"us\"",
    );
    let broken = edited("broken.json", "\"hdr\":\"HISTF", "\"hdr\":\"!!");
    let missing = dir.path().join("missing.json");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec![s(&a), s(&other_url)],
            format!("cannot merge {}", s(&other_url)),
        ),
        (
            vec![s(&a), s(&other_url)],
            "merge runs of one target".into(),
        ),
        (vec![s(&a), s(&h2)], format!("GET {url} over h2c")),
        (
            vec![s(&a), s(&old)],
            "written by keepwire 0.0.1, this is keepwire".into(),
        ),
        (vec![s(&a), s(&events)], "it counts events".into()),
        (vec![s(&micros)], "histogram_unit".into()),
        (vec![s(&broken)], "latency.hdr: not base64".into()),
        (vec![s(&a), s(&missing)], s(&missing).into()),
    ];
    for (files, want) in cases {
        let mut args = vec!["bench", "merge"];
        args.extend_from_slice(&files);
        fails(&args, &want);
    }
}

#[test]
fn start_at_in_the_past_or_malformed_is_refused() {
    let url = "http://127.0.0.1:1/";
    for (at, want) in [
        ("2020-01-01T00:00:00Z", "in the past"),
        ("@1", "in the past"),
        ("tomorrow", "RFC 3339"),
        ("@soon", "seconds since the Unix epoch"),
        ("+soon", "invalid duration"),
    ] {
        fails(&["bench", "-n", "1", "--start-at", at, url], want);
    }
    // A second in the future is accepted and waited for.
    let server = serve();
    let url = format!("http://{}/", server.addr);
    let out = ok(&["bench", "-n", "5", "--start-at", "+1s", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("waiting to start at"), "{stderr}");
    assert!(stderr.contains("after --start-at"), "{stderr}");
}

#[test]
fn json_and_report_take_an_optional_file() {
    let server = serve();
    let url = format!("http://{}/", server.addr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out");
    let is_json = |b: &[u8]| serde_json::from_slice::<Value>(b).is_ok();
    // --json alone (last): the document on stdout, no table.
    let out = ok(&["bench", "-n", "5", &url, "--json"]);
    assert!(is_json(&out.stdout));
    // --json=FILE: the document in FILE, the table on stdout.
    let out = ok(&["bench", "-n", "5", &format!("--json={}", s(&file)), &url]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Throughput"));
    assert!(is_json(&std::fs::read(&file).unwrap()));
    // --report FILE --json: the table in FILE, the document on stdout.
    let out = ok(&["bench", "-n", "5", "--report", s(&file), &url, "--json"]);
    assert!(is_json(&out.stdout));
    assert!(std::fs::read_to_string(&file).unwrap().contains("Latency"));
    // `--json -` is stdout too.
    let out = ok(&["bench", "-n", "5", "--json", "-", &url]);
    assert!(is_json(&out.stdout));
    fails(
        &["bench", "-n", "5", "--json", "--report", "-", &url],
        "cannot both go to stdout",
    );
    // An optional value takes the next word: `--json URL` leaves no URL.
    fails(&["bench", "-n", "5", "--json", &url], "required");
}

#[test]
fn http2_flags_say_how_h2_is_agreed() {
    let server = serve();
    let url = format!("http://{}/", server.addr);
    let out = ok(&[
        "bench",
        "-n",
        "20",
        "--http2-prior-knowledge",
        &url,
        "--json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["target"]["protocol"], "h2c");
    assert_eq!(doc["responses"], 20);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("deprecated"));
    // The old spelling on http:// still works, with a note.
    let out = ok(&["bench", "-n", "20", "--http2", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--http2 on http:// is deprecated; use --http2-prior-knowledge"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP/2 (h2c)"), "{stderr}");
    // https://: --http2 agrees on h2 by ALPN.
    let tls = start(&["serve", "--listen", "127.0.0.1:0", "--tls-self-signed"]);
    let url = format!("https://{}/", tls.addr);
    let out = ok(&["bench", "-k", "-n", "20", "--http2", &url, "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["target"]["protocol"], "h2");
    assert_eq!(doc["responses"], 20);
    assert!(doc["summary"].as_str().unwrap().contains("HTTP/2 over TLS"));
}

#[test]
fn tls_and_connect_failures_say_what_to_do() {
    let tls = start(&["serve", "--listen", "127.0.0.1:0", "--tls-self-signed"]);
    let url = format!("https://{}/", tls.addr);
    fails(
        &["bench", "-n", "5", &url],
        "; use --cacert FILE to trust its CA, or -k to skip verification",
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    fails(
        &[
            "bench",
            "-n",
            "3",
            "--timeout",
            "2s",
            &format!("http://{addr}/"),
        ],
        &format!("no request succeeded (3 connect): could not connect to {addr}"),
    );
}
