//! The checker's own HTTP/1 response reader.
//!
//! `keepwire-check` points at servers that may be hostile or broken on
//! purpose, so this reader must never be the thing that breaks: every
//! length it is told is checked against a cap before it is used (a head of
//! at most [`MAX_HEAD`] bytes, a body of at most [`MAX_BODY`], a whole
//! message of at most [`MAX_MESSAGE`]), all arithmetic on them is checked,
//! and any input yields a [`Parsed`] value, never a panic.
//!
//! The file depends on `std` only, so that a fuzz target can include it
//! as it is (`fuzz/fuzz_targets/check_response.rs`) and call
//! [`parse_response`] on arbitrary bytes.

/// Body bytes kept in [`Response::body`] (the rest is only counted).
pub const BODY_KEEP: usize = 64 * 1024;
/// Longest response head (status line and fields) the checker reads.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest response body the checker reads (declared or received).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most bytes one response may span: head, body, chunk framing and
/// trailers. A reader never needs to buffer more than this (plus one read).
pub const MAX_MESSAGE: usize = MAX_HEAD + MAX_BODY + MAX_HEAD;
/// Chunk-size digits accepted (leading zeros included); 16 hex digits
/// already exceed any size the caps allow.
const MAX_SIZE_DIGITS: usize = 16;

/// All of `headers` named `name` (case-insensitive), joined with ", ".
pub(crate) fn joined_header(headers: &[(String, String)], name: &str) -> Option<String> {
    let vals: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!vals.is_empty()).then(|| vals.join(", "))
}

/// Whether the comma-separated `name` field of `headers` lists `token`.
pub(crate) fn lists_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    joined_header(headers, name)
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The first [`BODY_KEEP`] bytes of the body.
    pub body: Vec<u8>,
    pub body_len: usize,
    pub close_delimited: bool,
}

impl Response {
    /// All field lines named `name`, joined with ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        joined_header(&self.headers, name)
    }

    /// Whether the `name` field lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        lists_token(&self.headers, name, token)
    }

    /// `HTTP/1.1 200 OK` plus how the body was framed.
    pub fn brief(&self) -> String {
        let mut s = self.status_line.clone();
        if let Some(c) = self.header("connection") {
            s.push_str(&format!(" [Connection: {c}]"));
        }
        if self.close_delimited {
            s.push_str(&format!(" [close-delimited, {} bytes]", self.body_len));
        }
        s
    }
}

/// What [`parse_response`] made of a buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A complete response and the bytes it took.
    Done(Response, usize),
    /// Not complete yet: read more (the buffer is within the caps).
    Partial,
    /// Not a valid response, or over a cap: stop reading.
    Bad(String),
}

/// Shows the first bytes of `b` with control characters escaped.
pub fn show(b: &[u8]) -> String {
    let n = b.len().min(60);
    let mut s: String = b[..n].escape_ascii().to_string();
    if b.len() > n {
        s.push('…');
    }
    format!("\"{s}\"")
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A line ending at `\n` (an optional `\r` before it is dropped); returns the
/// line and the offset after it.
fn line_at(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let rel = rest.iter().position(|&b| b == b'\n')?;
    let mut line = &rest[..rel];
    if let [head @ .., b'\r'] = line {
        line = head;
    }
    Some((line, from + rel + 1))
}

/// `Content-Length` as 1*DIGIT (a list of identical values is one value),
/// at most [`MAX_BODY`].
fn content_length(v: &str) -> Result<usize, String> {
    let mut value: Option<usize> = None;
    for part in v.split(',') {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad Content-Length {v:?}"));
        }
        let digits = part.trim_start_matches('0');
        let n = if digits.len() > 9 {
            usize::MAX
        } else {
            digits.parse::<usize>().unwrap_or(0)
        };
        if n > MAX_BODY {
            return Err(format!(
                "Content-Length {part} exceeds the checker's {MAX_BODY}-byte body cap"
            ));
        }
        match value {
            Some(prev) if prev != n => return Err(format!("differing Content-Length {v:?}")),
            _ => value = Some(n),
        }
    }
    value.ok_or_else(|| format!("bad Content-Length {v:?}"))
}

/// A chunk-size line: hex digits, optionally `;extensions`; the size is
/// capped at [`MAX_BODY`].
fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let text = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    let text = text.trim_ascii();
    if text.is_empty() || !text.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!("bad chunk size {}", show(line)));
    }
    let digits = match text.iter().position(|&b| b != b'0') {
        Some(i) => &text[i..],
        None => return Ok(0),
    };
    if text.len() > MAX_SIZE_DIGITS || digits.len() > 8 {
        return Err(format!(
            "chunk size {} exceeds the checker's {MAX_BODY}-byte body cap",
            show(text)
        ));
    }
    let n = digits.iter().fold(0usize, |n, &b| {
        n * 16 + (b as char).to_digit(16).unwrap_or(0) as usize
    });
    if n > MAX_BODY {
        return Err(format!(
            "chunk size {} exceeds the checker's {MAX_BODY}-byte body cap",
            show(text)
        ));
    }
    Ok(n)
}

