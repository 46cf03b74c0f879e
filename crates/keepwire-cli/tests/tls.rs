//! `keepwire serve` and `keepwire proxy` over TLS (rustls): HTTP/2 or
//! HTTP/1.1 by ALPN, checked with curl (certificates verified with
//! --cacert / --proxy-cacert), ab, h2load and `keepwire get`.

mod common;

use std::time::Duration;

use common::{TlsRunning, run, run_env, self_signed_pem, start};

const LIMIT: Duration = Duration::from_secs(60);

/// A self-signed HTTPS server and the PEM of its certificate.
fn serve_tls() -> (TlsRunning, String) {
    start_tls(&["serve", "--listen", "127.0.0.1:0", "--tls-self-signed"])
}

/// `keepwire ARGS` (with `--tls-self-signed` among them) and the PEM of its
/// certificate.
fn start_tls(args: &[&str]) -> (TlsRunning, String) {
    let s = start(args);
    assert!(s.first_line.contains("https://"), "{}", s.first_line);
    let pem = self_signed_pem(&s);
    let s = TlsRunning { run: s, pem };
    assert_private(&s.pem);
    let pem = s.pem.to_string_lossy().into_owned();
    (s, pem)
}

/// The PEM is a regular file of mode 0600 in a directory of its own
/// (0700) with a random name, not the old predictable
/// `keepwire-selfsigned-PID.pem`.
fn assert_private(pem: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::symlink_metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
    };
    let dir = pem.parent().expect("a directory");
    assert_eq!(mode(pem) & 0o170_777, 0o100_600, "{}", pem.display());
    assert_eq!(mode(dir) & 0o170_777, 0o040_700, "{}", dir.display());
    assert!(pem.ends_with("cert.pem"), "{}", pem.display());
}

/// Runs `keepwire ARGS`, which must succeed, and parses its JSON output.
fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The command failed, and said the certificate was why.
fn refused_for_the_certificate(out: &std::process::Output) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(err.contains("certificate"), "{err}");
}

fn tool(name: &str, args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new(name).args(args).output() {
        Ok(o) => Some(o),
        Err(_) if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") => {
            eprintln!("skipping: {name} not installed");
            None
        }
        Err(e) => panic!("{name}: {e} (scripts/test installs it)"),
    }
}

#[test]
fn curl_gets_http2_over_tls_with_the_certificate_verified() {
    let (s, pem) = serve_tls();
    // Wait for the file: it is written before the listening line.
    assert!(std::path::Path::new(&pem).exists(), "{pem}");
    let url = format!("https://localhost:{}/obj/1.css", s.addr.port());
    let Some(out) = curl_w(&["--http2", "--cacert", &pem], &[&url]) else {
        return;
    };
    assert_eq!(out, "2 200 4096 1\n");
}

