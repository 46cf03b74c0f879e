//! `keepwire check server` as a user runs it: against `keepwire serve`
//! (everything passes) and against small deliberately broken servers (the
//! check for the rule each one violates fails, and the exit status says so).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

mod common;

use common::Running as ServerGuard;

/// `keepwire serve --respond ok` on a free port.
fn serve() -> ServerGuard {
    serve_with(&[])
}

fn serve_with(args: &[&str]) -> ServerGuard {
    common::serve(&[&["--respond", "ok"], args].concat())
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

/// Every check line is PASS or SKIP.
fn all_pass(stdout: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    for line in &lines[..lines.len() - 1] {
        if line.contains("warnings,") {
            continue;
        }
        let v = line.split_whitespace().nth(1).unwrap();
        assert!(v == "PASS" || v == "SKIP", "{line}\n{stdout}");
    }
}

#[test]
fn keepwire_serve_passes_every_check() {
    let s = serve();
    let (out, stdout) = check(s.addr, &[]);
    all_pass(&stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let (passed, failed) = summary(&stdout);
    assert_eq!(failed, 0, "{stdout}");
    assert!(passed >= 15, "{stdout}");
    for rule in [
        "R5.1", "R5.2", "R5.3", "R7.2", "R8.4", "R10.1", "R10.2", "R10.3",
    ] {
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
    all_pass(&stdout);
    assert!(out.status.success(), "{stdout}");
    let checks: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.contains("passed,") && !l.contains("skipped"))
        .collect();
    assert!(checks.len() >= 19, "{stdout}");
    for line in &checks {
        assert!(line.starts_with("R10."), "{line}");
    }
    // The slowloris check waits long: skipped without --slow.
    let skipped = checks.iter().filter(|l| l.contains(" SKIP ")).count();
    assert_eq!(skipped, 1, "{stdout}");
    let (passed, failed) = summary(&stdout);
    assert_eq!((passed, failed), (checks.len() - 1, 0), "{stdout}");
    // R1 does not match R10: nothing to run is a usage error that lists
    // the rules this target has.
    let (out, _) = check(s.addr, &["--only", "R1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("this target's rules: R5."), "{stderr}");
    assert!(stderr.contains(", R10.1"), "{stderr}");
    assert_eq!(stderr.matches("R5.3").count(), 1, "once each: {stderr}");
}

/// `host:port` without a scheme means http://, as in `get`, `bench`
/// and curl (it was "URL ... needs http://").
#[test]
fn a_url_without_scheme_is_http() {
    let s = serve();
    for target in [s.addr.to_string(), format!("localhost:{}/", s.addr.port())] {
        let out = common::run(
            &["check", "server", &target, "--only", "R5.3"],
            Duration::from_secs(30),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{target}: {stdout}{out:?}");
        all_pass(&stdout);
    }
}

/// A `--cacert` file that cannot be read is named as the flag's problem
/// (it was "cannot connect: HOST:PORT: /nonexist: I/O error ...").
#[test]
fn an_unreadable_cacert_names_the_flag() {
    let out = common::run(
        &[
            "check",
            "server",
            "--http2",
            "--cacert",
            "/nonexistent/ca.pem",
            "https://127.0.0.1:1/",
        ],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("keepwire: --cacert /nonexistent/ca.pem: "),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot connect"), "{stderr}");
}

/// Exit 1 means a check failed: an output file that cannot be created
/// is a usage error (2), found before any check runs.
#[test]
fn an_unwritable_output_file_is_exit_2() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    for flag in ["--json=/nonexistent/x.json", "--report=/nonexistent/x.txt"] {
        let out = common::run(&["check", "server", &url, flag], Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains("/nonexistent/x."), "{stderr}");
        assert!(out.stdout.is_empty(), "no check ran");
    }
}

/// A zero time limit is refused (exit 2): `--timeout 0` failed checks at
/// random and `--total-timeout 0` skipped every check and exited 0.
#[test]
fn zero_time_limits_are_usage_errors() {
    for flag in ["--timeout", "--total-timeout", "--stall-timeout"] {
        let out = common::run(
            &["check", "server", flag, "0", "http://127.0.0.1:1/"],
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains("must be more than 0"), "{flag}: {stderr}");
    }
}

/// A target nobody listens on: one line, exit 2, for a server (HTTP/1 and
/// HTTP/2) and a proxy alike.
#[test]
fn unreachable_target_is_one_line_and_exit_2() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let addr = format!("127.0.0.1:{port}");
    for args in [
        vec!["check", "server", &url],
        vec!["check", "server", "--http2-prior-knowledge", &url],
        vec!["check", "proxy", &addr],
    ] {
        let out = common::run(&args, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert_eq!(
            stderr,
            format!("keepwire: cannot connect: {addr}: connection refused\n"),
            "{args:?}"
        );
    }
    // The old spelling of h2c still works, with a note.
    let out = common::run(
        &["check", "server", "--http2", &url],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--http2 on http:// is deprecated; use --http2-prior-knowledge"),
        "{stderr}"
    );
}

/// Exit 0 when every check passes; piped output (stdout and stderr) never
/// carries an escape sequence: no colour, no spinner.
#[test]
fn piped_output_is_plain_and_exit_0() {
    let s = serve();
    let out = common::run(
        &[
            "check",
            "server",
            &format!("http://{}/", s.addr),
            "--only",
            "R5.3",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" PASS "),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
        "{out:?}"
    );
}

/// On a terminal (`script` gives the child a pseudo-terminal) the verdicts
/// are coloured, unless NO_COLOR is set.
#[test]
fn verdicts_are_coloured_on_a_terminal_only_without_no_color() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1)");
        return;
    }
    let s = serve();
    let cmd = format!(
        "{} check server http://{}/ --only R5.3",
        env!("CARGO_BIN_EXE_keepwire"),
        s.addr
    );
    let tty = |no_color: bool| {
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let out = common::run_command(c, Duration::from_secs(20));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = tty(false);
    assert!(coloured.contains("\x1b[32mPASS\x1b[0m"), "{coloured:?}");
    let plain = tty(true);
    assert!(
        plain.contains(" PASS ") && !plain.contains("\x1b[32m"),
        "{plain:?}"
    );
}

/// `--json FILE` and `--report FILE` write files (stdout stays empty);
/// `--json URL` (the URL taken as FILE) still checks URL; both on stdout is
/// a usage error.
#[test]
fn json_and_report_take_an_optional_file() {
    let s = serve();
    let url = format!("http://{}/", s.addr);
    let dir = tempfile::tempdir().unwrap();
    let (json, table) = (dir.path().join("c.json"), dir.path().join("c.txt"));
    let json_flag = format!("--json={}", json.display());
    let table_s = table.display().to_string();
    let out = common::run(
        &[
            "check", "server", &url, "--only", "R5.3", &json_flag, "--report", &table_s,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["summary"]["failed"], 0);
    assert!(std::fs::read_to_string(&table).unwrap().contains(" PASS "));
    let out = common::run(
        &["check", "server", "--only", "R5.3", "--json", &url],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["target"], url.as_str());
    let out = common::run(
        &["check", "server", &url, "--json", "-", "--report", "-"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
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
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed check exits 1: {stdout}"
    );
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
    assert_eq!(
        verdict(&stdout, "300 header fields bounded"),
        "FAIL",
        "{stdout}"
    );
    assert_eq!(summary(&stdout), (0, 2), "{stdout}");
}

// ---- one configurable broken server: well-behaved except for one rule ----

/// The one thing [`configurable`] gets wrong; otherwise it frames bodies by
/// Content-Length, honours `Connection` (1.1 persistent, 1.0 only with
/// keep-alive), answers `Expect: 100-continue`, sends no body on HEAD and
/// closes with a lingering close.
#[derive(Clone, Copy)]
enum Flaw {
    /// R5.1: grants HTTP/1.0 keep-alive (`Connection: keep-alive`), then
    /// closes anyway.
    KeepAlive10ThenCloses,
    /// R5.1: keeps an HTTP/1.0 connection open although keep-alive was not
    /// asked for.
    Http10StaysOpen,
    /// R8.4: when the client half-closes, closes without answering.
    DropsOnHalfClose,
    /// R5.4: sends the body on HEAD too.
    BodyOnHead,
    /// R5.4: never sends 100 Continue; waits for the body.
    NoContinue,
    /// R5.2: `Keep-Alive: timeout=soon`.
    BadKeepAliveTimeout,
    /// R5.2: advertises `timeout=1` and, once idle that long, writes an
    /// unsolicited response before closing.
    TalksWhenIdle,
    /// R5.6: advertises `max=3`, then after 4 responses closes without
    /// `Connection: close`.
    MaxWithoutClose,
    /// R5.4: sends 100 Continue, reads the body, then closes without a
    /// final response.
    ContinueThenNothing,
    /// R10.2: no time limit on a request head (bytes keep trickling in).
    NoHeadTimeout,
    /// R10.1/R10.3: accepts this one malformed framing (and keeps the
    /// connection) instead of answering 400 and closing; rejects the others.
    Lenient(Vector),
    /// R10.3: accepts any `Host` (missing, repeated, invalid).
    LaxHost,
    /// R10.3: routes by `Host` even when the target is in absolute form
    /// (404 for a host it does not serve).
    RoutesByHost,
}

/// The R10.1 vectors `keepwire check server` sends.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Vector {
    TeCl,
    TwoCl,
    BadCl,
    TeNotFinal,
    Te10,
    BadChunk,
    SpaceColon,
    CommaCl,
    EmptyChunk,
    SpaceChunk,
    LfChunk,
    CtlExt,
    LfTrailer,
}

impl Vector {
    /// Each vector with its rule and the name of its check.
    const ALL: [(Vector, &'static str, &'static str); 13] = [
        (Vector::TeCl, "R10.1", "TE + CL rejected"),
        (Vector::TwoCl, "R10.1", "differing CLs rejected"),
        (Vector::BadCl, "R10.1", "invalid CL rejected"),
        (Vector::TeNotFinal, "R10.1", "TE chunked not final rejected"),
        (Vector::Te10, "R10.1", "TE in HTTP/1.0 not trusted"),
        (Vector::BadChunk, "R10.1", "invalid chunk size rejected"),
        (Vector::SpaceColon, "R10.1", "space before colon rejected"),
        (Vector::CommaCl, "R10.1", "Content-Length: , rejected"),
        (
            Vector::EmptyChunk,
            "R10.3",
            "empty chunk-size line rejected",
        ),
        (
            Vector::SpaceChunk,
            "R10.3",
            "whitespace chunk-size line rejected",
        ),
        (
            Vector::LfChunk,
            "R10.3",
            "bare LF after chunk size rejected",
        ),
        (
            Vector::CtlExt,
            "R10.3",
            "control byte in chunk extension rejected",
        ),
        (Vector::LfTrailer, "R10.3", "bare-LF trailers rejected"),
    ];
}

/// Which R10.1 vector a request head is (its framing problem), if any.
fn framing_problem(head: &str, http10: bool) -> Option<Vector> {
    let names: Vec<&str> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n))
        .collect();
    if names.iter().any(|n| n.ends_with([' ', '\t'])) {
        return Some(Vector::SpaceColon);
    }
    let cls: Vec<&str> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim())
        .collect();
    let te = field(head, "transfer-encoding");
    if te.is_some() && !cls.is_empty() {
        return Some(Vector::TeCl);
    }
    if cls.len() > 1 {
        return Some(Vector::TwoCl);
    }
    if cls.first() == Some(&",") {
        return Some(Vector::CommaCl);
    }
    if cls
        .first()
        .is_some_and(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(Vector::BadCl);
    }
    if let Some(te) = te {
        if http10 {
            return Some(Vector::Te10);
        }
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if !last.eq_ignore_ascii_case("chunked") {
            return Some(Vector::TeNotFinal);
        }
    }
    None
}

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Reads more bytes into `buf`; false on EOF or error.
fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tmp = [0u8; 8192];
    match s.read(&mut tmp) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// One line (up to LF) from `buf` + the socket, without its line ending,
/// and whether that ending was CRLF; `None` on EOF.
fn take_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Vec<u8>, bool)> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=i).collect();
            line.pop();
            let crlf = line.last() == Some(&b'\r');
            if crlf {
                line.pop();
            }
            return Some((line, crlf));
        }
        if !more(s, buf) {
            return None;
        }
    }
}

