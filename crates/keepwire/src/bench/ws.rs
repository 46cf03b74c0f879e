//! The WebSocket worker (`keepwire bench --ws`): echo round trips over
//! held connections, closed loop, `pipeline` messages in flight per
//! connection.
//!
//! # Why it frames by hand
//! Like the HTTP/1 worker, which writes one pre-serialised request and
//! skims responses instead of running the full client, this worker does
//! only what an echo loop needs (RFC 6455 §5): it writes each message as
//! one masked frame (a fresh mask key per frame, §5.3) into one buffer per
//! batch, and reads frames in place, comparing each data message with the
//! one sent, without building a `Message` or allocating per frame. It
//! answers pings, honours the server's close (echoing its code, §5.5.1) and
//! closes with 1000 at the end of the run. The handshake goes through the
//! proto core's [`Conn`](keepwire_proto::Conn) like any request (see
//! `opening`), with the key and `Sec-WebSocket-Accept` check of the
//! framing crate `keepwire::ws` uses (tungstenite's).
//!
//! A data message that is not the echo (a server that also pushes events,
//! as `keepwire serve`'s `/ws` can) is skipped; a wrong echo therefore
//! shows up as a timeout. Frames over 1 MiB (or the message size, if
//! larger) fail the connection as `parse`: nothing is buffered beyond that.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use keepwire_proto::RequestHead;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::http1::write_all;
use super::opening::Opened;
use super::report::nanos;
use super::{End, FailureKind, Worker};
use crate::net;
use crate::transport::Transport;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The handshake and the message of a `--ws` run.
#[derive(Debug, Clone)]
pub struct WsRequest {
    head: RequestHead,
    message: Bytes,
    opcode: u8,
}

impl WsRequest {
    /// Upgrades `GET url` (an `http://` or `https://` URL: the scheme only
    /// chooses TLS) with `headers`, then echoes `message`, as a text
    /// message if `text` (it must be UTF-8 then), else binary.
    pub fn new(url: &Uri, headers: &HeaderMap, message: Bytes, text: bool) -> Result<Self, String> {
        if text && std::str::from_utf8(&message).is_err() {
            return Err("a text message must be UTF-8".into());
        }
        let mut head = super::request::request_head(&Method::GET, url, headers, Version::HTTP_11)?;
        let h = &mut head.headers;
        h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        h.insert(
            http::header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        Ok(WsRequest {
            head,
            message,
            opcode: if text { TEXT } else { BINARY },
        })
    }

    /// Largest frame a connection buffers.
    fn max_frame(&self) -> usize {
        self.message.len().max(1 << 20)
    }
}

/// One WebSocket connection of a worker.
struct WsConn {
    stream: Transport,
    buf: BytesMut,
    /// Frames to write: a batch of messages, or pongs and a close.
    out: BytesMut,
    /// When each message in flight was written, oldest first.
    in_flight: VecDeque<Instant>,
    /// Inside a fragmented data message: bytes so far, and whether they
    /// match the message sent so far.
    partial: Option<(usize, bool)>,
    carried: u64,
    progress_at: Instant,
    rng: Rng,
}

/// What one frame asks for.
enum Action {
    None,
    Echo,
    Pong,
    Closed,
}

impl Worker {
    /// Connections one after another until the run ends.
    pub(super) async fn run_ws(&self, spec: &WsRequest) {
        let mut rng = Rng::new(self.thread);
        while let End::Reconnect = self.ws_connection(spec, &mut rng).await {}
    }

    async fn ws_connection(&self, spec: &WsRequest, rng: &mut Rng) -> End {
        // Claimed before connecting, so a failed connect is charged to a
        // message and a finished run opens no connection.
        if self.shared.claim(1) == 0 {
            return End::Done;
        }
        let key = generate_key();
        let mut head = spec.head.clone();
        if let Ok(v) = HeaderValue::from_str(&key) {
            head.headers.insert(http::header::SEC_WEBSOCKET_KEY, v);
        }
        let mut opened = match self.open_exchange(&head).await {
            Ok(o) if accepted(&o, &key) => o,
            Ok(_) => {
                self.failed_open(FailureKind::Refused).await;
                return End::Reconnect;
            }
            Err(kind) => {
                self.failed_open(kind).await;
                return End::Reconnect;
            }
        };
        let buf = opened.conn.take_read_buffer();
        let Opened { stream, .. } = opened;
        let mut c = WsConn {
            stream,
            buf,
            out: BytesMut::with_capacity(net::READ_CHUNK),
            in_flight: VecDeque::with_capacity(self.shared.plan.pipeline),
            partial: None,
            carried: 0,
            progress_at: Instant::now(),
            rng: rng.fork(),
        };
        let end = self.ws_drive(spec, &mut c, 1).await;
        let mut t = self.tally.borrow_mut();
        t.max_per_conn = t.max_per_conn.max(c.carried);
        end
    }

