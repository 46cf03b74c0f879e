//! Shared by the fuzz targets: drive a `Conn` over arbitrary bytes, fed
//! whole or in pieces, and record what it did.
//!
//! Invariants checked on every run:
//! - no panic, and no loop that stops making progress (every pump is
//!   bounded by the input size);
//! - every error is the peer's (`Side::Remote`), and a server can always
//!   answer it (`send_error`) and then closes;
//! - how the bytes were split into reads changes nothing: same events
//!   (adjacent `Data` coalesced), same error kind, same bytes written
//!   ([`assert_same`] lists the two documented exceptions).

#![allow(dead_code)]

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use keepwire_proto::{
    BodyLength, Conn, ConnConfig, EncodedBuf, Error, ErrorKind, Event, Limits, RequestHead,
    ResponseHead, Role, Side,
};

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Events with adjacent `Data` joined.
    pub events: Vec<Event>,
    /// The error that ended reading, if any.
    pub error: Option<ErrorKind>,
    /// Everything the connection wrote (answers, error answer, requests).
    pub written: Vec<u8>,
}

#[path = "../../crates/keepwire-proto/tests/common/coalesce.rs"]
mod coalesce;
pub use coalesce::coalesce;

fn collect(mut b: EncodedBuf, out: &mut BytesMut) {
    while b.has_remaining() {
        let c = b.chunk();
        let n = c.len();
        out.extend_from_slice(c);
        b.advance(n);
    }
}

/// Limits small enough for short inputs to reach every bound.
pub fn small_limits() -> Limits {
    let mut l = Limits::default();
    l.max_head_bytes = 512;
    l.max_headers = 8;
    l.max_line_bytes = 128;
    l.max_trailer_bytes = 64;
    l.max_chunk_line_bytes = 32;
    l.max_body_bytes = Some(256);
    l
}

/// A connection configuration chosen by one input byte.
pub fn config(selector: u8) -> ConnConfig {
    let mut c = ConnConfig::default();
    c.limits = if selector & 1 == 0 {
        Limits::default()
    } else {
        small_limits()
    };
    c.preserve_header_case = selector & 2 != 0;
    c.max_in_flight = 1;
    c.advertise_timeout = (selector & 4 != 0).then_some(5);
    c.max_requests = (selector & 8 != 0).then_some(u64::from(selector >> 4) + 1);
    c
}

