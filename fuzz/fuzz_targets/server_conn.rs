//! Arbitrary bytes into a server `Conn`, whole and byte by byte, answering
//! every request: never a panic, only `Side::Remote` errors, and the same
//! events, error and answers however the bytes were split (see
//! `common::assert_same` for the two documented exceptions).
//!
//! The first input byte picks the configuration (default or small limits,
//! header case, keep-alive hints, max requests); the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let config = common::config(selector);
    let whole = common::run_server(stream, stream.len(), config.clone());
    let bytewise = common::run_server(stream, 1, config.clone());
    common::assert_same(
        &whole,
        &bytewise,
        &format!("whole vs byte by byte, {config:?}"),
    );
    // One more split, in the middle, for inputs where whole and bytewise
    // happen to agree for different reasons.
    let half = common::run_server(stream, stream.len().div_ceil(2), config);
    common::assert_same(&whole, &half, "whole vs two halves");
});
