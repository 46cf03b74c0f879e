//! The forward and reverse proxy: never a dumb proxy (R6).
//!
//! A proxy is two hops glued by a handler. The client hop is keepwire's
//! server (with `Proxy-Connection` read as `Connection`, R6.2, and header
//! spelling kept); the origin hop is keepwire's client pool, one per proxy,
//! with its own caps, idle timeouts and `Keep-Alive` hints (R6.3). Nothing
//! hop-by-hop crosses (R3.2): each hop's persistence is decided by that
//! hop's own messages, which is exactly what a dumb proxy gets wrong (R6.1).
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
//! (nginx relays none unless told to).
//!
//! An upstream that cannot be connected to (TCP, TLS or HTTP/2 handshake)
//! saw nothing of the request, so the next upstream gets it and this one
//! is skipped for a while.
//!
//! Memory: request bodies stream to the upstream. A copy for a resend is
//! kept only up to `retry_body_max` per request and `retained_per_connection`
//! across one client connection's requests in flight (pipelined or
//! multiplexed); a larger body is not resent once any of it went out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE, VIA};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use ipnet::IpNet;
use keepwire_proto::hop::{self, is_idempotent, strip_hop_by_hop};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::body::Body;
use crate::client::{
    Client, ClientConfig, ClientError, Origin, PoolConfig, ReplayBody, RetainBudget, RetainGauge,
    Timings,
};
use crate::destination::{DestinationPolicy, refusal};
use crate::server::{ConnInfo, OnUpgrade, Upgraded};

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
    /// An upstream at `host:port` (HTTP), or `https://host:port` (TLS;
    /// HTTP/2 or HTTP/1.1 as ALPN decides).
    pub fn new(authority: impl Into<String>) -> Self {
        let authority: String = authority.into();
        let (scheme, authority, default_port) = match authority.strip_prefix("https://") {
            Some(a) => ("https", a.to_string(), 443),
            None => ("http", authority, 80),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
                (h.to_string(), p.parse().unwrap_or(default_port))
            }
            _ => (authority.clone(), default_port),
        };
        Upstream {
            origin: Origin {
                scheme: scheme.into(),
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase(),
                port,
            },
            authority,
            down_until: Mutex::new(None),
        }
    }

    /// The pool key this upstream is reached by (scheme, lowercase host
    /// without brackets, port).
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    fn is_up(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|t| now >= t)
    }

    fn mark_down(&self, cooldown: Duration) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + cooldown);
    }
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

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(h)) => want.eq_ignore_ascii_case(h),
            (Some(_), None) => false,
        };
        host_ok && path.starts_with(&self.prefix)
    }

    /// Upstreams in the order to try: round-robin start, healthy ones first.
    fn candidates(&self) -> Vec<Arc<Upstream>> {
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

/// Proxy settings.
#[derive(Debug)]
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

/// Where a request goes.
struct Picked<'a> {
    /// Upstreams to try in order.
    upstreams: Vec<Arc<Upstream>>,
    /// The `Host` to send: the target's authority for an absolute-form
    /// request (RFC 9112 §3.2.2) or an HTTP/2 `:authority`.
    host: Option<String>,
    /// Forward mode (the forward pool and its destination policy).
    forward: bool,
    /// Upgrade protocols allowed.
    upgrade: &'a [String],
}

/// Proxy counters (upstream connections are in [`Proxy::client`]'s).
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Requests handled.
    pub requests: AtomicU64,
    /// Answered 502 (upstream failed).
    pub bad_gateway: AtomicU64,
    /// Answered 504 (upstream timed out).
    pub gateway_timeout: AtomicU64,
    /// Upstream failures by kind: connect, timeout, io, protocol, truncated.
    pub upstream_errors: [AtomicU64; 5],
    /// Tunnels (CONNECT and upgrades) opened.
    pub tunnels: AtomicU64,
    /// Tunnels closed by `tunnel_idle_timeout`.
    pub tunnels_idle_closed: AtomicU64,
    /// Forward-mode requests refused by the destination policy.
    pub destinations_refused: AtomicU64,
    /// Requests refused (client not allowed, CONNECT port, loop).
    pub refused: AtomicU64,
    /// Request-body bytes kept for resends, now and at most.
    pub retained: Arc<RetainGauge>,
}