/// Reads a chunked body as RFC 9112 §7.1 says (hex size, extensions
/// without control bytes, CRLF everywhere, trailers up to CRLF CRLF);
/// `Err(v)` names the problem found, unless `lenient` is that problem: then
/// it reads on as a lenient parser would. `Ok(false)` on EOF.
fn read_chunked(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    lenient: Option<Vector>,
) -> Result<bool, Vector> {
    let allow = |v: Vector| lenient == Some(v);
    loop {
        let Some((line, crlf)) = take_line(s, buf) else {
            return Ok(false);
        };
        if !crlf && !allow(Vector::LfChunk) {
            return Err(Vector::LfChunk);
        }
        let (size, ext) = match line.iter().position(|&b| b == b';') {
            Some(i) => (&line[..i], &line[i..]),
            None => (&line[..], &[][..]),
        };
        if ext.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) && !allow(Vector::CtlExt) {
            return Err(Vector::CtlExt);
        }
        let size = if size.is_empty() {
            if !allow(Vector::EmptyChunk) {
                return Err(Vector::EmptyChunk);
            }
            0
        } else if size.iter().all(|b| b.is_ascii_whitespace()) {
            if !allow(Vector::SpaceChunk) {
                return Err(Vector::SpaceChunk);
            }
            0
        } else {
            let text = String::from_utf8_lossy(size);
            match usize::from_str_radix(text.trim(), 16) {
                Ok(n) if text.trim().bytes().all(|b| b.is_ascii_hexdigit()) => n,
                _ if allow(Vector::BadChunk) => {
                    // Skips to what looks like the last chunk.
                    while !buf.windows(5).any(|w| w == b"0\r\n\r\n") {
                        if !more(s, buf) {
                            return Ok(false);
                        }
                    }
                    let j = buf.windows(5).position(|w| w == b"0\r\n\r\n").unwrap();
                    buf.drain(..j + 5);
                    return Ok(true);
                }
                _ => return Err(Vector::BadChunk),
            }
        };
        if size == 0 {
            loop {
                let Some((trailer, crlf)) = take_line(s, buf) else {
                    return Ok(false);
                };
                if !crlf && !allow(Vector::LfTrailer) {
                    return Err(Vector::LfTrailer);
                }
                if trailer.is_empty() {
                    return Ok(true);
                }
            }
        }
        while buf.len() < size + 2 {
            if !more(s, buf) {
                return Ok(false);
            }
        }
        buf.drain(..size + 2);
    }
}

