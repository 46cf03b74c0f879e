//! Operations of `keepwire serve` and `keepwire proxy` (issue 18, items 5,
//! 8 and 12): the access log parsed back and checked against what curl
//! saw, `/metrics` parsed by the Prometheus project's own OpenMetrics
//! parser (python `prometheus_client`), the log filter, and `/readyz`
//! turning 503 at SIGTERM while the listener still accepts.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Running, WAIT, start};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("keepwire-ops-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs curl (bounded by `--max-time`) and returns its stdout.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `GET path` on a fresh connection: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_with(addr, path, "")
}

/// [`get`] with extra header lines.
fn get_with(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Waits (bounded) until `f` holds.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The admin address a child printed.
fn admin_addr(r: &Running) -> SocketAddr {
    let line = r.line_with("metrics on http://");
    let rest = line.split("http://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

/// The file's lines, once it has `n` of them.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_for(&format!("{n} access-log lines"), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        got = text.lines().map(str::to_string).collect();
        got.len() >= n
    });
    got
}

/// One access-log line, parsed back.
#[derive(Debug)]
struct Line {
    remote: String,
    request: String,
    status: u16,
    bytes: u64,
    agent: String,
    local: SocketAddr,
    peer: SocketAddr,
    conn: u64,
    req: u64,
    close: String,
    proto: String,
    upstream: String,
}

fn parse(line: &str) -> Line {
    let re = regex_lite::Regex::new(
        r#"^(\S+) - - \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)" local=(\S+) peer=(\S+) conn=(\d+) req=(\d+) rt=(\d+\.\d{6}) close=(\S+) proto=(HTTP/1\.[01]|HTTP/2) upstream=(\d{3}|-) urt=(\d+\.\d{6}|-)$"#,
    )
    .unwrap();
    let c = re
        .captures(line)
        .unwrap_or_else(|| panic!("not the documented format: {line:?}"));
    Line {
        remote: c[1].to_string(),
        request: c[3].to_string(),
        status: c[4].parse().unwrap(),
        bytes: c[5].parse().unwrap(),
        agent: c[7].to_string(),
        local: c[8].parse().unwrap(),
        peer: c[9].parse().unwrap(),
        conn: c[10].parse().unwrap(),
        req: c[11].parse().unwrap(),
        close: c[13].to_string(),
        proto: c[14].to_string(),
        upstream: c[15].to_string(),
    }
}

