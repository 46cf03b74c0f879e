//! `keepwire check server URL`: probes an origin over raw TCP.
//!
//! Every request is written by hand (some deliberately malformed) and every
//! response is parsed by the small, strict reader below, so that the checker
//! sees exactly the bytes, the framing and the way the connection ends (FIN,
//! RST or still open).

use std::fmt;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) use super::response::{MAX_MESSAGE, Parsed, Response, find, parse_response, show};
use super::{CheckResult, CommonArgs, Outcome, report};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The origin to probe: http://host[:port][/path] (with --http2 also
    /// https://). Requests go to path (default /), which should answer a
    /// plain GET with 200 and a non-empty body.
    url: String,
    /// Run the HTTP/2 abuse checks instead of the HTTP/1 ones: h2c with
    /// prior knowledge for http://, h2 by ALPN for https://.
    #[arg(long)]
    http2: bool,
    /// With https:// (--http2): accept any server certificate.
    #[arg(short = 'k', long)]
    insecure: bool,
    /// --http2: the request body size the server must refuse beyond; the
    /// oversized-body checks declare (or stream) one byte more.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body: u64,
    /// --http2: how long the zero-window check waits for the server to
    /// reset the stalled stream or close the connection.
    #[arg(long, default_value = "90s", value_parser = crate::common::parse_duration)]
    stall_timeout: Duration,
    /// --http2: streams each reset check opens and resets.
    #[arg(long, default_value_t = 1000)]
    resets: u32,
    #[command(flatten)]
    common: CommonArgs,
}

/// Where to connect and what to put in the request line and `Host`.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) addr: String,
    pub(super) host: String,
    pub(super) path: String,
    /// https:// (only with --http2).
    pub(super) tls: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(s) => {
                return Err(format!(
                    "only http:// and https:// URLs can be checked, not {s}://"
                ));
            }
            None => return Err(format!("URL {url:?} needs http://")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("URL {url:?} has no host"))?;
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host = auth.host();
        let addr = if host.starts_with('[') {
            format!("{host}:{port}")
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| "/".to_string());
        Ok(Target {
            addr,
            host: auth.as_str().to_string(),
            path,
            tls,
        })
    }

    /// `path` with one more query parameter.
    fn path_with(&self, param: &str) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!("{}{sep}{param}", self.path)
    }

    /// A GET (or other bodiless method) request head.
    fn request(&self, method: &str, path: &str, version: &str, extra: &str) -> Vec<u8> {
        format!(
            "{method} {path} HTTP/{version}\r\nHost: {}\r\nUser-Agent: keepwire-check\r\n{extra}\r\n",
            self.host
        )
        .into_bytes()
    }

    fn get(&self, extra: &str) -> Vec<u8> {
        self.request("GET", &self.path, "1.1", extra)
    }
}

/// Why a probe could not get what it waited for.
#[derive(Debug)]
pub(super) enum ProbeError {
    Connect(String),
    Write(String),
    /// FIN before a complete response; `got` bytes of it were buffered.
    Eof {
        got: usize,
    },
    /// RST (ECONNRESET) before a complete response.
    Reset {
        got: usize,
    },
    Timeout {
        got: usize,
    },
    Io(String),
    Malformed(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Connect(e) => write!(f, "connect failed: {e}"),
            ProbeError::Write(e) => write!(f, "write failed: {e}"),
            ProbeError::Eof { got: 0 } => write!(f, "connection closed (FIN), no response"),
            ProbeError::Eof { got } => {
                write!(f, "connection closed (FIN) after {got} bytes of a response")
            }
            ProbeError::Reset { got } => write!(
                f,
                "connection reset (RST) with {got} bytes of a response received"
            ),
            ProbeError::Timeout { got: 0 } => write!(f, "no response before the time limit"),
            ProbeError::Timeout { got } => {
                write!(f, "timed out with {got} bytes of an incomplete response")
            }
            ProbeError::Io(e) => write!(f, "read failed: {e}"),
            ProbeError::Malformed(e) => write!(f, "malformed response: {e}"),
        }
    }
}

/// How a connection ended (or did not) after the last expected response.
pub(super) enum Ending {
    Fin,
    Reset,
    Open,
    /// More bytes arrived.
    Data(Vec<u8>),
    Error(String),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Fin => write!(f, "FIN"),
            Ending::Reset => write!(f, "RST"),
            Ending::Open => write!(f, "connection still open"),
            Ending::Data(d) => write!(f, "{} more bytes: {}", d.len(), show(d)),
            Ending::Error(e) => write!(f, "read error: {e}"),
        }
    }
}

/// One raw connection to the target with a read buffer and a deadline.
pub(super) struct Probe {
    pub(super) stream: TcpStream,
    pub(super) buf: Vec<u8>,
    pub(super) eof: bool,
    deadline: Instant,
}

