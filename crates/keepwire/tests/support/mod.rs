//! Shared helpers for keepwire's integration tests: start a server on
//! 127.0.0.1:0, talk to it over raw sockets with hand-written bytes, parse
//! responses with a tiny independent HTTP/1.x response parser, and run real
//! peers (curl, ab, wrk) under a time bound with a kill-on-drop guard.
//!
//! Every wait here is bounded: a bug shows up as a panic naming what was
//! awaited, never as a hung test.

#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use keepwire::Server;
use keepwire::server::{Config, Handler, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A self-signed certificate for `localhost` (and 127.0.0.1), for TLS
/// servers and the clients that trust it.
pub struct Cert {
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub key: rustls::pki_types::PrivatePkcs8KeyDer<'static>,
}

impl Cert {
    pub fn localhost() -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        Cert {
            der: ck.cert.der().clone(),
            key: rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()),
        }
    }

    /// A root store of this certificate alone.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }

    /// A rustls client config trusting only this certificate (one Arc:
    /// clients built from it share its session tickets, for 0-RTT).
    pub fn client_tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let roots = self.roots();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        std::sync::Arc::new(c)
    }

    /// A rustls server config offering `alpn`.
    pub fn server_tls(&self, alpn: &[&[u8]]) -> rustls::ServerConfig {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut s = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], self.key.clone_key().into())
            .unwrap();
        s.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        s
    }
}

