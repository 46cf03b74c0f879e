//! The head skim a load generator uses must decide framing and persistence
//! exactly as the full parser does, or a benchmark would misread responses.

use bytes::BytesMut;
use http::{Method, StatusCode, Version};
use keepwire_proto::framing::response_framing;
use keepwire_proto::head::parse_response;
use keepwire_proto::{
    Announced, BodyKind, ExchangeFacts, Limits, exchange_persists, skim_response,
};

const CASES: &[(&str, &[u8])] = &[
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
    ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("GET", b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"),
    ("GET", b"HTTP/1.1 200 OK\r\n\r\nuntil close"),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
    ("GET", b"HTTP/1.1 100 Continue\r\n\r\n"),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("GET", b"HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\nCONNECTION: foo, CLOSE\r\n\r\nabcd"),
];

#[test]
fn skim_agrees_with_the_full_parser() {
    let limits = Limits::default();
    for (method, raw) in CASES {
        let method: Method = method.parse().unwrap();
        let skim = skim_response(raw, &method, &limits).unwrap().unwrap();
        let mut buf = BytesMut::from(*raw);
        let head = parse_response(&mut buf, &limits, false).unwrap().unwrap();
        let framing = response_framing(&method, head.status, head.version, &head.headers).unwrap();
        // The full parser's decision, through the one persistence function.
        let response = Announced::of(head.version, &head.headers);
        let facts = ExchangeFacts::default().answered(&method, head.status, response, framing);
        let persistent = exchange_persists(&facts);
        assert_eq!(skim.status, head.status, "{raw:?}");
        assert_eq!(skim.version, head.version, "{raw:?}");
        assert_eq!(skim.head_len, raw.len() - buf.len(), "{raw:?}");
        assert_eq!(skim.body, framing.body, "{raw:?}");
        assert_eq!(skim.persistent, persistent, "{raw:?}");
        // Every strict prefix is incomplete, never an error.
        let head_len = skim.head_len;
        for cut in 0..head_len {
            assert_eq!(
                skim_response(&raw[..cut], &method, &limits).unwrap(),
                None,
                "{raw:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn skim_spot_checks() {
    let limits = Limits::default();
    let s = skim_response(CASES[4].1, &Method::GET, &limits)
        .unwrap()
        .unwrap();
    assert!(s.persistent, "1.0 with Connection: Keep-Alive persists");
    assert_eq!(s.version, Version::HTTP_10);
    let s = skim_response(CASES[3].1, &Method::GET, &limits)
        .unwrap()
        .unwrap();
    assert!(!s.persistent, "plain 1.0 closes");
    let s = skim_response(CASES[12].1, &Method::GET, &limits)
        .unwrap()
        .unwrap();
    assert_eq!(s.body, BodyKind::Length(4));
    assert!(!s.persistent);
    let s = skim_response(CASES[9].1, &Method::GET, &limits)
        .unwrap()
        .unwrap();
    assert_eq!(s.status, StatusCode::CONTINUE);
}

#[test]
fn skim_rejects_what_the_parser_rejects() {
    let limits = Limits::default();
    for raw in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/9.1 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"garbage\r\n\r\n",
    ] {
        assert!(
            skim_response(raw, &Method::GET, &limits).is_err(),
            "{raw:?}"
        );
        let mut buf = BytesMut::from(raw);
        let full = parse_response(&mut buf, &limits, false).and_then(|h| {
            let h = h.unwrap();
            response_framing(&Method::GET, h.status, h.version, &h.headers)
        });
        assert!(full.is_err(), "{raw:?}");
    }
}

/// Found by fuzz target skim_response: a complete head with a field line
/// over `max_line_bytes` was skimmed as fine while the full parser (and so
/// `Conn`) refused it with 431.
#[test]
fn skim_bounds_field_lines_as_the_parser_does() {
    let mut limits = Limits::default();
    limits.max_line_bytes = 32;
    let long = format!("HTTP/1.1 304 OK\r\nX-Long: {}\r\n\r\n", "q".repeat(40));
    let skim = skim_response(long.as_bytes(), &Method::GET, &limits).unwrap_err();
    let mut buf = BytesMut::from(long.as_bytes());
    let full = parse_response(&mut buf, &limits, false).unwrap_err();
    assert_eq!(skim.kind(), full.kind());
    // At the bound exactly, both accept.
    let fits = format!("HTTP/1.1 304 OK\r\nX-Long: {}\r\n\r\n", "q".repeat(32 - 10));
    assert!(
        skim_response(fits.as_bytes(), &Method::GET, &limits)
            .unwrap()
            .is_some()
    );
    let mut buf = BytesMut::from(fits.as_bytes());
    assert!(parse_response(&mut buf, &limits, false).unwrap().is_some());
}

/// Found by fuzz target skim_response: with a bad status code *and* a long
/// field line, skim cited the line and the parser the status.
#[test]
fn skim_cites_the_same_fault_as_the_parser() {
    let mut limits = Limits::default();
    limits.max_line_bytes = 32;
    let raw = format!("HTTP/1.1 034 OK\r\nX-Long: {}\r\n\r\n", "q".repeat(40));
    let skim = skim_response(raw.as_bytes(), &Method::GET, &limits).unwrap_err();
    let mut buf = BytesMut::from(raw.as_bytes());
    let full = parse_response(&mut buf, &limits, false).unwrap_err();
    assert_eq!(skim.kind(), full.kind());
}
