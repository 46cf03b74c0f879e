//! `keepwire check proxy ADDR` as a user runs it: against `keepwire proxy`
//! (all PASS) and against deliberately broken proxies written here (the
//! checks for the rules they break FAIL, exit status non-zero): a dumb relay,
//! a length-fixing proxy, and a configurable proxy ([`Faults`]) that is
//! correct for the re-framing, pipelining, Via, CONNECT, upgrade and
//! smuggling checks unless told to break exactly one of them. Every child is
//! killed by its PID when a test ends; every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{BIN, WAIT, free_port, start};

/// Runs `keepwire check proxy ADDR --origin-port PORT --timeout 2s` plus
/// `extra` (e.g. `--only R7.2`), bounded in time.
fn check(addr: SocketAddr, origin_port: u16, extra: &[&str]) -> (Output, String) {
    let child = Command::new(BIN)
        .args(["check", "proxy", &addr.to_string()])
        .args(["--origin-port", &origin_port.to_string()])
        .args(["--timeout", "2s"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keepwire check starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(out) => out.expect("check output"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("keepwire check proxy did not finish within 90 s");
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Shown by `cargo test -- --nocapture` (and on failure).
    println!("{text}");
    (out, text)
}

/// The verdict printed for the check named `name`.
fn verdict<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.contains(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no line for {name:?} in:\n{report}"))
}

#[test]
fn keepwire_proxy_passes_every_check() {
    let origin_port = free_port();
    let port = origin_port.to_string();
    let proxy = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "--allow-destination",
        "127.0.0.0/8",
        "--connect-port",
        &port,
    ]);
    let (out, report) = check(proxy.addr, origin_port, &[]);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains(" FAIL "), "{report}");
    assert!(!report.contains(" WARN "), "{report}");
    assert!(report.contains("15 passed, 0 failed"), "{report}");
}

/// A proxy that answers but does not pass a plain GET to the recording
/// origin (here: loopback destinations refused by default) is one line
/// that says how to set it up, and exit 2, not a FAIL per check.
#[test]
fn a_proxy_that_does_not_forward_is_one_line() {
    let origin_port = free_port();
    let proxy = start(&["proxy", "--listen", "127.0.0.1:0", "--forward"]);
    let (out, report) = check(proxy.addr, origin_port, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{report}{stderr}");
    assert!(report.is_empty(), "no table: {report}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("403 Forbidden"), "{stderr}");
    assert!(
        stderr.contains("--allow-destination 127.0.0.1/32"),
        "{stderr}"
    );
    // A reverse proxy whose upstream is not the recording origin (502).
    let elsewhere = free_port();
    let reverse = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://127.0.0.1:{elsewhere}"),
    ]);
    let (out, _) = check(reverse.addr, origin_port, &["--reverse"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("502 Bad Gateway"), "{stderr}");
    let want = format!("a reverse proxy must forward to 127.0.0.1:{origin_port}");
    assert!(stderr.contains(&want), "{stderr}"); // A "proxy" that accepts and never answers: said so, without a set-up
    // hint that would not help.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let (out, _) = check(silent.local_addr().unwrap(), origin_port, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no response"), "{stderr}");
    assert!(!stderr.contains("--allow-destination"), "{stderr}");
}

/// A proxy that refuses CONNECT to the origin's port: SKIP, saying
/// which two flags let the check run.
#[test]
fn a_refused_connect_port_says_how_to_allow_it() {
    let origin_port = free_port();
    let proxy = start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "--allow-destination",
        "127.0.0.0/8",
    ]);
    let (out, report) = check(proxy.addr, origin_port, &["--only", "R9.3"]);
    assert!(out.status.success(), "{report}");
    assert_eq!(verdict(&report, "CONNECT tunnel"), "SKIP", "{report}");
    let want = format!("--connect-port {origin_port}, check proxy --origin-port {origin_port}");
    assert!(report.contains(&want), "{report}");
}

