//! Sans-IO HTTP/1.x for keepwire: bytes in, events out.
//!
//! # The contract
//! This crate owns the *meaning* of bytes on an HTTP/1.x connection and
//! nothing else. It never touches a socket, spawns a task or reads a clock:
//! the caller (keepwire's server, client pool and proxy, or a test) feeds it
//! bytes with [`Conn::handle_bytes`] (or reads straight into
//! [`Conn::read_buffer`]) and end-of-input with [`Conn::handle_eof`], then
//! drains [`Conn::poll_event`] until it returns `Ok(None)`. Outgoing messages
//! are encoded into a caller-owned [`bytes::BytesMut`] (heads, small frames)
//! or returned as [`EncodedBuf`]s that frame a payload without copying it,
//! ready for one vectored write (R2.3).
//!
//! Time belongs to the caller: idle, header and body timeouts are run by
//! the runtime, which asks this crate only *whether* the connection is idle,
//! mid-message or must close, and (a client) how long the server said it
//! keeps an idle connection. Facts only the runtime has come in as calls
//! (the connection's age reached, a response sent before the request body
//! was read); the decision is made here, for every role. That keeps every
//! connection rule (R3, R5, R7, R8, R10 of the repository's
//! `docs/CONNECTION-RULES.md`) testable in memory.
//!
//! # Layout
//! - [`head`]: request/response heads, parsed with `httparse` into `http`
//!   types, with the original header-name case kept when asked.
//! - [`framing`]: RFC 9112 §6.3, which body a message has.
//! - [`decode`], [`encode`]: body decoders and encoders per framing.
//! - [`host`]: whether a request's `Host` is acceptable (RFC 9112 §3.2).
//! - [`hop`]: `Connection` tokens, hop-by-hop stripping, `Keep-Alive`
//!   parameters, idempotency, `Expect` and `Upgrade`.
//! - [`connection`]: the state machine that decides persistence (for every
//!   role, through [`exchange_persists`]) and keeps pipelined messages in
//!   order.
//! - [`skim`]: a response head read without building a `HeaderMap`, for
//!   load generators; the same framing and persistence decisions.
//! - [`sse`]: Server-Sent Events (`text/event-stream`), as the WHATWG
//!   standard splits them.
//! - [`error`]: typed errors with a status hint.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod connection;
pub mod decode;
mod digits;
pub mod encode;
pub mod error;
pub mod framing;
pub mod head;
pub mod hop;
pub mod host;
pub mod skim;
pub mod sse;

pub use connection::{
    Announced, BodyLength, Conn, ConnConfig, Event, ExchangeFacts, Role, exchange_persists,
};
pub use decode::{Decoder, Frame};
pub use encode::{EncodedBuf, Encoder};
pub use error::{Error, ErrorKind, Side};
pub use framing::BodyKind;
pub use head::{HeaderCase, RequestHead, ResponseHead};
pub use hop::{ConnectionTokens, KeepAliveParams};
pub use skim::{ResponseSkim, skim_response};
pub use sse::{SseEvent, SseParser, SseTooLarge};

/// Bounds on what a peer can make us buffer (R10.2).
///
/// Defaults sit next to nginx's, which most clients already fit:
/// nginx reads a head into `client_header_buffer_size 1k` and then up to
/// `large_client_header_buffers 4 8k`, so a request line or header line over
/// 8 KiB fails (414 / 400) and a head tops out near 32 KiB. nginx sets no
/// header count; hyper allows 100. Outside this crate, start from
/// `Limits::default()` and set fields (more limits may come).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest head (start line + fields + blank line). Default 32 KiB,
    /// nginx's 4 × 8 KiB. Over it: 431.
    pub max_head_bytes: usize,
    /// Most header field lines. Default 100 (hyper), at most
    /// [`Limits::HARD_MAX_HEADERS`]. Over it: 431.
    pub max_headers: usize,
    /// Longest request line or header line. Default 8 KiB, nginx's
    /// `large_client_header_buffers` size. Over it: 414 for the request line,
    /// 431 for a header line.
    pub max_line_bytes: usize,
    /// Longest trailer section of a chunked body. Default 8 KiB (nginx
    /// discards trailers; hyper bounds them to its header limits). Each
    /// trailer line is also bounded by `max_line_bytes` and their count by
    /// `max_headers`, as header fields are.
    pub max_trailer_bytes: usize,
    /// Longest chunk-size line including extensions. Default 4 KiB; nginx
    /// bounds it by its buffer, hyper at 4 KiB of extensions.
    pub max_chunk_line_bytes: usize,
    /// Largest body this side accepts, if bounded. Default 1 MiB, nginx's
    /// `client_max_body_size`. Over it: 413.
    pub max_body_bytes: Option<u64>,
}

impl Limits {
    /// The header count no configuration can exceed (the parser's stack
    /// array has this many slots).
    pub const HARD_MAX_HEADERS: usize = 128;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 32 * 1024,
            max_headers: 100,
            max_line_bytes: 8 * 1024,
            max_trailer_bytes: 8 * 1024,
            max_chunk_line_bytes: 4 * 1024,
            max_body_bytes: Some(1024 * 1024),
        }
    }
}
