//! HTTP/2 as raw frames: the tiny encoder the floods need (frames, HPACK
//! literals) and the reader that counts what the server sent back, so that
//! the evidence is what crossed the wire (GOAWAY and its code, RST_STREAM
//! codes, ACKs).

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf};

use crate::probe::Endpoint;

/// The byte stream the frames cross: TCP, or TLS over it.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(super) type BoxIo = Box<dyn Io>;

pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(super) const DATA: u8 = 0;
pub(super) const HEADERS: u8 = 1;
pub(super) const RST_STREAM: u8 = 3;
pub(super) const SETTINGS: u8 = 4;
pub(super) const PING: u8 = 6;
pub(super) const GOAWAY: u8 = 7;
pub(super) const CONTINUATION: u8 = 9;
pub(super) const END_STREAM: u8 = 1;
pub(super) const ACK: u8 = 1;
pub(super) const END_HEADERS: u8 = 4;
pub(super) const SETTINGS_ENABLE_PUSH: u16 = 2;
pub(super) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;
pub(super) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 4;
pub(super) const CANCEL: u32 = 8;
/// The largest frame payload every peer accepts (SETTINGS_MAX_FRAME_SIZE's
/// initial value); the reader refuses bigger ones from the server too.
pub(super) const MAX_FRAME: usize = 16_384;

pub(super) fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    let len = payload.len() as u32;
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(super) fn settings_frame(params: &[(u16, u32)]) -> Vec<u8> {
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
pub(super) fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0);
    hpack_int(out, 7, 0, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 7, 0, value.len());
    out.extend_from_slice(value);
}

/// The header block of a request for the target's path.
pub(super) fn request_block(t: &Endpoint, method: &str) -> Vec<u8> {
    let mut b = Vec::new();
    hpack_literal(&mut b, ":method", method.as_bytes());
    let scheme = if t.tls { "https" } else { "http" };
    hpack_literal(&mut b, ":scheme", scheme.as_bytes());
    hpack_literal(&mut b, ":authority", t.host.as_bytes());
    hpack_literal(&mut b, ":path", t.path.as_bytes());
    hpack_literal(&mut b, "user-agent", b"keepwire-check");
    b
}

pub(super) fn code_name(code: u32) -> String {
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
pub(super) struct Frame {
    pub(super) ty: u8,
    pub(super) flags: u8,
    pub(super) stream: u32,
    pub(super) payload: Vec<u8>,
}

/// Why the server's frames stopped.
#[derive(Debug, Clone)]
pub(super) enum End {
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
pub(super) struct Reader {
    pub(super) rd: ReadHalf<BoxIo>,
    pub(super) buf: Vec<u8>,
}

impl Reader {
    pub(super) async fn next(&mut self, deadline: Instant) -> Result<Frame, End> {
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
pub(super) struct Seen {
    /// GOAWAY: last stream id, error code, debug data.
    pub(super) goaway: Option<(u32, u32, String)>,
    /// RST_STREAM frames by error code.
    pub(super) resets: BTreeMap<u32, u32>,
    /// HEADERS frames (responses begun).
    pub(super) headers: u32,
    pub(super) data_bytes: u64,
    pub(super) settings_acks: u64,
    pub(super) ping_acks: u64,
    /// How the frames ended, if they did.
    pub(super) end: Option<End>,
}

impl Seen {
    pub(super) fn note(&mut self, f: &Frame) {
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
    pub(super) fn reacted(&self) -> bool {
        self.goaway.is_some() || matches!(self.end, Some(End::Fin | End::Reset))
    }

    /// "GOAWAY ENHANCE_YOUR_CALM (last stream 41, "debug")", or how the
    /// connection ended.
    pub(super) fn reaction(&self) -> String {
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

    pub(super) fn reset_summary(&self) -> String {
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