/// `curl -sS FLAGS URL...` with each body discarded; one line per transfer:
/// version, status, size, new connections. `None`: curl is not installed
/// (and that is allowed).
fn curl_w(flags: &[&str], urls: &[&str]) -> Option<String> {
    let mut args = vec!["-sS"];
    args.extend_from_slice(flags);
    for url in urls {
        args.extend_from_slice(&["-o", "/dev/null", url]);
    }
    let w = "%{http_version} %{http_code} %{size_download} %{num_connects}\n";
    args.extend_from_slice(&["-w", w]);
    let out = tool("curl", &args)?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn http1_over_tls_keeps_the_connection_alive() {
    let (s, pem) = serve_tls();
    let base = format!("https://localhost:{}", s.addr.port());
    let (a, b) = (format!("{base}/obj/1.css"), format!("{base}/obj/4.css"));
    // ALPN http/1.1: the second request rides the first connection.
    let Some(out) = curl_w(&["--http1.1", "--cacert", &pem], &[&a, &b]) else {
        return;
    };
    assert_eq!(out, "1.1 200 4096 1\n1.1 200 4096 0\n");
    // No ALPN at all: HTTP/1.1, TLS's default.
    let out = curl_w(&["--http1.1", "--no-alpn", "--cacert", &pem], &[&a]).unwrap();
    assert_eq!(out, "1.1 200 4096 1\n");
    // ab -k over TLS: every request succeeds and is kept alive.
    let url = format!("https://127.0.0.1:{}/obj/1.css", s.addr.port());
    let out = tool("ab", &["-q", "-k", "-n", "2000", "-c", "8", &url]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Complete requests:      2000"), "{text}");
    assert!(text.contains("Failed requests:        0"), "{text}");
    assert!(text.contains("Keep-Alive requests:    2000"), "{text}");
}

#[test]
fn keepwire_get_speaks_http1_over_tls_when_asked() {
    let (s, pem) = serve_tls();
    let page = format!("https://localhost:{}/", s.addr.port());
    for flags in [&["--http1.1"][..], &["--strategy", "pipelined"][..]] {
        let mut argv = vec!["get", "--json", "--page", "--cacert", &pem];
        argv.extend_from_slice(flags);
        argv.push(&page);
        let doc = json(&argv);
        assert_eq!(doc["summary"]["succeeded"], 13, "{flags:?} {doc}");
        let opened = doc["summary"]["connections_opened"].as_u64().unwrap();
        assert!((1..=6).contains(&opened), "{flags:?}: {opened} connections");
        let reqs = doc["requests"].as_array().unwrap();
        assert!(
            reqs.iter().all(|r| r["version"] == "HTTP/1.1"),
            "{flags:?} {doc}"
        );
        // What TLS agreed on, per connection (curl -v's "ALPN: ...").
        let tls = &reqs[0]["connection"]["tls"];
        assert_eq!(tls["alpn"], "http/1.1", "{flags:?} {doc}");
        assert_eq!(tls["version"], "TLSv1_3", "{flags:?} {doc}");
    }
}

#[test]
fn https_through_the_proxy_with_connect() {
    let (o, origin_pem) = serve_tls();
    let port = o.addr.port().to_string();
    let url = format!("https://localhost:{port}/obj/1.css");
    // A cleartext forward proxy: CONNECT, then TLS end to end (the origin's
    // certificate is verified through the tunnel).
    let p = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "--allow-destination",
        "127.0.0.0/8",
        "--allow-destination",
        "::1/128",
        "--connect-port",
        &port,
    ]);
    let proxy = format!("http://127.0.0.1:{}", p.addr.port());
    let Some(out) = curl_w(&["-x", &proxy, "--cacert", &origin_pem], &[&url]) else {
        return;
    };
    assert_eq!(out, "2 200 4096 1\n");
    // An HTTPS forward proxy: TLS to the proxy (verified with
    // --proxy-cacert), CONNECT inside it, TLS to the origin inside that.
    let (tp, proxy_pem) = start_tls(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "--tls-self-signed",
        "--allow-destination",
        "127.0.0.0/8",
        "--allow-destination",
        "::1/128",
        "--connect-port",
        &port,
    ]);
    let proxy = format!("https://localhost:{}", tp.addr.port());
    let flags = [
        "-x",
        &proxy,
        "--proxy-cacert",
        &proxy_pem,
        "--cacert",
        &origin_pem,
    ];
    let out = curl_w(&flags, &[&url]).unwrap();
    assert_eq!(out, "2 200 4096 1\n");
    // Without the proxy's CA the proxy is refused (curl names the cause).
    let out = tool(
        "curl",
        &["-sS", "-x", &proxy, "--cacert", &origin_pem, &url],
    )
    .unwrap();
    refused_for_the_certificate(&out);
}

#[test]
fn an_https_reverse_proxy_speaks_h1_or_h2_to_clients_and_h2_upstream() {
    let (o, origin_pem) = serve_tls();
    let upstream = format!("https://localhost:{}", o.addr.port());
    let (p, proxy_pem) = start_tls(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--tls-self-signed",
        "--upstream",
        &upstream,
        "--upstream-cacert",
        &origin_pem,
    ]);
    let url = format!("https://localhost:{}/obj/1.css", p.addr.port());
    for (flag, version) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2")] {
        let Some(out) = tool("curl", &["-sS", flag, "--cacert", &proxy_pem, "-i", &url]) else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            text.starts_with(&format!("{} 200", version.to_ascii_lowercase())),
            "{text}"
        );
        // The upstream answered over HTTP/2 (ALPN), and Via says so.
        assert!(text.contains("via: 2 keepwire"), "{text}");
        // No connection-specific field reaches an HTTP/2 client.
        if version == "HTTP/2" {
            assert!(
                !text.contains("\nconnection:") && !text.contains("keep-alive"),
                "{text}"
            );
        }
        assert!(text.contains("/* keepwire object 1 */"), "{text}");
    }
    // An upstream whose certificate the proxy cannot verify: 502 with a
    // reason, not a hang.
    let (bad, _) = start_tls(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--tls-self-signed",
        "--upstream",
        &upstream,
    ]);
    let url = format!("https://127.0.0.1:{}/obj/1.css", bad.addr.port());
    let out = tool("curl", &["-sS", "-k", "-i", &url]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/2 502") || text.starts_with("HTTP/1.1 502"),
        "{text}"
    );
    // The reason is the operator's (stderr), not the client's.
    assert!(!text.to_ascii_lowercase().contains("certificate"), "{text}");
    assert!(bad.line_with("502 upstream:").contains("certificate"));
}

#[test]
fn h2load_over_tls_runs_without_errors() {
    let (s, _pem) = serve_tls();
    let url = format!("https://127.0.0.1:{}/", s.addr.port());
    let Some(out) = tool("h2load", &["-n", "500", "-c", "4", "-m", "10", &url]) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("500 total, 500 started, 500 done, 500 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("TLS Protocol: TLSv1.3"), "{text}");
}

#[test]
fn bad_certificate_files_fail_with_the_cause() {
    let out = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ],
        LIMIT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert /nonexistent.pem"), "{err}");
    let out = run(
        &["serve", "--listen", "127.0.0.1:0", "--tls-cert", "/x.pem"],
        LIMIT,
    );
    assert!(!out.status.success(), "--tls-cert needs --tls-key");
}

