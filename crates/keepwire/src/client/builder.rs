//! [`ClientBuilder`]: the client's settings as reqwest spells them, for
//! callers who know that API. It fills in a [`ClientConfig`] (and builds
//! the TLS configuration from the trust settings), so everything it can
//! say, `Client::new(ClientConfig)` can say too; it only reads better and
//! checks what it is given when the client is built.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{Client, ClientConfig, ClientError};
use crate::destination::DestinationPolicy;

/// Builds a [`Client`], reqwest-style; start with [`Client::builder`].
///
/// ```
/// use std::time::Duration;
///
/// let client = keepwire::Client::builder()
///     .connect_timeout(Duration::from_secs(3))
///     .pool_max_per_host(4)
///     .user_agent("my-app/1.0")
///     .build()
///     .expect("valid settings");
/// # drop(client);
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
    /// Extra trust anchors (DER), added to the defaults unless those are off.
    roots: Vec<CertificateDer<'static>>,
    /// Leave out the platform's (or Mozilla's) roots.
    no_builtin_roots: bool,
    accept_invalid_certs: bool,
    /// The first bad value given, reported by `build`.
    error: Option<String>,
}

impl Client {
    /// A [`ClientBuilder`] with the default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}

impl ClientBuilder {
    /// Starts from `config` instead of the defaults.
    pub fn from_config(config: ClientConfig) -> Self {
        ClientBuilder {
            config,
            ..Default::default()
        }
    }

    /// Time to open a TCP connection (every address, Happy Eyeballs) and,
    /// for `https`, to finish the TLS handshake. Default 10 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Time to write a request (between two writes that make progress).
    /// Default 30 s.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.config.write_timeout = d;
        self
    }

