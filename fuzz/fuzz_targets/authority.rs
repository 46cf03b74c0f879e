//! The authority parsers' users: the proxy's `parse_authority` (upstreams
//! given on the command line), `Upstream::new` (which takes its output) and
//! the client's `origin_of` (every URL it is asked to fetch), all over
//! `keepwire_proto::host::split_authority`. On arbitrary
//! strings: never a panic; `parse_authority` is idempotent (its output is
//! its own normal form); the upstream it names is the origin the client
//! derives from the same authority as a URL; and the port is the one
//! written, or the scheme's default.

#![no_main]

use http::Uri;
use keepwire::client::origin_of;
use keepwire::proxy::{Upstream, parse_authority};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Never panics, whatever it is given (its input is trusted config, but
    // a typo must not crash the proxy).
    let _ = Upstream::new(s);
    if let Ok(uri) = s.parse::<Uri>() {
        let _ = origin_of(&uri);
    }
    let Ok(a) = parse_authority(s) else {
        return;
    };
    assert_eq!(parse_authority(&a).as_ref(), Ok(&a), "{s:?} -> {a:?}");
    let up = Upstream::new(a.as_str());
    let url = if a.starts_with("https://") {
        format!("{a}/")
    } else {
        format!("http://{a}/")
    };
    let uri: Uri = url
        .parse()
        .unwrap_or_else(|e| panic!("{s:?} -> {a:?} is no URL: {e}"));
    let origin = origin_of(&uri).unwrap_or_else(|e| panic!("{s:?} -> {a:?}: {e}"));
    let upstream = up.origin();
    assert_eq!(upstream.scheme, origin.scheme, "{s:?} -> {a:?}");
    assert_eq!(upstream.port, origin.port, "{s:?} -> {a:?}");
    // Both read the authority with the one parser (IPv6 brackets kept).
    assert_eq!(upstream.host, origin.host, "{s:?} -> {a:?}");
    // The port is the one written, or the scheme's default.
    let given: Option<Uri> = if s.contains("://") {
        s.parse().ok()
    } else {
        format!("http://{s}").parse().ok()
    };
    if let Some(port) = given.and_then(|u| u.port_u16()) {
        assert_eq!(upstream.port, port, "{s:?} -> {a:?}");
    }
});
