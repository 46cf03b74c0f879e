//! Persistence decisions through `Conn` (R5.1–R5.6, R7.1–R7.3, R8.2):
//! what a server announces and when it closes, what a client concludes from
//! a response, and an in-memory client ↔ server pair.

mod common;

use bytes::{Bytes, BytesMut};
use common::{collect, connection_lines, describe_all, header_map};
use http::{HeaderMap, Method, StatusCode, Version};
use keepwire_proto::{
    BodyLength, Conn, ConnConfig, ErrorKind, Event, RequestHead, ResponseHead, Role, Side,
};

/// Polls until `Ok(None)`, panicking on an error; bounded.
fn drain(conn: &mut Conn) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..1000 {
        match conn.poll_event() {
            Ok(Some(e)) => events.push(e),
            Ok(None) => return common::coalesce(events),
            Err(e) => panic!("unexpected error {e:?} after {events:?}"),
        }
    }
    panic!("no progress");
}

/// Polls until an error; bounded. Returns the events before it too.
fn drain_to_error(conn: &mut Conn) -> (Vec<Event>, keepwire_proto::Error) {
    let mut events = Vec::new();
    for _ in 0..1000 {
        match conn.poll_event() {
            Ok(Some(e)) => events.push(e),
            Ok(None) => panic!("no error; events {events:?}"),
            Err(e) => return (common::coalesce(events), e),
        }
    }
    panic!("no progress");
}

// ================================================================= server

/// Reads one request, answers it with `length` (sending `hello` as body
/// where a body is allowed) and returns the bytes written and whether the
/// connection should close afterwards.
fn serve_one(config: ConnConfig, request: &str, status: u16, length: BodyLength) -> (String, bool) {
    let mut conn = Conn::new(Role::Server, config);
    conn.handle_bytes(request.as_bytes());
    let events = drain(&mut conn);
    assert!(
        matches!(events.last(), Some(Event::End(_))),
        "{request:?}: {events:?}"
    );
    let mut out = BytesMut::new();
    let head = ResponseHead::new(StatusCode::from_u16(status).unwrap());
    conn.send_response(&head, length, &mut out).unwrap();
    let body = conn.send_body(Bytes::from_static(b"hello")).map(collect);
    if let Ok(b) = body {
        out.extend_from_slice(&b);
    }
    conn.send_end(None, &mut out).unwrap();
    (
        String::from_utf8(out.to_vec()).unwrap(),
        conn.should_close(),
    )
}

fn request(version: &str, connection: &[&str]) -> String {
    let lines: String = connection
        .iter()
        .map(|v| format!("Connection: {v}\r\n"))
        .collect();
    format!("GET / {version}\r\nHost: a\r\n{lines}\r\n")
}

const CL5: &str = "content-length: 5";
const TE: &str = "transfer-encoding: chunked";
const CLOSE: &str = "connection: close";
const KEEP: &str = "connection: keep-alive";

#[test]
fn server_decision_table() {
    // (version, Connection lines,
    //  Known(5): (fields, should_close), Unknown: (fields, should_close))
    type Row<'a> = (
        &'a str,
        &'a [&'a str],
        (&'a [&'a str], bool),
        (&'a [&'a str], bool),
    );
    let table: &[Row] = &[
        ("HTTP/1.0", &[], (&[CL5, CLOSE], true), (&[CLOSE], true)),
        (
            "HTTP/1.0",
            &["close"],
            (&[CL5, CLOSE], true),
            (&[CLOSE], true),
        ),
        (
            "HTTP/1.0",
            &["keep-alive"],
            (&[CL5, KEEP], false),
            (&[CLOSE], true),
        ),
        (
            "HTTP/1.0",
            &["Keep-Alive, close"],
            (&[CL5, CLOSE], true),
            (&[CLOSE], true),
        ),
        (
            "HTTP/1.0",
            &["x-foo", "Keep-Alive"],
            (&[CL5, KEEP], false),
            (&[CLOSE], true),
        ),
        (
            "HTTP/1.0",
            &["keep-alive", "Close"],
            (&[CL5, CLOSE], true),
            (&[CLOSE], true),
        ),
        ("HTTP/1.1", &[], (&[CL5], false), (&[TE], false)),
        (
            "HTTP/1.1",
            &["close"],
            (&[CL5, CLOSE], true),
            (&[TE, CLOSE], true),
        ),
        ("HTTP/1.1", &["keep-alive"], (&[CL5], false), (&[TE], false)),
        (
            "HTTP/1.1",
            &["Keep-Alive, close"],
            (&[CL5, CLOSE], true),
            (&[TE, CLOSE], true),
        ),
        (
            "HTTP/1.1",
            &["x-foo", "Keep-Alive"],
            (&[CL5], false),
            (&[TE], false),
        ),
        (
            "HTTP/1.1",
            &["keep-alive", "Close"],
            (&[CL5, CLOSE], true),
            (&[TE, CLOSE], true),
        ),
    ];
    for (version, lines, known, unknown) in table {
        let req = request(version, lines);
        for (length, (fields, close), body) in [
            (BodyLength::Known(5), known, "hello"),
            (
                BodyLength::Unknown,
                unknown,
                if *version == "HTTP/1.1" {
                    "5\r\nhello\r\n0\r\n\r\n"
                } else {
                    // Close-delimited to a 1.0 client (R5.4).
                    "hello"
                },
            ),
        ] {
            let what = format!("{version} {lines:?} {length:?}");
            let (wire, should_close) = serve_one(ConnConfig::default(), &req, 200, length);
            assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{what}: {wire}");
            assert_eq!(connection_lines(wire.as_bytes()), *fields, "{what}");
            assert_eq!(should_close, *close, "{what}");
            assert_eq!(wire.split_once("\r\n\r\n").unwrap().1, body, "{what}");
        }
    }
}

