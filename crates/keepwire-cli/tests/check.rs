//! `keepwire check server` as a user runs it: against `keepwire serve`
//! (everything passes) and against small deliberately broken servers (the
//! check for the rule each one violates fails, and the exit status says so).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

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

/// Starts `keepwire serve --respond ok --listen 127.0.0.1:0` and reads the
/// bound address from its first stderr line.
fn serve() -> ServerGuard {
    serve_with(&[])
}

fn serve_with(args: &[&str]) -> ServerGuard {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(["--respond", "ok"])
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
    std::thread::spawn(move || for _ in lines.by_ref() {});
    ServerGuard { child, addr }
}

/// Runs `keepwire check server http://ADDR/ ARGS`.
fn check(addr: SocketAddr, args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["check", "server", &format!("http://{addr}/")])
        .args(args)
        .output()
        .expect("keepwire check runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Shown with --nocapture (and on failure).
    eprintln!(
        "$ keepwire check server http://{addr}/ {}\n{stdout}",
        args.join(" ")
    );
    (out, stdout)
}

/// The result column of the line for check `name`.
fn verdict<'a>(stdout: &'a str, name: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no line for {name:?} in:\n{stdout}"));
    line.split_whitespace().nth(1).unwrap()
}

fn summary(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().expect("a summary line");
    let words: Vec<&str> = last.split(' ').collect();
    assert_eq!(words.len(), 4, "summary {last:?}");
    assert_eq!((words[1], words[3]), ("passed,", "failed"), "{last:?}");
    (words[0].parse().unwrap(), words[2].parse().unwrap())
}

#[test]
fn keepwire_serve_passes_every_check() {
    let s = serve();
    let (out, stdout) = check(s.addr, &[]);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    for line in &lines[..lines.len() - 1] {
        if line.contains("warnings,") {
            continue;
        }
        let v = line.split_whitespace().nth(1).unwrap();
        assert!(v == "PASS" || v == "SKIP", "{line}\n{stdout}");
    }
    let (passed, failed) = summary(&stdout);
    assert_eq!(failed, 0, "{stdout}");
    assert!(passed >= 15, "{stdout}");
    for rule in ["R5.1", "R5.2", "R5.3", "R7.2", "R8.4", "R10.1", "R10.2"] {
        assert!(
            lines.iter().any(|l| l.starts_with(rule)),
            "{rule} missing:\n{stdout}"
        );
    }
}

#[test]
fn only_runs_the_rule_prefix() {
    let s = serve();
    let (out, stdout) = check(s.addr, &["--only", "R10"]);
    assert!(out.status.success(), "{stdout}");
    let checks: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.contains("passed,") && !l.contains("skipped"))
        .collect();
    assert!(checks.len() >= 9, "{stdout}");
    for line in &checks {
        assert!(line.starts_with("R10."), "{line}");
    }
    // The slowloris check waits long: skipped without --slow.
    let skipped = checks.iter().filter(|l| l.contains(" SKIP ")).count();
    assert_eq!(skipped, 1, "{stdout}");
    let (passed, failed) = summary(&stdout);
    assert_eq!((passed, failed), (checks.len() - 1, 0), "{stdout}");
    // R1 does not match R10.
    let (out, _) = check(s.addr, &["--only", "R1"]);
    assert!(!out.status.success());
}

#[test]
fn json_output_parses() {
    let s = serve();
    let (out, stdout) = check(s.addr, &["--json", "--only", "R5"]);
    assert!(out.status.success(), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    let checks = doc["checks"].as_array().expect("checks array");
    assert!(!checks.is_empty());
    for c in checks {
        assert!(c["rule"].as_str().unwrap().starts_with("R5."), "{c}");
        let r = c["result"].as_str().unwrap();
        assert!(r == "PASS" || r == "SKIP", "{c}");
        assert!(c["evidence"].is_string());
    }
    assert_eq!(doc["summary"]["failed"], 0);
    assert_eq!(
        doc["summary"]["passed"].as_u64().unwrap() + doc["summary"]["skipped"].as_u64().unwrap(),
        checks.len() as u64
    );
}

#[test]
fn slow_checks_are_skipped_by_default_and_pass_with_slow() {
    let s = serve_with(&["--idle-timeout", "1s", "--header-timeout", "1s"]);
    let (out, stdout) = check(s.addr, &["--only", "R5.2"]);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        verdict(&stdout, "idle timeout observed"),
        "SKIP",
        "{stdout}"
    );
    assert!(stdout.contains("0 warnings, 1 skipped\n"), "{stdout}");
    let (out, stdout) = check(s.addr, &["--only", "R5.2", "--slow"]);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        verdict(&stdout, "idle timeout observed"),
        "PASS",
        "{stdout}"
    );
    assert!(stdout.contains("advertised timeout 1 s"), "{stdout}");
    let (out, stdout) = check(s.addr, &["--only", "R10.2", "--slow"]);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        verdict(&stdout, "slowloris head bounded in time"),
        "PASS",
        "{stdout}"
    );
    assert!(stdout.contains("408"), "{stdout}");
}

// ---- deliberately broken servers ----

/// Serves each connection on its own thread with `handle`.
fn broken(handle: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || handle(conn));
        }
    });
    addr
}

