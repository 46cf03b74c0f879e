//! Incremental body decoders.
//!
//! A decoder takes bytes from the front of the connection's read buffer and
//! never past its message's end, so the next pipelined message stays in the
//! buffer. `Ok(None)` means "need more bytes"; the caller reads and calls
//! again. At end of input, [`Decoder::finish`] tells a clean end from a
//! truncated message (R8.2): only a close-delimited body may end by EOF.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use crate::Limits;
use crate::error::{Error, ErrorKind};
use crate::framing::BodyKind;

/// What a decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Body bytes (a zero-copy slice of the read buffer).
    Data(Bytes),
    /// The body ended, with the trailer fields of a chunked body, if any.
    End(Option<HeaderMap>),
}

/// Where a chunked decoder is inside the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Expecting `chunk-size [ext] CRLF`.
    Size,
    /// Inside chunk data, this many bytes left.
    Data { left: u64 },
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields, then CRLF.
    Trailers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Length { left: u64 },
    Chunked { state: ChunkedState },
    CloseDelimited,
    Done,
}

/// Decodes one message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    kind: Kind,
    /// Body bytes handed out so far (for truncation reports and body limits).
    received: u64,
    /// Length announced by Content-Length, if that is the framing.
    expected: Option<u64>,
    /// Bounds for chunk lines, trailers and the body.
    max_chunk_line: usize,
    max_trailer: usize,
    max_body: Option<u64>,
}

impl Decoder {
    /// A decoder for `kind`, bounded by `limits`.
    pub fn new(kind: BodyKind, limits: &Limits) -> Self {
        let (kind, expected) = match kind {
            // Not `Done`: an empty body still reports its `End` once.
            BodyKind::Empty => (Kind::Length { left: 0 }, Some(0)),
            BodyKind::Length(n) => (Kind::Length { left: n }, Some(n)),
            BodyKind::Chunked => (
                Kind::Chunked {
                    state: ChunkedState::Size,
                },
                None,
            ),
            BodyKind::CloseDelimited => (Kind::CloseDelimited, None),
        };
        Decoder {
            kind,
            received: 0,
            expected,
            max_chunk_line: limits.max_chunk_line_bytes,
            max_trailer: limits.max_trailer_bytes,
            max_body: limits.max_body_bytes,
        }
    }

