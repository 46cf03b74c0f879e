//! Hop-by-hop handling as a proxy uses it (R3, R6): what survives a hop,
//! in which order, and with which spelling.

mod common;

use bytes::BytesMut;
use common::{describe_all, header_map};
use http::HeaderMap;
use http::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use keepwire_proto::encode;
use keepwire_proto::head::{HeaderCase, parse_request, parse_response};
use keepwire_proto::hop::{ConnectionTokens, strip_hop_by_hop};
use keepwire_proto::{Conn, ConnConfig, Event, Limits, Role};

/// `(name, value)` of every field line, in iteration order.
fn lines(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn strip_keeps_end_to_end_order_and_repeats() {
    let mut h = header_map(&[
        ("x-first", "1"),
        ("connection", "x-hop-a"),
        ("accept", "text/html"),
        ("keep-alive", "timeout=5"),
        ("x-hop-a", "gone"),
        ("cache-control", "no-cache"),
        ("te", "trailers"),
        ("accept", "application/json"),
        ("connection", "X-HOP-B"),
        ("x-hop-b", "gone"),
        ("via", "1.1 a"),
        ("transfer-encoding", "chunked"),
        ("x-first", "2"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic x"),
        ("upgrade", "h2c"),
        ("x-last", "z"),
    ]);
    // HeaderMap groups the lines of one name at its first position; strip
    // must keep exactly that order for what remains.
    let before: Vec<_> = lines(&h);
    strip_hop_by_hop(&mut h, false);
    let want = owned(&[
        ("x-first", "1"),
        ("x-first", "2"),
        ("accept", "text/html"),
        ("accept", "application/json"),
        ("cache-control", "no-cache"),
        ("via", "1.1 a"),
        ("x-last", "z"),
    ]);
    assert_eq!(lines(&h), want);
    // The same order as before, with the hop fields filtered out.
    let filtered: Vec<_> = before
        .into_iter()
        .filter(|(n, _)| want.iter().any(|(w, _)| w == n))
        .collect();
    assert_eq!(filtered, want);
}

#[test]
fn strip_keeps_order_whether_hop_fields_trail_or_not() {
    // (fields in, fields out): hop-by-hop fields after every end-to-end
    // one are removed in place; anywhere else the map is rebuilt. Either
    // way what remains keeps its order and its repeats.
    type Fields = &'static [(&'static str, &'static str)];
    let table: &[(Fields, Fields)] = &[
        // A server's usual response head: the hop fields last.
        (
            &[
                ("server", "nginx"),
                ("date", "d"),
                ("content-type", "text/plain"),
                ("content-length", "13"),
                ("connection", "keep-alive"),
                ("keep-alive", "timeout=5"),
            ],
            &[
                ("server", "nginx"),
                ("date", "d"),
                ("content-type", "text/plain"),
                ("content-length", "13"),
            ],
        ),
        // Trailing, repeated, and named by Connection.
        (
            &[
                ("x-a", "1"),
                ("x-b", "1"),
                ("x-a", "2"),
                ("connection", "x-named"),
                ("x-named", "1"),
                ("connection", "close"),
                ("x-named", "2"),
            ],
            &[("x-a", "1"), ("x-a", "2"), ("x-b", "1")],
        ),
        // More trailing hop fields than are removed in place.
        (
            &[
                ("x-a", "1"),
                ("connection", "x-1, x-2"),
                ("x-1", "1"),
                ("x-2", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("x-b", "last"),
            ],
            &[("x-a", "1"), ("x-b", "last")],
        ),
        (
            &[
                ("x-a", "1"),
                ("x-b", "2"),
                ("connection", "x-1, x-2, x-3"),
                ("x-1", "1"),
                ("x-2", "1"),
                ("x-3", "1"),
                ("keep-alive", "timeout=5"),
            ],
            &[("x-a", "1"), ("x-b", "2")],
        ),
        // Only hop fields.
        (&[("connection", "close")], &[]),
    ];
    for (fields, want) in table {
        let mut h = header_map(fields);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(lines(&h), owned(want), "{fields:?}");
    }
}

#[test]
fn strip_without_hop_fields_changes_nothing() {
    let fields = [
        ("host", "a"),
        ("accept", "*/*"),
        ("x-b", "1"),
        ("accept", "text/plain"),
        ("x-a", "2"),
    ];
    let mut h = header_map(&fields);
    let before = lines(&h);
    strip_hop_by_hop(&mut h, false);
    assert_eq!(lines(&h), before);
}

#[test]
fn strip_ignores_connection_tokens_that_are_not_field_names() {
    let mut h = header_map(&[
        ("connection", "close, keep-alive, bad token, x@y, , x-real"),
        ("x-real", "1"),
        ("close", "named by Connection, so removed"),
        ("x-y", "kept"),
    ]);
    strip_hop_by_hop(&mut h, false);
    assert_eq!(lines(&h), owned(&[("x-y", "kept")]));
}

#[test]
fn strip_relaying_an_upgrade_keeps_upgrade_only() {
    let mut h = header_map(&[
        ("connection", "Upgrade, x-hop"),
        ("upgrade", "websocket"),
        ("x-hop", "1"),
        ("sec-websocket-key", "k"),
    ]);
    strip_hop_by_hop(&mut h, true);
    assert_eq!(
        lines(&h),
        owned(&[("upgrade", "websocket"), ("sec-websocket-key", "k")])
    );
    assert!(h.get(CONNECTION).is_none());
}

#[test]
fn proxy_connection_counts_for_the_client_hop_only() {
    let h = header_map(&[("proxy-connection", "Keep-Alive")]);
    assert_eq!(ConnectionTokens::of(&h), ConnectionTokens::default());
    let t = ConnectionTokens::of_proxy_request(&h);
    assert!(t.keep_alive && !t.close && !t.upgrade);
    assert!(t.persistent(http::Version::HTTP_10));
    let h = header_map(&[("connection", "keep-alive"), ("proxy-connection", "close")]);
    assert!(!ConnectionTokens::of_proxy_request(&h).persistent(http::Version::HTTP_11));
}

const CASED: &str = "GET /x HTTP/1.1\r\n\
Host: example.com\r\n\
X-Custom-Header: one\r\n\
content-TYPE: text/plain\r\n\
ACCEPT: */*\r\n\
x-CUSTOM-header: two\r\n\
\r\n";

#[test]
fn header_case_round_trips_through_parse_and_encode() {
    let mut buf = BytesMut::from(CASED.as_bytes());
    let head = parse_request(&mut buf, &Limits::default(), true)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    assert_eq!(head.headers[CONTENT_TYPE], "text/plain");
    assert!(!head.header_case.is_empty());
    let mut out = BytesMut::new();
    encode::fields(&head.headers, &head.header_case, |_| false, &mut out);
    // HeaderMap groups repeated names; each line keeps its own spelling.
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "Host: example.com\r\n\
X-Custom-Header: one\r\n\
x-CUSTOM-header: two\r\n\
content-TYPE: text/plain\r\n\
ACCEPT: */*\r\n"
    );

    // Without case preservation the names come back lowercase.
    let mut buf = BytesMut::from(CASED.as_bytes());
    let head = parse_request(&mut buf, &Limits::default(), false)
        .unwrap()
        .unwrap();
    assert!(head.header_case.is_empty());
    let mut out = BytesMut::new();
    encode::fields(&head.headers, &head.header_case, |_| false, &mut out);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "host: example.com\r\n\
x-custom-header: one\r\n\
x-custom-header: two\r\n\
content-type: text/plain\r\n\
accept: */*\r\n"
    );
}

#[test]
fn unique_names_round_trip_byte_for_byte() {
    let block = "Host: example.com\r\nX-Request-ID: 42\r\nuser-AGENT: curl/8\r\nAccept-Encoding: gzip\r\nDNT: 1\r\n";
    let raw = format!("GET / HTTP/1.1\r\n{block}\r\n");
    let mut buf = BytesMut::from(raw.as_bytes());
    let head = parse_request(&mut buf, &Limits::default(), true)
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    encode::fields(&head.headers, &head.header_case, |_| false, &mut out);
    assert_eq!(std::str::from_utf8(&out).unwrap(), block);
}

#[test]
fn response_case_round_trips_too() {
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Powered-By: test\r\nset-COOKIE: a=1\r\nSet-Cookie: b=2\r\n\r\n";
    let mut buf = BytesMut::from(raw.as_bytes());
    let head = parse_response(&mut buf, &Limits::default(), true)
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    encode::fields(&head.headers, &head.header_case, |_| false, &mut out);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "Content-Length: 0\r\nX-Powered-By: test\r\nset-COOKIE: a=1\r\nSet-Cookie: b=2\r\n"
    );
}