/// Reads one request head (up to the empty line) from `buf` + the socket;
/// `None` on EOF or error.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            buf.drain(..i + 4);
            return Some(head);
        }
        let mut tmp = [0u8; 8192];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Violates R5.3: closes after every response without saying so.
fn closes_silently(mut s: TcpStream) {
    let mut buf = Vec::new();
    if read_head(&mut s, &mut buf).is_some() {
        let _ = s.write_all(OK);
    }
}

#[test]
fn silent_close_fails_persistence() {
    let addr = broken(closes_silently);
    let (out, stdout) = check(addr, &["--only", "R5.3", "--timeout", "2"]);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(verdict(&stdout, "HTTP/1.1 persistence"), "FAIL", "{stdout}");
    assert_eq!(
        verdict(&stdout, "Connection: close honoured"),
        "PASS",
        "{stdout}"
    );
    // The pipelined request carrying `close` is never answered either.
    assert_eq!(
        verdict(&stdout, "close mid-pipeline ends it"),
        "FAIL",
        "{stdout}"
    );
    assert_eq!(summary(&stdout), (1, 2), "{stdout}");
}

/// Violates R10.1: frames a request with both TE and CL by the chunked
/// coding and keeps the connection, so a smuggled request gets answered.
fn lenient_framing(mut s: TcpStream) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf) {
        if field(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                if let Some(i) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    buf.drain(..i + 5);
                    break;
                }
                let mut tmp = [0u8; 8192];
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        } else if let Some(n) = field(&head, "content-length").and_then(|v| v.parse().ok()) {
            while buf.len() < n {
                let mut tmp = [0u8; 8192];
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&tmp[..k]),
                }
            }
            buf.drain(..n);
        }
        if s.write_all(OK).is_err() {
            return;
        }
    }
}

#[test]
fn te_and_cl_accepted_fails_smuggling_check() {
    let addr = broken(lenient_framing);
    let (out, stdout) = check(addr, &["--only", "R10.1", "--timeout", "2"]);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(verdict(&stdout, "TE + CL rejected"), "FAIL", "{stdout}");
    assert!(stdout.contains("/smuggled"), "{stdout}");
    for line in stdout.lines().filter(|l| l.contains("  ")) {
        assert!(line.starts_with("R10.1"), "{line}");
    }
}

#[test]
fn ignoring_connection_close_fails() {
    let addr = broken(lenient_framing);
    let (out, stdout) = check(addr, &["--only", "R5.3", "--timeout", "1"]);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(verdict(&stdout, "HTTP/1.1 persistence"), "PASS", "{stdout}");
    assert_eq!(
        verdict(&stdout, "Connection: close honoured"),
        "FAIL",
        "{stdout}"
    );
    assert_eq!(
        verdict(&stdout, "close mid-pipeline ends it"),
        "FAIL",
        "{stdout}"
    );
    assert_eq!(summary(&stdout), (1, 2), "{stdout}");
}

/// Violates R7.2: answers one request per read, so of a pipelined burst only
/// the first is answered.
fn first_of_pipeline_only(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let mut tmp = [0u8; 65536];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if s.write_all(OK).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn answering_only_the_first_pipelined_request_fails() {
    let addr = broken(first_of_pipeline_only);
    let (out, stdout) = check(addr, &["--only", "R7", "--timeout", "1"]);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(
        verdict(&stdout, "pipelined responses in order"),
        "FAIL",
        "{stdout}"
    );
    assert!(
        stdout.contains("1 of 5 pipelined requests answered"),
        "{stdout}"
    );
    assert_eq!(summary(&stdout), (0, 1), "{stdout}");
}

/// Violates R8.4/R8.5: after a `Connection: close` response it closes with
/// SO_LINGER 0 (RST) instead of a lingering close.
fn resets_after_close(mut s: TcpStream) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf) {
        if field(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            return;
        }
        if s.write_all(OK).is_err() {
            return;
        }
    }
}

#[test]
fn reset_after_close_fails_r8_4() {
    let addr = broken(resets_after_close);
    let (out, stdout) = check(addr, &["--only", "R8.4", "--timeout", "2"]);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(
        verdict(&stdout, "requests after close not reset away"),
        "FAIL",
        "{stdout}"
    );
    assert_eq!(
        verdict(&stdout, "client half-close answered"),
        "PASS",
        "{stdout}"
    );
}

/// Violates R10.2: never answers an oversized head, it just hangs.
fn hangs_on_big_heads(mut s: TcpStream) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf) {
        if head.len() > 8192 || head.lines().count() > 100 {
            std::thread::sleep(Duration::from_secs(10));
            return;
        }
        if s.write_all(OK).is_err() {
            return;
        }
    }
}

#[test]
fn hanging_on_limits_fails_and_is_bounded_in_time() {
    let addr = broken(hangs_on_big_heads);
    let started = std::time::Instant::now();
    let (out, stdout) = check(addr, &["--only", "R10.2", "--timeout", "1"]);
    assert!(started.elapsed() < Duration::from_secs(6), "{stdout}");
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(
        verdict(&stdout, "10 KB request line bounded"),
        "FAIL",
        "{stdout}"
    );
    assert_eq!(summary(&stdout), (0, 2), "{stdout}");
}
