//! `keepwire lab` as a user runs it, at reduced size (`--quick`, RTT 20 ms):
//! each experiment must show the direction its rule predicts, read from the
//! `--json` numbers rather than from the lab's own verdict. Namespaces need
//! root; tests that need them skip with a printed reason otherwise (CI runs
//! as root). The HTML report is rendered by headless Chromium.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, run};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);
const RTT_MS: f64 = 20.0;

/// Runs `keepwire lab --quick --rtt 20ms EXTRA...` and returns its JSON.
fn lab(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("lab.json");
    let json_s = json.display().to_string();
    let mut args = vec![
        "lab",
        "--quick",
        "--rtt",
        "20ms",
        "--no-report",
        "--json",
        &json_s,
    ];
    args.extend_from_slice(extra);
    let out = run(&args, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keepwire {args:?} failed: {stderr}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("valid JSON")
}

/// The experiment's rows as label -> column -> value.
fn rows(doc: &Value, id: &str) -> HashMap<String, HashMap<String, Option<f64>>> {
    let e = doc["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {doc}"));
    let cols: Vec<String> = e["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    e["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let vals = r["values"].as_array().unwrap();
            (
                r["label"].as_str().unwrap().to_string(),
                cols.iter()
                    .cloned()
                    .zip(vals.iter().map(|v| v.as_f64()))
                    .collect(),
            )
        })
        .collect()
}

fn v(rows: &HashMap<String, HashMap<String, Option<f64>>>, label: &str, col: &str) -> f64 {
    let row = rows
        .iter()
        .find(|(l, _)| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label} in {rows:?}"))
        .1;
    row[col].unwrap_or_else(|| panic!("{label}/{col} missing in {rows:?}"))
}

#[test]
fn page_load_orders_the_strategies_as_round_trips_predict() {
    need_root!();
    let doc = lab(&["page-load"]);
    assert_eq!(doc["link_kind"], "exact");
    let r = rows(&doc, "page-load");
    let wall = |l| v(&r, l, "wall ms");
    assert!(wall("pipelined 1") < wall("persistent 1"), "{r:?}");
    assert!(wall("persistent 1") < wall("serial"), "{r:?}");
    assert!(wall("parallel 6") < wall("serial"), "{r:?}");
    assert!(wall("persistent 6") < wall("persistent 1"), "{r:?}");
    // Serial pays a handshake and a request per object: at least 26 RTT.
    assert!(wall("serial") >= 26.0 * RTT_MS, "{r:?}");
    assert_eq!(v(&r, "serial", "connections"), 13.0);
    assert_eq!(v(&r, "persistent 1", "connections"), 1.0);
    assert_eq!(v(&r, "pipelined 1", "connections"), 1.0);
    assert!(v(&r, "persistent 6", "connections") <= 6.0);
}

#[test]
fn nagle_costs_at_least_a_round_trip() {
    need_root!();
    let doc = lab(&["nagle"]);
    let r = rows(&doc, "nagle");
    let nodelay = v(&r, "TCP_NODELAY", "p50 ms");
    let nagle = v(&r, "Nagle on", "p50 ms");
    assert!(nodelay >= RTT_MS * 0.9, "a request is a round trip: {r:?}");
    assert!(nagle >= nodelay + RTT_MS * 0.8, "{r:?}");
}

#[test]
fn a_warm_connection_downloads_faster_than_a_new_one() {
    need_root!();
    let doc = lab(&["slow-start"]);
    let r = rows(&doc, "slow-start");
    let cold = v(&r, "new connection", "time ms");
    let warm = v(&r, "warm connection", "time ms");
    assert!(warm + RTT_MS <= cold, "{r:?}");
}

#[test]
fn persistence_leaves_no_pile_of_time_wait_sockets() {
    need_root!();
    let doc = lab(&["time-wait"]);
    let r = rows(&doc, "time-wait");
    let tw = |l| v(&r, l, "TIME_WAIT client") + v(&r, l, "TIME_WAIT server");
    assert_eq!(v(&r, "new connection", "connections"), 200.0, "{r:?}");
    // One TIME_WAIT per connection, less the few a new SYN on the same
    // 4-tuple took over (the port came round again): at least 95%.
    assert!(tw("new connection") >= 190.0, "{r:?}");
    assert!(tw("persistent") <= 6.0, "{r:?}");
    assert!(v(&r, "persistent", "req/s") > v(&r, "new connection", "req/s"));
}