enum HeadRead {
    Head(String),
    Eof,
    Idle,
}

fn read_head_within(s: &mut TcpStream, buf: &mut Vec<u8>, idle: Duration) -> HeadRead {
    s.set_read_timeout(Some(idle)).unwrap();
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            buf.drain(..i + 4);
            return HeadRead::Head(head);
        }
        let mut tmp = [0u8; 8192];
        match s.read(&mut tmp) {
            Ok(0) => return HeadRead::Eof,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return HeadRead::Idle;
            }
            Err(_) => return HeadRead::Eof,
        }
    }
}

/// A lingering close: FIN, then read (and drop) what the client still sends.
fn linger_close(mut s: TcpStream) {
    let _ = s.shutdown(std::net::Shutdown::Write);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut tmp = [0u8; 65536];
    while matches!(s.read(&mut tmp), Ok(n) if n > 0) {}
}

fn configurable(flaw: Flaw, mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut served = 0;
    let idle = match flaw {
        Flaw::TalksWhenIdle => Duration::from_secs(1),
        _ => Duration::from_secs(10),
    };
    loop {
        let head = match read_head_within(&mut s, &mut buf, idle) {
            HeadRead::Head(h) => h,
            HeadRead::Eof => return linger_close(s),
            HeadRead::Idle => {
                if matches!(flaw, Flaw::TalksWhenIdle) {
                    let _ = s.write_all(OK);
                }
                return linger_close(s);
            }
        };
        let mut words = head.split(' ');
        let method = words.next().unwrap_or("").to_string();
        let http10 = head.lines().next().unwrap_or("").ends_with("HTTP/1.0");
        let conn = field(&head, "connection")
            .unwrap_or("")
            .to_ascii_lowercase();
        let keep_alive_asked = conn.contains("keep-alive");
        let close_asked = conn.contains("close");
        let mut keep = if http10 {
            keep_alive_asked || matches!(flaw, Flaw::Http10StaysOpen)
        } else {
            !close_asked
        };
        let lenient = match flaw {
            Flaw::Lenient(v) => Some(v),
            _ => None,
        };
        let problem = framing_problem(&head, http10);
        if problem.is_some() && problem != lenient {
            let _ = s.write_all(BAD_REQUEST);
            return linger_close(s);
        }
        if problem.is_some() {
            // A server that trusts the bad framing also keeps the connection.
            keep = true;
        }
        let hosts: Vec<&str> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.trim())
            .collect();
        let bad_host = match hosts.as_slice() {
            [] => !http10,
            [h] => h.is_empty() || h.contains(['/', ' ', '@']),
            _ => true,
        };
        if bad_host && !matches!(flaw, Flaw::LaxHost) {
            let _ = s.write_all(BAD_REQUEST);
            return linger_close(s);
        }
        let chunked = field(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let cl = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().trim_start_matches('+').parse::<usize>().ok());
        if chunked {
            match read_chunked(&mut s, &mut buf, lenient) {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    let _ = s.write_all(BAD_REQUEST);
                    return linger_close(s);
                }
            }
        } else if let Some(n) = cl {
            if field(&head, "expect").is_some() && !matches!(flaw, Flaw::NoContinue) {
                let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            while buf.len() < n {
                let mut tmp = [0u8; 8192];
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&tmp[..k]),
                }
            }
            buf.drain(..n);
            if matches!(flaw, Flaw::ContinueThenNothing) {
                return linger_close(s);
            }
        }
        if matches!(flaw, Flaw::DropsOnHalfClose) && buf.is_empty() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            if matches!(s.peek(&mut [0u8; 1]), Ok(0)) {
                return;
            }
        }
        served += 1;
        let mut resp = if matches!(flaw, Flaw::RoutesByHost) && hosts == ["kw-other.invalid"] {
            String::from("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n")
        } else {
            String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
        };
        match flaw {
            Flaw::BadKeepAliveTimeout => resp.push_str("Keep-Alive: timeout=soon\r\n"),
            Flaw::TalksWhenIdle => resp.push_str("Keep-Alive: timeout=1\r\n"),
            Flaw::MaxWithoutClose => resp.push_str("Keep-Alive: timeout=5, max=3\r\n"),
            _ => {}
        }
        if http10 && keep_alive_asked {
            resp.push_str("Connection: keep-alive\r\n");
        }
        if !keep {
            resp.push_str("Connection: close\r\n");
        }
        resp.push_str("\r\n");
        if method != "HEAD" || matches!(flaw, Flaw::BodyOnHead) {
            resp.push_str("ok");
        }
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
        if matches!(flaw, Flaw::KeepAlive10ThenCloses) && http10 && keep_alive_asked {
            keep = false;
        }
        if matches!(flaw, Flaw::MaxWithoutClose) && served == 4 {
            keep = false;
        }
        if !keep {
            return linger_close(s);
        }
    }
}