/// Reads until the end of a head; returns the bytes read (head and anything
/// after it), or None on EOF/error.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// Listens on loopback and runs `serve` for every client connection on its
/// own thread.
fn spawn_proxy(serve: fn(TcpStream, u16), origin_port: u16) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve(s, origin_port));
        }
    });
    addr
}

/// The dumb proxy of the book: forwards each request head verbatim
/// (Connection: Keep-Alive included) on a new upstream connection and copies
/// the answer back until the origin closes, and only then reads the next
/// request.
fn dumb_relay(mut client: TcpStream, origin_port: u16) {
    let _ = client.set_read_timeout(Some(WAIT));
    let mut buf = Vec::new();
    while read_head(&mut client, &mut buf).is_some() {
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", origin_port)) else {
            return;
        };
        let _ = up.set_read_timeout(Some(WAIT));
        if up.write_all(&buf).is_err() {
            return;
        }
        buf.clear();
        let mut tmp = [0u8; 8192];
        loop {
            match up.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client.write_all(&tmp[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A parsing proxy that strips nothing, retries any request (POST included)
/// once when the origin closes without answering, and "fixes" a truncated
/// body by padding it to its Content-Length.
fn fixing_proxy(mut client: TcpStream, origin_port: u16) {
    let _ = client.set_read_timeout(Some(WAIT));
    let mut buf = Vec::new();
    while let Some(end) = read_head(&mut client, &mut buf) {
        let want = end + content_length(&buf[..end]).unwrap_or(0);
        let mut tmp = [0u8; 8192];
        while buf.len() < want {
            match client.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let request: Vec<u8> = buf.drain(..want).collect();
        let mut answer = None;
        for _attempt in 0..2 {
            let Ok(mut up) = TcpStream::connect(("127.0.0.1", origin_port)) else {
                break;
            };
            let _ = up.set_read_timeout(Some(Duration::from_secs(2)));
            if up.write_all(&request).is_err() {
                continue;
            }
            let mut resp = Vec::new();
            let Some(head_end) = read_head(&mut up, &mut resp) else {
                continue;
            };
            match content_length(&resp[..head_end]) {
                Some(n) => {
                    while resp.len() < head_end + n {
                        match up.read(&mut tmp) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => resp.extend_from_slice(&tmp[..k]),
                        }
                    }
                    resp.resize(head_end + n, b'\0');
                }
                None => {
                    let _ = up.read_to_end(&mut resp);
                }
            }
            answer = Some(resp);
            break;
        }
        let answer = answer
            .unwrap_or_else(|| b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec());
        if client.write_all(&answer).is_err() {
            return;
        }
    }
}

#[test]
fn dumb_relay_fails_hop_by_hop_and_keep_alive_checks() {
    let origin_port = free_port();
    let addr = spawn_proxy(dumb_relay, origin_port);
    let (out, report) = check(addr, origin_port, &[]);
    assert!(!out.status.success(), "{report}");
    assert_eq!(
        verdict(&report, "hop-by-hop removed toward origin"),
        "FAIL",
        "{report}"
    );
    assert_eq!(
        verdict(&report, "hop-by-hop removed toward client"),
        "FAIL",
        "{report}"
    );
    assert_eq!(
        verdict(&report, "Proxy-Connection never forwarded"),
        "FAIL",
        "{report}"
    );
    assert_eq!(
        verdict(&report, "HTTP/1.0 keep-alive does not hang"),
        "FAIL",
        "{report}"
    );
    assert_eq!(
        verdict(&report, "truncated body passed on"),
        "FAIL",
        "{report}"
    );
    assert!(report.contains("Connection: X-Hop, keep-alive"), "{report}");
    assert!(
        report.lines().last().unwrap().ends_with("failed"),
        "{report}"
    );
    assert!(!report.contains(" 0 failed"), "{report}");
}

#[test]
fn fixing_proxy_fails_truncation_retry_and_hop_checks() {
    let origin_port = free_port();
    let addr = spawn_proxy(fixing_proxy, origin_port);
    let (out, report) = check(addr, origin_port, &[]);
    assert!(!out.status.success(), "{report}");
    assert_eq!(
        verdict(&report, "truncated body passed on"),
        "FAIL",
        "{report}"
    );
    assert_eq!(
        verdict(&report, "POST never delivered twice"),
        "FAIL",
        "{report}"
    );
    assert_eq!(
        verdict(&report, "hop-by-hop removed toward origin"),
        "FAIL",
        "{report}"
    );
    assert_eq!(
        verdict(&report, "hop-by-hop removed toward client"),
        "FAIL",
        "{report}"
    );
    assert!(report.contains("received the POST 2 times"), "{report}");
    assert!(report.contains("100 body bytes"), "{report}");
}

/// How the configurable proxy answers pipelined requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Pipelining {
    /// One at a time, in order (correct).
    #[default]
    InOrder,
    /// Collects up to three pipelined requests, then answers them last
    /// first.
    LastFirst,
    /// Answers the first request and ignores whatever was pipelined behind
    /// it (the connection stays open).
    FirstOnly,
}

/// What the configurable proxy does with `Connection: Upgrade`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Upgrading {
    /// Relays the upgrade and the origin's 101, then tunnels bytes (correct).
    #[default]
    Relay,
    /// Strips `Upgrade` (as a hop-by-hop field) and relays the origin's
    /// ordinary answer.
    Strip,
    /// Relays the 101, then never relays a byte.
    NoTunnel,
}

/// The one thing the configurable proxy gets wrong (nothing by default).
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Relays an HTTP/1.0 close-delimited response body unframed (no
    /// Content-Length, not chunked) and keeps the client connection open.
    unframed: bool,
    pipelining: Pipelining,
    /// Adds no Via.
    no_via: bool,
    /// Answers CONNECT with 200 and then relays nothing.
    connect_black_hole: bool,
    /// Frames requests the lenient way (chunked wins if `Transfer-Encoding`
    /// mentions it, else the first Content-Length) and forwards them verbatim
    /// on one upstream connection, instead of rejecting ambiguous framing.
    verbatim: bool,
    upgrading: Upgrading,
}

/// A parsed head: the first line's three parts and the fields.
struct Head {
    first: [String; 3],
    fields: Vec<(String, String)>,
}

impl Head {
    fn parse(head: &[u8]) -> Head {
        let text = String::from_utf8_lossy(head).into_owned();
        let mut lines = text.split("\r\n");
        let mut parts = lines.next().unwrap_or("").splitn(3, ' ');
        let first = [(); 3].map(|_| parts.next().unwrap_or("").to_string());
        let fields = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Head { first, fields }
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The fields without hop-by-hop ones (and those named in Connection).
    fn end_to_end(&self) -> Vec<(String, String)> {
        const HOP: &[&str] = &[
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
        ];
        let named: Vec<String> = self
            .all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        self.fields
            .iter()
            .filter(|(n, _)| {
                let n = n.to_ascii_lowercase();
                !HOP.contains(&n.as_str()) && !named.contains(&n)
            })
            .cloned()
            .collect()
    }
}

fn spawn_configurable(faults: Faults, origin_port: u16) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || configurable(s, origin_port, faults));
        }
    });
    addr
}

