//! The origin server (HTTP/1.x, HTTP/2 by prior knowledge or ALPN, and
//! HTTP/3 over QUIC beside every TLS listener).
//!
//! The accept loop owns graceful shutdown; each connection is one task that
//! `accept` admits under the connection limits (total and per client IP,
//! R4.2, R5.6) and hands, by protocol, to `conn::serve` (HTTP/1, an
//! `async fn` loop over the sans-IO [`keepwire_proto::Conn`]) or to `h2`.
//! With TLS, a QUIC endpoint on each listener's port (UDP) admits its
//! connections under the same limits and serves them with `h3`.
//!
//! Defaults sit beside nginx's (and say where they differ):
//!
//! | setting | keepwire | nginx |
//! |---|---|---|
//! | idle keep-alive timeout | 75 s, advertised as `Keep-Alive: timeout=75` | `keepalive_timeout 75s` (not advertised) |
//! | min idle before a shutdown/limit close | 1 s | `keepalive_min_timeout 0` |
//! | header read timeout | 60 s | `client_header_timeout 60s` |
//! | body read timeout (between reads) | 60 s | `client_body_timeout 60s` |
//! | write timeout (between writes) | 60 s | `send_timeout 60s` |
//! | requests per connection | 1000 | `keepalive_requests 1000` |
//! | connection max age | 1 h | `keepalive_time 1h` |
//! | max connections | 10 000 | `worker_connections 512` × workers |
//! | max connections per client IP | 256 | unlimited (`limit_conn` off) |
//! | pipelining depth (handlers run ahead) | 1 | 1 (sequential) |
//! | HTTP/1 client leaves while its answer is owed | the socket is watched (readiness, then a 1-byte peek): FIN or RST fires the request's [`PeerGone`]; a pipelined request stops the watch; the answer is still written (half-close, R8.4) | `ngx_http_upstream_check_broken_connection` (proxied requests, `proxy_ignore_client_abort off`: 499) |
//! | lingering close | 5 s / 2 s idle / 256 KiB | `lingering_time 30s`, `lingering_timeout 5s` |
//! | HTTP/2 streams (handlers) in flight per connection | 128; a stream over it is refused (REFUSED_STREAM) | `http2_max_concurrent_streams 128` |
//! | HTTP/2 streams the client resets (each cancels its handler) | over 2 × the stream limit (min 100) in 10 s: GOAWAY `ENHANCE_YOUR_CALM` | 2 × `http2_max_concurrent_streams` new streams per event loop turn |
//! | HTTP/2 reset streams left in the accept queue | 20, then GOAWAY `ENHANCE_YOUR_CALM` (h2's default) | — |
//! | HTTP/2 streams reset for the client's protocol errors | 1024, then GOAWAY `ENHANCE_YOUR_CALM` (h2's default) | — |
//! | HTTP/2 request body | `max_body` (1 MiB): a larger `content-length` gets 413 before the handler runs, streamed bytes are counted; `body_timeout` between DATA frames (408) | `client_max_body_size`, `client_body_timeout` |
//! | HTTP/2 flow-control stall | no window for `write_timeout`: the stream is reset; with no DATA progress on the connection meanwhile, it is closed (GOAWAY, 1 s to flush) | `send_timeout` |
//! | HTTP/2 header list (HPACK-decoded), CONTINUATION | `max_head_bytes` (32 KiB); h2 caps CONTINUATION frames by it | `large_client_header_buffers` |
//! | HTTP/2 SETTINGS / PING floods | h2 queues one ACK / PONG at a time and reads no further while it cannot write it | — |
//! | HTTP/3 (QUIC, same port as each TLS listener) | on with TLS (`http3`); TCP responses carry `Alt-Svc: h3=":PORT"; ma=86400` | `listen ... quic`, `add_header Alt-Svc` by hand |
//! | HTTP/3 streams in flight per connection | 128 (`http3_max_streams`): the client's bidirectional stream credit, so a stream over it cannot be opened | `http3_max_concurrent_streams 128` |
//! | HTTP/3 streams the client stops (each cancels its handler) | over 2 × the stream limit (min 100) in 10 s: CONNECTION_CLOSE `H3_EXCESSIVE_LOAD` | — |
//! | HTTP/3 handshake, request head, body, flow-control stall | `header_timeout`; `max_head_bytes` (431); `max_body` (413) and `body_timeout`; `write_timeout` per write, then reset (and close without progress) | `client_header_timeout`, ... |
//! | QUIC address validation (Retry) | an unvalidated client that would pass half the per-IP or the total cap (`quic_retry`) | `quic_retry off` |
//! | HTTP/3 receive windows | 256 KiB per stream, 1 MiB per connection | `http3_stream_buffer_size 64k` |
//! | HTTP/3 0-RTT early data | accepted; only idempotent methods run in it (`EarlyData` extension), others get 425 | `ssl_early_data off` |
//! | HTTP/2 extended CONNECT (RFC 8441, WebSocket over HTTP/2) | advertised; a switched stream counts as a stream in flight (and in `tunnels_open`) until its `Upgraded` drops, keeps the idle timeout off, ends with GOAWAY + `shutdown_timeout`; both directions bounded by the peer's windows | not supported |

