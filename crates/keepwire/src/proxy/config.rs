//! What the proxy is told: its routes, upstreams, trust boundaries and
//! timeouts, and the one reading of an upstream given as text.
//!
//! Kept apart from the request path so that a reader of `mod.rs` sees what
//! happens to a request, and a reader of this file sees every knob that
//! changes it, each with its default and the peer it is modelled on.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::time::Instant;

use crate::client::{ClientError, Origin};

/// When an idle upstream connection may carry a request (as HAProxy's
/// `http-reuse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReusePolicy {
    /// Any request may use an idle upstream connection.
    Always,
    /// Requests that could not be retried if the idle connection turned out
    /// to be closed (non-idempotent ones, a client connection's first
    /// request, and bodies too large to keep a copy of) get a fresh
    /// upstream connection (HAProxy, Squid).
    Safe,
    /// Every request opens a new upstream connection.
    Never,
}

impl std::str::FromStr for ReusePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(ReusePolicy::Always),
            "safe" => Ok(ReusePolicy::Safe),
            "never" => Ok(ReusePolicy::Never),
            other => Err(format!(
                "unknown reuse policy {other:?} (always, safe, never)"
            )),
        }
    }
}

/// One origin server behind the proxy.
#[derive(Debug)]
pub struct Upstream {
    /// `host:port` (the `Host` it is sent when the client gave none).
    pub authority: String,
    /// The pool key for it.
    origin: Origin,
    /// Refused connections recently: skipped until then (passive health).
    down_until: Mutex<Option<Instant>>,
}

impl Upstream {
    /// An upstream named by a URL (`http://host[:port]`,
    /// `https://host[:port]`: TLS, HTTP/2 or HTTP/1.1 as ALPN decides) or
    /// by `host[:port]` (HTTP), read by [`parse_authority`] as the CLI's
    /// `--upstream` is. Never fails: what that rejects (another scheme, a
    /// path, userinfo) is taken as a host name on port 80 and then fails to
    /// resolve, with its name in the error; parse it instead
    /// (`"http://127.0.0.1:8080".parse::<Upstream>()`) to get the reason.
    pub fn new(upstream: impl Into<String>) -> Self {
        let given: String = upstream.into();
        match parse_authority(&given) {
            Ok(authority) => Self::from_authority(authority),
            Err(_) => Self::from_authority(given),
        }
    }

    /// An upstream from [`parse_authority`]'s form: `host:port`, or
    /// `https://host:port`.
    fn from_authority(authority: String) -> Self {
        let (scheme, authority) = match authority.strip_prefix("https://") {
            Some(a) => ("https", a.to_string()),
            None => ("http", authority),
        };
        let origin = Origin::new(scheme, &authority).unwrap_or_else(|| Origin {
            scheme: scheme.into(),
            host: authority.to_ascii_lowercase(),
            port: if scheme == "https" { 443 } else { 80 },
        });
        Upstream {
            origin,
            authority,
            down_until: Mutex::new(None),
        }
    }

    /// An upstream for a forward-mode origin already parsed.
    pub(crate) fn for_origin(origin: Origin, authority: String) -> Self {
        Upstream {
            origin,
            authority,
            down_until: Mutex::new(None),
        }
    }

    /// The pool key this upstream is reached by (scheme, lowercase host,
    /// port; see [`Origin::new`]).
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub(super) fn is_up(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|t| now >= t)
    }

    pub(super) fn mark_down(&self, cooldown: Duration) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + cooldown);
    }
}

/// An upstream named as [`Upstream::new`] takes it, or why it cannot be
/// (an unknown scheme, a path, userinfo, no host, a bad port).
impl std::str::FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_authority(s).map(Upstream::from_authority)
    }
}

/// Passive health: whether a failed request says its upstream is down. An
/// upstream that could not be reached, or refused the stream unprocessed,
/// is; a full pool is this proxy's own queue, not the upstream's health,
/// and a request that reached the upstream says nothing either way.
pub(super) fn says_upstream_down(e: &ClientError) -> bool {
    e.never_sent() && !matches!(e, ClientError::PoolTimeout)
}

