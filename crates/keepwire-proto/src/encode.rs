//! Heads into one buffer, bodies framed without copying their payload.
//!
//! R2.3: a head and a small body should leave in one write. Heads are
//! appended to a caller-owned `BytesMut` (so a pipelined burst of responses
//! can share one buffer and one write), and body frames are [`EncodedBuf`]s:
//! a small inline prefix (the chunk-size line), the caller's `Bytes`
//! untouched, and a static suffix. `EncodedBuf` implements [`Buf`], so
//! `chunks_vectored` hands all three to one `writev`.

use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use crate::digits::{InlineBytes, itoa_buf};
use crate::error::{Error, ErrorKind};
use crate::head::HeaderCase;

fn version_str(v: Version) -> &'static [u8] {
    if v == Version::HTTP_10 {
        b"HTTP/1.0"
    } else {
        b"HTTP/1.1"
    }
}

/// Appends `METHOD target VERSION\r\n`.
pub fn request_line(method: &Method, target: &str, version: Version, out: &mut BytesMut) {
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_u8(b' ');
    out.put_slice(version_str(version));
    out.put_slice(b"\r\n");
}

/// Appends `HTTP/1.1 code reason\r\n` (servers answer with their own
/// highest version, also to HTTP/1.0 clients; RFC 9110 §6.2).
pub fn status_line(status: StatusCode, reason: Option<&[u8]>, out: &mut BytesMut) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    let reason = reason.unwrap_or_else(|| status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(reason);
    out.put_slice(b"\r\n");
}

/// Appends one field line.
pub fn field(name: &[u8], value: &[u8], out: &mut BytesMut) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Appends `headers` as field lines, spelling names as `case` recorded
/// them, skipping names for which `skip` is true (framing and connection
/// fields the connection writes itself).
pub fn fields(
    headers: &HeaderMap,
    case: &HeaderCase,
    skip: impl Fn(&HeaderName) -> bool,
    out: &mut BytesMut,
) {
    let mut prev: Option<&HeaderName> = None;
    let mut nth = 0;
    for (name, value) in headers {
        if prev == Some(name) {
            nth += 1;
        } else {
            prev = Some(name);
            nth = 0;
        }
        if skip(name) {
            continue;
        }
        let spelled = if case.is_empty() {
            None
        } else {
            case.get(name, nth)
        };
        field(
            spelled.unwrap_or(name.as_str().as_bytes()),
            value.as_bytes(),
            out,
        );
    }
}

/// Appends `Content-Length: n\r\n` without allocating.
pub fn content_length_field(n: u64, out: &mut BytesMut) {
    field(b"content-length", itoa_buf(n).as_slice(), out);
}

/// One body frame: `prefix`, payload, `suffix`, for one vectored write.
#[derive(Debug, Clone)]
pub struct EncodedBuf {
    prefix: InlineBytes,
    data: Bytes,
    suffix: &'static [u8],
}

impl EncodedBuf {
    fn plain(data: Bytes) -> Self {
        EncodedBuf {
            prefix: InlineBytes::EMPTY,
            data,
            suffix: b"",
        }
    }
}

impl Buf for EncodedBuf {
    fn remaining(&self) -> usize {
        self.prefix.as_slice().len() + self.data.len() + self.suffix.len()
    }

    fn chunk(&self) -> &[u8] {
        if !self.prefix.as_slice().is_empty() {
            self.prefix.as_slice()
        } else if !self.data.is_empty() {
            &self.data
        } else {
            self.suffix
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        let p = self.prefix.as_slice().len().min(cnt);
        self.prefix.start += p as u8;
        cnt -= p;
        let d = self.data.len().min(cnt);
        self.data.advance(d);
        cnt -= d;
        assert!(
            cnt <= self.suffix.len(),
            "advance past the end of EncodedBuf"
        );
        self.suffix = &self.suffix[cnt..];
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for part in [self.prefix.as_slice(), &self.data[..], self.suffix] {
            if n == dst.len() {
                break;
            }
            if !part.is_empty() {
                dst[n] = IoSlice::new(part);
                n += 1;
            }
        }
        n
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// No body may be sent; given bytes are dropped (a HEAD response still
    /// announces the GET's length, RFC 9110 §9.3.2).
    Discard,
    Length {
        announced: u64,
        left: u64,
    },
    Chunked,
    CloseDelimited,
}

/// Frames one outgoing body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoder {
    kind: Kind,
}

impl Encoder {
    /// Bytes are dropped (HEAD responses, 1xx/204/304).
    pub fn discard() -> Self {
        Encoder {
            kind: Kind::Discard,
        }
    }

    /// Exactly `n` bytes follow.
    pub fn length(n: u64) -> Self {
        Encoder {
            kind: Kind::Length {
                announced: n,
                left: n,
            },
        }
    }

    /// `Transfer-Encoding: chunked`.
    pub fn chunked() -> Self {
        Encoder {
            kind: Kind::Chunked,
        }
    }

    /// Body ends when the connection closes.
    pub fn close_delimited() -> Self {
        Encoder {
            kind: Kind::CloseDelimited,
        }
    }

    /// True for `Transfer-Encoding: chunked`.
    pub fn is_chunked(&self) -> bool {
        self.kind == Kind::Chunked
    }