const ERROR_KINDS: [&str; 5] = ["connect", "timeout", "io", "protocol", "truncated"];

/// The proxy: a [`crate::server::Handler`] over a client pool.
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

    /// Prometheus text for the proxy and its upstream pool.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        // Upstream counters: configured upstreams and forward origins.
        let clients: Vec<&Client> = std::iter::once(&self.client)
            .chain(&self.forward_client)
            .collect();
        let sum = |f: fn(&crate::client::ClientMetrics) -> &AtomicU64| -> u64 {
            clients.iter().map(|c| f(c.metrics()).load(Relaxed)).sum()
        };
        let mut s = String::new();
        let mut line = |name: &str, labels: &str, v: u64| {
            s.push_str(&format!("keepwire_proxy_{name}{labels} {v}\n"));
        };
        line("requests_total", "", m.requests.load(Relaxed));
        line(
            "responses_total",
            "{status=\"502\"}",
            m.bad_gateway.load(Relaxed),
        );
        line(
            "responses_total",
            "{status=\"504\"}",
            m.gateway_timeout.load(Relaxed),
        );
        for (k, a) in ERROR_KINDS.iter().zip(&m.upstream_errors) {
            line(
                "upstream_errors_total",
                &format!("{{kind=\"{k}\"}}"),
                a.load(Relaxed),
            );
        }
        line("tunnels_total", "", m.tunnels.load(Relaxed));
        line(
            "tunnels_idle_closed_total",
            "",
            m.tunnels_idle_closed.load(Relaxed),
        );
        line("refused_total", "", m.refused.load(Relaxed));
        line(
            "destinations_refused_total",
            "",
            m.destinations_refused.load(Relaxed),
        );
        line(
            "request_body_retained_bytes",
            "",
            m.retained.current.load(Relaxed),
        );
        line(
            "request_body_retained_bytes_max",
            "",
            m.retained.peak.load(Relaxed),
        );
        line(
            "upstream_connections_opened_total",
            "",
            sum(|c| &c.connections_opened),
        );
        line("upstream_requests_reused_total", "", sum(|c| &c.reused));
        line("upstream_retries_total", "", sum(|c| &c.retries));
        line("upstream_idle_retired_total", "", sum(|c| &c.retired_idle));
        line("upstream_idle_stale_total", "", sum(|c| &c.stale_idle));
        s
    }

    /// Answers one client request.
    pub async fn handle(self: Arc<Self>, mut req: Request<Body>) -> Response<Body> {
        self.metrics.requests.fetch_add(1, Relaxed);
        let info = req.extensions().get::<ConnInfo>().copied();
        if let Some(why) = host_problem(&req) {
            return self.refuse(StatusCode::BAD_REQUEST, why);
        }
        // CONNECT and absolute-form targets (an HTTP/2 request always has
        // one) are forward requests when forward mode is on; without routes
        // every request is.
        let forward = self.config.forward
            && (req.method() == Method::CONNECT
                || req.uri().scheme().is_some()
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
        // Entries are `PROTOCOL-VERSION RECEIVED-BY`: ours whatever version.
        let name = self.config.via_name.as_str();
        if req.headers().get_all(VIA).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|e| e.split_whitespace().nth(1) == Some(name))
            })
        }) {
            return self.refuse(
                StatusCode::LOOP_DETECTED,
                "request loop: it already passed this proxy",
            );
        }
        if forward {
            self.start_sweeping();
        }
        if req.method() == Method::CONNECT {
            return self.connect_tunnel(req).await;
        }
        if req.method() == Method::TRACE && !self.config.trace {
            self.metrics.refused.fetch_add(1, Relaxed);
            return crate::trace::refused(ALLOWED_NO_TRACE);
        }
        // Max-Forwards (RFC 9110 §7.6.2): 0 means "answer here".
        if matches!(*req.method(), Method::TRACE | Method::OPTIONS)
            && let Some(n) = max_forwards(&req)
        {
            if n == 0 {
                return answer_here(&req, self.config.trace);
            }
            req.headers_mut()
                .insert(http::header::MAX_FORWARDS, HeaderValue::from(n - 1));
        }
        let picked = match self.pick(&req) {
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
            let origin = &picked.upstreams[0].origin;
            if let Err(e) = client.resolve(origin).await {
                return self.gateway_error(&e);
            }
        }
        let upgrade = hop::upgrade_protocol(req.version(), req.headers())
            .and_then(|v| allowed_upgrade(v, picked.upgrade));
        let client_upgrade = match upgrade {
            Some(_) => req.extensions_mut().remove::<OnUpgrade>(),
            None => None,
        };
        let mut fresh = match self.config.reuse {
            ReusePolicy::Safe => {
                !is_idempotent(req.method()) || info.is_none_or(|i| i.request_index == 1)
            }
            _ => false,
        };
        let (mut parts, body) = req.into_parts();
        // R3.2 / R6.1: nothing of this hop crosses to the next. An upgrade
        // the route does not allow goes as a plain request (as nginx does
        // without `proxy_set_header Upgrade`).
        strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
        if let Some(protocols) = upgrade {
            parts.headers.insert(UPGRADE, protocols);
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        // RFC 9110 §7.6.3: the version this request was received with.
        let me = self.via_for(parts.version);
        parts.headers.append(VIA, me);
        if let Some(authority) = &picked.host
            && let Ok(v) = HeaderValue::from_str(authority)
        {
            // RFC 9112 §3.2.2: the target's authority wins over Host, and
            // the Host sent on says the same (never two of them).
            parts.headers.insert(HOST, v);
        }
        // Origin-form for the next hop; an absolute-form target (forward
        // mode) is reduced to its path once, here.
        let target: Uri = if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            match pq.parse() {
                Ok(u) => u,
                Err(_) => {
                    return self.refuse(StatusCode::BAD_REQUEST, "cannot form the upstream target");
                }
            }
        } else {
            parts.uri.clone()
        };
        let header_case = parts
            .extensions
            .remove::<keepwire_proto::HeaderCase>()
            .unwrap_or_default();
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
        let mut last_err = None;
        for upstream in picked.upstreams {
            let mut head = keepwire_proto::RequestHead::new(
                parts.method.clone(),
                target.clone(),
                http::Version::HTTP_11,
            );
            head.headers = parts.headers.clone();
            head.header_case = header_case.clone();
            if !head.headers.contains_key(HOST)
                && let Ok(v) = HeaderValue::from_str(&upstream.authority)
            {
                head.headers.insert(HOST, v);
            }
            match client.send(&upstream.origin, head, &mut body, fresh).await {
                Ok(resp) => return self.relay_response(resp, client_upgrade).await,
                Err(ClientError::Body(e)) => {
                    return text(StatusCode::BAD_REQUEST, &format!("request body: {e}"));
                }
                Err(e) => {
                    self.count_error(&e);
                    // Refused, unreachable, or a TLS / HTTP/2 handshake that
                    // failed or timed out: nothing was sent.
                    let never_sent = matches!(e, ClientError::Connect(_) | ClientError::Resolve(_));
                    if never_sent && !picked.forward {
                        // Passive health: skip it for a while; the request
                        // was never sent, so another upstream may take it.
                        upstream.mark_down(self.config.health_cooldown);
                    }
                    if never_sent && body.rewind() {
                        // Never sent, so another upstream may take it.
                        last_err = Some(e);
                        continue;
                    }
                    return self.gateway_error(&e);
                }
            }
        }
        match last_err {
            Some(e) => self.gateway_error(&e),
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

    /// Which upstreams may take this request, and for forward requests the
    /// authority of the absolute-form target.
    #[allow(clippy::result_large_err)]
    fn pick(&self, req: &Request<Body>) -> Result<Picked<'_>, Response<Body>> {
        let absolute = req.uri().scheme().is_some();
        // A reverse proxy routes on the target's authority when there is
        // one (an HTTP/2 request may carry Host instead of :authority).
        if absolute && (self.config.forward || req.uri().authority().is_some()) {
            // The target's authority routes it and is the Host sent on.
            let host = req.uri().authority().map(|a| a.as_str().to_string());
            if !self.config.forward {
                // A reverse proxy also accepts absolute-form (RFC 9112
                // §3.2.2), but only for the hosts it routes.
                let route = self.route(req.uri().host(), req.uri().path())?;
                return Ok(Picked {
                    upstreams: route.candidates(),
                    host,
                    forward: false,
                    upgrade: &route.upgrade,
                });
            }
            let https = match req.uri().scheme_str() {
                Some("http") => false,
                // The proxy speaks TLS to the origin itself (the client
                // chose not to tunnel; CONNECT is the end-to-end way).
                Some("https") => true,
                _ => {
                    return Err(self.refuse(
                        StatusCode::BAD_REQUEST,
                        "only http:// and https:// targets are proxied",
                    ));
                }
            };
            let Some(authority) = host else {
                return Err(self.refuse(
                    StatusCode::BAD_REQUEST,
                    "absolute-form target without a host",
                ));
            };
            let with_port = match (req.uri().port().is_some(), https) {
                (true, false) => authority.clone(),
                (true, true) => format!("https://{authority}"),
                (false, false) => format!("{authority}:80"),
                (false, true) => format!("https://{authority}:443"),
            };
            return Ok(Picked {
                upstreams: vec![Arc::new(Upstream::new(with_port))],
                host: Some(authority),
                forward: true,
                upgrade: &self.config.forward_upgrade,
            });
        }
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_without_port);
        let route = self.route(host, req.uri().path())?;
        Ok(Picked {
            upstreams: route.candidates(),
            host: None,
            forward: false,
            upgrade: &route.upgrade,
        })
    }

    #[allow(clippy::result_large_err)]
    fn route(&self, host: Option<&str>, path: &str) -> Result<&Route, Response<Body>> {
        self.config
            .routes
            .iter()
            .filter(|r| r.matches(host, path))
            .max_by_key(|r| (r.host.is_some(), r.prefix.len()))
            .ok_or_else(|| {
                if self.config.forward {
                    self.refuse(
                        StatusCode::BAD_REQUEST,
                        "a forward proxy needs an absolute-form target (http://host/path)",
                    )
                } else {
                    self.refuse(StatusCode::NOT_FOUND, "no route for this host and path")
                }
            })
    }

    /// Our `Via` entry for a message received with `version`.
    fn via_for(&self, version: Version) -> HeaderValue {
        let token = match version {
            Version::HTTP_11 => return self.via.clone(),
            Version::HTTP_09 => "0.9",
            Version::HTTP_10 => "1.0",
            Version::HTTP_2 => "2",
            _ => "3",
        };
        HeaderValue::from_str(&format!("{token} {}", self.config.via_name))
            .unwrap_or_else(|_| self.via.clone())
    }

    /// Cleans the upstream response for the client hop and relays it.
    async fn relay_response(
        self: &Arc<Self>,
        resp: Response<Body>,
        client_upgrade: Option<OnUpgrade>,
    ) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        // RFC 9112 §6.1: Transfer-Encoding overrode a received
        // Content-Length (the body was read chunked or until close), so a
        // forwarded message must lose it; the next hop's framing comes from
        // the body as relayed.
        if parts.headers.contains_key(TRANSFER_ENCODING) {
            parts.headers.remove(CONTENT_LENGTH);
        }
        strip_hop_by_hop(&mut parts.headers, switching);
        // The version the response was received with (HTTP/2 from an
        // upstream that chose it by ALPN).
        parts.headers.append(VIA, self.via_for(parts.version));
        parts.extensions.remove::<crate::client::RequestMeta>();
        if switching {
            let upstream = parts.extensions.remove::<OnUpgrade>();
            match (client_upgrade, upstream) {
                (Some(down), Some(up)) => {
                    parts
                        .headers
                        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                    let tunnel = Tunnel::open(self.clone());
                    tokio::spawn(async move {
                        if let (Some(a), Some(b)) = (down.wait().await, up.wait().await) {
                            tunnel.relay(a, b).await;
                        }
                    });
                }
                _ => {
                    return self.refuse(
                        StatusCode::BAD_GATEWAY,
                        "upstream switched protocols unasked",
                    );
                }
            }
        }
        Response::from_parts(parts, body)
    }

    /// CONNECT host:port (R9.3): a raw TCP tunnel, forward mode only.
    async fn connect_tunnel(self: &Arc<Self>, req: Request<Body>) -> Response<Body> {
        let Some(client) = &self.forward_client else {
            return self.refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT needs forward mode (--forward)",
            );
        };
        let Some(authority) = req.uri().authority().cloned() else {
            return self.refuse(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let port = authority.port_u16().unwrap_or(443);
        if !self.config.connect_ports.contains(&port) {
            return self.refuse(StatusCode::FORBIDDEN, "CONNECT to this port is not allowed");
        }
        let origin = Origin {
            scheme: "http".into(),
            host: authority.host().to_ascii_lowercase(),
            port,
        };
        // Resolved, checked against the destination policy and dialled as
        // one step: the addresses checked are the addresses connected to.
        let upstream = match client.open_tcp(&origin, &mut Timings::default()).await {
            Ok(s) => s,
            Err(e) => return self.gateway_error(&e),
        };
        let _ = upstream.set_nodelay(true);
        let Some(down) = req.extensions().get::<OnUpgrade>().cloned() else {
            return self.refuse(StatusCode::INTERNAL_SERVER_ERROR, "tunnel unavailable");
        };
        let tunnel = Tunnel::open(self.clone());
        tokio::spawn(async move {
            if let Some(client) = down.wait().await {
                tunnel
                    .relay(client, Upgraded::new(upstream.into(), Default::default()))
                    .await;
            }
        });
        Response::new(Body::empty())
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
        text(status, &format!("upstream: {e}"))
    }

    fn refuse(&self, status: StatusCode, why: &str) -> Response<Body> {
        if status.is_client_error() || status == StatusCode::LOOP_DETECTED {
            self.metrics.refused.fetch_add(1, Relaxed);
        }
        text(status, why)
    }
}

