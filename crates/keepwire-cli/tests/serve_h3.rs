//! `keepwire serve` over HTTP/3 against independent clients: aioquic
//! (Python) and a real browser, headless Chromium forced onto QUIC for
//! the test origin, loading the demo page. What protocol was spoken is
//! read from the server's own access log, not inferred from the page.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TlsRunning, run_command, self_signed_pem, start};

const LIMIT: Duration = Duration::from_secs(90);

/// `keepwire serve --tls-self-signed` on 127.0.0.1:0 with an access log:
/// the child, its QUIC address, and the certificate's PEM.
struct H3Serve {
    run: TlsRunning,
    quic: std::net::SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn serve_h3() -> H3Serve {
    start_h3(&["serve", "--threads", "1"])
}

/// `keepwire ARGS --listen 127.0.0.1:0 --tls-self-signed --access-log F`.
fn start_h3(args: &[&str]) -> H3Serve {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let log_s = log.display().to_string();
    let mut all = args.to_vec();
    all.extend([
        "--listen",
        "127.0.0.1:0",
        "--tls-self-signed",
        "--access-log",
        &log_s,
    ]);
    let run = start(&all);
    let quic = run.line_with("HTTP/3 on udp ");
    let quic = quic.rsplit(' ').next().unwrap().parse().unwrap();
    let pem = self_signed_pem(&run);
    H3Serve {
        run: TlsRunning { run, pem },
        quic,
        log,
        _dir: dir,
    }
}

/// The access log's lines, once `pred` holds for them (bounded).
fn log_lines(path: &Path, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if pred(&lines) || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn have(program: &str, check: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(check)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("KEEPWIRE_SKIP_PEERS").is_none() {
        panic!("{program} is missing: scripts/test installs it");
    }
    ok
}

#[test]
fn aioquic_gets_the_demo_page_from_keepwire_serve_over_http3() {
    if !have("python3", &["-c", "import aioquic"]) {
        eprintln!("SKIP: aioquic not installed");
        return;
    }
    let s = serve_h3();
    assert_eq!(s.quic.port(), s.run.addr.port(), "QUIC on the TCP port");
    let lines = aioquic(&s, &["/", "/obj/1.css", "/obj/2.js"]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["status"], 200, "{l}");
    }
    assert!(
        lines[0]["text"]
            .as_str()
            .unwrap()
            .contains("keepwire demo page")
    );
    let log = log_lines(&s.log, |l| l.len() >= 3);
    let h3 = log.iter().filter(|l| l.contains("proto=HTTP/3")).count();
    assert_eq!(h3, 3, "{log:#?}");
}

/// Runs the aioquic client script against `s` (trusting its certificate)
/// with `args`; its JSON lines.
fn aioquic(s: &H3Serve, args: &[&str]) -> Vec<serde_json::Value> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../keepwire/tests/support/h3_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg("127.0.0.1")
        .arg(s.quic.port().to_string())
        .arg("--ca")
        .arg(&s.run.pem)
        .args(args);
    let out = run_command(cmd, LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn aioquic_through_keepwire_proxy_over_http3() {
    if !have("python3", &["-c", "import aioquic"]) {
        eprintln!("SKIP: aioquic not installed");
        return;
    }
    // The origin echoes TRACE: what the proxy sent on is in the answer.
    let origin = common::serve(&["--trace"]);
    let upstream = format!("http://{}", origin.addr);
    let p = start_h3(&["proxy", "--trace", "--upstream", &upstream]);
    let lines = aioquic(&p, &["/obj/1.css"]);
    assert_eq!(lines[0]["status"], 200, "{lines:?}");
    assert!(
        lines[0]["text"]
            .as_str()
            .unwrap()
            .contains("keepwire object 1"),
        "{lines:?}"
    );
    assert_eq!(lines[0]["headers"]["via"], "1.1 keepwire", "{lines:?}");
    let lines = aioquic(&p, &["--method", "TRACE", "/echo"]);
    let echo = lines[0]["text"].as_str().unwrap().to_ascii_lowercase();
    assert!(echo.contains("via: 3 keepwire"), "{lines:?}");
    let log = log_lines(&p.log, |l| l.len() >= 2);
    assert_eq!(
        log.iter().filter(|l| l.contains("proto=HTTP/3")).count(),
        2,
        "{log:#?}"
    );
}

/// Runs `cmd` with its output in files under `dir` (stdout, stderr), killed
/// (by PID) past `limit`. Not pipes: Chromium's helper processes inherit
/// them and can hold them open for a minute after the browser exits.
fn run_to_files(mut cmd: Command, dir: &Path, limit: Duration) -> (String, String) {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("the program starts");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (read(&out), read(&err))
}

/// The base64 SHA-256 of the certificate's public key (what
/// `--ignore-certificate-errors-spki-list` takes), by openssl.
fn spki_hash(pem: &Path) -> String {
    let script = format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64",
        pem.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let out = run_command(cmd, common::WAIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn chromium_loads_the_demo_page_over_http3() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok());
    let Some(chromium) = chromium else {
        have("chromium", &["--version"]);
        eprintln!("SKIP: chromium not installed");
        return;
    };
    if !have("openssl", &["version"]) {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let s = serve_h3();
    let origin = format!("127.0.0.1:{}", s.quic.port());
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-quic",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--origin-to-force-quic-on={origin}"))
    .arg(format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_hash(&s.run.pem)
    ))
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg("--dump-dom")
    .arg(format!("https://{origin}/"));
    let (dom, err) = run_to_files(cmd, profile.path(), LIMIT);
    assert!(dom.contains("keepwire demo page"), "no page: {dom}\n{err}");
    // The page and its objects came over HTTP/3: the server says so.
    let log = log_lines(&s.log, |l| {
        l.iter().filter(|l| l.contains("proto=HTTP/3")).count() >= 2
    });
    let page = log.iter().find(|l| l.contains("\"GET / HTTP/3.0\" 200 "));
    assert!(
        page.is_some(),
        "the page did not come over HTTP/3: {log:#?}"
    );
    let objects = log
        .iter()
        .filter(|l| l.contains("GET /obj/") && l.contains("proto=HTTP/3"))
        .count();
    assert!(objects >= 1, "no object over HTTP/3: {log:#?}");
}

#[test]
fn http3_without_tls_is_refused_with_the_reason() {
    let out = common::run(
        &["serve", "--listen", "127.0.0.1:0", "--http3"],
        common::WAIT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--http3 needs --tls-cert/--tls-key or --tls-self-signed"),
        "{err}"
    );
}