mod accept;
pub mod access;
pub(crate) mod conn;
mod h2;
mod h3;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use keepwire_proto::Limits;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::body::Body;
use crate::metrics::ServerMetrics;
use crate::net::{Linger, ListenOptions};
use crate::upgrade::OnUpgrade;

pub use conn::gone::PeerGone;
pub use h3::{EarlyData, QuicRetry};

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// What answers requests. Implemented for every
/// `Fn(Request<Body>) -> impl Future<Output = Response<Body>>`.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, req: Request<Body>) -> ResponseFuture;

    /// Answers one request read from an HTTP/1 connection, as it was read.
    /// The default builds the [`Request`] view and calls [`Handler::call`];
    /// a handler that passes the head on (the proxy) takes it as it is and
    /// never builds the view.
    fn call_incoming(&self, req: Incoming) -> ResponseFuture {
        self.call(req.into_request())
    }
}

/// A request as an HTTP/1 connection read it: proto's head (field names
/// as spelled and in the order received, when the server keeps them), the
/// body, and the facts about the connection that the [`Request`] view
/// carries as extensions.
#[derive(Debug)]
pub struct Incoming {
    /// The request head.
    pub head: keepwire_proto::RequestHead,
    /// The request body.
    pub body: Body,
    /// The connection it arrived on (`None` for a request that was built,
    /// not read).
    pub info: Option<ConnInfo>,
    /// On upgrade and CONNECT requests: the connection once the response
    /// switched protocols.
    pub on_upgrade: Option<OnUpgrade>,
    /// Fires when the client went away (the default never fires).
    pub peer_gone: PeerGone,
}

