//! The client: a pool of HTTP/1.1 connections per origin, or one HTTP/2
//! connection (ALPN `h2` over TLS, or h2c with prior knowledge), retries by
//! rule, and timings per request.
//!
//! A request goes through up to a few *attempts*. Each attempt checks out a
//! connection (an idle one, probed; or a new one within the per-origin cap),
//! writes the request, and reads the response head (`send.rs`; HTTP/2
//! streams in `h2.rs`). When an attempt fails,
//! [`retry::decide`] looks at how far it got and whether the connection was
//! reused, and either sends the request again on a fresh connection or
//! reports the error (R8.3). The response carries a [`RequestMeta`]
//! extension saying which connection served it, whether it was reused, how
//! many retries it took and how long each phase was (R1.1, R1.2).
//!
//! Response bodies stream; the connection returns to the pool when its body
//! ends (and is dropped if the body is truncated, R8.2, or the reader gives
//! up on it).

mod alt_svc;
mod builder;
mod config;
pub(crate) mod conn;
pub mod connect;
mod deadline;
mod h2;
mod h3;
mod pipeline;
pub mod pool;
pub mod proxy;
pub mod replay;
pub mod retry;
mod send;
pub mod tls;
pub mod verbose;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri, Version};
use keepwire_proto::{Conn, ConnConfig, RequestHead, Role};
use tokio::time::Instant;

use crate::body::{Body, BodyError};
use crate::transport::Transport;
pub use builder::ClientBuilder;
pub use config::{ClientConfig, Http3Mode};
use conn::ClientConn;
pub use conn::ConnMeta;
use connect::Resolver;
pub use h3::{Http3Error, QUIC_HEAD_START, QuicInfo};
pub use pipeline::{PipelinedResponse, Unanswered};
pub use pool::{Origin, PoolConfig};
use pool::{Pool, SlotGuard};
pub use replay::{REPLAY_LIMIT, ReplayBody, RetainBudget, RetainGauge};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL cannot be requested (no host, unsupported scheme, ...).
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// Name resolution failed.
    #[error("{0}")]
    Resolve(std::io::Error),
    /// No connection could be made.
    #[error("{0}")]
    Connect(std::io::Error),
    /// The connection failed while sending or receiving.
    #[error("connection error: {0}")]
    Io(std::io::Error),
    /// A phase took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// No connection slot came free in time (the per-origin cap is reached).
    #[error("no connection available within the pool wait timeout")]
    PoolTimeout,
    /// The server broke HTTP/1.x, or the message was truncated (R8.2).
    #[error("{0}")]
    Protocol(keepwire_proto::Error),
    /// The server sent something out of order.
    #[error("unexpected message from the server")]
    Unexpected,
    /// The request body failed.
    #[error("{0}")]
    Body(BodyError),
    /// The HTTP/2 connection or stream failed.
    #[error("HTTP/2: {0}")]
    Http2(::h2::Error),
    /// The QUIC connection or an HTTP/3 stream failed.
    #[error("HTTP/3: {0}")]
    Http3(h3::Http3Error),
    /// An extended CONNECT (RFC 8441) cannot be sent to this origin.
    #[error("extended CONNECT (RFC 8441): {0}")]
    ExtendedConnect(&'static str),
    /// The forward proxy failed or refused ([`proxy`]).
    #[error("{0}")]
    Proxy(proxy::ProxyError),
    /// A [`ClientBuilder`] setting was not valid.
    #[error("client settings: {0}")]
    Config(String),
}

impl ClientError {
    /// The connection ended before the message did (R8.2).
    pub fn is_truncated(&self) -> bool {
        matches!(self, ClientError::Protocol(e) if e.is_truncated())
    }
}