/// Reads into `buf` until it holds at least `want` bytes.
fn read_to(s: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> bool {
    let mut tmp = [0u8; 8192];
    while buf.len() < want {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    true
}

/// Copies bytes both ways until either side closes (or WAIT passes idle).
fn tunnel(mut client: TcpStream, mut up: TcpStream, pending: &[u8]) {
    let _ = up.set_read_timeout(Some(WAIT));
    if up.write_all(pending).is_err() {
        return;
    }
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), up.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut u2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut client, &mut up);
    let _ = up.shutdown(std::net::Shutdown::Write);
}

/// Reads and drops whatever the client sends until it closes.
fn sink(mut client: TcpStream) {
    let mut tmp = [0u8; 8192];
    while matches!(client.read(&mut tmp), Ok(n) if n > 0) {}
}

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";

/// A small threaded forward proxy: one upstream connection per request
/// (`Connection: close`), hop-by-hop fields removed both ways, Via added,
/// responses re-framed with Content-Length, ambiguous request framing
/// rejected with 400 and close, CONNECT and upgrades tunneled; unless
/// `faults` says otherwise.
fn configurable(mut client: TcpStream, origin_port: u16, faults: Faults) {
    let _ = client.set_read_timeout(Some(WAIT));
    if faults.verbatim {
        return verbatim(client, origin_port);
    }
    let mut buf = Vec::new();
    while let Some(end) = read_head(&mut client, &mut buf) {
        let head = Head::parse(&buf[..end]);
        if head.first[0] == "CONNECT" {
            let Ok(up) = TcpStream::connect(head.first[1].as_str()) else {
                let _ = client.write_all(BAD_GATEWAY);
                return;
            };
            let _ = client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
            if faults.connect_black_hole {
                return sink(client);
            }
            return tunnel(client, up, &buf[end..]);
        }
        if head.has_token("connection", "upgrade")
            && !head.all("upgrade").is_empty()
            && faults.upgrading != Upgrading::Strip
        {
            return upgrade(client, origin_port, &head, &buf[end..], faults);
        }
        let lengths = head.all("content-length");
        if !head.all("transfer-encoding").is_empty() || lengths.len() > 1 {
            let _ = client.write_all(BAD_REQUEST);
            return;
        }
        let Some(len) = lengths.first().map_or(Some(0), |v| v.parse::<usize>().ok()) else {
            let _ = client.write_all(BAD_REQUEST);
            return;
        };
        if !read_to(&mut client, &mut buf, end + len) {
            return;
        }
        let mut batch = vec![(head, buf[end..end + len].to_vec())];
        buf.drain(..end + len);
        if faults.pipelining == Pipelining::LastFirst {
            // Wait a little for more pipelined (bodiless) requests.
            let _ = client.set_read_timeout(Some(Duration::from_millis(500)));
            while batch.len() < 3 {
                let Some(end) = read_head(&mut client, &mut buf) else {
                    break;
                };
                batch.push((Head::parse(&buf[..end]), Vec::new()));
                buf.drain(..end);
            }
            let _ = client.set_read_timeout(Some(WAIT));
        }
        let mut answers: Vec<(Vec<u8>, bool)> = batch
            .iter()
            .map(|(head, body)| forward(origin_port, head, body, faults))
            .collect();
        if faults.pipelining == Pipelining::LastFirst {
            answers.reverse();
        }
        for (answer, close) in answers {
            if client.write_all(&answer).is_err() || close {
                return;
            }
        }
        if faults.pipelining == Pipelining::FirstOnly && !buf.is_empty() {
            // The pipelined rest is never answered.
            return sink(client);
        }
    }
}

