//! `keepwire get --http3 / --http3-only / --early-data` against an
//! independent HTTP/3 server (aioquic, `keepwire/tests/support/
//! aioquic_h3_server.py`): the request goes over QUIC, `-v` shows the QUIC
//! handshake, its version and the 0-RTT outcome, the table's connect column
//! is the QUIC handshake, and 0-RTT is accepted on a resumed connection.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{WAIT, python_module, run};

const LIMIT: Duration = Duration::from_secs(30);

/// The aioquic origin, killed (by its PID) when dropped.
struct Aioquic {
    child: Child,
    port: u16,
    cert: String,
}

impl Drop for Aioquic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = std::path::Path::new(&self.cert).parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts the aioquic origin; `None` (after saying why) when python3 with
/// aioquic is missing and KEEPWIRE_SKIP_PEERS=1.
fn aioquic() -> Option<Aioquic> {
    if !python_module("aioquic") {
        return None;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../keepwire/tests/support/aioquic_h3_server.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut origin = Aioquic {
        child,
        port: 0,
        cert: String::new(),
    };
    let line = rx.recv_timeout(WAIT).expect("the aioquic origin's port");
    let (port, cert) = line.trim().split_once(' ').expect("PORT CERT");
    origin.port = port.parse().expect("a port");
    origin.cert = cert.to_string();
    Some(origin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn get_http3_only_speaks_quic_to_aioquic_and_says_so_with_v() {
    let Some(origin) = aioquic() else { return };
    let url = format!("https://localhost:{}/a", origin.port);
    let out = run(
        &[
            "get",
            "-v",
            "--http3-only",
            "--cacert",
            &origin.cert,
            "--show-body",
            "-w",
            "%{http_version}\\n",
            &url,
            &url,
        ],
        LIMIT,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("hello from aioquic /a"), "{stdout}");
    // %{http_version} is 3 for both.
    assert_eq!(stdout.lines().filter(|l| *l == "3").count(), 2, "{stdout}");
    for line in [
        "QUIC version 1, TLSv1.3, ALPN h3",
        "* #1 0-RTT: not tried",
        "* [HTTP/3] [0] [:method: GET]",
        "* [HTTP/3] [4] [:path: /a]",
        "> GET /a HTTP/3",
        "< HTTP/3 200",
        "< x-peer: aioquic",
        "* #2 connection #1 reused",
        "1 connection opened, 1 reused",
    ] {
        assert!(stderr.contains(line), "no {line:?} in:\n{stderr}");
    }
    // The connect column is the QUIC handshake (a number, not `-`), on
    // the first request only.
    let handshake = stderr
        .lines()
        .find(|l| l.contains("QUIC handshake"))
        .expect("a QUIC handshake line");
    assert!(handshake.contains(" ms,"), "{handshake}");
}

#[test]
fn early_data_goes_in_0rtt_on_the_resumed_connection() {
    let Some(origin) = aioquic() else { return };
    let url = format!("https://localhost:{}/e", origin.port);
    // Serial: a new connection per request, the second resuming the first.
    let out = run(
        &[
            "get",
            "-v",
            "--http3-only",
            "--early-data",
            "--strategy",
            "serial",
            "--cacert",
            &origin.cert,
            &url,
            &url,
        ],
        LIMIT,
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("* #1 0-RTT: not tried"), "{stderr}");
    assert!(
        stderr.contains("* #2 0-RTT: accepted (this request went in early data)"),
        "{stderr}"
    );
    // Without --early-data the resumed connection sends nothing early.
    let out = run(
        &[
            "get",
            "-v",
            "--http3-only",
            "--strategy",
            "serial",
            "--cacert",
            &origin.cert,
            &url,
            &url,
        ],
        LIMIT,
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("0-RTT: accepted"), "{stderr}");
}

#[test]
fn http3_only_fails_where_nothing_speaks_quic() {
    // A UDP port nobody listens on: the QUIC handshake times out.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    let url = format!("https://127.0.0.1:{port}/");
    let started = std::time::Instant::now();
    let out = run(
        &["get", "--http3-only", "-k", "--timeout", "500ms", &url],
        LIMIT,
    );
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("QUIC"), "{stderr}");
    // 0-RTT is QUIC's: alone, --early-data is a usage error.
    let out = run(&["get", "--early-data", &url], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--http3"));
}

/// `keepwire bench --http3`: the same report as `--http2` (connections,
/// streams per connection, errors by kind), over QUIC to aioquic; and a
/// run against a silent UDP port fails its preflight instead of hanging.
#[test]
fn bench_http3_reports_connections_and_errors_by_kind() {
    let Some(origin) = aioquic() else { return };
    let url = format!("https://localhost:{}/", origin.port);
    let out = run(
        &[
            "bench",
            "--http3",
            "--cacert",
            &origin.cert,
            "-c",
            "2",
            "--pipeline",
            "4",
            "-n",
            "60",
            &url,
            "--json",
        ],
        LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["responses"], 60, "{doc}");
    assert_eq!(doc["connections"], 2, "{doc}");
    assert_eq!(doc["error_total"], 0, "{doc}");
    assert_eq!(doc["statuses"]["200"], 60, "{doc}");
    assert!(
        doc["summary"]
            .as_str()
            .unwrap()
            .contains("HTTP/3 over QUIC, 4 streams")
    );
    for kind in ["connect", "reset", "timeout", "closed", "parse"] {
        assert_eq!(doc["errors"][kind], 0, "{kind}: {doc}");
    }

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    let url = format!("https://127.0.0.1:{port}/");
    let out = run(
        &[
            "bench",
            "--http3",
            "-k",
            "-n",
            "5",
            "--timeout",
            "500ms",
            &url,
        ],
        LIMIT,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("QUIC"), "{err}");
    // HTTP/3 is for https:// only.
    let out = run(
        &["bench", "--http3", "-n", "5", "http://127.0.0.1:1/"],
        LIMIT,
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--http3 needs an https:// URL"));
}

/// `keepwire proxy --upstream-http3` in front of aioquic: requests arrive
/// over HTTP/1.1, go upstream over HTTP/3, and the response says so in
/// `Via: 3 keepwire`; a POST body is relayed both ways.
#[test]
fn proxy_upstream_http3_relays_to_an_aioquic_origin() {
    let Some(origin) = aioquic() else { return };
    let upstream = format!("https://localhost:{}", origin.port);
    let proxy = common::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--upstream-http3",
        "--upstream-cacert",
        &origin.cert,
    ]);
    let url = format!("http://{}/through", proxy.addr);
    let out = run(&["get", "-i", &url], LIMIT);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("via: 3 keepwire"), "{stdout}");
    assert!(stdout.contains("x-peer: aioquic"), "{stdout}");
    assert!(stdout.contains("hello from aioquic /through"), "{stdout}");
    let out = run(&["get", "--show-body", "-d", "a=1&b=2", &url], LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a=1&b=2");
    drop(proxy);

    // HTTP/3 on both hops: the proxy's own QUIC listener in front.
    let proxy = common::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--tls-self-signed",
        "--upstream",
        &upstream,
        "--upstream-http3",
        "--upstream-cacert",
        &origin.cert,
    ]);
    let pem = self_signed_pem(&proxy);
    let url = format!("https://localhost:{}/both", proxy.addr.port());
    let out = run(
        &[
            "get",
            "-i",
            "--http3-only",
            "--cacert",
            &pem.0,
            "-d",
            "h3=h3",
            &url,
        ],
        LIMIT,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.starts_with("HTTP/3 200"), "{stdout}");
    assert!(stdout.contains("via: 3 keepwire"), "{stdout}");
    assert!(stdout.ends_with("h3=h3"), "{stdout}");
}

