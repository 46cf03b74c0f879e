//! What belongs to one hop, and the small per-message facts connection
//! management keys on.
//!
//! `Connection` is a comma-separated list that may be split over several
//! field lines (R3.1); its tokens either steer persistence (`close`,
//! `keep-alive`, `upgrade`) or name other fields that die at this hop
//! (R3.2). An intermediary that forwards any of them is a dumb proxy (R6.1).

use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, EXPECT, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use crate::digits::put_decimal;

/// `Proxy-Connection`: non-standard, sent by some clients to a proxy (R6.2).
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `Keep-Alive`: HTTP/1.0+ persistence parameters (R5.2).
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Fields that never cross a hop even when `Connection` does not name them
/// (R3.2). `Upgrade` is separate: it is relayed when the upgrade is.
pub const HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    http::header::PROXY_AUTHENTICATE,
];

/// Splits a list-valued field (`#element`) on commas, trimming optional
/// whitespace and skipping empty elements (RFC 9110 §5.6.1).
pub fn split_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// The persistence tokens of a message's `Connection` lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionTokens {
    /// `close`: last message on this connection (R5.3).
    pub close: bool,
    /// `keep-alive`: HTTP/1.0+ persistence requested or granted (R5.1).
    pub keep_alive: bool,
    /// `upgrade`: the `Upgrade` field applies to this hop (R9.1).
    pub upgrade: bool,
}

impl ConnectionTokens {
    /// Reads every `Connection` line, case-insensitively.
    pub fn of(headers: &HeaderMap) -> Self {
        Self::from_lines(headers.get_all(CONNECTION))
    }

    /// Reads `Connection` and `Proxy-Connection` together: a proxy treats the
    /// latter as the former for the client hop (R6.2).
    pub fn of_proxy_request(headers: &HeaderMap) -> Self {
        let a = Self::of(headers);
        let b = Self::from_lines(headers.get_all(PROXY_CONNECTION));
        ConnectionTokens {
            close: a.close || b.close,
            keep_alive: a.keep_alive || b.keep_alive,
            upgrade: a.upgrade || b.upgrade,
        }
    }

    fn from_lines<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        Self::from_values(lines.into_iter().map(|v| v.as_bytes()))
    }

    /// Reads raw `Connection` field values (no `HeaderMap` needed).
    pub(crate) fn from_values<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut t = ConnectionTokens::default();
        for value in values {
            for token in split_tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    t.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    t.keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    t.upgrade = true;
                }
            }
        }
        t
    }

    /// Whether the sender of a message with these tokens and this version
    /// wants the connection to persist (R5.1, R5.3): HTTP/1.1 unless `close`;
    /// HTTP/1.0 only with `keep-alive` and without `close`.
    pub fn persistent(self, version: Version) -> bool {
        if self.close {
            return false;
        }
        version == Version::HTTP_11 || self.keep_alive
    }
}

