//! `keepwire proxy` as a user runs it: the real binary in front of
//! `keepwire serve`, both child processes on free ports (killed by PID when
//! a test ends), talked to with curl and raw sockets. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

mod common;

use common::{Running, WAIT, free_port, start};

/// `keepwire serve --respond TEXT` on a free port.
fn serve_text(text: &str) -> Running {
    serve_text_with(text, &[])
}

/// `keepwire serve --respond TEXT EXTRA...` on a free port.
fn serve_text_with(text: &str, extra: &[&str]) -> Running {
    let r = common::serve(&[&["--respond", text], extra].concat());
    assert!(
        r.first_line.contains("listening on http://"),
        "{}",
        r.first_line
    );
    r
}

/// `keepwire proxy --listen 127.0.0.1:0 --threads 1 ARGS`.
fn proxy(args: &[&str]) -> Running {
    let mut all = vec!["proxy", "--listen", "127.0.0.1:0", "--threads", "1"];
    all.extend_from_slice(args);
    let r = start(&all);
    assert!(
        r.first_line
            .starts_with("keepwire proxy: listening on http://"),
        "{}",
        r.first_line
    );
    r
}

/// Runs `keepwire ARGS` that must exit on its own (bounded by [`WAIT`]);
/// returns its status and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let out = common::run(args, WAIT);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl's path; `None` (skip) if it is missing and `KEEPWIRE_SKIP_PEERS=1`.
fn curl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(p) = std::env::split_paths(&path)
        .map(|d| d.join("curl"))
        .find(|p| p.is_file())
    {
        return Some(p);
    }
    if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!("skipping: curl is not installed (KEEPWIRE_SKIP_PEERS=1)");
        return None;
    }
    panic!("curl is not on PATH: `bash scripts/test` installs it (or set KEEPWIRE_SKIP_PEERS=1)");
}