#[test]
fn keepwire_get_speaks_http2_over_tls_and_verifies_the_server() {
    let (s, pem) = serve_tls();
    let page = format!("https://localhost:{}/", s.addr.port());
    let doc = json(&["get", "--json", "--page", "--cacert", &pem, &page]);
    assert_eq!(doc["summary"]["succeeded"], 13, "{doc}");
    assert_eq!(doc["summary"]["connections_opened"], 1, "{doc}");
    let reqs = doc["requests"].as_array().unwrap();
    assert!(reqs.iter().all(|r| r["version"] == "HTTP/2.0"), "{doc}");
    assert_eq!(reqs[0]["connection"]["tls"]["alpn"], "h2", "{doc}");
    // -v says it as curl does, once per new connection.
    let out = run(&["get", "-v", "--cacert", &pem, &page], LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("* #1 TLS TLSv1_3 "), "{err}");
    assert!(err.contains(", ALPN h2"), "{err}");
    // -k skips verification; without it and without --cacert the
    // self-signed certificate is refused, with the reason.
    let out = run(&["get", "-k", &page], LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["get", &page], LIMIT);
    refused_for_the_certificate(&out);
}

#[test]
fn keepwire_bench_runs_over_tls_with_http1_and_http2() {
    let (s, pem) = serve_tls();
    let url = format!("https://localhost:{}/obj/1.css", s.addr.port());
    let cases: [(&[&str], u64); 3] = [
        (&[], 4),
        (&["--http2", "--pipeline", "8"], 4),
        (&["--keep-alive", "off"], 300),
    ];
    for (flags, connections) in cases {
        let mut argv = vec!["bench", "--json", "-c", "4", "-n", "300", "--cacert", &pem];
        argv.extend_from_slice(flags);
        argv.push(&url);
        let doc = json(&argv);
        assert_eq!(doc["responses"], 300, "{flags:?} {doc}");
        assert_eq!(doc["statuses"]["200"], 300, "{flags:?} {doc}");
        assert_eq!(doc["connections"], connections, "{flags:?} {doc}");
    }
    // An unverifiable certificate fails before any load, with the cause.
    let out = run(&["bench", "-n", "10", &url], LIMIT);
    refused_for_the_certificate(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS: "));
}

#[test]
fn the_default_trust_is_the_platform_store() {
    let (s, pem) = serve_tls();
    let url = format!("https://localhost:{}/obj/1.css", s.addr.port());
    // The platform store, pointed at our certificate the standard way
    // (OpenSSL's SSL_CERT_FILE): verified without --cacert.
    let env = [
        ("SSL_CERT_FILE", pem.as_str()),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];
    let out = run_env(&["get", &url], &env, LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_env(
        &["bench", "-n", "20", "-c", "2", &url, "--json"],
        &env,
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A store that lacks it (the system's own, here) refuses it.
    let out = run(&["get", &url], LIMIT);
    assert!(!out.status.success());
}

#[test]
fn the_self_signed_pem_is_removed_on_a_clean_exit() {
    let (mut s, pem) = serve_tls();
    let dir = std::path::Path::new(&pem).parent().unwrap().to_path_buf();
    assert!(dir.is_dir());
    // Once it has answered, it is in its run loop and handles SIGTERM (a
    // signal before that would kill it uncleanly).
    let url = format!("https://localhost:{}/obj/1.css", s.addr.port());
    let Some(out) = curl_w(&["--cacert", &pem], &[&url]) else {
        return;
    };
    assert!(out.contains(" 200 "), "{out}");
    let pid = s.child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + common::WAIT;
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean exit: {status}");
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

/// One request on a new connection to `addr`, read to the end (the
/// request says `Connection: close`).
fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, LIMIT).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn upstream_insecure_trusts_configured_upstreams_never_forward_origins() {
    let (o, _pem) = serve_tls();
    let port = o.addr.port();
    // Forward mode, loopback opened, --upstream-insecure: an https://
    // target the proxy fetches itself is still verified (and fails).
    let p = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "--upstream-insecure",
        "--allow-destination",
        "127.0.0.0/8",
        "--allow-destination",
        "::1/128",
    ]);
    let text = raw_exchange(
        p.addr,
        &format!(
            "GET https://localhost:{port}/obj/1.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(p.line_with("502 upstream:").contains("certificate"));
    // The same origin as a configured upstream: the flag applies.
    let r = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("https://localhost:{port}"),
        "--upstream-insecure",
    ]);
    let text = raw_exchange(
        r.addr,
        "GET /obj/1.css HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("/* keepwire object 1 */"), "{text}");
}

/// A configured https:// upstream whose certificate is not trusted: the
/// client gets a 502, the operator a log line with the next step.
#[test]
fn an_untrusted_upstream_certificate_tells_the_operator_what_to_do() {
    let (o, _pem) = serve_tls();
    let upstream = format!("https://localhost:{}", o.addr.port());
    let p = start(&["proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream]);
    let text = raw_exchange(
        p.addr,
        "GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    let line = p.line_with("--upstream-cacert");
    assert!(
        line.contains("--upstream-cacert FILE") && line.contains("--upstream-insecure"),
        "{line}"
    );
}
