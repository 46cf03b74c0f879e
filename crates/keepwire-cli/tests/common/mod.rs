//! Starting the real `keepwire` binary in tests: one helper for every CLI
//! test file (serve, proxy, check): a child that is killed by PID when
//! dropped, whose bound address is read from its first stderr line, with
//! every wait bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_keepwire");
/// Bound on any single wait (a first log line, a read, a child's exit).
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `keepwire` child, killed (by its PID) when dropped.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub first_line: String,
    /// The stderr lines after the first, as they come.
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    /// The first later stderr line that contains `needle`, waiting at most
    /// [`WAIT`] in all.
    pub fn line_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with {needle:?} within {WAIT:?} ({e})"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keepwire ARGS` and reads the bound address from its first stderr
/// line (`... listening on http://ADDR/ ...` or `https://`), waiting at most [`WAIT`].
pub fn start(args: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the keepwire binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first_line = match rx.recv_timeout(WAIT) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("keepwire {args:?} printed no address within {WAIT:?} ({e}); exit: {status:?}");
        }
    };
    let addr = first_line
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok());
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no address in the first stderr line {first_line:?}");
    };
    Running {
        child,
        addr,
        first_line,
        lines: rx,
    }
}

/// Runs `keepwire ARGS` to completion and collects its output; the child is
/// killed (and the test fails) if it outlives `limit`.
pub fn run(args: &[&str], limit: Duration) -> Output {
    run_env(args, &[], limit)
}

/// [`run`] with extra environment variables.
pub fn run_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keepwire binary starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keepwire {args:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}
