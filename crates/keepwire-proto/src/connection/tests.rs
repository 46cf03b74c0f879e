//! The persistence decision tables, one per role. Each role's answer comes
//! from one place (the role's helper below reads it from [`Conn`] or the
//! skim), and every one of them is [`exchange_persists`] underneath.

use bytes::{Bytes, BytesMut};
use http::header::CONNECTION;
use http::{HeaderValue, Method, StatusCode, Version};

use super::*;
use crate::skim_response;

fn says(version: Version, tokens: &str) -> Announced {
    let mut headers = HeaderMap::new();
    if !tokens.is_empty() {
        headers.insert(CONNECTION, HeaderValue::from_str(tokens).unwrap());
    }
    Announced::of(version, &headers)
}

#[test]
fn exchange_persists_table() {
    use Version as V;
    let none = ExchangeFacts::default();
    let req = |v, t| ExchangeFacts {
        request: Some(says(v, t)),
        ..none
    };
    let resp = |v, t| ExchangeFacts {
        response: Some(says(v, t)),
        ..none
    };
    let table: &[(&str, ExchangeFacts, bool)] = &[
        ("nothing known", none, true),
        ("1.1 request", req(V::HTTP_11, ""), true),
        ("1.1 request, close", req(V::HTTP_11, "close"), false),
        (
            "1.1 request, keep-alive",
            req(V::HTTP_11, "keep-alive"),
            true,
        ),
        ("1.0 request", req(V::HTTP_10, ""), false),
        (
            "1.0 request, keep-alive",
            req(V::HTTP_10, "Keep-Alive"),
            true,
        ),
        (
            "1.0 request, both",
            req(V::HTTP_10, "keep-alive, close"),
            false,
        ),
        ("1.1 response", resp(V::HTTP_11, ""), true),
        ("1.1 response, close", resp(V::HTTP_11, "close"), false),
        ("1.0 response", resp(V::HTTP_10, ""), false),
        (
            "1.0 response, keep-alive",
            resp(V::HTTP_10, "keep-alive"),
            true,
        ),
        (
            "both ask, one closes",
            ExchangeFacts {
                response: Some(says(V::HTTP_11, "close")),
                ..req(V::HTTP_10, "keep-alive")
            },
            false,
        ),
        (
            "close-delimited or doubtful framing",
            ExchangeFacts {
                unframed: true,
                ..none
            },
            false,
        ),
        (
            "request body unread",
            ExchangeFacts {
                request_body_unread: true,
                ..none
            },
            false,
        ),
        (
            "a limit reached",
            ExchangeFacts {
                last_allowed: true,
                ..none
            },
            false,
        ),
        (
            "tunnel",
            ExchangeFacts {
                tunnel: true,
                ..none
            },
            false,
        ),
    ];
    for (name, facts, want) in table {
        assert_eq!(exchange_persists(facts), *want, "{name}");
    }
}

// ================================================================ server

