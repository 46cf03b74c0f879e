//! Whether a request's `Host` is acceptable (RFC 9112 §3.2, R10.3).
//!
//! A server, and a proxy that routes on `Host`, must agree with everything
//! behind it on which host a request is for. Two `Host` lines, or one that
//! a neighbour parses differently (`a b`, `a/b`, `a@b`, `a:80x`), let the
//! route and the origin see different hosts, so RFC 9112 §3.2 makes every
//! one of them a 400, as it does a missing `Host` on HTTP/1.1. This module
//! is the one place that decides; the server's connection state machine
//! applies it to every request head, so the proxy (which is a server) gets
//! it too.
//!
//! Two choices the RFC leaves open:
//! - `CONNECT` on HTTP/1.1 without `Host` is accepted. RFC 9112 says a
//!   client must send `Host` on every HTTP/1.1 request, but an
//!   authority-form target already names the one authority that matters,
//!   and Go's `net/http` server exempts `CONNECT` from the same rule for the
//!   tunnelling clients that omit it. With a `Host`, the value must still be
//!   valid and single.
//! - An empty `Host` is accepted: RFC 3986's `reg-name` may be empty and
//!   RFC 9112 §3.2 asks for exactly that when the target has no authority.
//!   (nginx refuses it; nothing is routed on it here but the default.)
//!
//! With an absolute-form target the target's authority wins (RFC 9112
//! §3.2.2), but `Host` is still required and checked: what is forwarded
//! must not be something the next hop reads differently.

use http::header::HOST;
use http::{HeaderValue, Method, Version};

use crate::error::{Error, ErrorKind};
use crate::head::RequestHead;

/// Checks a request's `Host` lines; returns the one value, if any.
///
/// Errors: [`ErrorKind::MalformedTarget`] (an absolute- or authority-form
/// target whose authority is not `uri-host [":" port]`, userinfo included),
/// [`ErrorKind::MissingHost`] (HTTP/1.1, not `CONNECT`),
/// [`ErrorKind::RepeatedHost`] (more than one line, any version),
/// [`ErrorKind::InvalidHost`] (see [`is_valid_host`]). All answer 400.
pub fn check_host(head: &RequestHead) -> Result<Option<&HeaderValue>, Error> {
    let mut lines = head.headers.get_all(HOST).iter();
    let first = lines.next();
    let count = usize::from(first.is_some()) + usize::from(lines.next().is_some());
    check_host_lines(head, count, || {
        first.is_some_and(|v| is_valid_host(v.as_bytes()))
    })?;
    Ok(first)
}

/// The decision of [`check_host`], given how many `Host` lines there are
/// (counted up to 2) and whether the first is valid: the connection notes
/// both while parsing, so it need not look `Host` up again.
pub(crate) fn check_host_lines(
    head: &RequestHead,
    count: usize,
    first_valid: impl FnOnce() -> bool,
) -> Result<(), Error> {
    // The target's authority wins over Host, so it is held to the same
    // grammar; userinfo in it is an error (RFC 9110 §4.2.4).
    if let Some(authority) = head.target.authority()
        && !is_valid_host(authority.as_str().as_bytes())
    {
        return Err(Error::remote(ErrorKind::MalformedTarget));
    }
    match count {
        2.. => Err(Error::remote(ErrorKind::RepeatedHost)),
        1 if first_valid() => Ok(()),
        1 => Err(Error::remote(ErrorKind::InvalidHost)),
        _ if head.version == Version::HTTP_11 && head.method != Method::CONNECT => {
            Err(Error::remote(ErrorKind::MissingHost))
        }
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2–3.2.3).
///
/// The host is an IP literal in brackets (IPv6, or `v<hex>.<...>`), or a
/// `reg-name` (which covers IPv4): unreserved characters, sub-delims and
/// `%XX`. No whitespace, control byte, `/`, `?`, `#`, `@` or second `:`
/// gets through. The port is digits, at most 65535 when present; an empty
/// port after `:` is allowed by RFC 3986 and accepted.
pub fn is_valid_host(value: &[u8]) -> bool {
    authority_parts(value).is_some()
}

/// The host and port of an authority `uri-host [ ":" port ]`, by the
/// grammar of [`is_valid_host`] (`None` if it does not hold): the host as
/// written (an IP literal keeps its brackets, as in a URL), the port if one
/// is given (an empty one is no port).
///
/// The one authority parser of the workspace: a `Host` value, a proxy's
/// upstream, a URL's origin and a CONNECT target are all split here, so
/// that what one of them accepts, the others read the same way.
pub fn split_authority(value: &[u8]) -> Option<(&str, Option<u16>)> {
    let (host, port) = authority_parts(value)?;
    // Only ASCII got through the grammar.
    Some((std::str::from_utf8(host).ok()?, port))
}

/// [`split_authority`]'s grammar, the host left as bytes: checking a
/// `Host` per request needs no `str`.
fn authority_parts(value: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let close = rest.iter().position(|&b| b == b']')?;
        if !is_ip_literal(&rest[..close]) {
            return None;
        }
        let host = &value[..close + 2];
        match &rest[close + 1..] {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return None,
        }
    } else {
        let (name, port) = match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        };
        if !is_reg_name(name) {
            return None;
        }
        (name, port)
    };
    let port = match port {
        Some(p) => port_number(p)?,
        None => None,
    };
    Some((host, port))
}