impl Incoming {
    /// The [`Request`] view: the head's parts, with [`ConnInfo`], the
    /// [`keepwire_proto::HeaderCase`] (if any was kept), [`OnUpgrade`] and
    /// [`PeerGone`] as extensions.
    pub fn into_request(self) -> Request<Body> {
        let head = self.head;
        let mut req = Request::new(self.body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.target;
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers;
        let ext = req.extensions_mut();
        if let Some(info) = self.info {
            ext.insert(info);
        }
        if !head.header_case.is_empty() {
            ext.insert(head.header_case);
        }
        if let Some(on_upgrade) = self.on_upgrade {
            ext.insert(on_upgrade);
        }
        if self.peer_gone.is_live() {
            ext.insert(self.peer_gone);
        }
        req
    }

    /// A request given as the [`Request`] view (HTTP/2, or built by a
    /// caller), its extensions of [`Incoming::into_request`] taken back
    /// out (others are dropped).
    pub fn from_request(req: Request<Body>) -> Self {
        let (mut parts, body) = req.into_parts();
        let mut head = keepwire_proto::RequestHead::new(parts.method, parts.uri, parts.version);
        head.headers = parts.headers;
        head.header_case = parts.extensions.remove().unwrap_or_default();
        Incoming {
            head,
            body,
            info: parts.extensions.get::<ConnInfo>().copied(),
            on_upgrade: parts.extensions.remove(),
            peer_gone: parts.extensions.remove().unwrap_or_default(),
        }
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(Request<Body>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    fn call(&self, req: Request<Body>) -> ResponseFuture {
        Box::pin(self(req))
    }
}

/// Facts about the connection a request arrived on (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Server-wide connection number.
    pub id: u64,
    /// The client's address (R1.1: with `local`, the 4-tuple).
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// 1-based index of this request on the connection.
    pub request_index: u64,
}

/// Server settings. See the module docs for defaults beside nginx's.
/// Outside this crate, start from `Config::default()` and set fields (more
/// settings may come).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Idle time between requests before we close.
    pub idle_timeout: Duration,
    /// Advertise the idle timeout in `Keep-Alive: timeout=` (R5.2).
    pub advertise_keep_alive: bool,
    /// A connection that just answered is not closed for idleness by a
    /// shutdown or limit within this window (R8.1 race).
    pub keep_alive_min: Duration,
    /// Time to receive a whole request head (slowloris guard).
    pub header_timeout: Duration,
    /// Time between two reads of a request body.
    pub body_timeout: Duration,
    /// Time between two successful writes.
    pub write_timeout: Duration,
    /// Requests per connection; the last gets `Connection: close`.
    pub max_requests: Option<u64>,
    /// A connection is not kept alive beyond this age.
    pub max_age: Option<Duration>,
    /// Open connections at once; over it, 503 and close.
    pub max_connections: usize,
    /// Open connections per client IP; over it, 503 and close.
    pub max_connections_per_ip: usize,
    /// Handlers that may run ahead of the response being written (a
    /// non-idempotent request's handler always runs alone, R7.4).
    pub pipeline_depth: usize,
    /// Protocol limits (head, lines, headers, trailers, body).
    pub limits: Limits,
    /// Lingering-close bounds.
    pub linger: Linger,
    /// Time given to in-flight requests on shutdown.
    pub shutdown_timeout: Duration,
    /// Listener options.
    pub listen: ListenOptions,
    /// Read `Proxy-Connection` as `Connection` (R6.2; for proxies).
    pub proxy_connection: bool,
    /// Keep header-name spelling: requests carry a
    /// [`keepwire_proto::HeaderCase`] extension, and one on a response is
    /// used when writing it (for proxies).
    pub preserve_header_case: bool,
    /// Accept HTTP/2 with prior knowledge (h2c) on the same cleartext
    /// listeners: a connection that opens with the HTTP/2 preface is served
    /// by [`h2`](self) instead (R4.5). Default on. Over TLS, ALPN decides
    /// (see `tls`).
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection (nginx
    /// `http2_max_concurrent_streams` is 128).
    pub http2_max_streams: u32,
    /// Serve TLS on every listener (rustls). ALPN `h2` gets HTTP/2;
    /// `http/1.1`, or no ALPN, gets the HTTP/1 driver over TLS, with the same
    /// persistence, pipelining, timeouts and lingering close as cleartext
    /// (and `close_notify` before the TCP close). Offer what you want served
    /// in the config's `alpn_protocols`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve HTTP/3 over QUIC beside every TLS listener, on the same port
    /// (UDP), with the same certificate (QUIC needs TLS 1.3; without
    /// `tls` this does nothing). TCP responses then carry
    /// `Alt-Svc: h3=":PORT"`. Default on.
    pub http3: bool,
    /// Streams in flight per HTTP/3 connection: the bidirectional stream
    /// credit the client gets (like `http2_max_streams`).
    pub http3_max_streams: u32,
    /// When a QUIC client whose address is unvalidated is sent a Retry
    /// before it counts in the connection limits (default: when it would
    /// take its address, or the server, over half the cap).
    pub quic_retry: QuicRetry,
    /// How cleartext HTTP/1 connections talk to the kernel: epoll (the
    /// default) or io_uring (Linux). TLS and HTTP/2 connections always use
    /// epoll. `Builder::bind` fails if the backend cannot run here.
    pub io: crate::transport::IoBackend,
    /// Where one line per request goes (`None`, the default: nowhere); see
    /// [`access`] for the format.
    pub access_log: Option<Arc<access::AccessLog>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: Duration::from_secs(75),
            advertise_keep_alive: true,
            keep_alive_min: Duration::from_secs(1),
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            max_requests: Some(1000),
            max_age: Some(Duration::from_secs(3600)),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            pipeline_depth: 1,
            limits: Limits::default(),
            linger: Linger::default(),
            shutdown_timeout: Duration::from_secs(30),
            listen: ListenOptions::default(),
            proxy_connection: false,
            preserve_header_case: false,
            http2: true,
            http2_max_streams: 128,
            tls: None,
            http3: true,
            http3_max_streams: 128,
            quic_retry: QuicRetry::OverHalf,
            io: Default::default(),
            access_log: None,
        }
    }
}

/// Builds a [`Server`].
#[derive(Debug, Default)]
pub struct Builder {
    addrs: Vec<SocketAddr>,
    /// Listeners bound by someone else (or the first that failed to convert).
    taken: Vec<io::Result<TcpListener>>,
    config: Config,
}

/// A listening socket bound elsewhere that a server can take over: a
/// `std::net::TcpListener` (made non-blocking here) or a tokio one. For
/// socket activation (systemd passes the socket as a file descriptor:
/// `std::net::TcpListener::from_raw_fd`), and for tests that bind first
/// and learn the port before the server exists.
pub trait IntoListener {
    /// The tokio listener (needs a tokio runtime to register with).
    fn into_listener(self) -> io::Result<TcpListener>;
}