/// Timings of one request, from the moment it was handed to the client
/// (R1.2). Phases a reused connection skips are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Waiting for a connection slot (the per-origin cap, R4.2).
    pub queued: Duration,
    /// Name resolution (zero when cached).
    pub dns: Option<Duration>,
    /// TCP handshake, and for `https` the TLS handshake after it (curl's
    /// `time_appconnect` minus `time_namelookup`); over HTTP/3, the QUIC
    /// handshake (which is the TLS handshake too).
    pub connect: Option<Duration>,
    /// The TLS handshake alone, the part of `connect` after the TCP
    /// handshake (`https` only; HAR's `ssl`, which `connect` includes too).
    pub tls: Option<Duration>,
    /// Until the last request byte was written.
    pub written: Duration,
    /// Until the first byte of the response head was complete.
    pub first_byte: Duration,
    /// Until the whole body was read, when the client read it itself
    /// (pipelined responses); `None` for a streamed body, whose reader
    /// decides when it ends.
    pub complete: Option<Duration>,
}

/// A race TCP won: when the race began and what TCP's connection cost
/// (DNS, TCP and TLS handshakes, the QUIC head start included in
/// `connect`), for the request that then goes over it to report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpWon {
    pub(crate) started: Instant,
    pub(crate) timings: Timings,
}

impl TcpWon {
    /// Puts the race's phases into the first request's timings (taken from
    /// its wait for a slot, which the race's time would otherwise fill).
    pub(crate) fn apply(&self, t: &mut Timings) {
        let spent = self.timings.dns.unwrap_or_default() + self.timings.connect.unwrap_or_default();
        t.queued = t.queued.saturating_sub(spent);
        t.dns = self.timings.dns;
        t.connect = self.timings.connect;
        t.tls = self.timings.tls;
    }
}

/// What the client did for a request: a response extension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestMeta {
    /// The connection that answered.
    pub conn: ConnMeta,
    /// It had carried requests before.
    pub reused: bool,
    /// Requests this connection had answered before this one.
    pub conn_request_index: u64,
    /// Retries this request needed (R8.3).
    pub retries: u32,
    /// Phase timings of the successful attempt, measured from the start of
    /// the request (so they include failed attempts).
    pub timings: Timings,
    /// The request went in QUIC 0-RTT early data and the server accepted
    /// it ([`ClientConfig::early_data`]; the connection's side of it is
    /// [`QuicInfo::zero_rtt`]).
    pub early_data: bool,
}

/// Client counters.
#[derive(Debug, Default)]
pub struct ClientMetrics {
    /// Connections opened.
    pub connections_opened: AtomicU64,
    /// Requests sent on a reused connection.
    pub reused: AtomicU64,
    /// Retries made (R8.3).
    pub retries: AtomicU64,
    /// Idle connections retired before the server's close (R5.2).
    pub retired_idle: AtomicU64,
    /// Idle connections found already closed by the server (R8.1).
    pub stale_idle: AtomicU64,
    /// Responses truncated (R8.2).
    pub truncated: AtomicU64,
}

struct Inner {
    config: ClientConfig,
    /// TLS as configured: offers what the config's ALPN list says.
    tls_any: Arc<rustls::ClientConfig>,
    /// TLS for pool connections: offers `http/1.1` only.
    tls_http1: Arc<rustls::ClientConfig>,
    /// `https` origins whose ALPN answer was not `h2`, with the connection
    /// that learned it (kept for the pool's first request).
    http1_origins: std::sync::Mutex<std::collections::HashMap<Origin, Option<Transport>>>,
    pool: Pool,
    h2: h2::H2Conns,
    h3: h3::H3State,
    resolver: Resolver,
    metrics: ClientMetrics,
    next_id: AtomicU64,
}