impl Probe {
    pub(super) async fn connect(target: &Target, deadline: Instant) -> Result<Probe, ProbeError> {
        let stream = tokio::time::timeout_at(deadline.into(), TcpStream::connect(&target.addr))
            .await
            .map_err(|_| ProbeError::Connect(format!("{} timed out", target.addr)))?
            .map_err(|e| ProbeError::Connect(format!("{}: {e}", target.addr)))?;
        let _ = stream.set_nodelay(true);
        Ok(Probe {
            stream,
            buf: Vec::new(),
            eof: false,
            deadline,
        })
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), ProbeError> {
        match tokio::time::timeout_at(self.deadline.into(), self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProbeError::Write(e.to_string())),
            Err(_) => Err(ProbeError::Write("timed out".into())),
        }
    }

    /// Reads more bytes; `Ok(false)` on EOF.
    pub(super) async fn fill(&mut self, deadline: Instant) -> Result<bool, ProbeError> {
        if self.eof {
            return Ok(false);
        }
        if self.buf.len() > MAX_MESSAGE {
            return Err(ProbeError::Malformed(format!(
                "{} bytes buffered without a complete response (cap {MAX_MESSAGE})",
                self.buf.len()
            )));
        }
        let mut tmp = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline.into(), self.stream.read(&mut tmp)).await {
            Err(_) => Err(ProbeError::Timeout {
                got: self.buf.len(),
            }),
            Ok(Ok(0)) => {
                self.eof = true;
                Ok(false)
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Err(ProbeError::Reset {
                    got: self.buf.len(),
                })
            }
            Ok(Err(e)) => Err(ProbeError::Io(e.to_string())),
        }
    }

    pub(super) async fn read_response(&mut self, head_only: bool) -> Result<Response, ProbeError> {
        self.read_response_by(head_only, self.deadline).await
    }

    pub(super) async fn read_response_by(
        &mut self,
        head_only: bool,
        deadline: Instant,
    ) -> Result<Response, ProbeError> {
        loop {
            match parse_response(&self.buf, head_only, self.eof) {
                Parsed::Done(r, n) => {
                    self.buf.drain(..n);
                    return Ok(r);
                }
                Parsed::Bad(e) => return Err(ProbeError::Malformed(e)),
                Parsed::Partial if self.eof => {
                    return Err(ProbeError::Eof {
                        got: self.buf.len(),
                    });
                }
                Parsed::Partial => {
                    self.fill(deadline).await?;
                }
            }
        }
    }

    /// Waits (until the deadline) for the connection to end.
    pub(super) async fn ending(&mut self) -> Ending {
        if !self.buf.is_empty() {
            return Ending::Data(std::mem::take(&mut self.buf));
        }
        match self.fill(self.deadline).await {
            Ok(false) => Ending::Fin,
            Ok(true) => Ending::Data(std::mem::take(&mut self.buf)),
            Err(ProbeError::Reset { .. }) => Ending::Reset,
            Err(ProbeError::Timeout { .. }) => Ending::Open,
            Err(e) => Ending::Error(e.to_string()),
        }
    }
}

/// Turns a probe error into a FAIL that says what was being done.
pub(super) fn failed(what: &'static str) -> impl FnOnce(ProbeError) -> Outcome {
    move |e| Outcome::fail(format!("{what}: {e}"))
}

pub(super) type CheckOut = Result<Outcome, Outcome>;

#[derive(Debug, Clone, Copy)]
enum Id {
    Persist11,
    KeepAlive10,
    Close10,
    CloseMidPipeline,
    MaxRequests,
    IdleObserved,
    Slowloris,
    CloseHonoured,
    Pipeline,
    CloseThenMore,
    HalfClose,
    Smuggle(Vector),
    Host(HostCase),
    AbsoluteForm,
    LongLine,
    ManyHeaders,
    Head,
    NotModified,
    Expect,
    KeepAliveAdvertised,
}

#[derive(Debug, Clone, Copy)]
enum Vector {
    TeCl,
    TwoCl,
    BadCl,
    TeNotFinal,
    Te10,
    BadChunk,
    SpaceColon,
    /// `Content-Length: ,` (an empty list is not a length).
    CommaCl,
    /// An empty chunk-size line (a lenient parser reads it as the last chunk).
    EmptyChunk,
    /// A chunk-size line of whitespace only.
    SpaceChunk,
    /// A chunk-size line ended by a bare LF.
    LfChunk,
    /// A control byte inside a chunk extension.
    CtlExt,
    /// A trailer section ended by bare LFs instead of CRLF CRLF.
    LfTrailer,
}

/// What is wrong with `Host` (RFC 9112 §3.2: each is a 400).
#[derive(Debug, Clone, Copy)]
enum HostCase {
    Missing,
    Duplicate,
    Invalid,
}

/// One check: rule, short name, what to run, and whether it needs a long
/// wait (run only with `--slow`).
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

const fn slow(rule: &'static str, name: &'static str, id: Id) -> Spec {
    Spec {
        rule,
        name,
        id,
        slow: true,
        long: false,
    }
}

