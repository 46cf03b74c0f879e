//! `keepwire check server --http2 URL`: HTTP/2 connection-abuse checks.
//!
//! HTTP/2 moves the costs HTTP/1 bounds per connection (a head, a body, one
//! request at a time) into frames a client can send cheaply and in bulk:
//! streams it resets at once (Rapid Reset, CVE-2023-44487), header blocks
//! that never end (the CONTINUATION flood), control frames whose answers it
//! never reads, bodies without a length and windows it never opens. Each
//! check here does one of those, bounded in frames, bytes and time, and says
//! what the server did about it (R10.4: every protocol has the same bounds).
//!
//! The `h2` crate is the client where it can produce the abuse (zero window,
//! oversized bodies); the rest is written as raw frames with the tiny
//! encoder below, and the server's frames are read raw too, so the evidence
//! is what crossed the wire (GOAWAY and its code, RST_STREAM codes, the
//! count at which the server reacted).

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::server::{CheckOut, Target};
use super::{CheckResult, CommonArgs, Outcome};

/// What `--http2` adds to the shared options.
#[derive(Debug, Clone)]
pub struct Options {
    pub insecure: bool,
    pub max_body: u64,
    pub stall_timeout: Duration,
    pub resets: u32,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

#[derive(Debug, Clone, Copy)]
enum Id {
    Baseline,
    Reset { delayed: bool },
    Continuation,
    SettingsFlood,
    PingFlood,
    Body { declared: bool },
    ZeroWindow,
}

type Spec = super::Spec<Id>;

const fn c(name: &'static str, id: Id) -> Spec {
    Spec {
        rule: "R10.4",
        name,
        id,
        slow: false,
        long: false,
    }
}

const CHECKS: &[Spec] = &[
    c("HTTP/2 GET answered (baseline)", Id::Baseline),
    c(
        "rapid reset (RST with HEADERS)",
        Id::Reset { delayed: false },
    ),
    c("streams reset after 100 ms", Id::Reset { delayed: true }),
    c("CONTINUATION flood bounded", Id::Continuation),
    c("SETTINGS flood bounded", Id::SettingsFlood),
    c("PING flood bounded", Id::PingFlood),
    c(
        "declared oversized body refused",
        Id::Body { declared: true },
    ),
    c(
        "streamed oversized body refused",
        Id::Body { declared: false },
    ),
    Spec {
        rule: "R10.4",
        name: "zero-window stream ended",
        id: Id::ZeroWindow,
        slow: false,
        long: true,
    },
];

pub async fn run_checks(t: &Target, opts: &Options, common: &CommonArgs) -> Vec<CheckResult> {
    // The zero-window check may legitimately wait out a server's write
    // timeout (nginx's send_timeout and keepwire's are 60 s).
    let long = opts.stall_timeout + Duration::from_secs(5);
    let total = common.total_or(opts.stall_timeout + Duration::from_secs(60));
    super::run_table(CHECKS, common, long, total, |id, deadline| {
        run_one(id, t, opts, deadline)
    })
    .await
}

async fn run_one(id: Id, t: &Target, opts: &Options, deadline: Instant) -> CheckOut {
    match id {
        Id::Baseline => baseline(t, opts, deadline).await,
        Id::Reset { delayed } => reset_flood(t, opts, delayed, deadline).await,
        Id::Continuation => continuation_flood(t, opts, deadline).await,
        Id::SettingsFlood => control_flood(t, opts, Control::Settings, deadline).await,
        Id::PingFlood => control_flood(t, opts, Control::Ping, deadline).await,
        Id::Body { declared } => oversized_body(t, opts, declared, deadline).await,
        Id::ZeroWindow => zero_window(t, opts, deadline).await,
    }
}

// ---- connecting ----

/// TCP (or TLS with ALPN h2) to the target. `small_buffers`: small socket
/// buffers on our side, so that what the server writes and we do not read
/// backs up into the server quickly, and what we write is not hidden in our
/// own kernel buffer (the floods).
async fn connect(
    t: &Target,
    opts: &Options,
    small_buffers: bool,
    deadline: Instant,
) -> Result<BoxIo, Outcome> {
    let fail = |e: String| Outcome::fail(format!("connect: {e}"));
    let tcp = tokio::time::timeout_at(deadline.into(), async {
        let addr = tokio::net::lookup_host(&t.addr)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if small_buffers {
            sock.set_recv_buffer_size(16 * 1024)?;
            sock.set_send_buffer_size(64 * 1024)?;
        }
        sock.connect(addr).await
    })
    .await
    .map_err(|_| fail(format!("{} timed out", t.addr)))?
    .map_err(|e| fail(format!("{}: {e}", t.addr)))?;
    let _ = tcp.set_nodelay(true);
    if !t.tls {
        return Ok(Box::new(tcp));
    }
    let base = if opts.insecure {
        keepwire::client::tls::insecure_config()
    } else {
        keepwire::client::tls::default_config()
    };
    let mut config = (*base).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = t
        .host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(t.host.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| fail(format!("server name: {e}")))?;
    let tls = tokio::time::timeout_at(
        deadline.into(),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| fail("TLS handshake timed out".into()))?
    .map_err(|e| fail(format!("TLS: {e} (-k accepts any certificate)")))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(Outcome::fail("the server did not choose h2 by ALPN"));
    }
    Ok(Box::new(tls))
}