/// Default bound on any single wait (a read, a connect, a handler signal).
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `cond` every 10 ms until it holds, panicking after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    within(what, limit, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// The I/O backend the tests' servers use: `KEEPWIRE_TEST_IO=uring` runs
/// them on io_uring (scripts/test runs the server's tests once with each).
pub fn test_io() -> keepwire::transport::IoBackend {
    match std::env::var("KEEPWIRE_TEST_IO") {
        Ok(v) => v.parse().expect("KEEPWIRE_TEST_IO: epoll or uring"),
        Err(_) => Default::default(),
    }
}

/// `configure`, then the backend [`test_io`] names.
fn on_test_io(configure: impl FnOnce(&mut Config)) -> impl FnOnce(&mut Config) {
    |c: &mut Config| {
        configure(c);
        c.io = test_io();
    }
}

/// Binds a server on 127.0.0.1:0 with `configure` applied and spawns it.
pub fn serve(configure: impl FnOnce(&mut Config), handler: impl Handler) -> ServerHandle {
    Server::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .configure(on_test_io(configure))
        .bind()
        .expect("bind 127.0.0.1:0")
        .spawn(handler)
}

/// Like [`serve`], also returning the Prometheus rendering of the counters,
/// which outlives the handle (for checks after `shutdown`).
pub fn serve_with_metrics(
    configure: impl FnOnce(&mut Config),
    handler: impl Handler,
) -> (ServerHandle, impl Fn() -> String + Send + Sync + 'static) {
    let server = Server::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .configure(on_test_io(configure))
        .bind()
        .expect("bind 127.0.0.1:0");
    let render = server.metrics_source();
    (server.spawn(handler), render)
}

/// The value of `keepwire_<series>` in a Prometheus rendering.
pub fn metric(text: &str, series: &str) -> u64 {
    let prefix = format!("keepwire_{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Shuts a server down, bounded.
pub async fn stop(handle: ServerHandle) {
    within(
        "server shutdown",
        Duration::from_secs(10),
        handle.shutdown(),
    )
    .await
    .expect("server shutdown");
}

/// `GET path` over HTTP/1.1 with a Host field.
pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// `GET path` over HTTP/1.1 with `Connection: close`.
pub fn get_close(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
}

/// A deterministic byte pattern (not periodic in small powers of two).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// FNV-1a over `data`, continuing from `h` (start with [`FNV_START`]).
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;
pub fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------
// A tiny HTTP/1.x response parser (independent of keepwire-proto on purpose:
// the server is checked against a second implementation of the framing).

/// How a parsed response's body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by rule (1xx, 204, 304, answer to HEAD).
    None,
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closed.
    Close,
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// The head as it arrived (status line and field lines, spelling kept).
    pub raw_head: String,
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Field names lowercased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Chunk sizes, for a chunked body.
    pub chunks: Vec<usize>,
}

impl Resp {
    /// The value of the only field line named `name` (panics if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} repeated: {all:?} in {self:?}");
        all.first().copied()
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Clean EOF before the response was complete; `received` bytes of it
    /// had arrived (0: the connection closed before any response byte).
    Eof { received: usize },
    /// The socket failed (reset, ...), after `received` bytes of it.
    Io { error: io::Error, received: usize },
    /// Not HTTP.
    Malformed(String),
}

impl ReadError {
    /// Bytes of the failed response that had arrived.
    pub fn received(&self) -> usize {
        match self {
            ReadError::Eof { received } | ReadError::Io { received, .. } => *received,
            ReadError::Malformed(_) => usize::MAX,
        }
    }
}

/// A client connection that writes hand-written bytes and parses responses.
pub struct RawClient {
    rd: OwnedReadHalf,
    wr: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
    eof: bool,
    /// Bytes of the response being parsed, consumed from `buf` already.
    consumed: usize,
    /// Per-read bound.
    pub read_timeout: Duration,
}

impl RawClient {
    /// Connects (bounded).
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within("connect", WAIT, TcpStream::connect(addr))
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        let (rd, wr) = stream.into_split();
        RawClient {
            rd,
            wr: Some(wr),
            buf: Vec::new(),
            eof: false,
            consumed: 0,
            read_timeout: WAIT,
        }
    }

    /// Writes all of `data` in one `write_all` (bounded).
    pub async fn send(&mut self, data: impl AsRef<[u8]>) {
        let wr = self.wr.as_mut().expect("write half was taken");
        within("write", WAIT, wr.write_all(data.as_ref()))
            .await
            .expect("write");
    }

    /// Writes, reporting failure instead of panicking.
    pub async fn try_send(&mut self, data: impl AsRef<[u8]>) -> io::Result<()> {
        let wr = self.wr.as_mut().expect("write half was taken");
        within("write", WAIT, wr.write_all(data.as_ref())).await
    }

    /// Shuts down our sending side (FIN).
    pub async fn shutdown_write(&mut self) {
        let wr = self.wr.as_mut().expect("write half was taken");
        within("shutdown(Write)", WAIT, wr.shutdown())
            .await
            .expect("shutdown(Write)");
    }

    /// Hands the write half to another task (for concurrent writing).
    pub fn take_writer(&mut self) -> OwnedWriteHalf {
        self.wr.take().expect("write half was taken")
    }

    /// Bytes received and not yet parsed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// One read into the buffer; `Ok(0)` at EOF. Panics on timeout.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = vec![0u8; 64 * 1024];
        let limit = self.read_timeout;
        let n = match tokio::time::timeout(limit, self.rd.read(&mut tmp)).await {
            Ok(r) => r?,
            Err(_) => panic!(
                "timed out after {limit:?} waiting for response bytes; buffered: {:?}",
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
            ),
        };
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// One read with its own bound: `None` if nothing arrived in `limit`.
    pub async fn read_some(&mut self, limit: Duration) -> Option<io::Result<usize>> {
        let mut tmp = vec![0u8; 64 * 1024];
        match tokio::time::timeout(limit, self.rd.read(&mut tmp)).await {
            Err(_) => None,
            Ok(Ok(n)) => {
                if n == 0 {
                    self.eof = true;
                }
                self.buf.extend_from_slice(&tmp[..n]);
                Some(Ok(n))
            }
            Ok(Err(e)) => Some(Err(e)),
        }
    }

    fn err_io(&self, error: io::Error) -> ReadError {
        ReadError::Io {
            error,
            received: self.consumed + self.buf.len(),
        }
    }

    /// Makes sure `n` bytes are buffered.
    async fn need(&mut self, n: usize) -> Result<(), ReadError> {
        while self.buf.len() < n {
            if self.eof {
                return Err(ReadError::Eof {
                    received: self.consumed + self.buf.len(),
                });
            }
            if let Err(e) = self.fill().await {
                return Err(self.err_io(e));
            }
        }
        Ok(())
    }

    /// Buffers until `pat` appears; returns its offset.
    async fn need_until(&mut self, pat: &[u8], from: usize) -> Result<usize, ReadError> {
        loop {
            if let Some(i) = find(&self.buf[from.min(self.buf.len())..], pat) {
                return Ok(from + i);
            }
            if self.eof {
                return Err(ReadError::Eof {
                    received: self.consumed + self.buf.len(),
                });
            }
            if let Err(e) = self.fill().await {
                return Err(self.err_io(e));
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        self.consumed += n;
        self.buf.drain(..n).collect()
    }

    /// Reads one response. `head_request`: it answers a HEAD (no body).
    pub async fn try_response(&mut self, head_request: bool) -> Result<Resp, ReadError> {
        self.consumed = 0;
        let end = self.need_until(b"\r\n\r\n", 0).await?;
        let head = self.take(end + 4);
        let head = String::from_utf8(head).map_err(|e| ReadError::Malformed(e.to_string()))?;
        let mut lines = head[..head.len() - 4].split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        if !version.starts_with("HTTP/1.") {
            return Err(ReadError::Malformed(format!("status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ReadError::Malformed(format!("status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        for line in lines {
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| ReadError::Malformed(format!("field line {line:?}")))?;
            if n.is_empty() || n.ends_with([' ', '\t']) {
                return Err(ReadError::Malformed(format!("field name {n:?}")));
            }
            headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = Resp {
            raw_head: head.clone(),
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            framing: Framing::None,
            chunks: Vec::new(),
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let te = resp.all("transfer-encoding").join(",");
        let cl = resp.all("content-length");
        if !te.is_empty() {
            if !te.eq_ignore_ascii_case("chunked") || !cl.is_empty() {
                return Err(ReadError::Malformed(format!(
                    "transfer-encoding {te:?} with content-length {cl:?}"
                )));
            }
            resp.framing = Framing::Chunked;
            loop {
                let eol = self.need_until(b"\r\n", 0).await?;
                let line = String::from_utf8_lossy(&self.take(eol + 2)).into_owned();
                let size = line[..line.len() - 2].split(';').next().unwrap_or_default();
                let size = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| ReadError::Malformed(format!("chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers up to the empty line.
                    loop {
                        let eol = self.need_until(b"\r\n", 0).await?;
                        let t = self.take(eol + 2);
                        if t.len() == 2 {
                            return Ok(resp);
                        }
                    }
                }
                resp.chunks.push(size);
                self.need(size + 2).await?;
                let data = self.take(size + 2);
                if &data[size..] != b"\r\n" {
                    return Err(ReadError::Malformed("chunk not followed by CRLF".into()));
                }
                resp.body.extend_from_slice(&data[..size]);
            }
        }
        if cl.len() > 1 {
            return Err(ReadError::Malformed(format!("content-length {cl:?}")));
        }
        if let Some(cl) = cl.first() {
            let n: usize = cl
                .parse()
                .map_err(|_| ReadError::Malformed(format!("content-length {cl:?}")))?;
            resp.framing = Framing::Length(n);
            self.need(n).await?;
            resp.body = self.take(n);
            return Ok(resp);
        }
        // Close-delimited.
        resp.framing = Framing::Close;
        while !self.eof {
            if let Err(e) = self.fill().await {
                return Err(self.err_io(e));
            }
        }
        resp.body = std::mem::take(&mut self.buf);
        Ok(resp)
    }

    /// Reads one response; panics on any error.
    pub async fn response(&mut self) -> Resp {
        match self.try_response(false).await {
            Ok(r) => r,
            Err(e) => panic!("reading a response: {e:?}"),
        }
    }

    /// Reads one response to a HEAD request; panics on any error.
    pub async fn head_response(&mut self) -> Resp {
        match self.try_response(true).await {
            Ok(r) => r,
            Err(e) => panic!("reading a HEAD response: {e:?}"),
        }
    }

    /// Asserts the server closed cleanly: nothing more buffered and the next
    /// read returns 0 (EOF), not data and not a reset.
    pub async fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "expected EOF, but unparsed bytes are buffered: {:?}",
            String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
        );
        if self.eof {
            return;
        }
        match self.fill().await {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected EOF, got {n} more bytes: {:?}",
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
            ),
            Err(e) => panic!("expected a clean EOF (FIN), got {e} ({:?})", e.kind()),
        }
    }

    /// True once a read returned 0.
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Reads exactly `n` raw bytes (after whatever is buffered), for data
    /// through a tunnel. Panics on EOF, error or timeout.
    pub async fn read_exact_raw(&mut self, n: usize) -> Vec<u8> {
        if let Err(e) = self.need(n).await {
            panic!(
                "reading {n} raw bytes: {e:?}; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
        self.take(n)
    }

    /// Reads until the peer closes (each read bounded by `read_timeout`),
    /// returning every byte not parsed yet and whether it ended with a
    /// clean EOF (`false`: a reset).
    pub async fn read_to_eof(&mut self) -> (Vec<u8>, bool) {
        let clean = loop {
            if self.eof {
                break true;
            }
            if self.fill().await.is_err() {
                break false;
            }
        };
        (std::mem::take(&mut self.buf), clean)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Real peers.

/// What a finished tool printed.
#[derive(Debug)]
pub struct ToolOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Owns a spawned child and kills it (by its PID) if dropped while running,
/// so a failing or timed-out test never leaves a peer behind.
pub struct ChildGuard {
    child: tokio::process::Child,
    pid: Option<u32>,
    name: String,
}

impl ChildGuard {
    /// Spawns `program args` with stdout/stderr piped, stdin closed.
    pub fn spawn(program: &std::path::Path, args: &[String]) -> ChildGuard {
        let name = format!("{} {}", program.display(), args.join(" "));
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        ChildGuard {
            pid: child.id(),
            child,
            name,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The child, e.g. to see whether it exited or to take its pipes.
    pub fn child_mut(&mut self) -> &mut tokio::process::Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // `start_kill` sends SIGKILL to this child's PID only.
            eprintln!("killing {} (pid {:?})", self.name, self.pid);
            let _ = self.child.start_kill();
        }
    }
}

/// A directory under the system temp dir, removed (recursively) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory named after `tag`, readable by everyone (so a
    /// peer that drops privileges, like nginx's workers, can read it).
    pub fn new(tag: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "keepwire-{tag}-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where `tool` is on PATH, if anywhere (then the sbin directories, where
/// daemons such as nginx live and which a non-root PATH often lacks).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The peer tool's path; `None` (after printing why) when
/// `KEEPWIRE_SKIP_PEERS=1` and the tool is missing. Panics otherwise.
pub fn require_tool(tool: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = find_tool(tool) {
        return Some(p);
    }
    if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") {
        eprintln!(
            "skipping: `{tool}` (package {package}) is not on PATH and KEEPWIRE_SKIP_PEERS=1"
        );
        return None;
    }
    panic!(
        "`{tool}` is not on PATH; `bash scripts/test` installs it (Debian package `{package}`), \
         or set KEEPWIRE_SKIP_PEERS=1 to skip the real-peer tests"
    );
}

/// Runs `program args` to completion within `limit`, capturing output. On
/// timeout the guard kills the child and the test fails.
pub async fn run_tool(program: &std::path::Path, args: &[String], limit: Duration) -> ToolOutput {
    let mut guard = ChildGuard::spawn(program, args);
    let name = guard.name.clone();
    let mut out = guard.child.stdout.take().expect("stdout piped");
    let mut err = guard.child.stderr.take().expect("stderr piped");
    let run = async {
        let mut so = Vec::new();
        let mut se = Vec::new();
        let (a, b, status) = tokio::join!(
            out.read_to_end(&mut so),
            err.read_to_end(&mut se),
            guard.child.wait()
        );
        a.expect("read stdout");
        b.expect("read stderr");
        ToolOutput {
            status: status.expect("wait"),
            stdout: String::from_utf8_lossy(&so).into_owned(),
            stderr: String::from_utf8_lossy(&se).into_owned(),
        }
    };
    let output = within(&name, limit, run).await;
    drop(guard);
    output
}

/// nginx as a real peer (origin for the client and proxy tests).
pub struct NginxProcess(ChildGuard);

impl Drop for NginxProcess {
    fn drop(&mut self) {
        let child = self.0.child_mut();
        if let (Ok(None), Some(pid)) = (child.try_wait(), child.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

pub struct Nginx {
    _process: NginxProcess,
    pub addr: SocketAddr,
    dir: TempDir,
    pub files: Vec<(String, Vec<u8>)>,
}

impl Nginx {
    /// nginx on a free 127.0.0.1 port with its own config, pid, logs and
    /// temp paths in a temp dir; `daemon off`, one worker,
    /// `keepalive_timeout 30s`. The access log names each request's
    /// connection and its index on it.
    pub async fn start(bin: &std::path::Path) -> Nginx {
        let dir = TempDir::new("nginx");
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        let mut files = Vec::new();
        for i in 0..5 {
            let name = format!("f{i}.txt");
            // Sizes from a few bytes to 48 KiB (several TCP segments).
            let body = if i == 4 {
                pattern(48 * 1024)
            } else {
                format!("file {i}\n").repeat(1 + i * 300).into_bytes()
            };
            std::fs::write(www.join(&name), &body).unwrap();
            files.push((name, body));
        }
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let d = dir.path().display();
            let conf = nginx_conf(
                dir.path(),
                "log_format conns '$connection $connection_requests $request_uri';\n\
                 access_log DIR/access.log conns;\n\
                 keepalive_timeout 30s;\n keepalive_requests 1000;\n default_type text/plain;",
                &format!("listen 127.0.0.1:{port}; root {d}/www;"),
            );
            let mut process = spawn_nginx(bin, dir.path(), &conf);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let started = std::time::Instant::now();
            let up = loop {
                if let Ok(Some(status)) = process.0.child_mut().try_wait() {
                    eprintln!(
                        "nginx exited ({status}) on attempt {attempt}: {}",
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                    );
                    break false;
                }
                if TcpStream::connect(addr).await.is_ok() {
                    break true;
                }
                assert!(
                    started.elapsed() < WAIT,
                    "nginx did not listen on {addr} within {WAIT:?}: {}",
                    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if up {
                return Nginx {
                    _process: process,
                    addr,
                    dir,
                    files,
                };
            }
        }
        panic!("nginx would not start (port races?)");
    }

    /// Access-log lines: (connection serial, request index on it, URI).
    pub fn access_log(&self) -> Vec<(u64, u64, String)> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                Some((
                    it.next()?.parse().ok()?,
                    it.next()?.parse().ok()?,
                    it.next()?.to_string(),
                ))
            })
            .collect()
    }
}

/// A server whose handler holds each request 20 ms and records the most
/// requests it ever ran at once (streams or pipelined requests in flight).
pub fn serve_counting(
    configure: impl FnOnce(&mut Config),
    body: &'static str,
) -> (ServerHandle, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = max.clone();
    let server = serve(configure, move |_req: http::Request<keepwire::Body>| {
        let (now, max) = (now.clone(), max.clone());
        async move {
            let in_flight = now.fetch_add(1, SeqCst) + 1;
            max.fetch_max(in_flight, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            now.fetch_sub(1, SeqCst);
            http::Response::new(keepwire::Body::from(body))
        }
    });
    (server, seen)
}

/// nginx with one `server { listen 127.0.0.1:PORT EXTRA; BODY }` block, its
/// files in `dir`; killed (master and workers) when the handle drops.
pub async fn nginx_with(
    bin: &std::path::Path,
    dir: &std::path::Path,
    listen_extra: &str,
    body: &str,
) -> (NginxProcess, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let conf = nginx_conf(
        dir,
        "access_log off;",
        &format!("listen 127.0.0.1:{port} {listen_extra}; {body}"),
    );
    let process = spawn_nginx(bin, dir, &conf);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    within("nginx listening", WAIT, async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    (process, addr)
}

/// Writes `conf` to `dir/nginx.conf` and starts nginx on it, with `dir` as
/// its prefix and error log place.
fn spawn_nginx(bin: &std::path::Path, dir: &std::path::Path, conf: &str) -> NginxProcess {
    let d = dir.display();
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let args = [
        "-p".to_string(),
        format!("{d}/"),
        "-c".to_string(),
        conf_path.display().to_string(),
        "-e".to_string(),
        format!("{d}/error.log"),
    ];
    NginxProcess(ChildGuard::spawn(bin, &args))
}

/// An nginx configuration in `dir` (pid, logs and temp paths there, one
/// worker, `daemon off`) with `http` settings (`DIR` stands for `dir`) and
/// one server block.
fn nginx_conf(dir: &std::path::Path, http: &str, server: &str) -> String {
    let d = dir.display();
    let http = http.replace("DIR", &d.to_string());
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n {http}\n client_body_temp_path {d}/tmp_body;\n\
          proxy_temp_path {d}/tmp_proxy;\n fastcgi_temp_path {d}/tmp_fastcgi;\n\
          uwsgi_temp_path {d}/tmp_uwsgi;\n scgi_temp_path {d}/tmp_scgi;\n\
          server {{ {server} }}\n}}\n"
    )
}

/// Headless Chromium's DOM of `url` after the page's scripts ran (at most
/// `--virtual-time-budget` of page time, 60 s of wall time), with a fresh
/// profile named after `tag`. The flags keep it off the network: this
/// machine refuses Chromium's background connections.
pub async fn chromium_dom(chromium: &std::path::Path, tag: &str, url: String) -> ToolOutput {
    let profile = TempDir::new(tag);
    let args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",
        "--virtual-time-budget=5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--user-data-dir={}", profile.path().display()),
        "--dump-dom".into(),
        url,
    ])
    .collect();
    run_tool(chromium, &args, Duration::from_secs(60)).await
}
