//! The access log: one line per request, nginx's `combined` format followed
//! by the connection facts keepwire exists to show.
//!
//! ```text
//! $remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" \
//!   local=IP:PORT peer=IP:PORT conn=N req=K rt=SECONDS close=REASON proto=HTTP/1.1 upstream=STATUS urt=SECONDS
//! ```
//!
//! - `conn` is the server-wide connection number and `req` the request's
//!   1-based index on it: `req` > 1 is a reused connection.
//! - `rt` is nginx's `$request_time`: from the request head's first byte
//!   (HTTP/1) or its stream's arrival (HTTP/2) to the last body byte handed
//!   to the socket, in seconds with microseconds.
//! - `close` is why the server closes the connection right after this
//!   response (`not_persistent`, `max_requests`, `shutdown`, `error`,
//!   `timeout`, `upgraded`, `client_close`), or `-` when it stays open.
//!   (A connection that later ends idle has no request to log it on: the
//!   metric `keepwire_connection_closes_total` counts those.)
//! - `upstream`/`urt`: a proxied request's upstream status and time to the
//!   upstream's response head (nginx's `$upstream_status` and
//!   `$upstream_header_time`), `-` otherwise.
//! - A request never answered (the client left, the connection failed)
//!   is logged with status 499 (nginx's "client closed request") or 500.
//!
//! Lines are formatted on the connection's task and handed to a writer
//! thread through a bounded queue (`tracing_appender::non_blocking`): a slow
//! disk never stalls a connection; when the queue is full a line is dropped
//! and counted ([`AccessLog::dropped_lines`]) rather than waited for.
//! Field values are escaped as nginx escapes them (`"`, `\`, control and
//! non-ASCII bytes as `\xHH`), so a line is always one line.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, Uri, Version};
use tokio::time::Instant;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};

use super::ConnInfo;
use crate::metrics::CloseReason;

/// Lines held for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 64 * 1024;

/// Where access-log lines go. Shared by every connection of a server (put
/// it in [`Config::access_log`](super::Config)); dropping the last
/// reference flushes what is queued.
pub struct AccessLog {
    writer: NonBlocking,
    dropped: ErrorCounter,
    _guard: WorkerGuard,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("dropped_lines", &self.dropped_lines())
            .finish()
    }
}

impl AccessLog {
    /// Lines appended to `path` (created if missing), opened once.
    pub fn append_to(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::to_writer(file))
    }

    /// Lines written to standard error.
    pub fn stderr() -> Self {
        Self::to_writer(std::io::stderr())
    }

    /// Lines written to `w` by a writer thread.
    pub fn to_writer(w: impl std::io::Write + Send + 'static) -> Self {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE_LINES)
            .thread_name("keepwire-access-log")
            .finish(w);
        AccessLog {
            dropped: writer.error_counter(),
            writer,
            _guard: guard,
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped_lines(&self) -> usize {
        self.dropped.dropped_lines()
    }

    fn write(&self, line: &str) {
        let _ = self.writer.clone().write_all(line.as_bytes());
    }
}

/// A proxied response's upstream facts, for the access log (a response
/// extension set by the proxy).
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// The upstream's status.
    pub status: u16,
    /// Time from sending the request upstream to its response head.
    pub header_time: Duration,
}

/// One request, from its head to its response's last byte.
#[derive(Debug)]
pub(crate) struct Entry {
    /// `"$request" ` and, after the status, `"$http_referer" "$http_user_agent"`.
    request: String,
    agents: String,
    start: Instant,
    index: u64,
    proto: &'static str,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) upstream: Option<Upstream>,
}