fn max_forwards(req: &Request<Body>) -> Option<u64> {
    req.headers()
        .get(http::header::MAX_FORWARDS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What the proxy relays; TRACE only when turned on.
const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH, CONNECT";
const ALLOWED_NO_TRACE: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, CONNECT";

/// TRACE / OPTIONS with `Max-Forwards: 0`: we are the final recipient.
fn answer_here(req: &Request<Body>, trace: bool) -> Response<Body> {
    if req.method() == Method::TRACE {
        return crate::trace::echo(req);
    }
    let mut r = Response::new(Body::empty());
    let allow = if trace { ALLOWED } else { ALLOWED_NO_TRACE };
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn text(status: StatusCode, why: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!(
        "{} {}: {why}\n",
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

/// A tunnel being set up or relayed. (Open tunnels are the server's
/// `tunnels_open` gauge: the client side's `Upgraded` holds its connection
/// slot until [`splice`] returns.)
struct Tunnel(Arc<Proxy>);

impl Tunnel {
    fn open(proxy: Arc<Proxy>) -> Tunnel {
        proxy.metrics.tunnels.fetch_add(1, Relaxed);
        Tunnel(proxy)
    }

    async fn relay(self, a: Upgraded, b: Upgraded) {
        if splice(a, b, self.0.config.tunnel_idle_timeout).await {
            self.0.metrics.tunnels_idle_closed.fetch_add(1, Relaxed);
        }
    }
}

/// Relays bytes both ways until both sides are done, passing each side's
/// half-close on to the other (R9.1), or until neither side moved a byte
/// for `idle`; true if that is what ended it. An error either way ends
/// both.
async fn splice(a: Upgraded, b: Upgraded, idle: Duration) -> bool {
    let start = Instant::now();
    // Milliseconds from `start` to the last byte moved, either way.
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Relaxed);
    let (mut ar, mut aw) = tokio::io::split(a.stream);
    let (mut br, mut bw) = tokio::io::split(b.stream);
    let both = async {
        tokio::try_join!(
            pump(&a.read_buf, &mut ar, &mut bw, &touch),
            pump(&b.read_buf, &mut br, &mut aw, &touch),
        )
    };
    let quiet = async {
        loop {
            let deadline = start + Duration::from_millis(last.load(Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        _ = both => false,
        () = quiet => true,
    }
}

/// Copies `r` to `w` after `pending` (bytes already read), then passes the
/// end on as a half-close.
async fn pump<R, W>(pending: &[u8], r: &mut R, w: &mut W, touch: &impl Fn()) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !pending.is_empty() {
        w.write_all(pending).await?;
        w.flush().await?;
        touch();
    }
    // As copy_bidirectional's: an idle WebSocket holds two of these.
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        touch();
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        touch();
    }
}

/// Why the request's Host is unusable (RFC 9112 §3.2, RFC 9113 §8.3.1), if
/// it is: repeated, not an authority, userinfo in the target, or (HTTP/2)
/// different from `:authority`.
fn host_problem(req: &Request<Body>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("more than one Host field");
    }
    if let Some(h) = host
        && !h.is_empty()
        && http::uri::Authority::try_from(h.as_bytes()).map_or(true, |a| a.as_str().contains('@'))
    {
        return Some("invalid Host");
    }
    let target = req.uri().authority();
    if target.is_some_and(|a| a.as_str().contains('@')) {
        return Some("userinfo in the request target");
    }
    if req.version() == Version::HTTP_2
        && let (Some(h), Some(a)) = (host, target)
        && !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())
    {
        return Some(":authority and Host differ");
    }
    None
}

/// The protocols of `offered` (an `Upgrade` value) that `allowed` names,
/// as the value to send on; `None` if there are none.
fn allowed_upgrade(offered: &HeaderValue, allowed: &[String]) -> Option<HeaderValue> {
    let kept: Vec<&str> = offered
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .filter(|p| {
            let name = p.split('/').next().unwrap_or("");
            !name.is_empty() && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// `host` of a `Host` value `host[:port]` (IPv6 literals keep brackets).
fn host_without_port(h: &str) -> &str {
    match h.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(':') =>
        {
            host
        }
        _ => h,
    }
}

/// An upstream given as `http://host[:port]`, `host[:port]` or
/// `https://host[:port]`, in the form [`Upstream::new`] takes: `host:port`,
/// or `https://host:port`.
pub fn parse_authority(s: &str) -> Result<String, String> {
    let (scheme, rest) = match s.split_once("://") {
        Some(("http", rest)) => ("http", rest),
        Some(("https", rest)) => ("https", rest),
        Some((other, _)) => return Err(format!("upstream {s:?}: unknown scheme {other:?}")),
        None => ("http", s),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(format!("upstream {s:?}: no host"));
    }
    let uri: Uri = format!("{scheme}://{rest}/")
        .parse()
        .map_err(|e| format!("upstream {s:?}: {e}"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // Credentials would be dropped without a word: refuse them.
        return Err(format!("upstream {s:?}: userinfo is not supported"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("upstream {s:?}: no host"))?;
    // `Uri` is lax about hosts (`a[b::c` passes); accept only what RFC 3986
    // §3.2.2 allows, so the result parses again as the same upstream.
    if host.is_empty() || !keepwire_proto::host::is_valid_host(host.as_bytes()) {
        return Err(format!("upstream {s:?}: invalid host {host:?}"));
    }
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(match scheme {
        "https" => format!("https://{host}:{port}"),
        _ => format!("{host}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_prefer_host_then_longest_prefix() {
        let cfg = ProxyConfig {
            routes: vec![
                Route::new(None, "/", vec![Upstream::new("a:1")]),
                Route::new(None, "/api", vec![Upstream::new("b:1")]),
                Route::new(Some("Example.test".into()), "/", vec![Upstream::new("c:1")]),
            ],
            ..ProxyConfig::default()
        };
        let p = Proxy::new(cfg);
        let pick =
            |h: Option<&str>, path: &str| p.route(h, path).unwrap().upstreams[0].authority.clone();
        assert_eq!(pick(None, "/x"), "a:1");
        assert_eq!(pick(None, "/api/v1"), "b:1");
        assert_eq!(pick(Some("example.test"), "/api"), "c:1");
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
        assert_eq!(host_without_port("a.test:8080"), "a.test");
        assert_eq!(host_without_port("a.test"), "a.test");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }
}
