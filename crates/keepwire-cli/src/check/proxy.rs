//! `keepwire check proxy ADDR`: checks what crosses a proxy, both ways.
//!
//! The checker runs its own *recording origin* on 127.0.0.1 and talks to the
//! proxy over raw TCP. The origin records every request it receives (raw
//! head, body, connection) and answers from a per-path script
//! (`/kw/SCRIPT/N`), so that each check chooses how the origin behaves:
//! hop-by-hop headers in the response, a truncated body, a dropped POST, an
//! HTTP/1.0 close-delimited answer, an upgrade (`101 Switching Protocols`
//! for a request carrying `Upgrade: websocket`, then an echo of raw bytes), or
//! an echo of the path. A connection that starts with raw `KWTUNNEL` bytes
//! instead of a request is a tunnel (CONNECT) and is echoed back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::response::{MAX_BODY, MAX_HEAD, MAX_MESSAGE};
use super::server::{
    CheckOut, Ending, Parsed, Probe, ProbeError, Response, Target, failed, find, parse_response,
    show,
};
use super::{CheckResult, CommonArgs, Outcome, report};

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// The proxy to check: host:port.
    addr: String,
    /// Port of the recording origin on 127.0.0.1 (default: a free port).
    /// Needed with --reverse: configure the proxy to forward to it.
    #[arg(long, value_name = "PORT")]
    origin_port: Option<u16>,
    /// Treat ADDR as a reverse proxy (origin-form requests) that forwards to
    /// the recording origin on --origin-port. Default: a forward proxy
    /// (absolute-form requests `GET http://127.0.0.1:PORT/...`).
    #[arg(long)]
    reverse: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// One request as the recording origin received it.
