//! Errors that say whose fault they are and which status answers them.
//!
//! A server must turn a malformed request into 400/413/414/431 without string
//! matching (R10.2), and a client must tell a truncated body from a clean end
//! (R8.2). So every error carries a [`ErrorKind`] (what went wrong), a
//! [`Side`] (who broke the protocol) and, through [`Error::status_hint`], the
//! status a server answers with before its graceful close.

use http::StatusCode;

/// Who broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The peer sent bytes that violate HTTP/1.x (or our limits).
    Remote,
    /// Our own code asked for something HTTP/1.x forbids (a body on a 204,
    /// fewer bytes than the announced Content-Length, ...).
    Local,
}

/// What went wrong. Every variant maps to one status in
/// [`Error::status_hint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The head is not valid HTTP/1.x syntax (httparse rejected it).
    #[error("malformed message head: {0}")]
    MalformedHead(httparse::Error),
    /// The request target could not be parsed as a URI.
    #[error("malformed request target")]
    MalformedTarget,
    /// A header name or value that `http` does not accept.
    #[error("malformed header field")]
    MalformedHeader,
    /// The version is neither HTTP/1.0 nor HTTP/1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// The request line is longer than [`crate::Limits::max_line_bytes`].
    #[error("request line longer than {limit} bytes")]
    RequestLineTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// A header line is longer than [`crate::Limits::max_line_bytes`].
    #[error("header line longer than {limit} bytes")]
    HeaderLineTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// The head is longer than [`crate::Limits::max_head_bytes`].
    #[error("message head longer than {limit} bytes")]
    HeadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// More header lines than [`crate::Limits::max_headers`].
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// Both `Transfer-Encoding` and `Content-Length` in a request (R10.1).
    #[error("both Transfer-Encoding and Content-Length")]
    TransferEncodingWithContentLength,
    /// Several `Content-Length` values that disagree (R10.1).
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// A `Content-Length` that is not a plain decimal number (R10.1).
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// A transfer coding other than `chunked`, or `chunked` not last (R10.1).
    #[error("unsupported or non-final transfer coding")]
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request (RFC 9112 §6.1).
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    /// A chunk-size line that is not `1*HEXDIG [chunk-ext] CRLF` (RFC 9112
    /// §7.1), overflows, or is too long (R10.1, R10.3).
    #[error("invalid chunk size line")]
    InvalidChunkSize,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    InvalidChunkTerminator,
    /// Trailer section malformed (a line not ended by CRLF included) or
    /// over its limits ([`crate::Limits::max_trailer_bytes`], and the line
    /// and count limits of header fields).
    #[error("malformed or oversized trailer section")]
    InvalidTrailers,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2, R10.3).
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    /// More than one `Host` field line (RFC 9112 §3.2, R10.3).
    #[error("more than one Host field")]
    RepeatedHost,
    /// A `Host` that is not `uri-host [":" port]` (RFC 9112 §3.2, R10.3).
    #[error("invalid Host")]
    InvalidHost,
    /// A request body longer than the configured maximum.
    #[error("body longer than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The connection ended before the message did (R8.2).
    #[error("message truncated: expected {}, received {received} bytes", expected.map_or("the last chunk".to_string(), |n| n.to_string()))]
    Truncated {
        /// Bytes announced by Content-Length; `None` for a chunked body whose
        /// last chunk never came.
        expected: Option<u64>,
        /// Body bytes received before the end.
        received: u64,
    },
    /// The connection ended in the middle of a head.
    #[error("connection closed in the middle of a message head")]
    IncompleteHead,
    /// Client: the connection closed before any byte of the response came
    /// (after a reused connection's request this is the stale-connection
    /// race, R8.1).
    #[error("connection closed before the response started")]
    ClosedBeforeResponse,
    /// A response arrived that no request asked for.
    #[error("response received with no request outstanding")]
    UnexpectedResponse,
    /// Local: body bytes differ from the announced Content-Length.
    #[error("body length does not match Content-Length: announced {announced}, given {given}")]
    BodyLengthMismatch {
        /// Content-Length announced in the head.
        announced: u64,
        /// Bytes given (so far, or in total at the end).
        given: u64,
    },
    /// Local: a message was sent in a state that does not allow it.
    #[error("cannot send that in the current connection state")]
    InvalidState,
}

/// A protocol error: [`ErrorKind`] plus the [`Side`] at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct Error {
    kind: ErrorKind,
    side: Side,
}

impl Error {
    pub(crate) fn remote(kind: ErrorKind) -> Self {
        Error {
            kind,
            side: Side::Remote,
        }
    }

    pub(crate) fn local(kind: ErrorKind) -> Self {
        Error {
            kind,
            side: Side::Local,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Who broke the protocol.
    pub fn side(&self) -> Side {
        self.side
    }

    /// True if the peer closed before a message ended (R8.2).
    pub fn is_truncated(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Truncated { .. }
                | ErrorKind::IncompleteHead
                | ErrorKind::ClosedBeforeResponse
        )
    }

    /// The status a server answers a bad *request* with, before it closes
    /// (R10.1, R10.2). `None` when no response makes sense (the peer is gone,
    /// or the fault is ours).
    pub fn status_hint(&self) -> Option<StatusCode> {
        if self.side == Side::Local {
            return None;
        }
        use ErrorKind::*;
        Some(match self.kind {
            RequestLineTooLong { .. } => StatusCode::URI_TOO_LONG,
            HeaderLineTooLong { .. } | HeadTooLarge { .. } | TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Truncated { .. } | IncompleteHead | ClosedBeforeResponse | UnexpectedResponse => {
                return None;
            }
            MalformedHead(_)
            | MalformedTarget
            | MalformedHeader
            | TransferEncodingWithContentLength
            | ConflictingContentLength
            | InvalidContentLength
            | UnsupportedTransferCoding
            | TransferEncodingInHttp10
            | InvalidChunkSize
            | InvalidChunkTerminator
            | InvalidTrailers
            | MissingHost
            | RepeatedHost
            | InvalidHost => StatusCode::BAD_REQUEST,
            BodyLengthMismatch { .. } | InvalidState => return None,
        })
    }
}
