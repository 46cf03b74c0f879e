//! The load generator's view of a response head: status, framing and
//! persistence read straight from the bytes.
//!
//! A load generator pays for every `HeaderMap` it builds; this skim builds
//! none. It must still agree with the full parser to the bit, or a benchmark
//! would misread responses, so it shares the parser's bounds and asks the
//! same [`exchange_persists`] the connection state machine asks.

use std::mem::MaybeUninit;

use http::{Method, StatusCode, Version};

use crate::Limits;
use crate::connection::{Announced, ExchangeFacts, exchange_persists};
use crate::error::{Error, ErrorKind};
use crate::framing::{self, BodyKind};
use crate::head::{check_field_line, head_length, offset_in, version_of};
use crate::hop::ConnectionTokens;

/// What a load generator needs from a response head, read without building
/// a `HeaderMap` or copying a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseSkim {
    /// The status code (1xx interim responses included; the caller skips them).
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Length of the head, blank line included.
    pub head_len: usize,
    /// How the body is delimited (RFC 9112 §6.3).
    pub body: BodyKind,
    /// Whether the connection may carry another request after this response,
    /// as [`exchange_persists`] decides for the full parser: the server's
    /// `Connection` tokens and version allow it (R5.1, R5.3), the framing
    /// was not doubtful or close-delimited (R5.4), and it did not switch
    /// protocols (101, or 2xx to CONNECT). The request's own `close` is the
    /// caller's to add.
    pub persistent: bool,
}

/// Reads the response head at the front of `buf` for a request made with
/// `request_method`, without consuming it. `Ok(None)`: incomplete.
///
/// The framing and persistence decisions are the ones [`crate::Conn`] makes;
/// only the `HeaderMap` is skipped, which is what a load generator pays
/// per response otherwise.
pub fn skim_response(
    buf: &[u8],
    request_method: &Method,
    limits: &Limits,
) -> Result<Option<ResponseSkim>, Error> {
    let max = limits.max_headers.min(Limits::HARD_MAX_HEADERS);
    let mut slots =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::HARD_MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut slots[..max],
    );
    let Some(head_len) = head_length(parsed, buf, limits, false)? else {
        return Ok(None);
    };
    if head_len > limits.max_head_bytes {
        return Err(Error::remote(ErrorKind::HeadTooLarge {
            limit: limits.max_head_bytes,
        }));
    }
    let status = StatusCode::from_u16(res.code.unwrap_or_default())
        .map_err(|_| Error::remote(ErrorKind::MalformedHead(httparse::Error::Status)))?;
    // The same line bound as the full parser, checked in the same order
    // (found by fuzz target skim_response: a long field line passed here
    // and was 431 there; then a bad status was cited as the long line).
    for h in res.headers.iter() {
        let (name_start, _) = offset_in(buf, h.name.as_bytes());
        let (_, value_end) = offset_in(buf, h.value);
        check_field_line(
            &buf[..head_len],
            name_start as usize,
            value_end as usize,
            limits,
        )?;
    }
    let version = version_of(res.version);
    let named = |name: &'static str| {
        res.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let framing = framing::frame_response(
        request_method,
        status,
        version,
        framing::transfer_coding_of(named("transfer-encoding")),
        named("content-length").next().is_some(),
        || framing::content_length_of(named("content-length")),
    )?;
    let response = Announced {
        version,
        tokens: ConnectionTokens::from_values(named("connection")),
    };
    let facts = ExchangeFacts::default().answered(request_method, status, response, framing);
    Ok(Some(ResponseSkim {
        status,
        version,
        head_len,
        body: framing.body,
        persistent: exchange_persists(&facts),
    }))
}
