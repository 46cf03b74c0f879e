//! The forward and reverse proxy: never a dumb proxy (R6).
//!
//! A proxy is two hops glued by a handler. The client hop is keepwire's
//! server (with `Proxy-Connection` read as `Connection`, R6.2, and header
//! spelling kept); the origin hop is keepwire's client pool, one per proxy,
//! with its own caps, idle timeouts and `Keep-Alive` hints (R6.3). Nothing
//! hop-by-hop crosses (R3.2): each hop's persistence is decided by that
//! hop's own messages, which is exactly what a dumb proxy gets wrong (R6.1).
//! The request head crosses as the client hop read it (proto's
//! `RequestHead`, field names as spelled and in the order received),
//! edited in place for the next hop (`message.rs`); the `http::Request`
//! view is built only for a TRACE echo, and HTTP/2 requests arrive as one.
//! Bodies are re-framed by the hop that writes them (a close-delimited
//! HTTP/1.0 origin response leaves chunked to an HTTP/1.1 client), and a
//! truncated origin body is passed on as truncated, never "fixed" (R8.2).
//!
//! Failures: the client's retry rule decides what may be sent again
//! (R8.3); what cannot is answered 502 (504 for timeouts) and never resent.
//!
//! Forward mode is a different trust boundary from reverse mode, so it has
//! its own client pool: its own client allow-list (`allow_forward`), a
//! destination policy checked on the resolved addresses it dials
//! ([`crate::destination`]), the platform's certificate roots whatever the
//! configured upstreams trust, and a sweep that forgets idle origins (its
//! origins are whatever its users name, so per-origin state must not
//! accumulate). Tunnels (CONNECT, upgrades) end after
//! `tunnel_idle_timeout` without a byte either way, as HAProxy's `timeout
//! tunnel`; upgrades are relayed only for the protocols a route allows
//! (nginx relays none unless told to). An HTTP/2 client's extended CONNECT
//! (RFC 8441, a WebSocket over HTTP/2) goes upstream as an HTTP/1.1
//! upgrade (`rfc8441.rs`).
//!
//! An upstream that cannot be connected to (TCP, TLS or HTTP/2 handshake)
//! saw nothing of the request, so the next upstream gets it and this one
//! is skipped for a while.
//!
//! Memory: request bodies stream to the upstream. A copy for a resend is
//! kept only up to `retry_body_max` per request and `retained_per_connection`
//! across one client connection's requests in flight (pipelined or
//! multiplexed); a larger body is not resent once any of it went out.

mod config;
mod message;
mod rfc8441;
mod route;
mod tunnel;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use keepwire_proto::hop::{self, is_idempotent};

use crate::body::Body;
use crate::client::{Client, ClientConfig, ClientError, PoolConfig, ReplayBody, RetainBudget};
use crate::destination::{DestinationPolicy, refusal};
pub use crate::metrics::ProxyMetrics;
use crate::server::{Handler, Incoming, ResponseFuture};
use config::says_upstream_down;
pub use config::{ProxyConfig, ReusePolicy, Route, Upstream, parse_authority};
use message::{
    ALLOWED_NO_TRACE, allowed_upgrade, host_problem, is_loop, max_forwards, options_here,
};