fn uri(t: &Target) -> String {
    let scheme = if t.tls { "https" } else { "http" };
    format!("{scheme}://{}{}", t.host, t.path)
}

// ---- raw frames ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;
const END_HEADERS: u8 = 4;
const SETTINGS_ENABLE_PUSH: u16 = 2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 4;
const CANCEL: u32 = 8;
/// The largest frame payload every peer accepts (SETTINGS_MAX_FRAME_SIZE's
/// initial value); the reader refuses bigger ones from the server too.
const MAX_FRAME: usize = 16_384;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    let len = payload.len() as u32;
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings_frame(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

/// An HPACK integer with an `n`-bit prefix; `flags` are the first byte's
/// bits above the prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, n: u8, flags: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0);
    hpack_int(out, 7, 0, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 7, 0, value.len());
    out.extend_from_slice(value);
}

/// The header block of a request for the target's path.
fn request_block(t: &Target, method: &str) -> Vec<u8> {
    let mut b = Vec::new();
    hpack_literal(&mut b, ":method", method.as_bytes());
    let scheme = if t.tls { "https" } else { "http" };
    hpack_literal(&mut b, ":scheme", scheme.as_bytes());
    hpack_literal(&mut b, ":authority", t.host.as_bytes());
    hpack_literal(&mut b, ":path", t.path.as_bytes());
    hpack_literal(&mut b, "user-agent", b"keepwire-check");
    b
}

fn code_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("error code {code:#x}"),
    };
    name.to_string()
}

/// One frame from the server.
struct Frame {
    ty: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Why the server's frames stopped.
#[derive(Debug, Clone)]
enum End {
    Fin,
    Reset,
    Timeout,
    Error(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Fin => write!(f, "connection closed (FIN)"),
            End::Reset => write!(f, "connection reset (RST)"),
            End::Timeout => write!(f, "nothing before the time limit"),
            End::Error(e) => write!(f, "{e}"),
        }
    }
}

/// Reads the server's frames from a buffer that never holds more than one
/// frame plus one read.
struct Reader {
    rd: ReadHalf<BoxIo>,
    buf: Vec<u8>,
}

impl Reader {
    async fn next(&mut self, deadline: Instant) -> Result<Frame, End> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.starts_with(b"HTTP/") {
                    let head = String::from_utf8_lossy(&self.buf[..self.buf.len().min(40)])
                        .replace(['\r', '\n'], " ");
                    return Err(End::Error(format!(
                        "not HTTP/2: the server answered {head:?}"
                    )));
                }
                if len > MAX_FRAME {
                    return Err(End::Error(format!(
                        "a {len}-byte frame, over the {MAX_FRAME} bytes we allow"
                    )));
                }
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Ok(f);
                }
            }
            let mut tmp = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline.into(), self.rd.read(&mut tmp)).await {
                Err(_) => return Err(End::Timeout),
                Ok(Ok(0)) => return Err(End::Fin),
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(End::Reset);
                }
                Ok(Err(e)) => return Err(End::Error(format!("read failed: {e}"))),
            }
        }
    }
}

/// What the server sent, as counted by [`Seen::note`].
#[derive(Debug, Default, Clone)]
struct Seen {
    /// GOAWAY: last stream id, error code, debug data.
    goaway: Option<(u32, u32, String)>,
    /// RST_STREAM frames by error code.
    resets: BTreeMap<u32, u32>,
    /// HEADERS frames (responses begun).
    headers: u32,
    data_bytes: u64,
    settings_acks: u64,
    ping_acks: u64,
    /// How the frames ended, if they did.
    end: Option<End>,
}