/// Serves each connection on its own thread with [`configurable`].
fn broken_with(flaw: Flaw) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || configurable(flaw, conn));
        }
    });
    addr
}

/// Runs `--only RULE` against a server with `flaw` and asserts that check
/// `name` shows `want` (and the exit status is non-zero if that is FAIL).
fn expect_verdict(flaw: Flaw, rule: &str, name: &str, want: &str, extra: &[&str]) -> String {
    let addr = broken_with(flaw);
    let mut args = vec!["--only", rule, "--timeout", "2"];
    args.extend_from_slice(extra);
    let (out, stdout) = check(addr, &args);
    assert_eq!(verdict(&stdout, name), want, "{stdout}");
    if want == "FAIL" {
        assert!(!out.status.success(), "{stdout}");
    }
    stdout
}

#[test]
fn the_configurable_server_passes_what_it_does_not_break() {
    // Only the flawed behaviour is wrong: its own rule's other checks pass.
    let stdout = expect_verdict(Flaw::BodyOnHead, "R5", "HTTP/1.1 persistence", "PASS", &[]);
    assert_eq!(verdict(&stdout, "HTTP/1.0 keep-alive"), "PASS", "{stdout}");
    assert_eq!(verdict(&stdout, "close mid-pipeline"), "PASS", "{stdout}");
    assert_eq!(verdict(&stdout, "100-continue"), "PASS", "{stdout}");
    assert_eq!(verdict(&stdout, "HEAD response"), "FAIL", "{stdout}");
}