/// Requests for `host` (any, if `None`) whose path starts with `prefix` go
/// to `upstreams`, round-robin.
#[derive(Debug)]
pub struct Route {
    /// Host to match (without port, case-insensitive), or any.
    pub host: Option<String>,
    /// Path prefix to match.
    pub prefix: String,
    /// Where to send them.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Protocols an `Upgrade` may switch to (case-insensitive, version
    /// ignored); default `websocket`. Others are stripped and the request
    /// goes upstream as a plain one.
    pub upgrade: Vec<String>,
    next: AtomicUsize,
}

impl Route {
    /// A route.
    pub fn new(host: Option<String>, prefix: impl Into<String>, upstreams: Vec<Upstream>) -> Self {
        Route {
            host: host.map(|h| h.to_ascii_lowercase()),
            prefix: prefix.into(),
            upstreams: upstreams.into_iter().map(Arc::new).collect(),
            upgrade: vec!["websocket".into()],
            next: AtomicUsize::new(0),
        }
    }

    /// The route with these upgrade protocols allowed (empty: none).
    pub fn with_upgrades<S: Into<String>>(
        mut self,
        protocols: impl IntoIterator<Item = S>,
    ) -> Self {
        self.upgrade = protocols.into_iter().map(Into::into).collect();
        self
    }

    pub(super) fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(h)) => want.eq_ignore_ascii_case(h),
            (Some(_), None) => false,
        };
        host_ok && path.starts_with(&self.prefix)
    }

    /// Upstreams in the order to try: round-robin start, healthy ones first.
    pub(super) fn candidates(&self) -> Vec<Arc<Upstream>> {
        let n = self.upstreams.len();
        let start = self.next.fetch_add(1, Relaxed);
        let now = Instant::now();
        let mut order: Vec<Arc<Upstream>> = (0..n)
            .map(|i| self.upstreams[(start + i) % n].clone())
            .collect();
        order.sort_by_key(|u| !u.is_up(now));
        order
    }
}