#[test]
fn the_dumb_relay_hangs_the_second_request_and_keepwire_proxy_does_not() {
    need_root!();
    let doc = lab(&["dumb-proxy"]);
    let r = rows(&doc, "dumb-proxy");
    // --quick: the origin's idle timeout is 800 ms.
    assert_eq!(v(&r, "dumb relay", "answered"), 0.0, "{r:?}");
    assert!(v(&r, "dumb relay", "request 2 wait ms") >= 750.0, "{r:?}");
    assert_eq!(v(&r, "keepwire proxy", "answered"), 1.0, "{r:?}");
    assert!(
        v(&r, "keepwire proxy", "request 2 wait ms") < 400.0,
        "{r:?}"
    );
}

#[test]
fn a_full_close_loses_responses_a_graceful_close_delivers() {
    need_root!();
    let doc = lab(&["reset-loss"]);
    let r = rows(&doc, "reset-loss");
    assert_eq!(v(&r, "graceful", "received"), 3.0, "{r:?}");
    assert!(v(&r, "full close", "received") < 3.0, "{r:?}");
}

#[test]
fn stale_connections_cost_the_naive_client_and_no_post_runs_twice() {
    need_root!();
    let doc = lab(&["stale-retry"]);
    let r = rows(&doc, "stale-retry");
    let naive = v(&r, "naive", "GET errors") + v(&r, "naive", "POST errors");
    assert!(naive > 0.0, "{r:?}");
    assert_eq!(v(&r, "keepwire", "GET errors"), 0.0, "{r:?}");
    assert_eq!(v(&r, "keepwire", "POSTs run twice"), 0.0, "{r:?}");
    assert_eq!(v(&r, "naive", "POSTs run twice"), 0.0, "{r:?}");
}

#[test]
fn multiplexing_removes_head_of_line_blocking() {
    need_root!();
    let doc = lab(&["hol-blocking"]);
    let r = rows(&doc, "hol-blocking");
    // --quick: the first object takes 400 ms at the server.
    let pipelined = v(&r, "pipelined", "others last ms");
    let multiplexed = v(&r, "multiplexed", "others last ms");
    assert!(pipelined >= 400.0, "behind the slow object: {r:?}");
    assert!(multiplexed < 200.0, "beside it: {r:?}");
    assert!(v(&r, "multiplexed", "slow object ms") >= 400.0, "{r:?}");
}