/// The server's answer for one exchange: reads `request`, answers `status`
/// with `length`, and returns whether the connection carries another HTTP
/// message (neither closing nor a tunnel). `flags`: `proxy` (the proxy's
/// client hop, R6.2), `max1` (max_requests 1), `retire` (max age), `unread`
/// (answer before reading the body), `whole` (the response is whole, so
/// the body stays unread), `close` (the handler's `Connection: close`).
/// Checks that the head announces what was decided.
fn server(request: &str, status: u16, length: BodyLength, flags: &str) -> bool {
    let config = ConnConfig {
        proxy_connection: flags.contains("proxy"),
        max_requests: flags.contains("max1").then_some(1),
        ..ConnConfig::default()
    };
    let mut conn = Conn::new(Role::Server, config);
    conn.handle_bytes(request.as_bytes());
    let unread = flags.contains("unread");
    loop {
        match conn.poll_event().unwrap() {
            Some(Event::Request { .. }) if unread => break,
            Some(Event::End(_)) | None => break,
            Some(_) => {}
        }
    }
    if flags.contains("retire") {
        conn.retire();
    }
    if flags.contains("whole") {
        conn.leave_request_body_unread();
    }
    let mut head = ResponseHead::new(StatusCode::from_u16(status).unwrap());
    if flags.contains("close") {
        head.headers
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let mut out = BytesMut::new();
    conn.send_response(&head, length, &mut out).unwrap();
    let announced_close = String::from_utf8_lossy(&out).contains("connection: close");
    if !conn.is_upgraded() {
        // Bodiless answers take no bytes; the framing is not under test.
        conn.send_body(Bytes::from_static(b"hello")).ok();
        conn.send_end(None, &mut out).unwrap();
    }
    let persists = !conn.should_close() && !conn.is_upgraded();
    // A streamed answer may still see the body finish, so an unread body
    // is announced only when it cannot (R5.3); it closes all the same.
    if !(unread && !flags.contains("whole") && !request.contains("100-continue")) {
        assert_eq!(
            announced_close,
            !persists && !conn.is_upgraded(),
            "{request:?} {flags}"
        );
    }
    persists
}

const GET11: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
const GET10: &str = "GET / HTTP/1.0\r\n\r\n";
const GET10_KA: &str = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
const POST_UNSENT: &str = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
const POST_CONTINUE: &str =
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n";
const UPGRADE: &str =
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
const K5: BodyLength = BodyLength::Known(5);
const UNKNOWN: BodyLength = BodyLength::Unknown;

#[test]
fn server_persistence_table() {
    let table: &[(&str, u16, BodyLength, &str, bool)] = &[
        (GET11, 200, K5, "", true),
        (GET11, 200, UNKNOWN, "", true),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            200,
            K5,
            "",
            false,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            200,
            K5,
            "",
            true,
        ),
        (GET11, 200, K5, "close", false),
        (GET10, 200, K5, "", false),
        (GET10_KA, 200, K5, "", true),
        (
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            200,
            K5,
            "",
            false,
        ),
        // Unknown length to HTTP/1.0: close-delimited (R5.4) ...
        (GET10_KA, 200, UNKNOWN, "", false),
        // ... unless there is no body to delimit.
        (
            "HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            200,
            UNKNOWN,
            "",
            true,
        ),
        (GET10_KA, 204, UNKNOWN, "", true),
        (GET10_KA, 304, UNKNOWN, "", true),
        // Limits (R5.6).
        (GET11, 200, K5, "max1", false),
        (GET11, 200, K5, "retire", false),
        // The request body left unread (R5.4, RFC 9110 §10.1.1).
        (POST_UNSENT, 413, K5, "unread whole", false),
        (POST_UNSENT, 200, K5, "unread", false),
        (POST_CONTINUE, 417, K5, "unread", false),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok",
            200,
            K5,
            "whole",
            true,
        ),
        // Upgrade: a tunnel carries no further HTTP message; declined, the
        // connection goes on (R9.1).
        (UPGRADE, 101, UNKNOWN, "", false),
        (UPGRADE, 200, K5, "", true),
        (
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            200,
            UNKNOWN,
            "",
            false,
        ),
        (
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            403,
            K5,
            "",
            true,
        ),
    ];
    for (request, status, length, flags, want) in table {
        let got = server(request, *status, *length, flags);
        assert_eq!(got, *want, "{request:?} {status} {length:?} {flags}");
    }
}

// ================================================================ client