/// An HTTP client with a connection pool. Cheap to clone; clones share
/// the pool.
///
/// Requests to one origin share its connections; each response says which
/// connection served it and whether it was reused ([`RequestMeta`]):
///
/// ```
/// use keepwire::{Body, Client, RequestMeta, Server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = Server::builder()
/// #     .listen("127.0.0.1:0".parse()?)
/// #     .bind()?
/// #     .spawn(|_req: http::Request<Body>| async { http::Response::new(Body::from("ok")) });
/// # let addr = server.local_addr();
/// let client = Client::builder().user_agent("example/1.0").build()?;
/// for i in 0..3 {
///     let resp = client.get(&format!("http://{addr}/{i}")).await?;
///     let meta = *resp.extensions().get::<RequestMeta>().expect("always there");
///     resp.into_body().collect(1 << 20).await?; // the connection goes back to the pool
///     assert_eq!(meta.reused, i > 0);
/// }
///
/// // A body streamed from anything that yields bytes (sent chunked).
/// let chunks = futures_util::stream::iter(["a", "b"].map(|s| Ok::<_, std::io::Error>(s.into())));
/// let req = http::Request::post(format!("http://{addr}/upload"))
///     .body(Body::from_stream(chunks))?;
/// assert_eq!(client.request(req).await?.status(), 200);
/// # drop(client);
/// # server.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ClientConfig::default())
    }
}