#[test]
fn https_pays_a_round_trip_per_new_connection() {
    need_root!();
    let doc = lab(&["tls"]);
    let r = rows(&doc, "tls");
    let wall = |l| v(&r, l, "wall ms");
    // 13 new connections: 13 TLS handshakes of one round trip each.
    let serial_extra = wall("serial, https://") - wall("serial, http://");
    assert!(serial_extra >= 13.0 * RTT_MS * 0.8, "{r:?}");
    // One connection: one handshake.
    let persistent_extra = wall("persistent 1, https://") - wall("persistent 1, http://");
    assert!(persistent_extra >= RTT_MS * 0.5, "{r:?}");
    // One handshake against thirteen. The bound is relative: under load the
    // debug build's per-record TLS work adds milliseconds per request to
    // both runs, which an absolute bound of two round trips misread as
    // extra handshakes.
    assert!(persistent_extra < serial_extra / 2.0, "{r:?}");
    assert_eq!(v(&r, "serial, https://", "connections"), 13.0, "{r:?}");
    assert_eq!(v(&r, "persistent 1, https://", "connections"), 1.0, "{r:?}");
    // HTTP/2 over TLS: every object in the round trip after the page. (Each
    // small answer as its own TLS record and segment overran the initial
    // window and cost the last ones a round trip, until the server corked
    // under TLS as it does for h2c.)
    let e = doc["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "tls")
        .unwrap();
    let bars = e["waterfalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w[0].as_str().unwrap().starts_with("multiplexed"))
        .unwrap()[1]
        .as_array()
        .unwrap();
    let end = |b: &Value| b["end_ms"].as_f64().unwrap();
    let page_end = end(&bars[0]);
    let last = bars.iter().map(end).fold(0.0, f64::max);
    // One round trip after the page, plus the CPU time of a loaded debug
    // build; a second round trip would end at two or more.
    assert!(last - page_end < 1.9 * RTT_MS, "{bars:?}");
}

/// The first request on a new connection: TCP + TLS 1.3 take two round
/// trips before it, QUIC one, QUIC resuming with 0-RTT none (R4.6).
#[test]
fn quic_saves_a_round_trip_before_the_first_request_and_0rtt_another() {
    need_root!();
    let doc = lab(&["tls"]);
    let r = rows(&doc, "tls");
    let wall = |l| v(&r, l, "wall ms");
    let tcp = wall("first request, HTTP/2 (TCP + TLS 1.3)");
    let quic = wall("first request, HTTP/3 (QUIC)");
    let zero = wall("0-RTT resumed, HTTP/3 (QUIC)");
    // Each takes at least its round trips: 3, 2 and 1.
    assert!(
        tcp >= 3.0 * RTT_MS && quic >= 2.0 * RTT_MS && zero >= RTT_MS,
        "{r:?}"
    );
    // And each step saves a good part of one: a quarter at least, as the
    // QUIC handshake of a debug build on a loaded machine costs 10-15 ms
    // of CPU (saved 11-13 ms of the 20 in runs here, 47 of 50 at 50 ms).
    assert!(quic + RTT_MS / 4.0 < tcp, "{r:?}");
    assert!(
        zero + RTT_MS / 4.0 < quic,
        "0-RTT saved no round trip: {r:?}"
    );
    // A resumed TLS session over TCP still pays both handshakes' trips.
    assert!(
        wall("resumed, HTTP/2 (TCP + TLS 1.3)") >= 3.0 * RTT_MS,
        "{r:?}"
    );
}

/// transport-hol measures both protocols at every loss rate, 10 loads each
/// with --quick: a page takes at least its two round trips (the HTML, then
/// its objects), a small object at least one; the link dropped packets at
/// 1 and 3 % although the run's own --loss is 0, and is lossless again
/// after it.
#[test]
fn transport_hol_measures_both_protocols_at_every_loss_rate() {
    need_root!();
    let doc = lab(&["transport-hol", "nagle"]);
    let r = rows(&doc, "transport-hol");
    assert_eq!(r.len(), 6, "{r:?}");
    for proto in ["HTTP/2 (TCP)", "HTTP/3 (QUIC)"] {
        for loss in [0, 1, 3] {
            let label = format!("{proto}, {loss} % loss");
            assert!(v(&r, &label, "page ms") >= 2.0 * RTT_MS, "{label}: {r:?}");
            assert!(v(&r, &label, "small p50 ms") >= RTT_MS, "{label}: {r:?}");
            assert!(v(&r, &label, "bulk pkts/RTT") > 0.0, "{label}: {r:?}");
        }
    }
    let e = |id: &str| {
        doc["experiments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap()
            .clone()
    };
    let hol = e("transport-hol");
    for row in hol["rows"].as_array().unwrap() {
        assert_eq!(row["n"], 10, "{row}");
    }
    assert!(
        hol["losses"]["dropped_packets"].as_u64().unwrap() > 0,
        "{hol}"
    );
    assert_eq!(
        e("nagle")["losses"]["dropped_packets"],
        0,
        "the loss stayed on"
    );
}

#[test]
fn realtime_delivers_every_event_with_exact_requests_and_connections() {
    need_root!();
    let doc = lab(&["realtime"]);
    let r = rows(&doc, "realtime");
    for technique in ["polling 1 s", "long polling", "SSE", "WebSocket"] {
        for case in ["random", "burst"] {
            assert!(
                r.contains_key(&format!("{technique}, {case}")),
                "no {technique}, {case}: {r:?}"
            );
        }
    }
    assert!(r.keys().any(|l| l.contains("via keepwire proxy")), "{r:?}");
    assert!(r.keys().any(|l| l.contains("via buffering relay")), "{r:?}");
    for (label, row) in &r {
        let get = |c: &str| row[c].unwrap_or_else(|| panic!("{label}/{c} missing: {row:?}"));
        assert_eq!(get("delivered"), get("events"), "{label}: {row:?}");
        assert_eq!(get("connections"), get("model conns"), "{label}: {row:?}");
        if label.starts_with("long polling") {
            // How many answers depends on how fast the server reacts to a
            // burst (the lab's verdict judges that): at least one answer
            // and a request after it, at most one answer per event.
            let requests = get("requests");
            assert!(
                (2.0..=get("events") + 1.0).contains(&requests),
                "{label}: {row:?}"
            );
        } else {
            assert_eq!(get("requests"), get("model requests"), "{label}: {row:?}");
        }
        // Headers, handshakes and ACKs: more on the wire than HTTP carries.
        assert!(get("wire bytes") > get("HTTP bytes"), "{label}: {row:?}");
        assert!(get("HTTP bytes") > 0.0, "{label}: {row:?}");
    }
    // One stream, one request; a poll per second.
    assert_eq!(v(&r, "SSE, random", "requests"), 1.0, "{r:?}");
    assert!(v(&r, "polling 1 s, random", "requests") >= 3.0, "{r:?}");
    let e = doc["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "realtime")
        .unwrap();
    assert_eq!(
        e["timelines"].as_array().unwrap().len(),
        r.len(),
        "a timeline per run"
    );
}

#[test]
fn without_namespaces_the_relay_runs_and_says_approximate() {
    let doc = lab(&["--relay", "page-load"]);
    assert_eq!(doc["link_kind"], "approximate");
    assert!(doc["fallback_reason"].is_string());
    let r = rows(&doc, "page-load");
    let wall = |l| v(&r, l, "wall ms");
    assert!(wall("pipelined 1") < wall("persistent 1"), "{r:?}");
    assert!(wall("persistent 1") < wall("serial"), "{r:?}");
}

/// A bare `--json` writes to stdout and moves the tables to stderr; a
/// name right after it (`--json nagle`) is an experiment, not a file.
#[test]
fn bare_json_goes_to_stdout_and_tables_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "lab",
        "--quick",
        "--relay",
        "--rtt",
        "20ms",
        "--no-report",
        "--json",
        "nagle",
    ];
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON alone on stdout");
    assert_eq!(doc["experiments"][0]["id"], "nagle");
    assert!(
        stderr.contains("== nagle") && stderr.contains("experiments match"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file written"
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "no spinner or colour in a pipe"
    );
}

/// On a terminal (`script` gives the lab a pseudo-terminal) the verdict is
/// coloured, unless NO_COLOR is set.
#[test]
fn the_verdict_is_coloured_on_a_terminal_only() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP: no script(1)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!("{BIN} lab --quick --relay --rtt 20ms --no-report nagle");
    let tty = |no_color: bool| {
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]).current_dir(dir.path());
        c.env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&common::run_command(c, LIMIT).stdout).into_owned()
    };
    let coloured = tty(false);
    let verdicts = ["\x1b[32mMATCHES\x1b[0m", "\x1b[1;31mDOES NOT MATCH\x1b[0m"];
    assert!(
        verdicts.iter().any(|v| coloured.contains(v)),
        "{coloured:?}"
    );
    let plain = tty(true);
    assert!(
        plain.contains("verdict: ") && !plain.contains("\x1b[32mMATCHES"),
        "{plain:?}"
    );
}