const CHECKS: &[Spec] = &[
    c("R5.3", "HTTP/1.1 persistence", Id::Persist11),
    c("R5.1", "HTTP/1.0 keep-alive", Id::KeepAlive10),
    c("R5.1", "HTTP/1.0 without keep-alive closes", Id::Close10),
    c("R5.3", "Connection: close honoured", Id::CloseHonoured),
    c("R5.3", "close mid-pipeline ends it", Id::CloseMidPipeline),
    c("R7.2", "pipelined responses in order", Id::Pipeline),
    c(
        "R8.4",
        "requests after close not reset away",
        Id::CloseThenMore,
    ),
    c("R8.4", "client half-close answered", Id::HalfClose),
    c("R10.1", "TE + CL rejected", Id::Smuggle(Vector::TeCl)),
    c(
        "R10.1",
        "differing CLs rejected",
        Id::Smuggle(Vector::TwoCl),
    ),
    c("R10.1", "invalid CL rejected", Id::Smuggle(Vector::BadCl)),
    c(
        "R10.1",
        "TE chunked not final rejected",
        Id::Smuggle(Vector::TeNotFinal),
    ),
    c(
        "R10.1",
        "TE in HTTP/1.0 not trusted",
        Id::Smuggle(Vector::Te10),
    ),
    c(
        "R10.1",
        "invalid chunk size rejected",
        Id::Smuggle(Vector::BadChunk),
    ),
    c(
        "R10.1",
        "space before colon rejected",
        Id::Smuggle(Vector::SpaceColon),
    ),
    c(
        "R10.1",
        "Content-Length: , rejected",
        Id::Smuggle(Vector::CommaCl),
    ),
    c(
        "R10.3",
        "HTTP/1.1 without Host rejected",
        Id::Host(HostCase::Missing),
    ),
    c(
        "R10.3",
        "duplicate Host rejected",
        Id::Host(HostCase::Duplicate),
    ),
    c(
        "R10.3",
        "invalid Host rejected",
        Id::Host(HostCase::Invalid),
    ),
    c(
        "R10.3",
        "absolute-form target wins over Host",
        Id::AbsoluteForm,
    ),
    c(
        "R10.3",
        "empty chunk-size line rejected",
        Id::Smuggle(Vector::EmptyChunk),
    ),
    c(
        "R10.3",
        "whitespace chunk-size line rejected",
        Id::Smuggle(Vector::SpaceChunk),
    ),
    c(
        "R10.3",
        "bare LF after chunk size rejected",
        Id::Smuggle(Vector::LfChunk),
    ),
    c(
        "R10.3",
        "control byte in chunk extension rejected",
        Id::Smuggle(Vector::CtlExt),
    ),
    c(
        "R10.3",
        "bare-LF trailers rejected",
        Id::Smuggle(Vector::LfTrailer),
    ),
    c("R10.2", "10 KB request line bounded", Id::LongLine),
    c("R10.2", "300 header fields bounded", Id::ManyHeaders),
    slow("R10.2", "slowloris head bounded in time", Id::Slowloris),
    c("R5.4", "HEAD response has no body", Id::Head),
    c("R5.4", "304 response has no body", Id::NotModified),
    c("R5.4", "Expect: 100-continue answered", Id::Expect),
    c("R5.2", "Keep-Alive advertised", Id::KeepAliveAdvertised),
    slow("R5.2", "idle timeout observed", Id::IdleObserved),
    c("R5.6", "max requests announced with close", Id::MaxRequests),
];

/// Time limit of a `--slow` check.
const SLOW_LIMIT: Duration = Duration::from_secs(60);

pub fn run(args: ServerArgs) -> Result<(), String> {
    let target = Target::parse(&args.url)?;
    if target.tls && !args.http2 {
        return Err("https:// is checked over HTTP/2 only: add --http2".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let results = if args.http2 {
        let opts = super::h2::Options {
            insecure: args.insecure,
            max_body: args.max_body,
            stall_timeout: args.stall_timeout,
            resets: args.resets,
        };
        rt.block_on(super::h2::run_checks(&target, &opts, &args.common))
    } else {
        rt.block_on(run_checks(&target, &args.common))
    };
    if results.is_empty() {
        return Err(format!(
            "no check matches --only {}",
            args.common.only.as_deref().unwrap_or("")
        ));
    }
    report(&args.url, &results, args.common.json)
}

async fn run_checks(target: &Target, common: &CommonArgs) -> Vec<CheckResult> {
    let total = common.total_or(super::DEFAULT_TOTAL);
    super::run_table(CHECKS, common, SLOW_LIMIT, total, |id, deadline| {
        run_one(id, target, deadline)
    })
    .await
}

/// `R10` matches R10.1 and R10.2 but not R1; `R10.1` matches only R10.1.
pub(super) fn rule_matches(rule: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('.');
    rule == prefix || rule.starts_with(&format!("{prefix}."))
}

async fn run_one(id: Id, t: &Target, deadline: Instant) -> CheckOut {
    match id {
        Id::Persist11 => persist11(t, deadline).await,
        Id::KeepAlive10 => keep_alive10(t, deadline).await,
        Id::Close10 => close10(t, deadline).await,
        Id::CloseMidPipeline => close_mid_pipeline(t, deadline).await,
        Id::MaxRequests => max_requests(t, deadline).await,
        Id::IdleObserved => idle_observed(t, deadline).await,
        Id::Slowloris => slowloris(t, deadline).await,
        Id::CloseHonoured => close_honoured(t, deadline).await,
        Id::Pipeline => pipeline(t, deadline).await,
        Id::CloseThenMore => close_then_more(t, deadline).await,
        Id::HalfClose => half_close(t, deadline).await,
        Id::Smuggle(v) => smuggle(t, v, deadline).await,
        Id::Host(case) => host_check(t, case, deadline).await,
        Id::AbsoluteForm => absolute_form(t, deadline).await,
        Id::LongLine => long_line(t, deadline).await,
        Id::ManyHeaders => many_headers(t, deadline).await,
        Id::Head => head(t, deadline).await,
        Id::NotModified => not_modified(t, deadline).await,
        Id::Expect => expect(t, deadline).await,
        Id::KeepAliveAdvertised => keep_alive_advertised(t, deadline).await,
    }
}

async fn persist11(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("first request"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("first response"))?;
    if r1.has_token("connection", "close") {
        return Ok(Outcome::fail(format!(
            "first HTTP/1.1 response closes: {}",
            r1.brief()
        )));
    }
    if r1.close_delimited {
        return Ok(Outcome::fail(format!(
            "first response is not self-delimited: {}",
            r1.brief()
        )));
    }
    p.send(&t.get(""))
        .await
        .map_err(|e| Outcome::fail(format!("second request after {}: {e}", r1.status_line)))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "2 responses on one connection: {} / {}",
            r1.status_line,
            r2.brief()
        ))),
        Err(e) => Ok(Outcome::fail(format!(
            "after {} (no Connection: close) the second request got: {e}",
            r1.status_line
        ))),
    }
}

