//! The client's settings, apart from the pool's ([`PoolConfig`]): one
//! struct a caller builds from its defaults, so new settings do not break
//! callers.

use std::sync::Arc;
use std::time::Duration;

use keepwire_proto::Limits;

use super::PoolConfig;

/// Client settings: start from [`Default`] and set what differs, or let
/// [`Client::builder`](super::Client::builder) fill them in.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Pool settings.
    pub pool: PoolConfig,
    /// TCP connect timeout (all addresses).
    pub connect_timeout: Duration,
    /// Time to write a request.
    pub write_timeout: Duration,
    /// Time from request written to response head, and between body reads.
    pub response_timeout: Duration,
    /// Time for the whole request, from the call to the last body byte
    /// read (reqwest's `timeout`); `None` (the default): no such bound,
    /// only the per-phase ones. Applies to [`Client::request`] and
    /// [`Client::get`], not to [`Client::send`] (the proxy's path).
    ///
    /// [`Client::request`]: super::Client::request
    /// [`Client::get`]: super::Client::get
    /// [`Client::send`]: super::Client::send
    pub total_timeout: Option<Duration>,
    /// How long resolved addresses are cached.
    pub dns_ttl: Duration,
    /// Send `Connection: close` on every request (R5.3: one request per
    /// connection, the chapter's serial strategy).
    pub close_after_each: bool,
    /// Protocol limits for responses.
    pub limits: Limits,
    /// Keep response header-name spelling (a `HeaderCase` response
    /// extension), for proxies.
    pub preserve_header_case: bool,
    /// Speak HTTP/2 with prior knowledge (h2c) to `http://` origins: one
    /// multiplexed connection per origin instead of the pool (R4.5).
    /// `https://` origins choose by ALPN whatever this says (see `tls`).
    pub http2_prior_knowledge: bool,
    /// TLS for `https://` origins; `None`: [`super::tls::default_config`]
    /// (the platform's roots). ALPN decides the version per origin: `h2` gets one
    /// multiplexed connection, `http/1.1` (or no ALPN) the pool. The
    /// config's ALPN list is what the client offers.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Never HTTP/2: `https://` offers only `http/1.1` by ALPN (curl's
    /// `--http1.1`).
    pub http1_only: bool,
    /// Addresses that may be dialled, checked after resolution on the
    /// addresses then connected to (a forward proxy's destination policy).
    pub destinations: Option<Arc<crate::destination::DestinationPolicy>>,
    /// Forward proxies ([`super::proxy`]): `http://` origins through the
    /// proxy in absolute-form, `https://` through a `CONNECT` tunnel.
    /// `None`: every origin direct (the environment is not read unless the
    /// caller passes [`super::proxy::ProxyConfig::from_env`]).
    pub proxy: Option<Arc<super::proxy::ProxyConfig>>,
    /// Headers added to every request made with [`Client::request`] or
    /// [`Client::get`] that does not set them itself (a `User-Agent`, say);
    /// [`Client::send`], the proxy's path, adds none.
    ///
    /// [`Client::request`]: super::Client::request
    /// [`Client::get`]: super::Client::get
    /// [`Client::send`]: super::Client::send
    pub default_headers: http::HeaderMap,
    /// When `https://` requests go over HTTP/3 (QUIC on UDP). Default
    /// [`Http3Mode::Off`]: no UDP a caller did not ask for.
    pub http3: Http3Mode,
    /// Send idempotent requests in QUIC 0-RTT early data when a session
    /// ticket allows (RFC 8470, R8.3): a request an attacker could replay
    /// is one that may repeat. Other requests on a connection still in its
    /// 0-RTT phase wait for the handshake. Default off.
    pub early_data: bool,
}

/// When the client speaks HTTP/3 to an `https://` origin.
///
/// QUIC goes to UDP on the origin's port (or the port its `Alt-Svc`
/// names). Except with [`Only`](Http3Mode::Only), a QUIC connection is
/// raced against TCP (QUIC first, TCP after [`QUIC_HEAD_START`] as curl's
/// `--http3` does): whichever connects first carries the request, the
/// other is kept for later ones, and an origin whose QUIC failed goes over
/// TCP for the next five minutes (Chromium's first "broken alternative
/// service" period). Requests through a forward proxy, and HTTP/1.1
/// upgrades, always use TCP.
///
/// [`QUIC_HEAD_START`]: super::QUIC_HEAD_START
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Http3Mode {
    /// TCP only (HTTP/1.1 or HTTP/2 by ALPN).
    #[default]
    Off,
    /// HTTP/3 to origins that advertised it with `Alt-Svc: h3=":port"`,
    /// for as long as its `ma` says (RFC 7838), as browsers do.
    AltSvc,
    /// HTTP/3 first, TCP raced and used if QUIC fails (curl's `--http3`).
    Prefer,
    /// HTTP/3 or nothing (curl's `--http3-only`): an `http://` URL, or an
    /// origin behind a forward proxy, is an error rather than TCP.
    Only,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            pool: PoolConfig::default(),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(60),
            total_timeout: None,
            dns_ttl: Duration::from_secs(60),
            close_after_each: false,
            limits: {
                let mut l = Limits::default();
                l.max_body_bytes = None;
                l
            },
            preserve_header_case: false,
            http2_prior_knowledge: false,
            tls: None,
            http1_only: false,
            destinations: None,
            proxy: None,
            default_headers: http::HeaderMap::new(),
            http3: Http3Mode::Off,
            early_data: false,
        }
    }
}