/// Whether any thread of any process is still in network namespace `ino`.
fn netns_alive(ino: u64) -> bool {
    let want = format!("net:[{ino}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    for p in procs.flatten() {
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if std::fs::read_link(t.path().join("ns/net"))
                .is_ok_and(|l| l.to_string_lossy() == want)
            {
                return true;
            }
        }
    }
    false
}

/// Starts the lab, reads the namespace inodes from its first line, and
/// returns the child and the inodes.
fn start_lab(args: &[&str]) -> (std::process::Child, Vec<u64>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    // Keep reading: a closed pipe would kill the lab at its next note
    // (say, the delay line refused real-time priority) and the test would
    // see a lab that died, not one that ran. Ends when the lab does.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let inodes: Vec<u64> = line
        .split("net:[")
        .skip(1)
        .filter_map(|s| s.split(']').next()?.parse().ok())
        .collect();
    assert_eq!(inodes.len(), 2, "two namespaces named in {line:?}");
    (child, inodes)
}

fn wait_gone(inodes: &[u64]) {
    let start = Instant::now();
    while inodes.iter().any(|i| netns_alive(*i)) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "namespaces {inodes:?} outlived the lab"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn namespaces_are_gone_after_a_run() {
    need_root!();
    let (mut child, inodes) =
        start_lab(&["lab", "--quick", "--rtt", "20ms", "--no-report", "nagle"]);
    assert!(
        inodes.iter().all(|i| netns_alive(*i)),
        "alive while running"
    );
    let status = child.wait().unwrap();
    assert!(status.success());
    wait_gone(&inodes);
}

#[test]
fn namespaces_are_gone_after_the_lab_is_killed_mid_run() {
    need_root!();
    for signal in ["-KILL", "-INT"] {
        let (mut child, inodes) = start_lab(&[
            "lab",
            "--quick",
            "--rtt",
            "20ms",
            "--no-report",
            "stale-retry",
        ]);
        std::thread::sleep(Duration::from_millis(300));
        assert!(inodes.iter().all(|i| netns_alive(*i)));
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let _ = child.wait();
        wait_gone(&inodes);
    }
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
    else {
        if std::env::var_os("KEEPWIRE_SKIP_PEERS").is_some() {
            eprintln!("SKIP: chromium not installed");
            return;
        }
        panic!("chromium is missing: scripts/test installs it");
    };
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let png = dir.path().join("shot.png");
    let html_s = html.display().to_string();
    // The relay keeps this test root-free; the report is the same either way.
    let out = run(
        &[
            "lab",
            "--quick",
            "--rtt",
            "20ms",
            "--relay",
            "--report",
            &html_s,
            "page-load",
            "nagle",
        ],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("page-load") && page.contains("waterfall"));
    // Nothing is fetched (URLs in tooltips and the SVG namespace are text).
    for fetch in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "url(",
        "@import",
    ] {
        assert!(!page.contains(fetch), "no network resources: {fetch}");
    }
    let profile = dir.path().join("profile");
    let shot = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--screenshot={}", png.display()),
            "--window-size=1000,1400",
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&shot.stderr);
    assert!(png.exists(), "no screenshot: {log}");
    assert!(!log.contains(":CONSOLE("), "console messages: {log}");
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let distinct: std::collections::HashSet<&[u8]> = pixels.chunks(step).collect();
    let non_white = pixels
        .chunks(step)
        .filter(|p| p.iter().take(3).any(|c| *c < 200))
        .count();
    assert!(
        distinct.len() > 10,
        "blank screenshot ({} colours)",
        distinct.len()
    );
    assert!(
        non_white > 1000,
        "almost nothing drawn: {non_white} dark pixels"
    );
}

