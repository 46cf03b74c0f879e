//! `keepwire serve` over TLS (rustls): HTTP/2 by ALPN, checked with curl
//! (certificate verified with --cacert) and h2load; what it does not speak
//! yet (HTTP/1.1 over TLS) is refused with a clear error.

mod common;

use std::time::Duration;

use common::{Running, run, start};

const LIMIT: Duration = Duration::from_secs(60);

/// A self-signed HTTPS server and the PEM of its certificate.
fn serve_tls() -> (Running, String) {
    let s = start(&["serve", "--listen", "127.0.0.1:0", "--tls-self-signed"]);
    assert!(s.first_line.contains("https://"), "{}", s.first_line);
    let pem = std::env::temp_dir()
        .join(format!("keepwire-selfsigned-{}.pem", s.child.id()))
        .display()
        .to_string();
    (s, pem)
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
    let Some(out) = tool(
        "curl",
        &[
            "-s",
            "--http2",
            "--cacert",
            &pem,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code} %{size_download}",
            &url,
        ],
    ) else {
        return;
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200 4096",
        "{out:?}"
    );
}

#[test]
fn http1_over_tls_is_refused_with_a_reason() {
    let (s, _pem) = serve_tls();
    let url = format!("https://127.0.0.1:{}/", s.addr.port());
    // Offering only http/1.1 by ALPN: the handshake fails with an alert.
    let Some(out) = tool("curl", &["-s", "-S", "-k", "--http1.1", &url]) else {
        return;
    };
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(
        err.contains("alert") || err.contains("application protocol"),
        "{err}"
    );
    // No ALPN at all: a 505 that says what to use instead.
    let out = tool("curl", &["-s", "-k", "--http1.1", "--no-alpn", "-i", &url]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 505"), "{text}");
    assert!(text.contains("use HTTP/2"), "{text}");
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
    let out = run(&["get", "--json", "--page", "--cacert", &pem, &page], LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["succeeded"], 13, "{doc}");
    assert_eq!(doc["summary"]["connections_opened"], 1, "{doc}");
    let reqs = doc["requests"].as_array().unwrap();
    assert!(reqs.iter().all(|r| r["version"] == "HTTP/2.0"), "{doc}");
    // -k skips verification; without it and without --cacert the
    // self-signed certificate is refused, with the reason.
    let out = run(&["get", "-k", &page], LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["get", &page], LIMIT);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(err.contains("certificate"), "{err}");
}