#[test]
fn caller_connection_close_is_honoured_and_framing_fields_replaced() {
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    drain(&mut conn);
    let mut head = ResponseHead::new(StatusCode::OK);
    head.headers = header_map(&[
        ("x-app", "1"),
        ("connection", "close"),
        ("content-length", "999"),
        ("transfer-encoding", "gzip"),
        ("keep-alive", "timeout=1"),
    ]);
    let mut out = BytesMut::new();
    conn.send_response(&head, BodyLength::Known(2), &mut out)
        .unwrap();
    out.extend_from_slice(&collect(conn.send_body(Bytes::from_static(b"ok")).unwrap()));
    conn.send_end(None, &mut out).unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 200 OK\r\nx-app: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );
    assert!(conn.should_close());
}

#[test]
fn max_requests_counts_down_and_closes_the_last() {
    let mut config = ConnConfig::default();
    config.max_requests = Some(3);
    config.advertise_timeout = Some(5);
    let mut conn = Conn::new(Role::Server, config);
    let expected: [&[&str]; 3] = [
        &["content-length: 0", KEEP, "keep-alive: timeout=5, max=2"],
        &["content-length: 0", KEEP, "keep-alive: timeout=5, max=1"],
        &["content-length: 0", CLOSE],
    ];
    // All four requests arrive at once; the fourth must never be read.
    let fourth = "GET /4 HTTP/1.1\r\nHost: a\r\n\r\n";
    let all = format!(
        "{}{}{}{fourth}",
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    conn.handle_bytes(all.as_bytes());
    for (i, want) in expected.iter().enumerate() {
        let events = drain(&mut conn);
        assert_eq!(
            describe_all(&events),
            [
                format!("REQ GET /{} HTTP/1.1 Empty", i + 1),
                "END".to_string()
            ]
        );
        assert!(!conn.should_close(), "before response {}", i + 1);
        let mut out = BytesMut::new();
        conn.send_response(
            &ResponseHead::new(StatusCode::OK),
            BodyLength::Known(0),
            &mut out,
        )
        .unwrap();
        conn.send_end(None, &mut out).unwrap();
        assert_eq!(connection_lines(&out), *want, "response {}", i + 1);
        assert_eq!(conn.should_close(), i == 2, "after response {}", i + 1);
    }
    assert_eq!(drain(&mut conn), []);
    assert_eq!(&conn.read_buffer()[..], fourth.as_bytes());
}

#[test]
fn keep_alive_hints_alone() {
    let mut only_max = ConnConfig::default();
    only_max.max_requests = Some(10);
    let (wire, close) = serve_one(
        only_max,
        &request("HTTP/1.1", &[]),
        200,
        BodyLength::Known(5),
    );
    assert_eq!(
        connection_lines(wire.as_bytes()),
        [CL5, KEEP, "keep-alive: max=9"]
    );
    assert!(!close);
    let mut only_timeout = ConnConfig::default();
    only_timeout.advertise_timeout = Some(30);
    let (wire, close) = serve_one(
        only_timeout.clone(),
        &request("HTTP/1.0", &["keep-alive"]),
        200,
        BodyLength::Known(5),
    );
    assert_eq!(
        connection_lines(wire.as_bytes()),
        [CL5, KEEP, "keep-alive: timeout=30"]
    );
    assert!(!close);
    // No hints on a closing response.
    let (wire, close) = serve_one(
        only_timeout,
        &request("HTTP/1.1", &["close"]),
        200,
        BodyLength::Known(5),
    );
    assert_eq!(connection_lines(wire.as_bytes()), [CL5, CLOSE]);
    assert!(close);
}

#[test]
fn max_requests_of_one_closes_the_first() {
    let mut config = ConnConfig::default();
    config.max_requests = Some(1);
    config.advertise_timeout = Some(5);
    let (wire, close) = serve_one(config, &request("HTTP/1.1", &[]), 200, BodyLength::Known(5));
    assert_eq!(connection_lines(wire.as_bytes()), [CL5, CLOSE]);
    assert!(close);
}

#[test]
fn pipelined_request_after_close_is_never_surfaced() {
    for max_in_flight in [1, 8] {
        let mut conn = Conn::new(Role::Server, {
            let mut c = ConnConfig::default();
            c.max_in_flight = max_in_flight;
            c
        });
        let after = "GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        conn.handle_bytes(
            format!("GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n{after}").as_bytes(),
        );
        assert_eq!(
            describe_all(&drain(&mut conn)),
            ["REQ GET /a HTTP/1.1 Empty", "END"]
        );
        assert!(!conn.wants_read());
        let mut out = BytesMut::new();
        conn.send_response(
            &ResponseHead::new(StatusCode::OK),
            BodyLength::Known(0),
            &mut out,
        )
        .unwrap();
        conn.send_end(None, &mut out).unwrap();
        assert_eq!(connection_lines(&out), ["content-length: 0", CLOSE]);
        assert!(conn.should_close());
        conn.handle_eof();
        assert_eq!(drain(&mut conn), []);
        assert_eq!(&conn.read_buffer()[..], after.as_bytes());
        // Nothing more may be written.
        assert!(
            conn.send_response(
                &ResponseHead::new(StatusCode::OK),
                BodyLength::Known(0),
                &mut out
            )
            .is_err()
        );
    }
}