async fn keep_alive10(t: &Target, deadline: Instant) -> CheckOut {
    let req = t.request("GET", &t.path, "1.0", "Connection: keep-alive\r\n");
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&req).await.map_err(failed("request"))?;
    let r1 = p.read_response(false).await.map_err(failed("response"))?;
    if !r1.has_token("connection", "keep-alive") {
        let end = p.ending().await;
        return Ok(Outcome::warn(format!(
            "keep-alive not granted: {}; then {end}",
            r1.brief()
        )));
    }
    if r1.close_delimited {
        return Ok(Outcome::fail(format!(
            "says keep-alive but the body is close-delimited: {}",
            r1.brief()
        )));
    }
    p.send(&req)
        .await
        .map_err(|e| Outcome::fail(format!("said keep-alive ({}) but: {e}", r1.status_line)))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "{}; second request answered: {}",
            r1.brief(),
            r2.status_line
        ))),
        Err(e) => Ok(Outcome::fail(format!(
            "said keep-alive ({}) but the second request got: {e}",
            r1.status_line
        ))),
    }
}

async fn close_honoured(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("Connection: close\r\n"))
        .await
        .map_err(failed("request"))?;
    let r = p.read_response(false).await.map_err(failed("response"))?;
    let sent = Instant::now();
    match p.ending().await {
        Ending::Fin | Ending::Reset => Ok(Outcome::pass(format!(
            "{}; then closed after {} ms",
            r.brief(),
            sent.elapsed().as_millis()
        ))),
        other => Ok(Outcome::fail(format!(
            "{}; then {other} (expected the server to close)",
            r.brief()
        ))),
    }
}

/// Finds `kw-pipe=N` in a body (servers that echo the request).
fn pipe_marker(body: &[u8]) -> Option<u32> {
    let i = find(body, b"kw-pipe=")?;
    let digits: String = body[i + 8..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| b as char)
        .collect();
    digits.parse().ok()
}

async fn pipeline(t: &Target, deadline: Instant) -> CheckOut {
    const N: u32 = 5;
    let mut burst = Vec::new();
    for i in 1..=N {
        burst.extend(t.request("GET", &t.path_with(&format!("kw-pipe={i}")), "1.1", ""));
    }
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&burst).await.map_err(failed("pipelined burst"))?;
    let mut lines = Vec::new();
    let mut markers = Vec::new();
    for i in 1..=N {
        match p.read_response(false).await {
            Ok(r) => {
                lines.push(r.status.to_string());
                if let Some(m) = pipe_marker(&r.body) {
                    markers.push(m);
                }
                if i < N && (r.has_token("connection", "close") || r.close_delimited) {
                    return Ok(Outcome::warn(format!(
                        "server closed mid-pipeline after {i} of {N}: {}",
                        r.brief()
                    )));
                }
            }
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "{} of {N} pipelined requests answered ({}), then {e}",
                    i - 1,
                    lines.join(" ")
                )));
            }
        }
    }
    if !markers.is_empty() && markers != (1..=N).collect::<Vec<_>>() {
        return Ok(Outcome::fail(format!(
            "responses out of order: bodies echo requests {markers:?}"
        )));
    }
    p.send(&t.get(""))
        .await
        .map_err(|e| Outcome::fail(format!("{N} responses, then the connection: {e}")))?;
    let after = p.read_response(false).await.map_err(|e| {
        Outcome::fail(format!(
            "{N} responses ({}), then a further request got: {e}",
            lines.join(" ")
        ))
    })?;
    let order = if markers.is_empty() {
        "order not echoed"
    } else {
        "in order"
    };
    Ok(Outcome::pass(format!(
        "{N} responses ({}; {order}); connection persists ({})",
        lines.join(" "),
        after.status
    )))
}

async fn close_then_more(t: &Target, deadline: Instant) -> CheckOut {
    let mut bytes = t.get("Connection: close\r\n");
    let mut i = 0;
    while bytes.len() < 64 * 1024 + 1024 {
        i += 1;
        bytes.extend(t.request(
            "GET",
            &t.path_with(&format!("kw-after-close={i}")),
            "1.1",
            "",
        ));
    }
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    // A server that closes early may make part of this write fail; what
    // matters is what can still be read.
    let write_note = match p.send(&bytes).await {
        Ok(()) => String::new(),
        Err(e) => format!(" ({e})"),
    };
    // Give an RST time to arrive before reading, as a slow client would.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = p.read_response(false).await.map_err(|e| {
        Outcome::fail(format!(
            "sent {} bytes ({i} requests after close){write_note}; response lost: {e}",
            bytes.len()
        ))
    })?;
    match p.ending().await {
        Ending::Fin => Ok(Outcome::pass(format!(
            "{} with {} body bytes, then FIN; {i} later requests ignored",
            r.brief(),
            r.body_len
        ))),
        Ending::Reset => Ok(Outcome::fail(format!(
            "{} read, but the connection ended in RST (not a lingering close)",
            r.brief()
        ))),
        other => Ok(Outcome::fail(format!("{} then {other}", r.brief()))),
    }
}