impl Seen {
    fn note(&mut self, f: &Frame) {
        match f.ty {
            GOAWAY if f.payload.len() >= 8 => {
                let last =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
                        & 0x7fff_ffff;
                let code =
                    u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
                let debug = String::from_utf8_lossy(&f.payload[8..f.payload.len().min(8 + 80)])
                    .into_owned();
                self.goaway.get_or_insert((last, code, debug));
            }
            RST_STREAM if f.payload.len() >= 4 => {
                let code =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
                *self.resets.entry(code).or_default() += 1;
            }
            HEADERS => self.headers += 1,
            DATA => self.data_bytes += f.payload.len() as u64,
            SETTINGS if f.flags & ACK != 0 => self.settings_acks += 1,
            PING if f.flags & ACK != 0 => self.ping_acks += 1,
            _ => {}
        }
    }

    /// The server reacted: GOAWAY, or the connection ended.
    fn reacted(&self) -> bool {
        self.goaway.is_some() || matches!(self.end, Some(End::Fin | End::Reset))
    }

    /// "GOAWAY ENHANCE_YOUR_CALM (last stream 41, "debug")", or how the
    /// connection ended.
    fn reaction(&self) -> String {
        match (&self.goaway, &self.end) {
            (Some((last, code, debug)), _) => {
                let debug = if debug.is_empty() {
                    String::new()
                } else {
                    format!(", {debug:?}")
                };
                format!("GOAWAY {} (last stream {last}{debug})", code_name(*code))
            }
            (None, Some(end)) => end.to_string(),
            (None, None) => "no GOAWAY, connection open".to_string(),
        }
    }

    fn reset_summary(&self) -> String {
        if self.resets.is_empty() {
            return "no RST_STREAM".into();
        }
        let parts: Vec<String> = self
            .resets
            .iter()
            .map(|(code, n)| format!("{n} {}", code_name(*code)))
            .collect();
        format!("RST_STREAM: {}", parts.join(", "))
    }
}

/// A raw HTTP/2 connection after the preface and the SETTINGS exchange.
struct Raw {
    reader: Reader,
    wr: WriteHalf<BoxIo>,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, if it sent one.
    max_streams: Option<u32>,
    seen: Seen,
}