/// `*DIGIT` as a TCP port: `Some(None)` if empty, `None` if it is not
/// digits or over 65535 (leading zeros are fine).
fn port_number(port: &[u8]) -> Option<Option<u16>> {
    if port.is_empty() {
        return Some(None);
    }
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok().map(Some)
}

/// `*( unreserved / pct-encoded / sub-delims )`.
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                if !name
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            c if REG_NAME_BYTE[usize::from(c)] => i += 1,
            _ => return false,
        }
    }
    true
}

/// Inside the brackets: `IPv6address / IPvFuture`. Zone identifiers
/// (RFC 6874) are not part of HTTP's `uri-host` and are refused.
fn is_ip_literal(lit: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = lit {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (hex, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !hex.is_empty()
            && hex.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&c| is_unreserved(c) || is_sub_delim(c) || c == b':');
    }
    std::str::from_utf8(lit)
        .ok()
        .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
        .is_some()
}

/// `unreserved / sub-delims`, by byte: a table lookup per byte of every
/// request's `Host`.
const REG_NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = is_unreserved(c as u8) || is_sub_delim(c as u8);
        c += 1;
    }
    table
};

const fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

const fn is_sub_delim(c: u8) -> bool {
    matches!(
        c,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_follow_rfc3986_authority_without_userinfo() {
        for ok in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com:65535",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::ffff:192.0.2.1]:8080",
            "[v1.fe80::a+en1]",
            "xn--bcher-kva.example",
            "a_b~c!$&'()*+,;=",
            "%41bc",
            "",
            "a:",
        ] {
            assert!(is_valid_host(ok.as_bytes()), "{ok:?} refused");
        }
        for bad in [
            "a b",
            " a",
            "a\t",
            "a/b",
            "a?b",
            "a#b",
            "user@a",
            "a:b",
            "a:80:80",
            "a:65536",
            "a:-1",
            "a:+80",
            "a:000080",
            "a%",
            "a%4",
            "a%zz",
            "a\"b",
            "a\\b",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "[fe80::1%25eth0]",
            "[not-ip]",
            "[v.x]",
            "[v1.]",
            "::1",
            "a\x7f",
            "\u{e9}.example",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?} accepted");
        }
        assert!(!is_valid_host(b"a\x00b"));
    }

    #[test]
    fn authorities_split_into_host_as_written_and_port() {
        for (value, host, port) in [
            ("example.com", "example.com", None),
            ("Example.com:8080", "Example.com", Some(8080)),
            ("a:", "a", None),
            ("127.0.0.1:80", "127.0.0.1", Some(80)),
            ("[::1]", "[::1]", None),
            ("[::1]:443", "[::1]", Some(443)),
            ("[v1.fe80::a+en1]:1", "[v1.fe80::a+en1]", Some(1)),
            ("", "", None),
            ("a:00080", "a", Some(80)),
            ("a:0", "a", Some(0)),
            ("a:65535", "a", Some(65535)),
        ] {
            assert_eq!(
                split_authority(value.as_bytes()),
                Some((host, port)),
                "{value:?}"
            );
        }
        for bad in [
            "a:b", "a:65536", "a:99999", "a:100000", "a:8 ", "[::1]x", "::1", "user@a", "a/b",
        ] {
            assert_eq!(split_authority(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