/// Removes every hop-by-hop field before forwarding (R3.2, R6.1, R6.2), so a
/// 1.0 `keep-alive` never reaches a hop it did not come from (R3.3):
/// `Connection`, each field it (or `Proxy-Connection`) names, the fixed list
/// in [`HOP_BY_HOP`], `Proxy-Authorization`, and `Upgrade` unless
/// `relay_upgrade` is set (the intermediary relays this upgrade, R9.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, relay_upgrade: bool) {
    // Named by a `Connection` (or `Proxy-Connection`) token: compared as
    // bytes, so a relayed message allocates nothing to learn it.
    let named = |headers: &HeaderMap, name: &HeaderName| {
        let lines = headers.get_all(CONNECTION);
        let proxy_lines = headers.get_all(PROXY_CONNECTION);
        lines.iter().chain(&proxy_lines).any(|value| {
            split_tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes()))
        })
    };
    // Whether any `Connection` line names a field that no rule below
    // removes anyway (`Keep-Alive`, `Upgrade`): most messages have no
    // `Connection` line, or only `keep-alive`, and need no token compared
    // against each field name. (One walk over the lines, no lookups.)
    let names_others = headers.iter().any(|(name, v)| {
        (name == CONNECTION || name == PROXY_CONNECTION)
            && split_tokens(v.as_bytes()).any(|t| {
                !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"upgrade")
            })
    });
    let is_hop = |headers: &HeaderMap, name: &HeaderName| {
        if name == UPGRADE {
            return !relay_upgrade;
        }
        fixed_hop(name) || (names_others && named(headers, name))
    };
    // The common case: the hop-by-hop fields come after every end-to-end
    // one (a server's `Connection: keep-alive` last). Removing the last
    // field moves nothing, so they go in place, from the end, and the rest
    // keep their order.
    let mut tail: [Option<HeaderName>; 4] = Default::default();
    let (mut found, mut in_tail) = (0, true);
    for name in headers.keys() {
        if is_hop(headers, name) {
            if found < tail.len() {
                tail[found] = Some(name.clone());
            }
            found += 1;
        } else if found > 0 {
            in_tail = false;
            break;
        }
    }
    if found == 0 {
        return;
    }
    if in_tail && found <= tail.len() {
        for name in tail[..found].iter().rev().flatten() {
            headers.remove(name);
        }
        return;
    }
    // Elsewhere: HeaderMap::remove would move the last field into the
    // hole, so rebuild, keeping the end-to-end fields' order across the
    // hop. (What is hop-by-hop is decided on the old map, whose
    // `Connection` lines still name fields.)
    let old = std::mem::replace(headers, HeaderMap::with_capacity(headers.len()));
    let keep: Vec<bool> = old.keys().map(|n| !is_hop(&old, n)).collect();
    let mut keys = keep.into_iter();
    let mut current: Option<(HeaderName, bool)> = None;
    for (name, value) in old {
        if let Some(name) = name {
            let kept = keys.next().unwrap_or(false);
            current = Some((name, kept));
        }
        if let Some((name, true)) = current.as_ref() {
            headers.append(name.clone(), value);
        }
    }
}

/// In [`HOP_BY_HOP`], or `Proxy-Authorization`: told by the name's length
/// first, as most field names are no hop-by-hop name's length.
fn fixed_hop(name: &HeaderName) -> bool {
    let n = name.as_str();
    match n.len() {
        2 | 7 | 10 | 16 | 17 | 18 | 19 => {
            HOP_BY_HOP.iter().any(|h| h.as_str() == n)
                || n == http::header::PROXY_AUTHORIZATION.as_str()
        }
        _ => false,
    }
}

/// `Keep-Alive: timeout=N, max=M` (R5.2). Both are hints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepAliveParams {
    /// Seconds an idle connection is kept.
    pub timeout: Option<u64>,
    /// Further requests the connection will take.
    pub max: Option<u64>,
}

impl KeepAliveParams {
    /// Parses every `Keep-Alive` line; unknown parameters and malformed
    /// numbers are ignored, as they are only hints.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut p = KeepAliveParams::default();
        for value in headers.get_all(KEEP_ALIVE) {
            for param in split_tokens(value.as_bytes()) {
                let Some(eq) = param.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let (key, val) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
                let val = val.strip_prefix(b"\"").unwrap_or(val);
                let val = val.strip_suffix(b"\"").unwrap_or(val);
                let Some(n) = std::str::from_utf8(val).ok().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if key.eq_ignore_ascii_case(b"timeout") {
                    p.timeout = Some(n);
                } else if key.eq_ignore_ascii_case(b"max") {
                    p.max = Some(n);
                }
            }
        }
        p
    }

    /// The field value, or `None` when both are unset.
    pub fn to_header_value(self) -> Option<HeaderValue> {
        let mut buf = BytesMut::new();
        if !self.write_value(&mut buf) {
            return None;
        }
        HeaderValue::from_maybe_shared(buf.freeze()).ok()
    }

    /// Appends the field value `timeout=N, max=M` (either part may be
    /// absent, R5.2) without allocating. Returns false, writing nothing,
    /// when both are.
    pub fn write_value(self, out: &mut BytesMut) -> bool {
        match (self.timeout, self.max) {
            (None, None) => return false,
            (Some(t), max) => {
                out.put_slice(b"timeout=");
                put_decimal(t, out);
                if let Some(m) = max {
                    out.put_slice(b", max=");
                    put_decimal(m, out);
                }
            }
            (None, Some(m)) => {
                out.put_slice(b"max=");
                put_decimal(m, out);
            }
        }
        true
    }
}

/// Idempotent methods (RFC 9110 §9.2.2): a client may retry these once after
/// a connection failure (R8.3) and may pipeline them (R7.4).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// True if a request asks for `100 Continue` before sending its body.
/// HTTP/1.0 requests' expectations are ignored (RFC 9110 §10.1.1).
pub fn expects_continue(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.get_all(EXPECT).iter().any(|v| {
            v.as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"100-continue")
        })
}

