//! Shared drivers for the integration tests: feed bytes to a [`Conn`] in
//! chosen pieces, drain its events (answering requests when asked) and
//! describe the result in a form that can be compared exactly.

#![allow(dead_code)]

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, Version};
use keepwire_proto::{
    BodyLength, Conn, ConnConfig, EncodedBuf, Error, Event, RequestHead, ResponseHead, Role,
};

mod coalesce;
pub use coalesce::coalesce;

/// Upper bound on `poll_event` calls per pump: every call either consumes
/// input or changes state, so a real driver never needs more than a few per
/// input byte. Hitting it means the state machine stopped making progress.
const MAX_POLLS_PER_PUMP: usize = 100_000;

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Events, adjacent `Data` coalesced.
    pub events: Vec<Event>,
    /// The error that stopped reading, if any.
    pub error: Option<Error>,
    /// What was left in the read buffer at the end (empty after an error).
    pub rest: Vec<u8>,
    /// What the connection wrote (answers, for a server).
    pub written: Vec<u8>,
}

/// A compact, exact description of an event for hand-written expectations.
pub fn describe(e: &Event) -> String {
    match e {
        Event::Request { head, body, .. } => format!(
            "REQ {} {} {:?} {:?}",
            head.method, head.target, head.version, body
        ),
        Event::Response { head, body } => {
            format!("RES {} {:?} {:?}", head.status.as_u16(), head.version, body)
        }
        Event::Data(b) => format!("DATA {}", String::from_utf8_lossy(b)),
        Event::End(None) => "END".to_string(),
        Event::End(Some(t)) => {
            let fields: Vec<String> = t
                .iter()
                .map(|(n, v)| format!("{}={}", n, v.to_str().unwrap_or("?")))
                .collect();
            format!("END [{}]", fields.join(","))
        }
        Event::Eof => "EOF".to_string(),
    }
}

pub fn describe_all(events: &[Event]) -> Vec<String> {
    events.iter().map(describe).collect()
}

/// All bytes of an [`EncodedBuf`].
pub fn collect(mut b: EncodedBuf) -> Vec<u8> {
    let mut v = Vec::with_capacity(b.remaining());
    while b.has_remaining() {
        let c = b.chunk();
        let n = c.len();
        v.extend_from_slice(c);
        b.advance(n);
    }
    v
}

/// How a server driver treats requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Never answer: reading stops at `max_in_flight`.
    Never,
    /// Answer each request with `200`, `content-length: 0` as soon as its
    /// `End` is read, before polling further.
    OnEnd,
}

/// Drives one connection: feed pieces, pump events.
pub struct Driver {
    pub conn: Conn,
    pub answer: Answer,
    /// Everything the connection wrote.
    pub out: BytesMut,
    pub events: Vec<Event>,
    pub error: Option<Error>,
}

impl Driver {
    pub fn server(config: ConnConfig, answer: Answer) -> Self {
        Driver {
            conn: Conn::new(Role::Server, config),
            answer,
            out: BytesMut::new(),
            events: Vec::new(),
            error: None,
        }
    }

    /// A client that has already sent one bodiless request per method, so
    /// it knows what each response answers.
    pub fn client(config: ConnConfig, methods: &[Method]) -> Self {
        let mut conn = Conn::new(Role::Client, config);
        let mut out = BytesMut::new();
        for m in methods {
            let head = RequestHead::new(m.clone(), "/".parse().unwrap(), Version::HTTP_11);
            conn.send_request(&head, BodyLength::Known(0), &mut out)
                .expect("send_request");
            conn.send_end(None, &mut out).expect("send_end");
        }
        Driver {
            conn,
            answer: Answer::Never,
            out,
            events: Vec::new(),
            error: None,
        }
    }

    /// Appends `bytes` and drains events. After an error the bytes are
    /// still buffered (so what is left unread compares across splits) but
    /// nothing is polled.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.conn.handle_bytes(bytes);
        if self.error.is_none() {
            self.pump();
        }
    }

    /// Signals EOF and drains events.
    pub fn eof(&mut self) {
        if self.error.is_some() {
            return;
        }
        self.conn.handle_eof();
        self.pump();
    }

    /// Polls until the connection wants more input (or fails).
    pub fn pump(&mut self) {
        for _ in 0..MAX_POLLS_PER_PUMP {
            match self.conn.poll_event() {
                Ok(Some(ev)) => {
                    let is_end = matches!(ev, Event::End(_));
                    self.events.push(ev);
                    if is_end && self.answer == Answer::OnEnd && self.conn.role() == Role::Server {
                        let head = ResponseHead::new(StatusCode::OK);
                        self.conn
                            .send_response(&head, BodyLength::Known(0), &mut self.out)
                            .expect("send_response");
                        self.conn.send_end(None, &mut self.out).expect("send_end");
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
        panic!("no progress after {MAX_POLLS_PER_PUMP} polls");
    }

    /// The result. After an error, what is left unread is unspecified (a
    /// head that fails late has already been taken off the buffer, one that
    /// fails early has not), so `rest` is left empty then.
    pub fn outcome(mut self) -> Outcome {
        let rest = match self.error {
            None => self.conn.read_buffer().to_vec(),
            Some(_) => Vec::new(),
        };
        Outcome {
            events: coalesce(std::mem::take(&mut self.events)),
            error: self.error.take(),
            rest,
            written: self.out.to_vec(),
        }
    }
}

/// Splits `input` at the given cut points (any order, duplicates and
/// out-of-range values allowed: they are clamped, sorted and deduplicated).
pub fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| (*c).min(input.len())).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for c in cuts {
        out.push(&input[start..c]);
        start = c;
    }
    out.push(&input[start..]);
    out
}

/// Header map from `(name, value)` pairs, in order.
pub fn header_map(fields: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (n, v) in fields {
        m.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    m
}

/// The field lines of a serialized head (between the start line and the
/// blank line), as strings.
pub fn head_lines(wire: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(wire);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n").skip(1).map(str::to_string).collect()
}

/// The lines of a head that carry connection management or framing.
pub fn connection_lines(wire: &[u8]) -> Vec<String> {
    head_lines(wire)
        .into_iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("connection:")
                || l.starts_with("keep-alive:")
                || l.starts_with("transfer-encoding:")
                || l.starts_with("content-length:")
        })
        .collect()
}

pub fn bytes(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}
