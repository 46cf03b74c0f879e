//! `keepwire get` as a curl user uses it (issue 18): curl's request flags,
//! output flags, `-w` variables, redirects, exit codes and proxies, each
//! checked against `keepwire serve`, nginx, `keepwire proxy --forward` and,
//! where the same request can be made, against curl's own answer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Running, run_env, serve, start};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

fn get(args: &[&str]) -> Output {
    get_env(args, &[])
}

/// `keepwire get ARGS` with no proxy variables but `env`.
fn get_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["get", "--timeout", "10s"];
    all.extend_from_slice(args);
    let mut full: Vec<(&str, &str)> = [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ]
    .iter()
    .map(|k| (*k, ""))
    .collect();
    full.extend_from_slice(env);
    run_env(&all, &full, LIMIT)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn curl(args: &[&str]) -> Option<Output> {
    let mut cmd = Command::new("curl");
    for k in [
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(k);
    }
    let out = cmd.args(["-sS", "--max-time", "10"]).args(args).output();
    match out {
        Ok(o) => Some(o),
        Err(_) if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") => None,
        Err(e) => panic!("curl is not installed ({e})"),
    }
}

/// A server that answers every request with its exact bytes (head and
/// body) as the body, keeping connections open; stopped when dropped.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn echo() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + LIMIT;
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((s, _)) => {
                    std::thread::spawn(move || echo_conn(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Echo { addr, stop }
}

fn echo_conn(s: TcpStream) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..100 {
        let mut req = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
            req.extend_from_slice(line.as_bytes());
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length.min(1 << 20)];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        req.extend_from_slice(&body);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            req.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(&req).is_err() {
            return;
        }
    }
}

/// A file under the temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(name: &str, content: &[u8]) -> TempFile {
    let p = std::env::temp_dir().join(format!("kw-get-{}-{name}", std::process::id()));
    std::fs::write(&p, content).unwrap();
    TempFile(p)
}

/// The echoed request, with the header names lowercased (curl and
/// keepwire spell them differently) and `User-Agent` left out.
fn normalized(echoed: &str) -> String {
    let (head, body) = echoed.split_once("\r\n\r\n").unwrap_or((echoed, ""));
    let mut lines = head.lines();
    let mut out = vec![lines.next().unwrap_or("").to_string()];
    let mut fields: Vec<String> = lines
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| !n.eq_ignore_ascii_case("user-agent"))
        .map(|(n, v)| format!("{}: {v}", n.to_ascii_lowercase()))
        .collect();
    fields.sort();
    out.extend(fields);
    format!("{}\n\n{body}", out.join("\n"))
}

