//! `keepwire get` as a user runs it: the real binary against `keepwire serve`
//! (and nginx) started as child processes on free ports. Connections are
//! counted twice: by the client (`--json` summary) and at the server
//! (`keepwire_connections_accepted_total`, nginx's `$connection`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::BIN;

/// No single `keepwire get` in these tests may take longer.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Kills a child process by PID when the test ends, however it ends.
struct Guard {
    child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Serve {
    _guard: Guard,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

/// The `ip:port` after `http://` in a log line.
fn addr_in(line: &str) -> SocketAddr {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .expect("a socket address")
}

/// `keepwire serve --listen 127.0.0.1:0 ARGS`, with `--admin 127.0.0.1:0`
/// when `admin`; addresses are read from its stderr.
fn serve(args: &[&str], admin: bool) -> Serve {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(args);
    if admin {
        cmd.args(["--admin", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keepwire binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let guard = Guard { child };
    let mut lines = BufReader::new(stderr).lines();
    let (mut addr, mut admin_addr) = (None, None);
    while addr.is_none() || (admin && admin_addr.is_none()) {
        let line = lines
            .next()
            .expect("serve prints its addresses")
            .expect("stderr is utf-8");
        if line.contains("listening on http://") {
            addr = Some(addr_in(&line));
        } else if line.contains("metrics on http://") {
            admin_addr = Some(addr_in(&line));
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Serve {
        _guard: guard,
        addr: addr.unwrap(),
        admin: admin_addr,
    }
}

/// Connections the server has accepted so far (its admin /metrics).
fn accepted(s: &Serve) -> u64 {
    let admin = s.admin.expect("server started with --admin");
    let mut conn = TcpStream::connect(admin).expect("connect to admin");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("keepwire_connections_accepted_total "))
        .unwrap_or_else(|| panic!("no accepted counter in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Runs `keepwire get ARGS`, killed if it outlives [`RUN_LIMIT`].
fn get(args: &[&str]) -> Output {
    let mut all = vec!["get", "--timeout", "10s"];
    all.extend_from_slice(args);
    common::run(&all, RUN_LIMIT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `keepwire get --json ARGS`, which must succeed; the parsed document.
fn get_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = get(&all);
    assert!(
        out.status.success(),
        "keepwire get {all:?} failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn requests(doc: &Value) -> &Vec<Value> {
    doc["requests"].as_array().expect("requests array")
}

fn opened(doc: &Value) -> u64 {
    doc["summary"]["connections_opened"]
        .as_u64()
        .expect("summary.connections_opened")
}

/// Loads the demo page with a strategy; returns the JSON and the server's
/// count of connections accepted for it.
fn load_page(s: &Serve, strategy: &str, n: &str) -> (Value, u64) {
    let before = accepted(s);
    let url = format!("http://{}/", s.addr);
    let doc = get_json(&["--page", "--strategy", strategy, "-c", n, &url]);
    let at_server = accepted(s) - before;
    let reqs = requests(&doc);
    assert_eq!(reqs.len(), 13, "1 page + 12 objects with {strategy}");
    assert_eq!(doc["summary"]["requests"], 13);
    for r in reqs {
        assert_eq!(r["status"], 200, "{strategy}: {r}");
        assert!(r["error"].is_null(), "{strategy}: {r}");
    }
    (doc, at_server)
}

#[test]
fn strategies_open_the_expected_connections() {
    let s = serve(&["--objects", "12"], true);

    // R4.1: a new connection per request, Connection: close.
    let (doc, at_server) = load_page(&s, "serial", "6");
    assert_eq!((opened(&doc), at_server), (13, 13), "serial");
    assert!(requests(&doc).iter().all(|r| r["reused"] == false));

    // R4.2: parallel connections, none reused.
    let (doc, at_server) = load_page(&s, "parallel", "4");
    assert_eq!((opened(&doc), at_server), (13, 13), "parallel -n 4");
    let distinct: std::collections::HashSet<u64> = requests(&doc)
        .iter()
        .map(|r| r["connection"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(distinct.len(), 13, "parallel: one connection per request");

    // R4.3: one persistent connection carries everything.
    let (doc, at_server) = load_page(&s, "persistent", "1");
    assert_eq!((opened(&doc), at_server), (1, 1), "persistent -n 1");
    assert_eq!(doc["summary"]["reused"], 12);

    // R4.3 with the browser's cap of 6.
    let (doc, at_server) = load_page(&s, "persistent", "6");
    assert!(
        (1..=6).contains(&opened(&doc)) && opened(&doc) == at_server,
        "persistent -n 6 opened {} (server saw {at_server})",
        opened(&doc)
    );

    // R4.4: everything down one pipelined connection, in order.
    let (doc, at_server) = load_page(&s, "pipelined", "1");
    assert_eq!((opened(&doc), at_server), (1, 1), "pipelined -n 1");
    let reqs = requests(&doc);
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r["index"], i + 1);
        assert_eq!(r["connection"]["id"], 1);
        assert_eq!(
            r["conn_request_index"], i,
            "responses in request order: {r}"
        );
        assert_eq!(r["pipelined"], i > 0, "sub-resources are pipelined: {r}");
    }

    // R4.5: every sub-resource at once as a stream of one HTTP/2 connection.
    let (doc, at_server) = load_page(&s, "multiplexed", "6");
    assert_eq!((opened(&doc), at_server), (1, 1), "multiplexed");
    assert!(
        requests(&doc)
            .iter()
            .all(|r| r["version"] == "HTTP/2.0" && r["status"] == 200)
    );
}

#[test]
fn pipelined_responses_match_their_requests() {
    let s = serve(&["--objects", "12", "--object-size", "64"], false);
    let dir = tempfile::tempdir().unwrap();
    let bodies = dir.path().join("bodies");
    let url = format!("http://{}/", s.addr);
    let doc = get_json(&[
        "--page",
        "--strategy",
        "pipelined",
        "-c",
        "2",
        "--depth",
        "4",
        "-o",
        bodies.to_str().unwrap(),
        &url,
    ]);
    let reqs = requests(&doc);
    assert_eq!(reqs.len(), 13);
    assert!(opened(&doc) <= 2, "{}", doc["summary"]);
    // Bodies are written in request order; each object's body names it.
    let all = std::fs::read_to_string(&bodies).unwrap();
    let mut rest = all.as_str();
    for r in &reqs[1..] {
        let url = r["url"].as_str().unwrap();
        let name = url.rsplit('/').next().unwrap();
        let (num, ext) = name.split_once('.').unwrap();
        let label = format!("/* keepwire object {num} */");
        let at = rest
            .find(&label)
            .unwrap_or_else(|| panic!("body of {url} missing or out of order"));
        rest = &rest[at + label.len()..];
        let want_type = match ext {
            "png" => "image/png",
            "css" => "text/css",
            _ => "text/javascript",
        };
        assert_eq!(r["content_type"], want_type, "{r}");
        assert_eq!(r["size"], 64);
    }
}

#[test]
fn json_has_one_entry_per_request_and_a_summary() {
    let s = serve(&["--objects", "3"], false);
    let base = format!("http://{}", s.addr);
    let urls: Vec<String> = ["/obj/0.png", "/obj/1.css", "/obj/2.js", "/nope"]
        .iter()
        .map(|p| format!("{base}{p}"))
        .collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let doc = get_json(&args);
    let reqs = requests(&doc);
    assert_eq!(reqs.len(), 4);
    for (r, url) in reqs.iter().zip(&urls) {
        assert_eq!(r["url"], url.as_str());
        assert_eq!(r["kind"], "url");
        for phase in ["queued", "send", "wait", "download"] {
            assert!(r["phases_ms"][phase].as_f64().unwrap() >= 0.0, "{r}");
        }
        assert!(r["total_ms"].as_f64().unwrap() > 0.0);
        assert!(r["connection"]["local"].as_str().unwrap().contains(':'));
        assert_eq!(r["connection"]["peer"], s.addr.to_string());
        assert!(r["connection"].get("tls").is_none(), "cleartext: {r}");
    }
    assert_eq!(reqs[3]["status"], 404, "a 404 is a response, not an error");
    let sum = &doc["summary"];
    assert_eq!(sum["requests"], 4);
    assert_eq!(sum["failed"], 0);
    assert_eq!(sum["strategy"], "persistent");
    assert!(sum["wall_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn table_has_one_line_per_request_and_a_summary() {
    let s = serve(&["--objects", "2"], false);
    let a = format!("http://{}/obj/0.png", s.addr);
    let b = format!("http://{}/obj/1.css", s.addr);
    let out = get(&["--strategy", "persistent", "-c", "1", &a, &b]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "header, 2 requests, summary: {stdout}");
    assert!(
        lines[0].contains("status") && lines[0].contains("wait"),
        "{stdout}"
    );
    for (line, url) in [(lines[1], &a), (lines[2], &b)] {
        assert!(
            line.contains(" 200 ") && line.ends_with(url.as_str()),
            "{line}"
        );
        assert!(line.contains("#1"), "one connection: {line}");
    }
    assert!(lines[1].contains(" new "), "{stdout}");
    assert!(lines[2].contains(" reused "), "{stdout}");
    let summary = lines[3];
    assert!(summary.starts_with("2 requests"), "{summary}");
    assert!(summary.contains("1 connection opened"), "{summary}");
    assert!(summary.contains("wall "), "{summary}");
    assert!(!stdout.contains("keepwire object"), "no bodies by default");
}

#[test]
fn body_goes_to_stdout_only_when_asked() {
    let s = serve(&["--respond", "hello body"], false);
    let url = format!("http://{}/", s.addr);
    let out = get(&["--show-body", &url]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "hello body\n");
    assert!(
        text(&out.stderr).contains("1 request (1 ok)"),
        "table on stderr"
    );
}

#[test]
fn verbose_prints_heads_like_curl() {
    let s = serve(&["--objects", "1"], false);
    let url = format!("http://{}/", s.addr);
    let out = get(&["-v", &url]);
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("> GET / HTTP/1.1"), "{err}");
    assert!(err.contains(&format!("> host: {}", s.addr)), "{err}");
    assert!(err.contains("< HTTP/1.1 200"), "{err}");
    assert!(err.contains("< content-length: "), "{err}");
    assert!(err.contains("* #1 connection #1 new"), "{err}");

    let out = get(&["-v", "--strategy", "serial", &url]);
    assert!(text(&out.stderr).contains("> connection: close"), "R5.3");
}

#[test]
fn waterfall_is_a_self_contained_page_with_a_bar_group_per_request() {
    let s = serve(&["--objects", "12"], false);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.html");
    let url = format!("http://{}/", s.addr);
    let out = get(&[
        "--page",
        "--strategy",
        "persistent",
        "-c",
        "2",
        "--waterfall",
        file.to_str().unwrap(),
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(&file).expect("waterfall written");
    assert!(html.starts_with("<!doctype html>"), "{}", &html[..50]);
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), 1);
    assert_eq!(html.matches("<g class=\"req\"").count(), 13);
    assert_eq!(html.matches("<g").count(), html.matches("</g>").count());
    assert!(html.contains("connection #1"));
    assert!(html.contains("persistent"));
    for phase in ["queued", "DNS", "connect", "waiting (TTFB)", "download"] {
        assert!(html.contains(phase), "legend lacks {phase}");
    }
    // Nothing to fetch: no scripts, no external stylesheets, images or fonts.
    for external in ["<script", "<link", " src=", "@import", "url("] {
        assert!(!html.contains(external), "waterfall contains {external}");
    }

    // Interpolated text is escaped.
    let odd = format!("http://{}/obj/0.png?a=1&b='x'", s.addr);
    let out = get(&["--waterfall", file.to_str().unwrap(), &odd]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.contains("a=1&amp;b=&#39;x&#39;"), "escaped URL");
    assert!(!html.contains("a=1&b="), "raw & in the page");
    assert_eq!(html.matches("<g class=\"req\"").count(), 1);
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A server that answers every request with `response` and closes.
fn fixed_server(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(response);
        }
    });
    addr
}

#[test]
fn errors_name_the_url_and_the_cause_and_the_rest_still_runs() {
    let s = serve(&["--objects", "1"], false);
    let good = format!("http://{}/obj/0.png", s.addr);
    let refused = format!("http://127.0.0.1:{}/", closed_port());
    let out = get(&[&refused, "ftp://example.test/", "http://exa mple/", &good]);
    assert!(!out.status.success(), "failures exit non-zero");
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains(&refused) && l.contains("cannot connect") && l.contains("refused")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("ftp://example.test/") && l.contains("unsupported scheme")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("http://exa mple/") && l.contains("invalid URL")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" 200 ") && l.ends_with(good.as_str())),
        "the good URL is still fetched: {stdout}"
    );
    assert!(stdout.contains("4 requests (1 ok, 3 failed)"), "{stdout}");

    // R8.2: a truncated body is an error, not a short success.
    let short = fixed_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly twenty bytes...");
    let url = format!("http://{short}/");
    let out = get(&[&url]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains(&url) && l.contains("truncated") && l.contains("100")),
        "{err}"
    );
    let chunked =
        fixed_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    let url = format!("http://{chunked}/");
    let out = get(&[&url, "--json"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("truncated"),
        "{}",
        text(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON even on failure");
    assert_eq!(doc["summary"]["failed"], 1);
    assert!(
        requests(&doc)[0]["error"]
            .as_str()
            .unwrap()
            .contains("truncated")
    );
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(BIN).args(["get", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for option in [
        "--verbose",
        "--json",
        "--show-body",
        "--output",
        "--page",
        "--strategy",
        "--connections",
        "--depth",
        "--waterfall",
        "--timeout",
        "serial",
        "parallel",
        "persistent",
        "pipelined",
        "TTFB",
    ] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }
    let out = Command::new(BIN).args(["get"]).output().unwrap();
    assert!(!out.status.success(), "a URL is required");
}

// ---- nginx ----

#[test]
fn nginx_page_with_two_persistent_connections() {
    // nginx logs each request's connection serial, to count connections.
    let Some(nginx) = common::nginx_with(
        "log_format conns '$connection $connection_requests $request_uri $status';\n \
         types { text/html html; text/css css; application/javascript js; image/png png; }\n \
         default_type application/octet-stream;\n keepalive_timeout 30s;",
        "listen LISTEN;\n root DIR/www;\n index index.html;\n access_log DIR/access.log conns;",
    ) else {
        return;
    };
    let www = nginx.dir.join("www");
    std::fs::create_dir_all(www.join("img")).unwrap();
    std::fs::write(
        www.join("index.html"),
        "<!doctype html><html><head><title>t</title>\n\
         <link rel=\"stylesheet\" href=\"style.css\">\n\
         <link rel=\"canonical\" href=\"/canonical.html\">\n\
         <script src=\"/app.js\"></script></head><body>\n\
         <img src=\"img/a.png\"><img src=\"img/b.png\"><img src=\"/img/a.png\">\n\
         <img src=\"http://other.invalid/x.png\">\n\
         <!-- <img src=\"/commented.png\"> -->\n\
         </body></html>\n",
    )
    .unwrap();
    std::fs::write(www.join("style.css"), "body{color:#333}\n").unwrap();
    std::fs::write(www.join("app.js"), "console.log('hi');\n").unwrap();
    std::fs::write(www.join("img/a.png"), vec![1u8; 3000]).unwrap();
    std::fs::write(www.join("img/b.png"), vec![2u8; 5000]).unwrap();
    let addr = nginx.addr;

    let url = format!("http://{addr}/");
    let doc = get_json(&[
        "--page",
        "--strategy",
        "persistent",
        "--connections",
        "2",
        &url,
    ]);
    let reqs = requests(&doc);
    let paths: Vec<String> = reqs
        .iter()
        .map(|r| {
            r["url"]
                .as_str()
                .unwrap()
                .trim_start_matches(&format!("http://{addr}"))
                .to_string()
        })
        .collect();
    assert_eq!(
        paths,
        ["/", "/style.css", "/app.js", "/img/a.png", "/img/b.png"],
        "same-origin sub-resources, once each, in document order"
    );
    for r in reqs {
        assert_eq!(r["status"], 200, "{r}");
    }
    assert_eq!(reqs[3]["size"], 3000);
    assert_eq!(reqs[4]["size"], 5000);
    assert!(opened(&doc) <= 2, "{}", doc["summary"]);

    // Count at nginx: distinct $connection serials in its access log (nginx
    // logs a request just after sending its response: wait for the lines).
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
        if log.lines().count() >= 5 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 5, "{log}");
    let conns: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        conns.len() <= 2,
        "nginx saw {} connections: {log}",
        conns.len()
    );
    assert_eq!(conns.len() as u64, opened(&doc), "{log}");
}

/// A Server-Sent Events stream (`keepwire serve` /events) has each event
/// printed as it arrives: the first lines come while the stream goes on
/// (it never ends on its own), read from the child's stdout with a bound.
#[test]
fn sse_events_are_printed_as_they_arrive() {
    let s = serve(&["--events-per-s", "10"], false);
    let mut child = Command::new(BIN)
        .args(["get", "-v", &format!("http://{}/events", s.addr)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keepwire get starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let get = Guard { child };
    let (tx, rx) = std::sync::mpsc::channel();
    let err_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(("out", line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(("err", line));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut data, mut notes) = (Vec::new(), Vec::new());
    while data.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(("out", line)) => data.push(line),
            Ok((_, line)) if line.starts_with("* #1 event") => notes.push(line),
            Ok(_) => {}
            Err(e) => panic!("3 events not printed within 10 s ({e}): {data:?}"),
        }
    }
    let mut child = get;
    assert!(
        child.child.try_wait().unwrap().is_none(),
        "printed only when the stream ended"
    );
    let ids: Vec<u64> = data
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            v["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids[1], ids[0] + 1, "{data:?}");
    assert_eq!(ids[2], ids[0] + 2, "{data:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("id={} type=message", ids[0]))),
        "{notes:?}"
    );
}
