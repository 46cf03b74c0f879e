//! Message heads: `httparse` tokenizes, this module bounds and converts.
//!
//! Parsing is incremental in the only way that matters for heads: a call
//! either finds a complete head at the front of the buffer and removes exactly
//! its bytes (leaving a pipelined successor in place), or returns `Ok(None)`
//! and removes nothing. Field values are zero-copy slices of the head's bytes.
//!
//! Limits are checked on partial heads too, so a peer that never sends the
//! blank line cannot make us buffer more than [`Limits::max_head_bytes`].

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use crate::Limits;
use crate::error::{Error, ErrorKind};

/// A request head: request line and header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target as sent (origin-, absolute-, authority- or
    /// asterisk-form).
    pub target: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields.
    pub headers: HeaderMap,
    /// Original spelling of the field names, when kept.
    pub header_case: HeaderCase,
}

/// A response head: status line and header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase, when it differs from the canonical one.
    pub reason: Option<Bytes>,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields.
    pub headers: HeaderMap,
    /// Original spelling of the field names, when kept.
    pub header_case: HeaderCase,
}

impl RequestHead {
    /// A head with no fields.
    pub fn new(method: Method, target: Uri, version: Version) -> Self {
        RequestHead {
            method,
            target,
            version,
            headers: HeaderMap::new(),
            header_case: HeaderCase::default(),
        }
    }
}

impl ResponseHead {
    /// A HTTP/1.1 head with no fields.
    pub fn new(status: StatusCode) -> Self {
        ResponseHead {
            status,
            reason: None,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            header_case: HeaderCase::default(),
        }
    }
}

/// The wire spelling of each field line's name, in arrival order.
///
/// `http::HeaderMap` lowercases names; a proxy must not rewrite what it
/// passes through, so when asked the parser records `(name, as sent)` per
/// field line and the encoder writes the n-th line of a name with the n-th
/// spelling it recorded. Empty (and allocation-free) unless enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderCase(Vec<(HeaderName, Bytes)>);

impl HeaderCase {
    /// Record one field line's spelling.
    pub fn push(&mut self, name: HeaderName, spelling: Bytes) {
        self.0.push((name, spelling));
    }

    /// The spelling of the `nth` (0-based) line named `name`, falling back to
    /// the first one recorded for that name.
    pub fn get(&self, name: &HeaderName, nth: usize) -> Option<&[u8]> {
        let mut same = self.0.iter().filter(|(n, _)| n == name);
        let first = same.clone().next();
        same.nth(nth).or(first).map(|(_, s)| s.as_ref())
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Byte ranges of one field line inside the head buffer.
#[derive(Clone, Copy, Default)]
struct FieldIndices {
    name: (u32, u32),
    value: (u32, u32),
}

/// Where `part` (a sub-slice httparse returned) sits inside `base`. Heads are
/// bounded far below 4 GiB, so `u32` keeps the per-parse scratch array small.
pub(crate) fn offset_in(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

/// What httparse's answer on `buf` means: the complete head's length,
/// `None` if more bytes may finish it (see [`check_partial`]), or the error.
pub(crate) fn head_length(
    parsed: httparse::Result<usize>,
    buf: &[u8],
    limits: &Limits,
    is_request: bool,
) -> Result<Option<usize>, Error> {
    match parsed {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) => check_partial(buf, limits, is_request).map(|()| None),
        Err(e) => Err(map_httparse(e, limits)),
    }
}

/// Fields whose indices live on the stack; a head with more spills them to
/// the heap. Zeroing [`Limits::HARD_MAX_HEADERS`] slots (2 KiB) for every
/// parse cost more than the parse of a short head's fields.
const INLINE_FIELDS: usize = 32;

/// Records where each parsed field's name and value sit in `buf`, in
/// `inline` if they fit, else in `heap`.
#[inline]
fn index_fields<'a>(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
    inline: &'a mut [FieldIndices; INLINE_FIELDS],
    heap: &'a mut Vec<FieldIndices>,
) -> &'a [FieldIndices] {
    let index = |h: &httparse::Header<'_>| FieldIndices {
        name: offset_in(buf, h.name.as_bytes()),
        value: offset_in(buf, h.value),
    };
    if headers.len() <= INLINE_FIELDS {
        for (slot, h) in inline.iter_mut().zip(headers) {
            *slot = index(h);
        }
        &inline[..headers.len()]
    } else {
        heap.extend(headers.iter().map(index));
        heap
    }
}

