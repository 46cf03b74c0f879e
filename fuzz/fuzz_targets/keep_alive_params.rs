//! `KeepAliveParams::parse` over arbitrary `Keep-Alive` lines (one per
//! `\n` of the input): never a panic; what it parsed survives its own
//! rendering (`to_header_value` then `parse`); a rendered line appended
//! after the others wins (the last value of each parameter counts); and a
//! parameter whose name is absent from the input is never set.

#![no_main]

use http::HeaderMap;
use http::header::HeaderValue;
use keepwire_proto::KeepAliveParams;
use keepwire_proto::hop::KEEP_ALIVE;
use libfuzzer_sys::fuzz_target;

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(KEEP_ALIVE, v);
        }
    }
    let p = KeepAliveParams::parse(&headers);
    if p.timeout.is_some() {
        assert!(contains_ci(data, b"timeout"), "{data:?} -> {p:?}");
    }
    if p.max.is_some() {
        assert!(contains_ci(data, b"max"), "{data:?} -> {p:?}");
    }
    match p.to_header_value() {
        None => assert_eq!(p, KeepAliveParams::default()),
        Some(v) => {
            let mut alone = HeaderMap::new();
            alone.insert(KEEP_ALIVE, v.clone());
            assert_eq!(KeepAliveParams::parse(&alone), p, "{v:?}");
            // The rendered line, appended last, overrides what it sets.
            headers.append(KEEP_ALIVE, v.clone());
            let again = KeepAliveParams::parse(&headers);
            assert_eq!(again, p, "{data:?} + {v:?}");
        }
    }
});
