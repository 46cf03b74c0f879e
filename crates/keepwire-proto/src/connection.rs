//! The connection state machine: persistence and pipelining, one role at a
//! time.
//!
//! Rule 1 (borrowed from h11): everything that decides whether a connection
//! carries another message lives here, so the server, the client pool and
//! the proxy cannot disagree about it. Rule 2: this file never looks at a
//! clock or a socket; timeouts are the runtime's, which asks
//! [`Conn::is_idle`] and friends.
//!
//! # Model
//! A connection is a queue of *exchanges* (request + response). The reading
//! side and the writing side each walk the queue in order:
//!
//! - Server: reading parses request *n* while writing answers request *m ≤ n*.
//!   Reading stops `max_in_flight` requests ahead of writing (R7.2: responses
//!   go out in request order, so read-ahead is bounded, not free), and stops
//!   for good after a request that ends the connection (R5.3).
//! - Client: writing sends requests (pipelined when the runtime chooses,
//!   R7.1/R7.4); reading matches each response to the oldest unanswered
//!   request, which is the only way HTTP/1.x can (R7.2). Whatever is still
//!   queued when the connection ends is [`Conn::unanswered`] (R7.3).
//!
//! Persistence of an exchange is decided by one function,
//! [`exchange_persists`], from [`ExchangeFacts`]: what each head says
//! (version and `Connection` tokens, R5.1, R5.3), whether both bodies are
//! self-delimiting (R5.4), whether the request body was left unread, whether
//! a limit made it the last (R5.6) and whether it became a tunnel (R9). The
//! server, the client, both hops of a proxy and the load generator's
//! [`crate::skim_response`] all ask it. The server announces the answer in
//! the response (`Connection: close`, or `keep-alive` plus
//! `Keep-Alive: timeout, max`, R5.2); the client keeps the server's
//! `Keep-Alive` hints (the request budget here, the idle timeout for the
//! runtime's timer, [`Conn::keep_alive_timeout`]).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Method, StatusCode, Version};

use crate::Limits;
use crate::decode::{Decoder, Frame};
use crate::encode::{self, EncodedBuf, Encoder};
use crate::error::{Error, ErrorKind};
use crate::framing::BodyKind;
use crate::head::{self, RequestHead, ResponseHead};
use crate::hop::{ConnectionTokens, KEEP_ALIVE, KeepAliveParams};

mod persist;
mod present;
#[cfg(test)]
mod tests;

pub use persist::{Announced, ExchangeFacts, exchange_persists};
use persist::{asks_upgrade, switches};
use present::Present;

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We send requests and read responses.
    Client,
    /// We read requests and send responses.
    Server,
}

/// The length of a body about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Exactly this many bytes: sent with `Content-Length`.
    Known(u64),
    /// Not known up front: chunked to HTTP/1.1 peers; close-delimited
    /// responses to HTTP/1.0 clients (which then ends the connection, R5.4).
    Unknown,
}

/// What [`Conn::poll_event`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Server: a request head and how its body is framed.
    Request {
        /// The head.
        head: RequestHead,
        /// The body's framing ([`BodyKind::Empty`] still ends with
        /// [`Event::End`]).
        body: BodyKind,
        /// It asks to switch protocols (`Upgrade`) or is a CONNECT: whether
        /// the connection becomes a tunnel depends on the response (R9.1).
        upgrade: bool,
    },
    /// Client: a response head. Informational (1xx) heads are reported too
    /// and are followed by the final head of the same exchange.
    Response {
        /// The head.
        head: ResponseHead,
        /// The body's framing.
        body: BodyKind,
    },
    /// Body bytes of the current message.
    Data(Bytes),
    /// The current message ended, with chunked trailers if any.
    End(Option<HeaderMap>),
    /// The peer closed cleanly between messages.
    Eof,
}

/// One request and its response, as far as connection management cares.
#[derive(Debug, Clone)]
struct Exchange {
    method: Method,
    version: Version,
    /// What decides whether it is the connection's last, so far.
    facts: ExchangeFacts,
    /// Server: a `100 Continue` may still be owed.
    expect_continue: bool,
    /// The request asked to switch protocols or tunnel (R9.1, R9.3).
    upgrade: bool,
    /// Client: the final response is a success (2xx).
    answered_success: bool,
}

