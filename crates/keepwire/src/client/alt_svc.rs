//! What origins said about HTTP/3 (`Alt-Svc`, RFC 7838), and where QUIC
//! failed.
//!
//! An origin that answers over TCP with `Alt-Svc: h3=":443"; ma=3600` may
//! be reached over QUIC on that UDP port for `ma` seconds (default 24 h).
//! The client keeps one entry per origin, replaced by each new header and
//! dropped by `Alt-Svc: clear`. Only alternatives on the origin's own host
//! are taken (an empty host, or the same name): another host would be
//! dialled on the word of a response, and a proxy's client must not be
//! steered that way. QUIC that failed to an origin marks it broken for
//! [`BROKEN_FOR`], so later requests go straight to TCP instead of paying
//! the race again (Chromium does the same).
//!
//! Both maps are bounded ([`MAX_ORIGINS`]): a client that talks to whatever
//! its users name (a forward proxy) must not grow per origin seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use super::pool::Origin;

/// How long QUIC is not tried again to an origin where it failed.
pub(crate) const BROKEN_FOR: Duration = Duration::from_secs(5 * 60);

/// Origins remembered at most, in each map.
pub(crate) const MAX_ORIGINS: usize = 1024;

/// Longest `ma` honoured: a week. An origin that wants longer says so again.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Alternatives parsed from one header value at most.
const MAX_ALTERNATIVES: usize = 16;

/// One alternative of an `Alt-Svc` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alternative {
    /// ALPN protocol id (`h3`).
    pub protocol: String,
    /// Host, empty for the origin's own.
    pub host: String,
    pub port: u16,
    /// `ma`, in seconds (default 86400).
    pub max_age: u64,
}

/// A parsed `Alt-Svc` field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AltSvc {
    /// `clear`: forget every alternative of the origin.
    Clear,
    /// The alternatives, in the server's order of preference.
    Alternatives(Vec<Alternative>),
}

