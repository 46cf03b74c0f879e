//! Request smuggling and limit vectors (R10.1, R10.2): each malformed
//! request, followed by a second request an attacker wants a back end to
//! see, must fail with one exact `ErrorKind` and status, and the second
//! request must never surface as an event.
//!
//! The server driver answers every request as soon as its `End` is read and
//! then keeps polling, so a vector that were accepted would go on to
//! surface `/smuggled`: each row fails if its vector is accepted.

mod common;

use bytes::BytesMut;
use common::{Answer, Driver, coalesce, describe, describe_all};
use http::StatusCode;
use keepwire_proto::{ConnConfig, ErrorKind, Event, Limits, Side};

/// The request the attacker wants to slip through.
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// Feeding byte by byte re-parses a partial head each time; above this size
/// the stepped run uses bigger pieces to stay fast.
const BYTEWISE_MAX: usize = 4096;

/// Runs `malicious + SMUGGLED` through a server `Conn` whole and in small
/// pieces, then checks the error, the events and the error answer.
///
/// `surfaced` lists the non-`Data` events expected before the error (the
/// first request's head when the fault is in its body).
fn check(limits: Limits, malicious: &[u8], kind: ErrorKind, status: u16, surfaced: &[&str]) {
    let input = [malicious, SMUGGLED].concat();
    let step = if input.len() <= BYTEWISE_MAX { 1 } else { 257 };
    let status = StatusCode::from_u16(status).unwrap();
    for piece in [input.len(), step] {
        let what = format!(
            "{:?} in pieces of {piece}",
            String::from_utf8_lossy(&input[..input.len().min(120)])
        );
        let mut config = ConnConfig::default();
        config.limits = limits.clone();
        let mut d = Driver::server(config, Answer::OnEnd);
        for p in input.chunks(piece) {
            d.feed(p);
        }
        d.eof();

        let events = coalesce(std::mem::take(&mut d.events));
        assert!(
            !events.iter().any(|e| matches!(e,
                Event::Request { head, .. } if head.target.path() == "/smuggled")),
            "{what}: smuggled request surfaced: {:?}",
            describe_all(&events)
        );
        let Some(err) = d.error.clone() else {
            panic!("{what}: vector accepted: {:?}", describe_all(&events));
        };
        assert_eq!(err.kind(), &kind, "{what}");
        assert_eq!(err.side(), Side::Remote, "{what}");
        assert_eq!(err.status_hint(), Some(status), "{what}");
        assert!(!err.is_truncated(), "{what}");
        let heads: Vec<String> = events
            .iter()
            .filter(|e| !matches!(e, Event::Data(_)))
            .map(describe)
            .collect();
        assert_eq!(heads, surfaced, "{what}");
        // The first request never completed, so nothing was answered yet.
        assert!(d.out.is_empty(), "{what}");

        // Reading is over for good.
        for _ in 0..3 {
            assert_eq!(d.conn.poll_event(), Ok(None), "{what}");
        }
        assert!(!d.conn.wants_read(), "{what}");

        let mut out = BytesMut::new();
        d.conn.send_error(status, &mut out).expect("send_error");
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {} ", status.as_u16())),
            "{what}: {text}"
        );
        assert!(text.contains("\r\nconnection: close\r\n"), "{what}: {text}");
        assert!(d.conn.should_close(), "{what}");
        assert!(!d.conn.can_send_request(), "{what}");
    }
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}").into_bytes()
}

const CHUNKED_HEAD: &str = "REQ POST / HTTP/1.1 Chunked";

/// One `#[test]` per row with default limits.
macro_rules! vectors {
    ($( $name:ident: $raw:expr => $kind:expr, $status:expr, [$($surfaced:expr),*]; )*) => {
        $(
            #[test]
            fn $name() {
                check(Limits::default(), AsRef::<[u8]>::as_ref(&$raw), $kind, $status, &[$($surfaced),*]);
            }
        )*
    };
}

use ErrorKind::*;

