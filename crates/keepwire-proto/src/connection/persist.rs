//! The persistence decision, as data and one function.
//!
//! Every role asks the same question after an exchange: can this connection
//! carry another? The server (and a proxy's client hop) asks it to announce
//! `close` or `keep-alive`, the client (and a proxy's upstream hop) to pool
//! the connection, the load generator's skim to keep its socket. They all
//! fill in [`ExchangeFacts`] and call [`exchange_persists`], so they cannot
//! disagree; `connection/tests.rs` holds the decision table of each role.

use http::{HeaderMap, Method, StatusCode, Version};

use crate::framing::Framing;
use crate::head::RequestHead;
use crate::hop::{self, ConnectionTokens};

/// What one message's sender says about its connection: the message's
/// version and its `Connection` tokens (R5.1, R5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The `Connection` tokens (with `Proxy-Connection` folded in on a
    /// proxy's client hop, R6.2).
    pub tokens: ConnectionTokens,
}

impl Announced {
    /// What `headers` of a `version` message say.
    pub fn of(version: Version, headers: &HeaderMap) -> Self {
        Announced {
            version,
            tokens: ConnectionTokens::of(headers),
        }
    }

    /// Whether the sender wants the connection to persist: HTTP/1.1 unless
    /// `close`, HTTP/1.0 only with `keep-alive` (R5.1, R5.3).
    pub fn wants_persistence(self) -> bool {
        self.tokens.persistent(self.version)
    }
}

/// Everything that decides whether one exchange (request and response)
/// leaves its connection able to carry the next. A part not known yet stays
/// at its default, which never objects; [`exchange_persists`] decides.
/// Outside this crate, start from `ExchangeFacts::default()` and
/// [`ExchangeFacts::answered`], or set fields on it (more facts may come).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeFacts {
    /// What the request says (R5.1, R5.3; R6.2 on a proxy's client hop).
    pub request: Option<Announced>,
    /// What the response says.
    pub response: Option<Announced>,
    /// A body is not self-delimiting: close-delimited, or framed doubtfully
    /// (R5.4, RFC 9112 §6.1, §6.3).
    pub unframed: bool,
    /// The response ends while the request body is still unread (or could
    /// not be read): where the next request starts is unknown (R5.4,
    /// RFC 9110 §10.1.1).
    pub request_body_unread: bool,
    /// A limit makes this exchange the last: requests per connection, the
    /// connection's age, a shutdown (R5.6).
    pub last_allowed: bool,
    /// The exchange switched protocols or opened a tunnel (101, or 2xx to
    /// CONNECT, R9.1): no further HTTP message follows.
    pub tunnel: bool,
}

impl ExchangeFacts {
    /// These facts plus what a response to `method` says: its status (a
    /// tunnel?), its announcement, and its framing (HEAD, 204 and 304 have
    /// no body and always delimit themselves).
    pub fn answered(
        self,
        method: &Method,
        status: StatusCode,
        response: Announced,
        framing: Framing,
    ) -> Self {
        ExchangeFacts {
            response: Some(response),
            unframed: self.unframed || !framing.reusable,
            tunnel: self.tunnel || switches(method, status),
            ..self
        }
    }
}

/// Whether a connection carries another HTTP exchange after this one: the
/// single persistence decision every role asks (R5.1–R5.4, R5.6, R9.1).
pub fn exchange_persists(facts: &ExchangeFacts) -> bool {
    let wants = |a: Option<Announced>| a.is_none_or(Announced::wants_persistence);
    wants(facts.request)
        && wants(facts.response)
        && !facts.unframed
        && !facts.request_body_unread
        && !facts.last_allowed
        && !facts.tunnel
}

/// A final response to `method` with `status` turns the connection into a
/// tunnel (given that the request asked for it).
pub(super) fn switches(method: &Method, status: StatusCode) -> bool {
    status == StatusCode::SWITCHING_PROTOCOLS || (method == Method::CONNECT && status.is_success())
}

/// The request asks to switch protocols or to tunnel (R9.1, R9.3).
pub(super) fn asks_upgrade(head: &RequestHead) -> bool {
    head.method == Method::CONNECT || hop::upgrade_protocol(head.version, &head.headers).is_some()
}
