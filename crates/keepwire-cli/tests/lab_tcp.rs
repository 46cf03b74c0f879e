//! The lab's TCP fidelity as a user sees it: which congestion control ran
//! (`--cc`, read back from the namespaces, never echoed from the flag) and
//! the TIME_WAIT count with its explanation. Namespaces need root; tests
//! that need them skip with a printed reason otherwise (CI runs as root).

#[macro_use]
mod common;

use std::time::Duration;

use common::run;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// A host sysctl under net.ipv4, whitespace-normalised.
fn host_sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `keepwire lab --quick --rtt 20ms EXPERIMENT EXTRA...` with a JSON
/// and an HTML report; returns the JSON, the HTML and stderr.
fn lab(experiment: &str, extra: &[&str]) -> (Value, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (dir.path().join("lab.json"), dir.path().join("lab.html"));
    let (json_s, html_s) = (json.display().to_string(), html.display().to_string());
    let mut args = vec![
        "lab", "--quick", "--rtt", "20ms", "--json", &json_s, "--report", &html_s, experiment,
    ];
    args.extend_from_slice(extra);
    let out = run(&args, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "keepwire {args:?} failed: {stderr}");
    let doc = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("JSON");
    (doc, std::fs::read_to_string(&html).unwrap(), stderr)
}

/// Without `--cc` the namespaces run the host's default, which a new
/// namespace inherits; the JSON, the HTML and the terminal all name it.
#[test]
fn the_report_names_the_hosts_congestion_control() {
    need_root!();
    let host = host_sysctl("tcp_congestion_control");
    let (doc, html, stderr) = lab("slow-start", &[]);
    assert_eq!(doc["congestion_control"], host.as_str(), "{doc}");
    assert!(
        html.contains(&format!("congestion control {host}")),
        "the HTML does not name {host}"
    );
    assert!(
        stderr.contains(&format!("congestion control {host}")),
        "{stderr}"
    );
}

/// `--cc reno` (always allowed) runs reno, whatever the host's default is.
#[test]
fn cc_reno_runs_reno() {
    need_root!();
    let (doc, html, _) = lab("slow-start", &["--cc", "reno"]);
    assert_eq!(doc["congestion_control"], "reno", "{doc}");
    assert!(html.contains("congestion control reno"));
}

/// An algorithm the kernel has but the host does not allow outside its own
/// namespace is refused, naming the sysctl that allows it. Skips where every
/// algorithm `--cc` knows is allowed or missing.
#[test]
fn a_restricted_cc_is_refused_with_the_fix() {
    need_root!();
    let allowed = host_sysctl("tcp_allowed_congestion_control");
    let available = host_sysctl("tcp_available_congestion_control");
    let Some(restricted) = ["reno", "cubic", "bbr"]
        .into_iter()
        .find(|n| available.split(' ').any(|a| a == *n) && !allowed.split(' ').any(|a| a == *n))
    else {
        eprintln!("SKIP: no restricted algorithm here (allowed: {allowed})");
        return;
    };
    let out = run(
        &["lab", "--quick", "--no-report", "--cc", restricted, "nagle"],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("restricted"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "tcp_allowed_congestion_control=\"{allowed} {restricted}\""
        )),
        "{stderr}"
    );
}

/// A name `--cc` does not know is a usage error before anything runs.
#[test]
fn an_unknown_cc_is_a_usage_error() {
    let out = run(&["lab", "--no-report", "--cc", "nosuch", "nagle"], LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("possible values: reno, cubic, bbr"),
        "{stderr}"
    );
}

/// The value of `label`'s row in column `col` of experiment `id`.
fn cell(doc: &Value, id: &str, label: &str, col: &str) -> f64 {
    let e = doc["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {doc}"));
    let at = e["columns"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c == col)
        .unwrap_or_else(|| panic!("no column {col} in {e}"));
    let row = e["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"].as_str().unwrap().starts_with(label))
        .unwrap_or_else(|| panic!("no row {label} in {e}"));
    row["values"][at]
        .as_f64()
        .unwrap_or_else(|| panic!("{label}/{col} missing in {e}"))
}

/// Every connection is accounted for from the kernel's own counters: each
/// entered TIME_WAIT (once, or on both ends when the FINs crossed), and
/// with 200 connections the client's ports never come round, so none ended
/// early and the sockets counted are exactly the entries. The note names
/// the counters it read.
#[test]
fn every_time_wait_entry_is_accounted_for() {
    need_root!();
    let (doc, _, _) = lab("time-wait", &[]);
    let at = |col| cell(&doc, "time-wait", "new connection", col);
    let connections = at("connections");
    assert_eq!(connections, 200.0, "{doc}");
    let entered = at("entered TIME_WAIT");
    assert!(
        (connections..=2.0 * connections).contains(&entered),
        "{doc}"
    );
    assert_eq!(at("ended early"), 0.0, "{doc}");
    assert_eq!(
        at("TIME_WAIT client") + at("TIME_WAIT server"),
        entered,
        "{doc}"
    );
    let notes = doc["experiments"][0]["notes"].to_string();
    assert!(
        notes.contains(&format!(
            "{entered} entered TIME_WAIT (kernel counter TcpExt TW"
        )),
        "{notes}"
    );
    assert!(notes.contains("0 refused by tcp_max_tw_buckets"), "{notes}");
}
