//! Arbitrary bytes as the responses to 1–3 pipelined requests of a client
//! `Conn`, whole and byte by byte: never a panic, only `Side::Remote`
//! errors, every request answered or counted as unanswered, and the same
//! events and error however the bytes were split (see
//! `common::assert_same` for the two documented exceptions).
//!
//! Input byte 0 picks the requests, byte 1 the configuration; the rest is
//! the response stream.

#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let [requests, selector, stream @ ..] = data else {
        return;
    };
    let requests = common::requests(*requests);
    let config = common::config(*selector);
    let whole = common::run_client(&requests, stream, stream.len(), config.clone());
    let bytewise = common::run_client(&requests, stream, 1, config.clone());
    common::assert_same(
        &whole,
        &bytewise,
        &format!("whole vs byte by byte, {config:?}"),
    );
    let half = common::run_client(&requests, stream, stream.len().div_ceil(2), config);
    common::assert_same(&whole, &half, "whole vs two halves");
});