/// What curl printed (stdout) and whether it succeeded; curl's own
/// `--max-time` bounds it.
fn run_curl(curl: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(curl)
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `requests` on one connection and reads until `responses` bodies
/// (each `Content-Length`-framed) arrived; returns the raw bytes.
fn exchange(addr: SocketAddr, requests: &str, responses: usize) -> String {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(requests.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if complete_responses(&text) >= responses {
            return text;
        }
        match s.read(&mut tmp) {
            Ok(0) => return text,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => panic!("reading from {addr}: {e}; so far: {text:?}"),
        }
    }
}

/// How many complete `Content-Length` responses `text` holds.
fn complete_responses(mut text: &str) -> usize {
    let mut n = 0;
    while let Some(end) = text.find("\r\n\r\n") {
        let head = text[..end].to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let rest = &text[end + 4..];
        if rest.len() < len {
            break;
        }
        n += 1;
        text = &rest[len..];
    }
    n
}

#[test]
fn reverse_proxy_in_front_of_keepwire_serve() {
    let origin = serve_text("pong");
    let upstream = format!("http://{}", origin.addr);
    let p = proxy(&["--upstream", &upstream]);
    assert!(
        p.first_line.contains("(reverse (1 routes))"),
        "{}",
        p.first_line
    );

    // Two requests on one client connection, the second closing it.
    let raw = exchange(
        p.addr,
        "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        2,
    );
    assert_eq!(raw.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{raw}");
    assert_eq!(raw.matches("\r\n\r\npong\n").count(), 2, "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("via: 1.1 keepwire"),
        "{raw}"
    );

    let Some(curl) = curl() else { return };
    let (ok, out, err) = run_curl(&curl, &["-i", &format!("http://{}/x?y=1", p.addr)]);
    assert!(ok, "curl failed: {err}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("\r\n\r\npong\n"), "{out}");

    // HTTP/2 (h2c) towards the same origin, HTTP/1.1 towards the client:
    // Via says the response arrived over HTTP/2, and the pipelined pair
    // still comes back in order.
    let p2 = proxy(&["--upstream", &upstream, "--upstream-http2-prior-knowledge"]);
    let raw = exchange(
        p2.addr,
        "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        2,
    );
    assert_eq!(raw.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{raw}");
    assert_eq!(raw.matches("pong\n").count(), 2, "{raw}");
    assert_eq!(
        raw.to_ascii_lowercase().matches("via: 2 keepwire").count(),
        2,
        "{raw}"
    );
}

#[test]
fn toml_config_routes_by_prefix_and_host() {
    let a = serve_text("from A");
    let b = serve_text("from B");
    let c = serve_text("from C");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "reuse = \"always\"\n\
             pool_size = 2\n\
             \n\
             [[route]]\n\
             prefix = \"/a\"\n\
             upstreams = [\"http://{}\"]\n\
             \n\
             [[route]]\n\
             prefix = \"/\"\n\
             upstreams = [\"http://{}\"]\n\
             \n\
             [[route]]\n\
             host = \"special.test\"\n\
             upgrade = [\"websocket\"]\n\
             upstreams = [\"{}\"]\n",
            a.addr, b.addr, c.addr
        ),
    )
    .unwrap();
    let p = proxy(&["--config", config.to_str().unwrap()]);
    assert!(
        p.first_line.contains("(reverse (3 routes))"),
        "{}",
        p.first_line
    );
    for (path, host, want) in [
        ("/a", "t", "from A"),
        ("/a/deeper?q=1", "t", "from A"),
        ("/b", "t", "from B"),
        ("/", "t", "from B"),
        ("/a", "special.test", "from C"),
        ("/anything", "SPECIAL.test:8080", "from C"),
    ] {
        let raw = exchange(
            p.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            1,
        );
        assert!(
            raw.starts_with("HTTP/1.1 200 OK\r\n"),
            "{path} {host}: {raw}"
        );
        assert!(
            raw.ends_with(&format!("\r\n\r\n{want}\n")),
            "{path} (Host: {host}) should reach {want:?}: {raw}"
        );
    }

    let Some(curl) = curl() else { return };
    let (ok, out, err) = run_curl(&curl, &[&format!("http://{}/a/via-curl", p.addr)]);
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "from A\n");
}

#[test]
fn forward_proxy_for_curl_x_and_connect() {
    let Some(curl) = curl() else { return };
    let origin = serve_text("forwarded");
    let port = origin.addr.port().to_string();
    // Forward mode; CONNECT allowed to the origin's port only, loopback
    // destinations opened (refused by default).
    let p = proxy(&[
        "--forward",
        "--allow-destination",
        "127.0.0.0/8",
        "--connect-port",
        &port,
    ]);
    assert!(p.first_line.contains("(forward)"), "{}", p.first_line);
    let via = format!("http://{}", p.addr);
    let target = format!("http://{}/page", origin.addr);

    let (ok, out, err) = run_curl(&curl, &["-x", &via, &target]);
    assert!(ok, "curl -x failed: {err}");
    assert_eq!(out, "forwarded\n");

    let (ok, out, err) = run_curl(
        &curl,
        &["-p", "-x", &via, "-w", "|%{http_connect}", &target],
    );
    assert!(ok, "curl -p failed: {err}");
    assert_eq!(out, "forwarded\n|200");

    // CONNECT to another port: 403.
    let other = serve_text("unreachable");
    let (ok, out, _) = run_curl(
        &curl,
        &[
            "-p",
            "-x",
            &via,
            "-w",
            "%{http_connect}",
            &format!("http://{}/", other.addr),
        ],
    );
    assert!(!ok, "CONNECT to a port not allowed succeeded: {out}");
    assert!(out.contains("403"), "{out}");
}

/// `curl -sS [-p] -x PROXY URL`: the status (of the CONNECT with `-p`) and
/// the body.
fn through(curl: &Path, proxy: &str, url: &str, connect: bool) -> (String, String) {
    let code = if connect {
        "\n%{http_connect}"
    } else {
        "\n%{http_code}"
    };
    let mut args = vec!["-x", proxy, "-w", code, url];
    if connect {
        args.insert(0, "-p");
    }
    let (_, out, _) = run_curl(curl, &args);
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.to_string(), body.to_string())
}