    /// Runs one connection; `claimed` messages were claimed for it already.
    async fn ws_drive(&self, spec: &WsRequest, c: &mut WsConn, mut claimed: usize) -> End {
        let timeout = self.shared.plan.timeout;
        let window = self.shared.plan.pipeline;
        // Re-armed only when it fires: the deadline moves with every echo,
        // and moving a timer per message costs more than the check.
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        loop {
            if c.in_flight.is_empty() {
                let n = claimed + self.shared.claim(window - claimed);
                claimed = 0;
                if n == 0 {
                    self.ws_close(c).await;
                    return End::Done;
                }
                if let Err(kind) = self.ws_send(spec, c, n).await {
                    return self.ws_lose(c, kind);
                }
            }
            let read = tokio::select! {
                biased;
                r = c.stream.read_available(&mut c.buf) => Some(r),
                _ = &mut sleep => None,
            };
            match read {
                Some(Ok(0)) => return self.ws_lose(c, FailureKind::Closed),
                Some(Ok(n)) => self.tally.borrow_mut().bytes_read += n as u64,
                Some(Err(e)) => return self.ws_lose(c, FailureKind::of_io(&e)),
                None => {
                    let give_up = c.progress_at + timeout;
                    if Instant::now() >= give_up {
                        return self.ws_lose(c, FailureKind::Timeout);
                    }
                    sleep.as_mut().reset(give_up.into());
                    continue;
                }
            }
            match self.ws_frames(spec, c) {
                Ok(false) => {}
                Ok(true) => {
                    // The server closed: echo its close, then let go.
                    let _ = write_all(&mut c.stream, &c.out, timeout).await;
                    return self.ws_lose(c, FailureKind::Closed);
                }
                Err(kind) => return self.ws_lose(c, kind),
            }
            if !c.out.is_empty() {
                if let Err(e) = write_all(&mut c.stream, &c.out, timeout).await {
                    return self.ws_lose(c, FailureKind::of_io(&e));
                }
                c.out.clear();
            }
        }
    }

    /// Writes `n` messages in one write.
    async fn ws_send(&self, spec: &WsRequest, c: &mut WsConn, n: usize) -> Result<(), FailureKind> {
        c.out.clear();
        for _ in 0..n {
            let mask = c.rng.mask();
            put_frame(&mut c.out, spec.opcode, &spec.message, mask);
        }
        let now = Instant::now();
        c.progress_at = now;
        c.in_flight.extend(std::iter::repeat_n(now, n));
        {
            let mut t = self.tally.borrow_mut();
            t.sent += n as u64;
            t.bytes_written += c.out.len() as u64;
        }
        let result = write_all(&mut c.stream, &c.out, self.shared.plan.timeout).await;
        c.out.clear();
        result.map_err(|e| FailureKind::of_io(&e))
    }

    /// Handles every complete frame in the buffer, queueing pongs (and a
    /// close reply) in `c.out`. `Ok(true)`: the server closed.
    fn ws_frames(&self, spec: &WsRequest, c: &mut WsConn) -> Result<bool, FailureKind> {
        let at = Instant::now();
        loop {
            let Some(h) = parse_head(&c.buf, spec.max_frame())? else {
                return Ok(false);
            };
            let total = h.header_len + h.len;
            if c.buf.len() < total {
                c.buf.reserve(total - c.buf.len());
                return Ok(false);
            }
            let payload = &c.buf[h.header_len..total];
            let action = match h.opcode {
                0x0 | TEXT | BINARY => {
                    let (offset, same) = match (h.opcode, c.partial) {
                        (0x0, Some(p)) => p,
                        (0x0, None) | (_, Some(_)) => return Err(FailureKind::Parse),
                        (op, None) => (0, op == spec.opcode),
                    };
                    let end = offset + h.len;
                    let same = same && spec.message.get(offset..end) == Some(payload);
                    c.partial = (!h.fin).then_some((end, same));
                    if h.fin && same && end == spec.message.len() {
                        Action::Echo
                    } else {
                        Action::None
                    }
                }
                PING => Action::Pong,
                PONG => Action::None,
                CLOSE => Action::Closed,
                _ => return Err(FailureKind::Parse),
            };
            match action {
                Action::None => {}
                Action::Echo => self.echoed(c, at)?,
                Action::Pong => {
                    let mask = c.rng.mask();
                    put_frame(&mut c.out, PONG, &c.buf[h.header_len..total], mask);
                }
                Action::Closed => {
                    // Echo the status code (RFC 6455 §5.5.1), not the reason.
                    let code = h.len.min(2);
                    let mask = c.rng.mask();
                    c.out.clear();
                    let body = c.buf[h.header_len..h.header_len + code].to_vec();
                    put_frame(&mut c.out, CLOSE, &body, mask);
                    return Ok(true);
                }
            }
            c.buf.advance(total);
        }
    }

    /// The oldest message in flight came back at `at`.
    fn echoed(&self, c: &mut WsConn, at: Instant) -> Result<(), FailureKind> {
        // An echo nobody asked for: the stream is out of step.
        let written = c.in_flight.pop_front().ok_or(FailureKind::Parse)?;
        c.carried += 1;
        c.progress_at = at;
        let mut t = self.tally.borrow_mut();
        t.responses += 1;
        t.latency
            .saturating_record(nanos(at.saturating_duration_since(written)));
        t.last_done = Some(at);
        self.progressed(1);
        Ok(())
    }