async fn half_close(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("request"))?;
    p.stream
        .shutdown()
        .await
        .map_err(|e| Outcome::fail(format!("shutdown(Write): {e}")))?;
    let r = p
        .read_response(false)
        .await
        .map_err(failed("response after the client's FIN"))?;
    Ok(Outcome::pass(format!(
        "{} ({} body bytes) after the client's FIN",
        r.brief(),
        r.body_len
    )))
}

fn smuggle_bytes(t: &Target, v: Vector) -> Vec<u8> {
    let (version, fields, body): (&str, &str, &str) = match v {
        Vector::TeCl => (
            "1.1",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
        ),
        Vector::TwoCl => (
            "1.1",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "hello!",
        ),
        Vector::BadCl => ("1.1", "Content-Length: +6\r\n", "hello!"),
        Vector::TeNotFinal => ("1.1", "Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
        Vector::Te10 => ("1.0", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        Vector::BadChunk => (
            "1.1",
            "Transfer-Encoding: chunked\r\n",
            "zz\r\nhello\r\n0\r\n\r\n",
        ),
        Vector::SpaceColon => ("1.1", "Content-Length : 6\r\n", "hello!"),
        Vector::CommaCl => ("1.1", "Content-Length: ,\r\n", ""),
        Vector::EmptyChunk => ("1.1", "Transfer-Encoding: chunked\r\n", "\r\n\r\n"),
        Vector::SpaceChunk => ("1.1", "Transfer-Encoding: chunked\r\n", " \r\n\r\n"),
        Vector::LfChunk => (
            "1.1",
            "Transfer-Encoding: chunked\r\n",
            "5\nhello\r\n0\r\n\r\n",
        ),
        Vector::CtlExt => (
            "1.1",
            "Transfer-Encoding: chunked\r\n",
            "5;kw=\x01\r\nhello\r\n0\r\n\r\n",
        ),
        Vector::LfTrailer => (
            "1.1",
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\nX-Kw-Trailer: 1\n\n",
        ),
    };
    let mut b = t.request("POST", &t.path, version, fields);
    b.extend_from_slice(body.as_bytes());
    b.extend(t.request("GET", "/smuggled", "1.1", ""));
    b
}

async fn smuggle(t: &Target, v: Vector, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&smuggle_bytes(t, v))
        .await
        .map_err(failed("request"))?;
    let rejected = |s: u16| (400..500).contains(&s) || s == 501;
    let r1 = match p.read_response(false).await {
        Ok(r) => r,
        Err(ProbeError::Eof { got: 0 }) | Err(ProbeError::Reset { got: 0 }) => {
            return Ok(Outcome::warn(
                "connection closed without a 400 (safe, but no status)",
            ));
        }
        Err(e) => return Err(failed("response")(e)),
    };
    if rejected(r1.status) {
        return match p.ending().await {
            Ending::Fin | Ending::Reset => {
                Ok(Outcome::pass(format!("{}, then closed", r1.brief())))
            }
            Ending::Data(d) => Ok(Outcome::fail(format!(
                "{}, but then {} more bytes: {}",
                r1.status_line,
                d.len(),
                show(&d)
            ))),
            other => Ok(Outcome::fail(format!(
                "{}, but then {other} (must close)",
                r1.status_line
            ))),
        };
    }
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::fail(format!(
            "accepted ({}), then a second response ({}): the bytes after the \
             body (GET /smuggled) were taken as another request",
            r1.status_line, r2.status_line
        ))),
        // RFC 9112 §6.3 (3): a server MAY process TE + CL by the
        // Transfer-Encoding alone if it closes the connection afterwards;
        // R10.1 asks for a 400, so that is a warning, not a failure.
        Err(e @ (ProbeError::Eof { .. } | ProbeError::Reset { .. }))
            if matches!(v, Vector::TeCl) =>
        {
            Ok(Outcome::warn(format!(
                "processed by Transfer-Encoding ({}), then {e}: allowed by RFC 9112 \
                 §6.3 if the connection closes; R10.1 asks for 400",
                r1.status_line
            )))
        }
        Err(e) if matches!(v, Vector::Te10) => Ok(Outcome::warn(format!(
            "accepted ({}); smuggled request not answered ({e})",
            r1.status_line
        ))),
        Err(e) => Ok(Outcome::fail(format!(
            "accepted with {} instead of 400; then {e}",
            r1.brief()
        ))),
    }
}

/// A host no test server serves: what a request names when `Host` should
/// not matter.
const OTHER_HOST: &str = "kw-other.invalid";