impl Client {
    /// A client with these settings.
    pub fn new(config: ClientConfig) -> Self {
        let tls = config.tls.clone().unwrap_or_else(tls::default_config);
        let mut http1 = (*tls).clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls_http1 = Arc::new(http1);
        Client {
            inner: Arc::new(Inner {
                tls_any: if config.http1_only {
                    tls_http1.clone()
                } else {
                    tls
                },
                tls_http1,
                http1_origins: Default::default(),
                pool: Pool::new(config.pool.clone()),
                h2: h2::H2Conns::default(),
                h3: h3::H3State::default(),
                resolver: Resolver::new(config.dns_ttl),
                config,
                metrics: ClientMetrics::default(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// The client's counters.
    pub fn metrics(&self) -> &ClientMetrics {
        &self.inner.metrics
    }

    /// `(open, idle)` connections to the origin of `url`.
    pub fn pool_counts(&self, url: &Uri) -> (usize, usize) {
        origin_of(url).map_or((0, 0), |o| self.inner.pool.counts(&o))
    }

    /// The idle timeout the pool learned from the server's closes, if any.
    pub fn learned_idle_timeout(&self, url: &Uri) -> Option<Duration> {
        origin_of(url)
            .ok()
            .and_then(|o| self.inner.pool.learned_close(&o))
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Response<Body>, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ClientError::InvalidUrl(format!("{url}: {e}")))?;
        self.request(
            Request::get(uri)
                .body(Body::empty())
                .expect("a GET with a URI is valid"),
        )
        .await
    }

    /// Sends a request. The body streams; up to [`REPLAY_LIMIT`] bytes of
    /// it are kept so the request can be resent (R8.3), a body already in
    /// memory (`Body::full`) whatever its size.
    ///
    /// A CONNECT carrying a [`Protocol`](crate::upgrade::Protocol)
    /// extension is sent as an HTTP/2 extended CONNECT (RFC 8441): a 2xx
    /// answer hands the stream over through the response's
    /// [`OnUpgrade`](crate::upgrade::OnUpgrade), as a 101 does over
    /// HTTP/1.1; a server that did not advertise
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL` is [`ClientError::ExtendedConnect`].
    ///
    /// With a total timeout ([`ClientConfig::total_timeout`]), the request
    /// fails with [`ClientError::Timeout`] if the response head is not in
    /// by then, and its body with an error if it is not read by then.
    pub async fn request(&self, req: Request<Body>) -> Result<Response<Body>, ClientError> {
        let Some(total) = self.inner.config.total_timeout else {
            return self.request_within(req).await;
        };
        let deadline = Instant::now() + total;
        let resp = tokio::time::timeout_at(deadline, self.request_within(req))
            .await
            .map_err(|_| ClientError::Timeout("(the total timeout)"))??;
        Ok(resp.map(|body| deadline::until(body, deadline, total)))
    }

    async fn request_within(&self, req: Request<Body>) -> Result<Response<Body>, ClientError> {
        let (mut parts, body) = req.into_parts();
        for (name, value) in &self.inner.config.default_headers {
            if !parts.headers.contains_key(name) {
                parts.headers.insert(name, value.clone());
            }
        }
        let (mut origin, mut head) = head_for(&mut parts)?;
        if origin.scheme == "http"
            && let Some(via) = self.proxy_for(&origin).cloned()
        {
            // RFC 9112 §3.2.2: a proxy is sent the absolute-form, on
            // connections pooled per proxy whatever the origin.
            head.target = parts.uri.clone();
            if let Some(auth) = via.authorization() {
                let name = http::header::PROXY_AUTHORIZATION;
                head.headers.entry(name).or_insert(auth);
            }
            origin = via.origin();
        }
        let mut body = ReplayBody::new(body, REPLAY_LIMIT);
        body.prefill().await.map_err(ClientError::Body)?;
        let fresh = parts.extensions.get::<FreshConnection>().is_some();
        // A CONNECT with a `:protocol` (RFC 8441) switches an HTTP/2 stream.
        if parts.method == http::Method::CONNECT
            && let Some(protocol) = parts.extensions.remove::<crate::upgrade::Protocol>()
        {
            return self.extended_connect(&origin, &head, protocol).await;
        }
        self.send(&origin, head, &mut body, fresh).await
    }

    /// Resolves `origin` and opens a TCP connection to it (Happy Eyeballs),
    /// recording the DNS and connect phases.
    pub(crate) async fn open_tcp(
        &self,
        origin: &Origin,
        timings: &mut Timings,
    ) -> Result<tokio::net::TcpStream, ClientError> {
        if let Some(proxy) = self.proxy_for(origin) {
            return self.open_via_proxy(&proxy.clone(), origin, timings).await;
        }
        let cfg = &self.inner.config;
        let t = Instant::now();
        let addrs = self.resolve(origin).await?;
        timings.dns = Some(t.elapsed());
        let t = Instant::now();
        let stream = connect::happy_eyeballs(&addrs, connect::ATTEMPT_DELAY, cfg.connect_timeout)
            .await
            .map_err(ClientError::Connect)?;
        timings.connect = Some(t.elapsed());
        Ok(stream)
    }

    /// The addresses `origin` resolves to that may be dialled (all of them
    /// unless [`ClientConfig::destinations`] says otherwise).
    pub(crate) async fn resolve(
        &self,
        origin: &Origin,
    ) -> Result<Vec<std::net::SocketAddr>, ClientError> {
        let (addrs, _cached) = self
            .inner
            .resolver
            .resolve(&origin.host, origin.port)
            .await
            .map_err(ClientError::Resolve)?;
        match &self.inner.config.destinations {
            Some(policy) => policy
                .filter(&origin.host, addrs)
                .map_err(ClientError::Connect),
            None => Ok(addrs),
        }
    }

    async fn connect(
        &self,
        origin: &Origin,
        timings: &mut Timings,
    ) -> Result<Box<ClientConn>, ClientError> {
        let cfg = &self.inner.config;
        let spare = self.take_http1_spare(origin);
        let stream = match spare {
            Some(s) => s,
            None => {
                let tcp = self.open_tcp(origin, timings).await?;
                if origin.scheme == "https" {
                    let tls = self.inner.tls_http1.clone();
                    self.tls_connect(origin, tcp, tls, timings).await?.into()
                } else {
                    tcp.into()
                }
            }
        };
        let id = self.inner.next_id.fetch_add(1, Relaxed) + 1;
        self.inner.metrics.connections_opened.fetch_add(1, Relaxed);
        let mut config = ConnConfig::default();
        config.limits = cfg.limits.clone();
        config.preserve_header_case = cfg.preserve_header_case;
        let proto = Conn::new(Role::Client, config);
        ClientConn::new(stream, proto, id)
            .map(Box::new)
            .map_err(ClientError::Connect)
    }

    /// TLS on top of `stream`, offering what `tls` says by ALPN.
    pub(crate) async fn tls_connect(
        &self,
        origin: &Origin,
        stream: tokio::net::TcpStream,
        tls: Arc<rustls::ClientConfig>,
        timings: &mut Timings,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        let cfg = &self.inner.config;
        let t = Instant::now();
        let host = origin.host.trim_matches(['[', ']']).to_string();
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| ClientError::InvalidUrl(format!("{}: {e}", origin.host)))?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        // A handshake that fails or never ends is a connect failure: no
        // request byte was sent, so another upstream may take the request
        // and this one counts as down (a proxy's failover).
        let stream = tokio::time::timeout(cfg.connect_timeout, connector.connect(name, stream))
            .await
            .map_err(|_| {
                ClientError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("TLS handshake timed out after {:?}", cfg.connect_timeout),
                ))
            })?
            .map_err(|e| ClientError::Connect(std::io::Error::other(format!("TLS: {e}"))))?;
        timings.tls = Some(t.elapsed());
        timings.connect = Some(timings.connect.unwrap_or_default() + t.elapsed());
        Ok(stream)
    }

    /// Forgets what idle origins left behind: idle connections past their
    /// limit, origins with nothing open (keeping at most `max_origins`),
    /// expired DNS answers, ALPN memories of forgotten origins and ended
    /// HTTP/2 connections. A client that talks to a few origins never needs
    /// this; one that talks to whatever its users name (a forward proxy)
    /// calls it periodically so its memory does not grow per origin seen.
    pub fn sweep_idle(&self, max_origins: usize) {
        let inner = &self.inner;
        let expired = inner.pool.sweep(max_origins);
        inner
            .metrics
            .retired_idle
            .fetch_add(expired as u64, Relaxed);
        inner.resolver.sweep(max_origins);
        self.http1_origins()
            .retain(|origin, _| inner.pool.knows(origin));
        inner.h2.sweep();
    }

    /// Whether ALPN told us this `https` origin speaks HTTP/1.1.
    fn speaks_http1(&self, origin: &Origin) -> bool {
        self.http1_origins().contains_key(origin)
    }

    /// Records that `origin` answered ALPN with HTTP/1.1 on `conn`.
    pub(crate) fn learned_http1(&self, origin: &Origin, conn: Transport) {
        self.http1_origins().insert(origin.clone(), Some(conn));
    }

    fn take_http1_spare(&self, origin: &Origin) -> Option<Transport> {
        self.http1_origins().get_mut(origin)?.take()
    }

    fn http1_origins(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Origin, Option<Transport>>> {
        let map = self.inner.http1_origins.lock();
        map.unwrap_or_else(|e| e.into_inner())
    }
}

/// Request extension: send this request on a new connection, never an idle
/// one (a proxy's `--reuse safe` for requests that could not be retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshConnection;

/// The origin a request goes to, and its head in origin-form with `Host`
/// (added if missing) and the header spelling it carries, if any.
pub(crate) fn head_for(
    parts: &mut http::request::Parts,
) -> Result<(Origin, RequestHead), ClientError> {
    let origin = origin_of(&parts.uri)?;
    let target: Uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| ClientError::InvalidUrl(format!("{e}")))?;
    let mut head = RequestHead::new(parts.method.clone(), target, Version::HTTP_11);
    head.headers = std::mem::take(&mut parts.headers);
    if let Some(case) = parts.extensions.remove::<keepwire_proto::HeaderCase>() {
        head.header_case = case;
    }
    if !head.headers.contains_key(HOST) {
        let host = match parts.uri.port_u16() {
            Some(p) => format!("{}:{p}", origin.host),
            None => origin.host.clone(),
        };
        let value = HeaderValue::from_str(&host)
            .map_err(|_| ClientError::InvalidUrl(format!("bad host {host}")))?;
        head.headers.insert(HOST, value);
    }
    Ok((origin, head))
}

/// The origin a URL talks to: its pool key (lowercase scheme and host,
/// default port filled in). Only `http` and `https` URLs have one.
pub fn origin_of(uri: &Uri) -> Result<Origin, ClientError> {
    let scheme = uri.scheme_str().unwrap_or("http");
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(ClientError::InvalidUrl(format!(
            "{uri}: only http:// and https:// URLs are supported"
        )));
    }
    let authority = uri.authority().map_or("", |a| {
        a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h)
    });
    Origin::new(scheme, authority)
        .ok_or_else(|| ClientError::InvalidUrl(format!("{uri}: no valid host")))
}