/// What a proxy does with a request: parse with case kept, strip the hop
/// fields, write the rest with the original spellings, in order.
#[test]
fn proxy_forwarding_keeps_spelling_and_order_of_what_survives() {
    let raw = "GET /p HTTP/1.1\r\n\
Host: origin\r\n\
Connection: Keep-Alive, X-Hop\r\n\
X-Hop: secret\r\n\
Accept-Language: de\r\n\
Proxy-Connection: keep-alive\r\n\
TE: trailers\r\n\
X-Trace-Id: abc\r\n\
Upgrade: h2c\r\n\
accept-language: en\r\n\
\r\n";
    let mut conn = Conn::new(Role::Server, {
        let mut c = ConnConfig::default();
        c.preserve_header_case = true;
        c
    });
    conn.handle_bytes(raw.as_bytes());
    let ev = conn.poll_event().unwrap().unwrap();
    assert_eq!(
        describe_all(std::slice::from_ref(&ev)),
        ["REQ GET /p HTTP/1.1 Empty"]
    );
    let Event::Request { mut head, .. } = ev else {
        unreachable!()
    };
    strip_hop_by_hop(&mut head.headers, false);
    assert!(head.headers.get(UPGRADE).is_none());
    let mut out = BytesMut::new();
    encode::fields(&head.headers, &head.header_case, |_| false, &mut out);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "Host: origin\r\n\
Accept-Language: de\r\n\
accept-language: en\r\n\
X-Trace-Id: abc\r\n"
    );
}

#[test]
fn header_case_falls_back_to_the_first_spelling() {
    let mut case = HeaderCase::default();
    case.push(CONTENT_TYPE, bytes::Bytes::from_static(b"Content-Type"));
    assert_eq!(case.get(&CONTENT_TYPE, 0), Some(&b"Content-Type"[..]));
    // A line the parser never saw (added later by the proxy) reuses it.
    assert_eq!(case.get(&CONTENT_TYPE, 3), Some(&b"Content-Type"[..]));
    assert_eq!(case.get(&CONNECTION, 0), None);
    let mut h = header_map(&[("content-type", "a"), ("content-type", "b"), ("x-new", "1")]);
    h.append("x-new", "2".parse().unwrap());
    let mut out = BytesMut::new();
    encode::fields(&h, &case, |_| false, &mut out);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "Content-Type: a\r\nContent-Type: b\r\nx-new: 1\r\nx-new: 2\r\n"
    );
}