    /// Time from the request written to the response head, and between two
    /// reads of the response body (reqwest's `read_timeout`). Default 60 s.
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.config.response_timeout = d;
        self
    }

    /// Time for the whole request, from the call to the last byte of the
    /// response body (reqwest's `timeout`). Default: none, only the
    /// per-phase timeouts.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.total_timeout = Some(d);
        self
    }

    /// Wait at most this long for a connection slot when the per-origin
    /// cap is reached. Default 30 s.
    pub fn pool_wait_timeout(mut self, d: Duration) -> Self {
        self.config.pool.wait_timeout = d;
        self
    }

    /// Open connections per origin (HTTP/1.1; HTTP/2 uses one). Default 6,
    /// as browsers.
    pub fn pool_max_per_host(mut self, n: usize) -> Self {
        self.config.pool.max_per_origin = n.max(1);
        self
    }

    /// How long a connection may sit idle in the pool. Default 90 s; a
    /// server's `Keep-Alive: timeout` shortens it (R5.2).
    pub fn pool_idle_timeout(mut self, d: Duration) -> Self {
        self.config.pool.idle_timeout = d;
        self
    }

    /// No connection reuse: every request opens its own (reqwest's
    /// `pool_max_idle_per_host(0)`).
    pub fn no_pool(mut self) -> Self {
        self.config.pool.reuse = false;
        self
    }

    /// How long resolved addresses are cached. Default 60 s.
    pub fn dns_ttl(mut self, d: Duration) -> Self {
        self.config.dns_ttl = d;
        self
    }

    /// Sends `User-Agent: value` on requests that carry none.
    pub fn user_agent<V>(self, value: V) -> Self
    where
        V: TryInto<HeaderValue>,
        V::Error: std::fmt::Display,
    {
        self.default_header(USER_AGENT, value)
    }

    /// Sends `name: value` on requests that do not set `name` themselves.
    pub fn default_header<V>(mut self, name: HeaderName, value: V) -> Self
    where
        V: TryInto<HeaderValue>,
        V::Error: std::fmt::Display,
    {
        match value.try_into() {
            Ok(v) => {
                self.config.default_headers.insert(name, v);
            }
            Err(e) => self.fail(format!("header {name}: {e}")),
        }
        self
    }

    /// Replaces every default header.
    pub fn default_headers(mut self, headers: HeaderMap) -> Self {
        self.config.default_headers = headers;
        self
    }

    /// Trusts this CA certificate too (DER).
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots.push(CertificateDer::from(der.into()));
        self
    }

    /// Trusts the CA certificates in this PEM text too (a bundle or one).
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Self {
        match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
            Ok(certs) if !certs.is_empty() => self.roots.extend(certs),
            Ok(_) => self.fail("no certificate in the PEM text".into()),
            Err(e) => self.fail(format!("PEM: {e}")),
        }
        self
    }

    /// Whether to trust the platform's roots (or Mozilla's compiled in
    /// where the platform has none). Default on; off, only certificates
    /// added with [`add_root_certificate`](Self::add_root_certificate) are
    /// trusted.
    pub fn tls_built_in_root_certs(mut self, on: bool) -> Self {
        self.no_builtin_roots = !on;
        self
    }

    /// Accepts any server certificate, expired, self-signed or for another
    /// name. For tests and lab servers only: it gives up the
    /// authentication TLS exists for (curl's `-k`).
    pub fn danger_accept_invalid_certs(mut self, on: bool) -> Self {
        self.accept_invalid_certs = on;
        self
    }

    /// Uses this rustls configuration as it is (its ALPN list is what the
    /// client offers); the trust settings above are then ignored.
    pub fn tls_config(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// HTTP/1.1 only: `https://` offers only `http/1.1` by ALPN.
    pub fn http1_only(mut self) -> Self {
        self.config.http1_only = true;
        self.config.http2_prior_knowledge = false;
        self
    }

    /// HTTP/2 without negotiation (h2c) to `http://` origins. `https://`
    /// origins choose by ALPN whatever this says.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.config.http2_prior_knowledge = true;
        self.config.http1_only = false;
        self
    }

    /// When `https://` requests use HTTP/3 ([`Http3Mode`](super::Http3Mode)).
    /// Default off.
    pub fn http3(mut self, mode: super::Http3Mode) -> Self {
        self.config.http3 = mode;
        self
    }

    /// Idempotent requests may go in QUIC 0-RTT early data (RFC 8470).
    /// Default off.
    pub fn early_data(mut self, on: bool) -> Self {
        self.config.early_data = on;
        self
    }

    /// Every request through the `http://` forward proxy at `url` (curl's
    /// `-x`): `http://` origins in absolute-form, `https://` ones through a
    /// `CONNECT` tunnel.
    pub fn proxy(mut self, url: &str) -> Self {
        match super::proxy::ProxyConfig::all(url) {
            Ok(p) => self.config.proxy = Some(Arc::new(p)),
            Err(e) => self.fail(e),
        }
        self
    }

    /// Proxies chosen per origin (an `http` and an `https` proxy, hosts
    /// that go direct).
    pub fn proxy_config(mut self, proxy: super::proxy::ProxyConfig) -> Self {
        self.config.proxy = (!proxy.is_empty()).then(|| Arc::new(proxy));
        self
    }

    /// Proxies from `http_proxy`, `https_proxy`, `all_proxy` and
    /// `no_proxy`, as curl reads them. Unlike reqwest, a client reads no
    /// environment unless asked to.
    pub fn proxy_from_env(mut self) -> Self {
        match super::proxy::ProxyConfig::from_env() {
            Ok(p) => return self.proxy_config(p),
            Err(e) => self.fail(e),
        }
        self
    }

    /// No proxy, whatever was set before.
    pub fn no_proxy(mut self) -> Self {
        self.config.proxy = None;
        self
    }

    /// Dial only the addresses `policy` allows (checked after resolution).
    pub fn destinations(mut self, policy: DestinationPolicy) -> Self {
        self.config.destinations = Some(Arc::new(policy));
        self
    }

    /// Changes anything else in the [`ClientConfig`] being built.
    pub fn configure(mut self, f: impl FnOnce(&mut ClientConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The client, or the first setting that was not valid.
    pub fn build(self) -> Result<Client, ClientError> {
        Ok(Client::new(self.into_config()?))
    }

    /// The [`ClientConfig`] these settings make (TLS included).
    pub fn into_config(mut self) -> Result<ClientConfig, ClientError> {
        if let Some(e) = self.error {
            return Err(ClientError::Config(e));
        }
        if self.config.tls.is_none() {
            self.config.tls = if self.accept_invalid_certs {
                Some(super::tls::insecure_config())
            } else if self.roots.is_empty() && !self.no_builtin_roots {
                None
            } else {
                let roots = if self.no_builtin_roots {
                    rustls::RootCertStore::empty()
                } else {
                    super::tls::default_roots().0
                };
                Some(
                    super::tls::config_with_roots(roots, self.roots)
                        .map_err(ClientError::Config)?,
                )
            };
        }
        Ok(self.config)
    }

    fn fail(&mut self, e: String) {
        self.error.get_or_insert(e);
    }
}
