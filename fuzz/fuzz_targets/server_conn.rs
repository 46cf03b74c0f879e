//! Arbitrary bytes into a server `Conn`, whole and byte by byte, answering
//! every request: never a panic, only `Side::Remote` errors, and the same
//! events, error and answers however the bytes were split (see
//! `common::assert_same` for the two documented exceptions).
//!
//! Input byte 0 picks the configuration (default or small limits, header
//! case, keep-alive hints, max requests), byte 1 the pipelining depth
//! (requests read ahead of their answers, 1–4) and whether
//! `Proxy-Connection` counts as `Connection`; the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let [selector, extra, stream @ ..] = data else {
        return;
    };
    let config = common::server_config(*selector, *extra);
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
