//! Forward proxies, as curl uses them: `http://` requests go to the proxy
//! in absolute-form (RFC 9112 §3.2.2), `https://` ones through a `CONNECT`
//! tunnel (RFC 9110 §9.3.6) with TLS to the origin inside it, so the proxy
//! sees only the host and port.
//!
//! Which proxy applies is decided per origin by [`ProxyConfig`], built by
//! hand (curl's `-x`) or from the environment with curl's rules
//! ([`ProxyConfig::from_env`]): `http_proxy` in lowercase only for
//! `http://` (an uppercase `HTTP_PROXY` can be set by a CGI request's
//! `Proxy:` header, "httpoxy"), `https_proxy`/`HTTPS_PROXY` for `https://`,
//! `all_proxy`/`ALL_PROXY` for both when the specific one is unset, and
//! `no_proxy`/`NO_PROXY` (or curl's `--noproxy`) for the hosts that go
//! direct. The proxy itself is spoken to in cleartext (`http://` proxies).
//!
//! A proxy's failures are errors of their own ([`ProxyError`]), so a user
//! learns that the proxy, not the origin, is unreachable or said no.

use std::io;
use std::net::IpAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::pool::Origin;
use super::{Client, ClientError, Timings};

/// The largest `CONNECT` response head read from a proxy.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// One proxy: the host and port of an `http://` proxy URL, and its
/// credentials if the URL carries `user:password@` (sent as
/// `Proxy-Authorization: Basic`, RFC 9110 §11.7.1, as curl does).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyUrl {
    /// Host (an IPv6 literal keeps its brackets).
    pub host: String,
    /// Port (curl's default for a proxy is 1080).
    pub port: u16,
    /// `Basic` credentials, base64 (never printed by `Debug` or `Display`).
    basic: Option<String>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.basic.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `%XX` decoded, as curl decodes a proxy URL's user and password.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ProxyUrl {
    /// `http://host[:port]`, or `host[:port]` as curl takes it; other
    /// schemes (`https://`, `socks5://`) are refused.
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "proxy {text}: only http:// proxies are supported, not {scheme}://"
                ));
            }
            None => text,
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (userinfo, authority) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let basic = userinfo.map(|u| {
            use base64::Engine as _;
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let pair = format!("{}:{}", percent_decode(user), percent_decode(pass));
            base64::engine::general_purpose::STANDARD.encode(pair)
        });
        let origin = Origin::new("http", authority)
            .filter(|_| !authority.is_empty())
            .ok_or_else(|| format!("proxy {text}: no valid host"))?;
        let explicit_port = authority
            .parse::<http::uri::Authority>()
            .ok()
            .and_then(|a| a.port_u16());
        Ok(ProxyUrl {
            host: origin.host,
            port: explicit_port.unwrap_or(1080),
            basic,
        })
    }
}

