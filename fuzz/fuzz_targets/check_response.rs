//! `keepwire check`'s response parser (`response.rs` of keepwire-check,
//! included by path) on arbitrary bytes, as a response to GET or HEAD, with
//! the peer closed or not: never a panic (it reads other people's servers,
//! so any length it is given may be a lie), a complete response never ends
//! past the input, it stops at the first of pipelined responses, and more
//! input never turns a complete response into an error or changes where it
//! ended.
//!
//! Input byte 0: bit 0 HEAD, bit 1 the peer has closed.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/keepwire-check/src/response.rs"]
mod response;

use response::{Parsed, parse_response};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, buf)) = data.split_first() else {
        return;
    };
    let head_only = selector & 1 != 0;
    let eof = selector & 2 != 0;
    match parse_response(buf, head_only, eof) {
        Parsed::Done(r, end) => {
            assert!(end <= buf.len(), "ended at {end} of {}", buf.len());
            assert!(r.body.len() <= r.body_len);
            assert!(r.body_len <= buf.len());
            if !eof {
                // Bytes after a complete response belong to the next one.
                let mut more = buf.to_vec();
                more.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
                match parse_response(&more, head_only, eof) {
                    Parsed::Done(_, again) => assert_eq!(again, end, "{buf:?}"),
                    _ => panic!("more input undid a complete response: {buf:?}"),
                }
            }
        }
        Parsed::Partial | Parsed::Bad(_) => {}
    }
});