impl Exchange {
    /// This exchange is the connection's last.
    fn close(&self) -> bool {
        !exchange_persists(&self.facts)
    }
}

#[derive(Debug)]
enum Reading {
    /// Waiting for the next head.
    Head,
    /// Inside a body.
    Body(Decoder),
    /// Server: an upgrade/CONNECT request was read; whether more requests
    /// follow depends on the response.
    AwaitUpgrade,
    /// The connection is now a tunnel; bytes belong to the caller.
    Upgraded,
    /// No further message will be read.
    Closed,
}

#[derive(Debug)]
enum Writing {
    /// Ready for the next head.
    Head,
    /// Inside a body.
    Body(Encoder),
    /// Client: an upgrade request was sent; nothing more until its answer.
    AwaitUpgrade,
    /// The connection is now a tunnel.
    Upgraded,
    /// No further message will be written.
    Closed,
}

/// Connection options that are not size limits. Outside this crate, start
/// from `ConnConfig::default()` and set fields (more options may come).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnConfig {
    /// Bounds on what the peer can make us buffer.
    pub limits: Limits,
    /// Record the original header-name case (for proxies).
    pub preserve_header_case: bool,
    /// Server: requests read ahead of the response being written
    /// (pipelining depth). 1 = the next request is parsed only after the
    /// previous response was fully handed to the connection.
    pub max_in_flight: usize,
    /// Server: idle timeout to advertise in `Keep-Alive: timeout=` (seconds).
    pub advertise_timeout: Option<u64>,
    /// Server: requests served on one connection; the last response carries
    /// `Connection: close` (R5.6). Advertised as `Keep-Alive: max=`.
    pub max_requests: Option<u64>,
    /// Server: read `Proxy-Connection` as `Connection` for this hop (R6.2).
    /// Set by proxies, whose clients may send it instead.
    pub proxy_connection: bool,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            limits: Limits::default(),
            preserve_header_case: false,
            max_in_flight: 1,
            advertise_timeout: None,
            max_requests: None,
            proxy_connection: false,
        }
    }
}

/// One HTTP/1.x connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct Conn {
    role: Role,
    config: ConnConfig,
    /// Bytes received and not yet consumed as events.
    read_buf: BytesMut,
    reading: Reading,
    writing: Writing,
    /// Exchanges whose request was read (server) or sent (client) and whose
    /// response is not complete, oldest first.
    in_flight: VecDeque<Exchange>,
    /// The peer sent FIN.
    eof: bool,
    /// Server: requests whose heads were read; client: responses completed.
    messages: u64,
    /// Server: final response heads written (for `Keep-Alive: max=`).
    responses: u64,
    /// Client: a response already showed the connection persists (R7.1).
    confirmed_persistent: bool,
    /// Server: the client said this was its last request (`close`, or
    /// HTTP/1.0 without keep-alive), so it sends nothing more (R5.3).
    peer_announced_close: bool,
    /// Server: a limit (`max_requests`, or [`Conn::retire`]) made the
    /// latest request the last (R5.6).
    retired: bool,
    /// Server: the runtime will not read more of the request body before
    /// the next response ends ([`Conn::leave_request_body_unread`]).
    leaving_body_unread: bool,
    /// Client: what the server's `Keep-Alive` and version said (R5.1, R5.2).
    peer: PeerHints,
}

/// Client: what the server said about itself on this connection.
#[derive(Debug, Clone, Copy, Default)]
struct PeerHints {
    /// It answered HTTP/1.0: ask for keep-alive on every request (R5.1).
    http10: bool,
    /// `Keep-Alive: timeout=` in seconds (R5.2).
    timeout: Option<u64>,
    /// Requests it still takes, counting down from `Keep-Alive: max=`,
    /// which is read as including the response that carries it (R5.2:
    /// retire a connection before the server does).
    budget: Option<u64>,
}