    /// True if the connection must close after this body.
    pub fn is_close_delimited(&self) -> bool {
        self.kind == Kind::CloseDelimited
    }

    /// Frames `data`. Empty data yields an empty frame (never the chunked
    /// terminator, which only [`Encoder::end`] writes).
    pub fn encode(&mut self, data: Bytes) -> Result<EncodedBuf, Error> {
        match &mut self.kind {
            Kind::Discard => Ok(EncodedBuf::plain(Bytes::new())),
            Kind::Length { announced, left } => {
                if data.len() as u64 > *left {
                    return Err(Error::local(ErrorKind::BodyLengthMismatch {
                        announced: *announced,
                        given: *announced - *left + data.len() as u64,
                    }));
                }
                *left -= data.len() as u64;
                Ok(EncodedBuf::plain(data))
            }
            Kind::Chunked if data.is_empty() => Ok(EncodedBuf::plain(data)),
            Kind::Chunked => Ok(EncodedBuf {
                prefix: InlineBytes::chunk_size_line(data.len()),
                data,
                suffix: b"\r\n",
            }),
            Kind::CloseDelimited => Ok(EncodedBuf::plain(data)),
        }
    }

    /// Ends the body, appending the chunked terminator (and `trailers`) to
    /// `out`. A Content-Length body that is short is an error: sending fewer
    /// bytes than announced would look like truncation to the peer (R8.2).
    pub fn end(&mut self, trailers: Option<&HeaderMap>, out: &mut BytesMut) -> Result<(), Error> {
        match &self.kind {
            Kind::Length { announced, left } if *left > 0 => {
                Err(Error::local(ErrorKind::BodyLengthMismatch {
                    announced: *announced,
                    given: announced - left,
                }))
            }
            Kind::Chunked => {
                out.put_slice(b"0\r\n");
                if let Some(t) = trailers {
                    fields(t, &HeaderCase::default(), |_| false, out);
                }
                out.put_slice(b"\r\n");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// `HeaderValue` for a decimal number.
pub fn decimal_value(n: u64) -> HeaderValue {
    HeaderValue::from_bytes(itoa_buf(n).as_slice()).expect("digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, Frame};
    use crate::digits::format_hex_line;
    use crate::framing::BodyKind;

    fn collect(mut b: EncodedBuf) -> Vec<u8> {
        let mut v = Vec::new();
        while b.has_remaining() {
            let c = b.chunk().to_vec();
            b.advance(c.len());
            v.extend(c);
        }
        v
    }

    #[test]
    fn chunked_frames_are_hex_prefixed_and_vectored() {
        let mut e = Encoder::chunked();
        let f = e.encode(Bytes::from(vec![b'x'; 300])).unwrap();
        let mut io = [IoSlice::new(&[]); 4];
        assert_eq!(f.chunks_vectored(&mut io), 3);
        assert_eq!(&*io[0], b"12c\r\n");
        assert_eq!(collect(f).len(), 5 + 300 + 2);
        assert!(collect(e.encode(Bytes::new()).unwrap()).is_empty());
        let mut out = BytesMut::new();
        let mut t = HeaderMap::new();
        t.insert("x-sum", "1".parse().unwrap());
        e.end(Some(&t), &mut out).unwrap();
        assert_eq!(&out[..], b"0\r\nx-sum: 1\r\n\r\n");
    }

    #[test]
    fn length_encoder_refuses_too_much_and_too_little() {
        let mut e = Encoder::length(4);
        e.encode(Bytes::from_static(b"ab")).unwrap();
        assert!(e.encode(Bytes::from_static(b"cde")).is_err());
        let err = e.end(None, &mut BytesMut::new()).unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::BodyLengthMismatch {
                announced: 4,
                given: 2
            }
        );
    }

    #[test]
    fn numbers_render_without_allocation() {
        let mut out = BytesMut::new();
        for n in [0u64, 7, 10, 1024, u64::MAX] {
            out.clear();
            content_length_field(n, &mut out);
            assert_eq!(out, format!("content-length: {n}\r\n").as_bytes());
            assert_eq!(
                format_hex_line(n as usize).0[..format_hex_line(n as usize).1],
                format!("{n:x}\r\n").into_bytes()[..]
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn chunked_encode_then_decode_is_identity(pieces in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..20)) {
            let mut e = Encoder::chunked();
            let mut wire = Vec::new();
            for p in &pieces {
                wire.extend(collect(e.encode(Bytes::from(p.clone())).unwrap()));
            }
            let mut out = BytesMut::new();
            e.end(None, &mut out).unwrap();
            wire.extend_from_slice(&out);
            let mut d = Decoder::new(BodyKind::Chunked, &crate::Limits { max_body_bytes: None, ..Default::default() });
            let mut buf = BytesMut::from(&wire[..]);
            let mut body = Vec::new();
            while let Some(f) = d.decode(&mut buf).unwrap() {
                match f {
                    Frame::Data(b) => body.extend_from_slice(&b),
                    Frame::End(_) => break,
                }
            }
            proptest::prop_assert_eq!(body, pieces.concat());
            proptest::prop_assert!(buf.is_empty());
        }
    }
}