async fn open_raw(
    t: &Target,
    opts: &Options,
    ours: &[(u16, u32)],
    small_rcvbuf: bool,
    deadline: Instant,
) -> Result<Raw, Outcome> {
    let io = connect(t, opts, small_rcvbuf, deadline).await?;
    let (rd, mut wr) = tokio::io::split(io);
    let mut hello = PREFACE.to_vec();
    hello.extend(settings_frame(ours));
    write_by(&mut wr, &hello, deadline)
        .await
        .map_err(|e| Outcome::fail(format!("preface: {e}")))?;
    let mut reader = Reader {
        rd,
        buf: Vec::new(),
    };
    let mut seen = Seen::default();
    let first = reader
        .next(deadline)
        .await
        .map_err(|e| Outcome::fail(format!("waiting for the server's SETTINGS: {e}")))?;
    if first.ty != SETTINGS || first.flags & ACK != 0 {
        return Err(Outcome::fail(format!(
            "the server's first frame is type {} flags {:#x}, not SETTINGS",
            first.ty, first.flags
        )));
    }
    let max_streams = first.payload.chunks_exact(6).find_map(|p| {
        (u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
            .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
    });
    seen.note(&first);
    write_by(&mut wr, &frame(SETTINGS, ACK, 0, &[]), deadline)
        .await
        .map_err(|e| Outcome::fail(format!("SETTINGS ACK: {e}")))?;
    Ok(Raw {
        reader,
        wr,
        max_streams,
        seen,
    })
}

async fn write_by(
    wr: &mut WriteHalf<BoxIo>,
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), String> {
    match tokio::time::timeout_at(deadline.into(), async {
        wr.write_all(bytes).await?;
        wr.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("write timed out".into()),
    }
}

/// Reads the server's frames into a shared [`Seen`] until they end or
/// `deadline`, while the check writes.
fn spawn_reader(mut reader: Reader, seen: Seen, deadline: Instant) -> (Arc<Mutex<Seen>>, Task) {
    let shared = Arc::new(Mutex::new(seen));
    let s = shared.clone();
    let task = spawn(async move {
        loop {
            let f = reader.next(deadline).await;
            let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
            match f {
                Ok(f) => seen.note(&f),
                Err(e) => {
                    seen.end = Some(e);
                    return;
                }
            }
        }
    });
    (shared, task)
}

/// A spawned task that ends with the check that started it (a connection
/// left to its driver would outlive the check until the server closed it).
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn<F: std::future::Future + Send + 'static>(f: F) -> Task
where
    F::Output: Send + 'static,
{
    Task(tokio::spawn(async move {
        let _ = f.await;
    }))
}

fn snapshot(seen: &Arc<Mutex<Seen>>) -> Seen {
    seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Waits up to `grace` (within `deadline`) for the server to react.
async fn grace(seen: &Arc<Mutex<Seen>>, grace: Duration, deadline: Instant) -> Seen {
    let until = (Instant::now() + grace).min(deadline);
    loop {
        let s = snapshot(seen);
        if s.reacted() || s.end.is_some() || Instant::now() >= until {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- the checks ----

/// A plain GET through the `h2` crate: the server speaks HTTP/2 at all, and
/// the path has a body (the zero-window check needs one).
async fn baseline(t: &Target, opts: &Options, deadline: Instant) -> CheckOut {
    let io = connect(t, opts, false, deadline).await?;
    let within = |what: &'static str| {
        move |e: tokio::time::error::Elapsed| Outcome::fail(format!("{what}: {e}"))
    };
    let (mut client, conn) = tokio::time::timeout_at(deadline.into(), h2::client::handshake(io))
        .await
        .map_err(within("handshake"))?
        .map_err(|e| Outcome::fail(format!("HTTP/2 handshake: {e}")))?;
    let _driver = spawn(conn);
    let req = http::Request::get(uri(t))
        .body(())
        .map_err(|e| Outcome::fail(e.to_string()))?;
    let (resp, _) = client
        .send_request(req, true)
        .map_err(|e| Outcome::fail(format!("request: {e}")))?;
    let resp = tokio::time::timeout_at(deadline.into(), resp)
        .await
        .map_err(within("response"))?
        .map_err(|e| Outcome::fail(format!("response: {e}")))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut len = 0usize;
    while let Some(chunk) = tokio::time::timeout_at(deadline.into(), body.data())
        .await
        .map_err(within("body"))?
    {
        let chunk = chunk.map_err(|e| Outcome::fail(format!("body: {e}")))?;
        len += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
        if len > 1 << 20 {
            break;
        }
    }
    let what = if t.tls { "h2 (ALPN)" } else { "h2c" };
    if status.is_success() && len > 0 {
        Ok(Outcome::pass(format!(
            "{what}: {} with {len} body bytes",
            status
        )))
    } else {
        Ok(Outcome::warn(format!(
            "{what}: {status} with {len} body bytes (the checks want a 200 with a body at this path)"
        )))
    }
}

/// Rapid Reset. Streams are opened and cancelled (RST_STREAM CANCEL) up to
/// `--resets` times; the stream window is 0, so no response can finish on
/// its own and every stream is in flight until reset (a slow handler, seen
/// from outside). `delayed`: batches of up to the advertised stream limit
/// (at most 100), reset 100 ms after their HEADERS, so their handlers have
/// started; otherwise each RST follows its HEADERS in the same write (the
/// CVE-2023-44487 pattern). PASS: GOAWAY or a closed connection before all
/// were sent; FAIL: every reset absorbed with no reaction.
async fn reset_flood(t: &Target, opts: &Options, delayed: bool, deadline: Instant) -> CheckOut {
    let raw = open_raw(
        t,
        opts,
        &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)],
        false,
        deadline,
    )
    .await?;
    let Raw {
        reader,
        mut wr,
        max_streams,
        seen,
    } = raw;
    let (seen, _reader) = spawn_reader(reader, seen, deadline);
    let block = request_block(t, "GET");
    // Stream ids stay far below 2^31.
    let total = opts.resets.clamp(1, 1_000_000);
    let batch = if delayed {
        max_streams.unwrap_or(100).clamp(1, 100)
    } else {
        50
    };
    let mut sent = 0u32;
    let mut stream = 1u32;
    let mut write_error = None;
    while sent < total {
        if snapshot(&seen).reacted() {
            break;
        }
        let n = batch.min(total - sent);
        let ids: Vec<u32> = (0..n).map(|i| stream + 2 * i).collect();
        stream += 2 * n;
        let rst = |id: u32| frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes());
        let result = if delayed {
            let heads: Vec<u8> = ids
                .iter()
                .flat_map(|&id| frame(HEADERS, END_STREAM | END_HEADERS, id, &block))
                .collect();
            match write_by(&mut wr, &heads, deadline).await {
                Ok(()) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let resets: Vec<u8> = ids.iter().flat_map(|&id| rst(id)).collect();
                    write_by(&mut wr, &resets, deadline).await
                }
                Err(e) => Err(e),
            }
        } else {
            let pairs: Vec<u8> = ids
                .iter()
                .flat_map(|&id| {
                    let mut f = frame(HEADERS, END_STREAM | END_HEADERS, id, &block);
                    f.extend(rst(id));
                    f
                })
                .collect();
            write_by(&mut wr, &pairs, deadline).await
        };
        if let Err(e) = result {
            write_error = Some(e);
            break;
        }
        sent += n;
    }
    let s = grace(&seen, Duration::from_millis(500), deadline).await;
    let how = if delayed {
        format!("batches of {batch}, RST 100 ms after HEADERS")
    } else {
        "RST in the same write as HEADERS".to_string()
    };
    let limit = max_streams.map_or("no stream limit advertised".to_string(), |m| {
        format!("advertised limit {m}")
    });
    let detail = format!(
        "{how}; {limit}; {} responses begun; {}",
        s.headers,
        s.reset_summary()
    );
    if s.reacted() {
        // The last stream the server says it processed places its reaction;
        // `sent` is only how far our writes had got (socket buffers hide
        // the rest).
        let place = s.goaway.as_ref().map_or(String::new(), |(last, _, _)| {
            format!(" (our stream #{})", last.div_ceil(2))
        });
        return Ok(Outcome::pass(format!(
            "{}{place}, seen when {sent} of {total} streams had been written and reset; {detail}",
            s.reaction()
        )));
    }
    if let Some(e) = write_error {
        return Ok(Outcome::pass(format!(
            "write failed after {sent} of {total} resets ({e}); {detail}"
        )));
    }
    // Whether the handlers ran cannot be seen from here; responses that
    // began before their reset show some did.
    let note = if s.headers == 0 {
        " (no response began: the work may have been cancelled, but nothing bounded the resets)"
    } else {
        ""
    };
    Ok(Outcome::fail(format!(
        "all {total} streams opened and reset with no GOAWAY, connection open; {detail}{note}"
    )))
}

/// HEADERS without END_HEADERS, then CONTINUATION frames of 16 KiB header
/// fields up to 10 MiB. PASS: GOAWAY or close before all were taken.
async fn continuation_flood(t: &Target, opts: &Options, deadline: Instant) -> CheckOut {
    const TOTAL: usize = 10 * 1024 * 1024;
    let raw = open_raw(t, opts, &[], false, deadline).await?;
    let Raw {
        reader,
        mut wr,
        seen,
        ..
    } = raw;
    let (seen, _reader) = spawn_reader(reader, seen, deadline);
    let first = frame(HEADERS, END_STREAM, 1, &request_block(t, "GET"));
    if let Err(e) = write_by(&mut wr, &first, deadline).await {
        return Ok(Outcome::fail(format!("HEADERS: {e}")));
    }
    let mut sent = 0usize;
    let mut frames = 0u32;
    let mut stalled = None;
    let mut write_error = None;
    while sent < TOTAL {
        if snapshot(&seen).reacted() {
            break;
        }
        let mut block = Vec::with_capacity(MAX_FRAME);
        let value = vec![b'a'; MAX_FRAME - 32];
        hpack_literal(&mut block, &format!("x-kw-{frames}"), &value);
        let f = frame(CONTINUATION, 0, 1, &block);
        // A server that stops reading without closing: give it 2 s.
        let by = (Instant::now() + Duration::from_secs(2)).min(deadline);
        match write_by(&mut wr, &f, by).await {
            Ok(()) => {
                sent += block.len();
                frames += 1;
            }
            Err(e) if e.contains("timed out") => {
                stalled = Some(sent);
                break;
            }
            Err(e) => {
                write_error = Some(e);
                break;
            }
        }
    }
    let s = grace(&seen, Duration::from_millis(500), deadline).await;
    let amount = format!(
        "{} KiB of header block ({frames} CONTINUATION frames, no END_HEADERS)",
        sent / 1024
    );
    if s.reacted() {
        return Ok(Outcome::pass(format!("{} after {amount}", s.reaction())));
    }
    if let Some(e) = write_error {
        return Ok(Outcome::pass(format!("write failed after {amount}: {e}")));
    }
    if stalled.is_some() {
        return Ok(Outcome::warn(format!(
            "stopped reading after {amount} but kept the connection open (no GOAWAY)"
        )));
    }
    Ok(Outcome::fail(format!(
        "took {amount} and kept the connection open"
    )))
}

#[derive(Clone, Copy)]
enum Control {
    Settings,
    Ping,
}

/// SETTINGS or PING frames, none of whose ACKs we read, up to 40 MiB.
/// Every one obliges the server to write an ACK; one that keeps reading
/// while its ACKs cannot leave is queueing them (or not answering). PASS:
/// GOAWAY/close, or the server stops reading (our writes stall for 1 s)
/// before the cap; FAIL: it took all 40 MiB. The cap is above what the
/// kernel can hold on the server's side (Linux autotunes a receive buffer
/// up to `tcp_rmem`'s maximum, 32 MiB here), so a server that took it all
/// read it.
async fn control_flood(t: &Target, opts: &Options, kind: Control, deadline: Instant) -> CheckOut {
    const TOTAL: usize = 40 * 1024 * 1024;
    const PER_WRITE: usize = 1000;
    let raw = open_raw(t, opts, &[], true, deadline).await?;
    let Raw {
        mut reader,
        mut wr,
        mut seen,
        ..
    } = raw;
    let (one, what) = match kind {
        Control::Settings => (settings_frame(&[(SETTINGS_ENABLE_PUSH, 0)]), "SETTINGS"),
        Control::Ping => (frame(PING, 0, 0, b"kwcheck!"), "PING"),
    };
    let chunk: Vec<u8> = one.repeat(PER_WRITE);
    let mut frames = 0usize;
    let mut stalled = false;
    let mut write_error = None;
    while frames * one.len() < TOTAL {
        let by = (Instant::now() + Duration::from_secs(1)).min(deadline);
        match write_by(&mut wr, &chunk, by).await {
            Ok(()) => frames += PER_WRITE,
            Err(e) if e.contains("timed out") => {
                stalled = true;
                break;
            }
            Err(e) => {
                write_error = Some(e);
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let flood_end = Instant::now();
    // Now read what the server said, bounded in time.
    let until = (Instant::now() + Duration::from_secs(1)).min(deadline);
    while !seen.reacted() {
        match reader.next(until).await {
            Ok(f) => seen.note(&f),
            Err(End::Timeout) => break,
            Err(e) => seen.end = Some(e),
        }
    }
    let acks = match kind {
        Control::Settings => seen.settings_acks.saturating_sub(1),
        Control::Ping => seen.ping_acks,
    };
    let amount = format!(
        "~{frames} {what} frames ({} KiB) sent with no ACK read; {acks} ACKs read afterwards",
        frames * one.len() / 1024
    );
    if seen.reacted() {
        return Ok(Outcome::pass(format!("{} after {amount}", seen.reaction())));
    }
    if let Some(e) = write_error {
        return Ok(Outcome::pass(format!("write failed ({e}) after {amount}")));
    }
    if stalled {
        return Ok(Outcome::pass(format!(
            "the server stopped reading while its ACKs were unread (bounded): {amount}"
        )));
    }
    if flood_end >= deadline {
        return Ok(Outcome::warn(format!(
            "still reading at the time limit: {amount}"
        )));
    }
    Ok(Outcome::fail(format!(
        "took all {amount}, connection open: ACKs queued without bound or not sent"
    )))
}

/// What happened to an upload.
enum Upload {
    Response(http::StatusCode),
    Reset(h2::Reason),
    Error(String),
    Stalled,
}

/// A POST of `--max-body` + 1 bytes, with `content-length` (`declared`) or
/// without. PASS: 413, or the stream refused/reset, before the server
/// granted window for every byte; FAIL: all bytes taken (window granted
/// for each), whatever the answer after that, 413 included.
async fn oversized_body(t: &Target, opts: &Options, declared: bool, deadline: Instant) -> CheckOut {
    let total = opts.max_body.saturating_add(1);
    let io = connect(t, opts, false, deadline).await?;
    let (mut client, conn) = tokio::time::timeout_at(deadline.into(), h2::client::handshake(io))
        .await
        .map_err(|_| Outcome::fail("handshake timed out"))?
        .map_err(|e| Outcome::fail(format!("HTTP/2 handshake: {e}")))?;
    let _driver = spawn(conn);
    let mut req = http::Request::post(uri(t)).header("content-type", "application/octet-stream");
    if declared {
        req = req.header("content-length", total.to_string());
    }
    let req = req.body(()).map_err(|e| Outcome::fail(e.to_string()))?;
    let (resp, mut send) = client
        .send_request(req, false)
        .map_err(|e| Outcome::fail(format!("request: {e}")))?;
    let mut resp = std::pin::pin!(resp);
    let zeros = Bytes::from(vec![0u8; 64 * 1024]);
    let mut sent = 0u64;
    let mut early: Option<http::StatusCode> = None;
    let outcome = loop {
        if sent >= total {
            break None;
        }
        send.reserve_capacity((total - sent).min(zeros.len() as u64) as usize);
        enum Ev {
            Resp(Result<http::Response<h2::RecvStream>, h2::Error>),
            Reset(Result<h2::Reason, h2::Error>),
            Cap(Option<Result<usize, h2::Error>>),
        }
        let ev = tokio::time::timeout_at(
            deadline.into(),
            poll_fn(|cx| {
                if early.is_none()
                    && let Poll::Ready(r) = Pin::new(&mut resp).poll(cx)
                {
                    return Poll::Ready(Ev::Resp(r));
                }
                if let Poll::Ready(r) = send.poll_reset(cx) {
                    return Poll::Ready(Ev::Reset(r));
                }
                send.poll_capacity(cx).map(Ev::Cap)
            }),
        )
        .await;
        match ev {
            Err(_) => break Some(Upload::Stalled),
            Ok(Ev::Resp(Ok(r))) if r.status() == http::StatusCode::PAYLOAD_TOO_LARGE => {
                break Some(Upload::Response(r.status()));
            }
            Ok(Ev::Resp(Ok(r))) => early = Some(r.status()),
            Ok(Ev::Resp(Err(e))) => break Some(h2_end(e)),
            Ok(Ev::Reset(Ok(reason))) => break Some(Upload::Reset(reason)),
            Ok(Ev::Reset(Err(e))) | Ok(Ev::Cap(Some(Err(e)))) => break Some(h2_end(e)),
            Ok(Ev::Cap(None)) => break Some(Upload::Error("stream closed".into())),
            Ok(Ev::Cap(Some(Ok(n)))) => {
                let n = n.min((total - sent) as usize).min(zeros.len());
                if n == 0 {
                    continue;
                }
                let last = sent + n as u64 >= total;
                if let Err(e) = send.send_data(zeros.slice(..n), last) {
                    break Some(h2_end(e));
                }
                sent += n as u64;
            }
        }
    };
    let how = if declared {
        format!("content-length: {total}")
    } else {
        "no content-length".to_string()
    };
    let early_note = early.map_or(String::new(), |s| format!(" (answered {s} first)"));
    match outcome {
        Some(Upload::Response(status)) => Ok(Outcome::pass(format!(
            "{status} after {sent} of {total} body bytes ({how})"
        ))),
        Some(Upload::Reset(reason)) => Ok(Outcome::pass(format!(
            "RST_STREAM {reason:?} after {sent} of {total} body bytes{early_note}: \
             the rest was not taken ({how})"
        ))),
        Some(Upload::Error(e)) => Ok(Outcome::pass(format!(
            "{e} after {sent} of {total} body bytes{early_note} ({how})"
        ))),
        Some(Upload::Stalled) => Ok(Outcome::warn(format!(
            "no window and no answer after {sent} of {total} body bytes{early_note} ({how})"
        ))),
        None => {
            // Every byte was granted window: now the answer.
            let answer = match early {
                Some(s) => Ok(s),
                None => tokio::time::timeout_at(deadline.into(), resp)
                    .await
                    .map_err(|_| "no response before the time limit".to_string())
                    .and_then(|r| r.map(|r| r.status()).map_err(|e| e.to_string())),
            };
            match answer {
                // Refused, but only once every byte was in: the bytes
                // were held somewhere (a proxy that buffers bodies).
                Ok(s) if s == http::StatusCode::PAYLOAD_TOO_LARGE => Ok(Outcome::fail(format!(
                    "{s} only after taking all {total} body bytes ({how})"
                ))),
                Ok(s) => Ok(Outcome::fail(format!(
                    "took all {total} body bytes and answered {s} ({how})"
                ))),
                Err(e) => Ok(Outcome::fail(format!(
                    "took all {total} body bytes; then {e} ({how})"
                ))),
            }
        }
    }
}

fn h2_end(e: h2::Error) -> Upload {
    match e.reason() {
        Some(r) if e.is_go_away() => Upload::Error(format!("GOAWAY {r:?}")),
        Some(r) => Upload::Reset(r),
        None => Upload::Error(e.to_string()),
    }
}

/// SETTINGS_INITIAL_WINDOW_SIZE = 0 and no WINDOW_UPDATE ever: the response
/// body can never be sent. Raw frames, so the evidence is the frame that
/// ended it (RST_STREAM and its code, GOAWAY, or the close); the server's
/// PINGs are answered, as a live client would. PASS: the stream reset or
/// the connection closed within `--stall-timeout` of the response head;
/// FAIL: still open after it.
async fn zero_window(t: &Target, opts: &Options, deadline: Instant) -> CheckOut {
    let raw = open_raw(
        t,
        opts,
        &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)],
        false,
        deadline,
    )
    .await?;
    let Raw {
        mut reader, mut wr, ..
    } = raw;
    let get = frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block(t, "GET"),
    );
    write_by(&mut wr, &get, deadline)
        .await
        .map_err(|e| Outcome::fail(format!("request: {e}")))?;
    let head_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
    // Set once the response head is in: from then on the stall is timed.
    let mut started: Option<Instant> = None;
    let mut stall_by = head_by;
    loop {
        let secs = || started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let f = match reader.next(stall_by).await {
            Ok(f) => f,
            Err(End::Timeout) if started.is_none() => {
                return Ok(Outcome::fail("no response head before the time limit"));
            }
            Err(End::Timeout) => {
                return Ok(Outcome::fail(format!(
                    "response stream still open after {:.1} s with no window (the server never gave up on it)",
                    secs()
                )));
            }
            Err(e @ (End::Fin | End::Reset)) if started.is_some() => {
                return Ok(Outcome::pass(format!("{e} after {:.1} s", secs())));
            }
            Err(e) => return Ok(Outcome::fail(format!("before the response head: {e}"))),
        };
        match f.ty {
            HEADERS if f.stream == 1 && started.is_none() => {
                if f.flags & END_STREAM != 0 {
                    return Ok(Outcome::skip(
                        "the response has no body: nothing to hold back (use a path with a body)",
                    ));
                }
                let now = Instant::now();
                started = Some(now);
                stall_by = (now + opts.stall_timeout).min(deadline);
            }
            DATA if f.stream == 1 && !f.payload.is_empty() => {
                return Ok(Outcome::fail(format!(
                    "{} DATA bytes sent into a zero window (flow-control violation)",
                    f.payload.len()
                )));
            }
            // A zero-length DATA needs no window: the server gave up on the
            // body and ended the stream (HAProxy does at `timeout client`),
            // which cuts the response short but holds nothing.
            DATA if f.stream == 1 && f.flags & END_STREAM != 0 => {
                return Ok(Outcome::pass(format!(
                    "stream ended (empty DATA with END_STREAM, the body cut short) after {:.1} s",
                    secs()
                )));
            }
            RST_STREAM | GOAWAY if started.is_none() => {
                let mut seen = Seen::default();
                seen.note(&f);
                let what = if f.ty == GOAWAY {
                    seen.reaction()
                } else {
                    seen.reset_summary()
                };
                return Ok(Outcome::fail(format!("before the response head: {what}")));
            }
            RST_STREAM if f.stream == 1 && f.payload.len() >= 4 => {
                let code =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
                return Ok(Outcome::pass(format!(
                    "RST_STREAM {} after {:.1} s",
                    code_name(code),
                    secs()
                )));
            }
            GOAWAY => {
                let mut seen = Seen::default();
                seen.note(&f);
                return Ok(Outcome::pass(format!(
                    "{} after {:.1} s",
                    seen.reaction(),
                    secs()
                )));
            }
            PING if f.flags & ACK == 0 => {
                let pong = frame(PING, ACK, 0, &f.payload);
                if let Err(e) = write_by(&mut wr, &pong, stall_by).await {
                    return Ok(Outcome::pass(format!(
                        "write failed ({e}) after {:.1} s",
                        secs()
                    )));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers() {
        // RFC 7541 C.1: 10 and 1337 with a 5-bit prefix.
        let mut b = Vec::new();
        hpack_int(&mut b, 5, 0, 10);
        assert_eq!(b, [10]);
        b.clear();
        hpack_int(&mut b, 5, 0, 1337);
        assert_eq!(b, [31, 154, 10]);
        b.clear();
        hpack_int(&mut b, 7, 0, 127);
        assert_eq!(b, [127, 0]);
    }

    #[test]
    fn frames() {
        let f = frame(RST_STREAM, 0, 3, &CANCEL.to_be_bytes());
        assert_eq!(f, [0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8]);
        let s = settings_frame(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]);
        assert_eq!(s, [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
    }
}
