//! `keepwire check proxy ADDR` as a user runs it: against `keepwire proxy`
//! (all PASS) and against two deliberately broken proxies written here (the
//! checks for the rules they break FAIL, exit status non-zero). Every child
//! is killed by its PID when a test ends; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_keepwire");
const WAIT: Duration = Duration::from_secs(10);

/// A running `keepwire proxy`, killed by PID when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the keepwire binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = match rx.recv_timeout(WAIT) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keepwire {args:?} printed no address within {WAIT:?}: {e}");
        }
    };
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    Running { child, addr }
}

/// A port that was free a moment ago (for the checker's recording origin).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `keepwire check proxy ADDR --origin-port PORT`, bounded in time.
fn check(addr: SocketAddr, origin_port: u16) -> (Output, String) {
    let child = Command::new(BIN)
        .args(["check", "proxy", &addr.to_string()])
        .args(["--origin-port", &origin_port.to_string()])
        .args(["--timeout", "2s"])
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
        "--connect-port",
        &port,
    ]);
    let (out, report) = check(proxy.addr, origin_port);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains(" FAIL "), "{report}");
    assert!(report.contains("11 passed, 0 failed"), "{report}");
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
    let (out, report) = check(addr, origin_port);
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
    let (out, report) = check(addr, origin_port);
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