/// `--access-log FILE` on serve: HTTP/1.1 keep-alive, HTTP/2 prior
/// knowledge and a 404, each line parsed with the documented regex and
/// checked against curl's own `-w` report (status, bytes, the client's
/// port); the file has no ANSI escapes.
#[test]
fn the_access_log_parses_back_and_agrees_with_curl() {
    let dir = TempDir::new("access");
    std::fs::create_dir_all(dir.0.join("www")).unwrap();
    std::fs::write(dir.0.join("www/a.txt"), "hello, log\n").unwrap();
    let log = dir.0.join("access.log");
    let s = common::serve(&[
        "--root",
        dir.0.join("www").to_str().unwrap(),
        "--access-log",
        log.to_str().unwrap(),
    ]);
    let base = format!("http://{}", s.addr);
    let w = "%{local_port} %{http_code} %{size_download} %{http_version}\n";
    // Two requests on one connection (curl reuses it), then h2c, then 404.
    let mut seen = curl(&[
        "-A",
        "ops-test",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        w,
        &format!("{base}/a.txt"),
        &format!("{base}/a.txt?second"),
    ]);
    seen += &curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        w,
        &format!("{base}/a.txt"),
    ]);
    seen += &curl(&["-o", "/dev/null", "-w", w, &format!("{base}/missing")]);
    // A head that cannot be read: 400, logged with `-` as its request.
    let mut bad = TcpStream::connect_timeout(&s.addr, WAIT).unwrap();
    bad.set_read_timeout(Some(WAIT)).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nno colon\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = bad.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let seen: Vec<Vec<String>> = seen
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let mut got: Vec<Line> = lines(&log, 5).iter().map(|l| parse(l)).collect();
    let bad = got.pop().unwrap();
    assert_eq!((bad.request.as_str(), bad.status), ("-", 400), "{bad:?}");
    assert_eq!((bad.close.as_str(), bad.req), ("error", 1), "{bad:?}");
    let raw = std::fs::read(&log).unwrap();
    assert!(!raw.contains(&0x1b), "ANSI escape in the access log");
    for (line, curl) in got.iter().zip(&seen) {
        assert_eq!(
            line.peer.port().to_string(),
            curl[0],
            "{line:?} vs {curl:?}"
        );
        assert_eq!(line.status.to_string(), curl[1], "{line:?}");
        assert_eq!(line.bytes.to_string(), curl[2], "{line:?}");
        assert_eq!(line.local, s.addr, "{line:?}");
        assert_eq!(line.remote, "127.0.0.1");
        assert_eq!(line.close, "-", "{line:?}");
        assert_eq!(line.upstream, "-");
    }
    let (a, b, h2, missing) = (&got[0], &got[1], &got[2], &got[3]);
    assert_eq!(
        (a.request.as_str(), a.agent.as_str()),
        ("GET /a.txt HTTP/1.1", "ops-test")
    );
    assert_eq!(b.request, "GET /a.txt?second HTTP/1.1");
    // The keep-alive pair: one connection, requests 1 and 2 on it.
    assert_eq!((a.conn, a.req, b.conn, b.req), (a.conn, 1, a.conn, 2));
    assert_eq!(
        (a.proto.as_str(), h2.proto.as_str()),
        ("HTTP/1.1", "HTTP/2")
    );
    assert_eq!(h2.request, "GET /a.txt HTTP/2.0");
    assert_eq!((h2.status, h2.bytes, h2.req), (200, 11, 1));
    assert!(h2.conn > a.conn && missing.conn > h2.conn, "{got:?}");
    assert_eq!(missing.status, 404);
}

/// `RUST_LOG` sets the diagnostic filter; `KEEPWIRE_LOG` is an alias that
/// wins when both are set; stderr (a pipe here) carries no ANSI escapes.
#[test]
fn rust_log_filters_the_diagnostic_log_and_keepwire_log_wins() {
    let run = |env: &[(&str, &str)]| -> Vec<String> {
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--respond",
            "x",
        ];
        // Empty is unset (the parent's own values must not leak in).
        let mut all = vec![("RUST_LOG", ""), ("KEEPWIRE_LOG", "")];
        all.extend_from_slice(env);
        let mut r = common::start_env(&args, &all);
        // A connection that closes: logged at debug by `keepwire::server`
        // before the socket closes, so before `get` returns.
        let _ = get(r.addr, "/");
        let _ = get(r.addr, "/");
        // Then everything it wrote, up to its exit on SIGTERM.
        let pid = r.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut got = vec![r.first_line.clone()];
        let deadline = Instant::now() + WAIT;
        while let Ok(l) = r
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            got.push(l);
        }
        assert!(r.child.wait().unwrap().success(), "{got:?}");
        got
    };
    let has_debug = |lines: &[String]| lines.iter().any(|l| l.contains("connection closed"));
    let debug = run(&[("RUST_LOG", "keepwire=debug")]);
    assert!(has_debug(&debug), "{debug:?}");
    assert!(!debug.iter().any(|l| l.contains('\x1b')), "{debug:?}");
    assert!(!has_debug(&run(&[])), "info is the default");
    let both = run(&[("RUST_LOG", "keepwire=debug"), ("KEEPWIRE_LOG", "warn")]);
    assert!(!has_debug(&both), "KEEPWIRE_LOG wins: {both:?}");
    let alias = run(&[("KEEPWIRE_LOG", "keepwire=debug")]);
    assert!(has_debug(&alias), "{alias:?}");
}