impl Entry {
    /// A request that arrived at `start`, `index`-th on its connection.
    pub(crate) fn new(
        method: &Method,
        target: &Uri,
        version: Version,
        headers: &HeaderMap,
        index: u64,
        start: Instant,
    ) -> Self {
        let mut request = String::with_capacity(64);
        escape(&mut request, method.as_str().as_bytes());
        request.push(' ');
        // HTTP/2 and HTTP/3 requests carry the absolute form; nginx logs the path.
        let h2 = version == Version::HTTP_2 || version == Version::HTTP_3;
        match target.path_and_query() {
            Some(pq) if h2 && target.authority().is_some() => {
                escape(&mut request, pq.as_str().as_bytes())
            }
            _ => escape(&mut request, target.to_string().as_bytes()),
        }
        let (v, proto) = match version {
            Version::HTTP_10 => ("HTTP/1.0", "HTTP/1.0"),
            Version::HTTP_2 => ("HTTP/2.0", "HTTP/2"),
            Version::HTTP_3 => ("HTTP/3.0", "HTTP/3"),
            Version::HTTP_09 => ("HTTP/0.9", "HTTP/0.9"),
            _ => ("HTTP/1.1", "HTTP/1.1"),
        };
        request.push(' ');
        request.push_str(v);
        let mut agents = String::with_capacity(48);
        for (i, name) in [http::header::REFERER, http::header::USER_AGENT]
            .iter()
            .enumerate()
        {
            if i > 0 {
                agents.push(' ');
            }
            agents.push('"');
            match headers.get(name) {
                Some(v) => escape(&mut agents, v.as_bytes()),
                None => agents.push('-'),
            }
            agents.push('"');
        }
        Entry {
            request,
            agents,
            start,
            index,
            proto,
            status: 0,
            bytes: 0,
            upstream: None,
        }
    }

    /// Takes the response's status and upstream facts.
    pub(crate) fn respond(&mut self, status: http::StatusCode, ext: &http::Extensions) {
        self.status = status.as_u16();
        self.upstream = ext.get::<Upstream>().copied();
    }

    /// Formats the line and queues it; `close` is why the connection ends
    /// after this response, if it does.
    /// An HTTP/2 stream's entry, from its request as received.
    pub(crate) fn of_request<B>(req: &http::Request<B>, index: u64, start: Instant) -> Self {
        Entry::new(
            req.method(),
            req.uri(),
            req.version(),
            req.headers(),
            index,
            start,
        )
    }

    /// Writes an HTTP/2 stream's line: a stream cancelled before it was
    /// answered is 499, as nginx logs a client that left.
    pub(crate) fn finish_stream(mut self, cancelled: bool, log: &AccessLog, info: &ConnInfo) {
        if self.status == 0 && cancelled {
            self.status = 499;
        }
        self.finish(log, info, None);
    }

    pub(crate) fn finish(&self, log: &AccessLog, info: &ConnInfo, close: Option<CloseReason>) {
        let status = match (self.status, close) {
            (0, Some(CloseReason::ClientClose)) => 499,
            (0, _) => 500,
            (s, _) => s,
        };
        log.write(&self.line(info, status, close, SystemTime::now()));
    }

    fn line(
        &self,
        info: &ConnInfo,
        status: u16,
        close: Option<CloseReason>,
        now: SystemTime,
    ) -> String {
        let mut s = String::with_capacity(256);
        let rt = self.start.elapsed().as_secs_f64();
        let _ = write!(
            s,
            "{} - - [{}] \"{}\" {status} {} {} local={} peer={} conn={} req={} rt={rt:.6} close={} proto={}",
            info.peer.ip(),
            time_local(now),
            self.request,
            self.bytes,
            self.agents,
            info.local,
            info.peer,
            info.id,
            self.index,
            close.map_or("-", CloseReason::label),
            self.proto,
        );
        match self.upstream {
            Some(u) => {
                let _ = write!(
                    s,
                    " upstream={} urt={:.6}",
                    u.status,
                    u.header_time.as_secs_f64()
                );
            }
            None => s.push_str(" upstream=- urt=-"),
        }
        s.push('\n');
        s
    }
}

/// The requests of one HTTP/1 connection not yet logged, in order
/// (responses are written in request order, R7.2).
#[derive(Debug)]
pub(crate) struct ConnLog {
    log: std::sync::Arc<AccessLog>,
    pending: std::collections::VecDeque<Entry>,
}

impl ConnLog {
    /// A connection's log, if `config` has an access log.
    pub(crate) fn of(config: &super::Config) -> Option<Box<Self>> {
        let log = config.access_log.clone()?;
        Some(Box::new(ConnLog {
            log,
            pending: Default::default(),
        }))
    }

    /// A request was read.
    pub(crate) fn request(&mut self, head: &keepwire_proto::RequestHead, index: u64, at: Instant) {
        let e = Entry::new(
            &head.method,
            &head.target,
            head.version,
            &head.headers,
            index,
            at,
        );
        self.pending.push_back(e);
    }

