//! `keepwire bench` as a user runs it: the real binary against `keepwire
//! serve` started as a child process, reading `--json`, and every kind of
//! bad input answered with a message and a failing exit status.

mod common;

use std::time::Duration;

use common::{Running, run, start};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn serve() -> Running {
    start(&["serve", "--listen", "127.0.0.1:0"])
}

fn bench_json(args: &[&str]) -> Value {
    let mut all = vec!["bench", "--json", "--timeout", "5s"];
    all.extend_from_slice(args);
    let out = run(&all, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keepwire {all:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON document")
}

fn n(doc: &Value, path: &[&str]) -> f64 {
    let mut v = doc;
    for p in path {
        v = &v[*p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {doc}"))
}

#[test]
fn json_report_adds_up() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let doc = bench_json(&["-c", "3", "-n", "300", "-t", "2", &url]);
    assert_eq!(n(&doc, &["sent"]), 300.0, "{doc}");
    assert_eq!(n(&doc, &["responses"]), 300.0);
    assert_eq!(n(&doc, &["error_total"]), 0.0);
    assert_eq!(n(&doc, &["statuses", "200"]), 300.0);
    assert_eq!(n(&doc, &["connections"]), 3.0);
    assert_eq!(n(&doc, &["requests_per_connection", "mean"]), 100.0);
    assert_eq!(n(&doc, &["latency", "count"]), 300.0);
    for q in ["p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"] {
        assert!(n(&doc, &["latency", q]) > 0.0, "{q}");
        assert!(n(&doc, &["first_byte", q]) > 0.0, "{q}");
    }
    assert!(n(&doc, &["latency", "p50_us"]) <= n(&doc, &["latency", "max_us"]));
    assert_eq!(n(&doc, &["connect", "count"]), 3.0);
    assert!(doc["time_wait"]["client"].is_u64(), "{doc}");
    assert!(n(&doc, &["bytes_read"]) > 0.0);
}

#[test]
fn keep_alive_off_reports_a_connection_per_request_and_time_wait() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let doc = bench_json(&["-c", "2", "-n", "100", "--keep-alive", "off", &url]);
    assert_eq!(n(&doc, &["responses"]), 100.0, "{doc}");
    assert_eq!(n(&doc, &["connections"]), 100.0);
    assert_eq!(n(&doc, &["requests_per_connection", "max"]), 1.0);
    let tw = n(&doc, &["time_wait", "client"]) + n(&doc, &["time_wait", "server"]);
    assert!(
        tw >= 100.0,
        "every closed connection leaves one TIME_WAIT: {doc}"
    );
}

#[test]
fn a_post_with_a_body_and_headers_is_sent_as_given() {
    let s = serve();
    // The demo site answers POST / with 405; the point is that every
    // request went out whole and got its answer on the same connection.
    let url = format!("http://{}/", s.addr);
    let doc = bench_json(&[
        "-c",
        "1",
        "-n",
        "20",
        "-X",
        "POST",
        "--body",
        "hello",
        "-H",
        "X-Test: 1",
        &url,
    ]);
    assert_eq!(n(&doc, &["responses"]), 20.0, "{doc}");
    assert_eq!(n(&doc, &["connections"]), 1.0, "{doc}");
    assert_eq!(n(&doc, &["bytes_written"]) as u64 % 20, 0);
}

#[test]
fn http2_runs_multiplexed_on_the_asked_connections() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let doc = bench_json(&["--http2", "-c", "2", "-n", "200", "--pipeline", "10", &url]);
    assert_eq!(n(&doc, &["responses"]), 200.0, "{doc}");
    assert_eq!(n(&doc, &["error_total"]), 0.0, "{doc}");
    assert_eq!(n(&doc, &["connections"]), 2.0, "{doc}");
    assert!(doc["summary"].as_str().unwrap().contains("HTTP/2"));
}

#[test]
fn the_table_names_every_section() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let out = run(
        &["bench", "-c", "2", "-d", "300ms", "--pipeline", "4", &url],
        LIMIT,
    );
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for section in [
        "Requests",
        "Throughput",
        "Latency",
        "First byte",
        "Connect",
        "Status",
        "Errors",
        "Connections",
        "TIME_WAIT",
    ] {
        assert!(table.contains(section), "{section} missing from:\n{table}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline 4"));
}

#[test]
fn bad_input_fails_with_the_cause() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--keep-alive", "off", "--pipeline", "2", &url],
            "--pipeline needs --keep-alive on",
        ),
        (vec!["https://127.0.0.1:1/"], "https://127.0.0.1:1/: "),
        (
            vec!["--cacert", "/nonexistent.pem", "https://localhost:1/"],
            "--cacert /nonexistent.pem",
        ),
        (vec!["ftp://x/"], "unsupported scheme"),
        (vec!["-H", "no colon", &url], "invalid header"),
        (
            vec!["-H", "Connection: close", &url],
            "set by keepwire bench",
        ),
        (vec!["-X", "BAD METHOD", &url], "invalid method"),
        (vec!["--rate", "0", &url], "--rate must be a positive"),
        (vec!["-d", "1s", "-n", "5", &url], "cannot be used with"),
        (vec!["-c", "0", &url], "0 is not in 1..=100000"),
        (vec!["--body-file", "/nonexistent/x", &url], "--body-file"),
        (vec!["--http2", "--http1.0", &url], "cannot be used with"),
        (
            vec!["--http2", "--keep-alive", "off", &url],
            "--keep-alive off does not apply",
        ),
        (vec!["-n", "3", &closed], "no request succeeded (3 connect)"),
    ];
    for (args, want) in cases {
        let mut all = vec!["bench", "--timeout", "2s"];
        all.extend_from_slice(&args);
        let out = run(&all, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
    }
}