/// Parses an exposition with `prometheus_client`'s parser for the format
/// named in argv[1] (`openmetrics`, or `text`: the Prometheus text format)
/// and prints `name<TAB>value` per sample (labels sorted, `{k=v,...}`),
/// after checking every family: typed, counters' samples `_total`,
/// histogram buckets cumulative with `+Inf` == `_count`.
const PARSE: &str = r#"
import sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
for fam in text_string_to_metric_families(text):
    if fam.type == "histogram":
        buckets = [s for s in fam.samples if s.name.endswith("_bucket")]
        les = [float(s.labels["le"]) for s in buckets]
        assert les == sorted(les) and les[-1] == float("inf"), (fam.name, les)
        counts = [s.value for s in buckets]
        assert counts == sorted(counts), (fam.name, "not cumulative", counts)
        count = [s.value for s in fam.samples if s.name.endswith("_count")][0]
        assert counts[-1] == count, (fam.name, counts[-1], count)
    assert fam.type != "unknown", fam
    if fam.type == "counter":
        assert all(s.name == fam.name + "_total" for s in fam.samples), fam
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}}\t{s.value}")
"#;

/// The samples of a scrape, as `name{labels}` → value: the same series
/// whether the scraper asks for OpenMetrics (as Prometheus does) or not
/// (the older text format), each read by its own parser.
fn scrape(admin: SocketAddr) -> std::collections::HashMap<String, f64> {
    let accept = "Accept: application/openmetrics-text; version=1.0.0\r\n";
    let open = parse_with("openmetrics", get_with(admin, "/metrics", accept));
    let text = parse_with("text", get(admin, "/metrics"));
    let names = |m: &std::collections::HashMap<String, f64>| {
        m.keys().cloned().collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(names(&open), names(&text));
    open
}

/// Runs [`PARSE`] for `format` on a `/metrics` answer.
fn parse_with(format: &str, answer: (u16, String)) -> std::collections::HashMap<String, f64> {
    let (status, text) = answer;
    assert_eq!(status, 200, "{text}");
    let mut py = Command::new("python3")
        .args(["-c", PARSE, format])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// `/metrics` of serve and of proxy after traffic, parsed by the
/// Prometheus client's parser: histograms consistent, `_count` equal to
/// the requests made, the counters under their conventional names.
#[test]
fn metrics_parse_with_the_prometheus_parser_and_count_the_requests() {
    let origin = common::serve(&["--respond", "hi", "--admin", "127.0.0.1:0"]);
    let origin_admin = admin_addr(&origin);
    let url = format!("http://{}/x", origin.addr);
    // 5 requests on one connection, 1 on another.
    let mut args = vec!["-o", "/dev/null"];
    args.extend(std::iter::repeat_n(url.as_str(), 5));
    let _ = curl(&args);
    let _ = curl(&["-o", "/dev/null", &url]);
    let m = scrape(origin_admin);
    // The scrape itself is a request to the admin server, not this one.
    assert_eq!(m["keepwire_requests_total{}"], 6.0, "{m:?}");
    assert_eq!(m["keepwire_request_duration_seconds_count{}"], 6.0);
    assert_eq!(m["keepwire_connections_accepted_total{}"], 2.0);
    // Closed connections: the per-connection histograms count them.
    assert_eq!(m["keepwire_requests_per_connection_count{}"], 2.0);
    assert_eq!(m["keepwire_requests_per_connection_sum{}"], 6.0);
    assert_eq!(m["keepwire_requests_per_connection_bucket{le=1.0}"], 1.0);
    assert_eq!(m["keepwire_requests_per_connection_bucket{le=5.0}"], 2.0);
    assert_eq!(m["keepwire_connection_duration_seconds_count{}"], 2.0);
    assert_eq!(
        m["keepwire_connection_closes_total{reason=client_close}"],
        2.0
    );
    assert!(m.contains_key("keepwire_lingering_discarded_bytes_total{}"));

    let dir = TempDir::new("proxy");
    let log = dir.0.join("proxy.log");
    let proxy = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--upstream",
        &format!("http://{}", origin.addr),
        "--admin",
        "127.0.0.1:0",
        &format!("--access-log={}", log.display()),
    ]);
    let proxy_admin = admin_addr(&proxy);
    let via = format!("http://{}/y", proxy.addr);
    let mut args = vec!["-o", "/dev/null"];
    args.extend(std::iter::repeat_n(via.as_str(), 3));
    let _ = curl(&args);
    let p = scrape(proxy_admin);
    assert_eq!(p["keepwire_proxy_requests_total{}"], 3.0, "{p:?}");
    assert_eq!(p["keepwire_request_duration_seconds_count{}"], 3.0);
    assert_eq!(p["keepwire_proxy_upstream_connections_opened_total{}"], 1.0);
    assert_eq!(p["keepwire_proxy_upstream_requests_reused_total{}"], 2.0);
    assert!(p.contains_key("keepwire_proxy_request_body_retained_max_bytes{}"));
    assert_eq!(p["keepwire_access_log_dropped_lines_total{}"], 0.0);
    assert!(!m.contains_key("keepwire_access_log_dropped_lines_total{}"));
    // The proxy's access log: one connection from curl, the upstream's
    // status and header time.
    let got: Vec<Line> = lines(&log, 3).iter().map(|l| parse(l)).collect();
    for (i, l) in got.iter().enumerate() {
        assert_eq!((l.status, l.bytes, l.req), (200, 3, i as u64 + 1), "{l:?}");
        assert_eq!((l.upstream.as_str(), l.conn), ("200", got[0].conn), "{l:?}");
        assert_eq!(l.request, "GET /y HTTP/1.1");
    }
    // The origin saw the proxy's 3 on top of curl's 6.
    wait_for("the origin's count", || {
        scrape(origin_admin)["keepwire_request_duration_seconds_count{}"] == 9.0
    });
}

