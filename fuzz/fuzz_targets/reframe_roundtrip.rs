//! The proxy's re-framing, end to end through keepwire-proto: a client
//! `Conn` writes pipelined requests whose bodies are re-framed by the
//! encoder (chunked with trailers, or Content-Length), a server `Conn`
//! reads them back, answers each with a re-framed response, and the
//! client reads those back. Every message must arrive whole: same head
//! marker, same body bytes, same trailers (chunked only: a Content-Length
//! body has nowhere to put them), one `End` per message in order, nothing
//! left over, however the bytes are split into reads.
//!
//! Trailer names are `x-…` (a proxy forwards what a decoder produced;
//! framing fields in trailers are another target's business) and values
//! are what a decoder hands out: no CR, LF, NUL or other controls, no
//! leading or trailing whitespace.

#![no_main]

use arbitrary::Arbitrary;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use keepwire_proto::{
    BodyKind, BodyLength, Conn, ConnConfig, EncodedBuf, Event, Limits, RequestHead, ResponseHead,
    Role,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Msg {
    chunked: bool,
    pieces: Vec<Vec<u8>>,
    trailers: Vec<(u8, Vec<u8>)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    requests: Vec<Msg>,
    responses: Vec<Msg>,
    /// Read size for the server (0: whole) and the client.
    server_step: u8,
    client_step: u8,
}

/// What one message should read back as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    marker: usize,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
}

fn trailer_map(msg: &Msg) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in msg.trailers.iter().take(8) {
        let name = HeaderName::from_bytes(format!("x-t{}", name % 16).as_bytes()).unwrap();
        let value: Vec<u8> = value
            .iter()
            .copied()
            .filter(|&b| b == b'\t' || b == b' ' || (b > 0x20 && b != 0x7f))
            .collect();
        let value = value.trim_ascii();
        if let Ok(v) = HeaderValue::from_bytes(value) {
            map.append(name, v);
        }
    }
    map
}

fn collect(mut b: EncodedBuf, out: &mut BytesMut) {
    while b.has_remaining() {
        let n = b.chunk().len();
        out.extend_from_slice(b.chunk());
        b.advance(n);
    }
}

/// Writes the body of `msg` after a head was sent with `length`; returns
/// what the reader should see.
fn write_body(conn: &mut Conn, msg: &Msg, marker: usize, out: &mut BytesMut) -> Expect {
    let mut body = Vec::new();
    for p in msg.pieces.iter().take(16) {
        body.extend_from_slice(p);
        collect(conn.send_body(Bytes::copy_from_slice(p)).unwrap(), out);
    }
    let trailers = trailer_map(msg);
    conn.send_end(Some(&trailers), out).unwrap();
    Expect {
        marker,
        body,
        trailers: (msg.chunked && !trailers.is_empty()).then_some(trailers),
    }
}

fn length_of(msg: &Msg) -> BodyLength {
    if msg.chunked {
        BodyLength::Unknown
    } else {
        BodyLength::Known(msg.pieces.iter().take(16).map(|p| p.len() as u64).sum())
    }
}

fn marker_of(headers: &HeaderMap) -> usize {
    headers["x-msg"].to_str().unwrap().parse().unwrap()
}

/// Feeds `wire` to `conn` in pieces of `step` and collects one `Expect` per
/// message, checking the event order (head, data, end).
fn read_all(conn: &mut Conn, wire: &[u8], step: usize, n: usize) -> Vec<Expect> {
    let mut got: Vec<Expect> = Vec::new();
    let mut open = false;
    let mut pieces = wire.chunks(step.max(1));
    for _ in 0..4 * wire.len() + 64 {
        match conn.poll_event().unwrap() {
            Some(Event::Request { head, body, .. }) => {
                assert!(!open, "head inside a message");
                assert_ne!(body, BodyKind::CloseDelimited);
                open = true;
                got.push(Expect {
                    marker: marker_of(&head.headers),
                    body: Vec::new(),
                    trailers: None,
                });
            }
            Some(Event::Response { head, body }) => {
                assert!(!open, "head inside a message");
                assert_eq!(head.status, StatusCode::OK);
                assert_ne!(body, BodyKind::CloseDelimited);
                open = true;
                got.push(Expect {
                    marker: marker_of(&head.headers),
                    body: Vec::new(),
                    trailers: None,
                });
            }
            Some(Event::Data(b)) => {
                assert!(open, "data outside a message");
                got.last_mut().unwrap().body.extend_from_slice(&b);
            }
            Some(Event::End(t)) => {
                assert!(open, "end outside a message");
                open = false;
                got.last_mut().unwrap().trailers = t.filter(|t| !t.is_empty());
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => match pieces.next() {
                Some(p) => conn.handle_bytes(p),
                None => {
                    assert!(!open, "message not ended");
                    assert_eq!(got.len(), n);
                    return got;
                }
            },
        }
    }
    panic!("no progress");
}

fn config(n: usize) -> ConnConfig {
    let mut c = ConnConfig::default();
    c.limits = {
        let mut l = Limits::default();
        l.max_body_bytes = None;
        l
    };
    c.max_in_flight = n.max(1);
    c
}

fuzz_target!(|input: Input| {
    let requests = &input.requests[..input.requests.len().min(4)];
    if requests.is_empty() {
        return;
    }
    let n = requests.len();

    // Client → server.
    let mut client = Conn::new(Role::Client, config(1));
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for (i, msg) in requests.iter().enumerate() {
        let method = if i % 2 == 0 {
            Method::POST
        } else {
            Method::PUT
        };
        let mut head = RequestHead::new(method, "/r".parse().unwrap(), Version::HTTP_11);
        head.headers
            .insert(http::header::HOST, HeaderValue::from_static("fuzz.test"));
        head.headers.insert("x-msg", i.into());
        client
            .send_request(&head, length_of(msg), &mut wire)
            .unwrap();
        sent.push(write_body(&mut client, msg, i, &mut wire));
    }
    let mut server = Conn::new(Role::Server, config(n));
    let step = match input.server_step {
        0 => wire.len(),
        s => usize::from(s),
    };
    let read = read_all(&mut server, &wire, step, n);
    assert_eq!(read, sent, "requests");

    // Server → client: each request answered in order.
    let mut wire = BytesMut::new();
    let mut answered = Vec::new();
    let empty = Msg {
        chunked: false,
        pieces: Vec::new(),
        trailers: Vec::new(),
    };
    for i in 0..n {
        let msg = input.responses.get(i).unwrap_or(&empty);
        let mut head = ResponseHead::new(StatusCode::OK);
        head.headers.insert("x-msg", i.into());
        server
            .send_response(&head, length_of(msg), &mut wire)
            .unwrap();
        answered.push(write_body(&mut server, msg, i, &mut wire));
    }
    assert!(!server.should_close());
    let step = match input.client_step {
        0 => wire.len(),
        s => usize::from(s),
    };
    let read = read_all(&mut client, &wire, step, n);
    assert_eq!(read, answered, "responses");
    assert_eq!(client.unanswered(), 0);
    assert!(client.can_send_request());
});