#[derive(Debug, Clone)]
struct Seen {
    conn: u64,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

#[derive(Debug, Default)]
struct Log {
    requests: Vec<Seen>,
    /// Raw bytes received on tunnel connections, one entry per connection.
    tunnels: Vec<Vec<u8>>,
}

/// The recording origin.
struct Origin {
    port: u16,
    log: Arc<Mutex<Log>>,
}

/// The body of the `h10` script's close-delimited response.
const H10_BODY: &str = "close-delimited body 0123456789\n";

impl Origin {
    async fn start(port: Option<u16>) -> Result<Origin, String> {
        let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
            .await
            .map_err(|e| format!("cannot start the recording origin: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let log = Arc::new(Mutex::new(Log::default()));
        let l2 = log.clone();
        tokio::spawn(async move {
            let mut next = 0u64;
            while let Ok((stream, _)) = listener.accept().await {
                next += 1;
                tokio::spawn(serve_conn(stream, next, l2.clone()));
            }
        });
        Ok(Origin { port, log })
    }

    /// The requests whose target ends with `path`.
    fn seen(&self, path: &str) -> Vec<Seen> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.requests
            .iter()
            .filter(|s| s.target.ends_with(path))
            .cloned()
            .collect()
    }

    fn tunnel_bytes(&self, marker: &[u8]) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.tunnels.iter().any(|t| find(t, marker).is_some())
    }
}

/// The script of a request target: `SCRIPT` in `.../kw/SCRIPT/N`.
fn script_of(target: &str) -> &str {
    target
        .find("/kw/")
        .map(|i| &target[i + 4..])
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

async fn serve_conn(mut stream: TcpStream, conn: u64, log: Arc<Mutex<Log>>) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    const TUNNEL: &[u8] = b"KWTUNNEL";
    loop {
        // Read a head, or detect a raw tunnel.
        let head_end = loop {
            let n = buf.len().min(TUNNEL.len());
            if n > 0 && buf[..n] == TUNNEL[..n] {
                if n == TUNNEL.len() {
                    return echo_tunnel(stream, buf, log).await;
                }
            } else if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            } else if buf.len() > MAX_HEAD {
                // The origin bounds what it buffers like any server would.
                let _ = stream
                    .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = buf[..head_end].to_vec();
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let mut parts = request_line.split(' ');
        let _method = parts.next();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut seen = Seen {
            conn,
            target,
            version,
            headers,
            head,
            body: Vec::new(),
        };
        buf.drain(..head_end);
        // Recorded as soon as the head is complete (a body that never
        // completes still shows the request reached the origin).
        let idx = {
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            l.requests.push(seen.clone());
            l.requests.len() - 1
        };
        // The body: chunked (up to the last chunk, roughly) or Content-Length.
        let chunked = seen
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body_end = if chunked {
            loop {
                if let Some(i) = find(&buf, b"0\r\n\r\n") {
                    break i + 5;
                }
                if buf.len() > MAX_MESSAGE {
                    return;
                }
                match stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        } else {
            let n = seen
                .header("content-length")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if n > MAX_BODY {
                let _ = stream
                    .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
            while buf.len() < n {
                match stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&tmp[..k]),
                }
            }
            n
        };
        seen.body = buf.drain(..body_end).collect();
        let script = script_of(&seen.target).to_string();
        let path = seen.target.clone();
        let ka10 = seen.version == "HTTP/1.0" && seen.has_token("connection", "keep-alive");
        let close = seen.has_token("connection", "close") || (seen.version == "HTTP/1.0" && !ka10);
        let websocket = seen.has_token("upgrade", "websocket");
        log.lock().unwrap_or_else(|e| e.into_inner()).requests[idx] = seen;
        let reply: Vec<u8> = match script.as_str() {
            "hopresp" => b"HTTP/1.1 200 OK\r\nConnection: X-Bar\r\nX-Bar: 1\r\n\
                Keep-Alive: timeout=99\r\nProxy-Authenticate: Basic\r\n\
                Content-Length: 2\r\n\r\nok"
                .to_vec(),
            "trunc" => {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
                r.extend_from_slice(&[b'x'; 40]);
                let _ = stream.write_all(&r).await;
                let _ = stream.shutdown().await;
                return;
            }
            "drop" => {
                let _ = stream.shutdown().await;
                return;
            }
            "upgrade" if websocket => {
                let r = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                    Upgrade: websocket\r\n\r\n";
                if stream.write_all(r).await.is_err() {
                    return;
                }
                // From here on the connection is an opaque byte stream.
                return echo_tunnel(stream, buf, log).await;
            }
            "h10" => {
                let r = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{H10_BODY}");
                let _ = stream.write_all(r.as_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
            _ => {
                let ka = if ka10 {
                    "Connection: keep-alive\r\n"
                } else {
                    ""
                };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{ka}Content-Length: {}\r\n\r\n{path}",
                    path.len()
                )
                .into_bytes()
            }
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn echo_tunnel(mut stream: TcpStream, mut buf: Vec<u8>, log: Arc<Mutex<Log>>) {
    let idx = {
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        l.tunnels.push(buf.clone());
        l.tunnels.len() - 1
    };
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if stream.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                log.lock().unwrap_or_else(|e| e.into_inner()).tunnels[idx]
                    .extend_from_slice(&tmp[..n]);
            }
        }
    }
}

/// Everything a check needs: the proxy, the origin and how to address it.
struct Ctx {
    proxy: Target,
    origin: Origin,
    reverse: bool,
    next: AtomicU64,
}

impl Ctx {
    /// A fresh path for `script`, unique in this run.
    fn path(&self, script: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("/kw/{script}/{n}")
    }

    fn request(&self, method: &str, path: &str, version: &str, extra: &str) -> Vec<u8> {
        let port = self.origin.port;
        let (target, host) = if self.reverse {
            (path.to_string(), self.proxy.host.clone())
        } else {
            (
                format!("http://127.0.0.1:{port}{path}"),
                format!("127.0.0.1:{port}"),
            )
        };
        format!(
            "{method} {target} HTTP/{version}\r\nHost: {host}\r\nUser-Agent: keepwire-check\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn get(&self, path: &str, extra: &str) -> Vec<u8> {
        self.request("GET", path, "1.1", extra)
    }

    async fn connect(&self, deadline: Instant) -> Result<Probe, Outcome> {
        Probe::connect(&self.proxy, deadline)
            .await
            .map_err(failed("connect to the proxy"))
    }

    /// The one request the origin saw for `path`, or a FAIL.
    fn seen_once(&self, path: &str, resp: &Response) -> Result<Seen, Outcome> {
        self.origin.seen(path).into_iter().next().ok_or_else(|| {
            Outcome::fail(format!(
                "the request never reached the origin (proxy answered {})",
                resp.brief()
            ))
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Id {
    HopToOrigin,
    HopToClient,
    ProxyConnection,
    Dumb10,
    Truncation,
    PostOnce,
    Reframe,
    Pipeline,
    Smuggle(Vector),
    Via,
    Connect,
    Upgrade,
}

/// A request-smuggling vector (R10.1): a request whose framing is ambiguous,
/// followed by a `GET .../kw/smuggled/N` that must never reach the origin.
#[derive(Debug, Clone, Copy)]
enum Vector {
    /// `Content-Length: 4` and `Transfer-Encoding: chunked`.
    TeCl,
    /// `Content-Length: N` (the smuggled request's length) and
    /// `Content-Length: 0`.
    DupCl,
    /// `Transfer-Encoding: chunked, gzip` (chunked not final).
    NonFinalChunked,
    /// `Transfer-Encoding: chunked` with a chunk size of `5zz`.
    BadChunk,
}

type Spec = super::Spec<Id>;

const fn c(rule: &'static str, name: &'static str, id: Id) -> Spec {
    Spec {
        rule,
        name,
        id,
        slow: false,
        long: false,
    }
}

const CHECKS: &[Spec] = &[
    c("R3.2", "hop-by-hop removed toward origin", Id::HopToOrigin),
    c("R3.2", "hop-by-hop removed toward client", Id::HopToClient),
    c(
        "R6.2",
        "Proxy-Connection never forwarded",
        Id::ProxyConnection,
    ),
    c("R6.1", "HTTP/1.0 keep-alive does not hang", Id::Dumb10),
    c("R8.2", "truncated body passed on, closed", Id::Truncation),
    c("R8.3", "POST never delivered twice", Id::PostOnce),
    c("R5.4", "close-delimited response re-framed", Id::Reframe),
    c("R7.2", "pipelined responses in order", Id::Pipeline),
    c("R10.1", "TE + CL not passed on", Id::Smuggle(Vector::TeCl)),
    c(
        "R10.1",
        "differing Content-Length not passed on",
        Id::Smuggle(Vector::DupCl),
    ),
    c(
        "R10.1",
        "non-final chunked not passed on",
        Id::Smuggle(Vector::NonFinalChunked),
    ),
    c(
        "R10.1",
        "invalid chunk size not passed on",
        Id::Smuggle(Vector::BadChunk),
    ),
    c("R6.3", "Via added (RFC 9110 7.6.3)", Id::Via),
    c("R9.1", "upgrade relayed, bytes tunneled", Id::Upgrade),
    c("R9.3", "CONNECT tunnel relays bytes", Id::Connect),
];

pub fn run(args: ProxyArgs) -> Result<(), String> {
    if args.reverse && args.origin_port.is_none() {
        return Err("--reverse needs --origin-port (the port the proxy forwards to)".into());
    }
    let addr = args
        .addr
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let proxy = Target {
        addr: addr.to_string(),
        host: addr.to_string(),
        path: "/".to_string(),
        tls: false,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let results = rt.block_on(async {
        let origin = Origin::start(args.origin_port).await?;
        let ctx = Ctx {
            proxy,
            origin,
            reverse: args.reverse,
            next: AtomicU64::new(1),
        };
        Ok::<_, String>(run_checks(&ctx, &args.common).await)
    })?;
    if results.is_empty() {
        return Err(format!(
            "no check matches --only {}",
            args.common.only.as_deref().unwrap_or("")
        ));
    }
    report(&args.addr, &results, args.common.json)
}

async fn run_checks(ctx: &Ctx, common: &CommonArgs) -> Vec<CheckResult> {
    let total = common.total_or(super::DEFAULT_TOTAL);
    super::run_table(CHECKS, common, Duration::ZERO, total, |id, deadline| {
        run_one(id, ctx, deadline)
    })
    .await
}

async fn run_one(id: Id, ctx: &Ctx, deadline: Instant) -> CheckOut {
    match id {
        Id::HopToOrigin => hop_to_origin(ctx, deadline).await,
        Id::HopToClient => hop_to_client(ctx, deadline).await,
        Id::ProxyConnection => proxy_connection(ctx, deadline).await,
        Id::Dumb10 => dumb10(ctx, deadline).await,
        Id::Truncation => truncation(ctx, deadline).await,
        Id::PostOnce => post_once(ctx, deadline).await,
        Id::Reframe => reframe(ctx, deadline).await,
        Id::Pipeline => pipeline(ctx, deadline).await,
        Id::Smuggle(v) => smuggle(ctx, v, deadline).await,
        Id::Via => via(ctx, deadline).await,
        Id::Connect => connect(ctx, deadline).await,
        Id::Upgrade => upgrade(ctx, deadline).await,
    }
}

/// Sends one GET for a fresh `script` path with `extra` fields; returns the
/// path and the response.
async fn simple(
    ctx: &Ctx,
    script: &str,
    extra: &str,
    deadline: Instant,
) -> Result<(String, Response), Outcome> {
    let path = ctx.path(script);
    let mut p = ctx.connect(deadline).await?;
    p.send(&ctx.get(&path, extra))
        .await
        .map_err(failed("request"))?;
    let r = p.read_response(false).await.map_err(failed("response"))?;
    Ok((path, r))
}

async fn hop_to_origin(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let extra = "Connection: X-Hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
                 TE: trailers\r\nProxy-Connection: keep-alive\r\nX-End: 1\r\n";
    let (path, r) = simple(ctx, "hop", extra, deadline).await?;
    let s = ctx.seen_once(&path, &r)?;
    let mut leaked = Vec::new();
    if let Some(v) = s.header("connection") {
        if s.has_token("connection", "x-hop") {
            leaked.push(format!("Connection: {v}"));
        }
    }
    for name in ["X-Hop", "Proxy-Connection"] {
        if let Some(v) = s.header(name) {
            leaked.push(format!("{name}: {v}"));
        }
    }
    if let Some(v) = s.header("keep-alive") {
        if v.contains("timeout=5") {
            leaked.push(format!("Keep-Alive: {v}"));
        }
    }
    if let Some(v) = s.header("te") {
        if !s.has_token("connection", "te") {
            leaked.push(format!("TE: {v} (not named in Connection)"));
        }
    }
    if !leaked.is_empty() {
        return Ok(Outcome::fail(format!(
            "forwarded to the origin: {}",
            leaked.join("; ")
        )));
    }
    if s.header("x-end").is_none() {
        return Ok(Outcome::fail(
            "the end-to-end field X-End: 1 did not reach the origin",
        ));
    }
    let own = s
        .header("connection")
        .map(|v| format!(" (proxy's own Connection: {v})"))
        .unwrap_or_default();
    Ok(Outcome::pass(format!(
        "origin saw none of Connection-named X-Hop, Keep-Alive, TE, Proxy-Connection; X-End arrived{own}"
    )))
}

async fn hop_to_client(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let (_, r) = simple(ctx, "hopresp", "", deadline).await?;
    let mut leaked = Vec::new();
    if r.has_token("connection", "x-bar") {
        leaked.push(format!(
            "Connection: {}",
            r.header("connection").unwrap_or_default()
        ));
    }
    for name in ["X-Bar", "Proxy-Authenticate"] {
        if let Some(v) = r.header(name) {
            leaked.push(format!("{name}: {v}"));
        }
    }
    if let Some(v) = r.header("keep-alive") {
        if v.contains("timeout=99") {
            leaked.push(format!("Keep-Alive: {v}"));
        }
    }
    if !leaked.is_empty() {
        return Ok(Outcome::fail(format!(
            "origin's hop-by-hop fields reached the client: {}",
            leaked.join("; ")
        )));
    }
    Ok(Outcome::pass(format!(
        "{}; no X-Bar, Keep-Alive: timeout=99 or Proxy-Authenticate",
        r.brief()
    )))
}

async fn proxy_connection(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let (path, r) = simple(ctx, "pc", "Proxy-Connection: keep-alive\r\n", deadline).await?;
    let s = ctx.seen_once(&path, &r)?;
    match s.header("proxy-connection") {
        Some(v) => Ok(Outcome::fail(format!(
            "origin received Proxy-Connection: {v}"
        ))),
        None => Ok(Outcome::pass("origin received no Proxy-Connection")),
    }
}

async fn dumb10(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let mut p = ctx.connect(deadline).await?;
    let req = |path: &str| ctx.request("GET", path, "1.0", "Connection: Keep-Alive\r\n");
    p.send(&req(&ctx.path("ka10")))
        .await
        .map_err(failed("first request"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("first response"))?;
    let persists = !r1.close_delimited
        && !r1.has_token("connection", "close")
        && (r1.has_token("connection", "keep-alive") || r1.status_line.starts_with("HTTP/1.1"));
    if !persists {
        return match p.ending().await {
            Ending::Fin | Ending::Reset => Ok(Outcome::pass(format!(
                "proxy declined keep-alive and closed: {}",
                r1.brief()
            ))),
            other => Ok(Outcome::fail(format!(
                "{} does not keep the connection, but then {other}",
                r1.brief()
            ))),
        };
    }
    let t = Instant::now();
    p.send(&req(&ctx.path("ka10")))
        .await
        .map_err(failed("second request"))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "2 responses on one HTTP/1.0 keep-alive connection: {} / {} (second in {:?})",
            r1.brief(),
            r2.status_line,
            t.elapsed()
        ))),
        Err(e @ ProbeError::Timeout { .. }) => Ok(Outcome::fail(format!(
            "{} kept the connection, but the second request hung for {:?}: {e} \
             (dumb proxy: Connection: Keep-Alive forwarded?)",
            r1.brief(),
            t.elapsed()
        ))),
        Err(e) => Ok(Outcome::warn(format!(
            "{} kept the connection, but the second request got: {e}",
            r1.brief()
        ))),
    }
}

async fn truncation(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let path = ctx.path("trunc");
    let mut p = ctx.connect(deadline).await?;
    p.send(&ctx.get(&path, ""))
        .await
        .map_err(failed("request"))?;
    let origin = "origin sent Content-Length: 100 and 40 bytes, then closed";
    match p.read_response(false).await {
        Ok(r) if r.status >= 500 => Ok(Outcome::warn(format!(
            "{origin}; proxy answered {} instead of passing the truncated response on",
            r.brief()
        ))),
        Ok(r) if r.close_delimited => Ok(Outcome::warn(format!(
            "{origin}; proxy relayed it close-delimited ({}), so the client cannot see the truncation",
            r.brief()
        ))),
        Ok(r) => Ok(Outcome::fail(format!(
            "{origin}; client got a complete response: {} with {} body bytes (length fixed or padded)",
            r.brief(),
            r.body_len
        ))),
        Err(e @ (ProbeError::Eof { .. } | ProbeError::Reset { .. })) => {
            let head_end = find(&p.buf, b"\r\n\r\n").map(|i| i + 4);
            let status = match head_end {
                Some(_) => match parse_response(&p.buf, true, false) {
                    Parsed::Done(r, _) => r.brief(),
                    _ => "an unparsable head".into(),
                },
                None => "no complete head".into(),
            };
            let body = head_end.map(|h| p.buf.len() - h).unwrap_or(0);
            Ok(Outcome::pass(format!(
                "{origin}; client got {status}, {body} bytes after the head, then {e}"
            )))
        }
        Err(e @ ProbeError::Timeout { .. }) => {
            let body = find(&p.buf, b"\r\n\r\n").map(|i| p.buf.len() - i - 4);
            Ok(Outcome::fail(format!(
                "{origin}; client got {} bytes ({} after the head) and the connection \
                 stayed open ({e}): the client cannot see the truncation",
                p.buf.len(),
                body.unwrap_or(0)
            )))
        }
        Err(e) => Err(failed("response")(e)),
    }
}

async fn post_once(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let path = ctx.path("drop");
    let mut p = ctx.connect(deadline).await?;
    let mut req = ctx.request("POST", &path, "1.1", "Content-Length: 5\r\n");
    req.extend_from_slice(b"hello");
    p.send(&req).await.map_err(failed("request"))?;
    let r = p.read_response(false).await;
    // Give a late retry a moment to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = ctx.origin.seen(&path);
    let conns: Vec<u64> = seen.iter().map(|s| s.conn).collect();
    if seen.len() > 1 {
        return Ok(Outcome::fail(format!(
            "origin received the POST {} times (origin connections {conns:?}): a non-idempotent request was retried",
            seen.len()
        )));
    }
    if seen.is_empty() {
        return Ok(Outcome::fail(match r {
            Ok(r) => format!(
                "the POST never reached the origin (proxy answered {})",
                r.brief()
            ),
            Err(e) => format!("the POST never reached the origin ({e})"),
        }));
    }
    let s = &seen[0];
    if s.body != b"hello" {
        return Ok(Outcome::fail(format!(
            "origin received the POST with body {}",
            show(&s.body)
        )));
    }
    match r {
        Ok(r) if r.status == 502 => Ok(Outcome::pass(format!(
            "origin dropped the POST without answering; client got {}; origin saw it once",
            r.brief()
        ))),
        Ok(r) if r.status >= 500 => Ok(Outcome::warn(format!(
            "client got {} (502 expected); origin saw the POST once",
            r.brief()
        ))),
        Ok(r) => Ok(Outcome::fail(format!(
            "origin dropped the POST without answering, but the client got {}",
            r.brief()
        ))),
        Err(e) => Ok(Outcome::warn(format!(
            "origin saw the POST once, but the client got no 5xx: {e}"
        ))),
    }
}

async fn reframe(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let path = ctx.path("h10");
    let mut p = ctx.connect(deadline).await?;
    p.send(&ctx.get(&path, ""))
        .await
        .map_err(failed("request"))?;
    let r = match p.read_response(false).await {
        Ok(r) => r,
        Err(e @ ProbeError::Timeout { .. }) => {
            let head = find(&p.buf, b"\r\n\r\n").map(|i| &p.buf[..i]);
            let framed = head.is_some_and(|h| {
                let h = String::from_utf8_lossy(h).to_ascii_lowercase();
                h.contains("\ncontent-length:") || h.contains("\ntransfer-encoding:")
            });
            let what = match head {
                None => "no complete head".to_string(),
                Some(_) if framed => "a framed response that never completed".to_string(),
                Some(h) => format!(
                    "{} with neither Content-Length nor chunked",
                    show(&h[..h.len().min(60)])
                ),
            };
            return Ok(Outcome::fail(format!(
                "origin sent a {}-byte close-delimited body; client got {} bytes ({what}) \
                 and the connection stayed open ({e}): the client cannot find the end of the body",
                H10_BODY.len(),
                p.buf.len()
            )));
        }
        Err(e) => return Err(failed("response")(e)),
    };
    if r.body != H10_BODY.as_bytes() {
        return Ok(Outcome::fail(format!(
            "origin sent a {}-byte close-delimited body; client got {} with {}",
            H10_BODY.len(),
            r.brief(),
            show(&r.body)
        )));
    }
    if r.close_delimited {
        return Ok(Outcome::warn(format!(
            "relayed close-delimited ({}); the client connection cannot persist",
            r.brief()
        )));
    }
    let framing = if r.header("transfer-encoding").is_some() {
        "chunked"
    } else {
        "Content-Length"
    };
    if r.has_token("connection", "close") {
        return Ok(Outcome::warn(format!(
            "re-framed ({framing}) but the proxy closes the client connection: {}",
            r.brief()
        )));
    }
    let next = ctx.path("echo");
    p.send(&ctx.get(&next, ""))
        .await
        .map_err(failed("follow-up request"))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "re-framed with {framing}, complete {}-byte body; connection reused ({})",
            r.body_len, r2.status_line
        ))),
        Err(e) => Ok(Outcome::warn(format!(
            "re-framed with {framing}, but the client connection was not usable: {e}"
        ))),
    }
}

async fn pipeline(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let paths: Vec<String> = (0..3).map(|_| ctx.path("echo")).collect();
    let mut burst = Vec::new();
    for path in &paths {
        burst.extend(ctx.get(path, ""));
    }
    let mut p = ctx.connect(deadline).await?;
    p.send(&burst).await.map_err(failed("pipelined burst"))?;
    for (i, path) in paths.iter().enumerate() {
        let r = match p.read_response(false).await {
            Ok(r) => r,
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "{i} of 3 pipelined requests answered, then {e}"
                )));
            }
        };
        if r.status != 200 || !r.body.ends_with(path.as_bytes()) {
            return Ok(Outcome::fail(format!(
                "response {} is {} with body {} (expected the echo of {path})",
                i + 1,
                r.status_line,
                show(&r.body)
            )));
        }
        if i < 2 && (r.has_token("connection", "close") || r.close_delimited) {
            return Ok(Outcome::warn(format!(
                "proxy closed mid-pipeline after {} of 3: {}",
                i + 1,
                r.brief()
            )));
        }
    }
    Ok(Outcome::pass(format!(
        "3 pipelined responses in order ({})",
        paths.join(", ")
    )))
}