/// Checks a head that httparse could not finish yet: the bytes so far must
/// still fit every bound, or waiting for more is pointless.
///
/// Each bound is measured exactly as on a complete head, so that whether a
/// head is refused never depends on how reads split it: the request line
/// without its line ending (and after the empty lines httparse skips),
/// every field line with its CRLF (a partial one cannot have it yet), the
/// status line only through the head size.
fn check_partial(buf: &[u8], limits: &Limits, is_request: bool) -> Result<(), Error> {
    if buf.len() <= limits.max_line_bytes && buf.len() <= limits.max_head_bytes {
        return Ok(());
    }
    // The start line begins after the empty lines httparse skips.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let first_nl = buf[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|n| start + n);
    if is_request {
        let line = &buf[start..first_nl.unwrap_or(buf.len())];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > limits.max_line_bytes {
            return Err(Error::remote(ErrorKind::RequestLineTooLong {
                limit: limits.max_line_bytes,
            }));
        }
    }
    // Every field line so far, not just the last: a complete one counts its
    // line ending, as `build_headers` does; the partial last one cannot.
    let mut start = first_nl.map_or(buf.len(), |n| n + 1);
    while start < buf.len() {
        let (len, next) = match buf[start..].iter().position(|&b| b == b'\n') {
            Some(p) => (p + 1, start + p + 1),
            None => (buf.len() - start, buf.len()),
        };
        if len > limits.max_line_bytes {
            return Err(Error::remote(ErrorKind::HeaderLineTooLong {
                limit: limits.max_line_bytes,
            }));
        }
        start = next;
    }
    if buf.len() > limits.max_head_bytes {
        return Err(Error::remote(ErrorKind::HeadTooLarge {
            limit: limits.max_head_bytes,
        }));
    }
    Ok(())
}

fn map_httparse(e: httparse::Error, limits: &Limits) -> Error {
    match e {
        httparse::Error::TooManyHeaders => Error::remote(ErrorKind::TooManyHeaders {
            limit: limits.max_headers,
        }),
        httparse::Error::Version => Error::remote(ErrorKind::UnsupportedVersion),
        other => Error::remote(ErrorKind::MalformedHead(other)),
    }
}

pub(crate) fn version_of(v: Option<u8>) -> Version {
    match v {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

/// A field line's length against `max_line_bytes`, for the line whose name
/// starts at `name_start` and whose value ends at `value_end` in `head`.
/// The line runs from the name to its LF: httparse trimmed trailing
/// whitespace off the value, but it counts, as on a partial head.
pub(crate) fn check_field_line(
    head: &[u8],
    name_start: usize,
    value_end: usize,
    limits: &Limits,
) -> Result<(), Error> {
    let line_end = head[value_end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |p| value_end + p + 1);
    if line_end - name_start > limits.max_line_bytes {
        return Err(Error::remote(ErrorKind::HeaderLineTooLong {
            limit: limits.max_line_bytes,
        }));
    }
    Ok(())
}

/// Builds the header map (and, when asked, the names' spellings) from
/// recorded indices into the frozen head.
fn build_headers(
    head: &Bytes,
    fields: &[FieldIndices],
    limits: &Limits,
    keep_case: bool,
    note: &mut impl FnMut(&HeaderName, &[u8]),
) -> Result<(HeaderMap, HeaderCase), Error> {
    let mut map = HeaderMap::with_capacity(fields.len());
    let mut case = HeaderCase::default();
    if keep_case {
        case.0.reserve_exact(fields.len());
    }
    for f in fields {
        let (ns, ne) = (f.name.0 as usize, f.name.1 as usize);
        let (vs, ve) = (f.value.0 as usize, f.value.1 as usize);
        check_field_line(head, ns, ve, limits)?;
        let raw_name = &head[ns..ne];
        let name = HeaderName::from_bytes(raw_name)
            .map_err(|_| Error::remote(ErrorKind::MalformedHeader))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| Error::remote(ErrorKind::MalformedHeader))?;
        if keep_case {
            case.push(name.clone(), head.slice(ns..ne));
        }
        note(&name, value.as_bytes());
        map.append(name, value);
    }
    Ok((map, case))
}

/// Parses one request head from the front of `buf`.
///
/// On success the head's bytes are removed from `buf`; anything after them
/// (a body, the next pipelined request) stays. `Ok(None)` means more bytes
/// are needed and `buf` is untouched.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
    keep_case: bool,
) -> Result<Option<RequestHead>, Error> {
    parse_request_noting(buf, limits, keep_case, |_, _| {})
}