    /// The connection broke as `kind` under every message in flight.
    fn ws_lose(&self, c: &mut WsConn, kind: FailureKind) -> End {
        let lost = c.in_flight.len() as u64;
        c.in_flight.clear();
        self.fail(kind, lost);
        End::Reconnect
    }

    /// The closing handshake at the end of the run (RFC 6455 §7.1.2): send
    /// 1000, wait (briefly) for the server's close or its FIN.
    async fn ws_close(&self, c: &mut WsConn) {
        let wait = self.shared.plan.timeout.min(Duration::from_secs(1));
        let mask = c.rng.mask();
        c.out.clear();
        put_frame(&mut c.out, CLOSE, &1000u16.to_be_bytes(), mask);
        if write_all(&mut c.stream, &c.out, wait).await.is_err() {
            return;
        }
        let closing = async {
            loop {
                match parse_head(&c.buf, usize::MAX) {
                    Ok(Some(h)) if c.buf.len() >= h.header_len + h.len => {
                        if h.opcode == CLOSE {
                            return;
                        }
                        c.buf.advance(h.header_len + h.len);
                        continue;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
                if !matches!(c.stream.read_available(&mut c.buf).await, Ok(n) if n > 0) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(wait, closing).await;
    }
}

/// Whether the server switched to WebSocket for `key` (RFC 6455 §4.2.2).
fn accepted(o: &Opened, key: &str) -> bool {
    let h = &o.head.headers;
    o.head.status == http::StatusCode::SWITCHING_PROTOCOLS
        && h.get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && h.get(http::header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes())
}

/// A frame head.
struct FrameHead {
    fin: bool,
    opcode: u8,
    header_len: usize,
    len: usize,
}

/// Reads a server frame's head (RFC 6455 §5.2). `Ok(None)`: incomplete.
/// A masked frame, reserved bits (no extension was negotiated), a control
/// frame over 125 bytes or fragmented, or a frame over `max` is `parse`.
fn parse_head(buf: &[u8], max: usize) -> Result<Option<FrameHead>, FailureKind> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
    if b0 & 0x70 != 0 || b1 & 0x80 != 0 {
        return Err(FailureKind::Parse);
    }
    let (header_len, len) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (4, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
        127 if buf.len() >= 10 => {
            let mut n = [0; 8];
            n.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(n))
        }
        126 | 127 => return Ok(None),
        n => (2, u64::from(n)),
    };
    let len = usize::try_from(len).map_err(|_| FailureKind::Parse)?;
    if len > max || (opcode >= CLOSE && (len > 125 || !fin)) {
        return Err(FailureKind::Parse);
    }
    Ok(Some(FrameHead {
        fin,
        opcode,
        header_len,
        len,
    }))
}

/// Appends one client frame (final, masked with `mask`).
fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.put_u8(0x80 | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(0x80 | 127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(&mask);
    let start = out.len();
    out.put_slice(payload);
    let data = &mut out[start..];
    // Eight bytes at a time; the tail starts at a multiple of four.
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Mask keys: xorshift64*, seeded per thread from the
/// standard library's random hasher keys. Unpredictable enough for what
/// masking is for (RFC 6455 §10.3: a client script must not choose the
/// bytes on the wire); this is not a cryptographic generator.
struct Rng(u64);

impl Rng {
    fn new(thread: usize) -> Self {
        use std::hash::BuildHasher;
        let seed = std::hash::RandomState::new().hash_one((thread, Instant::now()));
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A generator for one connection.
    fn fork(&mut self) -> Rng {
        Rng(self.next() | 1)
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.next() as u32).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_written_parse_back_and_unmask() {
        for len in [0, 5, 125, 126, 9000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = BytesMut::new();
            put_frame(&mut out, TEXT, &payload, [1, 2, 3, 4]);
            // A client frame is masked: clear the bit to read it as a
            // server's, then unmask.
            out[1] &= 0x7F;
            let h = parse_head(&out, usize::MAX).unwrap().unwrap();
            assert!(h.fin);
            assert_eq!((h.opcode, h.len), (TEXT, len));
            let start = h.header_len + 4;
            let back: Vec<u8> = out[start..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
                .collect();
            assert_eq!(back, payload, "len {len}");
        }
    }

    #[test]
    fn bad_server_frames_are_refused() {
        let masked = [0x81, 0x80 | 1, 0, 0, 0, 0, b'x'];
        let rsv = [0xC1, 1, b'x'];
        let big_ping = [0x89, 126, 0, 200];
        let split_ping = [0x09, 0];
        for bad in [&masked[..], &rsv, &big_ping, &split_ping] {
            assert!(parse_head(bad, 1 << 20).is_err(), "{bad:?}");
        }
        assert!(parse_head(&[0x82, 127, 0, 0, 0, 0, 0, 0x20, 0, 0], 1 << 20).is_err());
        assert!(parse_head(&[0x81, 126, 0], 1 << 20).unwrap().is_none());
    }
}