async fn smuggle(ctx: &Ctx, vector: Vector, deadline: Instant) -> CheckOut {
    let post = ctx.path("smug");
    let hidden = ctx.path("smuggled");
    let hidden_req = ctx.get(&hidden, "");
    let (fields, body): (String, &[u8]) = match vector {
        Vector::TeCl => (
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n".into(),
            b"0\r\n\r\n",
        ),
        Vector::DupCl => (
            format!(
                "Content-Length: {}\r\nContent-Length: 0\r\n",
                hidden_req.len()
            ),
            b"",
        ),
        Vector::NonFinalChunked => ("Transfer-Encoding: chunked, gzip\r\n".into(), b"0\r\n\r\n"),
        Vector::BadChunk => (
            "Transfer-Encoding: chunked\r\n".into(),
            b"5zz\r\nhello\r\n0\r\n\r\n",
        ),
    };
    let mut bytes = ctx.request("POST", &post, "1.1", &fields);
    bytes.extend_from_slice(body);
    bytes.extend(hidden_req);
    let mut p = ctx.connect(deadline).await?;
    p.send(&bytes).await.map_err(failed("request"))?;
    let r = p.read_response(false).await;
    // Whatever happened, let the origin see what it will see.
    let _ = p.ending().await;
    let smuggled = ctx.origin.seen(&hidden);
    let posted = ctx.origin.seen(&post);
    if let Some(s) = smuggled.first() {
        return Ok(Outcome::fail(format!(
            "the smuggled request reached the origin: {}",
            show(&s.head)
        )));
    }
    let note = if posted.is_empty() {
        "nothing reached the origin".to_string()
    } else {
        format!(
            "the POST reached the origin as {}",
            show(&posted[0].head[..posted[0].head.len().min(200)])
        )
    };
    match r {
        Ok(r) if (400..500).contains(&r.status) => {
            Ok(Outcome::pass(format!("{}; {note}", r.brief())))
        }
        Ok(r) => Ok(Outcome::warn(format!(
            "accepted with {} (400 expected); smuggled request not forwarded; {note}",
            r.brief()
        ))),
        Err(e) => Ok(Outcome::warn(format!(
            "no status ({e}); smuggled request not forwarded; {note}"
        ))),
    }
}