/// Parses an `Alt-Svc` value (RFC 7838 §3); `None` if it is malformed.
/// Unknown parameters are ignored, as the RFC asks.
pub(crate) fn parse(value: &str) -> Option<AltSvc> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("clear") {
        return Some(AltSvc::Clear);
    }
    let mut alts = Vec::new();
    for entry in split_outside_quotes(value, ',') {
        if alts.len() == MAX_ALTERNATIVES {
            break;
        }
        let mut params = split_outside_quotes(entry, ';').into_iter();
        let (protocol, authority) = params.next()?.split_once('=')?;
        let authority = authority.trim().strip_prefix('"')?.strip_suffix('"')?;
        let (host, port) = authority.rsplit_once(':')?;
        let mut alt = Alternative {
            protocol: protocol.trim().to_string(),
            host: host.to_string(),
            port: port.parse().ok().filter(|p| *p != 0)?,
            max_age: 86400,
        };
        for p in params {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("ma")
            {
                alt.max_age = v.trim().trim_matches('"').parse().ok()?;
            }
        }
        alts.push(alt);
    }
    (!alts.is_empty()).then_some(AltSvc::Alternatives(alts))
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(s[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The client's memory of HTTP/3 per origin.
#[derive(Default)]
pub(crate) struct AltSvcCache {
    /// The UDP port an origin advertised for `h3`, until when.
    alternatives: Mutex<HashMap<Origin, (u16, Instant)>>,
    /// Origins whose QUIC failed, until when.
    broken: Mutex<HashMap<Origin, Instant>>,
}

impl AltSvcCache {
    /// Learns from a response's `Alt-Svc` fields (the first that parses).
    pub(crate) fn learn(&self, origin: &Origin, headers: &HeaderMap) {
        let Some(parsed) = headers
            .get_all(http::header::ALT_SVC)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse)
        else {
            return;
        };
        let mut map = lock(&self.alternatives);
        let h3 = match parsed {
            AltSvc::Clear => None,
            AltSvc::Alternatives(alts) => alts.into_iter().find(|a| {
                a.protocol == "h3"
                    && (a.host.is_empty() || a.host.eq_ignore_ascii_case(&origin.host))
            }),
        };
        match h3 {
            Some(a) if a.max_age > 0 => {
                let ma = Duration::from_secs(a.max_age).min(MAX_AGE);
                insert_bounded(&mut map, origin, (a.port, Instant::now() + ma), |v| v.1);
            }
            _ => {
                map.remove(origin);
            }
        }
    }

    /// The UDP port to try HTTP/3 on, if the origin advertised one that
    /// has not expired.
    pub(crate) fn port(&self, origin: &Origin) -> Option<u16> {
        let mut map = lock(&self.alternatives);
        match map.get(origin) {
            Some((port, until)) if *until > Instant::now() => Some(*port),
            Some(_) => {
                map.remove(origin);
                None
            }
            None => None,
        }
    }

    /// QUIC failed to `origin`: TCP only for [`BROKEN_FOR`].
    pub(crate) fn mark_broken(&self, origin: &Origin) {
        let until = Instant::now() + BROKEN_FOR;
        insert_bounded(&mut lock(&self.broken), origin, until, |v| *v);
    }

    /// QUIC worked to `origin`.
    pub(crate) fn mark_working(&self, origin: &Origin) {
        lock(&self.broken).remove(origin);
    }

    pub(crate) fn is_broken(&self, origin: &Origin) -> bool {
        lock(&self.broken)
            .get(origin)
            .is_some_and(|until| *until > Instant::now())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Inserts, first dropping expired entries when the map is full, then the
/// one that expires soonest.
fn insert_bounded<V>(
    map: &mut HashMap<Origin, V>,
    origin: &Origin,
    value: V,
    until: impl Fn(&V) -> Instant,
) {
    if map.len() >= MAX_ORIGINS && !map.contains_key(origin) {
        let now = Instant::now();
        map.retain(|_, v| until(v) > now);
        if map.len() >= MAX_ORIGINS
            && let Some(soonest) = map
                .iter()
                .min_by_key(|(_, v)| until(v))
                .map(|(o, _)| o.clone())
        {
            map.remove(&soonest);
        }
    }
    map.insert(origin.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(port: u16) -> Origin {
        Origin {
            scheme: "https".into(),
            host: "example.com".into(),
            port,
        }
    }

    fn headers(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ALT_SVC, http::HeaderValue::from_static(v));
        h
    }

    #[test]
    fn parses_rfc_7838_values() {
        let got = parse(r#"h3=":8443"; ma=3600, h2="alt.example.com:443"; persist=1"#);
        let want = AltSvc::Alternatives(vec![
            Alternative {
                protocol: "h3".into(),
                host: String::new(),
                port: 8443,
                max_age: 3600,
            },
            Alternative {
                protocol: "h2".into(),
                host: "alt.example.com".into(),
                port: 443,
                max_age: 86400,
            },
        ]);
        assert_eq!(got, Some(want));
        assert_eq!(parse(" clear "), Some(AltSvc::Clear));
        for bad in [
            "",
            "h3",
            "h3=:443",
            r#"h3=":0""#,
            r#"h3=":443"; ma=x"#,
            r#"h3=":99999""#,
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_entry_lives_for_its_max_age_and_clear_drops_it() {
        let cache = AltSvcCache::default();
        let o = origin(443);
        cache.learn(&o, &headers(r#"h2=":443", h3=":8443"; ma=60"#));
        assert_eq!(cache.port(&o), Some(8443));
        cache.learn(&o, &headers("clear"));
        assert_eq!(cache.port(&o), None);
        cache.learn(&o, &headers(r#"h3=":8443"; ma=0"#));
        assert_eq!(cache.port(&o), None, "ma=0 is already expired");
        // Another host is not taken on a response's word.
        cache.learn(&o, &headers(r#"h3="evil.example:443""#));
        assert_eq!(cache.port(&o), None);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_broken_origins_heal() {
        let cache = AltSvcCache::default();
        let o = origin(443);
        cache.learn(&o, &headers(r#"h3=":443"; ma=10"#));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(cache.port(&o), Some(443));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.port(&o), None);
        cache.mark_broken(&o);
        assert!(cache.is_broken(&o));
        tokio::time::advance(BROKEN_FOR).await;
        assert!(!cache.is_broken(&o));
    }

    #[test]
    fn the_maps_stay_bounded() {
        let cache = AltSvcCache::default();
        for port in 1..=(MAX_ORIGINS as u16 + 100) {
            cache.learn(&origin(port), &headers(r#"h3=":443""#));
            cache.mark_broken(&origin(port));
        }
        assert_eq!(lock(&cache.alternatives).len(), MAX_ORIGINS);
        assert_eq!(lock(&cache.broken).len(), MAX_ORIGINS);
    }
}
