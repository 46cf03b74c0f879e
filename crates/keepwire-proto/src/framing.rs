//! Which body a message has: RFC 9112 §6.3, step by step.
//!
//! Framing is where request smuggling lives (R10.1): if a proxy and a server
//! disagree on where a request ends, the remainder is read as a second
//! request. So requests are framed strictly (every ambiguity is a 400 and a
//! close) while responses follow the RFC's recovery rules, which never let a
//! response be reused when its framing was doubtful.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

use crate::error::{Error, ErrorKind};
use crate::hop::split_tokens;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all (a request without framing fields, a HEAD response,
    /// 1xx/204/304, a 2xx answer to CONNECT).
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only); ends the connection (R5.4).
    CloseDelimited,
}

/// A framing decision, plus whether the connection may carry another message
/// after this one as far as framing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The body's delimitation.
    pub body: BodyKind,
    /// False when the framing was doubtful enough that the connection must
    /// close after this message (RFC 9112 §6.1, §6.3 step 3).
    pub reusable: bool,
}

/// Parses every `Content-Length` line. `Ok(None)` if absent. Repeated lines
/// or list members with one identical value are accepted as that value
/// (RFC 9110 §8.6); differing values are errors, and so is every member that
/// is not `1*DIGIT` between optional whitespace: an empty value, an empty
/// list member (`Content-Length: ,` is not "no body"), a sign, inner
/// whitespace, a number past `u64`.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    content_length_of(headers.get_all(CONTENT_LENGTH).iter().map(|v| v.as_bytes()))
}