/// RFC 9112 §3.2: a missing (HTTP/1.1), repeated or invalid `Host` is 400.
/// Another 4xx is a WARN (refused, but not as the RFC says); anything else
/// was accepted: FAIL.
async fn host_check(t: &Target, case: HostCase, deadline: Instant) -> CheckOut {
    let ua = "User-Agent: keepwire-check\r\n";
    let req = match case {
        HostCase::Missing => format!("GET {} HTTP/1.1\r\n{ua}\r\n", t.path),
        HostCase::Duplicate => format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nHost: {OTHER_HOST}\r\n{ua}\r\n",
            t.path, t.host
        ),
        // '/' is not allowed in an authority (RFC 3986 §3.2.2).
        HostCase::Invalid => format!(
            "GET {} HTTP/1.1\r\nHost: kw-check/invalid\r\n{ua}\r\n",
            t.path
        ),
    };
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(req.as_bytes()).await.map_err(failed("request"))?;
    let r = match p.read_response(false).await {
        Ok(r) => r,
        Err(ProbeError::Eof { got: 0 }) | Err(ProbeError::Reset { got: 0 }) => {
            return Ok(Outcome::warn(
                "connection closed without a status (400 required)",
            ));
        }
        Err(e) => return Err(failed("response")(e)),
    };
    Ok(if r.status == 400 {
        Outcome::pass(r.brief())
    } else if (400..500).contains(&r.status) {
        Outcome::warn(format!("{} (RFC 9112 §3.2 requires 400)", r.brief()))
    } else {
        Outcome::fail(format!("accepted: {}", r.brief()))
    })
}

/// RFC 9112 §3.2.2: with an absolute-form target the server uses the
/// target's authority and ignores `Host`. Sent with the right authority in
/// the target and a `Host` the server does not serve, the answer must be
/// the one the right `Host` gets in origin form (a 400, or a different
/// status, means `Host` decided).
async fn absolute_form(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("Connection: close\r\n"))
        .await
        .map_err(failed("origin-form request"))?;
    let r0 = p
        .read_response(false)
        .await
        .map_err(failed("origin-form response"))?;
    let target = format!("http://{}{}", t.host, t.path);
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {OTHER_HOST}\r\nUser-Agent: keepwire-check\r\n\r\n"
    );
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(req.as_bytes())
        .await
        .map_err(failed("absolute-form request"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("absolute-form response"))?;
    let what = format!("GET {target} with Host: {OTHER_HOST}: {}", r1.brief());
    Ok(if r1.status == 400 {
        Outcome::fail(format!(
            "{what}: rejected, but the target's authority must win over Host"
        ))
    } else if r1.status == r0.status {
        Outcome::pass(format!(
            "{what} ({} body bytes); origin-form with the right Host: {} ({} body bytes)",
            r1.body_len, r0.status_line, r0.body_len
        ))
    } else {
        Outcome::fail(format!(
            "{what}, but origin-form with the right Host gets {}: Host decided, not the target",
            r0.status_line
        ))
    })
}

/// A request that exceeds a limit: 4xx PASS (best: `want`), accepted WARN,
/// no status (close, reset, hang) FAIL.
async fn over_limit(t: &Target, req: Vec<u8>, want: u16, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    let _ = p.send(&req).await;
    let r = p
        .read_response(false)
        .await
        .map_err(|e| Outcome::fail(format!("{} bytes sent; {e}", req.len())))?;
    if r.status == want {
        Ok(Outcome::pass(r.brief()))
    } else if (400..500).contains(&r.status) {
        Ok(Outcome::pass(format!("{} ({want} preferred)", r.brief())))
    } else {
        Ok(Outcome::warn(format!(
            "accepted: {} (limit above {} bytes)",
            r.brief(),
            req.len()
        )))
    }
}

async fn long_line(t: &Target, deadline: Instant) -> CheckOut {
    let path = t.path_with(&format!("kw-long={}", "a".repeat(10 * 1024)));
    over_limit(t, t.request("GET", &path, "1.1", ""), 414, deadline).await
}

async fn many_headers(t: &Target, deadline: Instant) -> CheckOut {
    let fields: String = (0..300).map(|i| format!("X-Kw-{i}: v\r\n")).collect();
    over_limit(t, t.get(&fields), 431, deadline).await
}

async fn head(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.request("HEAD", &t.path, "1.1", ""))
        .await
        .map_err(failed("HEAD request"))?;
    let r1 = p
        .read_response(true)
        .await
        .map_err(failed("HEAD response"))?;
    if r1.has_token("connection", "close") {
        return Ok(Outcome::skip(format!(
            "HEAD response closes the connection: {}",
            r1.brief()
        )));
    }
    p.send(&t.get("")).await.map_err(failed("GET after HEAD"))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "HEAD {} (content-length {}); next GET {} with {} body bytes",
            r1.status,
            r1.header("content-length").unwrap_or_else(|| "-".into()),
            r2.status,
            r2.body_len
        ))),
        Err(ProbeError::Malformed(e)) => Ok(Outcome::fail(format!(
            "bytes after the HEAD response (a body?): {e}"
        ))),
        Err(e) => Ok(Outcome::fail(format!("GET after HEAD {}: {e}", r1.status))),
    }
}

