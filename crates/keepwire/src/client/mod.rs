//! The HTTP/1.x client: a pool per origin, retries by rule, and timings per
//! request.
//!
//! A request goes through up to a few *attempts*. Each attempt checks out a
//! connection (an idle one, probed; or a new one within the per-origin cap),
//! writes the request, and reads the response head. When an attempt fails,
//! [`retry::decide`] looks at how far it got and whether the connection was
//! reused, and either sends the request again on a fresh connection or
//! reports the error (R8.3). The response carries a [`RequestMeta`]
//! extension saying which connection served it, whether it was reused, how
//! many retries it took and how long each phase was (R1.1, R1.2).
//!
//! Response bodies stream; the connection returns to the pool when its body
//! ends (and is dropped if the body is truncated, R8.2, or the reader gives
//! up on it).

pub(crate) mod conn;
pub mod connect;
mod h2;
mod pipeline;
pub mod pool;
pub mod replay;
pub mod retry;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::header::{CONNECTION, HOST};
use http::{HeaderValue, Request, Response, Uri, Version};
use keepwire_proto::{BodyKind, Conn, ConnConfig, Event, Limits, RequestHead, Role};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::body::{Body, BodyError};
use crate::transport::Transport;
use conn::ClientConn;
pub use conn::{ConnMeta, TlsInfo};
use connect::Resolver;
pub use pipeline::PipelinedResponse;
use pool::{Checkout, Pool};
pub use pool::{Origin, PoolConfig};
pub use replay::{REPLAY_LIMIT, ReplayBody, RetainBudget, RetainGauge};
use retry::{AttemptState, RetryDecision};

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
    /// `time_appconnect` minus `time_namelookup`).
    pub connect: Option<Duration>,
    /// Until the last request byte was written.
    pub written: Duration,
    /// Until the first byte of the response head was complete.
    pub first_byte: Duration,
    /// Until the whole body was read, when the client read it itself
    /// (pipelined responses); `None` for a streamed body, whose reader
    /// decides when it ends.
    pub complete: Option<Duration>,
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

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Pool settings.
    pub pool: PoolConfig,
    /// TCP connect timeout (all addresses).
    pub connect_timeout: Duration,
    /// Time to write a request.
    pub write_timeout: Duration,
    /// Time from request written to response head, and between body reads.
    pub response_timeout: Duration,
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
    /// Speak HTTP/2 with prior knowledge (h2c): one multiplexed connection
    /// per origin instead of the pool (R4.5).
    pub http2_prior_knowledge: bool,
    /// TLS for `https://` origins; `None`: [`tls::default_config`]
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
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            pool: PoolConfig::default(),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(60),
            dns_ttl: Duration::from_secs(60),
            close_after_each: false,
            limits: Limits {
                max_body_bytes: None,
                ..Limits::default()
            },
            preserve_header_case: false,
            http2_prior_knowledge: false,
            tls: None,
            http1_only: false,
            destinations: None,
        }
    }
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
    resolver: Resolver,
    metrics: ClientMetrics,
    next_id: AtomicU64,
}