/// The PEM a `--tls-self-signed` child printed; its directory is removed
/// when this is dropped (the killed child cannot).
struct Pem(String);

impl Drop for Pem {
    fn drop(&mut self) {
        if let Some(dir) = std::path::Path::new(&self.0).parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn self_signed_pem(child: &common::Running) -> Pem {
    Pem(common::self_signed_pem(child)
        .to_string_lossy()
        .into_owned())
}

/// keepwire against itself: `keepwire serve --tls-self-signed` answers
/// HTTP/3 on the TCP port's number (--http3-only: a race lost to TCP on a
/// loaded machine would make the test flaky, the race is client_h3.rs's),
/// and the second connection's GET goes in 0-RTT, which the server takes.
#[test]
fn get_http3_against_keepwire_serve_resumes_in_0rtt() {
    let serve = common::serve(&["--tls-self-signed"]);
    let pem = self_signed_pem(&serve);
    let url = format!("https://localhost:{}/", serve.addr.port());
    let out = run(
        &[
            "get",
            "-v",
            "--http3",
            "--early-data",
            "--strategy",
            "serial",
            "--cacert",
            &pem.0,
            "-w",
            "%{http_version}\\n",
            &url,
            &url,
        ],
        LIMIT,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().filter(|l| *l == "3").count(), 2, "{stdout}");
    assert!(stderr.contains("< HTTP/3 200"), "{stderr}");
    assert!(
        stderr.contains("* #2 0-RTT: accepted (this request went in early data)"),
        "{stderr}"
    );
}
