//! `keepwire get`'s terminal output: a line per request as it ends, in the
//! columns `--help` explains, and the summary line.

use std::fmt::Write as _;
use std::io::Write as _;

use keepwire_lab::load::{Phases, Record, Strategy, Summary};

/// Where the table goes: stdout, or stderr when stdout carries bodies,
/// `-w` lines or the JSON; a file with `--report FILE`.
pub enum Sink {
    Off,
    Stdout,
    Stderr,
    File(std::fs::File),
}

/// The per-request table.
pub struct Table {
    sink: Sink,
    header_done: bool,
}

impl Table {
    pub fn new(sink: Sink) -> Self {
        Table {
            sink,
            header_done: false,
        }
    }

    fn emit(&mut self, text: &str) {
        match &mut self.sink {
            Sink::Off => {}
            Sink::Stdout => stdout(text),
            Sink::Stderr => stderr(text),
            Sink::File(f) => {
                let _ = f.write_all(text.as_bytes());
            }
        }
    }

    pub fn line(&mut self, r: &Record) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        let mut s = String::new();
        if !self.header_done {
            self.header_done = true;
            let _ = writeln!(
                s,
                "{:>4} {:>6} {:>9} {:>5} {:<6} {:>2} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}  url",
                "#",
                "status",
                "size",
                "conn",
                "reuse",
                "rt",
                "queued",
                "dns",
                "connect",
                "send",
                "wait",
                "recv",
                "total"
            );
        }
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let status = match (r.status, &r.error) {
            (Some(s), None) => s.to_string(),
            (Some(s), Some(_)) => format!("{s}!"),
            (None, _) => "ERR".to_string(),
        };
        let conn = r
            .connection
            .as_ref()
            .map_or("-".to_string(), |c| format!("#{}", c.id));
        let reuse = match r.reused {
            Some(true) => "reused",
            Some(false) => "new",
            None => "-",
        };
        let [queued, dns, connect, send, wait, download] = Phases::in_order(r.phases_ms).map(opt);
        let _ = write!(
            s,
            "{:>4} {:>6} {:>9} {:>5} {:<6} {:>2} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}  {}",
            r.index,
            status,
            r.size,
            conn,
            reuse,
            r.retries,
            queued,
            dns,
            connect,
            send,
            wait,
            download,
            format!("{:.2}", r.total_ms),
            r.url
        );
        if let Some(e) = &r.error {
            let _ = write!(s, "  ({e})");
        }
        s.push('\n');
        self.emit(&s);
    }

    pub fn summary(&mut self, s: &Summary) {
        let outcome = if s.failed > 0 {
            format!("{} ok, {} failed", s.succeeded, s.failed)
        } else {
            format!("{} ok", s.succeeded)
        };
        let depth = s.depth.map_or(String::new(), |d| format!(", depth {d}"));
        let plural = |n: u64, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        self.emit(&format!(
            "{} ({outcome}), {} opened, {} reused, {}, {} body bytes, wall {:.2} ms [{}, {}{depth}]\n",
            plural(s.requests as u64, "request", "requests"),
            plural(s.connections_opened, "connection", "connections"),
            s.reused,
            plural(s.retries, "retry", "retries"),
            s.bytes,
            s.wall_ms,
            s.strategy.name(),
            if s.strategy == Strategy::Serial {
                "one connection at a time".to_string()
            } else {
                format!(
                    "up to {}",
                    plural(u64::from(s.max_connections), "connection", "connections")
                )
            },
        ));
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not a reason to panic.
pub fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `-s` without `-S`: error messages are not printed.
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An error message on stderr, unless [`QUIET`].
pub fn error(text: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        stderr(text);
    }
}

/// Writes to stderr, ignoring failures.
pub fn stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