#[test]
fn forward_proxy_refuses_loopback_and_its_own_admin_until_allowed() {
    let Some(curl) = curl() else { return };
    let origin = serve_text("internal");
    let op = origin.addr.port();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = proxy(&[
        "--forward",
        "--admin",
        &admin,
        "--connect-port",
        &op.to_string(),
    ]);
    let via = format!("http://{}", p.addr);
    let at = |host: &str| format!("http://{host}:{op}/");
    let metrics = format!("http://{admin}/metrics");
    let loopback = "refused: loopback (allow with --allow-destination)";
    for (url, connect, why) in [
        (at("127.0.0.1"), false, loopback),
        (at("localhost"), false, loopback),
        (at("127.0.0.1"), true, ""),
        (metrics, false, "refused: the proxy's own address"),
    ] {
        let (status, body) = through(&curl, &via, &url, connect);
        assert_eq!(status, "403", "{url} (CONNECT: {connect}): {body}");
        assert!(body.contains(why), "{url}: {body}");
    }

    // Opened in the file; the admin address stays refused, a denied
    // address too.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("forward.toml");
    std::fs::write(
        &config,
        "forward = true\n\
         allow_destination = [\"127.0.0.0/8\", \"::1/128\"]\n\
         deny_destination = [\"127.0.0.2/32\"]\n",
    )
    .unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = proxy(&[
        "--config",
        config.to_str().unwrap(),
        "--admin",
        &admin,
        "--connect-port",
        &op.to_string(),
    ]);
    assert!(p.first_line.contains("(forward)"), "{}", p.first_line);
    let via = format!("http://{}", p.addr);
    for (url, connect) in [
        (at("127.0.0.1"), false),
        (at("localhost"), false),
        (at("127.0.0.1"), true),
    ] {
        let (status, body) = through(&curl, &via, &url, connect);
        assert_eq!(status, "200", "{url}: {body}");
        assert_eq!(body, "internal\n", "{url} (CONNECT: {connect})");
    }
    let (status, body) = through(&curl, &via, &format!("http://{admin}/metrics"), false);
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("the proxy's own address"), "{body}");
    let (status, body) = through(&curl, &via, &at("127.0.0.2"), false);
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("denied by deny_destination"), "{body}");
}

