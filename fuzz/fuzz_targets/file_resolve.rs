//! The static-file resolver's lexical half (`files/url_path.rs` of
//! keepwire-lab, included by path) on arbitrary URL paths: never a panic,
//! and whatever it accepts is a relative path of plain names only, with no
//! `.` or `..` segment, no NUL or backslash, that stays under the root when
//! joined to it. Independently of how `Path::components` reads it: a
//! decoded path with a `..` segment is always refused, and one with a
//! segment that starts with `.` (other than `.` itself and `.well-known`)
//! is always a dot file to `is_dotted` (served only with `--dotfiles`).
//!
//! Re-point the `#[path]` if the function moves; it must stay pure.

#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/keepwire-lab/src/files/url_path.rs"]
mod url_path;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = percent_encoding::percent_decode_str(url).collect::<Vec<u8>>();
    let dot_dot = decoded.split(|&b| b == b'/').any(|s| s == b"..");
    let dotted = decoded
        .split(|&b| b == b'/')
        .any(|s| s.first() == Some(&b'.') && s != b"." && s != b".well-known");
    let Ok(rel) = url_path::relative_path(url) else {
        return;
    };
    assert!(!dot_dot, "{url:?} has a `..` segment yet gave {rel:?}");
    assert_eq!(url_path::is_dotted(&rel), dotted, "{url:?} -> {rel:?}");
    assert!(rel.is_relative(), "{url:?} -> {rel:?}");
    let s = rel.as_os_str().as_encoded_bytes();
    assert!(!s.contains(&0) && !s.contains(&b'\\'), "{url:?} -> {rel:?}");
    for c in rel.components() {
        match c {
            Component::Normal(name) => {
                let name = name.as_encoded_bytes();
                assert!(name != b"." && name != b"..", "{url:?} -> {rel:?}");
                assert!(!name.contains(&b'/'), "{url:?} -> {rel:?}");
            }
            other => panic!("{url:?} -> {rel:?} has {other:?}"),
        }
    }
    let root = Path::new("/srv/root");
    let joined = root.join(&rel);
    assert!(joined.starts_with(root), "{url:?} -> {joined:?}");
    assert_eq!(
        joined.components().count(),
        root.components().count() + rel.components().count(),
        "{url:?} -> {joined:?}"
    );
});