    /// The next response's head is being written.
    pub(crate) fn respond(&mut self, status: http::StatusCode, ext: &http::Extensions) {
        if let Some(e) = self.pending.front_mut() {
            e.respond(status, ext);
        }
    }

    /// Body bytes of the response under way.
    pub(crate) fn body(&mut self, n: usize) {
        if let Some(e) = self.pending.front_mut() {
            e.bytes += n as u64;
        }
    }

    /// The response under way ended; the connection closes after it for
    /// `close`, if given.
    pub(crate) fn end(&mut self, info: &ConnInfo, close: Option<CloseReason>) {
        if let Some(e) = self.pending.pop_front() {
            e.finish(&self.log, info, close);
        }
    }

    /// A request that could not be read was answered with `status`.
    pub(crate) fn error(&mut self, info: &ConnInfo, status: http::StatusCode, at: Instant) {
        let e = Entry {
            request: "-".to_string(),
            agents: "\"-\" \"-\"".to_string(),
            start: at,
            index: info.request_index + 1,
            proto: "HTTP/1.1",
            status: status.as_u16(),
            bytes: 0,
            upstream: None,
        };
        e.finish(&self.log, info, Some(CloseReason::Error));
    }

    /// The connection ended for `reason`: what is left is logged with it
    /// (a response cut short keeps its status; unanswered ones get 499/500).
    pub(crate) fn close(log: Option<Box<Self>>, info: &ConnInfo, reason: CloseReason) {
        if let Some(mut log) = log {
            while !log.pending.is_empty() {
                log.end(info, Some(reason));
            }
        }
    }
}

/// nginx's `$time_local` (in UTC): `07/Dec/2026:06:42:01 +0000`.
fn time_local(now: SystemTime) -> String {
    // "Mon, 07 Dec 2026 06:42:01 GMT"
    let d = httpdate::fmt_http_date(now);
    format!(
        "{}/{}/{}:{} +0000",
        &d[5..7],
        &d[8..11],
        &d[12..16],
        &d[17..25]
    )
}

/// Appends `bytes` as nginx's `escape=default` does: `"`, `\`, control
/// and non-ASCII bytes become `\xHH`.
fn escape(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_combined_format_then_the_connection_facts() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::USER_AGENT, "curl/8 \"x\"".parse().unwrap());
        let mut e = Entry::new(
            &Method::GET,
            &"/a?b=1".parse().unwrap(),
            Version::HTTP_11,
            &headers,
            2,
            Instant::now(),
        );
        e.respond(http::StatusCode::NOT_FOUND, &Default::default());
        e.bytes = 10;
        let info = ConnInfo {
            id: 7,
            peer: "127.0.0.1:5000".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            request_index: 2,
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let line = e.line(&info, 404, None, t);
        assert!(
            line.starts_with(
                "127.0.0.1 - - [09/Sep/2001:01:46:40 +0000] \"GET /a?b=1 HTTP/1.1\" 404 10 \
                 \"-\" \"curl/8 \\x22x\\x22\" local=127.0.0.1:8080 peer=127.0.0.1:5000 conn=7 req=2 rt="
            ),
            "{line}"
        );
        assert!(
            line.ends_with(" close=- proto=HTTP/1.1 upstream=- urt=-\n"),
            "{line}"
        );
        let h2 = Entry::new(
            &Method::GET,
            &"http://h/x".parse().unwrap(),
            Version::HTTP_2,
            &headers,
            1,
            Instant::now(),
        );
        assert_eq!(h2.request, "GET /x HTTP/2.0");
        assert_eq!(h2.proto, "HTTP/2");
    }

    /// The queue's limit: a writer that takes nothing (a stuck disk) costs
    /// dropped lines, never a blocked connection task.
    #[test]
    fn a_stuck_writer_drops_lines_instead_of_blocking() {
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl std::io::Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (unstick, stuck) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(AccessLog::to_writer(Stuck(stuck)));
        let (done_tx, done) = std::sync::mpsc::channel();
        let writer = log.clone();
        std::thread::spawn(move || {
            for _ in 0..QUEUE_LINES + 1000 {
                writer.write("GET / HTTP/1.1 200\n");
            }
            let _ = done_tx.send(());
        });
        let finished = done.recv_timeout(Duration::from_secs(20));
        drop(unstick);
        assert!(finished.is_ok(), "the caller blocked on a stuck writer");
        assert!(log.dropped_lines() >= 999, "{}", log.dropped_lines());
    }
}