#[test]
fn keep_alive_granted_then_closed_fails_r5_1() {
    let stdout = expect_verdict(
        Flaw::KeepAlive10ThenCloses,
        "R5.1",
        "HTTP/1.0 keep-alive",
        "FAIL",
        &[],
    );
    assert_eq!(
        verdict(&stdout, "HTTP/1.0 without keep-alive closes"),
        "PASS",
        "{stdout}"
    );
}

#[test]
fn http10_left_open_fails_r5_1() {
    let stdout = expect_verdict(
        Flaw::Http10StaysOpen,
        "R5.1",
        "HTTP/1.0 without keep-alive closes",
        "FAIL",
        &[],
    );
    assert!(stdout.contains("connection still open"), "{stdout}");
    assert_eq!(verdict(&stdout, "HTTP/1.0 keep-alive"), "PASS", "{stdout}");
}

#[test]
fn dropping_on_half_close_fails_r8_4() {
    let stdout = expect_verdict(
        Flaw::DropsOnHalfClose,
        "R8.4",
        "client half-close answered",
        "FAIL",
        &[],
    );
    assert_eq!(
        verdict(&stdout, "requests after close not reset away"),
        "PASS",
        "{stdout}"
    );
}

#[test]
fn body_on_head_fails_r5_4() {
    let stdout = expect_verdict(
        Flaw::BodyOnHead,
        "R5.4",
        "HEAD response has no body",
        "FAIL",
        &[],
    );
    assert!(stdout.contains("bytes after the HEAD response"), "{stdout}");
}

#[test]
fn no_100_continue_warns_r5_4() {
    // R5.4's 100-continue part is a SHOULD: waiting for the body is a WARN.
    let stdout = expect_verdict(
        Flaw::NoContinue,
        "R5.4",
        "Expect: 100-continue answered",
        "WARN",
        &[],
    );
    assert!(stdout.contains("nothing within 1 s"), "{stdout}");
    assert_eq!(verdict(&stdout, "HEAD response"), "PASS", "{stdout}");
}

#[test]
fn unparsable_keep_alive_warns_r5_2() {
    // The header is optional, so a bad one can only be a WARN.
    let stdout = expect_verdict(
        Flaw::BadKeepAliveTimeout,
        "R5.2",
        "Keep-Alive advertised",
        "WARN",
        &[],
    );
    assert!(stdout.contains("timeout=soon"), "{stdout}");
}