async fn via(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let (path, r) = simple(ctx, "echo", "", deadline).await?;
    let s = ctx.seen_once(&path, &r)?;
    let back = r
        .header("via")
        .map(|v| format!("; response Via: {v}"))
        .unwrap_or_else(|| "; no Via on the response".into());
    match s.header("via") {
        Some(v) => Ok(Outcome::pass(format!("origin saw Via: {v}{back}"))),
        None => Ok(Outcome::warn(format!(
            "origin saw no Via header (SHOULD add one){back}"
        ))),
    }
}

async fn connect(ctx: &Ctx, deadline: Instant) -> CheckOut {
    if ctx.reverse {
        return Ok(Outcome::skip("CONNECT is for forward proxies (--reverse)"));
    }
    let authority = format!("127.0.0.1:{}", ctx.origin.port);
    let mut p = ctx.connect(deadline).await?;
    p.send(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(failed("CONNECT"))?;
    let r = p
        .read_response(true)
        .await
        .map_err(failed("CONNECT response"))?;
    if r.status == 403 || r.status == 405 {
        return Ok(Outcome::skip(format!(
            "CONNECT to port {} refused: {} (proxy restricts CONNECT ports?)",
            ctx.origin.port,
            r.brief()
        )));
    }
    if !(200..300).contains(&r.status) {
        return Ok(Outcome::fail(format!(
            "CONNECT {authority} answered {}",
            r.brief()
        )));
    }
    let marker = format!("KWTUNNEL {}\n", ctx.next.fetch_add(1, Ordering::Relaxed));
    p.send(marker.as_bytes())
        .await
        .map_err(failed("bytes into the tunnel"))?;
    while find(&p.buf, marker.as_bytes()).is_none() {
        match p.fill(deadline).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Outcome::fail(format!(
                    "tunnel closed after {} bytes back: {}",
                    p.buf.len(),
                    show(&p.buf)
                )));
            }
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "{} then {} bytes back through the tunnel ({}): {e}",
                    r.status_line,
                    p.buf.len(),
                    show(&p.buf)
                )));
            }
        }
    }
    if !ctx.origin.tunnel_bytes(marker.as_bytes()) {
        return Ok(Outcome::fail(
            "the echo came back but the origin never saw the bytes",
        ));
    }
    Ok(Outcome::pass(format!(
        "{}; {} raw bytes relayed to the origin and echoed back",
        r.status_line,
        marker.len()
    )))
}

