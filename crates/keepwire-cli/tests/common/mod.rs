//! Starting the real `keepwire` binary in tests: one helper for every CLI
//! test file (serve, proxy, check): a child that is killed by PID when
//! dropped, whose bound address is read from its first stderr line, with
//! every wait bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
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
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keepwire ARGS` and reads the bound address from its first stderr
/// line (`... listening on http://ADDR/ ...`), waiting at most [`WAIT`].
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
        .split("http://")
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
    }
}