#[test]
fn talking_on_an_idle_connection_fails_r5_2() {
    let started = std::time::Instant::now();
    let stdout = expect_verdict(
        Flaw::TalksWhenIdle,
        "R5.2",
        "idle timeout observed",
        "FAIL",
        &["--slow"],
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{stdout}");
    assert!(stdout.contains("idle connection:"), "{stdout}");
    assert_eq!(
        verdict(&stdout, "Keep-Alive advertised"),
        "PASS",
        "{stdout}"
    );
}

#[test]
fn max_requests_without_close_fails_r5_6() {
    let stdout = expect_verdict(
        Flaw::MaxWithoutClose,
        "R5.6",
        "max requests announced with close",
        "FAIL",
        &[],
    );
    assert!(stdout.contains("advertised max=3"), "{stdout}");
}

#[test]
fn unbounded_slow_head_fails_r10_2() {
    // The slowloris check gives a server 60 s to end a trickling head.
    let started = std::time::Instant::now();
    let stdout = expect_verdict(
        Flaw::NoHeadTimeout,
        "R10.2",
        "slowloris head bounded in time",
        "FAIL",
        &["--slow"],
    );
    assert!(started.elapsed() < Duration::from_secs(75), "{stdout}");
    assert!(stdout.contains("still reading"), "{stdout}");
}

#[test]
fn continue_then_no_final_response_fails_r5_4() {
    let stdout = expect_verdict(
        Flaw::ContinueThenNothing,
        "R5.4",
        "Expect: 100-continue answered",
        "FAIL",
        &[],
    );
    assert!(stdout.contains("final response after 100"), "{stdout}");
}

/// A server that is strict about every R10.1/R10.3 vector but `v`: exactly
/// that check fails, the other checks of its rule pass.
fn only_vector_fails(v: Vector) {
    let (_, rule, name) = *Vector::ALL.iter().find(|(w, _, _)| *w == v).unwrap();
    let stdout = expect_verdict(Flaw::Lenient(v), rule, name, "FAIL", &[]);
    assert!(stdout.contains("GET /smuggled"), "{stdout}");
    let checks = stdout.lines().filter(|l| l.starts_with(rule)).count();
    for line in stdout.lines().filter(|l| l.starts_with(rule)) {
        if !line.contains(name) {
            assert_eq!(
                line.split_whitespace().nth(1),
                Some("PASS"),
                "{v:?}: {stdout}"
            );
        }
    }
    assert_eq!(summary(&stdout), (checks - 1, 1), "{stdout}");
}

#[test]
fn lenient_te_and_cl_fails_r10_1() {
    only_vector_fails(Vector::TeCl);
}

#[test]
fn lenient_differing_cls_fails_r10_1() {
    only_vector_fails(Vector::TwoCl);
}

#[test]
fn lenient_invalid_cl_fails_r10_1() {
    only_vector_fails(Vector::BadCl);
}

#[test]
fn lenient_te_not_final_fails_r10_1() {
    only_vector_fails(Vector::TeNotFinal);
}

#[test]
fn lenient_te_in_http10_fails_r10_1() {
    only_vector_fails(Vector::Te10);
}

#[test]
fn lenient_chunk_size_fails_r10_1() {
    only_vector_fails(Vector::BadChunk);
}

#[test]
fn lenient_space_before_colon_fails_r10_1() {
    only_vector_fails(Vector::SpaceColon);
}

#[test]
fn comma_content_length_fails_r10_1() {
    only_vector_fails(Vector::CommaCl);
}

#[test]
fn empty_chunk_size_fails_r10_3() {
    only_vector_fails(Vector::EmptyChunk);
}

#[test]
fn whitespace_chunk_size_fails_r10_3() {
    only_vector_fails(Vector::SpaceChunk);
}

#[test]
fn bare_lf_after_chunk_size_fails_r10_3() {
    only_vector_fails(Vector::LfChunk);
}

#[test]
fn control_byte_in_chunk_extension_fails_r10_3() {
    only_vector_fails(Vector::CtlExt);
}

#[test]
fn bare_lf_trailers_fail_r10_3() {
    only_vector_fails(Vector::LfTrailer);
}

#[test]
fn accepting_any_host_fails_r10_3() {
    let stdout = expect_verdict(
        Flaw::LaxHost,
        "R10.3",
        "HTTP/1.1 without Host rejected",
        "FAIL",
        &[],
    );
    for name in ["duplicate Host rejected", "invalid Host rejected"] {
        assert_eq!(verdict(&stdout, name), "FAIL", "{stdout}");
    }
    assert!(stdout.contains("accepted: HTTP/1.1 200 OK"), "{stdout}");
    assert_eq!(
        verdict(&stdout, "absolute-form target wins over Host"),
        "PASS",
        "{stdout}"
    );
    assert_eq!(summary(&stdout), (6, 3), "{stdout}");
}

#[test]
fn routing_by_host_over_the_target_fails_r10_3() {
    let stdout = expect_verdict(
        Flaw::RoutesByHost,
        "R10.3",
        "absolute-form target wins over Host",
        "FAIL",
        &[],
    );
    assert!(stdout.contains("Host decided, not the target"), "{stdout}");
    assert_eq!(
        verdict(&stdout, "HTTP/1.1 without Host rejected"),
        "PASS",
        "{stdout}"
    );
}

/// nginx holds the line on Host and on most chunk-size lines; it accepts a
/// bare LF after the size, control bytes in extensions and bare-LF
/// trailers (recorded in docs/CONFORMANCE.md), so those are not asserted.
#[test]
fn nginx_passes_the_host_and_chunk_size_line_checks() {
    let Some(nginx) = common::nginx(
        "listen LISTEN;\n location = / { default_type text/plain; return 200 \"ok\"; }",
    ) else {
        return;
    };
    let (_, stdout) = check(nginx.addr, &["--only", "R10.3"]);
    for name in [
        "HTTP/1.1 without Host rejected",
        "duplicate Host rejected",
        "invalid Host rejected",
        "absolute-form target wins over Host",
        "empty chunk-size line rejected",
        "whitespace chunk-size line rejected",
    ] {
        assert_eq!(verdict(&stdout, name), "PASS", "{name}: {stdout}");
    }
    let (_, stdout) = check(nginx.addr, &["--only", "R10.1"]);
    assert_eq!(
        verdict(&stdout, "Content-Length: , rejected"),
        "PASS",
        "{stdout}"
    );
}

/// Violates RFC 9112 §6.3: sends an ETag, then answers the conditional GET
/// with a 304 that carries body bytes.
fn body_on_304(mut s: TcpStream) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf) {
        let reply: &[u8] = if field(&head, "if-none-match").is_some() {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\nstale body"
        } else {
            b"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: 2\r\n\r\nok"
        };
        if s.write_all(reply).is_err() {
            return;
        }
    }
}

#[test]
fn a_304_with_a_body_fails_r5_4() {
    let addr = broken(body_on_304);
    let (out, stdout) = check(addr, &["--only", "R5.4", "--timeout", "2"]);
    assert_eq!(
        verdict(&stdout, "304 response has no body"),
        "FAIL",
        "{stdout}"
    );
    assert!(stdout.contains("bytes after the 304 head"), "{stdout}");
    assert!(!out.status.success());
}