/// `/healthz` is 200; at SIGTERM `/readyz` turns 503 while the main
/// listener still accepts and answers (for `--drain-delay`), then the
/// process exits cleanly.
#[test]
fn readyz_turns_503_at_sigterm_before_the_listener_closes() {
    let s = common::serve(&[
        "--respond",
        "up",
        "--admin",
        "127.0.0.1:0",
        "--drain-delay",
        "3s",
    ]);
    drains(s, "up\n");
}

/// The same drain on `keepwire proxy`.
#[test]
fn the_proxy_drains_the_same_way() {
    let origin = common::serve(&["--respond", "origin"]);
    let upstream = format!("http://{}", origin.addr);
    let p = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--upstream",
        &upstream,
        "--admin",
        "127.0.0.1:0",
        "--drain-delay",
        "3s",
    ]);
    drains(p, "origin\n");
}

/// The `--drain-delay` the drain tests give.
const DELAY: Duration = Duration::from_secs(3);

/// SIGTERM to `r`: `/readyz` 503 within the delay while `/` still answers
/// `body` on a new connection; then a clean exit after the delay.
fn drains(mut r: Running, body: &str) {
    let admin = admin_addr(&r);
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".into()));
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &r.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_for("/readyz 503", || get(admin, "/readyz").0 == 503);
    // Unready, and still serving: a new connection is accepted and answered.
    assert_eq!(get(r.addr, "/"), (200, body.into()));
    assert_eq!(get(admin, "/healthz").0, 200);
    assert!(sent.elapsed() < DELAY, "checked within the delay");
    let mut exited = None;
    wait_for("the process to exit", || {
        exited = r.child.try_wait().unwrap();
        exited.is_some()
    });
    assert!(exited.unwrap().success(), "{exited:?}");
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "the delay was kept"
    );
}

/// `--admin` on a port already taken: the command fails before it says
/// "listening on" (the admin listener is bound first), in serve and proxy.
#[test]
fn a_taken_admin_port_fails_before_listening_is_announced() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0", "--admin", &at],
        vec![
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1",
            "--admin",
            &at,
        ],
    ] {
        let out = common::run(&args, WAIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("--admin"), "{stderr}");
        assert!(!stderr.contains("listening on"), "{args:?}: {stderr}");
    }
}