#[test]
fn the_file_sets_the_forward_client_list_and_the_tunnel_idle_timeout() {
    let origin = serve_text("through the tunnel");
    let op = origin.addr.port().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, extra: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "forward = true\nallow_destination = [\"127.0.0.0/8\"]\n\
                 connect_ports = [{op}]\n{extra}"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let closed = write("closed.toml", "allow_forward = [\"192.0.2.0/24\"]\n");
    let p = proxy(&["--config", &closed]);
    let raw = exchange(
        p.addr,
        &format!("GET http://{}/ HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr),
        1,
    );
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(raw.contains("allow with --allow-forward"), "{raw}");

    // A tunnel quiet for 1 s is closed by the proxy (the origin keeps an
    // idle connection 75 s).
    let quick = write("quick.toml", "tunnel_idle_timeout = \"1s\"\n");
    let p = proxy(&["--config", &quick]);
    let mut s = TcpStream::connect_timeout(&p.addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let a = origin.addr;
    s.write_all(
        format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\nGET / HTTP/1.1\r\nHost: o\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut all = Vec::new();
    // Every read is bounded by WAIT: a tunnel left open fails the test.
    let mut tmp = [0u8; 4096];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&tmp[..n]),
            Err(e) => panic!(
                "the tunnel was not closed: {e}; got {:?}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\nthrough the tunnel\n"), "{text}");
}

#[test]
fn bad_flags_and_files_exit_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.toml");
    let unknown_key = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown_key,
        "[[route]]\nprefix = \"/\"\nupstream = [\"http://127.0.0.1:1\"]\n",
    )
    .unwrap();
    let bad_reuse = dir.path().join("reuse.toml");
    std::fs::write(
        &bad_reuse,
        "reuse = \"sometimes\"\n[[route]]\nupstreams = [\"http://127.0.0.1:1\"]\n",
    )
    .unwrap();
    // Listens and reuses, but routes nowhere and does not ask for forward
    // mode: once that silently meant an open forward proxy.
    let no_routes = dir.path().join("no-routes.toml");
    std::fs::write(&no_routes, "listen = [\"127.0.0.1:0\"]\nreuse = \"safe\"\n").unwrap();
    let bad_timeout = dir.path().join("timeout.toml");
    std::fs::write(
        &bad_timeout,
        "forward = true\ntunnel_idle_timeout = \"soon\"\n",
    )
    .unwrap();
    let no_routes_s = no_routes.display().to_string();
    let bad_timeout_s = bad_timeout.display().to_string();
    let missing_s = missing.display().to_string();
    let dir_s = dir.path().display().to_string();
    let unknown_s = unknown_key.display().to_string();
    let bad_reuse_s = bad_reuse.display().to_string();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        // (extra args, every fragment the message must contain)
        (
            vec!["--reuse", "sometimes"],
            vec!["sometimes", "always, safe, never"],
        ),
        (
            vec!["--config", &missing_s],
            vec!["--config", &missing_s, "No such file"],
        ),
        (vec!["--config", &dir_s], vec!["--config", &dir_s]),
        (vec!["--config", &unknown_s], vec!["--config", "upstream"]),
        (vec!["--config", &bad_reuse_s], vec!["sometimes"]),
        (
            vec!["--upstream", "ftp://origin.test:8443"],
            vec!["unknown scheme", "ftp"],
        ),
        (
            vec!["--upstream", "http://origin.test:8080/api"],
            vec!["a path", "/api", "not supported"],
        ),
        (
            vec![
                "--upstream",
                "https://x",
                "--upstream-cacert",
                "/nonexistent.pem",
            ],
            vec!["--upstream-cacert", "/nonexistent.pem"],
        ),
        (vec![], vec!["nothing to proxy", "--upstream", "--forward"]),
        (
            vec!["--config", &no_routes_s],
            vec!["nothing to proxy", "--forward"],
        ),
        (
            vec!["--config", &bad_timeout_s],
            vec!["tunnel_idle_timeout", "soon"],
        ),
        (
            vec!["--forward", "--allow-destination", "localhost"],
            vec!["--allow-destination", "localhost"],
        ),
        // Forward-mode settings on a reverse proxy would do nothing.
        (
            vec![
                "--upstream",
                "http://127.0.0.1:1",
                "--allow-destination",
                "10.0.0.0/8",
            ],
            vec!["--allow-destination", "forward mode only", "--forward"],
        ),
        (
            vec![
                "--forward",
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
            ],
            vec!["--tls-cert", "/nonexistent.pem"],
        ),
        (vec!["--upstream", "http://"], vec!["upstream"]),
        (vec!["--allow", "not-a-network"], vec!["not-a-network"]),
    ];
    for (extra, fragments) in cases {
        let mut args = vec!["proxy", "--listen", "127.0.0.1:0", "--threads", "1"];
        args.extend_from_slice(&extra);
        let (status, stderr) = run_to_exit(&args);
        assert!(!status.success(), "{extra:?} was accepted: {stderr}");
        assert!(
            !stderr.contains("listening on"),
            "{extra:?} started listening: {stderr}"
        );
        for f in fragments {
            assert!(
                stderr.contains(f),
                "{extra:?}: the message should mention {f:?}: {stderr}"
            );
        }
    }
}

/// Upstream trust flags with no configured upstream do nothing (forward-
/// mode origins are always verified): a note says so at start. (The port
/// is taken so that the proxy exits after its notes.)
#[test]
fn upstream_trust_without_an_upstream_says_it_does_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = [
        "proxy",
        "--listen",
        &addr,
        "--forward",
        "--upstream-insecure",
    ];
    let (_, stderr) = run_to_exit(&args);
    assert!(
        stderr.contains("note: --upstream-insecure and --upstream-cacert apply to configured"),
        "{stderr}"
    );
    // With an upstream they apply: no note.
    let args = [
        "proxy",
        "--listen",
        &addr,
        "--upstream",
        "https://x",
        "--upstream-insecure",
    ];
    let (_, stderr) = run_to_exit(&args);
    assert!(!stderr.contains("note:"), "{stderr}");
}