impl IntoListener for TcpListener {
    fn into_listener(self) -> io::Result<TcpListener> {
        Ok(self)
    }
}

impl IntoListener for std::net::TcpListener {
    fn into_listener(self) -> io::Result<TcpListener> {
        // tokio assumes a non-blocking socket and does not check.
        self.set_nonblocking(true)?;
        TcpListener::from_std(self)
    }
}

impl Builder {
    /// Adds a listen address (IPv4 or IPv6; port 0 picks a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.addrs.push(addr);
        self
    }

    /// Adds a listener that is bound and listening already. Its socket
    /// options are whatever its owner set: [`Config::listen`] (backlog,
    /// `SO_REUSEPORT`) applies only to addresses given with
    /// [`listen`](Self::listen); per-connection options (`TCP_NODELAY`)
    /// apply to every connection either way. Call within a tokio runtime.
    pub fn listener(mut self, listener: impl IntoListener) -> Self {
        self.taken.push(listener.into_listener());
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Changes the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Binds every address (and takes the listeners given).
    pub fn bind(self) -> io::Result<Server> {
        if self.addrs.is_empty() && self.taken.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listen address given",
            ));
        }
        self.config.io.check()?;
        let mut listeners = self
            .taken
            .into_iter()
            .map(|l| {
                l.map_err(|e| io::Error::new(e.kind(), format!("cannot use the listener: {e}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let quic = match (&self.config.tls, self.config.http3) {
            (Some(tls), true) => Some(h3::server_config(tls, &self.config)?),
            _ => None,
        };
        let mut endpoints = Vec::new();
        if let Some(q) = &quic {
            for l in &listeners {
                endpoints.push(h3::bind_beside(l, q)?);
            }
        }
        for a in &self.addrs {
            let (l, endpoint) = h3::bind_pair(*a, self.config.listen, quic.as_ref())?;
            listeners.push(l);
            endpoints.extend(endpoint);
        }
        Ok(Server {
            listeners,
            endpoints,
            shared: Arc::new(Shared {
                config: self.config,
                metrics: ServerMetrics::default(),
                per_ip: Mutex::new(HashMap::new()),
                next_id: Default::default(),
            }),
        })
    }
}

/// State every connection task shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) metrics: ServerMetrics,
    /// Open connections per client IP.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A bound server, ready to run.
///
/// Bind, [`spawn`](Server::spawn) a handler (any `async fn(Request<Body>)
/// -> Response<Body>`, or a [`Handler`]), and stop it gracefully:
///
/// ```
/// use http::{Request, Response};
/// use keepwire::{Body, Server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .listen("127.0.0.1:0".parse()?)
///     .configure(|c| c.idle_timeout = std::time::Duration::from_secs(30))
///     .bind()?
///     .spawn(|req: Request<Body>| async move {
///         Response::new(Body::from(format!("you asked for {}\n", req.uri().path())))
///     });
///
/// let resp = keepwire::Client::default()
///     .get(&format!("http://{}/hello", server.local_addr()))
///     .await?;
/// let body = resp.into_body().collect(1024).await?;
/// assert_eq!(&body[..], b"you asked for /hello\n");
/// server.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// [`Server::run`] serves until a future completes instead (a signal,
/// say); [`Server::from_listener`] takes a socket bound elsewhere.
pub struct Server {
    listeners: Vec<TcpListener>,
    /// QUIC endpoints (HTTP/3), one beside each listener when TLS and
    /// `http3` are on.
    endpoints: Vec<quinn::Endpoint>,
    shared: Arc<Shared>,
}

/// Stops a spawned server and waits for it.
pub struct ServerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<io::Result<()>>,
    addrs: Vec<SocketAddr>,
    quic_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The bound addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The UDP addresses serving HTTP/3 (empty without TLS or `http3`).
    pub fn quic_addrs(&self) -> &[SocketAddr] {
        &self.quic_addrs
    }

    /// The server's counters.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.shared.metrics
    }

    /// Graceful shutdown: stop accepting, finish in-flight requests (within
    /// the shutdown timeout), close idle connections, then return.
    pub async fn shutdown(self) -> io::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_else(|e| Err(io::Error::other(e)))
    }
}

