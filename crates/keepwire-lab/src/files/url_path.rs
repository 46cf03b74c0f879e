//! The half of resolving a URL path that needs no file system: decode it
//! and refuse anything that could name a place outside the root before a
//! single `stat` is made.
//!
//! Kept to `std`, `http` and `percent_encoding` so the fuzzer includes this
//! file as it is (`fuzz/fuzz_targets/file_resolve.rs`): whatever it returns
//! is relative and made of plain names only, so joining it to the root
//! cannot leave the root lexically (symlinks are `Files::resolve`'s job).

use std::path::{Component, Path, PathBuf};

use http::StatusCode;

/// The path under the root that `url_path` names, or the status that
/// answers it instead: 400 for bytes that are not UTF-8 once decoded, NUL,
/// backslashes, `..`, or anything Rust reads as a root or prefix.
pub fn relative_path(url_path: &str) -> Result<PathBuf, StatusCode> {
    let decoded = percent_encoding::percent_decode_str(url_path)
        .decode_utf8()
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut path = PathBuf::new();
    for component in Path::new(decoded.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            // `..`, a root or a prefix: an attempt to leave the root.
            _ => return Err(StatusCode::BAD_REQUEST),
        }
    }
    Ok(path)
}

/// Whether a relative path has a component that starts with `.`, other
/// than `.well-known` (RFC 8615: public by definition, ACME's challenges live
/// there; nginx sites write `location ~ /\.(?!well-known)` for the same).
pub fn is_dotted(rel: &Path) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(name) => {
            name.as_encoded_bytes().first() == Some(&b'.') && name != ".well-known"
        }
        _ => false,
    })
}