// ---- HTTP/2 (`--http2`) ----

/// The HTTP/2 checks and their names, as `keepwire check server --http2`
/// prints them.
const H2_BASELINE: &str = "HTTP/2 GET answered (baseline)";
const H2_RAPID_RESET: &str = "rapid reset (RST with HEADERS)";
const H2_DELAYED_RESET: &str = "streams reset after 100 ms";
const H2_CONTINUATION: &str = "CONTINUATION flood bounded";
const H2_SETTINGS: &str = "SETTINGS flood bounded";
const H2_PING: &str = "PING flood bounded";
const H2_DECLARED_BODY: &str = "declared oversized body refused";
const H2_STREAMED_BODY: &str = "streamed oversized body refused";
const H2_ZERO_WINDOW: &str = "zero-window stream ended";

/// `check server --http2` with short bounds: 1 MiB bodies, a 3 s stall.
fn check_h2(addr: SocketAddr, extra: &[&str]) -> (Output, String) {
    let mut args = vec![
        "--http2",
        "--timeout",
        "5",
        "--max-body",
        "1048576",
        "--stall-timeout",
        "3s",
    ];
    args.extend_from_slice(extra);
    check(addr, &args)
}

/// Not an HTTP/2 server at all, but a sink: it sends an empty SETTINGS and
/// then reads and drops every byte (no ACK, no GOAWAY, no response), so
/// every flood is absorbed without a reaction.
fn h2_sink(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).is_err() {
        return;
    }
    let mut tmp = vec![0u8; 256 * 1024];
    while matches!(s.read(&mut tmp), Ok(n) if n > 0) {}
}

#[test]
fn an_http2_sink_fails_every_flood_check() {
    let addr = broken(h2_sink);
    let started = std::time::Instant::now();
    let (out, stdout) = check_h2(addr, &[]);
    assert!(started.elapsed() < Duration::from_secs(60), "{stdout}");
    assert!(!out.status.success(), "{stdout}");
    for name in [
        H2_BASELINE,
        H2_RAPID_RESET,
        H2_DELAYED_RESET,
        H2_CONTINUATION,
        H2_SETTINGS,
        H2_PING,
        H2_ZERO_WINDOW,
    ] {
        assert_eq!(verdict(&stdout, name), "FAIL", "{name}: {stdout}");
    }
    assert!(
        stdout.contains("all 1000 streams opened and reset with no GOAWAY"),
        "{stdout}"
    );
    assert!(stdout.contains("took all ~"), "{stdout}");
    // No window is ever granted: the uploads stall, which is not a pass.
    assert_eq!(verdict(&stdout, H2_DECLARED_BODY), "WARN", "{stdout}");
}

/// An HTTP/2 server (the `h2` crate, no limits of its own added) that reads
/// every request body to its end, answers 200 with a body (413 once the
/// whole body is in, if it had no `content-length`: a limit enforced too
/// late), and waits for flow-control window forever.
fn h2_lax() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        tokio::spawn(async move {
                            let declared = req.headers().contains_key("content-length");
                            let mut body = req.into_body();
                            let mut len = 0;
                            while let Some(Ok(chunk)) = body.data().await {
                                len += chunk.len();
                                let _ = body.flow_control().release_capacity(chunk.len());
                            }
                            let mut resp = http::Response::new(());
                            if !declared && len > 1 << 20 {
                                *resp.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                            }
                            if let Ok(mut send) = respond.send_response(resp, false) {
                                let _ = send.send_data(bytes::Bytes::from_static(b"hello\n"), true);
                                // Holds the stream until the peer ends it.
                                let _ = std::future::poll_fn(|cx| send.poll_reset(cx)).await;
                            }
                        });
                    }
                });
            }
        });
    });
    addr
}

#[test]
fn a_lax_http2_server_fails_the_body_reset_and_window_checks() {
    let addr = h2_lax();
    let (out, stdout) = check_h2(addr, &[]);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(verdict(&stdout, H2_BASELINE), "PASS", "{stdout}");
    // The h2 crate's default header-list limit is 16 MiB, so 10 MiB of
    // CONTINUATION passes it (keepwire sets the limit to its head limit).
    for name in [
        H2_DELAYED_RESET,
        H2_CONTINUATION,
        H2_DECLARED_BODY,
        H2_STREAMED_BODY,
        H2_ZERO_WINDOW,
    ] {
        assert_eq!(verdict(&stdout, name), "FAIL", "{name}: {stdout}");
    }
    assert!(
        stdout.contains("took all 1048577 body bytes and answered 200 OK"),
        "{stdout}"
    );
    assert!(
        stdout.contains("413 Payload Too Large only after taking all 1048577 body bytes"),
        "{stdout}"
    );
    assert!(stdout.contains("stream still open after 3."), "{stdout}");
    // The h2 crate bounds these on its own.
    for name in [H2_RAPID_RESET, H2_SETTINGS, H2_PING] {
        assert_eq!(verdict(&stdout, name), "PASS", "{name}: {stdout}");
    }
}

