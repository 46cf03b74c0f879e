//! The head lines `curl -v` prints, in one place: `keepwire get -v`
//! (keepwire-lab's page loader) and `keepwire ws -v` show HTTP/2 the same
//! way curl does, so a user comparing the two with curl reads one format.
//! HTTP/2 (and HTTP/3) has no request line: curl prints the pseudo-header fields as
//! `* [HTTP/2] [stream] [:name: value]` lines, then a `> METHOD path
//! HTTP/2` line, and the status as `< HTTP/2 200 ` (no reason phrase).

use std::fmt::Write as _;

use http::{StatusCode, Version};

/// curl's `* [HTTP/2] [id] [:name: value]` line for each pseudo-header.
pub fn h2_pseudo_headers(stream_id: u64, fields: &[(&str, &str)]) -> String {
    pseudo_headers(Version::HTTP_2, stream_id, fields)
}

/// curl's `* [HTTP/2] [id] [:name: value]` lines, or `* [HTTP/3] ...`.
pub fn pseudo_headers(version: Version, stream_id: u64, fields: &[(&str, &str)]) -> String {
    let label = if version == Version::HTTP_3 {
        "HTTP/3"
    } else {
        "HTTP/2"
    };
    let mut s = String::new();
    for (name, value) in fields {
        let _ = writeln!(s, "* [{label}] [{stream_id}] [{name}: {value}]");
    }
    s
}

/// The `< ` status line: `< HTTP/2 200 ` over HTTP/2 (`HTTP/3` over
/// HTTP/3), else `< HTTP/1.1 200 OK`.
pub fn status_line(version: Version, status: StatusCode) -> String {
    if version == Version::HTTP_2 {
        format!("< HTTP/2 {} \n", status.as_u16())
    } else if version == Version::HTTP_3 {
        format!("< HTTP/3 {} \n", status.as_u16())
    } else {
        format!(
            "< {version:?} {} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    }
}