impl ProxyUrl {
    /// The `Proxy-Authorization` value its credentials make, if any.
    pub fn authorization(&self) -> Option<http::HeaderValue> {
        let mut v = http::HeaderValue::from_str(&format!("Basic {}", self.basic.as_ref()?)).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// The pool key of connections to the proxy itself.
    pub fn origin(&self) -> Origin {
        Origin {
            scheme: "http".into(),
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

/// Which proxy each origin goes through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// For `http://` origins.
    pub http: Option<ProxyUrl>,
    /// For `https://` origins (through `CONNECT`).
    pub https: Option<ProxyUrl>,
    /// Hosts that go direct: curl's `NO_PROXY` list (`*` for all; a name
    /// matches itself and its subdomains, a leading dot optional; IP
    /// addresses and CIDR blocks match addresses written in the URL).
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    /// Every origin through `url` (curl's `-x URL`).
    pub fn all(url: &str) -> Result<ProxyConfig, String> {
        let p = ProxyUrl::parse(url)?;
        Ok(ProxyConfig {
            http: Some(p.clone()),
            https: Some(p),
            no_proxy: Vec::new(),
        })
    }

    /// From the process environment with curl's rules (see the module doc).
    pub fn from_env() -> Result<ProxyConfig, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`ProxyConfig::from_env`] with variables from `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<ProxyConfig, String> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let all = set("all_proxy").or_else(|| set("ALL_PROXY"));
        let http = set("http_proxy").or_else(|| all.clone());
        let https = set("https_proxy")
            .or_else(|| set("HTTPS_PROXY"))
            .or_else(|| all.clone());
        let no_proxy = set("no_proxy").or_else(|| set("NO_PROXY"));
        Ok(ProxyConfig {
            http: http.as_deref().map(ProxyUrl::parse).transpose()?,
            https: https.as_deref().map(ProxyUrl::parse).transpose()?,
            no_proxy: no_proxy.as_deref().map(split_list).unwrap_or_default(),
        })
    }

    /// Replaces the no-proxy list (curl's `--noproxy LIST`, which overrides
    /// `NO_PROXY`).
    pub fn no_proxy(mut self, list: &str) -> ProxyConfig {
        self.no_proxy = split_list(list);
        self
    }

    /// No proxy for any origin.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy `origin` goes through, if any.
    pub fn for_origin(&self, origin: &Origin) -> Option<&ProxyUrl> {
        let proxy = if origin.scheme == "https" {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }?;
        (!self
            .no_proxy
            .iter()
            .any(|e| no_proxy_matches(e, &origin.host)))
        .then_some(proxy)
    }
}

fn split_list(list: &str) -> Vec<String> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// curl's `NO_PROXY` matching of one entry against a URL's host.
fn no_proxy_matches(entry: &str, host: &str) -> bool {
    if entry == "*" {
        return true;
    }
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    let entry = entry.trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match entry.split_once('/') {
            Some((net, bits)) => match (net.parse::<IpAddr>(), bits.parse::<u32>()) {
                (Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                _ => false,
            },
            None => entry.parse::<IpAddr>() == Ok(ip),
        };
    }
    let entry = entry.trim_start_matches('.');
    host == entry || host.strip_suffix(entry).is_some_and(|h| h.ends_with('.'))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// What went wrong with the proxy rather than the origin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy's name did not resolve (curl exit 5).
    #[error("cannot resolve the proxy {proxy}: {error}")]
    Resolve {
        /// The proxy.
        proxy: ProxyUrl,
        /// Why.
        error: io::Error,
    },
    /// No connection to the proxy (curl exit 7).
    #[error("cannot connect to the proxy {proxy}: {error}")]
    Connect {
        /// The proxy.
        proxy: ProxyUrl,
        /// Why.
        error: io::Error,
    },
    /// The proxy answered the `CONNECT` with a non-2xx status, e.g. 407
    /// (it wants credentials) or 502/403 (it would not or could not reach
    /// the origin); curl exit 56.
    #[error("the proxy {proxy} refused CONNECT {target}: {status}")]
    Refused {
        /// The proxy.
        proxy: ProxyUrl,
        /// `host:port` asked for.
        target: String,
        /// Its status.
        status: u16,
    },
    /// The `CONNECT` exchange failed (the proxy closed, sent garbage, or
    /// took longer than the connect timeout).
    #[error("CONNECT through the proxy {proxy}: {error}")]
    Tunnel {
        /// The proxy.
        proxy: ProxyUrl,
        /// Why.
        error: io::Error,
    },
}

impl Client {
    /// The proxy `origin` goes through, per [`super::ClientConfig::proxy`].
    pub(crate) fn proxy_for(&self, origin: &Origin) -> Option<&ProxyUrl> {
        self.inner.config.proxy.as_ref()?.for_origin(origin)
    }

    /// A TCP connection to `proxy` that reaches `origin`: for `https://`
    /// a `CONNECT` tunnel, for `http://` the proxy itself (requests then go
    /// in absolute-form). DNS and connect are the proxy's; the `CONNECT`
    /// exchange counts as connect.
    pub(crate) async fn open_via_proxy(
        &self,
        proxy: &ProxyUrl,
        origin: &Origin,
        timings: &mut Timings,
    ) -> Result<TcpStream, ClientError> {
        let cfg = &self.inner.config;
        let t = Instant::now();
        let (addrs, _) = self
            .inner
            .resolver
            .resolve(&proxy.host, proxy.port)
            .await
            .map_err(|error| {
                ClientError::Proxy(ProxyError::Resolve {
                    proxy: proxy.clone(),
                    error,
                })
            })?;
        timings.dns = Some(t.elapsed());
        let t = Instant::now();
        let mut stream = super::connect::happy_eyeballs(
            &addrs,
            super::connect::ATTEMPT_DELAY,
            cfg.connect_timeout,
        )
        .await
        .map_err(|error| {
            ClientError::Proxy(ProxyError::Connect {
                proxy: proxy.clone(),
                error,
            })
        })?;
        if origin.scheme == "https" {
            let target = format!("{}:{}", origin.host, origin.port);
            let tunnel = connect_tunnel(&mut stream, &target, proxy.authorization());
            match tokio::time::timeout(cfg.connect_timeout, tunnel).await {
                Ok(Ok(200..=299)) => {}
                Ok(Ok(status)) => {
                    return Err(ClientError::Proxy(ProxyError::Refused {
                        proxy: proxy.clone(),
                        target,
                        status,
                    }));
                }
                Ok(Err(error)) => {
                    return Err(ClientError::Proxy(ProxyError::Tunnel {
                        proxy: proxy.clone(),
                        error,
                    }));
                }
                Err(_) => {
                    return Err(ClientError::Proxy(ProxyError::Tunnel {
                        proxy: proxy.clone(),
                        error: io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
                    }));
                }
            }
        }
        timings.connect = Some(t.elapsed());
        Ok(stream)
    }
}

/// Sends `CONNECT target` and reads the proxy's answer head, byte by byte
/// up to its blank line so no byte of the tunnel is consumed; returns the
/// status.
async fn connect_tunnel(
    stream: &mut TcpStream,
    target: &str,
    auth: Option<http::HeaderValue>,
) -> io::Result<u16> {
    let mut request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: keepwire/{}\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    if let Some(auth) = auth {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).await?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_CONNECT_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "CONNECT response head too large",
            ));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection during CONNECT",
            ));
        }
        head.push(byte[0]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
        (Some(v), Some(status)) if v.starts_with("HTTP/1.") => Ok(status),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response to CONNECT: {line:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        super::super::origin_of(&url.parse().unwrap()).unwrap()
    }

    #[test]
    fn proxy_urls_as_curl_reads_them() {
        let p = ProxyUrl::parse("http://127.0.0.1:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 3128));
        let p = ProxyUrl::parse("proxy.example").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.example", 1080));
        let p = ProxyUrl::parse("http://[::1]:8080/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("[::1]", 8080));
        assert!(ProxyUrl::parse("socks5://h:1").is_err());
    }

    #[test]
    fn credentials_become_basic_and_are_not_printed() {
        let p = ProxyUrl::parse("http://us%40er:p%3Ass@h:1").unwrap();
        // base64("us@er:p:ss")
        assert_eq!(p.authorization().unwrap(), "Basic dXNAZXI6cDpzcw==");
        assert!(!format!("{p:?} {p}").contains("dXN"), "{p:?}");
        assert!(
            ProxyUrl::parse("http://h:1")
                .unwrap()
                .authorization()
                .is_none()
        );
    }

    #[tokio::test]
    async fn connect_sends_credentials_and_a_407_is_a_proxy_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let config = super::super::ClientConfig {
            proxy: Some(std::sync::Arc::new(
                ProxyConfig::all(&format!("http://u:p@127.0.0.1:{port}")).unwrap(),
            )),
            ..Default::default()
        };
        let client = Client::new(config);
        let err = client.get("https://origin.test/").await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Proxy(ProxyError::Refused { status: 407, .. })
            ),
            "{err:?}"
        );
        let head = tokio::time::timeout(std::time::Duration::from_secs(5), seen)
            .await
            .unwrap()
            .unwrap();
        assert!(
            head.starts_with("CONNECT origin.test:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{head}"
        );
    }

    /// A proxy that answers CONNECT with `reply` (sent in a loop when
    /// `endless`) or, with `None`, never answers.
    async fn hostile_proxy(reply: Option<&'static [u8]>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let Some(reply) = reply else {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                return;
            };
            // Bounded: 64 × 1 KiB is four times the cap.
            for _ in 0..64 {
                if s.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
        port
    }

    fn through(port: u16, connect_timeout: std::time::Duration) -> Client {
        let mut config = super::super::ClientConfig {
            proxy: Some(std::sync::Arc::new(
                ProxyConfig::all(&format!("http://127.0.0.1:{port}")).unwrap(),
            )),
            ..Default::default()
        };
        config.connect_timeout = connect_timeout;
        Client::new(config)
    }

    #[tokio::test]
    async fn an_endless_connect_reply_head_is_capped() {
        static HEADER: [u8; 1024] = [b'a'; 1024];
        let port = hostile_proxy(Some(&HEADER)).await;
        let client = through(port, std::time::Duration::from_secs(10));
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.get("https://origin.test/"),
        )
        .await
        .expect("the cap ends it, not the timeout")
        .unwrap_err();
        assert!(format!("{err}").contains("too large"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_proxy_times_out_at_the_connect_timeout() {
        let port = hostile_proxy(None).await;
        let client = through(port, std::time::Duration::from_millis(300));
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.get("https://origin.test/"),
        )
        .await
        .expect("the connect timeout ends it")
        .unwrap_err();
        assert!(matches!(err, ClientError::Proxy(_)), "{err:?}");
    }

    #[test]
    fn environment_follows_curl() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            ProxyConfig::from_vars(move |n| {
                vars.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap()
        };
        // httpoxy: uppercase HTTP_PROXY is ignored.
        let c = env(&[("HTTP_PROXY", "http://h:1")]);
        assert!(c.for_origin(&origin("http://a/")).is_none());
        let c = env(&[("http_proxy", "http://h:1"), ("HTTPS_PROXY", "http://s:2")]);
        assert_eq!(c.for_origin(&origin("http://a/")).unwrap().port, 1);
        assert_eq!(c.for_origin(&origin("https://a/")).unwrap().port, 2);
        let c = env(&[
            ("ALL_PROXY", "http://h:3"),
            ("NO_PROXY", "example.com,10.0.0.0/8"),
        ]);
        assert_eq!(c.for_origin(&origin("https://a/")).unwrap().port, 3);
        assert!(c.for_origin(&origin("http://www.example.com/")).is_none());
        assert!(c.for_origin(&origin("http://10.1.2.3/")).is_none());
        assert!(c.for_origin(&origin("http://notexample.com/")).is_some());
        let c = env(&[("ALL_PROXY", "http://h:3")]).no_proxy("*");
        assert!(c.for_origin(&origin("http://a/")).is_none());
    }
}
