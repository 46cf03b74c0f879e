//! The load generator's head skim against the full parser: for arbitrary
//! bytes as a response to GET, HEAD, POST or CONNECT, `skim_response` must
//! agree with `parse_response` + `response_framing` + `exchange_persists`
//! (what `Conn` decides) on accept/reject, status, version, head length,
//! body framing and persistence, and every strict prefix of an accepted
//! head is incomplete, never an answer.
//!
//! Input byte 0: bits 0–1 the request method, bit 2 small limits.

#![no_main]

use bytes::BytesMut;
use http::Method;
use keepwire_proto::framing::response_framing;
use keepwire_proto::head::parse_response;
use keepwire_proto::{Announced, ExchangeFacts, Limits, exchange_persists, skim_response};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, raw)) = data.split_first() else {
        return;
    };
    let method = match selector & 3 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        _ => Method::CONNECT,
    };
    let limits = if selector & 4 == 0 {
        Limits::default()
    } else {
        common::small_limits()
    };
    let skim = skim_response(raw, &method, &limits);
    let mut buf = BytesMut::from(raw);
    let full = parse_response(&mut buf, &limits, false).and_then(|head| {
        head.map(|head| {
            let framing = response_framing(&method, head.status, head.version, &head.headers)?;
            // The full parser's decision, through the one persistence function.
            let response = Announced::of(head.version, &head.headers);
            let facts = ExchangeFacts::default().answered(&method, head.status, response, framing);
            let persistent = exchange_persists(&facts);
            Ok((head, framing, persistent))
        })
        .transpose()
    });
    match (&skim, &full) {
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "{raw:?}"),
        (Ok(Some(s)), Ok(Some((head, framing, persistent)))) => {
            assert_eq!(s.status, head.status, "{raw:?}");
            assert_eq!(s.version, head.version, "{raw:?}");
            assert_eq!(s.head_len, raw.len() - buf.len(), "{raw:?}");
            assert_eq!(s.body, framing.body, "{raw:?}");
            assert_eq!(s.persistent, *persistent, "{raw:?}");
            // A strict prefix is never a complete head (a few cuts: all of
            // them would make the target quadratic).
            for cut in [s.head_len - 1, s.head_len / 2, 0] {
                match skim_response(&raw[..cut], &method, &limits) {
                    Ok(Some(p)) => panic!("prefix {cut} of {raw:?} gave {p:?}"),
                    Ok(None) | Err(_) => {}
                }
            }
        }
        _ => panic!("skim {skim:?} vs full parser {full:?} on {raw:?}"),
    }
});