vectors! {
    // ---- R10.1: framing ambiguity
    te_and_cl: post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")
        => TransferEncodingWithContentLength, 400, [];
    cl_and_te: post("Transfer-Encoding: chunked\r\nContent-Length: 35\r\n", "0\r\n\r\n")
        => TransferEncodingWithContentLength, 400, [];
    cl_differing_lines: post("Content-Length: 3\r\nContent-Length: 40\r\n", "abc")
        => ConflictingContentLength, 400, [];
    cl_differing_list: post("Content-Length: 3, 40\r\n", "abc")
        => ConflictingContentLength, 400, [];
    cl_plus_sign: post("Content-Length: +3\r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_negative: post("Content-Length: -1\r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_hex: post("Content-Length: 0x3\r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_space_inside: post("Content-Length: 1 3\r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_empty: post("Content-Length: \r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_overflow: post("Content-Length: 99999999999999999999\r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_lone_comma: post("Content-Length: ,\r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_trailing_comma: post("Content-Length: 3,\r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_empty_list_member: post("Content-Length: 3, ,3\r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_valid_line_and_empty_line: post("Content-Length: 3\r\nContent-Length: \r\n", "abc")
        => InvalidContentLength, 400, [];
    cl_leading_space_inside_list: post("Content-Length:  1 2\r\n", "abc")
        => InvalidContentLength, 400, [];
    te_not_chunked: post("Transfer-Encoding: gzip\r\n", "abc")
        => UnsupportedTransferCoding, 400, [];
    te_identity: post("Transfer-Encoding: identity\r\n", "abc")
        => UnsupportedTransferCoding, 400, [];
    te_chunked_not_final: post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n")
        => UnsupportedTransferCoding, 400, [];
    te_chunked_after_gzip_in_a_request: post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n")
        => UnsupportedTransferCoding, 400, [];
    te_chunked_twice_in_a_list: post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n")
        => UnsupportedTransferCoding, 400, [];
    te_chunked_twice_in_two_lines: post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")
        => UnsupportedTransferCoding, 400, [];
    te_look_alike: post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n")
        => UnsupportedTransferCoding, 400, [];
    te_in_http10: b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        => TransferEncodingInHttp10, 400, [];
    te_and_cl_in_http10: b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
        => TransferEncodingInHttp10, 400, [];

    // ---- R10.1: chunked body syntax
    chunk_size_not_hex: post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_overflow: post("Transfer-Encoding: chunked\r\n", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_17_hex_digits: post("Transfer-Encoding: chunked\r\n", "10000000000000000\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_negative: post("Transfer-Encoding: chunked\r\n", "-1\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_line_with_bare_lf: post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_too_long: post("Transfer-Encoding: chunked\r\n", &format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000)))
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_empty_line: post("Transfer-Encoding: chunked\r\n", "\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_whitespace_only: post("Transfer-Encoding: chunked\r\n", " \r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_tab_only: post("Transfer-Encoding: chunked\r\n", "\t\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_leading_space: post("Transfer-Encoding: chunked\r\n", " 5\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_trailing_space: post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_0x_prefix: post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_size_bare_cr: post("Transfer-Encoding: chunked\r\n", "5\rhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    last_chunk_with_bare_lf: post("Transfer-Encoding: chunked\r\n", "0\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_with_bare_lf: post("Transfer-Encoding: chunked\r\n", "5;a\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_with_bare_cr: post("Transfer-Encoding: chunked\r\n", "5;a\rb\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_with_control_byte: post("Transfer-Encoding: chunked\r\n", "5;a\x01b\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_with_nul_in_quotes: post("Transfer-Encoding: chunked\r\n", "5;a=\"\x00\"\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_unclosed_quote_swallows_lines: post("Transfer-Encoding: chunked\r\n", "5;a=\"b\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_without_name: post("Transfer-Encoding: chunked\r\n", "5;\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_space_before_crlf: post("Transfer-Encoding: chunked\r\n", "5;a=b \r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_extension_without_value: post("Transfer-Encoding: chunked\r\n", "5;a=\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkSize, 400, [CHUNKED_HEAD];
    chunk_data_without_crlf: post("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX\r\n0\r\n\r\n")
        => InvalidChunkTerminator, 400, [CHUNKED_HEAD];
    chunk_data_then_bare_lf: post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n")
        => InvalidChunkTerminator, 400, [CHUNKED_HEAD];
    chunk_data_longer_than_announced: post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n")
        => InvalidChunkTerminator, 400, [CHUNKED_HEAD];
    trailer_malformed: post("Transfer-Encoding: chunked\r\n", "0\r\nBad Trailer: x\r\n\r\n")
        => InvalidTrailers, 400, [CHUNKED_HEAD];
    trailer_section_ends_with_bare_lf: post("Transfer-Encoding: chunked\r\n", "0\r\nX-T: 1\r\n\n")
        => InvalidTrailers, 400, [CHUNKED_HEAD];
    trailer_section_empty_with_bare_lf: post("Transfer-Encoding: chunked\r\n", "0\r\n\n")
        => InvalidTrailers, 400, [CHUNKED_HEAD];
    trailer_line_ends_with_bare_lf: post("Transfer-Encoding: chunked\r\n", "0\r\nX-T: 1\nX-U: 2\r\n\r\n")
        => InvalidTrailers, 400, [CHUNKED_HEAD];
    trailer_obs_fold: post("Transfer-Encoding: chunked\r\n", "0\r\nX-T: 1\r\n 2\r\n\r\n")
        => InvalidTrailers, 400, [CHUNKED_HEAD];
    trailer_control_byte: post("Transfer-Encoding: chunked\r\n", "0\r\nX-T: 1\x01\r\n\r\n")
        => InvalidTrailers, 400, [CHUNKED_HEAD];
    trailer_too_many_fields: post("Transfer-Encoding: chunked\r\n", &format!("0\r\n{}\r\n", (0..101).map(|i| format!("T{i}: v\r\n")).collect::<String>()))
        => InvalidTrailers, 400, [CHUNKED_HEAD];
    trailer_section_too_large: post("Transfer-Encoding: chunked\r\n", &format!("0\r\nX-Big: {}\r\n\r\n", "t".repeat(9000)))
        => InvalidTrailers, 400, [CHUNKED_HEAD];

    // ---- R10.3: Host (RFC 9112 §3.2)
    host_missing: b"GET / HTTP/1.1\r\n\r\n"
        => MissingHost, 400, [];
    host_missing_with_absolute_form: b"GET http://a/ HTTP/1.1\r\n\r\n"
        => MissingHost, 400, [];
    host_missing_on_a_post: b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        => MissingHost, 400, [];
    host_repeated: b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"
        => RepeatedHost, 400, [];
    host_repeated_differing: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\nhost: evil\r\n\r\n"
        => RepeatedHost, 400, [];
    host_repeated_in_http10: b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"
        => RepeatedHost, 400, [];
    host_repeated_with_absolute_form: b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
        => RepeatedHost, 400, [];
    host_with_space: b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"
        => InvalidHost, 400, [];
    host_as_list: b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"
        => InvalidHost, 400, [];
    host_with_slash: b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"
        => InvalidHost, 400, [];
    host_with_query: b"GET / HTTP/1.1\r\nHost: a?b\r\n\r\n"
        => InvalidHost, 400, [];
    host_with_fragment: b"GET / HTTP/1.1\r\nHost: a#b\r\n\r\n"
        => InvalidHost, 400, [];
    host_with_userinfo: b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"
        => InvalidHost, 400, [];
    host_with_bad_port: b"GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n"
        => InvalidHost, 400, [];
    host_with_port_out_of_range: b"GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n"
        => InvalidHost, 400, [];
    host_with_obs_text: b"GET / HTTP/1.1\r\nHost: \xc3\xa9.example\r\n\r\n"
        => InvalidHost, 400, [];
    host_invalid_in_http10: b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n"
        => InvalidHost, 400, [];
    host_repeated_on_connect: b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nHost: b:443\r\n\r\n"
        => RepeatedHost, 400, [];
    absolute_form_with_userinfo: b"GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n"
        => MalformedTarget, 400, [];
    authority_form_with_userinfo: b"CONNECT user:pw@a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"
        => MalformedTarget, 400, [];
    absolute_form_with_bad_port: b"GET http://a:99999/ HTTP/1.1\r\nHost: a\r\n\r\n"
        => MalformedTarget, 400, [];
    host_unclosed_ipv6: b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"
        => InvalidHost, 400, [];

    // ---- R10.1: head syntax
    obs_fold_transfer_encoding: post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n")
        => MalformedHead(httparse::Error::HeaderName), 400, [];
    obs_fold_other_field: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"
        => MalformedHead(httparse::Error::HeaderName), 400, [];
    space_before_colon: post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n")
        => MalformedHead(httparse::Error::HeaderName), 400, [];
    header_without_colon: b"GET / HTTP/1.1\r\nHost a\r\n\r\n"
        => MalformedHead(httparse::Error::HeaderName), 400, [];
    bare_cr_line_ending: b"GET / HTTP/1.1\rHost: a\r\n\r\n"
        => MalformedHead(httparse::Error::NewLine), 400, [];
    nul_in_header_value: b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n"
        => MalformedHead(httparse::Error::HeaderValue), 400, [];
    invalid_method_token: b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n"
        => MalformedHead(httparse::Error::Token), 400, [];
    tab_in_request_line: b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"
        => MalformedHead(httparse::Error::Token), 400, [];
    version_2_0: b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"
        => UnsupportedVersion, 505, [];
    version_1_2: b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"
        => UnsupportedVersion, 505, [];

    // ---- R10.2: limits (defaults: line 8 KiB, head 32 KiB, 100 fields, body 1 MiB)
    request_line_too_long: format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000)).into_bytes()
        => RequestLineTooLong { limit: 8192 }, 414, [];
    header_line_too_long: format!("GET / HTTP/1.1\r\nHost: a\r\nX-Long: {}\r\n\r\n", "a".repeat(9000)).into_bytes()
        => HeaderLineTooLong { limit: 8192 }, 431, [];
    too_many_headers: format!("GET / HTTP/1.1\r\n{}\r\n", (0..101).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()).into_bytes()
        => TooManyHeaders { limit: 100 }, 431, [];
    head_too_large: format!("GET / HTTP/1.1\r\n{}\r\n", (0..40).map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(900))).collect::<String>()).into_bytes()
        => HeadTooLarge { limit: 32768 }, 431, [];
    body_too_large_by_content_length: post("Content-Length: 1048577\r\n", "")
        => BodyTooLarge { limit: 1048576 }, 413, [];
    body_too_large_by_chunks: post("Transfer-Encoding: chunked\r\n", &format!("80000\r\n{0}\r\n80000\r\n{0}\r\n1\r\nx\r\n0\r\n\r\n", "b".repeat(0x80000)))
        => BodyTooLarge { limit: 1048576 }, 413, [CHUNKED_HEAD];
}

#[test]
fn body_too_large_by_chunks_with_a_small_limit() {
    let mut limits = Limits::default();
    limits.max_body_bytes = Some(16);
    let raw = post(
        "Transfer-Encoding: chunked\r\n",
        "a\r\n0123456789\r\n7\r\nabcdefg\r\n0\r\n\r\n",
    );
    check(
        limits.clone(),
        &raw,
        BodyTooLarge { limit: 16 },
        413,
        &[CHUNKED_HEAD],
    );
    // Exactly at the limit is fine.
    let raw = post(
        "Transfer-Encoding: chunked\r\n",
        "a\r\n0123456789\r\n6\r\nabcdef\r\n0\r\n\r\n",
    );
    let mut d = Driver::server(
        {
            let mut c = ConnConfig::default();
            c.limits = limits;
            c
        },
        Answer::OnEnd,
    );
    d.feed(&raw);
    assert_eq!(d.error, None);
    assert_eq!(
        describe_all(&coalesce(d.events)),
        [CHUNKED_HEAD, "DATA 0123456789abcdef", "END"]
    );
}

#[test]
fn small_limits_map_to_their_statuses() {
    let mut limits = Limits::default();
    limits.max_head_bytes = 256;
    limits.max_headers = 4;
    limits.max_line_bytes = 64;
    limits.max_trailer_bytes = 32;
    limits.max_chunk_line_bytes = 16;
    limits.max_body_bytes = Some(8);
    check(
        limits.clone(),
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(60)).as_bytes(),
        RequestLineTooLong { limit: 64 },
        414,
        &[],
    );
    check(
        limits.clone(),
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70)).as_bytes(),
        HeaderLineTooLong { limit: 64 },
        431,
        &[],
    );
    check(
        limits.clone(),
        b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
        TooManyHeaders { limit: 4 },
        431,
        &[],
    );
    check(
        limits.clone(),
        format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            // Four lines of 62 bytes: each fits the line limit, the head
            // (266 bytes) does not fit 256.
            (0..4)
                .map(|i| format!("X-{i}: {}\r\n", "v".repeat(55)))
                .collect::<String>()
        )
        .as_bytes(),
        HeadTooLarge { limit: 256 },
        431,
        &[],
    );
    check(
        limits.clone(),
        &post("Content-Length: 9\r\n", "123456789"),
        BodyTooLarge { limit: 8 },
        413,
        &[],
    );
    check(
        limits.clone(),
        &post(
            "Transfer-Encoding: chunked\r\n",
            "0\r\nX-T: 0123456789012345678901234567890123456789\r\n\r\n",
        ),
        InvalidTrailers,
        400,
        &[CHUNKED_HEAD],
    );
    check(
        limits,
        &post(
            "Transfer-Encoding: chunked\r\n",
            "1;ext=0123456789abcdef\r\nx\r\n0\r\n\r\n",
        ),
        InvalidChunkSize,
        400,
        &[CHUNKED_HEAD],
    );
}

#[test]
fn error_answer_is_exact() {
    let mut d = Driver::server(ConnConfig::default(), Answer::OnEnd);
    d.feed(&post(
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        "0\r\n\r\n",
    ));
    let status = d.error.as_ref().unwrap().status_hint().unwrap();
    let mut out = BytesMut::new();
    d.conn.send_error(status, &mut out).unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nBad Request\n"
    );
    // A second answer is refused: the connection is done.
    assert!(d.conn.send_error(status, &mut BytesMut::new()).is_err());
}

// ---- what is accepted, asserted as it is

#[test]
fn a_request_inside_a_valid_body_stays_body() {
    let body = std::str::from_utf8(SMUGGLED).unwrap();
    let mut d = Driver::server(ConnConfig::default(), Answer::OnEnd);
    d.feed(&post(&format!("Content-Length: {}\r\n", body.len()), body));
    assert_eq!(d.error, None);
    assert_eq!(
        describe_all(&coalesce(d.events)),
        [
            "REQ POST / HTTP/1.1 Length(35)".to_string(),
            format!("DATA {body}"),
            "END".to_string()
        ]
    );
}

#[test]
fn identical_content_length_repeats_are_one_length() {
    for headers in [
        "Content-Length: 3\r\nContent-Length: 3\r\n",
        "Content-Length: 3, 3\r\n",
        "Content-Length: 3,3\r\nContent-Length: 3 ,\t3\r\n",
    ] {
        let mut d = Driver::server(ConnConfig::default(), Answer::OnEnd);
        d.feed(&[&post(headers, "abc")[..], SMUGGLED].concat());
        assert_eq!(d.error, None, "{headers}");
        // Framed by the one length: the next request is a request of its own.
        assert_eq!(
            describe_all(&coalesce(d.events)),
            [
                "REQ POST / HTTP/1.1 Length(3)",
                "DATA abc",
                "END",
                "REQ GET /smuggled HTTP/1.1 Empty",
                "END"
            ],
            "{headers}"
        );
    }
}

/// httparse (and so keepwire) accepts a bare LF as a line ending in heads,
/// as RFC 9112 §2.2 allows a recipient to. It frames the message by the same
/// fields as the CRLF form, so the two spellings never disagree here; a
/// front end that treated bare LF differently could, which is why
/// keepwire's own encoder always writes CRLF.
#[test]
fn bare_lf_in_heads_is_accepted_like_crlf() {
    let lf =
        b"POST / HTTP/1.1\nHost: a\nX-A: b\nTransfer-Encoding: chunked\n\n3\r\nabc\r\n0\r\n\r\n";
    let crlf = b"POST / HTTP/1.1\r\nHost: a\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let run = |raw: &[u8]| {
        let mut d = Driver::server(ConnConfig::default(), Answer::OnEnd);
        for b in raw.chunks(1) {
            d.feed(b);
        }
        assert_eq!(d.error, None);
        d.outcome().events
    };
    let a = run(lf);
    assert_eq!(describe_all(&a), [CHUNKED_HEAD, "DATA abc", "END"]);
    assert_eq!(a, run(crlf));
}

/// The strict forms still pass, whole and in every split: extensions with
/// quoted strings and BWS around `;` and `=`, leading zeros, trailers that
/// end at CRLF CRLF; and the request after the body is a request.
#[test]
fn valid_chunk_extensions_and_trailers_pass() {
    let body = "5 ;a = b\t; q=\"x;y \\\"z\\\\\" ;n\r\nhello\r\n\
                0006;e=\"\"\r\n world\r\n\
                000;last\r\nX-Sum: 11\r\nX-Note: \"a b\"\r\n\r\n";
    let input = [&post("Transfer-Encoding: chunked\r\n", body)[..], SMUGGLED].concat();
    for piece in [input.len(), 1, 7] {
        let mut d = Driver::server(ConnConfig::default(), Answer::OnEnd);
        for p in input.chunks(piece) {
            d.feed(p);
        }
        assert_eq!(d.error, None, "pieces of {piece}");
        assert_eq!(
            describe_all(&coalesce(d.events)),
            [
                CHUNKED_HEAD,
                "DATA hello world",
                "END [x-sum=11,x-note=\"a b\"]",
                "REQ GET /smuggled HTTP/1.1 Empty",
                "END"
            ],
            "pieces of {piece}"
        );
    }
}

/// What RFC 9112 §3.2 leaves valid is accepted: HTTP/1.0 without `Host`,
/// `CONNECT` without `Host` (as Go's `net/http`; the authority-form target
/// names the authority), an absolute-form target whose `Host` differs (the
/// target wins; forwarding rewrites `Host`), IP literals, ports, and an
/// empty `Host`.
#[test]
fn valid_host_forms_pass() {
    for (raw, want) in [
        (&b"GET / HTTP/1.0\r\n\r\n"[..], "REQ GET / HTTP/1.0 Empty"),
        (
            b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n",
            "REQ GET http://a.example/x HTTP/1.1 Empty",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n",
            "REQ GET / HTTP/1.1 Empty",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
            "REQ GET / HTTP/1.1 Empty",
        ),
        (
            b"GET / HTTP/1.1\r\nHOST: Example.COM\r\n\r\n",
            "REQ GET / HTTP/1.1 Empty",
        ),
        (
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            "REQ GET / HTTP/1.1 Empty",
        ),
    ] {
        let mut d = Driver::server(ConnConfig::default(), Answer::OnEnd);
        d.feed(raw);
        assert_eq!(d.error, None, "{:?}", String::from_utf8_lossy(raw));
        let events = describe_all(&coalesce(d.events));
        assert_eq!(events.first().map(String::as_str), Some(want));
    }
    // CONNECT turns the connection into a tunnel once answered, so it is
    // polled by hand.
    let mut conn = keepwire_proto::Conn::new(keepwire_proto::Role::Server, ConnConfig::default());
    conn.handle_bytes(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    let event = conn.poll_event().expect("CONNECT without Host accepted");
    assert_eq!(
        event.as_ref().map(describe).as_deref(),
        Some("REQ CONNECT example.com:443 HTTP/1.1 Empty")
    );
}

/// A response is read by the same strict rules (RFC 9112 §6.3 step 5: an
/// invalid Content-Length is unrecoverable; §7.1 for chunks): a client that
/// read `Content-Length: ,` as "until close", or a sloppy chunk line as
/// the last chunk, would hand the rest of the stream to the next request.
#[test]
fn responses_are_framed_as_strictly() {
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let res_head = "RES 200 HTTP/1.1 Chunked";
    let cases: Vec<(String, ErrorKind, Vec<&str>)> = vec![
        (
            "HTTP/1.1 200 OK\r\nContent-Length: ,\r\n\r\nabc".into(),
            InvalidContentLength,
            vec![],
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 3,\r\n\r\nabc".into(),
            InvalidContentLength,
            vec![],
        ),
        (
            format!("{chunked}\r\nabc\r\n0\r\n\r\n"),
            InvalidChunkSize,
            vec![res_head],
        ),
        (
            format!("{chunked} \r\nabc\r\n0\r\n\r\n"),
            InvalidChunkSize,
            vec![res_head],
        ),
        (
            format!("{chunked}3;x\nabc\r\n0\r\n\r\n"),
            InvalidChunkSize,
            vec![res_head],
        ),
        (
            format!("{chunked}3;x=\"\x7f\"\r\nabc\r\n0\r\n\r\n"),
            InvalidChunkSize,
            vec![res_head],
        ),
        (
            format!("{chunked}0\r\nX: 1\n\n"),
            InvalidTrailers,
            vec![res_head],
        ),
    ];
    for (raw, kind, surfaced) in cases {
        for piece in [raw.len(), 1] {
            let mut d = Driver::client(ConnConfig::default(), &[http::Method::GET]);
            for p in raw.as_bytes().chunks(piece) {
                d.feed(p);
            }
            d.eof();
            let what = format!("{raw:?} in pieces of {piece}");
            assert_eq!(d.error.as_ref().map(|e| e.kind()), Some(&kind), "{what}");
            let heads: Vec<String> = coalesce(std::mem::take(&mut d.events))
                .iter()
                .filter(|e| !matches!(e, Event::Data(_)))
                .map(describe)
                .collect();
            assert_eq!(heads, surfaced, "{what}");
        }
    }
    // The valid spelling of each passes.
    let mut d = Driver::client(
        ConnConfig::default(),
        &[http::Method::GET, http::Method::GET],
    );
    d.feed(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc\
             {chunked}3 ; x = \"y z\"\r\ndef\r\n0\r\nX: 1\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(d.error, None);
    assert_eq!(
        describe_all(&coalesce(d.events)),
        [
            "RES 200 HTTP/1.1 Length(3)",
            "DATA abc",
            "END",
            res_head,
            "DATA def",
            "END [x=1]"
        ]
    );
}