/// The proxy: a [`Handler`] (served as `Arc<Proxy>`) over a client pool.
///
/// A reverse proxy in front of one origin, both on loopback:
///
/// ```
/// use keepwire::proxy::{Proxy, ProxyConfig, Route, Upstream};
/// use keepwire::{Body, Client, Server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let origin = Server::builder()
///     .listen("127.0.0.1:0".parse()?)
///     .bind()?
///     .spawn(|_req: http::Request<Body>| async { http::Response::new(Body::from("from the origin")) });
///
/// let mut config = ProxyConfig::default();
/// let upstream = Upstream::new(origin.local_addr().to_string());
/// config.routes.push(Route::new(None, "/", vec![upstream]));
/// let proxy = Server::builder()
///     .listen("127.0.0.1:0".parse()?)
///     .config(Proxy::server_config())
///     .bind()?
///     .spawn(Proxy::new(config));
///
/// let client = Client::default();
/// let resp = client.get(&format!("http://{}/", proxy.local_addr())).await?;
/// assert!(resp.headers().contains_key("via"));
/// let body = resp.into_body().collect(1 << 20).await?;
/// assert_eq!(&body[..], b"from the origin");
/// # drop(client);
/// proxy.shutdown().await?;
/// origin.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct Proxy {
    config: ProxyConfig,
    client: Client,
    /// The forward-mode pool (`None` without forward mode).
    forward_client: Option<Client>,
    policy: Arc<DestinationPolicy>,
    /// The forward pool's idle sweep runs.
    sweeping: AtomicBool,
    metrics: ProxyMetrics,
    /// Our `Via` entry, `1.1 NAME` (also how loops are recognised).
    via: HeaderValue,
    /// Retry-copy budgets of client connections with requests in flight.
    budgets: Mutex<Budgets>,
}

/// Budgets by client connection; forgotten once no request holds them.
#[derive(Default)]
struct Budgets {
    by_conn: std::collections::HashMap<u64, RetainBudget>,
    /// Prune when the map reaches this size (amortised).
    prune_at: usize,
}

impl Proxy {
    /// A proxy with its own upstream pool.
    pub fn new(config: ProxyConfig) -> Arc<Self> {
        let base = ClientConfig {
            pool: PoolConfig {
                max_per_origin: config.pool_size.max(1),
                idle_timeout: config.upstream_idle_timeout,
                reuse: config.reuse != ReusePolicy::Never,
                ..PoolConfig::default()
            },
            connect_timeout: config.connect_timeout,
            response_timeout: config.upstream_timeout,
            preserve_header_case: true,
            ..ClientConfig::default()
        };
        let client = Client::new(ClientConfig {
            tls: config.upstream_tls.clone(),
            http2_prior_knowledge: config.upstream_http2,
            http3: if config.upstream_http3 {
                crate::client::Http3Mode::Prefer
            } else {
                crate::client::Http3Mode::Off
            },
            ..base.clone()
        });
        let policy = Arc::new(DestinationPolicy::new(
            config.allow_destination.clone(),
            config.deny_destination.clone(),
        ));
        // Forward origins: the platform's roots (or `forward_tls`), never
        // h2c by prior knowledge, and only where the policy allows.
        let forward_client = config.forward.then(|| {
            Client::new(ClientConfig {
                tls: config.forward_tls.clone(),
                destinations: Some(policy.clone()),
                ..base
            })
        });
        let via = HeaderValue::from_str(&format!("1.1 {}", config.via_name))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 keepwire"));
        Arc::new(Proxy {
            config,
            client,
            forward_client,
            policy,
            sweeping: AtomicBool::new(false),
            metrics: ProxyMetrics::default(),
            via,
            budgets: Mutex::default(),
        })
    }

    /// The server settings for the proxy's client hop: `Proxy-Connection`
    /// read as `Connection` (R6.2), field-name spelling kept for the next
    /// hop, no cap on requests per client connection (closing a busy client
    /// connection costs its client a reconnect and gains the proxy nothing:
    /// its upstream connections are pooled apart), and up to 8 pipelined
    /// requests fetched upstream at once (answered in order). Addresses,
    /// timeouts and TLS are the caller's to set on top.
    pub fn server_config() -> crate::server::Config {
        crate::server::Config {
            proxy_connection: true,
            preserve_header_case: true,
            max_requests: None,
            pipeline_depth: 8,
            ..crate::server::Config::default()
        }
    }

    /// The client for configured upstreams (its metrics count their
    /// connections).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client for forward-mode origins, if forward mode is on.
    pub fn forward_client(&self) -> Option<&Client> {
        self.forward_client.as_ref()
    }