/// The client's answer: sends `request` (HTTP/1.1 GET unless `method`
/// differs, with `connection` tokens, and `upgrade` when asked), reads
/// `response`, and returns whether the pool may reuse the connection
/// ([`Conn::is_reusable`]).
fn client(method: Method, connection: &str, response: &str) -> bool {
    let mut head = RequestHead::new(method, "/".parse().unwrap(), Version::HTTP_11);
    if !connection.is_empty() {
        head.headers
            .insert(CONNECTION, HeaderValue::from_str(connection).unwrap());
    }
    if connection.contains("upgrade") {
        head.headers
            .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    let mut out = BytesMut::new();
    conn.send_request(&head, BodyLength::Known(0), &mut out)
        .unwrap();
    conn.send_end(None, &mut out).unwrap();
    conn.handle_bytes(response.as_bytes());
    conn.handle_eof_if_close_delimited(response);
    while let Some(e) = conn.poll_event().unwrap() {
        if matches!(e, Event::End(_)) || conn.is_upgraded() {
            break;
        }
    }
    conn.is_reusable()
}

impl Conn {
    /// Test helper: a response without framing fields ends at EOF.
    fn handle_eof_if_close_delimited(&mut self, response: &str) {
        let head = response
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        let framed = head.contains("content-length") || head.contains("transfer-encoding");
        let bodiless = [" 101 ", " 204 ", " 304 "].iter().any(|s| head.contains(s));
        if !framed && !bodiless {
            self.handle_eof();
        }
    }
}

const OK11: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn client_persistence_table() {
    let get = || Method::GET;
    let table: &[(Method, &str, &str, bool)] = &[
        (get(), "", OK11, true),
        (get(), "close", OK11, false),
        (
            get(),
            "",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        (
            get(),
            "",
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        (
            get(),
            "",
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        (
            get(),
            "",
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        // Keep-Alive: max=N is N more requests after the response that
        // carries it (R5.2; Apache and keepwire's server count so).
        (
            get(),
            "",
            "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=0\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        (
            get(),
            "",
            "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=1\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        // Framing (R5.4).
        (
            get(),
            "",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            true,
        ),
        (get(), "", "HTTP/1.1 200 OK\r\n\r\nok", false),
        (
            get(),
            "",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        // No body to delimit: HEAD, 204, 304.
        (
            Method::HEAD,
            "",
            "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            true,
        ),
        (get(), "", "HTTP/1.1 204 No Content\r\n\r\n", true),
        (
            get(),
            "",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            true,
        ),
        // Upgrade (R9.1): accepted, a tunnel; declined, HTTP goes on.
        (
            get(),
            "upgrade",
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            false,
        ),
        (get(), "upgrade", OK11, true),
    ];
    for (method, connection, response, want) in table {
        let got = client(method.clone(), connection, response);
        assert_eq!(got, *want, "{method} {connection:?} {response:?}");
    }
}

#[test]
fn client_keeps_the_servers_hints() {
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    let head = RequestHead::new(Method::GET, "/".parse().unwrap(), Version::HTTP_11);
    let mut out = BytesMut::new();
    for max in [3, 1] {
        conn.send_request(&head, BodyLength::Known(0), &mut out)
            .unwrap();
        conn.send_end(None, &mut out).unwrap();
        let response = format!(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=7, max={max}\r\nContent-Length: 0\r\n\r\n"
        );
        conn.handle_bytes(response.as_bytes());
        while conn.poll_event().unwrap().is_some() {}
    }
    assert_eq!(conn.keep_alive_timeout(), Some(Duration::from_secs(7)));
    // max=1: one more request after this response, and it asks a 1.0
    // server for keep-alive (R5.1).
    assert!(conn.is_reusable());
    out.clear();
    conn.send_request(&head, BodyLength::Known(0), &mut out)
        .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("connection: keep-alive"));
    conn.send_end(None, &mut out).unwrap();
    conn.handle_bytes(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    while conn.poll_event().unwrap().is_some() {}
    assert!(!conn.is_reusable(), "Keep-Alive: max used up");
}

// ================================================================= proxy

#[test]
fn proxy_persistence_table() {
    // The client hop is a server that reads Proxy-Connection (R6.2) and
    // keeps a 1.0 client only on keep-alive it received itself (R6.4).
    let client_hop: &[(&str, bool)] = &[
        (
            "GET http://o/ HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n",
            true,
        ),
        ("GET http://o/ HTTP/1.0\r\n\r\n", false),
        (
            "GET http://o/ HTTP/1.1\r\nHost: o\r\nProxy-Connection: close\r\n\r\n",
            false,
        ),
        ("GET http://o/ HTTP/1.1\r\nHost: o\r\n\r\n", true),
        (
            "GET http://o/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
    ];
    for (request, want) in client_hop {
        assert_eq!(server(request, 200, K5, "proxy"), *want, "{request:?}");
    }
    // Without the proxy setting, Proxy-Connection means nothing.
    assert!(!server(client_hop[0].0, 200, K5, ""));
    // The upstream hop is a client: the origin's answer decides.
    let upstream: &[(&str, bool)] = &[
        (OK11, true),
        ("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        ("HTTP/1.1 200 OK\r\n\r\nok", false),
    ];
    for (response, want) in upstream {
        assert_eq!(client(Method::GET, "", response), *want, "{response:?}");
    }
}

// ======================================================== load generator

#[test]
fn load_generator_persistence_table() {
    let table: &[(Method, &str, bool)] = &[
        (Method::GET, OK11, true),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
            false,
        ),
        (
            Method::GET,
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
            false,
        ),
        (
            Method::GET,
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
            true,
        ),
        (Method::GET, "HTTP/1.1 200 OK\r\n\r\n", false),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            false,
        ),
        (
            Method::HEAD,
            "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            true,
        ),
        (Method::GET, "HTTP/1.1 204 No Content\r\n\r\n", true),
        (Method::GET, "HTTP/1.1 304 Not Modified\r\n\r\n", true),
        (
            Method::GET,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            false,
        ),
        (Method::CONNECT, "HTTP/1.1 200 OK\r\n\r\n", false),
    ];
    let limits = crate::Limits::default();
    for (method, response, want) in table {
        let skim = skim_response(response.as_bytes(), method, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(skim.persistent, *want, "{method} {response:?}");
    }
}

#[test]
fn client_early_response_table() {
    // A final answer while the request body is still going out: only a
    // success whose server keeps the connection reads the rest (R8.4).
    let table: &[(&str, bool)] = &[
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", false),
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
            true,
        ),
        (
            "HTTP/1.1 413 Content Too Large\r\nContent-Length: 2\r\n\r\n",
            true,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", true),
        ("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", true),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
            false,
        ),
    ];
    for (response, stops) in table {
        let mut conn = Conn::new(Role::Client, ConnConfig::default());
        let head = RequestHead::new(Method::POST, "/".parse().unwrap(), Version::HTTP_11);
        let mut out = BytesMut::new();
        conn.send_request(&head, BodyLength::Known(10), &mut out)
            .unwrap();
        conn.handle_bytes(response.as_bytes());
        assert!(matches!(
            conn.poll_event().unwrap(),
            Some(Event::Response { .. })
        ));
        assert_eq!(conn.early_response_stops_request(), *stops, "{response:?}");
    }
}
