//! `Range: bytes=...` (RFC 9110 §14.1.2) against a file of known length.
//!
//! One range is served as `206` with `Content-Range`. Ranges that overlap
//! or touch are merged first, in file order (§14.2 allows both), which
//! also defuses range amplification (CVE-2011-3192: many overlapping
//! ranges, each sent again): what is left never repeats a byte. Several
//! ranges that stay apart are one `206` of `multipart/byteranges`
//! (§14.6), as nginx answers; tower-http's `ServeDir` refuses them with
//! 416. A unit other than `bytes` is ignored (§14.2: MUST), and so are
//! more than [`MAX_RANGES`] ranges (the whole file, 200); a `bytes` set
//! that is invalid (`5-1`, `x-`) or where no range starts inside the file
//! is `416`, as §14.2 says a server SHOULD answer and nginx does.

/// At most this many ranges are looked at; more and the header is ignored
/// (nginx's `max_ranges`, unlimited there by default).
const MAX_RANGES: usize = 64;

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// Serve the whole file (another unit, too many ranges).
    Whole,
    /// Serve bytes `start..=end`.
    One { start: u64, end: u64 },
    /// Serve these inclusive ranges (two or more, in order, apart) as
    /// `multipart/byteranges`.
    Many(Vec<(u64, u64)>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Reads `value` (the `Range` field) for a file of `len` bytes.
pub fn parse(value: &str, len: u64) -> Ranges {
    let Some((unit, set)) = value.split_once('=') else {
        return Ranges::Whole;
    };
    // An empty file has no byte to point at: the whole (empty) file, 200,
    // as nginx answers (a 206 cannot describe zero bytes).
    if !unit.trim().eq_ignore_ascii_case("bytes") || len == 0 {
        return Ranges::Whole;
    }
    let mut wanted: Vec<(u64, u64)> = Vec::new();
    for (i, spec) in set.split(',').map(str::trim).enumerate() {
        if spec.is_empty() {
            // An empty list element is allowed (RFC 9110 §5.6.1).
            continue;
        }
        if i >= MAX_RANGES {
            return Ranges::Whole;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Unsatisfiable;
        };
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            // suffix-range: the last N bytes.
            let Some(n) = digits(last) else {
                return Ranges::Unsatisfiable;
            };
            if n > 0 && len > 0 {
                wanted.push((len.saturating_sub(n), len - 1));
            }
            continue;
        }
        let Some(start) = digits(first) else {
            return Ranges::Unsatisfiable;
        };
        let end = if last.is_empty() {
            u64::MAX
        } else {
            match digits(last) {
                Some(end) if end >= start => end,
                _ => return Ranges::Unsatisfiable,
            }
        };
        if start < len {
            wanted.push((start, end.min(len - 1)));
        }
    }
    if wanted.is_empty() {
        // No range starts in the file (or the set was empty).
        return Ranges::Unsatisfiable;
    }
    wanted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(wanted.len());
    for (s, e) in wanted {
        match merged.last_mut() {
            Some((_, end)) if s <= end.saturating_add(1) => *end = (*end).max(e),
            _ => merged.push((s, e)),
        }
    }
    match merged[..] {
        [(start, end)] => Ranges::One { start, end },
        _ => Ranges::Many(merged),
    }
}

/// A non-empty run of ASCII digits that fits in a u64.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_of_every_form() {
        assert_eq!(parse("bytes=0-9", 100), Ranges::One { start: 0, end: 9 });
        assert_eq!(parse("bytes=90-", 100), Ranges::One { start: 90, end: 99 });
        assert_eq!(parse("bytes=-10", 100), Ranges::One { start: 90, end: 99 });
        assert_eq!(parse("bytes=-500", 100), Ranges::One { start: 0, end: 99 });
        assert_eq!(
            parse("bytes=50-500", 100),
            Ranges::One { start: 50, end: 99 }
        );
        assert_eq!(parse("Bytes = 1-1", 100), Ranges::One { start: 1, end: 1 });
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse("bytes=100-", 100), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Ranges::Whole, "an empty file");
        assert_eq!(parse("bytes=5-1", 100), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=x-1", 100), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=+1-2", 100), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=0-1,junk", 100), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=", 100), Ranges::Unsatisfiable);
        assert_eq!(
            parse("bytes=99999999999999999999-", 100),
            Ranges::Unsatisfiable
        );
        assert_eq!(parse("items=0-1", 100), Ranges::Whole);
        assert_eq!(parse("0-1", 100), Ranges::Whole);
    }

    /// Every short set over a small alphabet, against files of 0 to 12
    /// bytes: what is served lies inside the file, in order, never twice.
    #[test]
    fn every_short_set_serves_only_bytes_of_the_file_once() {
        const ALPHABET: &[u8] = b"019-, x";
        let mut spec = Vec::new();
        for n in 0..=5u32 {
            for mut code in 0..ALPHABET.len().pow(n) {
                spec.clear();
                for _ in 0..n {
                    spec.push(ALPHABET[code % ALPHABET.len()]);
                    code /= ALPHABET.len();
                }
                let value = format!("bytes={}", std::str::from_utf8(&spec).unwrap());
                for len in 0..=12 {
                    check(&value, len);
                }
            }
        }
    }

    fn check(value: &str, len: u64) {
        match parse(value, len) {
            Ranges::Whole => {}
            Ranges::Unsatisfiable => assert!(len > 0, "{value} on {len}"),
            Ranges::One { start, end } => assert!(start <= end && end < len, "{value} on {len}"),
            Ranges::Many(spans) => {
                assert!(spans.len() >= 2 && spans.len() <= MAX_RANGES, "{value}");
                for w in spans.windows(2) {
                    assert!(w[0].1 + 1 < w[1].0, "{value}: apart and in order");
                }
                for (start, end) in spans {
                    assert!(start <= end && end < len, "{value} on {len}");
                }
            }
        }
    }

    #[test]
    fn several_ranges_merge_or_make_parts() {
        assert_eq!(
            parse("bytes=0-10, 5-20,21-30", 100),
            Ranges::One { start: 0, end: 30 }
        );
        assert_eq!(
            parse("bytes=5-6,0-1", 100),
            Ranges::Many(vec![(0, 1), (5, 6)])
        );
        assert_eq!(
            parse("bytes=0-1,5-6,1-2,-1", 100),
            Ranges::Many(vec![(0, 2), (5, 6), (99, 99)])
        );
        // Ranges past the end drop out; what is left is served.
        assert_eq!(
            parse("bytes=0-1,200-300", 100),
            Ranges::One { start: 0, end: 1 }
        );
        let many = format!("bytes={}", vec!["0-0"; 100].join(","));
        assert_eq!(parse(&many, 100), Ranges::Whole);
    }
}