/// The protocol a message asks to switch to: `Upgrade` is present and
/// `Connection` lists `upgrade` (R9.1). HTTP/1.0 cannot upgrade.
pub fn upgrade_protocol(version: Version, headers: &HeaderMap) -> Option<&HeaderValue> {
    if version != Version::HTTP_11 || !ConnectionTokens::of(headers).upgrade {
        return None;
    }
    headers.get(UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in fields {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn connection_tokens_span_lines_and_ignore_case() {
        let t = ConnectionTokens::of(&map(&[
            ("connection", "Foo, KEEP-ALIVE"),
            ("connection", " Close "),
        ]));
        assert!(t.close && t.keep_alive && !t.upgrade);
        let t = ConnectionTokens::of(&map(&[("connection", "x-close, keepalive")]));
        assert_eq!(t, ConnectionTokens::default());
    }

    #[test]
    fn fixed_hop_knows_every_fixed_name_and_no_other() {
        for name in HOP_BY_HOP
            .iter()
            .chain([&http::header::PROXY_AUTHORIZATION])
        {
            assert!(fixed_hop(name), "{name}");
        }
        for name in ["host", "upgrade", "te-x", "trailers", "connection-x", "via"] {
            assert!(!fixed_hop(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn persistence_decision_table() {
        // (version, connection lines, persistent)
        let table: &[(Version, &[&str], bool)] = &[
            (Version::HTTP_11, &[], true),
            (Version::HTTP_11, &["close"], false),
            (Version::HTTP_11, &["keep-alive"], true),
            (Version::HTTP_11, &["keep-alive", "close"], false),
            (Version::HTTP_11, &["Upgrade, CLOSE"], false),
            (Version::HTTP_10, &[], false),
            (Version::HTTP_10, &["keep-alive"], true),
            (Version::HTTP_10, &["Keep-Alive"], true),
            (Version::HTTP_10, &["keep-alive, close"], false),
            (Version::HTTP_10, &["foo"], false),
        ];
        for (version, lines, want) in table {
            let fields: Vec<_> = lines.iter().map(|l| ("connection", *l)).collect();
            let got = ConnectionTokens::of(&map(&fields)).persistent(*version);
            assert_eq!(got, *want, "{version:?} {lines:?}");
        }
    }

    #[test]
    fn strip_removes_named_fixed_and_proxy_fields() {
        let mut h = map(&[
            ("connection", "X-Hop, keep-alive"),
            ("connection", "x-other"),
            ("proxy-connection", "X-Proxy-Named"),
            ("x-hop", "1"),
            ("x-other", "1"),
            ("x-proxy-named", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("x-end-to-end", "kept"),
            ("cache-control", "no-cache"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end-to-end", "cache-control"]);
    }

    #[test]
    fn strip_keeps_upgrade_when_relaying_it() {
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert!(h.get(CONNECTION).is_none());
    }

    #[test]
    fn keep_alive_params_round_trip_and_tolerate_noise() {
        let p = KeepAliveParams::parse(&map(&[(
            "keep-alive",
            "timeout=5, MAX=\"100\", foo=bar, junk",
        )]));
        assert_eq!(
            p,
            KeepAliveParams {
                timeout: Some(5),
                max: Some(100)
            }
        );
        assert_eq!(p.to_header_value().unwrap(), "timeout=5, max=100");
        assert_eq!(
            KeepAliveParams::parse(&map(&[("keep-alive", "timeout=x")])),
            KeepAliveParams::default()
        );
        assert!(KeepAliveParams::default().to_header_value().is_none());
    }

    #[test]
    fn idempotency_expect_and_upgrade() {
        for m in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
            assert!(
                is_idempotent(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(
                !is_idempotent(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        let h = map(&[("expect", "100-Continue")]);
        assert!(expects_continue(Version::HTTP_11, &h));
        assert!(!expects_continue(Version::HTTP_10, &h));
        let h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(upgrade_protocol(Version::HTTP_11, &h).unwrap(), "websocket");
        assert!(upgrade_protocol(Version::HTTP_10, &h).is_none());
        assert!(upgrade_protocol(Version::HTTP_11, &map(&[("upgrade", "websocket")])).is_none());
    }
}