/// A 304 ends at its head (RFC 9112 §6.3): provoked with the validator the
/// server itself sent (ETag or Last-Modified), then a GET on the same
/// connection must parse cleanly. A server without validators is SKIPped.
async fn not_modified(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("GET"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("GET response"))?;
    let condition = match (r1.header("etag"), r1.header("last-modified")) {
        (Some(etag), _) => format!("If-None-Match: {etag}\r\n"),
        (None, Some(lm)) => format!("If-Modified-Since: {lm}\r\n"),
        (None, None) => {
            return Ok(Outcome::skip(
                "no ETag or Last-Modified to make a conditional request with",
            ));
        }
    };
    if r1.has_token("connection", "close") {
        return Ok(Outcome::skip(format!(
            "GET closes the connection: {}",
            r1.brief()
        )));
    }
    p.send(&t.get(&condition))
        .await
        .map_err(failed("conditional GET"))?;
    let r2 = p
        .read_response(false)
        .await
        .map_err(failed("conditional response"))?;
    if r2.status != 304 {
        return Ok(Outcome::skip(format!(
            "conditional GET answered {} instead of 304",
            r2.status_line
        )));
    }
    if r2.has_token("connection", "close") {
        return Ok(Outcome::pass(format!(
            "{}, then the server closes",
            r2.brief()
        )));
    }
    p.send(&t.get("")).await.map_err(failed("GET after 304"))?;
    match p.read_response(false).await {
        Ok(r3) => Ok(Outcome::pass(format!(
            "{}; next GET {} with {} body bytes",
            r2.status_line, r3.status, r3.body_len
        ))),
        Err(ProbeError::Malformed(e)) => Ok(Outcome::fail(format!(
            "bytes after the 304 head (a body?): {e}"
        ))),
        Err(e) => Ok(Outcome::fail(format!("GET after 304: {e}"))),
    }
}

async fn expect(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    let req = t.request(
        "POST",
        &t.path,
        "1.1",
        "Content-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\n",
    );
    p.send(&req).await.map_err(failed("request head"))?;
    let sent = Instant::now();
    let wait = (sent + Duration::from_secs(1)).min(deadline);
    match p.read_response_by(false, wait).await {
        Ok(r) if r.status == 100 => {
            let ms = sent.elapsed().as_millis();
            p.send(b"hello").await.map_err(failed("body after 100"))?;
            let fin = p
                .read_response(false)
                .await
                .map_err(failed("final response after 100"))?;
            Ok(Outcome::pass(format!(
                "{} after {ms} ms, then {}",
                r.status_line, fin.status_line
            )))
        }
        Ok(r) => Ok(Outcome::pass(format!(
            "final response without 100 Continue: {}",
            r.brief()
        ))),
        Err(ProbeError::Timeout { got: 0 }) => {
            p.send(b"hello").await.map_err(failed("body"))?;
            let fin = p
                .read_response(false)
                .await
                .map_err(failed("final response"))?;
            Ok(Outcome::warn(format!(
                "nothing within 1 s of Expect: 100-continue; after the body: {}",
                fin.status_line
            )))
        }
        Err(e) => Err(failed("waiting for 100 Continue")(e)),
    }
}

async fn keep_alive_advertised(t: &Target, deadline: Instant) -> CheckOut {
    let tries = [
        ("HTTP/1.1", t.get("")),
        (
            "HTTP/1.0 keep-alive",
            t.request("GET", &t.path, "1.0", "Connection: keep-alive\r\n"),
        ),
    ];
    for (what, req) in tries {
        let mut p = Probe::connect(t, deadline)
            .await
            .map_err(failed("connect"))?;
        p.send(&req).await.map_err(failed("request"))?;
        let r = p.read_response(false).await.map_err(failed("response"))?;
        if let Some(ka) = r.header("keep-alive") {
            let timeout = ka.split(',').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("timeout")
                    .then(|| v.trim().parse::<u64>())
            });
            return Ok(match timeout {
                Some(Ok(_)) | None => Outcome::pass(format!("{what}: Keep-Alive: {ka}")),
                Some(Err(_)) => Outcome::warn(format!("{what}: unparsable Keep-Alive: {ka}")),
            });
        }
    }
    Ok(Outcome::skip(
        "no Keep-Alive header on HTTP/1.1 or HTTP/1.0 keep-alive responses (optional)",
    ))
}

async fn close10(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.request("GET", &t.path, "1.0", ""))
        .await
        .map_err(failed("request"))?;
    let r = p.read_response(false).await.map_err(failed("response"))?;
    if r.has_token("connection", "keep-alive") {
        return Ok(Outcome::fail(format!(
            "keep-alive offered to an HTTP/1.0 client that did not ask: {}",
            r.brief()
        )));
    }
    match p.ending().await {
        Ending::Fin | Ending::Reset => Ok(Outcome::pass(format!("{}; then closed", r.brief()))),
        other => Ok(Outcome::fail(format!(
            "{}; then {other} (an HTTP/1.0 connection without keep-alive must close)",
            r.brief()
        ))),
    }
}

async fn close_mid_pipeline(t: &Target, deadline: Instant) -> CheckOut {
    let mut burst = t.request("GET", &t.path_with("kw-pipe=1"), "1.1", "");
    burst.extend(t.request(
        "GET",
        &t.path_with("kw-pipe=2"),
        "1.1",
        "Connection: close\r\n",
    ));
    burst.extend(t.request("GET", &t.path_with("kw-pipe=3"), "1.1", ""));
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&burst).await.map_err(failed("pipelined burst"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("response 1 of 2"))?;
    let r2 = p.read_response(false).await.map_err(|e| {
        Outcome::fail(format!(
            "{} for request 1, then the closing request 2 got: {e}",
            r1.status
        ))
    })?;
    match p.ending().await {
        Ending::Fin | Ending::Reset => Ok(Outcome::pass(format!(
            "{} / {}; then closed, request 3 not answered",
            r1.status,
            r2.brief()
        ))),
        Ending::Data(d) => Ok(Outcome::fail(format!(
            "answered a request sent after Connection: close: {}",
            show(&d)
        ))),
        other => Ok(Outcome::fail(format!(
            "{} / {}; then {other}",
            r1.status,
            r2.brief()
        ))),
    }
}