    /// Refuses forward-mode requests to `addr` (one of the proxy's own
    /// listening or admin addresses; an unspecified IP stands for every
    /// local address on its port). The address a request arrived on is
    /// refused without this.
    pub fn add_own_address(&self, addr: std::net::SocketAddr) {
        self.policy.add_own_address(addr);
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// Prometheus text for the proxy and its upstream pools.
    pub fn render_metrics(&self) -> String {
        let clients: Vec<_> = std::iter::once(&self.client)
            .chain(&self.forward_client)
            .map(Client::metrics)
            .collect();
        self.metrics.render(&clients)
    }

    /// Answers one client request given as the [`Request`] view (HTTP/2
    /// requests, or a caller's own handler in front of the proxy).
    pub async fn handle(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        if crate::upgrade::connect_protocol(&req).is_some() {
            return self.extended_connect(req).await;
        }
        self.handle_incoming(Incoming::from_request(req)).await
    }

    /// Answers one client request as the client hop read it: its head is
    /// edited in place for the upstream hop and sent on, field names as
    /// spelled and in the order received.
    pub async fn handle_incoming(self: Arc<Self>, req: Incoming) -> Response<Body> {
        let Incoming {
            mut head,
            body,
            info,
            on_upgrade,
            peer_gone,
        } = req;
        self.metrics.requests.fetch_add(1, Relaxed);
        if let Some(why) = host_problem(&head.headers, &head.target, head.version) {
            return self.refuse(StatusCode::BAD_REQUEST, why);
        }
        // CONNECT and absolute-form targets (an HTTP/2 request always has
        // one) are forward requests when forward mode is on; without routes
        // every request is.
        let forward = self.config.forward
            && (head.method == Method::CONNECT
                || head.target.scheme().is_some()
                || self.config.routes.is_empty());
        if let Some(info) = info {
            let (allowed, flag) = if forward {
                (&self.config.allow_forward, "--allow-forward")
            } else {
                (&self.config.allow, "--allow")
            };
            if !allowed.iter().any(|n| n.contains(&info.peer.ip())) {
                let mode = if forward { "forward proxy" } else { "proxy" };
                return self.refuse(
                    StatusCode::FORBIDDEN,
                    &format!("this client is not allowed to use the {mode} (allow with {flag})"),
                );
            }
            if forward {
                // What this connection reached us on is ours.
                self.policy.add_own_address(info.local);
            }
        }
        // Loop detection: our own name in Via means the request came round.
        if is_loop(&head.headers, &self.config.via_name) {
            return self.refuse(
                StatusCode::LOOP_DETECTED,
                "request loop: it already passed this proxy",
            );
        }
        if forward {
            self.start_sweeping();
        }
        if head.method == Method::CONNECT {
            return self.connect_tunnel(&head.target, on_upgrade).await;
        }
        if head.method == Method::TRACE && !self.config.trace {
            self.metrics.refused.fetch_add(1, Relaxed);
            return crate::trace::refused(ALLOWED_NO_TRACE);
        }
        // Max-Forwards (RFC 9110 §7.6.2): 0 means "answer here".
        if matches!(head.method, Method::TRACE | Method::OPTIONS)
            && let Some(n) = max_forwards(&head.headers)
        {
            if n > 0 {
                head.headers
                    .insert(http::header::MAX_FORWARDS, HeaderValue::from(n - 1));
            } else if head.method == Method::TRACE {
                // The one handler here that needs the `Request` view.
                let req = Incoming {
                    head,
                    body,
                    info,
                    on_upgrade,
                    peer_gone,
                };
                return crate::trace::echo(&req.into_request());
            } else {
                return options_here(self.config.trace);
            }
        }
        let picked = match self.pick(&head.target, &head.headers) {
            Ok(v) => v,
            Err(resp) => return resp,
        };
        let client = match (picked.forward, &self.forward_client) {
            (true, Some(c)) => c,
            _ => &self.client,
        };
        if picked.forward {
            // Refused before any pool slot is taken; the connect path
            // checks the addresses it dials again (the answer may change).
            let origin = picked.upstreams[0].origin();
            if let Err(e) = client.resolve(origin).await {
                return self.gateway_error(&e);
            }
        }
        let upgrade = hop::upgrade_protocol(head.version, &head.headers)
            .and_then(|v| allowed_upgrade(v, picked.upgrade));
        let client_upgrade = upgrade.is_some().then_some(on_upgrade).flatten();
        let mut fresh = match self.config.reuse {
            ReusePolicy::Safe => {
                !is_idempotent(&head.method) || info.is_none_or(|i| i.request_index == 1)
            }
            _ => false,
        };
        if let Err(why) = self.to_next_hop(&mut head, upgrade, picked.host.as_deref()) {
            return self.refuse(StatusCode::BAD_REQUEST, why);
        }
        let budget = self.budget_for(info.map(|i| i.id));
        let mut body = ReplayBody::new(body, self.config.retry_body_max).with_budget(budget);
        if let Err(e) = body.prefill().await {
            return text(StatusCode::BAD_REQUEST, &format!("request body: {e}"));
        }
        // A body that streams past its copy could not be resent after the
        // stale-connection race either: under `safe` it gets a fresh
        // connection too.
        if self.config.reuse == ReusePolicy::Safe && !body.is_held_whole() {
            fresh = true;
        }
        // Without a Host from the client, each upstream gets its own.
        let has_host = head.headers.contains_key(HOST);
        let mut head = Some(head);
        let mut last_err = None;
        let tries = picked.upstreams.len();
        for (i, upstream) in picked.upstreams.into_iter().enumerate() {
            // The head itself goes to the last upstream that may take it; a
            // copy is made only while another could still take it after.
            let mut head = match i + 1 == tries {
                true => head.take().expect("the last try takes the head"),
                false => head.clone().expect("kept until the last try"),
            };
            if !has_host && let Ok(v) = HeaderValue::from_str(&upstream.authority) {
                head.headers.insert(HOST, v);
            }
            // A client whose connection is lost (RST) drops its upstream
            // request (nginx's `proxy_ignore_client_abort off`, 499). A
            // FIN may be a half-close still waiting for the answer (R8.4):
            // nginx and Go drop that too, keepwire relays the answer.
            let sent = tokio::select! {
                biased;
                r = client.send(upstream.origin(), head, &mut body, fresh) => r,
                () = peer_gone.wait_lost() => return text(CLIENT_GONE, "client closed request"),
            };
            match sent {
                Ok(resp) => return self.relay_response(resp, client_upgrade),
                Err(ClientError::Body(e)) => {
                    return text(StatusCode::BAD_REQUEST, &format!("request body: {e}"));
                }
                Err(e) => {
                    self.count_error(&e);
                    // Nothing reached the upstream (R8.3, decided in
                    // client/retry.rs): another upstream may take it.
                    let never_sent = e.never_sent();
                    if says_upstream_down(&e) && !picked.forward {
                        upstream.mark_down(self.config.health_cooldown);
                    }
                    if never_sent && body.rewind() {
                        // Never sent, so another upstream may take it.
                        last_err = Some(e);
                        continue;
                    }
                    if !picked.forward {
                        certificate_hint(&e);
                    }
                    return self.gateway_error(&e);
                }
            }
        }
        match last_err {
            Some(e) => {
                if !picked.forward {
                    certificate_hint(&e);
                }
                self.gateway_error(&e)
            }
            None => self.refuse(StatusCode::BAD_GATEWAY, "no upstream available"),
        }
    }

    /// Starts the forward pool's idle sweep (once, from inside the runtime).
    fn start_sweeping(self: &Arc<Self>) {
        if self.forward_client.is_none() {
            return;
        }
        if self.sweeping.swap(true, Relaxed) {
            return;
        }
        let every = (self.config.upstream_idle_timeout / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let weak: Weak<Proxy> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(proxy) = weak.upgrade() else { return };
                if let Some(c) = &proxy.forward_client {
                    c.sweep_idle(FORWARD_MAX_ORIGINS);
                }
            }
        });
    }

    /// The retry-copy budget shared by a client connection's requests.
    fn budget_for(&self, conn: Option<u64>) -> RetainBudget {
        let gauge = Some(self.metrics.retained.clone());
        let Some(id) = conn else {
            return RetainBudget::new(self.config.retained_per_connection, gauge);
        };
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(budget) = b.by_conn.get(&id) {
            return budget.clone();
        }
        if b.by_conn.len() >= b.prune_at {
            b.by_conn.retain(|_, budget| !budget.is_unshared());
            b.prune_at = (b.by_conn.len() * 2).max(64);
        }
        let budget = RetainBudget::new(self.config.retained_per_connection, gauge);
        b.by_conn.insert(id, budget.clone());
        budget
    }

    fn count_error(&self, e: &ClientError) {
        let i = match e {
            ClientError::Connect(_) | ClientError::Resolve(_) | ClientError::PoolTimeout => 0,
            ClientError::Timeout(_) => 1,
            ClientError::Io(_) => 2,
            e if e.is_truncated() => 4,
            _ => 3,
        };
        self.metrics.upstream_errors[i].fetch_add(1, Relaxed);
    }

    fn gateway_error(&self, e: &ClientError) -> Response<Body> {
        if let ClientError::Connect(io) = e
            && let Some(refused) = refusal(io)
        {
            self.metrics.destinations_refused.fetch_add(1, Relaxed);
            return self.refuse(StatusCode::FORBIDDEN, &refused.to_string());
        }
        let status = match e {
            ClientError::Timeout(_) | ClientError::PoolTimeout => {
                self.metrics.gateway_timeout.fetch_add(1, Relaxed);
                StatusCode::GATEWAY_TIMEOUT
            }
            _ => {
                self.metrics.bad_gateway.fetch_add(1, Relaxed);
                StatusCode::BAD_GATEWAY
            }
        };
        gateway(status, &e.to_string())
    }

    fn refuse(&self, status: StatusCode, why: &str) -> Response<Body> {
        if status.is_client_error() || status == StatusCode::LOOP_DETECTED {
            self.metrics.refused.fetch_add(1, Relaxed);
        }
        text(status, why)
    }
}

