//! `keepwire serve` as a user runs it: the real binary on a free port,
//! talked to over raw sockets and with curl.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// Kills the server by PID when the test ends, however it ends.
struct ServerGuard {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keepwire serve --listen 127.0.0.1:0 ARGS` and reads the bound
/// address from its first stderr line.
fn serve(args: &[&str]) -> ServerGuard {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keepwire binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let first = lines
        .next()
        .expect("serve prints its address")
        .expect("stderr is utf-8");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .parse()
        .expect("a socket address");
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    ServerGuard { child, addr }
}

/// Sends raw bytes, reads until the server closes (bounded by 5 s).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn respond_answers_every_request_with_the_text() {
    let s = serve(&["--respond", "pong"]);
    let r = get(s.addr, "/anything?x=1", "");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("content-length: 5\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\npong\n"), "{r}");
}

#[test]
fn demo_site_page_references_objects_that_exist() {
    let s = serve(&["--objects", "5", "--object-size", "100"]);
    let page = get(s.addr, "/", "");
    assert!(page.contains("content-type: text/html"), "{page}");
    for (i, ext) in [(0, "png"), (1, "css"), (2, "js"), (3, "png"), (4, "css")] {
        assert!(
            page.contains(&format!("/obj/{i}.{ext}")),
            "page lacks object {i}"
        );
        let obj = get(s.addr, &format!("/obj/{i}.{ext}"), "");
        assert!(obj.starts_with("HTTP/1.1 200"), "{obj}");
        assert!(obj.contains("content-length: 100\r\n"), "{obj}");
    }
    assert!(get(s.addr, "/obj/5.js", "").starts_with("HTTP/1.1 404"));
}

#[test]
fn demo_long_poll_answers_empty_after_its_timeout() {
    let s = serve(&["--events-per-s", "0"]);
    let started = Instant::now();
    let r = get(s.addr, "/long-poll?timeout=300ms", "");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(r.ends_with("{\"last_id\":0,\"events\":[]}\n"), "{r}");
}

#[test]
fn static_files_index_types_conditional_and_no_escape() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(dir.path().join("style.css"), "body{}").unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let big = vec![b'z'; 600 * 1024];
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    let s = serve(&["--root", dir.path().to_str().unwrap()]);

    let r = get(s.addr, "/", "");
    assert!(r.contains("content-type: text/html"), "{r}");
    assert!(r.ends_with("<h1>hi</h1>"), "{r}");

    let r = get(s.addr, "/style.css", "");
    assert!(r.contains("content-type: text/css"), "{r}");
    let last_modified = r
        .lines()
        .find_map(|l| l.strip_prefix("last-modified: "))
        .expect("last-modified")
        .to_string();
    let r = get(
        s.addr,
        "/style.css",
        &format!("If-Modified-Since: {last_modified}\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 304"), "{r}");
    assert!(!r.contains("body{}"), "{r}");

    let r = exchange(
        s.addr,
        b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(r.contains("content-length: 614400\r\n"), "{r}");
    assert!(
        r.ends_with("\r\n\r\n"),
        "HEAD carries no body: {}",
        &r[..r.len().min(300)]
    );

    let r = get(s.addr, "/big.bin", "");
    assert!(r.contains("content-length: 614400\r\n"));
    assert_eq!(r.split_once("\r\n\r\n").unwrap().1.len(), 614_400);

    assert!(
        get(s.addr, "/empty/", "").starts_with("HTTP/1.1 403"),
        "no listings"
    );
    assert!(get(s.addr, "/../../etc/passwd", "").starts_with("HTTP/1.1 400"));
    assert!(get(s.addr, "/%2e%2e/%2e%2e/etc/passwd", "").starts_with("HTTP/1.1 400"));
    assert!(get(s.addr, "/nope.txt", "").starts_with("HTTP/1.1 404"));
    let r = exchange(
        s.addr,
        b"POST /style.css HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 405") && r.contains("allow: GET, HEAD"),
        "{r}"
    );
}

#[test]
fn bad_arguments_fail_with_the_cause() {
    let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            "/definitely/not/here",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--root /definitely/not/here"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["serve", "--idle-timeout", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"));

    for rate in ["NaN", "20000", "often"] {
        let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
            .args(["serve", "--events-per-s", rate])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{rate}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("from 0 to 10000 events per second"), "{err}");
    }

    // A port already in use names the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["serve", "--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}

/// Zero time limits and connection limits are refused (exit 2) instead
/// of a server that advertises `Keep-Alive: timeout=1` and then drops
/// every idle connection at once, or answers every request 503.
#[test]
fn zero_limits_are_usage_errors() {
    let zero = |cmd: &str, flag: &str, says: &str| {
        let mut args = vec![cmd, "--listen", "127.0.0.1:0", flag, "0"];
        if cmd == "proxy" {
            args.extend(["--upstream", "http://127.0.0.1:1"]);
        }
        let out = common::run(&args, Duration::from_secs(10));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd} {flag} 0: {err}");
        assert!(err.contains(says), "{cmd} {flag} 0: {err}");
    };
    for flag in [
        "--idle-timeout",
        "--header-timeout",
        "--body-timeout",
        "--write-timeout",
    ] {
        zero("serve", flag, "must be more than 0");
    }
    for flag in ["--max-connections", "--max-connections-per-ip"] {
        zero("serve", flag, "at least 1");
    }
    for flag in [
        "--idle-timeout",
        "--upstream-idle-timeout",
        "--upstream-timeout",
        "--tunnel-idle-timeout",
    ] {
        zero("proxy", flag, "must be more than 0");
    }
}

/// `--listen` takes what nginx's `listen` takes: a bare port (every IPv4
/// interface), `:PORT`, `localhost:PORT`; the proxy's the same. The bound
/// address is read from the "listening on" line.
#[test]
fn listen_accepts_port_and_localhost_forms() {
    for (form, ip) in [
        ("0", "0.0.0.0"),
        (":0", "0.0.0.0"),
        ("localhost:0", "127.0.0.1"),
    ] {
        let s = common::start(&[
            "serve",
            "--listen",
            form,
            "--threads",
            "1",
            "--respond",
            "pong",
        ]);
        assert_eq!(s.addr.ip().to_string(), ip, "{form}: {}", s.first_line);
        let local = SocketAddr::from(([127, 0, 0, 1], s.addr.port()));
        assert!(get(local, "/", "").ends_with("\r\n\r\npong\n"), "{form}");
    }
    let origin = common::serve(&["--respond", "via proxy"]);
    let upstream = format!("http://{}", origin.addr);
    let p = common::start(&["proxy", "--listen", "localhost:0", "--upstream", &upstream]);
    assert_eq!(p.addr.ip().to_string(), "127.0.0.1", "{}", p.first_line);
    assert!(get(p.addr, "/", "").ends_with("\r\n\r\nvia proxy\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["serve", "--listen", "example.com:80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PORT, :PORT, HOST:PORT"), "{err}");
}

#[test]
fn sigterm_finishes_the_in_flight_request_then_exits_cleanly() {
    let mut s = serve(&["--events-per-s", "0"]);
    let addr = s.addr;
    let client = std::thread::spawn(move || get(addr, "/long-poll?timeout=0.5", ""));
    std::thread::sleep(Duration::from_millis(150));
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let r = client.join().unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"events\":[]"),
        "in-flight request completed: {r}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An open SSE stream does not hold a graceful shutdown for its whole
/// timeout (30 s): the event source ends it, cleanly (the chunked
/// terminator), and the server exits.
#[test]
fn sigterm_ends_open_event_streams_promptly() {
    let mut s = serve(&["--events-per-s", "20"]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("id: ") {
        let n = c.read(&mut buf).expect("events arrive");
        assert!(n > 0, "{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let signalled = Instant::now();
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("the stream ends within 10 s");
    seen.push_str(&String::from_utf8_lossy(&rest));
    assert!(seen.ends_with("\r\n0\r\n\r\n"), "{seen}");
    while s.child.try_wait().unwrap().is_none() {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn admin_listener_exposes_prometheus_counters() {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let s = serve(&["--respond", "x", "--admin", &admin_addr.to_string()]);
    for _ in 0..3 {
        get(s.addr, "/", "");
    }
    let m = get(admin_addr, "/metrics", "");
    assert!(m.contains("keepwire_requests_total 3\n"), "{m}");
    assert!(
        m.contains("keepwire_connection_closes_total{reason=\"not_persistent\"} 3\n"),
        "{m}"
    );
}

#[test]
fn curl_reuses_one_connection_for_two_urls() {
    let s = serve(&["--respond", "hi"]);
    let base = format!("http://{}", s.addr);
    let out = Command::new("curl")
        .args(["-sv", &format!("{base}/a"), &format!("{base}/b")])
        .output()
        .expect("curl is installed (bash scripts/test installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Connected to").count(), 1, "{err}");
    assert!(err.contains("Re-using existing connection"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\nhi\n");
}

#[test]
fn listens_on_ipv4_and_ipv6_at_once() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["serve", "--threads", "1", "--respond", "both"])
        .args(["--listen", "127.0.0.1:0", "--listen", "[::1]:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        addrs.push(addr.parse().unwrap());
    }
    let guard = ServerGuard {
        child,
        addr: addrs[0],
    };
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "{addrs:?}");
    for addr in addrs {
        let r = get(addr, "/", "");
        assert!(r.ends_with("both\n"), "{addr}: {r}");
    }
    drop(guard);
}

/// A root beside a secret file, with symlinks out of it and dot files in
/// it; the guard keeps the directory alive.
fn escape_root() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::symlink;
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let secret = outer.path().join("secret.html");
    std::fs::write(&secret, "TOP-SECRET").unwrap();
    std::fs::write(root.join("page.html"), "public page").unwrap();
    std::fs::create_dir(root.join("trap")).unwrap();
    symlink(&secret, root.join("trap/index.html")).unwrap();
    symlink(&secret, root.join("link.html")).unwrap();
    std::fs::create_dir(root.join("site")).unwrap();
    std::fs::write(root.join("site/index.html"), "site index").unwrap();
    std::fs::create_dir(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/config"), "[remote] url=git@secret").unwrap();
    std::fs::write(root.join(".env"), "API_KEY=dotsecret").unwrap();
    std::fs::create_dir(root.join(".well-known")).unwrap();
    std::fs::write(root.join(".well-known/security.txt"), "Contact: x").unwrap();
    let root = root.to_str().unwrap().to_string();
    (outer, root)
}

#[test]
fn root_never_serves_a_symlink_out_even_as_index_html() {
    let (_dir, root) = escape_root();
    let s = serve(&["--root", &root]);
    for path in ["/trap/", "/trap", "/trap/index.html", "/link.html"] {
        let r = get(s.addr, path, "");
        assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
        assert!(!r.contains("TOP-SECRET"), "{path}: {r}");
    }
    // What is inside is still served.
    assert!(get(s.addr, "/page.html", "").ends_with("\r\n\r\npublic page"));
    assert!(get(s.addr, "/site/", "").ends_with("\r\n\r\nsite index"));
}

#[test]
fn dot_files_are_404_unless_dotfiles_is_given() {
    let (_dir, root) = escape_root();
    let s = serve(&["--root", &root]);
    for path in [
        "/.env",
        "/.git/config",
        "/%2egit/config",
        "/.git/",
        "/site/../.env",
    ] {
        let r = get(s.addr, path, "");
        assert!(
            r.starts_with("HTTP/1.1 404") || r.starts_with("HTTP/1.1 400"),
            "{path}: {r}"
        );
        assert!(!r.contains("secret"), "{path}: {r}");
    }
    assert!(get(s.addr, "/.env", "").starts_with("HTTP/1.1 404"));
    assert!(get(s.addr, "/page.html", "").starts_with("HTTP/1.1 200"));
    // RFC 8615's directory is public by definition.
    assert!(get(s.addr, "/.well-known/security.txt", "").ends_with("\r\n\r\nContact: x"));
    drop(s);

    let s = serve(&["--root", &root, "--dotfiles"]);
    assert!(get(s.addr, "/.env", "").ends_with("\r\n\r\nAPI_KEY=dotsecret"));
    assert!(get(s.addr, "/.git/config", "").starts_with("HTTP/1.1 200"));
    // --dotfiles opens dot files, not the way out.
    assert!(get(s.addr, "/trap/", "").starts_with("HTTP/1.1 404"));
}

/// `curl -sS -X TRACE` with a cookie and credentials: status line, headers
/// and body as curl printed them (`-i`).
fn curl_trace(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "-X", "TRACE", url])
        .args(["-H", "Cookie: sid=cookie-s3cret", "-u", "user:pass-s3cret"])
        .args(["-H", "Proxy-Authorization: Basic cHJveHktczNjcmV0"])
        .args(["-H", "X-Visible: shown"])
        .output()
        .expect("curl is installed (bash scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn trace_is_405_by_default_and_its_echo_never_carries_credentials() {
    for args in [&["--respond", "x"][..], &[][..], &["--root", "/"][..]] {
        let s = serve(args);
        let r = curl_trace(&format!("http://{}/t", s.addr));
        assert!(r.starts_with("HTTP/1.1 405"), "{args:?}: {r}");
        let allow = r
            .lines()
            .find_map(|l| l.strip_prefix("allow: "))
            .unwrap_or_else(|| panic!("{args:?}: no Allow in {r}"));
        assert!(allow.contains("GET") && !allow.contains("TRACE"), "{r}");
        assert!(!r.contains("s3cret") && !r.contains("X-Visible"), "{r}");
    }

    let s = serve(&["--respond", "x", "--trace"]);
    let r = curl_trace(&format!("http://{}/t?q=1", s.addr));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("content-type: message/http"), "{r}");
    let body = r.split_once("\r\n\r\n").unwrap().1;
    assert!(body.starts_with("TRACE /t?q=1 HTTP/1.1\r\n"), "{body}");
    assert!(
        body.to_ascii_lowercase().contains("x-visible: shown"),
        "{body}"
    );
    for secret in ["s3cret", "dXNlcjpwYXNzLXMzY3JldA", "cHJveHktczNjcmV0"] {
        assert!(!r.contains(secret), "{secret} echoed: {r}");
    }
    let lower = body.to_ascii_lowercase();
    assert!(
        !lower.contains("cookie") && !lower.contains("authorization"),
        "{body}"
    );
}

/// `--io uring` serves the same answers as epoll (where the kernel allows
/// io_uring; elsewhere the error names it); an unknown backend is refused.
#[test]
fn io_uring_backend_serves_the_same_answers() {
    if let Err(e) = keepwire::transport::IoBackend::Uring.check() {
        let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
            .args(["serve", "--listen", "127.0.0.1:0", "--io", "uring"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "started without io_uring ({e})");
        assert!(String::from_utf8_lossy(&out.stderr).contains("io_uring"));
        return;
    }
    let s = serve(&["--respond", "pong", "--io", "uring"]);
    for _ in 0..3 {
        let r = get(s.addr, "/x", "");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\npong\n"), "{r}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["serve", "--io", "kqueue"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("epoll or uring"));
}
