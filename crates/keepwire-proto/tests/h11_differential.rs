//! keepwire-proto against an independent HTTP/1.1 parser, Python's h11.
//!
//! Two implementations written from the same RFC disagree exactly where
//! one of them (or the RFC's leeway) lets a request be read two ways, which
//! is where smuggling lives. `tests/h11_diff.py` generates request streams
//! (seeded, bounded) and compares; this test is keepwire's side: it reads
//! the cases the script prints, runs each through a server `Conn` and
//! answers with one JSON line per case (messages read, error, whether
//! reading stopped for persistence). Any disagreement the script's
//! allow-list does not justify fails the test.
//!
//! Skipped (with a note) when `python3` is absent, or when h11 is missing
//! and cannot be installed. `KEEPWIRE_H11_CASES` and `KEEPWIRE_H11_SEED`
//! override the defaults (2,000 cases, seed 14).

mod common;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Answer, Driver};
use http::{HeaderMap, Method, Version};
use keepwire_proto::{ConnConfig, Event};

const DEFAULT_CASES: usize = 2000;
/// Response streams, read by a client `Conn` after 1–3 requests.
const RESPONSE_CASES: usize = 1000;
const DEADLINE: Duration = Duration::from_secs(120);

/// Kills the driver if the test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from the driver"))
        .collect()
}

fn fields_json(map: &HeaderMap, out: &mut String) {
    out.push('[');
    for (i, (n, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "[\"{}\",\"{}\"]",
            hex(n.as_str().as_bytes()),
            hex(v.as_bytes())
        );
    }
    out.push(']');
}

/// keepwire's verdict on one request stream, as the JSON line the driver
/// reads: every message read completely, the error (if any), and whether
/// reading stopped because the last exchange ends the connection.
fn verdict(case: &[u8]) -> String {
    run(Driver::server(ConnConfig::default(), Answer::OnEnd), case)
}

/// The same for a response stream read by a client that sent `methods`.
fn response_verdict(methods: &str, case: &[u8]) -> String {
    let methods: Vec<Method> = methods.split(',').map(|m| m.parse().unwrap()).collect();
    run(Driver::client(ConnConfig::default(), &methods), case)
}

fn run(mut d: Driver, case: &[u8]) -> String {
    d.feed(case);
    // Before EOF: did the last exchange end the connection?
    let close = d.error.is_none() && d.conn.should_close();
    d.eof();
    let mut msgs = Vec::new();
    let mut cur: Option<(String, Vec<u8>)> = None;
    for ev in &d.events {
        match ev {
            Event::Request { head, .. } => {
                let mut m = String::new();
                let version = if head.version == Version::HTTP_10 {
                    "1.0"
                } else {
                    "1.1"
                };
                let _ = write!(
                    m,
                    "{{\"method\":\"{}\",\"target\":\"{}\",\"version\":\"{version}\",\"headers\":",
                    hex(head.method.as_str().as_bytes()),
                    hex(head.target.to_string().as_bytes()),
                );
                fields_json(&head.headers, &mut m);
                cur = Some((m, Vec::new()));
            }
            Event::Data(b) => cur
                .as_mut()
                .expect("data in a message")
                .1
                .extend_from_slice(b),
            Event::End(trailers) => {
                let (mut m, body) = cur.take().expect("end of a message");
                let _ = write!(m, ",\"body\":\"{}\",\"trailers\":", hex(&body));
                fields_json(trailers.as_ref().unwrap_or(&HeaderMap::new()), &mut m);
                m.push('}');
                msgs.push(m);
            }
            Event::Response { head, .. } => {
                let mut m = String::new();
                let version = if head.version == Version::HTTP_10 {
                    "1.0"
                } else {
                    "1.1"
                };
                let _ = write!(
                    m,
                    "{{\"status\":{},\"version\":\"{version}\",\"headers\":",
                    head.status.as_u16()
                );
                fields_json(&head.headers, &mut m);
                // A 1xx has no End: the final response replaces it.
                cur = Some((m, Vec::new()));
            }
            Event::Eof => {}
        }
    }
    let error = match &d.error {
        Some(e) => format!(
            "\"{}\"",
            format!("{:?}", e.kind()).replace(['"', '\\'], "'")
        ),
        None => "null".into(),
    };
    format!(
        "{{\"msgs\":[{}],\"error\":{error},\"close\":{close}}}",
        msgs.join(",")
    )
}

#[test]
fn keepwire_and_h11_agree_on_request_streams() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h11_diff.py");
    let cases = std::env::var("KEEPWIRE_H11_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed = std::env::var("KEEPWIRE_H11_SEED").unwrap_or_else(|_| "14".into());
    let child = match Command::new("python3")
        .arg(script)
        .args(["--cases", &cases.to_string(), "--seed", &seed])
        .args(["--response-cases", &RESPONSE_CASES.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP: no python3 ({e})");
            return;
        }
    };
    let mut guard = Guard(child);
    let started = Instant::now();
    let mut stdin = guard.0.stdin.take().unwrap();
    let stdout = BufReader::new(guard.0.stdout.take().unwrap());
    let mut answers = String::new();
    let mut n = 0;
    for line in stdout.lines() {
        let line = line.expect("driver output");
        assert!(started.elapsed() < DEADLINE, "driver too slow");
        if line == "SKIP" {
            eprintln!("SKIP: h11 unavailable");
            return;
        }
        if line == "DONE" {
            break;
        }
        if let Some(rest) = line.strip_prefix("RCASE ") {
            let (methods, case) = rest.split_once(' ').expect("RCASE methods hex");
            answers.push_str(&response_verdict(methods, &unhex(case)));
        } else {
            let case = line.strip_prefix("CASE ").expect("a CASE line");
            answers.push_str(&verdict(&unhex(case)));
        }
        answers.push('\n');
        n += 1;
    }
    assert_eq!(
        n,
        cases + RESPONSE_CASES,
        "the driver sent fewer cases than asked"
    );
    stdin.write_all(answers.as_bytes()).unwrap();
    drop(stdin);
    // Bounded wait: the comparison runs at Python speed.
    loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            assert!(status.success(), "keepwire and h11 disagree (see above)");
            return;
        }
        assert!(started.elapsed() < DEADLINE, "driver did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}