/// Proxy settings. Start from [`ProxyConfig::default`] and set fields.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Reverse-proxy routes, most specific first (longest prefix wins).
    pub routes: Vec<Route>,
    /// Accept absolute-form requests and CONNECT to origins the
    /// destination policy allows.
    pub forward: bool,
    /// Client networks allowed to use the reverse routes (default loopback).
    pub allow: Vec<IpNet>,
    /// Client networks allowed to use forward mode (default loopback).
    pub allow_forward: Vec<IpNet>,
    /// Forward-mode destinations opened despite the built-in refusals
    /// (loopback, private, link-local, ...; see [`crate::destination`]).
    pub allow_destination: Vec<IpNet>,
    /// Forward-mode destinations refused (wins over `allow_destination`).
    pub deny_destination: Vec<IpNet>,
    /// Upgrade protocols relayed for forward-mode requests.
    pub forward_upgrade: Vec<String>,
    /// TLS for forward-mode `https://` origins (`None`: the platform's
    /// roots). `upstream_tls` never applies to them.
    pub forward_tls: Option<Arc<rustls::ClientConfig>>,
    /// A tunnel (CONNECT, upgrade) with no byte either way for this long is
    /// closed (HAProxy's `timeout tunnel`; default 1 h).
    pub tunnel_idle_timeout: Duration,
    /// Ports CONNECT may reach (default 443).
    pub connect_ports: Vec<u16>,
    /// Upstream connection reuse.
    pub reuse: ReusePolicy,
    /// Upstream connections per origin.
    pub pool_size: usize,
    /// Upstream idle timeout (shortened by the upstream's hints).
    pub upstream_idle_timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Time for the upstream to answer (504 after).
    pub upstream_timeout: Duration,
    /// How long an upstream that refused connections is skipped.
    pub health_cooldown: Duration,
    /// Our name in `Via` (and for loop detection).
    pub via_name: String,
    /// TLS for configured `https://` upstreams (`None`: the platform's
    /// roots). ALPN picks HTTP/2 or HTTP/1.1 per upstream.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// Speak HTTP/2 with prior knowledge (h2c) to `http://` upstreams: one
    /// multiplexed connection each instead of a pool (R4.5).
    pub upstream_http2: bool,
    /// HTTP/3 over QUIC to configured `https://` upstreams, raced against
    /// TCP and falling back to it ([`Http3Mode::Prefer`]); forward-mode
    /// origins stay on TCP. Default off.
    ///
    /// [`Http3Mode::Prefer`]: crate::client::Http3Mode::Prefer
    pub upstream_http3: bool,
    /// Bytes of a request body kept for a resend (default 64 KiB); a larger
    /// body streams and is not resent once any of it was sent.
    pub retry_body_max: usize,
    /// Bytes of retry copies one client connection's requests in flight may
    /// keep together (default 1 MiB).
    pub retained_per_connection: usize,
    /// Answer TRACE (echo at `Max-Forwards: 0`, forward otherwise); off, it
    /// is refused with 405. The echo never includes credentials.
    pub trace: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            routes: Vec::new(),
            forward: false,
            allow: loopback(),
            allow_forward: loopback(),
            allow_destination: Vec::new(),
            deny_destination: Vec::new(),
            forward_upgrade: vec!["websocket".into()],
            forward_tls: None,
            tunnel_idle_timeout: Duration::from_secs(3600),
            connect_ports: vec![443],
            reuse: ReusePolicy::Safe,
            pool_size: 64,
            upstream_idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            health_cooldown: Duration::from_secs(10),
            via_name: "keepwire".into(),
            upstream_tls: None,
            upstream_http2: false,
            upstream_http3: false,
            retry_body_max: crate::client::REPLAY_LIMIT,
            retained_per_connection: 1024 * 1024,
            trace: false,
        }
    }
}

fn loopback() -> Vec<IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("valid"),
        "::1/128".parse().expect("valid"),
    ]
}