impl Conn {
    /// A new connection in `role`.
    pub fn new(role: Role, config: ConnConfig) -> Self {
        Conn {
            role,
            config,
            read_buf: BytesMut::new(),
            reading: Reading::Head,
            writing: Writing::Head,
            in_flight: VecDeque::new(),
            eof: false,
            messages: 0,
            responses: 0,
            confirmed_persistent: false,
            peer_announced_close: false,
            retired: false,
            leaving_body_unread: false,
            peer: PeerHints::default(),
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    // ---- input ----

    /// Appends received bytes.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.read_buf.extend_from_slice(bytes);
    }

    /// The read buffer, for reading into without a copy. Bytes appended here
    /// are the same as [`Conn::handle_bytes`].
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// The peer closed its sending side.
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// Frees the read buffer's memory while the connection is idle (an idle
    /// keep-alive connection should cost next to nothing, R5.6). Returns the
    /// released read buffer (empty; without capacity when it was not
    /// released) so that the runtime can reuse its allocation elsewhere.
    pub fn release_buffers(&mut self) -> BytesMut {
        let released = if self.read_buf.is_empty() {
            std::mem::take(&mut self.read_buf)
        } else {
            BytesMut::new()
        };
        if self.in_flight.is_empty() {
            self.in_flight = VecDeque::new();
        }
        released
    }

    /// After an upgrade or CONNECT: the bytes that arrived after the head and
    /// belong to the tunnel.
    pub fn take_read_buffer(&mut self) -> BytesMut {
        std::mem::take(&mut self.read_buf)
    }

    // ---- queries ----

    /// Nothing in flight, nothing buffered: the idle (keep-alive) timeout
    /// applies.
    pub fn is_idle(&self) -> bool {
        matches!(self.reading, Reading::Head)
            && matches!(self.writing, Writing::Head)
            && self.in_flight.is_empty()
            && self.read_buf.is_empty()
    }

    /// Some bytes of a head have arrived but not all (the header timeout,
    /// slowloris guard, applies; R10.2).
    pub fn is_reading_head(&self) -> bool {
        matches!(self.reading, Reading::Head) && !self.read_buf.is_empty()
    }

    /// True when the runtime should read more bytes: the state machine is
    /// waiting for input rather than paused on the writing side.
    pub fn wants_read(&self) -> bool {
        if self.eof {
            return false;
        }
        match self.reading {
            Reading::Head => {
                self.role == Role::Client || self.in_flight.len() < self.config.max_in_flight
            }
            Reading::Body(_) => true,
            _ => false,
        }
    }

    /// The connection carries no further message: finish writing what was
    /// handed over, then close (gracefully, R8.5).
    pub fn should_close(&self) -> bool {
        match self.writing {
            Writing::Closed => true,
            Writing::Head => matches!(self.reading, Reading::Closed) && self.in_flight.is_empty(),
            _ => false,
        }
    }

    /// Server: the client announced its last request (R5.3): once it is
    /// answered and no input is left unread, a plain close cannot reset
    /// anything away, and the lingering drain (R8.5) can be skipped.
    pub fn peer_announced_close(&self) -> bool {
        self.peer_announced_close && self.read_buf.is_empty()
    }

    /// The connection switched protocols (101, or 2xx to CONNECT).
    pub fn is_upgraded(&self) -> bool {
        matches!(self.reading, Reading::Upgraded)
    }

    /// Client: requests sent whose responses did not (fully) arrive. When the
    /// connection fails these are the ones to resend or report (R7.3).
    pub fn unanswered(&self) -> usize {
        self.in_flight.len()
    }

    /// Client: a persistent response was seen, so pipelining is allowed
    /// (R7.1) and no `close` has been negotiated since.
    pub fn can_pipeline(&self) -> bool {
        self.confirmed_persistent && matches!(self.writing, Writing::Head)
    }

    /// Client: the connection can take another request now.
    pub fn can_send_request(&self) -> bool {
        self.role == Role::Client && matches!(self.writing, Writing::Head)
    }

    /// Client: every response is in and another request may be sent: the
    /// pool may keep the connection (R5.2, R5.3, R5.4).
    pub fn is_reusable(&self) -> bool {
        self.can_send_request() && self.in_flight.is_empty()
    }

    /// Client: how long the server said it keeps an idle connection
    /// (`Keep-Alive: timeout=`, R5.2). The runtime's idle timer retires the
    /// connection before then.
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        self.peer.timeout.map(Duration::from_secs)
    }

