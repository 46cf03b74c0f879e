//! WebSocket (RFC 6455) on keepwire's own connections, server and client.
//!
//! A handler asks [`is_upgrade`] and [`accept`]s: keepwire's server answers
//! 101 (or 200 to an RFC 8441 extended CONNECT over HTTP/2) and hands the
//! connection over through [`crate::upgrade::OnUpgrade`]; the [`WebSocket`]
//! then lives on the [`crate::upgrade::Upgraded`] stream, which keeps the
//! connection's place under `max_connections` until it drops (R9.5: a
//! WebSocket is still a connection). A client [`connect`]s over a keepwire
//! [`crate::Client`] (`ws://`, `wss://`; HTTP/1.1 Upgrade, or RFC 8441
//! over HTTP/2 with [`Config::http2`]).
//!
//! Why the module exists: a connection that stays open for hours is where
//! the notes' "abnormal disconnect" problem lives, so the socket does what
//! the framing library leaves to its user: keep-alive pings with a
//! dead-peer timeout, an idle timeout, size caps that close with 1009,
//! invalid UTF-8 closed with 1007, protocol errors with 1002, a bounded
//! close handshake, and a lingering close after a failure so the peer gets
//! the close frame before the TCP connection goes (R9.2, R9.4, R9.5).
//!
//! # Why this crate
//! The framing is `tokio-tungstenite`/`tungstenite` 0.28, chosen over
//! `fastwebsockets` 0.10 after an echo micro-benchmark (one connection
//! over loopback, 32-byte text messages, release build; numbers and the
//! program in docs/BENCHMARKS.md, "WebSocket framing crate"). Neither is
//! faster everywhere: one message in flight, fastwebsockets was level in
//! one run and about 1.5 × ahead in another; 64 in flight, tungstenite was
//! 1.6–1.8 × ahead in both (it batches frames into one write,
//! fastwebsockets writes each). What decided it: tungstenite gives what
//! this module needs without more code, a cancel-safe `Stream`
//! (fastwebsockets' `read_frame` is not cancel-safe, and
//! [`WebSocket::recv`] must be `select!`-able), frame and message size
//! caps checked at the frame header, UTF-8 checks of text, automatic pong
//! and close replies. Neither gives permessage-deflate on tokio cheaply
//! (tungstenite 0.28 has none), so there is none here.

mod handshake;
mod pipe;
mod socket;

use std::time::Duration;

use bytes::Bytes;

pub use handshake::{Accepting, Handshake, accept, connect, is_upgrade};
pub use pipe::{Closed, pipe_lines};
pub use socket::{Receiver, Sender, WebSocket};

/// Settings of a WebSocket connection, either side.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted; a larger frame header fails the
    /// connection with close code 1009 before its payload is read.
    pub max_frame_size: usize,
    /// Largest message (fragments reassembled) accepted; beyond it, 1009.
    pub max_message_size: usize,
    /// Ping the peer when nothing came from it for this long (`None`: never).
    pub ping_interval: Option<Duration>,
    /// After a keep-alive ping, how long the peer has to send any frame
    /// before the connection is dropped as dead ([`Error::DeadPeer`]).
    pub dead_peer_timeout: Duration,
    /// No data message either way for this long: close with 1001
    /// ([`Error::IdleTimeout`]). `None`: no limit.
    pub idle_timeout: Option<Duration>,
    /// How long a close handshake (ours or the peer's) may take before the
    /// connection is dropped anyway.
    pub close_timeout: Duration,
    /// How long one send may wait on a peer that does not read.
    pub write_timeout: Duration,
    /// Subprotocols (`Sec-WebSocket-Protocol`): on the server, those it
    /// speaks, in order of preference; on the client, those it offers.
    pub protocols: Vec<String>,
    /// Client: open the WebSocket on a stream of an HTTP/2 connection with
    /// an extended CONNECT (RFC 8441) instead of an HTTP/1.1 Upgrade (for
    /// `ws://`, the client needs `http2_prior_knowledge`). The server takes
    /// both without being told.
    pub http2: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 1 << 20,
            max_message_size: 4 << 20,
            ping_interval: Some(Duration::from_secs(30)),
            dead_peer_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            close_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            protocols: Vec::new(),
            http2: false,
        }
    }
}

/// Which end of the connection this is (clients mask their frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that accepted the handshake.
    Server,
    /// The end that sent it.
    Client,
}

/// A WebSocket message. [`WebSocket::recv`] also yields the pings and
/// pongs it received (pings are answered already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping (at most 125 bytes).
    Ping(Bytes),
    /// A pong (at most 125 bytes).
    Pong(Bytes),
    /// A close frame, with its code and reason if it had any.
    Close(Option<CloseFrame>),
}

/// The code and reason of a close frame (RFC 6455 §7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code (1000 normal, 1001 going away, 1002 protocol error,
    /// 1007 invalid data, 1009 too big, 1011 server error, ...).
    pub code: u16,
    /// Why, for people (at most 123 bytes of UTF-8).
    pub reason: String,
}

/// Why a WebSocket operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed.
    #[error("WebSocket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol; closed with 1002.
    #[error("WebSocket protocol error: {0} (closed with 1002)")]
    Protocol(String),
    /// A text message was not UTF-8; closed with 1007.
    #[error("invalid UTF-8 in a text message (closed with 1007)")]
    InvalidUtf8,
    /// A frame or message over the caps; closed with 1009.
    #[error("{0} (closed with 1009)")]
    TooBig(String),
    /// No frame from the peer within the dead-peer timeout after a ping.
    #[error("dead peer: no frame within {0:?} after a ping; connection dropped")]
    DeadPeer(Duration),
    /// No data message either way for the idle timeout; closed with 1001.
    #[error("idle for {0:?}: closed with 1001")]
    IdleTimeout(Duration),
    /// The close handshake did not finish in time; connection dropped.
    #[error("the close handshake did not finish within {0:?}; connection dropped")]
    CloseTimeout(Duration),
    /// A send waited longer than the write timeout.
    #[error("a send waited {0:?} on a peer that does not read")]
    WriteTimeout(Duration),
    /// The peer closed the connection without a close frame.
    #[error("the peer closed the connection without a close frame")]
    Reset,
    /// The connection is closed (a send after close).
    #[error("the WebSocket is closed")]
    Closed,
    /// The HTTP request of the handshake failed.
    #[error("WebSocket handshake: {0}")]
    Http(#[from] crate::ClientError),
    /// The handshake was refused or wrong; the facts, when there was a
    /// response, ride along (for `-v`).
    #[error("WebSocket handshake failed: {reason}")]
    Handshake {
        /// What was wrong.
        reason: String,
        /// The request and response, if a response came.
        handshake: Option<Box<Handshake>>,
    },
}
