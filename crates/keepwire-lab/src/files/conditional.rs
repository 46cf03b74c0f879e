//! Validators and conditional requests (RFC 9110 §8.8, §13).
//!
//! The entity tag is strong, so `If-Range` and `If-Match` may use it. A
//! strong validator must change whenever the bytes do; it is built from the
//! file's inode, length, modification time and status-change time, all to
//! the nanosecond:
//! - a write changes mtime and ctime (nanosecond clocks on ext4, xfs,
//!   btrfs and tmpfs);
//! - replacing the file by a rename (how editors, `rsync` and deploy tools
//!   write) changes the inode;
//! - mtime alone is not enough: `cp -p`, `tar x` and `touch -d` set it back
//!   to an old value, but none of them can set ctime, which the kernel
//!   stamps on every change.
//!
//! It may change when the bytes do not (a `chmod` moves ctime), which costs
//! a cache a download, never a wrong byte. nginx uses mtime in seconds and
//! the length, which two same-length writes within a second defeat.
//!
//! Preconditions are evaluated in §13.2.2's order: `If-Match`, else
//! `If-Unmodified-Since` (412); `If-None-Match`, else `If-Modified-Since`
//! (304 for GET and HEAD); then `If-Range` decides whether `Range` counts.

use std::time::SystemTime;

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};
use http::{HeaderMap, StatusCode};

/// The strong entity tag of a file (quotes included); `coding` tells apart
/// the representations of one URL (`br`, `gzip`, or none).
pub fn etag(meta: &std::fs::Metadata, coding: Option<&str>) -> String {
    let (ino, mtime, ctime) = stamps(meta);
    let suffix = coding.map(|c| format!("-{c}")).unwrap_or_default();
    format!("\"{ino:x}-{:x}-{mtime:x}-{ctime:x}{suffix}\"", meta.len())
}

#[cfg(unix)]
fn stamps(meta: &std::fs::Metadata) -> (u64, i128, i128) {
    use std::os::unix::fs::MetadataExt;
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    (
        meta.ino(),
        ns(meta.mtime(), meta.mtime_nsec()),
        ns(meta.ctime(), meta.ctime_nsec()),
    )
}

#[cfg(not(unix))]
fn stamps(meta: &std::fs::Metadata) -> (u64, i128, i128) {
    let ns = |t: std::io::Result<SystemTime>| {
        t.ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128)
    };
    (0, ns(meta.modified()), ns(meta.created()))
}

/// What the preconditions say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on and serve (`Range` counts only if `range_ok`).
    Serve { range_ok: bool },
    /// 304 or 412.
    Stop(StatusCode),
}

