//! The chunked decoder, trailers included, on arbitrary bytes: never a
//! panic; whole, byte by byte and in two halves it gives the same body,
//! trailers, error and unread rest (the next message's bytes are never
//! eaten); what it accepted is re-encoded by keepwire's own chunked
//! encoder and decodes back to the same body and trailers; and the body is
//! never longer than the input.
//!
//! Input byte 0: bit 0 small limits (short chunk lines and trailers, a
//! 256-byte body bound), bit 1 no body bound at all.

#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use keepwire_proto::{BodyKind, Decoder, Encoder, ErrorKind, Frame, Limits};
use libfuzzer_sys::fuzz_target;

mod common;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Body, trailers (an empty section reads as `None`), unread rest.
    Done(Vec<u8>, Option<HeaderMap>, Vec<u8>),
    /// Needs more than the input had (checked with `finish`).
    Truncated,
    Error(ErrorKind),
}

fn decode(input: &[u8], step: usize, limits: &Limits) -> Outcome {
    let mut d = Decoder::new(BodyKind::Chunked, limits);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    // Each poll consumes input or returns a frame; bounded by the input.
    for _ in 0..4 * input.len() + 16 {
        match d.decode(&mut buf) {
            Err(e) => return Outcome::Error(e.kind().clone()),
            Ok(Some(Frame::Data(b))) => {
                assert!(!b.is_empty(), "empty Data frame");
                body.extend_from_slice(&b);
            }
            Ok(Some(Frame::End(t))) => {
                let rest = [&buf[..], &input[fed..]].concat();
                assert!(d.is_done());
                assert_eq!(d.decode(&mut buf), Ok(None), "a second End");
                return Outcome::Done(body, t.filter(|t| !t.is_empty()), rest);
            }
            Ok(None) if fed < input.len() => {
                let end = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            Ok(None) => {
                return match d.finish() {
                    Err(e) if e.is_truncated() => Outcome::Truncated,
                    other => panic!("finish of a chunked body gave {other:?}"),
                };
            }
        }
    }
    panic!("no progress");
}

fn collect(mut b: keepwire_proto::EncodedBuf, out: &mut Vec<u8>) {
    while b.has_remaining() {
        let n = b.chunk().len();
        out.extend_from_slice(b.chunk());
        b.advance(n);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let mut limits = if selector & 1 == 0 {
        Limits::default()
    } else {
        common::small_limits()
    };
    if selector & 2 != 0 {
        limits.max_body_bytes = None;
    }
    let whole = decode(input, input.len().max(1), &limits);
    let bytewise = decode(input, 1, &limits);
    assert_eq!(whole, bytewise, "whole vs byte by byte: {input:?}");
    let half = decode(input, input.len().div_ceil(2).max(1), &limits);
    assert_eq!(whole, half, "whole vs two halves: {input:?}");

    let Outcome::Done(body, trailers, rest) = whole else {
        return;
    };
    assert!(body.len() <= input.len());
    assert!(input.ends_with(&rest));
    // Re-encode what was accepted (as a proxy re-frames it) and decode it
    // again: same body and trailers, nothing left over.
    let mut e = Encoder::chunked();
    let mut wire = Vec::new();
    for piece in body.chunks(7) {
        collect(e.encode(Bytes::copy_from_slice(piece)).unwrap(), &mut wire);
    }
    let mut end = BytesMut::new();
    e.end(trailers.as_ref(), &mut end).unwrap();
    wire.extend_from_slice(&end);
    // Default limits: the encoder spells fields `name: value` (a space more
    // than `a:b`), so a re-encoded trailer section may outgrow small ones.
    let mut no_bound = Limits::default();
    no_bound.max_body_bytes = None;
    assert_eq!(
        decode(&wire, wire.len(), &no_bound),
        Outcome::Done(body, trailers, Vec::new()),
        "re-encoded {input:?} as {wire:?}"
    );
});