/// Forwards one request on a new upstream connection; returns the answer for
/// the client and whether to close the client connection after it.
fn forward(origin_port: u16, head: &Head, body: &[u8], faults: Faults) -> (Vec<u8>, bool) {
    let [method, target, version] = &head.first;
    let ka10 = version == "HTTP/1.0" && head.has_token("connection", "keep-alive");
    let close = head.has_token("connection", "close") || (version == "HTTP/1.0" && !ka10);
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    for (n, v) in head.end_to_end() {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !faults.no_via {
        req.push_str("Via: 1.1 testproxy\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", origin_port)) else {
        return (BAD_GATEWAY.to_vec(), close);
    };
    let _ = up.set_read_timeout(Some(Duration::from_secs(2)));
    let mut resp = Vec::new();
    if up.write_all(&req).is_err() || up.read_to_end(&mut resp).is_err() {
        return (BAD_GATEWAY.to_vec(), close);
    }
    let Some(end) = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
    else {
        return (BAD_GATEWAY.to_vec(), close);
    };
    let rh = Head::parse(&resp[..end]);
    let got = &resp[end..];
    let mut out = format!("HTTP/1.1 {} {}\r\n", rh.first[1], rh.first[2]);
    for (n, v) in rh.end_to_end() {
        if !n.eq_ignore_ascii_case("content-length") {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    if ka10 {
        out.push_str("Connection: keep-alive\r\n");
    }
    let declared = content_length(&resp[..end]);
    let (body, close) = match declared {
        // Truncated: pass on what came, then close.
        Some(n) if got.len() < n => (got, true),
        Some(n) => (&got[..n], close),
        // Close-delimited: re-framed below, unless the fault says not to.
        None => (got, close),
    };
    if declared.is_some() || !faults.unframed {
        let n = declared.unwrap_or(body.len());
        out.push_str(&format!("Content-Length: {n}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    (out, close)
}

/// Relays an upgrade request (Connection: Upgrade and Upgrade kept), the
/// origin's answer head, and then the bytes both ways (unless the fault is
/// `NoTunnel`).
fn upgrade(mut client: TcpStream, origin_port: u16, head: &Head, pending: &[u8], faults: Faults) {
    let [method, target, _] = &head.first;
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    for (n, v) in head.end_to_end() {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    for v in head.all("upgrade") {
        req.push_str(&format!("Upgrade: {v}\r\n"));
    }
    req.push_str("Connection: Upgrade\r\nVia: 1.1 testproxy\r\n\r\n");
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", origin_port)) else {
        let _ = client.write_all(BAD_GATEWAY);
        return;
    };
    let _ = up.set_read_timeout(Some(WAIT));
    if up.write_all(req.as_bytes()).is_err() {
        return;
    }
    let mut resp = Vec::new();
    if read_head(&mut up, &mut resp).is_none() || client.write_all(&resp).is_err() {
        return;
    }
    if faults.upgrading == Upgrading::NoTunnel {
        return sink(client);
    }
    tunnel(client, up, pending);
}

/// The `verbatim` fault: requests framed leniently and forwarded byte for
/// byte on one upstream connection; one response relayed per request.
fn verbatim(mut client: TcpStream, origin_port: u16) {
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", origin_port)) else {
        return;
    };
    let _ = up.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut ubuf = Vec::new();
    while let Some(end) = read_head(&mut client, &mut buf) {
        let head = Head::parse(&buf[..end]);
        let want = if head.has_token("transfer-encoding", "chunked") {
            loop {
                if let Some(i) = buf[end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    break end + i + 5;
                }
                let have = buf.len();
                if !read_to(&mut client, &mut buf, have + 1) {
                    return;
                }
            }
        } else {
            let first = head.all("content-length").first().map(|v| v.to_string());
            end + first.and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        if !read_to(&mut client, &mut buf, want) || up.write_all(&buf[..want]).is_err() {
            return;
        }
        buf.drain(..want);
        let Some(rend) = read_head(&mut up, &mut ubuf) else {
            let _ = client.write_all(BAD_GATEWAY);
            return;
        };
        let n = rend + content_length(&ubuf[..rend]).unwrap_or(0);
        if !read_to(&mut up, &mut ubuf, n) || client.write_all(&ubuf[..n]).is_err() {
            return;
        }
        ubuf.drain(..n);
    }
}

/// Runs the checks of `only` against the configurable proxy with `faults`.
fn check_faulty(faults: Faults, only: &str) -> (Output, String) {
    let origin_port = free_port();
    let addr = spawn_configurable(faults, origin_port);
    check(addr, origin_port, &["--only", only])
}

/// Asserts that the run failed (non-zero exit) because of the line `name`.
fn assert_fails(out: &Output, report: &str, name: &str) {
    assert_eq!(verdict(report, name), "FAIL", "{report}");
    assert!(!out.status.success(), "{report}");
    assert!(!report.contains(" 0 failed"), "{report}");
}

/// Without faults, the configurable proxy passes every check the faults
/// below break: each FAIL below is caused by its fault alone.
#[test]
fn configurable_proxy_without_faults_passes() {
    let origin_port = free_port();
    let addr = spawn_configurable(Faults::default(), origin_port);
    let (_, report) = check(addr, origin_port, &[]);
    for name in [
        "close-delimited response re-framed",
        "pipelined responses in order",
        "Via added",
        "CONNECT tunnel relays bytes",
        "upgrade relayed, bytes tunneled",
        "TE + CL not passed on",
        "differing Content-Length not passed on",
        "non-final chunked not passed on",
        "invalid chunk size not passed on",
    ] {
        assert_eq!(verdict(&report, name), "PASS", "{name}:\n{report}");
    }
}

#[test]
fn unframed_close_delimited_relay_fails_reframe() {
    let faults = Faults {
        unframed: true,
        ..Faults::default()
    };
    let (out, report) = check_faulty(faults, "R5.4");
    assert_fails(&out, &report, "close-delimited response re-framed");
    assert!(
        report.contains("neither Content-Length nor chunked"),
        "{report}"
    );
}

#[test]
fn out_of_order_pipelining_fails() {
    let faults = Faults {
        pipelining: Pipelining::LastFirst,
        ..Faults::default()
    };
    let (out, report) = check_faulty(faults, "R7.2");
    assert_fails(&out, &report, "pipelined responses in order");
    assert!(report.contains("response 1 is"), "{report}");
}

#[test]
fn answering_only_the_first_pipelined_request_fails() {
    let faults = Faults {
        pipelining: Pipelining::FirstOnly,
        ..Faults::default()
    };
    let (out, report) = check_faulty(faults, "R7.2");
    assert_fails(&out, &report, "pipelined responses in order");
    assert!(
        report.contains("1 of 3 pipelined requests answered"),
        "{report}"
    );
}

/// Via is a SHOULD: a missing one is a WARN, never a FAIL.
#[test]
fn missing_via_warns() {
    let faults = Faults {
        no_via: true,
        ..Faults::default()
    };
    let (out, report) = check_faulty(faults, "R6.3");
    assert_eq!(verdict(&report, "Via added"), "WARN", "{report}");
    assert!(report.contains("origin saw no Via"), "{report}");
    assert!(out.status.success(), "{report}");
}

#[test]
fn connect_without_relay_fails() {
    let faults = Faults {
        connect_black_hole: true,
        ..Faults::default()
    };
    let (out, report) = check_faulty(faults, "R9.3");
    assert_fails(&out, &report, "CONNECT tunnel relays bytes");
}

/// Every smuggling vector, forwarded verbatim, puts `GET /kw/smuggled/N` in
/// front of the origin as a request of its own.
#[test]
fn verbatim_forwarding_fails_every_smuggling_check() {
    let faults = Faults {
        verbatim: true,
        ..Faults::default()
    };
    let (out, report) = check_faulty(faults, "R10.1");
    for name in [
        "TE + CL not passed on",
        "differing Content-Length not passed on",
        "non-final chunked not passed on",
        "invalid chunk size not passed on",
    ] {
        assert_fails(&out, &report, name);
    }
    assert_eq!(
        report
            .matches("the smuggled request reached the origin")
            .count(),
        4,
        "{report}"
    );
}

/// Declining an upgrade (relaying the origin's ordinary answer) is allowed
/// but reported.
#[test]
fn stripped_upgrade_warns() {
    let faults = Faults {
        upgrading: Upgrading::Strip,
        ..Faults::default()
    };
    let (out, report) = check_faulty(faults, "R9.1");
    assert_eq!(verdict(&report, "upgrade relayed"), "WARN", "{report}");
    assert!(report.contains("origin saw no Upgrade field"), "{report}");
    assert!(out.status.success(), "{report}");
}

#[test]
fn upgrade_without_tunnel_fails() {
    let faults = Faults {
        upgrading: Upgrading::NoTunnel,
        ..Faults::default()
    };
    let (out, report) = check_faulty(faults, "R9.1");
    assert_fails(&out, &report, "upgrade relayed");
    assert!(report.contains("101 Switching Protocols"), "{report}");
}