#[test]
fn disable_keep_alive_when_idle_closes_now() {
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    assert!(conn.is_idle());
    assert!(!conn.should_close());
    conn.disable_keep_alive();
    assert!(conn.should_close());
    assert!(!conn.wants_read());
    conn.handle_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(drain(&mut conn), []);

    // Idle again after one exchange.
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    drain(&mut conn);
    let mut out = BytesMut::new();
    conn.send_response(
        &ResponseHead::new(StatusCode::OK),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    assert!(conn.is_idle());
    assert!(!conn.should_close());
    conn.disable_keep_alive();
    assert!(conn.should_close());
}

#[test]
fn disable_keep_alive_mid_exchange() {
    // Request read, not answered: the answer announces the close.
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    drain(&mut conn);
    conn.disable_keep_alive();
    assert!(!conn.should_close(), "the request still needs its answer");
    let mut out = BytesMut::new();
    conn.send_response(
        &ResponseHead::new(StatusCode::OK),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    assert_eq!(connection_lines(&out), ["content-length: 0", CLOSE]);
    assert!(conn.should_close());

    // Response head already out: it cannot be changed, but the connection
    // still ends after it.
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    drain(&mut conn);
    let mut out = BytesMut::new();
    conn.send_response(
        &ResponseHead::new(StatusCode::OK),
        BodyLength::Known(2),
        &mut out,
    )
    .unwrap();
    conn.disable_keep_alive();
    assert_eq!(connection_lines(&out), ["content-length: 2"]);
    conn.send_body(Bytes::from_static(b"ok")).unwrap();
    conn.send_end(None, &mut out).unwrap();
    assert!(conn.should_close());
}

#[test]
fn head_response_announces_length_and_drops_the_body() {
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(b"HEAD /big HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        describe_all(&drain(&mut conn)),
        ["REQ HEAD /big HTTP/1.1 Empty", "END"]
    );
    let mut out = BytesMut::new();
    conn.send_response(
        &ResponseHead::new(StatusCode::OK),
        BodyLength::Known(10),
        &mut out,
    )
    .unwrap();
    assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n");
    let body = conn.send_body(Bytes::from_static(b"0123456789")).unwrap();
    assert_eq!(collect(body), b"");
    conn.send_end(None, &mut out).unwrap();
    assert_eq!(
        out.len(),
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".len()
    );
    assert!(!conn.should_close());

    // Unknown length: no framing field at all, still persistent.
    let (wire, close) = serve_one(
        ConnConfig::default(),
        "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        200,
        BodyLength::Unknown,
    );
    assert_eq!(wire, "HTTP/1.1 200 OK\r\n\r\n");
    assert!(!close);
}

#[test]
fn bodiless_statuses_get_no_framing_fields() {
    for (status, length) in [
        (204, BodyLength::Known(0)),
        (204, BodyLength::Unknown),
        (304, BodyLength::Known(10)),
        (304, BodyLength::Unknown),
    ] {
        let (wire, close) = serve_one(
            ConnConfig::default(),
            &request("HTTP/1.1", &[]),
            status,
            length,
        );
        let reason = StatusCode::from_u16(status)
            .unwrap()
            .canonical_reason()
            .unwrap();
        assert_eq!(
            wire,
            format!("HTTP/1.1 {status} {reason}\r\n\r\n"),
            "{status} {length:?}"
        );
        assert!(!close, "{status} {length:?}");
    }
}

#[test]
fn server_truncated_request_body() {
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    conn.handle_eof();
    let (events, err) = drain_to_error(&mut conn);
    assert_eq!(
        describe_all(&events),
        ["REQ POST / HTTP/1.1 Length(10)", "DATA abc"]
    );
    assert_eq!(
        err.kind(),
        &ErrorKind::Truncated {
            expected: Some(10),
            received: 3
        }
    );
    assert!(err.is_truncated());
    assert_eq!(err.status_hint(), None);
    // The peer may only have half-closed: the request can still get an
    // answer, after which the connection ends.
    assert!(!conn.should_close());
    assert_eq!(conn.unanswered(), 1);
    let mut out = BytesMut::new();
    conn.send_response(
        &ResponseHead::new(StatusCode::BAD_REQUEST),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    assert!(conn.should_close());
    assert_eq!(conn.poll_event(), Ok(None));
}

#[test]
fn server_eof_between_requests_is_clean() {
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    drain(&mut conn);
    let mut out = BytesMut::new();
    conn.send_response(
        &ResponseHead::new(StatusCode::OK),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    conn.handle_eof();
    assert_eq!(drain(&mut conn), [Event::Eof]);
    assert!(conn.should_close());

    // EOF inside a head is not clean.
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(b"GET / HTTP/1.1\r\nHo");
    conn.handle_eof();
    let (events, err) = drain_to_error(&mut conn);
    assert_eq!(events, []);
    assert_eq!(err.kind(), &ErrorKind::IncompleteHead);
}

// ================================================================= client

fn get(target: &str, version: Version, headers: &[(&str, &str)]) -> RequestHead {
    let mut h = RequestHead::new(Method::GET, target.parse().unwrap(), version);
    h.headers = header_map(headers);
    h
}

/// A client that sent `n` GETs.
fn client_with(n: usize) -> Conn {
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    let mut out = BytesMut::new();
    for i in 0..n {
        conn.send_request(
            &get(&format!("/{i}"), Version::HTTP_11, &[]),
            BodyLength::Known(0),
            &mut out,
        )
        .unwrap();
        conn.send_end(None, &mut out).unwrap();
    }
    conn
}

#[test]
fn client_decision_table() {
    // (response, needs EOF to end, persistent)
    let table: &[(&str, bool, bool)] = &[
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            false,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: x-foo\r\nConnection: CLOSE\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
            false,
        ),
        // TE with CL: framed by chunked, but never reused (RFC 9112 §6.3).
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
            false,
        ),
        // Close-delimited always ends the connection (R5.4).
        ("HTTP/1.1 200 OK\r\n\r\nok", true, false),
        (
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\nok",
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
            true,
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            false,
            true,
        ),
        (
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 2\r\n\r\nok",
            false,
            true,
        ),
        (
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nok",
            true,
            false,
        ),
        // Chunked in 1.0 is doubtful framing: never reused.
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
            false,
        ),
    ];
    for (response, eof, persistent) in table {
        let mut conn = client_with(1);
        assert!(!conn.can_pipeline(), "{response:?}: nothing seen yet");
        assert!(conn.can_send_request());
        conn.handle_bytes(response.as_bytes());
        if *eof {
            conn.handle_eof();
        }
        let events = drain(&mut conn);
        assert_eq!(
            events[1..],
            [Event::Data(Bytes::from_static(b"ok")), Event::End(None)],
            "{response:?}"
        );
        assert_eq!(conn.can_send_request(), *persistent, "{response:?}");
        assert_eq!(conn.should_close(), !*persistent, "{response:?}");
        assert_eq!(conn.can_pipeline(), *persistent, "{response:?}");
        assert_eq!(conn.unanswered(), 0, "{response:?}");
        if *persistent {
            // The connection really carries another exchange.
            let mut out = BytesMut::new();
            conn.send_request(
                &get("/next", Version::HTTP_11, &[]),
                BodyLength::Known(0),
                &mut out,
            )
            .unwrap();
            conn.send_end(None, &mut out).unwrap();
            // An HTTP/1.0 server is asked for keep-alive on every request (R5.1).
            let want: &[u8] = if response.starts_with("HTTP/1.0") {
                b"GET /next HTTP/1.1\r\nconnection: keep-alive\r\n\r\n"
            } else {
                b"GET /next HTTP/1.1\r\n\r\n"
            };
            assert_eq!(&out[..], want);
            conn.handle_bytes(b"HTTP/1.1 204 No Content\r\n\r\n");
            assert_eq!(
                describe_all(&drain(&mut conn)),
                ["RES 204 HTTP/1.1 Empty", "END"]
            );
        }
    }
}

#[test]
fn client_close_request_ends_the_connection() {
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    let mut out = BytesMut::new();
    conn.send_request(
        &get("/", Version::HTTP_11, &[("connection", "close")]),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    assert_eq!(&out[..], b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n");
    assert!(!conn.can_send_request());
    conn.handle_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    drain(&mut conn);
    assert!(conn.should_close());
    assert!(!conn.can_pipeline());
}

#[test]
fn client_http10_request_asks_for_keep_alive_and_persists() {
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    let mut out = BytesMut::new();
    conn.send_request(
        &get("/", Version::HTTP_10, &[]),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    assert_eq!(
        &out[..],
        b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"
    );
    conn.handle_bytes(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(
        describe_all(&drain(&mut conn)),
        ["RES 200 HTTP/1.0 Length(1)", "DATA x", "END"]
    );
    assert!(conn.can_send_request());
    assert!(conn.can_pipeline());
    assert!(!conn.should_close());
}

#[test]
fn can_pipeline_only_after_a_persistent_response() {
    let mut conn = client_with(1);
    assert!(!conn.can_pipeline());
    conn.handle_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
    // The head alone shows persistence.
    drain(&mut conn);
    assert!(conn.can_pipeline());
    conn.handle_bytes(b"ok");
    drain(&mut conn);
    assert!(conn.can_pipeline());
    // A later `close` withdraws it.
    let mut out = BytesMut::new();
    conn.send_request(
        &get("/2", Version::HTTP_11, &[]),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    conn.handle_bytes(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    drain(&mut conn);
    assert!(!conn.can_pipeline());
    assert!(conn.should_close());
}

#[test]
fn unanswered_counts_pipelined_requests_when_the_server_closes() {
    // The first answer says close: two requests are left to resend (R7.3).
    let mut conn = client_with(3);
    assert_eq!(conn.unanswered(), 3);
    conn.handle_bytes(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(
        describe_all(&drain(&mut conn)),
        ["RES 200 HTTP/1.1 Length(1)", "DATA x", "END"]
    );
    assert_eq!(conn.unanswered(), 2);
    assert!(conn.should_close());
    assert!(!conn.can_send_request());
    conn.handle_eof();
    assert_eq!(drain(&mut conn), []);
    assert_eq!(conn.unanswered(), 2);

    // The server just goes away after one persistent answer.
    let mut conn = client_with(3);
    conn.handle_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    drain(&mut conn);
    assert_eq!(conn.unanswered(), 2);
    conn.handle_eof();
    let (events, err) = drain_to_error(&mut conn);
    assert_eq!(events, []);
    assert_eq!(err.kind(), &ErrorKind::ClosedBeforeResponse);
    assert_eq!(conn.unanswered(), 2);
    assert!(conn.should_close());
    assert!(!conn.can_send_request());
}

#[test]
fn truncated_response_bodies_report_exact_numbers() {
    let cases: &[(&str, ErrorKind, &[&str])] = &[
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345",
            ErrorKind::Truncated {
                expected: Some(10),
                received: 5,
            },
            &["RES 200 HTTP/1.1 Length(10)", "DATA 12345"],
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            ErrorKind::Truncated {
                expected: Some(10),
                received: 0,
            },
            &["RES 200 HTTP/1.1 Length(10)"],
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab",
            ErrorKind::Truncated {
                expected: None,
                received: 7,
            },
            &["RES 200 HTTP/1.1 Chunked", "DATA helloab"],
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n",
            ErrorKind::Truncated {
                expected: None,
                received: 5,
            },
            &["RES 200 HTTP/1.1 Chunked", "DATA hello"],
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Le",
            ErrorKind::IncompleteHead,
            &[],
        ),
        ("", ErrorKind::ClosedBeforeResponse, &[]),
    ];
    for (response, kind, before) in cases {
        let mut conn = client_with(1);
        conn.handle_bytes(response.as_bytes());
        conn.handle_eof();
        let (events, err) = drain_to_error(&mut conn);
        assert_eq!(describe_all(&events), *before, "{response:?}");
        assert_eq!(err.kind(), kind, "{response:?}");
        assert_eq!(err.side(), Side::Remote);
        assert!(err.is_truncated(), "{response:?}");
        assert_eq!(err.status_hint(), None);
        assert_eq!(conn.unanswered(), 1, "{response:?}");
        assert!(conn.should_close());
        assert!(!conn.can_send_request());
        assert_eq!(conn.poll_event(), Ok(None));
    }
}

#[test]
fn response_without_request_is_an_error() {
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    conn.handle_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let (_, err) = drain_to_error(&mut conn);
    assert_eq!(err.kind(), &ErrorKind::UnexpectedResponse);
}

// ================================================ client ↔ server in memory

struct Exchange {
    method: Method,
    target: &'static str,
    req_headers: &'static [(&'static str, &'static str)],
    req_body: &'static [&'static str],
    req_length: BodyLength,
    req_trailers: Option<HeaderMap>,
    status: u16,
    res_body: &'static [&'static str],
    res_length: BodyLength,
    res_trailers: Option<HeaderMap>,
    /// What each side sees.
    server_sees: &'static [&'static str],
    client_sees: &'static [&'static str],
}

fn exchanges() -> Vec<Exchange> {
    vec![
        Exchange {
            method: Method::GET,
            target: "/a?x=1",
            req_headers: &[("host", "example"), ("x-req", "1")],
            req_body: &[],
            req_length: BodyLength::Known(0),
            req_trailers: None,
            status: 200,
            res_body: &["alpha"],
            res_length: BodyLength::Known(5),
            res_trailers: None,
            server_sees: &["REQ GET /a?x=1 HTTP/1.1 Empty", "END"],
            client_sees: &["RES 200 HTTP/1.1 Length(5)", "DATA alpha", "END"],
        },
        Exchange {
            method: Method::POST,
            target: "/b",
            req_headers: &[("host", "example"), ("content-type", "text/plain")],
            req_body: &["hello ", "world"],
            req_length: BodyLength::Known(11),
            req_trailers: None,
            status: 201,
            res_body: &["wor", "", "ld"],
            res_length: BodyLength::Unknown,
            res_trailers: Some(header_map(&[("x-sum", "2")])),
            server_sees: &["REQ POST /b HTTP/1.1 Length(11)", "DATA hello world", "END"],
            client_sees: &["RES 201 HTTP/1.1 Chunked", "DATA world", "END [x-sum=2]"],
        },
        Exchange {
            method: Method::POST,
            target: "/c",
            req_headers: &[("host", "example")],
            req_body: &["chunk-1", "", "chunk-2"],
            req_length: BodyLength::Unknown,
            req_trailers: Some(header_map(&[("x-checksum", "abc")])),
            status: 200,
            res_body: &["done"],
            res_length: BodyLength::Known(4),
            res_trailers: None,
            server_sees: &[
                "REQ POST /c HTTP/1.1 Chunked",
                "DATA chunk-1chunk-2",
                "END [x-checksum=abc]",
            ],
            client_sees: &["RES 200 HTTP/1.1 Length(4)", "DATA done", "END"],
        },
        Exchange {
            method: Method::HEAD,
            target: "/d",
            req_headers: &[("host", "example")],
            req_body: &[],
            req_length: BodyLength::Known(0),
            req_trailers: None,
            status: 200,
            res_body: &["never sent"],
            res_length: BodyLength::Known(100),
            res_trailers: None,
            server_sees: &["REQ HEAD /d HTTP/1.1 Empty", "END"],
            client_sees: &["RES 200 HTTP/1.1 Empty", "END"],
        },
        Exchange {
            method: Method::GET,
            target: "/e",
            req_headers: &[("host", "example"), ("connection", "close")],
            req_body: &[],
            req_length: BodyLength::Known(0),
            req_trailers: None,
            status: 200,
            res_body: &["bye"],
            res_length: BodyLength::Known(3),
            res_trailers: None,
            server_sees: &["REQ GET /e HTTP/1.1 Empty", "END"],
            client_sees: &["RES 200 HTTP/1.1 Length(3)", "DATA bye", "END"],
        },
    ]
}

fn write_request(client: &mut Conn, x: &Exchange, wire: &mut BytesMut) {
    let mut head = RequestHead::new(
        x.method.clone(),
        x.target.parse().unwrap(),
        Version::HTTP_11,
    );
    head.headers = header_map(x.req_headers);
    client.send_request(&head, x.req_length, wire).unwrap();
    for piece in x.req_body {
        wire.extend_from_slice(&collect(
            client
                .send_body(Bytes::from_static(piece.as_bytes()))
                .unwrap(),
        ));
    }
    client.send_end(x.req_trailers.as_ref(), wire).unwrap();
}

fn write_response(server: &mut Conn, x: &Exchange, wire: &mut BytesMut) {
    let mut head = ResponseHead::new(StatusCode::from_u16(x.status).unwrap());
    head.headers = header_map(&[("server", "keepwire-test")]);
    server.send_response(&head, x.res_length, wire).unwrap();
    for piece in x.res_body {
        wire.extend_from_slice(&collect(
            server
                .send_body(Bytes::from_static(piece.as_bytes()))
                .unwrap(),
        ));
    }
    server.send_end(x.res_trailers.as_ref(), wire).unwrap();
}

fn check_request_event(events: &[Event], x: &Exchange) {
    assert_eq!(
        describe_all(events),
        x.server_sees,
        "{} {}",
        x.method,
        x.target
    );
    let Event::Request { head, .. } = &events[0] else {
        panic!("{events:?}");
    };
    for (name, value) in x.req_headers {
        if *name != "connection" {
            assert_eq!(head.headers[*name], *value, "{name}");
        }
    }
}

fn check_response_event(events: &[Event], x: &Exchange) {
    assert_eq!(
        describe_all(events),
        x.client_sees,
        "{} {}",
        x.method,
        x.target
    );
    let Event::Response { head, .. } = &events[0] else {
        panic!("{events:?}");
    };
    assert_eq!(head.headers["server"], "keepwire-test");
}

#[test]
fn client_server_pair_one_at_a_time() {
    let mut client = Conn::new(Role::Client, ConnConfig::default());
    let mut server = Conn::new(Role::Server, ConnConfig::default());
    let all = exchanges();
    for (i, x) in all.iter().enumerate() {
        let mut to_server = BytesMut::new();
        write_request(&mut client, x, &mut to_server);
        server.handle_bytes(&to_server);
        check_request_event(&drain(&mut server), x);

        let mut to_client = BytesMut::new();
        write_response(&mut server, x, &mut to_client);
        client.handle_bytes(&to_client);
        check_response_event(&drain(&mut client), x);

        let last = i + 1 == all.len();
        assert_eq!(server.should_close(), last, "server after {}", x.target);
        assert_eq!(client.should_close(), last, "client after {}", x.target);
        assert_eq!(client.can_send_request(), !last);
        assert_eq!(client.unanswered(), 0);
    }
    assert!(server.read_buffer().is_empty());
    assert!(client.read_buffer().is_empty());
}

#[test]
fn client_server_pair_pipelined() {
    // Idempotent requests only (R7.4), after a first persistent answer
    // (R7.1); the server reads one ahead at most and answers in order.
    let mut client = Conn::new(Role::Client, ConnConfig::default());
    let mut server = Conn::new(Role::Server, ConnConfig::default());
    let all = exchanges();
    let first = &all[0];
    let mut wire = BytesMut::new();
    write_request(&mut client, first, &mut wire);
    server.handle_bytes(&wire);
    check_request_event(&drain(&mut server), first);
    let mut back = BytesMut::new();
    write_response(&mut server, first, &mut back);
    client.handle_bytes(&back);
    check_response_event(&drain(&mut client), first);
    assert!(client.can_pipeline());

    // HEAD /d, GET /a again, GET /e (close): all written before any answer.
    let burst = [&all[3], &all[0], &all[4]];
    let mut wire = BytesMut::new();
    for x in burst {
        assert!(client.can_pipeline());
        write_request(&mut client, x, &mut wire);
    }
    assert_eq!(client.unanswered(), 3);
    server.handle_bytes(&wire);
    let mut back = BytesMut::new();
    for x in burst {
        check_request_event(&drain(&mut server), x);
        write_response(&mut server, x, &mut back);
    }
    assert!(server.should_close());
    client.handle_bytes(&back);
    let events = drain(&mut client);
    let want: Vec<&str> = burst
        .iter()
        .flat_map(|x| x.client_sees.iter().copied())
        .collect();
    assert_eq!(describe_all(&events), want);
    assert_eq!(client.unanswered(), 0);
    assert!(client.should_close());
}

#[test]
fn informational_then_final_through_the_pair() {
    let mut client = Conn::new(Role::Client, ConnConfig::default());
    let mut server = Conn::new(Role::Server, ConnConfig::default());
    let mut head = RequestHead::new(Method::PUT, "/up".parse().unwrap(), Version::HTTP_11);
    head.headers = header_map(&[("host", "a"), ("expect", "100-continue")]);
    let mut wire = BytesMut::new();
    client
        .send_request(&head, BodyLength::Known(3), &mut wire)
        .unwrap();
    server.handle_bytes(&wire);
    assert_eq!(
        describe_all(&drain(&mut server)),
        ["REQ PUT /up HTTP/1.1 Length(3)"]
    );
    assert!(server.expects_continue());
    let mut back = BytesMut::new();
    server.send_continue(&mut back);
    assert!(!server.expects_continue());
    assert_eq!(&back[..], b"HTTP/1.1 100 Continue\r\n\r\n");
    client.handle_bytes(&back);
    assert_eq!(
        describe_all(&drain(&mut client)),
        ["RES 100 HTTP/1.1 Empty"]
    );

    let mut wire = BytesMut::new();
    wire.extend_from_slice(&collect(
        client.send_body(Bytes::from_static(b"abc")).unwrap(),
    ));
    client.send_end(None, &mut wire).unwrap();
    server.handle_bytes(&wire);
    assert_eq!(describe_all(&drain(&mut server)), ["DATA abc", "END"]);
    let mut back = BytesMut::new();
    server
        .send_response(
            &ResponseHead::new(StatusCode::NO_CONTENT),
            BodyLength::Known(0),
            &mut back,
        )
        .unwrap();
    server.send_end(None, &mut back).unwrap();
    client.handle_bytes(&back);
    assert_eq!(
        describe_all(&drain(&mut client)),
        ["RES 204 HTTP/1.1 Empty", "END"]
    );
    assert!(client.can_send_request());
    assert!(!server.should_close());
}

// ============================================================ tunnels (R9)

/// Reads one upgrade or CONNECT request (plus tunnel bytes after it) and
/// answers with `status`.
fn upgrade_exchange(
    request: &str,
    status: u16,
) -> (Conn, Result<(), keepwire_proto::Error>, String) {
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(request.as_bytes());
    conn.handle_bytes(b"\x16\x03\x01 opaque");
    let events = drain(&mut conn);
    assert_eq!(events.len(), 2, "{request:?}: {events:?}");
    assert_eq!(events[1], Event::End(None));
    assert!(!conn.wants_read(), "{request:?}: waits for the answer");
    let mut out = BytesMut::new();
    let r = conn.send_response(
        &ResponseHead::new(StatusCode::from_u16(status).unwrap()),
        BodyLength::Known(0),
        &mut out,
    );
    (conn, r, String::from_utf8(out.to_vec()).unwrap())
}

#[test]
fn tunnels_open_whatever_the_persistence_of_the_request() {
    for (request, status) in [
        (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            200,
        ),
        // 1.0 (not persistent by default) and `Connection: close` used to
        // leave the connection unable to accept the tunnel (InvalidState).
        ("CONNECT example.com:443 HTTP/1.0\r\n\r\n", 200),
        (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
            200,
        ),
        (
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            101,
        ),
        (
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\nUpgrade: websocket\r\n\r\n",
            101,
        ),
    ] {
        let (mut conn, r, wire) = upgrade_exchange(request, status);
        assert_eq!(r, Ok(()), "{request:?}");
        let reason = StatusCode::from_u16(status)
            .unwrap()
            .canonical_reason()
            .unwrap();
        assert_eq!(
            wire,
            format!("HTTP/1.1 {status} {reason}\r\n\r\n"),
            "{request:?}"
        );
        assert!(conn.is_upgraded(), "{request:?}");
        assert_eq!(conn.poll_event(), Ok(None));
        assert_eq!(&conn.take_read_buffer()[..], b"\x16\x03\x01 opaque");
    }
}

#[test]
fn declined_upgrade_goes_on_as_http_unless_it_said_close() {
    // Declined without close: the next request is read.
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(
        describe_all(&drain(&mut conn)),
        ["REQ GET /ws HTTP/1.1 Empty", "END"]
    );
    let mut out = BytesMut::new();
    conn.send_response(
        &ResponseHead::new(StatusCode::OK),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    assert!(!conn.is_upgraded());
    assert!(!conn.should_close());
    assert_eq!(
        describe_all(&drain(&mut conn)),
        ["REQ GET /next HTTP/1.1 Empty", "END"]
    );

    // Declined with close: nothing more is read.
    let mut conn = Conn::new(Role::Server, ConnConfig::default());
    conn.handle_bytes(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    drain(&mut conn);
    let mut out = BytesMut::new();
    conn.send_response(
        &ResponseHead::new(StatusCode::OK),
        BodyLength::Known(0),
        &mut out,
    )
    .unwrap();
    conn.send_end(None, &mut out).unwrap();
    assert_eq!(connection_lines(&out), ["content-length: 0", CLOSE]);
    assert!(conn.should_close());
    assert_eq!(drain(&mut conn), []);
    assert_eq!(
        &conn.read_buffer()[..],
        b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    );

    // A refused CONNECT from a 1.0 client closes too.
    let (mut conn, r, wire) = upgrade_exchange("CONNECT example.com:443 HTTP/1.0\r\n\r\n", 403);
    assert_eq!(r, Ok(()));
    assert_eq!(
        connection_lines(wire.as_bytes()),
        ["content-length: 0", CLOSE]
    );
    conn.send_end(None, &mut BytesMut::new()).unwrap();
    assert!(!conn.is_upgraded());
    assert!(conn.should_close());
}