    /// Client: a final response head arrived while the request body is
    /// still being sent (an early answer): whether to stop sending. Only a
    /// success whose server keeps the connection reads the rest; after any
    /// other, more bytes would meet a close and reset the answer away (R8.4).
    pub fn early_response_stops_request(&self) -> bool {
        let Some(e) = self.in_flight.front() else {
            return true;
        };
        let server_side = ExchangeFacts {
            request: None,
            ..e.facts
        };
        !(e.answered_success && exchange_persists(&server_side))
    }

    /// Server: a limit ended keep-alive: `max_requests`, or the runtime's
    /// [`Conn::retire`] (R5.6).
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// Server: a `100 Continue` is owed to the request being answered.
    pub fn expects_continue(&self) -> bool {
        self.role == Role::Server
            && matches!(self.writing, Writing::Head)
            && self.in_flight.front().is_some_and(|e| e.expect_continue)
    }

    // ---- events ----

    /// The next event from the buffered input. `Ok(None)`: need more input
    /// (see [`Conn::wants_read`]) or paused until a response is written.
    ///
    /// After an error the reading side is closed; a server answers with
    /// [`Error::status_hint`] through [`Conn::send_error`].
    pub fn poll_event(&mut self) -> Result<Option<Event>, Error> {
        let in_body = matches!(self.reading, Reading::Body(_));
        let result = match self.role {
            Role::Server => self.poll_server(),
            Role::Client => self.poll_client(),
        };
        if result.is_err() {
            self.reading = Reading::Closed;
            match self.role {
                Role::Client => self.writing = Writing::Closed,
                // A bad body belongs to the newest request: its answer is
                // the last, and says so (R10.1).
                Role::Server if in_body => {
                    if let Some(e) = self.in_flight.back_mut() {
                        e.facts.request_body_unread = true;
                    }
                }
                Role::Server => {}
            }
        }
        result
    }

    #[inline(never)]
    fn poll_server(&mut self) -> Result<Option<Event>, Error> {
        match &mut self.reading {
            Reading::Head => {
                if self.in_flight.len() >= self.config.max_in_flight {
                    return Ok(None);
                }
                let limits = &self.config.limits;
                let mut present = Present::default();
                let Some(head) = head::parse_request_noting(
                    &mut self.read_buf,
                    limits,
                    self.config.preserve_header_case,
                    |name, value| present.note(name, value),
                )?
                else {
                    return self.eof_between_messages();
                };
                present.check_host(&head)?;
                let framing = present.request_framing(&head)?;
                if let (BodyKind::Length(n), Some(limit)) = (framing.body, limits.max_body_bytes)
                    && n > limit
                {
                    return Err(Error::remote(ErrorKind::BodyTooLarge { limit }));
                }
                self.messages += 1;
                let last = self.config.max_requests.is_some_and(|m| self.messages >= m);
                self.retired |= last;
                // Only this hop's own tokens count: a proxy keeps its
                // client's connection only if that client asked for it
                // (R6.4). They are never carried to the next hop
                // (`hop::strip_hop_by_hop`), so no 1.0 `keep-alive` we relay
                // reaches a hop it did not come from (R3.3).
                let tokens = present.tokens(&head.headers, self.config.proxy_connection);
                let request = Announced {
                    version: head.version,
                    tokens,
                };
                self.peer_announced_close |= !request.wants_persistence();
                let upgrade = present.asks_upgrade(&head, tokens);
                self.in_flight.push_back(Exchange {
                    method: head.method.clone(),
                    version: head.version,
                    facts: ExchangeFacts {
                        request: Some(request),
                        unframed: !framing.reusable,
                        last_allowed: last,
                        ..ExchangeFacts::default()
                    },
                    expect_continue: present.expects_continue(&head),
                    upgrade,
                    answered_success: false,
                });
                self.reading = Reading::Body(Decoder::new(framing.body, limits));
                Ok(Some(Event::Request {
                    head,
                    body: framing.body,
                    upgrade,
                }))
            }
            Reading::Body(_) => self.poll_body(),
            Reading::AwaitUpgrade | Reading::Upgraded | Reading::Closed => Ok(None),
        }
    }