/// [`content_length`] over raw field values, for callers that never build a
/// `HeaderMap` (the head skim a load generator uses).
pub(crate) fn content_length_of<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<u64>, Error> {
    let mut found: Option<u64> = None;
    for value in values {
        for item in value.split(|&b| b == b',') {
            let n = parse_decimal(trim_ows(item))
                .ok_or_else(|| Error::remote(ErrorKind::InvalidContentLength))?;
            match found {
                Some(prev) if prev != n => {
                    return Err(Error::remote(ErrorKind::ConflictingContentLength));
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// `item` without the optional whitespace (SP, HTAB) around it.
fn trim_ows(mut item: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = item {
        item = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = item {
        item = rest;
    }
    item
}

/// `1*DIGIT` as u64; no sign, no whitespace inside, no overflow.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// What the `Transfer-Encoding` lines say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferCoding {
    Absent,
    /// Exactly one coding, `chunked`.
    Chunked,
    /// Something else is in the list, but `chunked` is the final coding.
    ChunkedAfterOthers,
    /// `chunked` is missing, not last, or repeated.
    NotChunkedFinal,
}

fn transfer_coding(headers: &HeaderMap) -> TransferCoding {
    transfer_coding_of(
        headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// [`transfer_coding`] over raw field values.
pub(crate) fn transfer_coding_of<'a>(values: impl Iterator<Item = &'a [u8]>) -> TransferCoding {
    let mut lines = values.peekable();
    if lines.peek().is_none() {
        return TransferCoding::Absent;
    }
    let (mut count, mut chunked_count, mut last_is_chunked) = (0, 0, false);
    for value in lines {
        for coding in split_tokens(value) {
            count += 1;
            last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            chunked_count += usize::from(last_is_chunked);
        }
    }
    match (last_is_chunked, chunked_count, count) {
        (true, 1, 1) => TransferCoding::Chunked,
        (true, 1, _) => TransferCoding::ChunkedAfterOthers,
        _ => TransferCoding::NotChunkedFinal,
    }
}

/// Frames a request body (RFC 9112 §6.3 steps 3–6, strictly).
pub fn request_framing(version: Version, headers: &HeaderMap) -> Result<Framing, Error> {
    let te = transfer_coding(headers);
    if te != TransferCoding::Absent {
        // RFC 9112 §6.1: a 1.0 message with Transfer-Encoding has faulty
        // framing; for a request we refuse it rather than guess.
        if version == Version::HTTP_10 {
            return Err(Error::remote(ErrorKind::TransferEncodingInHttp10));
        }
        // §6.3 step 3: both fields is how smuggling works; R10.1 rejects.
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(Error::remote(ErrorKind::TransferEncodingWithContentLength));
        }
        // §6.3 step 4: chunked must be the final (here: the only) coding.
        return match te {
            TransferCoding::Chunked => Ok(Framing {
                body: BodyKind::Chunked,
                reusable: true,
            }),
            _ => Err(Error::remote(ErrorKind::UnsupportedTransferCoding)),
        };
    }
    // §6.3 step 5: Content-Length, which must be valid.
    // §6.3 step 6: otherwise a request has no body.
    let body = match content_length(headers)? {
        Some(n) => BodyKind::Length(n),
        None => BodyKind::Empty,
    };
    Ok(Framing {
        body,
        reusable: true,
    })
}

/// Frames a response body, given the method of the request it answers
/// (RFC 9112 §6.3 steps 1–7).
pub fn response_framing(
    request_method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, Error> {
    frame_response(
        request_method,
        status,
        version,
        transfer_coding(headers),
        headers.contains_key(CONTENT_LENGTH),
        || content_length(headers),
    )
}

/// The decision behind [`response_framing`], given what the framing fields
/// say; `content_length` is only consulted when it matters (step 5), so an
/// invalid one beside Transfer-Encoding is ignored as the RFC says.
pub(crate) fn frame_response(
    request_method: &Method,
    status: StatusCode,
    version: Version,
    te: TransferCoding,
    has_content_length: bool,
    content_length: impl FnOnce() -> Result<Option<u64>, Error>,
) -> Result<Framing, Error> {
    let framed = |body| {
        Ok(Framing {
            body,
            reusable: true,
        })
    };
    // Step 1: HEAD responses, 1xx, 204 and 304 end at the head.
    if request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return framed(BodyKind::Empty);
    }
    // Step 2: a 2xx answer to CONNECT turns the connection into a tunnel.
    if request_method == Method::CONNECT && status.is_success() {
        return framed(BodyKind::Empty);
    }
    // Step 3/4: Transfer-Encoding overrides Content-Length; chunked last
    // means chunked, anything else reads until close. Either oddity
    // (TE with CL, TE on 1.0) forbids reuse.
    if te != TransferCoding::Absent {
        let doubtful = has_content_length || version == Version::HTTP_10;
        let body = match te {
            TransferCoding::Chunked | TransferCoding::ChunkedAfterOthers => BodyKind::Chunked,
            _ => BodyKind::CloseDelimited,
        };
        return Ok(Framing {
            body,
            reusable: !doubtful && body != BodyKind::CloseDelimited,
        });
    }
    // Step 5: an invalid Content-Length is an unrecoverable error.
    if let Some(n) = content_length()? {
        return framed(BodyKind::Length(n));
    }
    // Step 7: read until the server closes.
    Ok(Framing {
        body: BodyKind::CloseDelimited,
        reusable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in fields {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn content_length_accepts_identical_repeats_and_rejects_the_rest() {
        let ok = [
            (vec![("content-length", "5")], Some(5)),
            (
                vec![("content-length", "5"), ("content-length", "5")],
                Some(5),
            ),
            (vec![("content-length", "5, 5")], Some(5)),
            (vec![("content-length", "5,5 ,\t5")], Some(5)),
            (vec![("content-length", "007")], Some(7)),
            (vec![], None),
        ];
        for (h, want) in ok {
            assert_eq!(content_length(&headers(&h)).unwrap(), want, "{h:?}");
        }
        let bad = [
            (
                vec![("content-length", "5"), ("content-length", "6")],
                ErrorKind::ConflictingContentLength,
            ),
            (
                vec![("content-length", "5, 6")],
                ErrorKind::ConflictingContentLength,
            ),
            (
                vec![("content-length", "+5")],
                ErrorKind::InvalidContentLength,
            ),
            (
                vec![("content-length", "-1")],
                ErrorKind::InvalidContentLength,
            ),
            (
                vec![("content-length", "0x10")],
                ErrorKind::InvalidContentLength,
            ),
            (
                vec![("content-length", "1 2")],
                ErrorKind::InvalidContentLength,
            ),
            (
                vec![("content-length", "")],
                ErrorKind::InvalidContentLength,
            ),
            (
                vec![("content-length", "99999999999999999999")],
                ErrorKind::InvalidContentLength,
            ),
        ];
        // Empty list members are no number either: `,` is not "no body".
        let bad: Vec<_> = bad
            .into_iter()
            .chain(
                [",", " , ", "5,", ", 5", "5,,5", "5, ,5", "\t"]
                    .map(|v| (vec![("content-length", v)], ErrorKind::InvalidContentLength)),
            )
            .chain([(
                vec![("content-length", "5"), ("content-length", ",")],
                ErrorKind::InvalidContentLength,
            )])
            .collect();
        for (h, want) in bad {
            assert_eq!(
                content_length(&headers(&h)).unwrap_err().kind(),
                &want,
                "{h:?}"
            );
        }
    }

    #[test]
    fn response_framing_follows_rfc9112_6_3() {
        use BodyKind::*;
        let get = Method::GET;
        let v11 = Version::HTTP_11;
        type Case<'a> = (
            Method,
            u16,
            Version,
            Vec<(&'a str, &'a str)>,
            BodyKind,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                Method::HEAD,
                200,
                v11,
                vec![("content-length", "10")],
                Empty,
                true,
            ),
            (get.clone(), 204, v11, vec![], Empty, true),
            (
                get.clone(),
                304,
                v11,
                vec![("content-length", "10")],
                Empty,
                true,
            ),
            (get.clone(), 101, v11, vec![], Empty, true),
            (Method::CONNECT, 200, v11, vec![], Empty, true),
            (
                get.clone(),
                200,
                v11,
                vec![("transfer-encoding", "chunked")],
                Chunked,
                true,
            ),
            (
                get.clone(),
                200,
                v11,
                vec![("transfer-encoding", "gzip, chunked")],
                Chunked,
                true,
            ),
            (
                get.clone(),
                200,
                v11,
                vec![("transfer-encoding", "chunked"), ("content-length", "3")],
                Chunked,
                false,
            ),
            (
                get.clone(),
                200,
                Version::HTTP_10,
                vec![("transfer-encoding", "chunked")],
                Chunked,
                false,
            ),
            (
                get.clone(),
                200,
                v11,
                vec![("transfer-encoding", "gzip")],
                CloseDelimited,
                false,
            ),
            (
                get.clone(),
                200,
                v11,
                vec![("content-length", "7")],
                Length(7),
                true,
            ),
            (get.clone(), 200, v11, vec![], CloseDelimited, false),
        ];
        for (m, s, v, h, body, reusable) in cases {
            let f =
                response_framing(&m, StatusCode::from_u16(s).unwrap(), v, &headers(&h)).unwrap();
            assert_eq!(f, Framing { body, reusable }, "{m} {s} {h:?}");
        }
    }
}