#[test]
fn trace_is_405_unless_trace_is_given_and_the_echo_keeps_credentials_out() {
    let Some(curl) = curl() else { return };
    // The origin echoes TRACE, so a relayed one would show.
    let origin = serve_text_with("x", &["--trace"]);
    let upstream = format!("http://{}", origin.addr);
    let trace = |p: &Running, max_forwards: Option<&str>| {
        let mf = max_forwards.map(|n| format!("Max-Forwards: {n}"));
        let mut args = vec!["-i", "-X", "TRACE", "-u", "user:pass-s3cret"];
        args.extend(["-H", "Cookie: sid=cookie-s3cret"]);
        args.extend(["-H", "Proxy-Authorization: Basic cHJveHktczNjcmV0"]);
        if let Some(mf) = &mf {
            args.extend(["-H", mf.as_str()]);
        }
        let url = format!("http://{}/t", p.addr);
        args.push(&url);
        let (ok, out, err) = run_curl(&curl, &args);
        assert!(ok, "curl failed: {err}");
        out
    };

    let p = proxy(&["--upstream", &upstream]);
    for mf in [Some("0"), Some("3"), None] {
        let r = trace(&p, mf);
        assert!(r.starts_with("HTTP/1.1 405"), "{mf:?}: {r}");
        assert!(!r.contains("message/http") && !r.contains("s3cret"), "{r}");
        let allow = r.lines().find_map(|l| l.strip_prefix("allow: "));
        assert!(allow.is_some_and(|a| !a.contains("TRACE")), "{r}");
    }
    drop(p);

    let p = proxy(&["--upstream", &upstream, "--trace"]);
    // Max-Forwards: 0: the proxy is the final recipient and echoes.
    let here = trace(&p, Some("0"));
    // More hops left: relayed, and the origin echoes (Max-Forwards
    // counted down, our Via added).
    let there = trace(&p, Some("1"));
    for r in [&here, &there] {
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("content-type: message/http"), "{r}");
        let body = r.split_once("\r\n\r\n").unwrap().1.to_ascii_lowercase();
        assert!(body.starts_with("trace /t http/1.1\r\n"), "{body}");
        assert!(body.contains("max-forwards: 0\r\n"), "{body}");
        for secret in [
            "s3cret",
            "dxnlcjpwyxnzlxmzy3jlda",
            "chjvehktcznjcmv0",
            "cookie",
            "authorization",
        ] {
            assert!(!body.contains(secret), "{secret} echoed: {body}");
        }
    }
    // Only the relayed request carries our Via (in what the origin echoed).
    let echoed = |r: &str| r.split_once("\r\n\r\n").unwrap().1.to_ascii_lowercase();
    assert!(!echoed(&here).contains("via: 1.1 keepwire"), "{here}");
    assert!(echoed(&there).contains("via: 1.1 keepwire"), "{there}");
}

/// A dead upstream: the client reads nginx's plain "502 Bad Gateway", the
/// upstream's address and error go to the proxy's stderr (warn) only.
#[test]
fn a_dead_upstream_is_a_plain_502_and_the_cause_is_logged() {
    let Some(curl) = curl() else { return };
    let dead = format!("http://127.0.0.1:{}", free_port());
    let p = proxy(&["--upstream", &dead, "--access-log"]);
    let url = format!("http://{}/x", p.addr);
    let out = Command::new(&curl)
        .args(["-s", "--max-time", "10", "-w", "%{http_code}", &url])
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(body, "502 Bad Gateway\n502", "no detail for the client");
    let line = p.line_with("upstream:");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&dead[7..]), "the address is logged: {line}");
}