/// Polls until the connection wants input; `on_end` runs after each `End`.
fn pump(
    conn: &mut Conn,
    events: &mut Vec<Event>,
    budget: usize,
    mut on_end: impl FnMut(&mut Conn),
) -> Option<Error> {
    for _ in 0..budget {
        match conn.poll_event() {
            Ok(Some(ev)) => {
                let end = matches!(ev, Event::End(_));
                events.push(ev);
                if end {
                    on_end(conn);
                }
            }
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
    panic!("no progress after {budget} polls");
}

/// Every poll either consumes input or moves the state machine on; no input
/// byte can be worth more than a few events.
fn budget(len: usize) -> usize {
    4 * len + 64
}

/// Server: answers the oldest request with `status`, body `ok` (each
/// request gets `200` as soon as it was read completely).
fn answer(conn: &mut Conn, out: &mut BytesMut, status: StatusCode) {
    let head = ResponseHead::new(status);
    conn.send_response(&head, BodyLength::Known(2), out)
        .expect("answering a request that was read");
    if conn.is_upgraded() {
        // A 2xx to CONNECT opened a tunnel: no HTTP body follows.
        return;
    }
    let body = conn
        .send_body(Bytes::from_static(b"ok"))
        .expect("body of a Known(2) answer");
    collect(body, out);
    conn.send_end(None, out).expect("end of a complete answer");
}

/// A server configuration chosen by two input bytes: [`config`] from the
/// first; from the second, the pipelining depth (`max_in_flight` 1–4, bits
/// 0–1) and whether `Proxy-Connection` is read as `Connection` (bit 2).
pub fn server_config(selector: u8, extra: u8) -> ConnConfig {
    let mut c = config(selector);
    c.max_in_flight = 1 + usize::from(extra & 3);
    c.proxy_connection = extra & 4 != 0;
    c
}

/// Polls until the server wants input, answering (`200`, body `ok`) every
/// request read completely whenever reading pauses: with `max_in_flight`
/// above 1, up to that many requests are read ahead of their answers.
fn pump_server(
    conn: &mut Conn,
    events: &mut Vec<Event>,
    out: &mut BytesMut,
    budget: usize,
) -> Option<Error> {
    let mut ended = 0usize;
    for _ in 0..budget {
        if let Some(e) = pump(conn, events, budget, |_| ended += 1) {
            answer_ended(conn, out, &mut ended);
            return Some(e);
        }
        if ended == 0 {
            return None;
        }
        answer_ended(conn, out, &mut ended);
    }
    panic!("no progress after {budget} rounds");
}

/// Answers, oldest first, the requests that were read completely.
fn answer_ended(conn: &mut Conn, out: &mut BytesMut, ended: &mut usize) {
    while *ended > 0 {
        *ended -= 1;
        answer(conn, out, StatusCode::OK);
    }
}

/// Feeds `data` to a server in pieces of `step` bytes (then EOF).
pub fn run_server(data: &[u8], step: usize, config: ConnConfig) -> Run {
    let mut conn = Conn::new(Role::Server, config);
    let mut out = BytesMut::new();
    let mut events = Vec::new();
    let mut error = None;
    let budget = budget(data.len());
    for piece in data.chunks(step.max(1)) {
        conn.handle_bytes(piece);
        error = pump_server(&mut conn, &mut events, &mut out, budget);
        if error.is_some() {
            break;
        }
    }
    if error.is_none() {
        conn.handle_eof();
        error = pump_server(&mut conn, &mut events, &mut out, budget);
    }
    if let Some(e) = &error {
        assert_eq!(e.side(), Side::Remote, "{e:?}");
        match e.status_hint() {
            Some(status) => {
                conn.send_error(status, &mut out)
                    .unwrap_or_else(|l| panic!("cannot answer {e:?}: {l:?}"));
                assert!(out.ends_with(b"\n"));
            }
            None => {
                assert!(e.is_truncated(), "no status for {e:?}");
                // The peer only half-closed, perhaps: a request whose body
                // was cut short may still be answered (not with a tunnel:
                // it failed), and then the connection ends.
                if conn.unanswered() > 0 {
                    assert!(!conn.should_close(), "{e:?}");
                    answer(&mut conn, &mut out, StatusCode::BAD_REQUEST);
                }
            }
        }
        assert!(conn.should_close(), "{e:?}");
        assert_eq!(conn.poll_event(), Ok(None), "reading goes on after {e:?}");
    }
    Run {
        events: coalesce(events),
        error: error.map(|e| e.kind().clone()),
        written: out.to_vec(),
    }
}

/// The requests a client sent before the response bytes arrive, chosen by
/// one input byte: 1–3 requests, each GET, HEAD, POST or a websocket
/// upgrade (after which nothing more can be sent).
pub fn requests(selector: u8) -> Vec<RequestHead> {
    let n = 1 + usize::from(selector >> 6) % 3;
    let mut out = Vec::new();
    for i in 0..n {
        let kind = (selector >> (2 * i)) & 3;
        let (method, upgrade) = match kind {
            0 => (Method::GET, false),
            1 => (Method::HEAD, false),
            2 => (Method::POST, false),
            _ => (Method::GET, true),
        };
        let mut head = RequestHead::new(method, "/".parse().unwrap(), Version::HTTP_11);
        if upgrade {
            head.headers
                .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
            head.headers
                .insert(http::header::UPGRADE, "websocket".parse().unwrap());
        }
        out.push(head);
        if upgrade {
            break;
        }
    }
    out
}

/// Client: sends `requests`, then feeds `data` in pieces of `step` bytes
/// (then EOF).
pub fn run_client(requests: &[RequestHead], data: &[u8], step: usize, config: ConnConfig) -> Run {
    let mut conn = Conn::new(Role::Client, config);
    let mut out = BytesMut::new();
    for head in requests {
        conn.send_request(head, BodyLength::Known(0), &mut out)
            .expect("send_request on a fresh pipeline");
        conn.send_end(None, &mut out).expect("send_end");
    }
    let sent = requests.len();
    let mut events = Vec::new();
    let mut error = None;
    let budget = budget(data.len());
    for piece in data.chunks(step.max(1)) {
        conn.handle_bytes(piece);
        error = pump(&mut conn, &mut events, budget, |_| {});
        if error.is_some() {
            break;
        }
    }
    if error.is_none() {
        conn.handle_eof();
        error = pump(&mut conn, &mut events, budget, |_| {});
    }
    if let Some(e) = &error {
        assert_eq!(e.side(), Side::Remote, "{e:?}");
        assert!(conn.should_close(), "{e:?}");
        assert!(!conn.can_send_request(), "{e:?}");
        assert_eq!(conn.poll_event(), Ok(None), "reading goes on after {e:?}");
    }
    // Every request is either answered (End, or a tunnel) or unanswered.
    let ends = events.iter().filter(|e| matches!(e, Event::End(_))).count();
    let tunnels = usize::from(conn.is_upgraded());
    assert_eq!(
        ends + tunnels + conn.unanswered(),
        sent,
        "ends {ends} tunnels {tunnels} unanswered {} sent {sent}",
        conn.unanswered()
    );
    Run {
        events: coalesce(events),
        error: error.map(|e| e.kind().clone()),
        written: out.to_vec(),
    }
}

/// Errors found while reading a head, before any event for it.
fn is_head_error(k: &ErrorKind) -> bool {
    matches!(
        k,
        ErrorKind::MalformedHead(_)
            | ErrorKind::MalformedTarget
            | ErrorKind::MalformedHeader
            | ErrorKind::UnsupportedVersion
            | ErrorKind::RequestLineTooLong { .. }
            | ErrorKind::HeaderLineTooLong { .. }
            | ErrorKind::HeadTooLarge { .. }
            | ErrorKind::TooManyHeaders { .. }
    )
}

fn without_data(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| !matches!(e, Event::Data(_)))
        .collect()
}

/// `a` and `b` came from the same bytes split differently: they must be
/// equal, with two exceptions that keepwire-proto documents rather than
/// prevents:
/// - a head that breaks a size limit *and* a syntax rule is refused either
///   way, but which rule is cited depends on which fault the bytes seen so
///   far show first (httparse does not say where its error is);
/// - a body over `max_body_bytes` is refused either way, but how much of it
///   was handed out as `Data` first depends on the pieces.
pub fn assert_same(a: &Run, b: &Run, what: &str) {
    if a == b {
        return;
    }
    match (&a.error, &b.error) {
        (Some(x), Some(y)) if is_head_error(x) && is_head_error(y) && a.events == b.events => {}
        (Some(ErrorKind::BodyTooLarge { .. }), Some(ErrorKind::BodyTooLarge { .. }))
            if without_data(&a.events) == without_data(&b.events) => {}
        _ => panic!("{what}:\n  {a:?}\n  {b:?}"),
    }
}