/// Evaluates the request's preconditions against the file's validators.
/// Only GET and HEAD come here (304 is theirs); `is_get`: `Range` applies
/// to GET alone (RFC 9110 §14.2).
pub fn evaluate(headers: &HeaderMap, etag: &str, modified: SystemTime, is_get: bool) -> Verdict {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let date = |name| text(name).and_then(|s| httpdate::parse_http_date(s).ok());
    if let Some(list) = text(IF_MATCH) {
        if !matches_any(list, etag, true) {
            return Verdict::Stop(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(since) = date(IF_UNMODIFIED_SINCE)
        && secs(modified) > secs(since)
    {
        return Verdict::Stop(StatusCode::PRECONDITION_FAILED);
    }
    if let Some(list) = text(IF_NONE_MATCH) {
        if matches_any(list, etag, false) {
            return Verdict::Stop(StatusCode::NOT_MODIFIED);
        }
    } else if let Some(since) = date(IF_MODIFIED_SINCE)
        && secs(modified) <= secs(since)
    {
        return Verdict::Stop(StatusCode::NOT_MODIFIED);
    }
    let range_ok = is_get
        && match text(IF_RANGE) {
            None => true,
            // An entity tag: strong comparison (a weak tag never matches).
            Some(v) if v.trim_start().starts_with(['"', 'W']) => strong_eq(v.trim(), etag),
            // A date: exactly the file's Last-Modified (§13.1.5).
            Some(v) => httpdate::parse_http_date(v.trim()).is_ok_and(|d| secs(d) == secs(modified)),
        };
    Verdict::Serve { range_ok }
}

/// Whether the field's list (or `*`) names `etag`: strong comparison for
/// `If-Match`, weak for `If-None-Match` (§13.1.1, §13.1.2).
fn matches_any(list: &str, etag: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    // Entity tags cannot hold commas, so splitting on them is exact.
    list.split(',').map(str::trim).any(|tag| {
        if strong {
            strong_eq(tag, etag)
        } else {
            tag.strip_prefix("W/").unwrap_or(tag) == etag
        }
    })
}

fn strong_eq(tag: &str, etag: &str) -> bool {
    !tag.starts_with("W/") && tag == etag
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    const TAG: &str = "\"1-2-3-4\"";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn eval(pairs: &[(&'static str, &str)]) -> Verdict {
        evaluate(&headers(pairs), TAG, at(1_000_000_000), true)
    }

    #[test]
    fn preconditions_in_rfc_order() {
        let serve = Verdict::Serve { range_ok: true };
        let not_modified = Verdict::Stop(StatusCode::NOT_MODIFIED);
        let failed = Verdict::Stop(StatusCode::PRECONDITION_FAILED);
        assert_eq!(eval(&[]), serve);
        assert_eq!(eval(&[("if-none-match", TAG)]), not_modified);
        assert_eq!(eval(&[("if-none-match", "W/\"1-2-3-4\"")]), not_modified);
        assert_eq!(
            eval(&[("if-none-match", "\"x\", \"1-2-3-4\"")]),
            not_modified
        );
        assert_eq!(eval(&[("if-none-match", "*")]), not_modified);
        assert_eq!(eval(&[("if-none-match", "\"other\"")]), serve);
        // If-None-Match wins over If-Modified-Since.
        let late = httpdate::fmt_http_date(at(2_000_000_000));
        assert_eq!(
            eval(&[("if-none-match", "\"other\""), ("if-modified-since", &late)]),
            serve
        );
        assert_eq!(eval(&[("if-modified-since", &late)]), not_modified);
        assert_eq!(eval(&[("if-match", TAG)]), serve);
        assert_eq!(eval(&[("if-match", "W/\"1-2-3-4\"")]), failed);
        assert_eq!(eval(&[("if-match", "\"other\"")]), failed);
        let early = httpdate::fmt_http_date(at(1));
        assert_eq!(eval(&[("if-unmodified-since", &early)]), failed);
        assert_eq!(eval(&[("if-unmodified-since", &late)]), serve);
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        let yes = Verdict::Serve { range_ok: true };
        let no = Verdict::Serve { range_ok: false };
        assert_eq!(eval(&[("if-range", TAG)]), yes);
        assert_eq!(eval(&[("if-range", "W/\"1-2-3-4\"")]), no);
        assert_eq!(eval(&[("if-range", "\"old\"")]), no);
        let exact = httpdate::fmt_http_date(at(1_000_000_000));
        assert_eq!(eval(&[("if-range", &exact)]), yes);
        let other = httpdate::fmt_http_date(at(1_000_000_001));
        assert_eq!(eval(&[("if-range", &other)]), no);
        assert_eq!(
            evaluate(&HeaderMap::new(), TAG, at(0), false),
            no,
            "Range is for GET only"
        );
    }

    #[test]
    fn etags_differ_per_coding_and_after_a_same_length_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "aaaa").unwrap();
        let m1 = std::fs::metadata(&p).unwrap();
        let t = etag(&m1, None);
        assert!(t.starts_with('"') && t.ends_with('"'), "{t}");
        assert_ne!(t, etag(&m1, Some("gzip")));
        assert_ne!(etag(&m1, Some("br")), etag(&m1, Some("gzip")));
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(&p, "bbbb").unwrap();
        // Put the old mtime back, as `touch -d` or `cp -p` would.
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(m1.modified().unwrap()).unwrap();
        let m2 = std::fs::metadata(&p).unwrap();
        assert_eq!(m1.modified().unwrap(), m2.modified().unwrap());
        assert_ne!(t, etag(&m2, None), "ctime tells the rewrite apart");
    }
}