    #[inline(never)]
    fn poll_client(&mut self) -> Result<Option<Event>, Error> {
        match &mut self.reading {
            Reading::Head => {
                let Some(exchange) = self.in_flight.front_mut() else {
                    if !self.read_buf.is_empty() {
                        return Err(Error::remote(ErrorKind::UnexpectedResponse));
                    }
                    return self.eof_between_messages();
                };
                let limits = &self.config.limits;
                let mut present = Present::default();
                let Some(head) = head::parse_response_noting(
                    &mut self.read_buf,
                    limits,
                    self.config.preserve_header_case,
                    |name, value| present.note(name, value),
                )?
                else {
                    if self.eof {
                        return Err(Error::remote(if self.read_buf.is_empty() {
                            ErrorKind::ClosedBeforeResponse
                        } else {
                            ErrorKind::IncompleteHead
                        }));
                    }
                    return Ok(None);
                };
                let status = head.status;
                // 1xx other than 101: the final response is still to come.
                if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                    return Ok(Some(Event::Response {
                        head,
                        body: BodyKind::Empty,
                    }));
                }
                if switches(&exchange.method, status) {
                    if !exchange.upgrade {
                        return Err(Error::remote(ErrorKind::UnexpectedResponse));
                    }
                    self.in_flight.pop_front();
                    self.reading = Reading::Upgraded;
                    self.writing = Writing::Upgraded;
                    return Ok(Some(Event::Response {
                        head,
                        body: BodyKind::Empty,
                    }));
                }
                let framing = present.response_framing(&exchange.method, &head)?;
                let announced = Announced {
                    version: head.version,
                    tokens: present.tokens(&head.headers, false),
                };
                exchange.facts =
                    exchange
                        .facts
                        .answered(&exchange.method, status, announced, framing);
                exchange.answered_success = status.is_success();
                let persistent = !exchange.close();
                let hints = present.keep_alive(&head.headers);
                self.peer.http10 = head.version == Version::HTTP_10;
                self.peer.timeout = hints.timeout.or(self.peer.timeout);
                // `max=N`: N more requests after this one (Apache counts so,
                // and so does our server); this response's end spends one.
                self.peer.budget = hints.max.map(|m| m.saturating_add(1)).or(self.peer.budget);
                if persistent {
                    self.confirmed_persistent = true;
                } else if matches!(self.writing, Writing::Head | Writing::AwaitUpgrade) {
                    self.writing = Writing::Closed;
                }
                if matches!(self.writing, Writing::AwaitUpgrade) {
                    // The upgrade was declined; the connection goes on as HTTP.
                    self.writing = Writing::Head;
                }
                self.reading = Reading::Body(Decoder::new(framing.body, limits));
                Ok(Some(Event::Response {
                    head,
                    body: framing.body,
                }))
            }
            Reading::Body(_) => self.poll_body(),
            Reading::AwaitUpgrade | Reading::Upgraded | Reading::Closed => Ok(None),
        }
    }

    /// No head is buffered: either wait, or report the peer's clean close.
    fn eof_between_messages(&mut self) -> Result<Option<Event>, Error> {
        if !self.eof {
            return Ok(None);
        }
        if !self.read_buf.is_empty() {
            return Err(Error::remote(ErrorKind::IncompleteHead));
        }
        self.reading = Reading::Closed;
        Ok(Some(Event::Eof))
    }

    fn poll_body(&mut self) -> Result<Option<Event>, Error> {
        let Reading::Body(decoder) = &mut self.reading else {
            return Ok(None);
        };
        let frame = match decoder.decode(&mut self.read_buf)? {
            Some(frame) => frame,
            None if self.eof => match decoder.finish()? {
                Some(frame) => frame,
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        match frame {
            Frame::Data(bytes) => Ok(Some(Event::Data(bytes))),
            Frame::End(trailers) => {
                self.body_read();
                Ok(Some(Event::End(trailers)))
            }
        }
    }

    /// A message's body was fully read: where does reading go next?
    fn body_read(&mut self) {
        self.reading = match self.role {
            Role::Server => match self.in_flight.back() {
                // Upgrade first: whether anything follows an upgrade or
                // CONNECT request depends on its answer (a tunnel, or
                // `send_response` applies `close` when it declines), also
                // for a 1.0 CONNECT or one that says `Connection: close`.
                Some(e) if e.upgrade => Reading::AwaitUpgrade,
                Some(e) if e.close() => Reading::Closed,
                // `None`: the response finished first; send_end decided.
                None => Reading::Closed,
                Some(_) => Reading::Head,
            },
            Role::Client => {
                self.messages += 1;
                if let Some(b) = &mut self.peer.budget {
                    *b = b.saturating_sub(1);
                }
                match self.in_flight.pop_front() {
                    Some(e) if e.close() => {
                        self.writing = Writing::Closed;
                        Reading::Closed
                    }
                    _ => {
                        if self.budget_spent() && matches!(self.writing, Writing::Head) {
                            // Responses to requests already sent are still
                            // read; no further request goes (R5.2).
                            self.writing = Writing::Closed;
                        }
                        Reading::Head
                    }
                }
            }
        };
    }

    // ---- output ----

    /// Server: writes `100 Continue` if the request being answered asked for
    /// it and it was not sent yet.
    pub fn send_continue(&mut self, out: &mut BytesMut) {
        if self.expects_continue()
            && let Some(e) = self.in_flight.front_mut()
        {
            e.expect_continue = false;
            out.put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }

    /// Server: writes the head of the response to the oldest unanswered
    /// request, adding the framing and connection fields (any the caller put
    /// in `head.headers` are replaced; a `Connection: close` there is
    /// honoured). Informational heads (1xx) may precede the final one.
    pub fn send_response(
        &mut self,
        head: &ResponseHead,
        length: BodyLength,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        if self.role != Role::Server || !matches!(self.writing, Writing::Head) {
            return Err(Error::local(ErrorKind::InvalidState));
        }
        // The request being answered is the newest and its body is still
        // arriving: if this response ends before it is read (the runtime
        // said so, or a `100 Continue` was never sent, so the client may
        // never send it), the next request's start cannot be found.
        let leaving = std::mem::take(&mut self.leaving_body_unread);
        let reading_body = matches!(&self.reading, Reading::Body(d) if !d.is_done());
        let newest = self.in_flight.len() == 1;
        let Some(exchange) = self.in_flight.front_mut() else {
            return Err(Error::local(ErrorKind::InvalidState));
        };
        let status = head.status;
        let tunnel = exchange.upgrade && switches(&exchange.method, status);
        if status.is_informational() && !tunnel {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::local(ErrorKind::InvalidState));
            }
            exchange.expect_continue = false;
            encode::status_line(status, head.reason.as_deref(), out);
            encode::fields(&head.headers, &head.header_case, is_framing_field, out);
            out.put_slice(b"\r\n");
            return Ok(());
        }
        if tunnel {
            if !matches!(self.reading, Reading::AwaitUpgrade) {
                return Err(Error::local(ErrorKind::InvalidState));
            }
            encode::status_line(status, head.reason.as_deref(), out);
            encode::fields(&head.headers, &head.header_case, |_| false, out);
            out.put_slice(b"\r\n");
            self.in_flight.pop_front();
            self.reading = Reading::Upgraded;
            self.writing = Writing::Upgraded;
            return Ok(());
        }
        if exchange.upgrade && matches!(self.reading, Reading::AwaitUpgrade) {
            // Upgrade declined: the connection continues as HTTP/1.x.
            exchange.upgrade = false;
            self.reading = if exchange.close() {
                Reading::Closed
            } else {
                Reading::Head
            };
        }

        // Framing (R5.4): bodiless statuses and HEAD send nothing; unknown
        // lengths are chunked for 1.1 and close-delimited for 1.0.
        let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let is_head = exchange.method == Method::HEAD;
        let mut close_delimited = false;
        let encoder = match (bodiless, length) {
            (true, _) => Encoder::discard(),
            (false, BodyLength::Known(n)) => {
                if is_head {
                    Encoder::discard()
                } else {
                    Encoder::length(n)
                }
            }
            (false, BodyLength::Unknown) if is_head => Encoder::discard(),
            (false, BodyLength::Unknown) if exchange.version == Version::HTTP_11 => {
                Encoder::chunked()
            }
            (false, BodyLength::Unknown) => {
                close_delimited = true;
                Encoder::close_delimited()
            }
        };
        let facts = &mut exchange.facts;
        // A `Connection: close` the handler put on its response is honoured.
        facts.response = Some(Announced {
            version: Version::HTTP_11,
            tokens: ConnectionTokens::of(&head.headers),
        });
        facts.unframed |= close_delimited;
        facts.request_body_unread |=
            newest && reading_body && (leaving || exchange.expect_continue);
        let close = exchange.close();
        let version = exchange.version;
        self.responses += 1;

        encode::status_line(status, head.reason.as_deref(), out);
        encode::fields(&head.headers, &head.header_case, is_framing_field, out);
        match length {
            BodyLength::Known(n) if !bodiless => encode::content_length_field(n, out),
            _ if encoder.is_chunked() => encode::field(b"transfer-encoding", b"chunked", out),
            _ => {}
        }
        self.connection_fields(close, version, out);
        out.put_slice(b"\r\n");
        self.writing = Writing::Body(encoder);
        Ok(())
    }

    /// Server: the connection fields that announce our decision (R5.1–R5.3).
    fn connection_fields(&self, close: bool, version: Version, out: &mut BytesMut) {
        if close {
            encode::field(b"connection", b"close", out);
            return;
        }
        let hint = KeepAliveParams {
            timeout: self.config.advertise_timeout,
            max: self
                .config
                .max_requests
                .map(|m| m.saturating_sub(self.responses)),
        };
        if hint.timeout.is_some() || hint.max.is_some() {
            encode::field(b"connection", b"keep-alive", out);
            out.put_slice(b"keep-alive: ");
            hint.write_value(out);
            out.put_slice(b"\r\n");
        } else if version == Version::HTTP_10 {
            encode::field(b"connection", b"keep-alive", out);
        }
    }

    /// Server: answers a request that could not be read (R10.1, R10.2) and
    /// ends the connection. Only valid once every earlier response was sent.
    pub fn send_error(&mut self, status: StatusCode, out: &mut BytesMut) -> Result<(), Error> {
        if self.role != Role::Server || !matches!(self.writing, Writing::Head) {
            return Err(Error::local(ErrorKind::InvalidState));
        }
        let reason = status.canonical_reason().unwrap_or("Error");
        encode::status_line(status, None, out);
        encode::content_length_field(reason.len() as u64 + 1, out);
        encode::field(b"content-type", b"text/plain", out);
        encode::field(b"connection", b"close", out);
        out.put_slice(b"\r\n");
        out.put_slice(reason.as_bytes());
        out.put_u8(b'\n');
        self.in_flight.clear();
        self.reading = Reading::Closed;
        self.writing = Writing::Closed;
        Ok(())
    }

    /// Client: writes a request head. `Connection: close` in `head.headers`
    /// makes it the last request (R5.3); an HTTP/1.0 request, or any request
    /// to a server that answered HTTP/1.0, asks for keep-alive otherwise
    /// (R5.1).
    pub fn send_request(
        &mut self,
        head: &RequestHead,
        length: BodyLength,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        if !self.can_send_request() {
            return Err(Error::local(ErrorKind::InvalidState));
        }
        let close = ConnectionTokens::of(&head.headers).close;
        let upgrade = asks_upgrade(head);
        let target = head
            .target
            .path_and_query()
            .filter(|_| head.target.scheme().is_none() && head.method != Method::CONNECT)
            .map(|p| p.as_str().to_owned());
        let target = target.unwrap_or_else(|| head.target.to_string());
        encode::request_line(&head.method, &target, head.version, out);
        encode::fields(
            &head.headers,
            &head.header_case,
            |n| is_framing_field(n) && !(upgrade && n == CONNECTION),
            out,
        );
        let encoder = match length {
            BodyLength::Known(n) => {
                let has_meaning = matches!(head.method, Method::POST | Method::PUT | Method::PATCH);
                if n > 0 || has_meaning {
                    encode::content_length_field(n, out);
                }
                Encoder::length(n)
            }
            BodyLength::Unknown => {
                encode::field(b"transfer-encoding", b"chunked", out);
                Encoder::chunked()
            }
        };
        if close {
            encode::field(b"connection", b"close", out);
        } else if upgrade && head.method != Method::CONNECT {
            // The caller's `Connection: upgrade` was kept above.
        } else if head.version == Version::HTTP_10 || self.peer.http10 {
            // An HTTP/1.0 server keeps the connection only when asked (R5.1).
            encode::field(b"connection", b"keep-alive", out);
        }
        out.put_slice(b"\r\n");
        // What we sent: `close`, or a wish to persist.
        let request = Announced {
            version: head.version,
            tokens: ConnectionTokens {
                close,
                keep_alive: !close,
                upgrade,
            },
        };
        self.in_flight.push_back(Exchange {
            method: head.method.clone(),
            version: head.version,
            facts: ExchangeFacts {
                request: Some(request),
                ..ExchangeFacts::default()
            },
            expect_continue: false,
            upgrade,
            answered_success: false,
        });
        self.writing = Writing::Body(encoder);
        Ok(())
    }

    /// Frames body bytes of the message being written.
    pub fn send_body(&mut self, data: Bytes) -> Result<EncodedBuf, Error> {
        match &mut self.writing {
            Writing::Body(encoder) => encoder.encode(data),
            _ => Err(Error::local(ErrorKind::InvalidState)),
        }
    }

    /// Ends the message being written (appending the chunked terminator and
    /// `trailers`, if chunked).
    pub fn send_end(
        &mut self,
        trailers: Option<&HeaderMap>,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        let Writing::Body(encoder) = &mut self.writing else {
            return Err(Error::local(ErrorKind::InvalidState));
        };
        encoder.end(trailers, out)?;
        match self.role {
            Role::Server => {
                // A streamed response may end before the request body was
                // read after all: then the next request's start cannot be
                // found either.
                let request_unread =
                    self.in_flight.len() == 1 && matches!(self.reading, Reading::Body(_));
                let close = self.in_flight.pop_front().map_or(request_unread, |mut e| {
                    e.facts.request_body_unread |= request_unread;
                    e.close()
                });
                if close {
                    // Close, lingering (R8.5).
                    self.writing = Writing::Closed;
                    self.reading = Reading::Closed;
                } else {
                    self.writing = Writing::Head;
                }
            }
            Role::Client => {
                let last = self.in_flight.back();
                self.writing = match last {
                    Some(e) if e.close() => Writing::Closed,
                    Some(e) if e.upgrade => Writing::AwaitUpgrade,
                    _ if matches!(self.reading, Reading::Closed) => Writing::Closed,
                    _ if self.budget_spent() => Writing::Closed,
                    _ => Writing::Head,
                };
            }
        }
        Ok(())
    }

    /// Server: stop keeping the connection alive (graceful shutdown): no new
    /// request is read; the newest request already read gets
    /// `Connection: close`, and an idle connection should close now.
    pub fn disable_keep_alive(&mut self) {
        if matches!(self.reading, Reading::Head) {
            self.reading = Reading::Closed;
        }
        let head_written = matches!(self.writing, Writing::Body(_));
        let n = self.in_flight.len();
        if let Some(e) = self.in_flight.back_mut()
            && !(n == 1 && head_written)
        {
            e.facts.last_allowed = true;
        }
    }

    /// Server: a limit the runtime keeps (the connection's maximum age,
    /// R5.6) was reached: as [`Conn::disable_keep_alive`], and
    /// [`Conn::is_retired`] says so.
    pub fn retire(&mut self) {
        self.retired = true;
        self.disable_keep_alive();
    }

    /// Server: the next response will end before the runtime reads more of
    /// the request body (the runtime has the response whole). If that body
    /// is still arriving, the connection closes after the response and the
    /// response says `Connection: close` (R5.3, R5.4).
    pub fn leave_request_body_unread(&mut self) {
        self.leaving_body_unread = true;
    }

    /// Client: the server's `Keep-Alive: max` is used up (R5.2).
    fn budget_spent(&self) -> bool {
        self.peer.budget == Some(0)
    }
}

/// Fields the connection writes itself.
fn is_framing_field(name: &HeaderName) -> bool {
    name == CONNECTION || name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == KEEP_ALIVE
}