    /// True once [`Frame::End`] has been returned or would be next with no
    /// further input.
    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Done | Kind::Length { left: 0 })
    }

    /// Body bytes decoded so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Decodes the next frame from the front of `buf`.
    ///
    /// Returns `Ok(Some(Frame::End(..)))` exactly once; after that the
    /// decoder only returns `Ok(None)`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        loop {
            match &mut self.kind {
                Kind::Done => return Ok(None),
                Kind::Length { left } => {
                    if *left == 0 {
                        self.kind = Kind::Done;
                        return Ok(Some(Frame::End(None)));
                    }
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    return self.data(buf.split_to(n).freeze()).map(Some);
                }
                Kind::CloseDelimited => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let all = buf.split().freeze();
                    return self.data(all).map(Some);
                }
                Kind::Chunked { state } => match *state {
                    ChunkedState::Size => {
                        // chunk-size is 1*HEXDIG (RFC 9112 §7.1); httparse
                        // reads an empty line as size 0, which would end the
                        // body where a peer sees no end (found by the h11
                        // differential test).
                        if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                            return Err(Error::remote(ErrorKind::InvalidChunkSize));
                        }
                        let (consumed, size) = match httparse::parse_chunk_size(buf) {
                            Ok(httparse::Status::Complete(v)) => v,
                            Ok(httparse::Status::Partial) => {
                                if buf.len() > self.max_chunk_line {
                                    return Err(Error::remote(ErrorKind::InvalidChunkSize));
                                }
                                return Ok(None);
                            }
                            Err(_) => return Err(Error::remote(ErrorKind::InvalidChunkSize)),
                        };
                        if consumed > self.max_chunk_line {
                            return Err(Error::remote(ErrorKind::InvalidChunkSize));
                        }
                        // The line ends at its first LF. httparse lets an
                        // extension run on past a bare LF up to a CRLF, so
                        // `0;x\nX: 1\r\n` was one line here and a last
                        // chunk plus a trailer to a peer that stops at the
                        // LF (chunk-ext has no LF, RFC 9112 §7.1.1; found by
                        // the h11 differential test).
                        if buf[..consumed - 1].contains(&b'\n') {
                            return Err(Error::remote(ErrorKind::InvalidChunkSize));
                        }
                        buf.advance(consumed);
                        *state = if size == 0 {
                            ChunkedState::Trailers
                        } else {
                            ChunkedState::Data { left: size }
                        };
                    }
                    ChunkedState::Data { left } => {
                        if buf.is_empty() {
                            return Ok(None);
                        }
                        let n = left.min(buf.len() as u64) as usize;
                        let left = left - n as u64;
                        *state = if left == 0 {
                            ChunkedState::DataEnd
                        } else {
                            ChunkedState::Data { left }
                        };
                        return self.data(buf.split_to(n).freeze()).map(Some);
                    }
                    ChunkedState::DataEnd => {
                        if buf.len() < 2 {
                            if buf.first().is_some_and(|&b| b != b'\r') {
                                return Err(Error::remote(ErrorKind::InvalidChunkTerminator));
                            }
                            return Ok(None);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(Error::remote(ErrorKind::InvalidChunkTerminator));
                        }
                        buf.advance(2);
                        *state = ChunkedState::Size;
                    }
                    ChunkedState::Trailers => return self.trailers(buf),
                },
            }
        }
    }

    fn data(&mut self, bytes: Bytes) -> Result<Frame, Error> {
        self.received += bytes.len() as u64;
        if let Some(limit) = self.max_body
            && self.received > limit
        {
            return Err(Error::remote(ErrorKind::BodyTooLarge { limit }));
        }
        Ok(Frame::Data(bytes))
    }

    /// Parses `*(field-line CRLF) CRLF` after the last chunk.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.kind = Kind::Done;
            return Ok(Some(Frame::End(None)));
        }
        let mut slots = [httparse::EMPTY_HEADER; 32];
        match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete((len, fields))) => {
                if len > self.max_trailer {
                    return Err(Error::remote(ErrorKind::InvalidTrailers));
                }
                let mut map = HeaderMap::with_capacity(fields.len());
                for f in fields.iter() {
                    let name = http::HeaderName::from_bytes(f.name.as_bytes())
                        .map_err(|_| Error::remote(ErrorKind::InvalidTrailers))?;
                    let value = http::HeaderValue::from_bytes(f.value)
                        .map_err(|_| Error::remote(ErrorKind::InvalidTrailers))?;
                    map.append(name, value);
                }
                buf.advance(len);
                self.kind = Kind::Done;
                Ok(Some(Frame::End(Some(map))))
            }
            Ok(httparse::Status::Partial) if buf.len() <= self.max_trailer => Ok(None),
            _ => Err(Error::remote(ErrorKind::InvalidTrailers)),
        }
    }

    /// Input ended. A close-delimited body ends here (its `End` is
    /// returned); any other unfinished body is truncated (R8.2).
    pub fn finish(&mut self) -> Result<Option<Frame>, Error> {
        match self.kind {
            Kind::Done => Ok(None),
            Kind::CloseDelimited | Kind::Length { left: 0 } => {
                self.kind = Kind::Done;
                Ok(Some(Frame::End(None)))
            }
            Kind::Length { .. } | Kind::Chunked { .. } => {
                Err(Error::remote(ErrorKind::Truncated {
                    expected: self.expected,
                    received: self.received,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_body_bytes: None,
            ..Limits::default()
        }
    }

    /// Body, trailers, unread rest.
    type Decoded = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Feeds `input` in pieces of `step` bytes; returns body, trailers and
    /// what was left unread.
    fn run(kind: BodyKind, input: &[u8], step: usize) -> Result<Decoded, Error> {
        let mut d = Decoder::new(kind, &limits());
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Some(Frame::Data(b)) => body.extend_from_slice(&b),
                Some(Frame::End(t)) => {
                    let rest = [&buf[..], &input[fed..]].concat();
                    return Ok((body, t, rest));
                }
                None if fed < input.len() => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                None => {
                    return match d.finish()? {
                        Some(Frame::End(t)) => Ok((body, t, buf.to_vec())),
                        other => panic!("finish gave {other:?}"),
                    };
                }
            }
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers_at_every_step() {
        let input = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 9\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, trailers, rest) = run(BodyKind::Chunked, input, step).unwrap();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
            assert_eq!(trailers.unwrap()["x-sum"], "9");
            assert_eq!(rest, b"NEXT", "step {step}");
        }
    }

    #[test]
    fn truncation_is_an_error_never_a_short_success() {
        let err = run(BodyKind::Length(10), b"12345", 2).unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::Truncated {
                expected: Some(10),
                received: 5
            }
        );
        let err = run(BodyKind::Chunked, b"5\r\nhello\r\n", 3).unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::Truncated {
                expected: None,
                received: 5
            }
        );
        let (body, _, _) = run(BodyKind::CloseDelimited, b"all of it", 4).unwrap();
        assert_eq!(body, b"all of it");
    }

    #[test]
    fn bad_chunks_are_rejected() {
        for bad in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"5\r\nhelloXX",
            b"ffffffffffffffffff\r\n",
            // An empty chunk-size line is not `0` (h11 differential).
            b"\r\n\r\n",
            b"\n\r\n",
            b"1\r\nz\r\n\r\n\r\n",
            b";ext\r\n\r\n",
            b" 1\r\nz\r\n0\r\n\r\n",
            // An extension does not run on past a bare LF (h11 differential).
            b"0;last\nX-T: 1\r\n\r\n",
            b"1;a\nb\r\nz\r\n0\r\n\r\n",
        ] {
            let err = run(BodyKind::Chunked, bad, bad.len()).unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::InvalidChunkSize | ErrorKind::InvalidChunkTerminator
                ),
                "{:?} -> {err:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = [b"5;".as_slice(), &[b'a'; 5000]].concat();
        let err = run(BodyKind::Chunked, &long_ext, 100).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidChunkSize);
    }

    #[test]
    fn empty_bodies_end_exactly_once() {
        for kind in [BodyKind::Empty, BodyKind::Length(0)] {
            let mut d = Decoder::new(kind, &limits());
            assert!(d.is_done());
            let mut buf = BytesMut::from(&b"NEXT"[..]);
            assert_eq!(d.decode(&mut buf).unwrap(), Some(Frame::End(None)));
            assert_eq!(d.decode(&mut buf).unwrap(), None);
            assert_eq!(d.finish().unwrap(), None);
            assert_eq!(&buf[..], b"NEXT");
            // EOF right after the head is a clean end, not a truncation.
            let mut d = Decoder::new(kind, &limits());
            assert_eq!(d.finish().unwrap(), Some(Frame::End(None)));
        }
    }

    #[test]
    fn body_limit_gives_413() {
        let mut d = Decoder::new(
            BodyKind::Chunked,
            &Limits {
                max_body_bytes: Some(4),
                ..Limits::default()
            },
        );
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        let err = d.decode(&mut buf).unwrap_err();
        assert_eq!(err.status_hint(), Some(http::StatusCode::PAYLOAD_TOO_LARGE));
    }
}