#[test]
fn request_flags_send_what_curl_sends() {
    let e = echo();
    let url = format!("http://{}/form?q=1", e.addr);
    let form = temp("form", b"b=2\r\nc=3\n");
    let raw = temp("raw", b"x\r\ny\n");
    let at_form = format!("@{}", form.0.display());
    let at_raw = format!("@{}", raw.0.display());
    let cases: Vec<Vec<&str>> = vec![
        vec!["-d", "a=1", "-d", &at_form],
        vec!["--data-binary", &at_raw],
        vec![
            "-X", "PUT", "-H", "X-A: 1", "-H", "X-A: 2", "-H", "Accept:", "-d", "z",
        ],
        vec!["-H", "Host: vhost.test", "-H", "Authorization: Bearer t"],
        vec!["-X", "DELETE"],
    ];
    for flags in cases {
        let mut args = flags.clone();
        args.extend(["--show-body", &url]);
        let out = get(&args);
        assert_eq!(code(&out), 0, "{flags:?}: {}", text(&out.stderr));
        let ours = normalized(&text(&out.stdout));
        let mut args = flags.clone();
        args.push(&url);
        let Some(theirs) = curl(&args) else { return };
        assert_eq!(ours, normalized(&text(&theirs.stdout)), "{flags:?}");
    }
    // curl's --json DATA is --json-data here.
    let out = get(&["--json-data", r#"{"a":1}"#, "--show-body", &url]);
    let echoed = normalized(&text(&out.stdout));
    assert!(echoed.starts_with("POST /form?q=1 HTTP/1.1"), "{echoed}");
    assert!(
        echoed.contains("content-type: application/json"),
        "{echoed}"
    );
    assert!(echoed.contains("accept: application/json"), "{echoed}");
    assert!(echoed.ends_with(r#"{"a":1}"#), "{echoed}");
    let out = get(&[&url, "--json", r#"{"a":1}"#]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("--json-data"),
        "{}",
        text(&out.stderr)
    );
    // -d @missing is curl's 26.
    assert_eq!(code(&get(&["-d", "@/nonexistent/kw", &url])), 26);
}

#[test]
fn head_include_fail_and_output_as_curl() {
    let s = serve(&["--respond", "hello"]);
    let url = format!("http://{}/", s.addr);
    let out = get(&["-I", &url]);
    let head = text(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n") && !head.contains("hello"),
        "{head}"
    );
    let theirs = curl(&["-I", &url]).map(|o| text(&o.stdout));
    if let Some(t) = theirs {
        assert_eq!(head.lines().next(), t.lines().next());
    }
    let out = get(&["-i", &url]);
    let both = text(&out.stdout);
    assert!(
        both.starts_with("HTTP/1.1 200 OK\r\n") && both.ends_with("\r\n\r\nhello\n"),
        "{both}"
    );
    // -f: 22 on a status >= 400, and its body is not written.
    let s = serve(&[]);
    let missing = format!("http://{}/nosuch", s.addr);
    let out = get(&["-f", "--show-body", &missing]);
    assert_eq!(code(&out), 22, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    // ... and the summary counts it failed, as the exit code does.
    let err = text(&out.stderr);
    assert!(err.contains("1 request (0 ok, 1 failed)"), "{err}");
    assert_eq!(code(&get(&["--show-body", &missing])), 0);
    if let Some(c) = curl(&["-f", "-o", "/dev/null", &missing]) {
        assert_eq!(c.status.code(), Some(22));
    }
    // -o FILE.
    let file = temp("o", b"");
    let out = get(&["-o", file.0.to_str().unwrap(), &url]);
    assert_eq!(code(&out), 0);
    assert_eq!(std::fs::read(&file.0).unwrap(), b"hello\n");
}

#[test]
fn write_out_variables_match_curl() {
    let s = serve(&["--objects", "2"]);
    let a = format!("http://{}/obj/0.png", s.addr);
    let b = format!("http://{}/nosuch", s.addr);
    let f = "%{http_code} %{num_connects} %{num_redirects} %{size_download} %{size_header} \
             %{http_version} %{remote_ip} %{remote_port} %{content_type} %{url_effective} %{exitcode}\\n";
    let out = get(&["-w", f, &a, &b]);
    let ours = text(&out.stdout);
    assert_eq!(ours.lines().count(), 2, "{ours}");
    if let Some(c) = curl(&["-o", "/dev/null", "-o", "/dev/null", "-w", f, &a, &b]) {
        assert_eq!(ours, text(&c.stdout));
    }
    // Times: seconds with microseconds, cumulative, 0 appconnect without TLS.
    let f = "%{time_namelookup} %{time_connect} %{time_appconnect} %{time_pretransfer} \
             %{time_starttransfer} %{time_total} %{local_ip} %{local_port}";
    let out = get(&["-w", f, &a]);
    let w = text(&out.stdout);
    let v: Vec<&str> = w.split(' ').collect();
    let t: Vec<f64> = v[..6].iter().map(|x| x.parse().unwrap()).collect();
    assert!(
        v[..6]
            .iter()
            .all(|x| x.split('.').nth(1).unwrap().len() == 6),
        "{w}"
    );
    assert_eq!(t[2], 0.0, "{w}");
    assert!(
        t[0] <= t[1] && t[1] <= t[3] && t[3] <= t[4] && t[4] <= t[5],
        "{w}"
    );
    assert_eq!(v[6], "127.0.0.1");
    assert!(v[7].parse::<u16>().unwrap() > 0, "{w}");
}

#[test]
fn several_urls_reuse_one_connection_per_origin() {
    let s = serve(&["--objects", "3"]);
    let urls: Vec<String> = (0..3)
        .map(|i| format!("http://{}/obj/{i}.png", s.addr))
        .collect();
    let mut args: Vec<&str> = urls.iter().map(String::as_str).collect();
    args.push("--json");
    let doc = json(&get(&args));
    assert_eq!(doc["summary"]["connections_opened"], 1, "{doc}");
    assert_eq!(doc["summary"]["reused"], 2, "{doc}");
    // The table says it.
    let out = get(&[&urls[0], &urls[1]]);
    let table = text(&out.stdout);
    assert!(table.contains("1 connection opened, 1 reused"), "{table}");
    // curl agrees: one connection for both.
    if let Some(c) = curl(&[
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects}",
        &urls[0],
        &urls[1],
    ]) {
        assert_eq!(text(&c.stdout), "10");
    }
    // -n: the list repeated; -c: connections at once.
    let doc = json(&get(&["-n", "7", "-c", "2", &urls[0], &urls[1], "--json"]));
    assert_eq!(doc["summary"]["requests"], 7, "{doc}");
    assert_eq!(doc["summary"]["connections_opened"], 2, "{doc}");
}

#[test]
fn redirects_follow_as_curl_with_nginx() {
    let Some(n) = common::nginx_with(
        "log_format echo '$request_method $uri $content_length';",
        "listen LISTEN; access_log DIR/echo.log echo;
         location = /a { return 302 /b; }
         location = /b { return 301 /c; }
         location = /c { return 200 'landed\\n'; }
         location = /t { return 307 /c; }
         location = /loop { return 302 /loop; }",
    ) else {
        return;
    };
    let base = format!("http://{}", n.addr);
    let a = format!("{base}/a");
    let f = "%{http_code} %{num_redirects} %{url_effective}";
    let out = get(&["-L", "-w", f, &a]);
    assert_eq!(
        text(&out.stdout),
        format!("200 2 {base}/c"),
        "{}",
        text(&out.stderr)
    );
    if let Some(c) = curl(&["-L", "-o", "/dev/null", "-w", f, &a]) {
        assert_eq!(text(&out.stdout), text(&c.stdout));
    }
    // Without -L: the 302 itself.
    assert_eq!(text(&get(&["-w", "%{http_code}", &a]).stdout), "302");
    // POST: 302 and 301 turn it into GET; 307 keeps it.
    let _ = std::fs::write(n.dir.join("echo.log"), b"");
    assert_eq!(code(&get(&["-L", "-d", "x=1", &a])), 0);
    assert_eq!(code(&get(&["-L", "-d", "x=1", &format!("{base}/t")])), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read_to_string(n.dir.join("echo.log")).unwrap_or_default();
        if log.lines().count() >= 5 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "POST /a 3",
            "GET /b -",
            "GET /c -",
            "POST /t 3",
            "POST /c 3"
        ],
        "{log}"
    );
    // A loop: 47 after --max-redirs.
    let out = get(&[
        "-L",
        "--max-redirs",
        "3",
        "-w",
        "%{num_redirects}",
        &format!("{base}/loop"),
    ]);
    assert_eq!(code(&out), 47, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "3");
    if let Some(c) = curl(&[
        "-L",
        "--max-redirs",
        "3",
        "-o",
        "/dev/null",
        &format!("{base}/loop"),
    ]) {
        assert_eq!(c.status.code(), Some(47));
    }
}

#[test]
fn exit_codes_are_curls() {
    // 6: a name that cannot resolve.
    let out = get(&["http://nosuch.invalid/"]);
    assert_eq!(code(&out), 6, "{}", text(&out.stderr));
    // 7: a closed port; the message names the address.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = get(&[&format!("http://{closed}/")]);
    assert_eq!(code(&out), 7);
    assert!(
        text(&out.stderr).contains(&closed.to_string()),
        "{}",
        text(&out.stderr)
    );
    // The same for every request of a pipelined connection that never opened.
    let (a, b) = (format!("http://{closed}/a"), format!("http://{closed}/b"));
    let out = get(&["--strategy", "pipelined", &a, &b, "--json"]);
    assert_eq!(code(&out), 7);
    let doc = json(&out);
    let all = doc["requests"].as_array().unwrap();
    assert!(all.iter().all(|r| r["exit_code"] == 7), "{doc}");
    // 28: a server that never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    let out = common::run(&["get", "--timeout", "1s", &url], LIMIT);
    assert_eq!(code(&out), 28, "{}", text(&out.stderr));
    if let Some(c) = curl(&["--max-time", "1", &url]) {
        assert_eq!(c.status.code(), Some(28));
    }
    // 35: a TLS handshake with a server that does not speak TLS.
    let plain = serve(&["--respond", "plain"]);
    let url = format!("https://{}/", plain.addr);
    let out = get(&["-k", &url]);
    assert_eq!(code(&out), 35, "{}", text(&out.stderr));
    if let Some(c) = curl(&["-k", &url]) {
        assert_eq!(c.status.code(), Some(35));
    }
    // 3: not a URL we can request.
    assert_eq!(code(&get(&["ftp://127.0.0.1/"])), 3);
}

#[test]
fn an_untrusted_certificate_says_what_to_do() {
    let s = start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--tls-self-signed",
    ]);
    let url = format!("https://localhost:{}/", s.addr.port());
    let out = get(&[&url]);
    assert_eq!(code(&out), 60, "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("; use --cacert FILE to trust its CA, or -k to skip verification\n"),
        "one wording in get, bench, ws, check: {err}"
    );
    if let Some(c) = curl(&[&url]) {
        assert_eq!(c.status.code(), Some(60));
    }
    assert_eq!(code(&get(&["-k", &url])), 0);
    // -i over HTTP/2: the status line as curl prints it.
    let ours = text(&get(&["-k", "-i", &url]).stdout);
    assert!(ours.starts_with("HTTP/2 200 \r\n"), "{ours:?}");
    if let Some(c) = curl(&["-k", "-i", &url]) {
        assert_eq!(ours.lines().next(), text(&c.stdout).lines().next());
    }
}

fn forward_proxy(connect_port: u16) -> Running {
    let port = connect_port.to_string();
    let p = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--forward",
        "--allow-destination",
        "127.0.0.0/8",
        "--connect-port",
        &port,
    ]);
    assert!(p.first_line.contains("(forward)"), "{}", p.first_line);
    p
}