/// `--repeat 2`: every row measured twice, each value the median with its
/// p10–p90 and N in the JSON and on the terminal (relay: no root needed).
#[test]
fn repeat_shows_the_median_its_spread_and_n() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("lab.json");
    let json_s = json.display().to_string();
    let args = [
        "lab",
        "--quick",
        "--relay",
        "--rtt",
        "20ms",
        "--no-report",
        "--repeat",
        "2",
        "--json",
        &json_s,
        "nagle",
    ];
    let out = run(&args, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let e = &doc["experiments"][0];
    assert_eq!(e["repeats"], 2, "{e}");
    assert!(e["runs_matched"].as_u64().unwrap() <= 2);
    // The relay shares the host's namespace: no per-lab TCP counters.
    assert!(e["losses"]["dropped_packets"].is_u64(), "{e}");
    assert!(e["losses"]["rto"].is_null(), "{e}");
    let rows = e["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let mut spread_seen = false;
    for r in rows {
        assert_eq!(r["n"], 2, "{r}");
        let s = &r["spread"][0];
        let (median, p10, p90) = (
            s["median"].as_f64().unwrap(),
            s["p10"].as_f64().unwrap(),
            s["p90"].as_f64().unwrap(),
        );
        assert_eq!(s["n"], 2);
        assert_eq!(
            r["values"][0].as_f64(),
            Some(median),
            "values are the medians"
        );
        assert!(p10 <= median && median <= p90, "{s}");
        spread_seen |= p10 < p90;
    }
    assert!(spread_seen, "two timed runs differ somewhere: {rows:?}");
    assert!(stdout.contains("(2 runs: medians"), "{stdout}");
    let header = stdout.lines().find(|l| l.contains("p50 ms")).unwrap();
    assert!(header.trim_end().ends_with('N'), "{header}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("Nagle on") && l.contains('[') && l.trim_end().ends_with('2')),
        "{stdout}"
    );
    // Out of range: a usage error, not a run.
    let bad = run(&["lab", "--repeat", "0", "nagle"], LIMIT);
    assert!(!bad.status.success());
}

/// With loss, each experiment reports what it cost: the link's drops and
/// the namespaces' retransmissions (exact link: per-namespace counters).
#[test]
fn with_loss_the_drops_and_retransmissions_are_counted() {
    need_root!();
    let doc = lab(&["--loss", "10", "--repeat", "2", "slow-start"]);
    let e = &doc["experiments"][0];
    assert_eq!(e["repeats"], 2);
    let l = &e["losses"];
    // 2 × 2 downloads of 64 KiB (45 segments each) at 10 % loss: a
    // lossless pair of runs has a chance below 1e-7.
    assert!(l["dropped_packets"].as_u64().unwrap() > 0, "{l}");
    assert!(l["retransmitted_segments"].as_u64().unwrap() > 0, "{l}");
    assert!(l["rto"].is_u64(), "{l}");
    assert_eq!(e["rows"][0]["n"], 2, "{e}");
}