/// An upstream given as `http://host[:port]`, `host[:port]` or
/// `https://host[:port]` (the scheme in any case, a trailing `/` allowed),
/// in its normal form: `host:port`, or `https://host:port`. The authority is read by
/// [`keepwire_proto::host::split_authority`], as every other one is.
pub fn parse_authority(s: &str) -> Result<String, String> {
    let (scheme, rest) = match s.split_once("://") {
        Some((x, rest)) if x.eq_ignore_ascii_case("http") => ("http", rest),
        Some((x, rest)) if x.eq_ignore_ascii_case("https") => ("https", rest),
        Some((other, _)) => {
            return Err(format!(
                "upstream {s:?}: unknown scheme {other:?} (http or https)"
            ));
        }
        None => ("http", s),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(format!("upstream {s:?}: no host"));
    }
    if let Some(at) = rest.find(['/', '?', '#']) {
        // Requests keep their own path: a prefix here would be silently
        // dropped (nginx's `proxy_pass http://h/x/` rewrites; this does not).
        return Err(format!(
            "upstream {s:?}: a path ({:?}) is not supported: give scheme://host:port",
            &rest[at..]
        ));
    }
    if rest.contains('@') {
        // Credentials would be dropped without a word: refuse them.
        return Err(format!("upstream {s:?}: userinfo is not supported"));
    }
    let Some((host, port)) = keepwire_proto::host::split_authority(rest.as_bytes()) else {
        return Err(format!("upstream {s:?}: invalid host or port {rest:?}"));
    };
    if host.is_empty() {
        return Err(format!("upstream {s:?}: no host"));
    }
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(match scheme {
        "https" => format!("https://{host}:{port}"),
        _ => format!("{host}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_upstream_is_marked_down() {
        let io = || std::io::Error::other("x");
        assert!(says_upstream_down(&ClientError::Connect(io())));
        assert!(says_upstream_down(&ClientError::Resolve(io())));
        // Our own pool's wait, and failures after the request left.
        assert!(!says_upstream_down(&ClientError::PoolTimeout));
        assert!(!says_upstream_down(&ClientError::Io(io())));
        assert!(!says_upstream_down(&ClientError::Timeout("reading")));
    }

    #[test]
    fn authorities_parse_with_default_port() {
        assert_eq!(
            parse_authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(parse_authority("origin.test").unwrap(), "origin.test:80");
        assert_eq!(parse_authority("https://x").unwrap(), "https://x:443");
        assert_eq!(
            parse_authority("https://x:8443/").unwrap(),
            "https://x:8443"
        );
        assert!(parse_authority("ftp://x").is_err());
        assert_eq!(parse_authority("[fe80::1]:9000").unwrap(), "[fe80::1]:9000");
        // Found by fuzz/fuzz_targets/authority.rs: `Uri` took this host,
        // and the result ("httpt[fe80:80") did not parse again.
        assert!(parse_authority("httpt[fe80::0::tp:0]/").is_err());
        assert!(parse_authority("[fe80::0::1]").is_err());
        // Also found by it: userinfo hid a bracket, leaving host "%".
        assert!(parse_authority("https://[fe45@%:1]/").is_err());
        assert!(parse_authority("http://user@origin.test:8080").is_err());
        let u = Upstream::new(parse_authority("https://x").unwrap());
        assert_eq!(
            (u.origin.scheme.as_str(), u.authority.as_str()),
            ("https", "x:443")
        );
    }

    #[test]
    fn upstream_urls_are_read_and_their_scheme_chooses_tls() {
        let u = Upstream::new("http://127.0.0.1:8080");
        assert_eq!(
            (u.origin(), u.authority.as_str()),
            (
                &Origin::new("http", "127.0.0.1:8080").unwrap(),
                "127.0.0.1:8080"
            )
        );
        let u = Upstream::new("https://x:8443/");
        assert_eq!(u.origin(), &Origin::new("https", "x:8443").unwrap());
        let u: Upstream = "HTTPS://x".parse().unwrap();
        assert_eq!(u.origin(), &Origin::new("https", "x:443").unwrap());
        let u: Upstream = "http://[::1]:9000/".parse().unwrap();
        assert_eq!(u.origin(), &Origin::new("http", "[::1]:9000").unwrap());
        let u: Upstream = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(u.origin(), &Origin::new("http", "127.0.0.1:8080").unwrap());
    }

    #[test]
    fn other_schemes_and_paths_are_refused_with_the_reason() {
        let err = |s: &str| s.parse::<Upstream>().expect_err(s);
        assert!(err("ftp://x:21").contains("unknown scheme \"ftp\""));
        assert!(err("http://x:1/api").contains("a path (\"/api\") is not supported"));
        assert!(err("https://x/a/b/").contains("a path (\"/a/b\")"));
        assert!(err("http://x:1?q=1").contains("a path (\"?q=1\")"));
        assert!(err("http://u@x:1").contains("userinfo"));
        assert!(err("http://").contains("no host"));
        assert!(err("http://x:http").contains("invalid host or port"));
        // `new` never fails: what it cannot read is a host name that
        // cannot resolve.
        assert_eq!(Upstream::new("ftp://x:21").origin().port, 80);
    }

    #[test]
    fn an_upstream_and_a_url_name_the_same_origin() {
        for (upstream, url) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080/"),
            ("Origin.test:80", "http://origin.test/"),
            ("https://x:443", "https://X/"),
            ("[::1]:9000", "http://[::1]:9000/"),
            ("https://[fe80::1]:8443", "https://[fe80::1]:8443/"),
        ] {
            let from_url = crate::client::origin_of(&url.parse().unwrap()).unwrap();
            assert_eq!(Upstream::new(upstream).origin(), &from_url, "{upstream}");
        }
    }
}