/// `Partial`, unless the buffer already holds more than any response may
/// span (then the response can never complete within the caps).
fn partial(buf: &[u8]) -> Parsed {
    if buf.len() > MAX_MESSAGE {
        Parsed::Bad(format!(
            "no complete response in {} bytes (cap {MAX_MESSAGE})",
            buf.len()
        ))
    } else {
        Parsed::Partial
    }
}

/// Parses one response from the start of `buf`. `head_only`: the request was
/// HEAD. `eof`: the peer has closed, so a close-delimited body is complete.
/// Never panics; lengths over the caps are [`Parsed::Bad`].
pub fn parse_response(buf: &[u8], head_only: bool, eof: bool) -> Parsed {
    let scan = &buf[..buf.len().min(MAX_HEAD + 4)];
    let end = match (find(scan, b"\r\n\r\n"), find(scan, b"\n\n")) {
        (Some(a), Some(b)) if b + 2 < a + 4 => b + 2,
        (Some(a), _) => a + 4,
        (None, Some(b)) => b + 2,
        (None, None) if buf.len() > MAX_HEAD => {
            return Parsed::Bad(format!(
                "no end of head in {} bytes (cap {MAX_HEAD})",
                buf.len()
            ));
        }
        (None, None) => return Parsed::Partial,
    };
    if end > MAX_HEAD {
        return Parsed::Bad(format!("head of {end} bytes (cap {MAX_HEAD})"));
    }
    let mut pos = 0;
    let mut status_line = String::new();
    let mut headers = Vec::new();
    while let Some((line, next)) = line_at(buf, pos) {
        if next > end {
            break;
        }
        pos = next;
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line).into_owned();
        if status_line.is_empty() {
            status_line = text;
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Parsed::Bad(format!("obsolete line folding: {}", show(line)));
        }
        match text.split_once(':') {
            Some((n, v)) if !n.is_empty() && !n.ends_with(' ') => {
                headers.push((n.to_string(), v.trim().to_string()))
            }
            _ => return Parsed::Bad(format!("bad header line {}", show(line))),
        }
    }
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Parsed::Bad(format!("not a status line: {}", show(&buf[..end.min(80)])));
    }
    let status = match code.parse::<u16>() {
        Ok(s) if code.bytes().all(|b| b.is_ascii_digit()) => s,
        _ => return Parsed::Bad(format!("bad status code {code:?}")),
    };
    let mut resp = Response {
        status_line,
        status,
        headers,
        body: Vec::new(),
        body_len: 0,
        close_delimited: false,
    };
    if head_only || (100..200).contains(&status) || status == 204 || status == 304 {
        return Parsed::Done(resp, end);
    }
    let keep = |resp: &mut Response, chunk: &[u8]| {
        let room = BODY_KEEP.saturating_sub(resp.body.len());
        resp.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        resp.body_len = resp.body_len.saturating_add(chunk.len());
    };
    if let Some(te) = resp.header("transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("chunked") {
            let mut pos = end;
            loop {
                let Some((line, next)) = line_at(buf, pos) else {
                    return partial(buf);
                };
                let size = match chunk_size(line) {
                    Ok(n) => n,
                    Err(e) => return Parsed::Bad(e),
                };
                pos = next;
                if size == 0 {
                    // Trailer section up to an empty line.
                    loop {
                        let Some((line, next)) = line_at(buf, pos) else {
                            return partial(buf);
                        };
                        pos = next;
                        if line.is_empty() {
                            return Parsed::Done(resp, pos);
                        }
                    }
                }
                if resp.body_len.saturating_add(size) > MAX_BODY {
                    return Parsed::Bad(format!(
                        "chunked body over the checker's {MAX_BODY}-byte cap"
                    ));
                }
                let Some(data_end) = pos.checked_add(size) else {
                    return Parsed::Bad("chunk size overflows".into());
                };
                if buf.len() < data_end.saturating_add(2) {
                    return partial(buf);
                }
                keep(&mut resp, &buf[pos..data_end]);
                pos = data_end;
                match line_at(buf, pos) {
                    Some((b"", next)) => pos = next,
                    _ => return Parsed::Bad("chunk not followed by CRLF".into()),
                }
            }
        }
        // Not chunked: close-delimited.
    } else if let Some(cl) = resp.header("content-length") {
        let n = match content_length(&cl) {
            Ok(n) => n,
            Err(e) => return Parsed::Bad(e),
        };
        let Some(msg_end) = end.checked_add(n) else {
            return Parsed::Bad(format!("Content-Length {cl} overflows"));
        };
        if buf.len() < msg_end {
            return Parsed::Partial;
        }
        keep(&mut resp, &buf[end..msg_end]);
        return Parsed::Done(resp, msg_end);
    }
    if buf.len() - end > MAX_BODY {
        return Parsed::Bad(format!(
            "close-delimited body over the checker's {MAX_BODY}-byte cap"
        ));
    }
    if !eof {
        return Parsed::Partial;
    }
    resp.close_delimited = true;
    keep(&mut resp, &buf[end..]);
    Parsed::Done(resp, buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8], head: bool, eof: bool) -> (Response, usize) {
        match parse_response(buf, head, eof) {
            Parsed::Done(r, n) => (r, n),
            Parsed::Partial => panic!("partial"),
            Parsed::Bad(e) => panic!("bad: {e}"),
        }
    }

    fn bad(buf: &[u8]) -> String {
        match parse_response(buf, false, false) {
            Parsed::Bad(e) => e,
            other => panic!("not Bad: {other:?} for {}", show(buf)),
        }
    }

    #[test]
    fn parses_length_chunked_head_and_close_delimited() {
        let b = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        let (r, n) = done(b, false, false);
        assert_eq!((r.status, r.body_len, n), (200, 3, b.len() - 8));
        let b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (r, n) = done(b, false, false);
        assert_eq!((r.body, n), (b"abc".to_vec(), b.len()));
        let b = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(done(b, true, false).1, b.len());
        let b = b"HTTP/1.0 200 OK\r\n\r\nabc";
        assert!(matches!(parse_response(b, false, false), Parsed::Partial));
        assert!(done(b, false, true).0.close_delimited);
        assert!(matches!(
            parse_response(b"abc\r\n\r\n", false, false),
            Parsed::Bad(_)
        ));
        // A list of identical lengths is one length.
        let b = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok";
        assert_eq!(done(b, false, false).0.body, b"ok");
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        // Lengths that overflow usize, or that would make the reader buffer
        // far more than any check needs.
        for cl in [
            "99999999999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "16777217",
            "+5",
            "-1",
            ",",
            "",
            "5, 6",
            "0x10",
        ] {
            let b = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\nhello");
            let e = bad(b.as_bytes());
            assert!(e.contains("Content-Length"), "{cl:?}: {e}");
        }
        for size in [
            "ffffffffffffffff",
            "fffffffffffffff0",
            "10000000000000000000",
            "1000001",
            "+5",
            "",
            " ",
            "5 5",
            "0x5",
        ] {
            let b = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n"
            );
            let e = bad(b.as_bytes());
            assert!(e.contains("chunk size"), "{size:?}: {e}");
        }
        // Chunks that add up past the cap.
        let mut b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            b.extend_from_slice(format!("{:x}\r\n", MAX_BODY / 2).as_bytes());
            b.resize(b.len() + MAX_BODY / 2, b'x');
            b.extend_from_slice(b"\r\n");
        }
        assert!(bad(&b).contains("cap"));
        // Leading zeros are fine; the value is what counts.
        let b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000003\r\nabc\r\n0\r\n\r\n";
        assert!(bad(b).contains("chunk size"));
        let b =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0003;x=y\r\nabc\r\n0\r\n\r\n";
        assert_eq!(done(b, false, false).0.body, b"abc");
    }

    #[test]
    fn endless_heads_and_bodies_stop_at_the_caps() {
        // A head that never ends.
        let mut b = b"HTTP/1.1 200 OK\r\n".to_vec();
        while b.len() <= MAX_HEAD {
            b.extend_from_slice(
                b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert!(bad(&b).contains("no end of head"));
        // A head that ends, but past the cap.
        b.extend_from_slice(b"\r\n");
        assert!(bad(&b).contains("head"));
        let mut b = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        b.resize(MAX_HEAD, b'a');
        b.extend_from_slice(b"\r\n\r\n");
        assert!(bad(&b).contains("head of"));
        // A close-delimited body that never ends.
        let mut b = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
        b.resize(b.len() + MAX_BODY + 1, b'x');
        assert!(bad(&b).contains("close-delimited"));
        // Trailers that never end.
        let mut b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        while b.len() <= MAX_MESSAGE {
            b.extend_from_slice(&[b'x'; 4096]);
            b.extend_from_slice(b": y\r\n");
        }
        assert!(bad(&b).contains("no complete response"));
    }

    /// Random mutations of valid responses (a fixed xorshift seed, so
    /// reproducible): whatever comes out, the parser returns.
    #[test]
    fn mutated_responses_never_panic() {
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.0 404 Nope\nConnection: close\n\nbody",
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        ];
        let alphabet = b"\r\n:;, 0123456789abcdefABCDEFxX+-\t\x00\xff";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut b = seeds[i % seeds.len()].to_vec();
            for _ in 0..1 + next() % 6 {
                let at = (next() as usize) % (b.len() + 1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < b.len() => b[at] = c,
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.insert(at, c),
                }
            }
            for (head, eof) in [(false, false), (false, true), (true, false)] {
                if let Parsed::Done(_, n) = parse_response(&b, head, eof) {
                    assert!(n <= b.len());
                }
            }
        }
    }
}