/// R9.1: an upgrade request is relayed, the origin's 101 comes back, and raw
/// bytes then cross the proxy both ways.
async fn upgrade(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let path = ctx.path("upgrade");
    let mut p = ctx.connect(deadline).await?;
    p.send(&ctx.get(&path, "Connection: Upgrade\r\nUpgrade: websocket\r\n"))
        .await
        .map_err(failed("upgrade request"))?;
    let r = match p.read_response(true).await {
        Ok(r) => r,
        Err(e @ ProbeError::Timeout { .. }) => {
            return Ok(Outcome::fail(format!(
                "no answer to the upgrade request ({e}): the proxy hangs"
            )));
        }
        Err(e) => return Err(failed("upgrade response")(e)),
    };
    let seen = ctx.origin.seen(&path);
    let origin_saw = match seen.first() {
        None => "the request never reached the origin".to_string(),
        Some(s) => match s.header("upgrade") {
            Some(v) => format!("origin saw Upgrade: {v} and answered 101"),
            None => "origin saw no Upgrade field and answered 200".to_string(),
        },
    };
    if r.status != 101 {
        return Ok(Outcome::warn(format!(
            "proxy answered the upgrade request with {} ({origin_saw}): upgrades are not relayed",
            r.brief()
        )));
    }
    if !seen.iter().any(|s| s.has_token("upgrade", "websocket")) {
        return Ok(Outcome::fail(format!(
            "client got {} but {origin_saw}",
            r.status_line
        )));
    }
    let marker = format!("KWUPGRADE {}\n", ctx.next.fetch_add(1, Ordering::Relaxed));
    p.send(marker.as_bytes())
        .await
        .map_err(failed("bytes into the upgraded connection"))?;
    while p.buf.len() < marker.len() {
        match p.fill(deadline).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Outcome::fail(format!(
                    "{}, then the connection closed after {} bytes back: {}",
                    r.status_line,
                    p.buf.len(),
                    show(&p.buf)
                )));
            }
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "{}, then {} of {} echoed bytes back through the tunnel ({}): {e}",
                    r.status_line,
                    p.buf.len(),
                    marker.len(),
                    show(&p.buf)
                )));
            }
        }
    }
    if !p.buf.starts_with(marker.as_bytes()) {
        return Ok(Outcome::fail(format!(
            "{}, then sent {} but got back {}: the tunnel is corrupted",
            r.status_line,
            show(marker.as_bytes()),
            show(&p.buf)
        )));
    }
    if !ctx.origin.tunnel_bytes(marker.as_bytes()) {
        return Ok(Outcome::fail(
            "the echo came back but the origin never saw the bytes",
        ));
    }
    let up = r
        .header("upgrade")
        .map(|v| format!(" (Upgrade: {v})"))
        .unwrap_or_default();
    Ok(Outcome::pass(format!(
        "{}{up}; origin saw Upgrade: websocket; {} raw bytes relayed to the origin and echoed back",
        r.status_line,
        marker.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::script_of;

    #[test]
    fn scripts() {
        assert_eq!(script_of("/kw/hop/3"), "hop");
        assert_eq!(script_of("http://127.0.0.1:9/kw/trunc/4"), "trunc");
        assert_eq!(script_of("/other"), "");
    }
}
