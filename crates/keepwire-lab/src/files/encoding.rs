//! Choosing a precompressed sibling by `Accept-Encoding` (RFC 9110
//! §12.5.3), as nginx's `gzip_static` (and `brotli_static`) and
//! tower-http's `ServeDir::precompressed_*` do: `style.css.br`,
//! `style.css.zst` or `style.css.gz` next to `style.css` is sent with
//! `Content-Encoding` when the client takes it; nothing is compressed on
//! the fly.
//!
//! q-values count: the coding with the highest q among the files that
//! exist wins; on a tie the usually smaller coding wins (br, zstd, gzip,
//! then identity). `*` stands for every coding the field does not name;
//! `identity` is acceptable unless named (or matched by `*`) with `q=0`.
//! No field at all means identity (what clients that send none expect).

/// A content coding the server can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
    Identity,
}

impl Coding {
    /// The codings with a sibling file, in order of preference on a tie.
    pub const PRECOMPRESSED: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];
}

impl Coding {
    /// The `Content-Encoding` token (`None` for identity).
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Br => Some("br"),
            Coding::Zstd => Some("zstd"),
            Coding::Gzip => Some("gzip"),
            Coding::Identity => None,
        }
    }

    /// The sibling file's extension.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Coding::Br => Some("br"),
            Coding::Zstd => Some("zst"),
            Coding::Gzip => Some("gz"),
            Coding::Identity => None,
        }
    }
}

/// The coding to send, given the field's value and the codings available
/// (identity always is); `None`: nothing available is acceptable (406).
pub fn choose(accept: Option<&str>, available: &[Coding]) -> Option<Coding> {
    let Some(accept) = accept else {
        return Some(Coding::Identity);
    };
    let mut best: Option<(u16, Coding)> = None;
    // Preference order on ties: smaller first.
    for coding in [Coding::Br, Coding::Zstd, Coding::Gzip, Coding::Identity] {
        if coding != Coding::Identity && !available.contains(&coding) {
            continue;
        }
        let q = quality(accept, coding);
        if q > 0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, coding));
        }
    }
    best.map(|(_, c)| c)
}

/// The q-value (in thousandths) the field gives `coding`.
fn quality(accept: &str, coding: Coding) -> u16 {
    let names: &[&str] = match coding {
        Coding::Br => &["br"],
        Coding::Zstd => &["zstd"],
        // `x-gzip` is gzip (RFC 9110 §8.4.1.3).
        Coding::Gzip => &["gzip", "x-gzip"],
        Coding::Identity => &["identity"],
    };
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1000, |(_, v)| qvalue(v.trim()));
        if names.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    match (star, coding) {
        (Some(q), _) => q,
        // Identity is acceptable unless excluded (§12.5.3).
        (None, Coding::Identity) => 1,
        (None, _) => 0,
    }
}

/// `0`, `0.5`, `1.000` → thousandths; anything else counts as 0.
fn qvalue(v: &str) -> u16 {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let frac_val = format!("{frac:0<3}").parse::<u16>().unwrap_or(0);
    match int {
        "0" => frac_val,
        "1" if frac_val == 0 => 1000,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::Coding::*;
    use super::*;

    const BOTH: &[Coding] = &[Br, Gzip];
    const ALL: &[Coding] = &[Br, Zstd, Gzip];

    #[test]
    fn q_values_choose_among_what_exists() {
        assert_eq!(choose(None, BOTH), Some(Identity));
        assert_eq!(choose(Some("gzip, deflate, br"), BOTH), Some(Br));
        assert_eq!(choose(Some("gzip, deflate, br"), &[Gzip]), Some(Gzip));
        assert_eq!(choose(Some("gzip, deflate, br"), &[]), Some(Identity));
        assert_eq!(choose(Some("br;q=0.5, gzip;q=0.8"), BOTH), Some(Gzip));
        assert_eq!(choose(Some("br;q=0, gzip;q=0"), BOTH), Some(Identity));
        assert_eq!(choose(Some("X-GZIP"), BOTH), Some(Gzip));
        assert_eq!(choose(Some("*"), BOTH), Some(Br));
        assert_eq!(choose(Some("*;q=0.5, identity"), BOTH), Some(Identity));
        assert_eq!(choose(Some(""), BOTH), Some(Identity));
        assert_eq!(choose(Some("identity"), BOTH), Some(Identity));
        assert_eq!(choose(Some("gzip, br, zstd"), ALL), Some(Br));
        assert_eq!(choose(Some("gzip, zstd"), ALL), Some(Zstd));
        assert_eq!(choose(Some("gzip, zstd;q=0.5"), ALL), Some(Gzip));
    }

    #[test]
    fn identity_can_be_refused() {
        assert_eq!(choose(Some("identity;q=0"), &[]), None);
        assert_eq!(choose(Some("gzip, identity;q=0"), &[Gzip]), Some(Gzip));
        assert_eq!(choose(Some("gzip, identity;q=0"), &[Br]), None);
        assert_eq!(choose(Some("*;q=0"), &[]), None);
        assert_eq!(choose(Some("br;q=0.001, identity;q=0"), BOTH), Some(Br));
    }

    #[test]
    fn malformed_q_values_count_as_zero() {
        assert_eq!(qvalue("1"), 1000);
        assert_eq!(qvalue("0.25"), 250);
        assert_eq!(qvalue("1.0"), 1000);
        assert_eq!(qvalue("1.5"), 0);
        assert_eq!(qvalue("0.1234"), 0);
        assert_eq!(qvalue("abc"), 0);
    }
}