/// Tells the operator, once per process, how to trust a configured
/// upstream whose certificate was refused (the client only sees a 502).
fn certificate_hint(e: &ClientError) {
    static TOLD: AtomicBool = AtomicBool::new(false);
    if e.to_string().contains("certificate") && !TOLD.swap(true, Relaxed) {
        tracing::warn!(
            "upstream: {e}; trust its CA with --upstream-cacert FILE \
             (ProxyConfig::upstream_tls), or skip verification with --upstream-insecure"
        );
    }
}

/// nginx's "client closed request": the status of an answer nobody reads.
const CLIENT_GONE: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// Serve `Arc<Proxy>`: HTTP/1 requests reach [`Proxy::handle_incoming`]
/// as read, HTTP/2 ones [`Proxy::handle`].
impl Handler for Arc<Proxy> {
    fn call(&self, req: Request<Body>) -> ResponseFuture {
        Box::pin(self.clone().handle(req))
    }

    fn call_incoming(&self, req: Incoming) -> ResponseFuture {
        Box::pin(self.clone().handle_incoming(req))
    }
}

/// A 502/504 as nginx answers it: the status line's words only. The
/// cause (the upstream's address, its error) goes to the operator's log,
/// not to whoever sent the request.
fn gateway(status: StatusCode, cause: &str) -> Response<Body> {
    tracing::warn!("{} upstream: {cause}", status.as_u16());
    plain(status, String::new())
}

fn text(status: StatusCode, why: &str) -> Response<Body> {
    plain(status, format!(": {why}"))
}

/// `"<code> <reason><detail>\n"` as text/plain.
fn plain(status: StatusCode, detail: String) -> Response<Body> {
    let mut r = Response::new(Body::from(format!(
        "{} {}{detail}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Forward-mode origins whose idle state the sweep keeps at most.
const FORWARD_MAX_ORIGINS: usize = 1024;