impl Server {
    /// A builder with default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A server with default settings on a listener bound already (a
    /// `std` or tokio `TcpListener`); [`Builder::listener`] to configure
    /// it too. Call within a tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// let server = keepwire::Server::from_listener(listener)?;
    /// assert_eq!(server.local_addrs(), [addr]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_listener(listener: impl IntoListener) -> io::Result<Server> {
        Server::builder().listener(listener).bind()
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The UDP addresses serving HTTP/3 (empty without TLS or `http3`).
    pub fn quic_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    /// The server's counters.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.shared.metrics
    }

    /// The settings it was bound with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A shareable handle to the counters (for an admin endpoint). It does
    /// not borrow the server (`use<>`), so it outlives `spawn`/`run`.
    pub fn metrics_source(&self) -> impl Fn() -> String + Send + Sync + 'static + use<> {
        let shared = self.shared.clone();
        move || {
            let log = shared.config.access_log.as_deref();
            shared
                .metrics
                .render_with(log.map(access::AccessLog::dropped_lines))
        }
    }

    /// Runs on the current runtime until stopped with the returned handle.
    pub fn spawn(self, handler: impl Handler) -> ServerHandle {
        let (stop, mut rx) = watch::channel(false);
        let addrs = self.local_addrs();
        let quic_addrs = self.quic_addrs();
        let shared = self.shared.clone();
        let task = tokio::spawn(self.run(handler, async move {
            let _ = rx.wait_for(|v| *v).await;
        }));
        ServerHandle {
            stop,
            task,
            addrs,
            quic_addrs,
            shared,
        }
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn run(
        self,
        handler: impl Handler,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut handler: Arc<dyn Handler> = Arc::new(handler);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let ports: Vec<u16> = self.quic_addrs().iter().map(|a| a.port()).collect();
        for endpoint in self.endpoints {
            let (shared, stop) = (self.shared.clone(), stop_rx.clone());
            conns.spawn(h3::serve_endpoint(endpoint, shared, handler.clone(), stop));
        }
        if !ports.is_empty() {
            // TCP responses advertise the QUIC endpoints.
            handler = Arc::new(h3::AltSvc::new(handler, &ports));
        }
        let listeners: Vec<(TcpListener, SocketAddr)> = self
            .listeners
            .into_iter()
            .filter_map(|l| l.local_addr().ok().map(|a| (l, a)))
            .collect();
        let mut backoff = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut backing_off = false;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                accepted = accept::accept_any(&listeners), if !backing_off => match accepted {
                    Ok((stream, peer, local)) => {
                        let shared = self.shared.clone();
                        let handler = handler.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(accept::start_connection(stream, peer, local, shared, handler, stop));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        backoff.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(50));
                        backing_off = true;
                    }
                },
                _ = &mut backoff, if backing_off => backing_off = false,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        // Graceful shutdown: stop accepting, tell connections, wait.
        drop(listeners);
        let _ = stop_tx.send(true);
        let deadline = tokio::time::sleep(self.shared.config.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = conns.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    tracing::warn!(remaining = conns.len(), "shutdown timeout: aborting connections");
                    conns.shutdown().await;
                    break;
                }
            }
        }
        Ok(())
    }
}

/// A connection's place under the limits: the gauges (and the per-IP count)
/// are given back when it drops, however the connection ends. An upgraded
/// connection or CONNECT tunnel carries it in its
/// [`Upgraded`](crate::upgrade::Upgraded) until the
/// tunnel ends.
pub(crate) struct ConnSlot {
    pub(crate) shared: Arc<Shared>,
    ip: IpAddr,
    tunnel: bool,
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSlot")
            .field("ip", &self.ip)
            .field("tunnel", &self.tunnel)
            .finish()
    }
}

impl ConnSlot {
    /// Counts a new connection from `ip`; returns its slot, the connections
    /// open and those from `ip`, this one included (the limits compare
    /// them: R4.2, R5.6).
    pub(crate) fn open(shared: &Arc<Shared>, ip: IpAddr) -> (Self, usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let open = shared.metrics.connections_open.fetch_add(1, Relaxed) + 1;
        let per_ip = {
            let mut map = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            *n += 1;
            *n
        };
        let slot = ConnSlot {
            shared: shared.clone(),
            ip,
            tunnel: false,
        };
        (slot, open as usize, per_ip)
    }

    /// The connection became a tunnel: counted as one until it drops.
    pub(crate) fn into_tunnel(mut self) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.tunnel {
            self.tunnel = true;
            self.shared.metrics.tunnels_open.fetch_add(1, Relaxed);
        }
        self
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let metrics = &self.shared.metrics;
        metrics.connections_open.fetch_sub(1, Relaxed);
        if self.tunnel {
            metrics.tunnels_open.fetch_sub(1, Relaxed);
        }
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