/// [`parse_request`], showing `note` each field (name, value) as it is
/// added to the map. Inlined into the connection, so the head is built
/// where its event is rather than copied there through each `Result`.
#[inline(always)]
pub(crate) fn parse_request_noting(
    buf: &mut BytesMut,
    limits: &Limits,
    keep_case: bool,
    mut note: impl FnMut(&HeaderName, &[u8]),
) -> Result<Option<RequestHead>, Error> {
    let max = limits.max_headers.min(Limits::HARD_MAX_HEADERS);
    let mut slots =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::HARD_MAX_HEADERS];
    let (mut inline, mut heap) = ([FieldIndices::default(); INLINE_FIELDS], Vec::new());
    let (len, fields, method, target, version, line_end);
    {
        let mut req = httparse::Request::new(&mut []);
        let parsed = req.parse_with_uninit_headers(buf, &mut slots[..max]);
        let Some(l) = head_length(parsed, buf, limits, true)? else {
            return Ok(None);
        };
        len = l;
        fields = index_fields(buf, req.headers, &mut inline, &mut heap);
        let m = req.method.unwrap_or_default();
        method = Method::from_bytes(m.as_bytes())
            .map_err(|_| Error::remote(ErrorKind::MalformedHead(httparse::Error::Token)))?;
        target = offset_in(buf, req.path.unwrap_or_default().as_bytes());
        version = version_of(req.version);
        // Measured from the method: httparse skips leading empty lines.
        let line_start = offset_in(buf, m.as_bytes()).0 as usize;
        line_end = target.1 as usize + " HTTP/1.1".len() - line_start;
    }
    if line_end > limits.max_line_bytes {
        return Err(Error::remote(ErrorKind::RequestLineTooLong {
            limit: limits.max_line_bytes,
        }));
    }
    if len > limits.max_head_bytes {
        return Err(Error::remote(ErrorKind::HeadTooLarge {
            limit: limits.max_head_bytes,
        }));
    }
    let head = buf.split_to(len).freeze();
    let target = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize))
        .map_err(|_| Error::remote(ErrorKind::MalformedTarget))?;
    let (headers, header_case) = build_headers(&head, fields, limits, keep_case, &mut note)?;
    Ok(Some(RequestHead {
        method,
        target,
        version,
        headers,
        header_case,
    }))
}

/// Parses one response head from the front of `buf`; same contract as
/// [`parse_request`].
pub fn parse_response(
    buf: &mut BytesMut,
    limits: &Limits,
    keep_case: bool,
) -> Result<Option<ResponseHead>, Error> {
    parse_response_noting(buf, limits, keep_case, |_, _| {})
}

/// [`parse_response`], showing `note` each field as
/// [`parse_request_noting`] does.
pub(crate) fn parse_response_noting(
    buf: &mut BytesMut,
    limits: &Limits,
    keep_case: bool,
    mut note: impl FnMut(&HeaderName, &[u8]),
) -> Result<Option<ResponseHead>, Error> {
    let max = limits.max_headers.min(Limits::HARD_MAX_HEADERS);
    let mut slots =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::HARD_MAX_HEADERS];
    let (mut inline, mut heap) = ([FieldIndices::default(); INLINE_FIELDS], Vec::new());
    let (len, fields, code, reason, version);
    {
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut slots[..max],
        );
        let Some(l) = head_length(parsed, buf, limits, false)? else {
            return Ok(None);
        };
        len = l;
        fields = index_fields(buf, res.headers, &mut inline, &mut heap);
        code = res.code.unwrap_or_default();
        // httparse hands back a static "" (not a slice of `buf`) for a
        // missing or obs-text reason; there is no offset to take then.
        reason = res
            .reason
            .filter(|r| !r.is_empty())
            .map(|r| offset_in(buf, r.as_bytes()));
        version = version_of(res.version);
    }
    if len > limits.max_head_bytes {
        return Err(Error::remote(ErrorKind::HeadTooLarge {
            limit: limits.max_head_bytes,
        }));
    }
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::remote(ErrorKind::MalformedHead(httparse::Error::Status)))?;
    let head = buf.split_to(len).freeze();
    let reason = reason
        .map(|(s, e)| head.slice(s as usize..e as usize))
        .filter(|r| Some(r.as_ref()) != status.canonical_reason().map(str::as_bytes));
    let (headers, header_case) = build_headers(&head, fields, limits, keep_case, &mut note)?;
    Ok(Some(ResponseHead {
        status,
        reason,
        version,
        headers,
        header_case,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_past_the_inline_field_slots_keep_every_field_in_order() {
        for count in [INLINE_FIELDS - 1, INLINE_FIELDS, INLINE_FIELDS + 1, 90] {
            let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            for i in 1..count {
                raw.extend_from_slice(format!("X-F{i}: v{i}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\nNEXT");
            let mut buf = BytesMut::from(&raw[..]);
            let head = parse_request(&mut buf, &Limits::default(), false)
                .unwrap()
                .unwrap();
            assert_eq!(head.headers.len(), count);
            assert_eq!(head.headers["host"], "a");
            for i in 1..count {
                assert_eq!(head.headers[format!("x-f{i}")], format!("v{i}"));
            }
            assert_eq!(&buf[..], b"NEXT");
        }
    }

    #[test]
    fn status_line_without_usable_reason_does_not_panic() {
        // httparse returns a static "" here, not a slice of the buffer.
        for raw in [
            &b"HTTP/1.1 200\r\n\r\n"[..],
            b"HTTP/1.1 200 \r\n\r\n",
            b"HTTP/1.1 404 Nicht gefunden \xc3\xa4\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(raw);
            let head = parse_response(&mut buf, &Limits::default(), false)
                .unwrap()
                .unwrap();
            assert_eq!(head.reason, None, "{raw:?}");
            assert!(buf.is_empty());
        }
    }
}