/// An HTTP/1.x client with a connection pool. Cheap to clone; clones share
/// the pool.
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
    pub async fn request(&self, req: Request<Body>) -> Result<Response<Body>, ClientError> {
        let (mut parts, body) = req.into_parts();
        let (origin, head) = head_for(&mut parts)?;
        let mut body = ReplayBody::new(body, REPLAY_LIMIT);
        body.prefill().await.map_err(ClientError::Body)?;
        let fresh = parts.extensions.get::<FreshConnection>().is_some();
        self.send(&origin, head, &mut body, fresh).await
    }

    /// Sends an already-formed head (origin-form target, `Host` set) and a
    /// body to `origin`: the path for callers that hold those parts
    /// already, such as the proxy, which forwards without re-parsing URLs.
    /// A retry resends the body only if `body` could keep all of it that
    /// was sent; on failure `body` is left rewound when it can go again
    /// (to another origin), else as far as it got.
    pub async fn send(
        &self,
        origin: &Origin,
        mut head: RequestHead,
        body: &mut ReplayBody,
        mut fresh: bool,
    ) -> Result<Response<Body>, ClientError> {
        let cfg = &self.inner.config;
        let h2 = if origin.scheme == "https" {
            !cfg.http1_only && !self.speaks_http1(origin)
        } else {
            cfg.http2_prior_knowledge
        };
        // `None`: ALPN chose HTTP/1.1; the pool takes over. (Boxed, as the
        // connect below: inline they made every HTTP/1 request's future,
        // and a proxy handler's around it, 10 KB to allocate and copy.)
        if h2 && let Some(resp) = Box::pin(self.send_h2(origin, &head, body)).await? {
            return Ok(resp);
        }
        let started = Instant::now();
        if self.inner.config.close_after_each {
            head.headers
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let mut retries = 0u32;
        loop {
            match self
                .attempt(origin, &mut head, body, started, fresh, retries)
                .await
            {
                Ok(resp) => return Ok(resp),
                Err((state, reused, err)) => {
                    // A timeout after the request went out is a slow server,
                    // not the stale-connection race (R8.1): sending it again
                    // would double both the wait and the server's work.
                    let slow =
                        matches!(err, ClientError::Timeout(_)) && state != AttemptState::NotSent;
                    // A connection that could not be opened (all addresses
                    // tried, or its TLS handshake failed) would fail the same
                    // way again at once: report it, so a proxy fails over.
                    let hopeless = matches!(
                        err,
                        ClientError::Body(_) | ClientError::Connect(_) | ClientError::Resolve(_)
                    );
                    let decision = if slow || hopeless {
                        RetryDecision::Fail
                    } else {
                        retry::decide(&head.method, &head.headers, state, reused, retries)
                    };
                    // The body must be whole again for a resend: a large one
                    // that was partly sent is not (its copy was dropped).
                    match decision {
                        RetryDecision::RetryFresh if body.rewind() => {
                            tracing::debug!(%origin, ?state, reused, error = %err, "retrying on a fresh connection");
                            self.inner.metrics.retries.fetch_add(1, Relaxed);
                            retries += 1;
                            fresh = true;
                        }
                        _ => {
                            if err.is_truncated() {
                                self.inner.metrics.truncated.fetch_add(1, Relaxed);
                            }
                            body.rewind();
                            return Err(err);
                        }
                    }
                }
            }
        }
    }

    /// One attempt: checkout, write, read the head, hand the body over.
    async fn attempt(
        &self,
        origin: &Origin,
        head: &mut RequestHead,
        body: &mut ReplayBody,
        started: Instant,
        fresh: bool,
        retries: u32,
    ) -> Result<Response<Body>, (AttemptState, bool, ClientError)> {
        let inner = &self.inner;
        let mut timings = Timings::default();
        let (checkout, dropped) = inner
            .pool
            .checkout(origin, fresh)
            .await
            .map_err(|()| (AttemptState::NotSent, false, ClientError::PoolTimeout))?;
        inner
            .metrics
            .retired_idle
            .fetch_add(dropped.expired as u64, Relaxed);
        inner
            .metrics
            .stale_idle
            .fetch_add(dropped.stale as u64, Relaxed);
        timings.queued = started.elapsed();
        // From here the slot is ours; it goes back to the pool on every way
        // out, including this future being dropped mid-attempt (a proxy
        // whose client went away).
        let mut slot = SlotGuard {
            pool: &inner.pool,
            origin,
            armed: true,
        };
        let (mut conn, reused) = match checkout {
            Checkout::Reused(c) => (*c, true),
            Checkout::Connect => {
                match Box::pin(self.connect(origin, started, &mut timings)).await {
                    Ok(c) => (c, false),
                    Err(e) => return Err((AttemptState::NotSent, false, e)),
                }
            }
        };
        if reused {
            inner.metrics.reused.fetch_add(1, Relaxed);
        }
        // R5.1: an HTTP/1.0 server keeps the connection only if asked.
        if conn.http10 && !head.headers.contains_key(CONNECTION) {
            head.headers
                .insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        let index = conn.requests;
        let cfg = &inner.config;
        let result = async {
            if let Err((state, err)) = conn.send_streaming(head, body, cfg.write_timeout).await {
                // The server may have answered before it stopped reading
                // (an early 413, then a close that broke our write): that
                // answer is the one to relay, not the write error.
                let answered = state != AttemptState::NotSent
                    && matches!(err, ClientError::Io(_))
                    && conn.has_response_bytes();
                if !answered {
                    return Err((state, err));
                }
                tracing::debug!(error = %err, "request cut short by an early response");
            }
            timings.written = started.elapsed();
            let head = conn
                .read_head(Instant::now() + cfg.response_timeout)
                .await?;
            timings.first_byte = started.elapsed();
            Ok(head)
        }
        .await;
        let (resp_head, kind) = match result {
            Ok(h) => h,
            Err((state, err)) => return Err((state, reused, err)),
        };
        let meta = RequestMeta {
            conn: conn.meta,
            reused,
            conn_request_index: index,
            retries,
            timings,
        };
        if conn.proto.is_upgraded() {
            // 101 Switching Protocols (R9.1): the connection leaves the pool
            // and belongs to the caller, through the response's OnUpgrade
            // (`slot` gives its place in the pool back).
            let read_buf = conn.proto.take_read_buffer();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(crate::server::Upgraded::new(conn.stream, read_buf));
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = resp_head.status;
            *resp.version_mut() = resp_head.version;
            *resp.headers_mut() = resp_head.headers;
            resp.extensions_mut().insert(meta);
            resp.extensions_mut()
                .insert(crate::server::OnUpgrade(Arc::new(std::sync::Mutex::new(
                    Some(rx),
                ))));
            return Ok(resp);
        }
        // The body (or `response_body` itself) returns the slot.
        slot.armed = false;
        let body = self
            .response_body(origin, conn, kind)
            .map_err(|e| (AttemptState::PartlyAnswered, reused, e))?;
        let mut resp = Response::new(body);
        *resp.status_mut() = resp_head.status;
        *resp.version_mut() = resp_head.version;
        *resp.headers_mut() = resp_head.headers;
        resp.extensions_mut().insert(meta);
        if !resp_head.header_case.is_empty() {
            resp.extensions_mut().insert(resp_head.header_case);
        }
        Ok(resp)
    }

    /// Resolves `origin` and opens a TCP connection to it (Happy Eyeballs),
    /// recording the DNS and connect phases.
    pub(crate) async fn open_tcp(
        &self,
        origin: &Origin,
        timings: &mut Timings,
    ) -> Result<tokio::net::TcpStream, ClientError> {
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
        started: Instant,
        timings: &mut Timings,
    ) -> Result<ClientConn, ClientError> {
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
        let _ = started;
        let id = self.inner.next_id.fetch_add(1, Relaxed) + 1;
        self.inner.metrics.connections_opened.fetch_add(1, Relaxed);
        let proto = Conn::new(
            Role::Client,
            ConnConfig {
                limits: cfg.limits.clone(),
                preserve_header_case: cfg.preserve_header_case,
                ..ConnConfig::default()
            },
        );
        ClientConn::new(stream, proto, id).map_err(ClientError::Connect)
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

    /// The response body: whole if it is already buffered (the connection
    /// goes straight back to the pool), else streamed by a task that returns
    /// the connection when the body ends.
    fn response_body(
        &self,
        origin: &Origin,
        mut conn: ClientConn,
        kind: BodyKind,
    ) -> Result<Body, ClientError> {
        let pool = &self.inner.pool;
        let (chunks, ended) = match conn.buffered_body() {
            Ok(v) => v,
            Err(e) => {
                pool.release(origin);
                return Err(e);
            }
        };
        if ended {
            pool.checkin(origin, conn);
            return Ok(match chunks.len() {
                0 => Body::empty(),
                1 => Body::full(chunks.into_iter().next().unwrap_or_default()),
                _ => Body::full(chunks.concat()),
            });
        }
        let length = match kind {
            BodyKind::Length(n) => Some(n),
            _ => None,
        };
        let (tx, rx) = mpsc::channel(4);
        let client = self.clone();
        let origin = origin.clone();
        tokio::spawn(async move {
            for c in chunks {
                if tx.send(Ok(c)).await.is_err() {
                    client.inner.pool.release(&origin);
                    return;
                }
            }
            let timeout = client.inner.config.response_timeout;
            loop {
                match conn.next_event(Instant::now() + timeout).await {
                    Ok(Event::Data(b)) => {
                        if tx.send(Ok(b)).await.is_err() {
                            // The reader gave up: the rest of the body is
                            // unread, so the connection cannot be reused.
                            client.inner.pool.release(&origin);
                            return;
                        }
                    }
                    Ok(Event::End(_)) => {
                        conn.finish_response();
                        client.inner.pool.checkin(&origin, conn);
                        return;
                    }
                    Ok(_) => {
                        let _ = tx.send(Err(BodyError::Closed)).await;
                        client.inner.pool.release(&origin);
                        return;
                    }
                    Err((_, err)) => {
                        if err.is_truncated() {
                            client.inner.metrics.truncated.fetch_add(1, Relaxed);
                        }
                        let _ = tx
                            .send(Err(match err {
                                ClientError::Protocol(e) => BodyError::Protocol(e),
                                other => BodyError::Source(Box::new(other)),
                            }))
                            .await;
                        client.inner.pool.release(&origin);
                        return;
                    }
                }
            }
        });
        Ok(Body::incoming(rx, None, length))
    }
}

/// A checked-out pool slot, released on drop unless disarmed.
struct SlotGuard<'a> {
    pool: &'a Pool,
    origin: &'a Origin,
    armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(self.origin);
        }
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
/// default port filled in; see [`Origin::new`]). Only `http` and `https`
/// URLs have one; userinfo is not part of it.
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