/// nginx (h2c on the listener, `send_timeout 2s`, `client_max_body_size
/// 1m`) holds the line on these; its other results are in
/// docs/CONFORMANCE.md.
#[test]
fn nginx_passes_the_http2_flood_body_and_window_checks() {
    let Some(nginx) = common::nginx(
        "listen LISTEN http2;\n send_timeout 2s;\n client_max_body_size 1m;\n\
         location = / { default_type text/plain; return 200 \"Hello, world!\"; }",
    ) else {
        return;
    };
    let (_, stdout) = check_h2(nginx.addr, &[]);
    for name in [
        H2_BASELINE,
        H2_CONTINUATION,
        H2_SETTINGS,
        H2_PING,
        H2_DECLARED_BODY,
        H2_ZERO_WINDOW,
    ] {
        assert_eq!(verdict(&stdout, name), "PASS", "{name}: {stdout}");
    }
    assert!(stdout.contains("413 Payload Too Large"), "{stdout}");
}

/// With a 2 s write timeout the zero-window stream ends within the 3 s
/// the check waits; the 100 ms resets get ENHANCE_YOUR_CALM.
#[test]
fn keepwire_serve_passes_the_http2_checks() {
    let s = serve_with(&["--write-timeout", "2s"]);
    let (out, stdout) = check_h2(s.addr, &[]);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("R10.4")).collect();
    assert_eq!(lines.len(), 9, "{stdout}");
    for line in &lines {
        assert_eq!(
            line.split_whitespace().nth(1),
            Some("PASS"),
            "{line}\n{stdout}"
        );
    }
    assert!(out.status.success(), "{stdout}");
    let delayed = stdout
        .lines()
        .find(|l| l.contains(H2_DELAYED_RESET))
        .unwrap();
    assert!(delayed.contains("GOAWAY ENHANCE_YOUR_CALM"), "{stdout}");
    assert!(stdout.contains("413 Payload Too Large after"), "{stdout}");
}

#[test]
fn http2_json_and_https_need_http2() {
    let s = serve();
    // https:// is only checked over HTTP/2.
    let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["check", "server", "https://127.0.0.1:1/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--http2"),
        "{out:?}"
    );
    let (_, stdout) = check(s.addr, &["--http2", "--json", "--stall-timeout", "1s"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 9, "{stdout}");
    assert!(checks.iter().all(|c| c["rule"] == "R10.4"), "{stdout}");
}

#[test]
fn http2_over_tls_is_negotiated_by_alpn() {
    let s = serve_with(&["--tls-self-signed", "--write-timeout", "2s"]);
    let url = format!("https://{}/", s.addr);
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
            .args(["check", "server", "--http2", &url, "--stall-timeout", "1s"])
            .args(extra)
            .output()
            .expect("keepwire check runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stdout = run(&["-k"]);
    eprintln!("{stdout}");
    assert_eq!(verdict(&stdout, H2_BASELINE), "PASS", "{stdout}");
    assert!(stdout.contains("h2 (ALPN): 200 OK"), "{stdout}");
    assert_eq!(verdict(&stdout, H2_CONTINUATION), "PASS", "{stdout}");
    // Without -k the self-signed certificate is refused, once, with the
    // next step.
    let out = Command::new(env!("CARGO_BIN_EXE_keepwire"))
        .args(["check", "server", "--http2", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("keepwire: cannot connect: "), "{stderr}");
    assert!(
        stderr.contains("certificate")
            && stderr.contains("use --cacert FILE to trust its CA, or -k"),
        "{stderr}"
    );
}

/// Like [`h2_sink`], but it answers the first request of a connection (on
/// stream 1) with a 200 head and, a second later, ends the stream with an
/// empty DATA frame: it gives up on a body it cannot send (as HAProxy does
/// at `timeout client`).
fn h2_gives_up(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).is_err() {
        return;
    }
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 256 * 1024];
    // The 24-byte preface, then frames until a HEADERS on stream 1.
    let mut pos = 24;
    loop {
        match s.read(&mut tmp) {
            Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return,
        }
        let mut found = false;
        while buf.len() >= pos + 9 {
            let len = u32::from_be_bytes([0, buf[pos], buf[pos + 1], buf[pos + 2]]) as usize;
            let (ty, stream) = (buf[pos + 3], buf[pos + 8]);
            pos += 9 + len;
            if ty == 1 && stream == 1 {
                found = true;
            }
        }
        if found {
            break;
        }
        if buf.len() > 1 << 20 {
            return;
        }
    }
    // HEADERS, END_HEADERS, `:status: 200` (static table index 8).
    if s.write_all(&[0, 0, 1, 1, 4, 0, 0, 0, 1, 0x88]).is_err() {
        return;
    }
    std::thread::sleep(Duration::from_secs(1));
    let _ = s.write_all(&[0, 0, 0, 0, 1, 0, 0, 0, 1]);
    while matches!(s.read(&mut tmp), Ok(n) if n > 0) {}
}

#[test]
fn a_stream_ended_without_its_body_passes_the_zero_window_check() {
    let addr = broken(h2_gives_up);
    let (_, stdout) = check_h2(addr, &[]);
    assert_eq!(verdict(&stdout, H2_ZERO_WINDOW), "PASS", "{stdout}");
    assert!(
        stdout.contains("stream ended (empty DATA with END_STREAM, the body cut short) after 1."),
        "{stdout}"
    );
}
