//! Reading one response off the wire for the checks, separate from the
//! probes that send requests.
//!
//! The checker judges other servers, so it parses leniently enough to
//! describe what it saw rather than refusing at the first oddity, yet must
//! never panic or trust a length it was given. It uses nothing but `std`
//! so the fuzzer can include this file as it is (`fuzz/fuzz_targets/
//! check_response.rs`).

/// A parsed response.
#[derive(Debug, Clone)]
pub(super) struct Response {
    pub(super) status_line: String,
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    /// The first `BODY_KEEP` bytes of the body.
    pub(super) body: Vec<u8>,
    pub(super) body_len: usize,
    pub(super) close_delimited: bool,
}

const BODY_KEEP: usize = 64 * 1024;
const MAX_HEAD: usize = 64 * 1024;

impl Response {
    /// All field lines named `name`, joined with ", ".
    pub(super) fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    }

    pub(super) fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// `HTTP/1.1 200 OK` plus how the body was framed.
    pub(super) fn brief(&self) -> String {
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

pub(super) enum Parsed {
    Done(Response, usize),
    Partial,
    Bad(String),
}

/// Shows the first bytes of `b` with control characters escaped.
pub(super) fn show(b: &[u8]) -> String {
    let n = b.len().min(60);
    let mut s: String = b[..n].escape_ascii().to_string();
    if b.len() > n {
        s.push('…');
    }
    format!("\"{s}\"")
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A line ending at `\n` (an optional `\r` before it is dropped); returns the
/// line and the offset after it.
fn line_at(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rel = buf[from..].iter().position(|&b| b == b'\n')?;
    let mut line = &buf[from..from + rel];
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    Some((line, from + rel + 1))
}

/// Parses one response from the start of `buf`. `head_only`: the request was
/// HEAD. `eof`: the peer has closed, so a close-delimited body is complete.
pub(super) fn parse_response(buf: &[u8], head_only: bool, eof: bool) -> Parsed {
    let end = match (find(buf, b"\r\n\r\n"), find(buf, b"\n\n")) {
        (Some(a), Some(b)) if b + 2 < a + 4 => b + 2,
        (Some(a), _) => a + 4,
        (None, Some(b)) => b + 2,
        (None, None) if buf.len() > MAX_HEAD => {
            return Parsed::Bad(format!("no end of head in {} bytes", buf.len()));
        }
        (None, None) => return Parsed::Partial,
    };
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
    let Ok(status) = code.parse::<u16>() else {
        return Parsed::Bad(format!("bad status code {code:?}"));
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
        resp.body_len += chunk.len();
    };
    if let Some(te) = resp.header("transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("chunked") {
            let mut pos = end;
            loop {
                let Some((line, next)) = line_at(buf, pos) else {
                    return Parsed::Partial;
                };
                let size_text = String::from_utf8_lossy(line);
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let Ok(size) = usize::from_str_radix(size_text, 16) else {
                    return Parsed::Bad(format!("bad chunk size {}", show(line)));
                };
                pos = next;
                if size == 0 {
                    // Trailer section up to an empty line.
                    loop {
                        let Some((line, next)) = line_at(buf, pos) else {
                            return Parsed::Partial;
                        };
                        pos = next;
                        if line.is_empty() {
                            return Parsed::Done(resp, pos);
                        }
                    }
                }
                // `size` is the peer's word: compare without adding to it.
                if buf.len() - pos < size.saturating_add(2) {
                    return Parsed::Partial;
                }
                keep(&mut resp, &buf[pos..pos + size]);
                pos += size;
                match line_at(buf, pos) {
                    Some((b"", next)) => pos = next,
                    _ => return Parsed::Bad("chunk not followed by CRLF".into()),
                }
            }
        }
        // Not chunked: close-delimited.
    } else if let Some(cl) = resp.header("content-length") {
        let Ok(n) = cl.trim().parse::<usize>() else {
            return Parsed::Bad(format!("bad Content-Length {cl:?}"));
        };
        if buf.len() - end < n {
            return Parsed::Partial;
        }
        keep(&mut resp, &buf[end..end + n]);
        return Parsed::Done(resp, end + n);
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

    /// Found by fuzz/fuzz_targets/check_response.rs: a length near
    /// `usize::MAX` overflowed `end + n` (a panic in debug builds, a wrong
    /// verdict in release ones).
    #[test]
    fn huge_lengths_are_incomplete_not_a_panic() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nx"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffe\r\nx\r\n",
        ] {
            assert!(
                matches!(parse_response(raw, false, false), Parsed::Partial),
                "{raw:?}"
            );
        }
    }
}