/// `Keep-Alive: max=N` (if any).
fn ka_param(r: &Response, name: &str) -> Option<u64> {
    r.header("keep-alive")?.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

async fn max_requests(t: &Target, deadline: Instant) -> CheckOut {
    const CAP: u64 = 1000;
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("request"))?;
    let r1 = p.read_response(false).await.map_err(failed("response"))?;
    let Some(max) = ka_param(&r1, "max") else {
        return Ok(Outcome::skip("no Keep-Alive: max= advertised"));
    };
    if max > CAP {
        return Ok(Outcome::skip(format!(
            "Keep-Alive: max={max} is more than {CAP} requests to try"
        )));
    }
    // `max` counts the transactions left after this one.
    let mut n = 1u64;
    let mut last = r1;
    while !last.has_token("connection", "close") {
        if n > max + 1 {
            return Ok(Outcome::warn(format!(
                "advertised max={max} but answered {n} requests without Connection: close"
            )));
        }
        if let Err(e) = p.send(&t.get("")).await {
            return Ok(Outcome::fail(format!(
                "closed after {n} responses without Connection: close (advertised max={max}): {e}"
            )));
        }
        match p.read_response(false).await {
            Ok(r) => last = r,
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "after {n} responses (advertised max={max}), no Connection: close, then {e}"
                )));
            }
        }
        n += 1;
    }
    let end = p.ending().await;
    let verdict = if matches!(end, Ending::Fin | Ending::Reset) {
        Outcome::pass
    } else {
        Outcome::fail
    };
    Ok(verdict(format!(
        "advertised max={max}; response {n} says Connection: close; then {end}"
    )))
}

async fn idle_observed(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("request"))?;
    let r = p.read_response(false).await.map_err(failed("response"))?;
    if r.has_token("connection", "close") {
        return Ok(Outcome::skip(format!("response closes: {}", r.brief())));
    }
    let advertised = ka_param(&r, "timeout");
    let idle_from = Instant::now();
    if let Some(secs) = advertised {
        p.deadline = p
            .deadline
            .min(idle_from + Duration::from_secs(secs) + Duration::from_secs(2));
    }
    let end = p.ending().await;
    let idle = idle_from.elapsed().as_secs_f64();
    let adv = advertised.map_or("none".to_string(), |s| format!("{s} s"));
    Ok(match end {
        Ending::Fin => Outcome::pass(format!(
            "closed (FIN) after {idle:.1} s idle; advertised timeout {adv}"
        )),
        Ending::Reset => Outcome::warn(format!(
            "idle close by RST after {idle:.1} s; advertised timeout {adv}"
        )),
        Ending::Open => Outcome::warn(format!(
            "still open after {idle:.1} s idle; advertised timeout {adv}"
        )),
        other => Outcome::fail(format!("idle connection: {other}")),
    })
}

async fn slowloris(t: &Target, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    let started = Instant::now();
    let mut head = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", t.path, t.host).into_bytes();
    head.extend(b"X-Kw-Slow: ".iter());
    p.send(&head).await.map_err(failed("request start"))?;
    let mut sent = head.len();
    loop {
        let tick = (Instant::now() + Duration::from_millis(500)).min(deadline);
        let filled = p.fill(tick).await;
        let secs = started.elapsed().as_secs_f64();
        match filled {
            Ok(true) => {
                return Ok(match parse_response(&p.buf, false, false) {
                    Parsed::Done(r, _) if (400..500).contains(&r.status) => {
                        Outcome::pass(format!("{} after {secs:.1} s, {sent} bytes", r.brief()))
                    }
                    Parsed::Done(r, _) => {
                        Outcome::fail(format!("unexpected {} to an unfinished head", r.brief()))
                    }
                    _ => Outcome::pass(format!("answered after {secs:.1} s: {}", show(&p.buf))),
                });
            }
            Ok(false) => {
                return Ok(Outcome::pass(format!(
                    "closed (FIN) without a status after {secs:.1} s, {sent} bytes (408 preferred)"
                )));
            }
            Err(ProbeError::Reset { .. }) => {
                return Ok(Outcome::warn(format!(
                    "reset (RST) after {secs:.1} s, {sent} bytes"
                )));
            }
            Err(ProbeError::Timeout { .. }) if Instant::now() >= deadline => {
                return Ok(Outcome::fail(format!(
                    "still reading a {sent}-byte head after {secs:.1} s (one byte every 0.5 s)"
                )));
            }
            Err(ProbeError::Timeout { .. }) => {
                if p.send(b"a").await.is_err() {
                    return Ok(Outcome::pass(format!(
                        "server stopped reading after {secs:.1} s, {sent} bytes"
                    )));
                }
                sent += 1;
            }
            Err(e) => return Err(failed("slow head")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_prefixes() {
        assert!(rule_matches("R10.1", "R10"));
        assert!(rule_matches("R10.1", "R10.1"));
        assert!(!rule_matches("R1.2", "R10"));
        assert!(!rule_matches("R10.1", "R1"));
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("127.0.0.1:8080", "/"));
        let t = Target::parse("http://example.com/x?y=1").unwrap();
        assert_eq!(t.addr, "example.com:80");
        assert_eq!(t.path_with("a=b"), "/x?y=1&a=b");
        let t = Target::parse("https://example.com/").unwrap();
        assert_eq!((t.addr.as_str(), t.tls), ("example.com:443", true));
        assert!(Target::parse("ftp://example.com/").is_err());
    }
}