/// The peer of the connection that carried the request.
fn peer(out: &Output) -> String {
    let doc = json(out);
    doc["requests"][0]["connection"]["peer"]
        .as_str()
        .unwrap_or_else(|| panic!("{doc}"))
        .to_string()
}

#[test]
fn proxies_from_flags_and_environment_as_curl() {
    let s = serve(&["--respond", "origin"]);
    let p = forward_proxy(s.addr.port());
    let via = format!("http://{}", p.addr);
    let url = format!("http://{}/", s.addr);
    let (origin, proxy) = (s.addr.to_string(), p.addr.to_string());
    let out = get(&["-x", &via, &url, "--json"]);
    assert_eq!(peer(&out), proxy);
    let out = get_env(&[&url, "--json"], &[("http_proxy", &via)]);
    assert_eq!(peer(&out), proxy);
    // httpoxy: curl ignores uppercase HTTP_PROXY.
    let out = get_env(&[&url, "--json"], &[("HTTP_PROXY", &via)]);
    assert_eq!(peer(&out), origin);
    let out = get_env(
        &[&url, "--json"],
        &[("ALL_PROXY", &via), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(peer(&out), origin);
    let out = get_env(&["--noproxy", "*", &url, "--json"], &[("http_proxy", &via)]);
    assert_eq!(peer(&out), origin);
    let out = get_env(&["-x", "", &url, "--json"], &[("http_proxy", &via)]);
    assert_eq!(peer(&out), origin);
    // Two origins through the proxy: one connection, pooled per proxy.
    let other = serve(&["--respond", "other"]);
    let out = get(&[
        "-x",
        &via,
        &url,
        &format!("http://{}/", other.addr),
        "--json",
    ]);
    let doc = json(&out);
    assert_eq!(doc["summary"]["connections_opened"], 1, "{doc}");
    assert_eq!(doc["requests"][1]["status"], 200, "{doc}");
    // Not h2c to a proxy: HTTP/1.1 in absolute-form.
    let out = get(&["-x", &via, "--http2-prior-knowledge", &url, "--json"]);
    assert_eq!(json(&out)["requests"][0]["version"], "HTTP/1.1");
    // The body came through the proxy.
    let out = get(&["-x", &via, "--show-body", &url]);
    assert_eq!(text(&out.stdout), "origin\n");
    // 5: a proxy that does not resolve.
    let out = get(&["-x", "http://nosuch.invalid:3128", &url]);
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    if let Some(c) = curl(&["-x", "http://nosuch.invalid:3128", &url]) {
        assert_eq!(c.status.code(), Some(5));
    }
}

#[test]
fn a_proxy_gets_the_absolute_form_and_credentials_as_curl_sends_them() {
    // The echo server as the proxy: it answers with what it received.
    let e = echo();
    let via = format!("http://us%40er:pw@{}", e.addr);
    let url = "http://origin.test:8080/p?q=1";
    let ours = text(&get(&["-x", &via, "--show-body", url]).stdout);
    let pick = |echoed: &str| -> Vec<String> {
        echoed
            .lines()
            .filter(|l| {
                l.starts_with("GET ") || l.to_ascii_lowercase().starts_with("proxy-authorization:")
            })
            .map(|l| l.to_ascii_lowercase())
            .collect()
    };
    assert_eq!(
        pick(&ours),
        [
            "get http://origin.test:8080/p?q=1 http/1.1",
            "proxy-authorization: basic dxnazxi6chc="
        ],
        "{ours}"
    );
    if let Some(c) = curl(&["-x", &via, url]) {
        assert_eq!(pick(&ours), pick(&text(&c.stdout)));
    }
    // -v shows the absolute-form that was sent, the credentials redacted.
    let err = text(&get(&["-v", "-x", &via, url]).stderr);
    assert!(
        err.contains("> GET http://origin.test:8080/p?q=1 HTTP/1.1\n"),
        "{err}"
    );
    assert!(
        err.contains("> proxy-authorization: Basic [redacted]\n"),
        "{err}"
    );
    assert!(!err.contains("dXNAZXI6cHc="), "{err}");
}

#[test]
fn https_goes_through_a_connect_tunnel() {
    let s = start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--tls-self-signed",
    ]);
    let p = forward_proxy(s.addr.port());
    let via = format!("http://{}", p.addr);
    let url = format!("https://localhost:{}/", s.addr.port());
    for flags in [&["--http1.1"][..], &[]] {
        let mut args = vec!["-k", &url, "--json"];
        args.extend_from_slice(flags);
        let out = get_env(&args, &[("HTTPS_PROXY", &via)]);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let doc = json(&out);
        let r = &doc["requests"][0];
        assert_eq!(r["status"], 200, "{doc}");
        assert_eq!(r["connection"]["peer"], p.addr.to_string(), "{doc}");
        assert!(
            r["connection"]["tls"].is_object(),
            "TLS to the origin: {doc}"
        );
    }
    // 56: the proxy refuses the CONNECT (a port it does not allow).
    let other = start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--tls-self-signed",
    ]);
    let url = format!("https://localhost:{}/", other.addr.port());
    let out = get(&["-k", "-x", &via, &url]);
    assert_eq!(code(&out), 56, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused CONNECT"),
        "{}",
        text(&out.stderr)
    );
    if let Some(c) = curl(&["-k", "-x", &via, &url]) {
        assert_eq!(c.status.code(), Some(56));
    }
}

#[test]
fn verbose_over_http2_shows_what_was_sent() {
    let s = serve(&["--objects", "1"]);
    let url = format!("http://{}/obj/0.png", s.addr);
    let out = get(&["-v", "--http2-prior-knowledge", &url]);
    let err = text(&out.stderr);
    for line in [
        "* [HTTP/2] [1] [:method: GET]",
        "* [HTTP/2] [1] [:scheme: http]",
        &format!("* [HTTP/2] [1] [:authority: {}]", s.addr),
        "* [HTTP/2] [1] [:path: /obj/0.png]",
        "> GET /obj/0.png HTTP/2",
        "< HTTP/2 200",
    ] {
        assert!(err.contains(line), "{line:?} missing:\n{err}");
    }
    assert!(
        !err.contains("HTTP/1.1") && !err.contains("> host:"),
        "{err}"
    );
    // Host: becomes :authority, as curl sends it.
    let out = get(&[
        "-v",
        "--http2-prior-knowledge",
        "-H",
        "Host: vhost.test",
        &url,
    ]);
    let err = text(&out.stderr);
    assert!(
        err.contains("* [HTTP/2] [1] [:authority: vhost.test]"),
        "{err}"
    );
    // --http2 on http:// still works, with a note.
    let out = get(&["--http2", &url]);
    assert_eq!(code(&out), 0);
    assert!(
        text(&out.stderr).contains("--http2-prior-knowledge"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn retries_are_counted_the_same_in_rows_and_summary() {
    // Every connection is closed before an answer: pipelined requests are
    // resent (R7.3), then fail.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let closer = std::thread::spawn(move || {
        let deadline = Instant::now() + LIMIT;
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.read(&mut [0; 4096]);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let a = format!("http://{addr}/a");
    let b = format!("http://{addr}/b");
    for strategy in ["pipelined", "persistent"] {
        let out = get(&["--strategy", strategy, &a, &b, "--json"]);
        let doc = json(&out);
        let rows: u64 = doc["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["retries"].as_u64().unwrap())
            .sum();
        assert_eq!(
            rows,
            doc["summary"]["retries"].as_u64().unwrap(),
            "{strategy}: {doc}"
        );
        if strategy == "pipelined" {
            assert!(rows > 0, "{doc}");
        }
        assert_eq!(code(&out), 52, "{}", text(&out.stderr));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = closer.join();
}

#[test]
fn har_file_parses_back_with_the_spec_invariants() {
    let s = serve(&["--objects", "6"]);
    let url = format!("http://{}/", s.addr);
    let file = temp("run.har", b"");
    let out = get(&["--page", "-c", "2", "--har", file.0.to_str().unwrap(), &url]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let har: Value = serde_json::from_slice(&std::fs::read(&file.0).unwrap()).unwrap();
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "keepwire");
    assert_eq!(log["pages"].as_array().unwrap().len(), 1);
    let on_load = log["pages"][0]["pageTimings"]["onLoad"].as_f64().unwrap();
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 7);
    let mut reused = 0;
    for e in entries {
        assert_eq!(e["pageref"], log["pages"][0]["id"]);
        assert!(e["startedDateTime"].as_str().unwrap().ends_with('Z'), "{e}");
        assert_eq!(e["request"]["method"], "GET");
        assert_eq!(e["response"]["status"], 200);
        assert_eq!(e["serverIPAddress"], "127.0.0.1");
        assert!(e["connection"].is_string());
        let t = &e["timings"];
        let sum: f64 = ["blocked", "dns", "connect", "send", "wait", "receive"]
            .iter()
            .map(|k| t[*k].as_f64().unwrap().max(0.0))
            .sum();
        assert!((sum - e["time"].as_f64().unwrap()).abs() < 0.01, "{e}");
        assert_eq!(t["ssl"], -1, "no TLS: {e}");
        assert!(t["blocked"].as_f64().unwrap() >= 0.0, "{e}");
        if t["connect"] == -1 {
            assert_eq!(t["dns"], -1, "{e}");
            reused += 1;
        }
        assert!(e["response"]["headersSize"].as_i64().unwrap() > 0, "{e}");
        assert!(
            e["request"]["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["name"] == "host")
        );
    }
    assert_eq!(reused, 5, "7 requests on 2 connections");
    let longest = entries
        .iter()
        .map(|e| e["time"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(on_load >= longest, "onLoad {on_load} < {longest}");
}

#[test]
fn json_and_report_take_an_optional_file() {
    let s = serve(&["--respond", "x"]);
    let url = format!("http://{}/", s.addr);
    let j = temp("out.json", b"");
    let r = temp("report.txt", b"");
    let out = get(&[
        &format!("--json={}", j.0.display()),
        "--report",
        r.0.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let doc: Value = serde_json::from_slice(&std::fs::read(&j.0).unwrap()).unwrap();
    assert_eq!(doc["summary"]["requests"], 1);
    let report = std::fs::read_to_string(&r.0).unwrap();
    assert!(report.contains("1 request (1 ok)"), "{report}");
    // --json before the URL takes it as its FILE: a usage error, not a
    // file named after the URL (hence "put --json last or use --json=FILE").
    let out = get(&["--json", &url]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("<URL>"), "{}", text(&out.stderr));
    // The old --body: accepted, with a note.
    let out = get(&["--body", &url]);
    assert_eq!(text(&out.stdout), "x\n");
    assert!(text(&out.stderr).contains("--show-body"));
}

#[test]
fn curl_flags_against_nginx() {
    // Two virtual hosts on one port (the second block opened inside the
    // template's server body).
    let Some(n) = common::nginx(
        "listen LISTEN default_server; server_name a.test;
         location = /echo { return 200 '$request_method $http_x_a $content_type $http_accept\\n'; }
         location = /gone { return 404; }
         location / { return 200 'vhost a\\n'; }
         }
         server { listen LISTEN; server_name b.test; location / { return 200 'vhost b\\n'; }",
    ) else {
        return;
    };
    let base = format!("http://{}", n.addr);
    // Host: picks the virtual host, as with curl.
    for host in ["a.test", "b.test"] {
        let h = format!("Host: {host}");
        let ours = text(&get(&["-H", &h, "--show-body", &format!("{base}/")]).stdout);
        assert_eq!(ours, format!("vhost {}\n", &host[..1]));
        if let Some(c) = curl(&["-H", &h, &format!("{base}/")]) {
            assert_eq!(ours, text(&c.stdout));
        }
    }
    // -X, -H, -d and --json-data as nginx saw them, and as curl sends them.
    let echo = format!("{base}/echo");
    for flags in [
        vec!["-X", "PUT", "-H", "X-A: 1"],
        vec!["-d", "a=1"],
        vec!["-H", "Accept:", "-H", "X-A: 2"],
    ] {
        let mut args = flags.clone();
        args.extend(["--show-body", &echo]);
        let ours = text(&get(&args).stdout);
        let mut args = flags.clone();
        args.push(&echo);
        if let Some(c) = curl(&args) {
            assert_eq!(ours, text(&c.stdout), "{flags:?}");
        }
    }
    let ours = text(&get(&["--json-data", "{}", "--show-body", &echo]).stdout);
    assert_eq!(ours, "POST  application/json application/json\n");
    // -I, -w and reuse across URLs, compared with curl.
    let out = get(&["-I", &format!("{base}/")]);
    assert!(
        text(&out.stdout).starts_with("HTTP/1.1 200 OK\r\nserver: nginx"),
        "{}",
        text(&out.stdout)
    );
    let f = "%{http_code} %{num_connects} %{size_download} %{size_header} %{content_type}\\n";
    let (a, b) = (format!("{base}/x"), format!("{base}/echo"));
    let ours = text(&get(&["-w", f, &a, &b]).stdout);
    if let Some(c) = curl(&["-o", "/dev/null", "-o", "/dev/null", "-w", f, &a, &b]) {
        assert_eq!(ours, text(&c.stdout));
    }
    // -f on nginx's 404.
    let out = get(&["-f", &format!("{base}/gone")]);
    assert_eq!(code(&out), 22, "{}", text(&out.stderr));
}

/// curl's -s/-S and --cacert's 77, beside curl.
#[test]
fn silent_show_error_and_cacert_as_curl() {
    let s = serve(&["--respond", "hello"]);
    let url = format!("http://{}/", s.addr);
    // -s: no table; what was asked for (-w, the body) still printed.
    let out = get(&["-s", &url]);
    assert_eq!((code(&out), text(&out.stdout)), (0, String::new()));
    assert_eq!(text(&out.stderr), "");
    let out = get(&["-s", "-w", "%{http_code}\\n", "--show-body", &url]);
    assert_eq!(text(&out.stdout), "hello\n200\n");
    // -s hides the error, -sS shows it; the exit code stays.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("http://{closed}/");
    let out = get(&["-s", &dead]);
    assert_eq!((code(&out), text(&out.stderr)), (7, String::new()));
    let out = get(&["-sS", &dead]);
    assert_eq!(code(&out), 7);
    assert!(text(&out.stderr).contains(&closed.to_string()));
    // -H's value is named as docs/CLI.md writes it, in get and bench.
    for cmd in ["get", "bench"] {
        let help = text(&common::run(&[cmd, "--help"], LIMIT).stdout);
        assert!(help.contains("-H, --header <NAME: VALUE>"), "{help}");
    }
    let help = text(&common::run(&["bench", "--help"], LIMIT).stdout);
    assert!(help.contains("-t, --threads <N>"), "{help}");
    // 77: the CA file cannot be read.
    let out = get(&["--cacert", "/nonexistent/ca.pem", &url]);
    assert_eq!(code(&out), 77, "{}", text(&out.stderr));
    if let Some(c) = curl(&[
        "--cacert",
        "/nonexistent/ca.pem",
        &format!("https://{}/", s.addr),
    ]) {
        assert_eq!(c.status.code(), Some(77));
    }
}
