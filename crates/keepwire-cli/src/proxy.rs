//! `keepwire proxy`: the forward/reverse proxy on the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use keepwire::Server;
use keepwire::proxy::{Proxy, ProxyConfig, ReusePolicy, Route, Upstream};
use serde::Deserialize;

use crate::common::{OpsArgs, Ready, deprecated, init_logging, parse_limit, parse_listen, runtime};
use crate::tls::{TlsArgs, TrustArgs, self_signed_note};

/// Options of `keepwire proxy`.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address to listen on (repeatable; forms as `keepwire serve --listen`)
    /// [default: 127.0.0.1:8081: loopback, never open to the network by accident].
    #[arg(long = "listen", short = 'l', value_name = "ADDR", value_parser = parse_listen)]
    listen: Vec<SocketAddr>,
    /// Reverse proxy: send requests to this origin (`http://host:port`, or
    /// `https://host:port`: TLS, HTTP/2 or HTTP/1.1 as ALPN decides); repeat for
    /// round-robin over several.
    #[arg(long = "upstream", short = 'u', value_name = "URL")]
    upstream: Vec<String>,
    /// TOML file with `listen`, `forward`, `allow`, `allow_forward`,
    /// `allow_destination`, `deny_destination`, `connect_ports`, `reuse`,
    /// `pool_size`, `tunnel_idle_timeout` and `[[route]]` tables (`host`,
    /// `prefix`, `upstreams`, `upgrade`). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Forward proxy: accept absolute-form requests (`GET http://host/`) and
    /// CONNECT tunnels. Off unless given (or `forward = true` in --config);
    /// with no upstream, route or --forward the proxy refuses to start.
    #[arg(long)]
    forward: bool,
    /// Client networks allowed to use the reverse routes (CIDR, repeatable;
    /// default loopback only).
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<IpNet>,
    /// Client networks allowed to use forward mode (CIDR, repeatable; default
    /// loopback only; --allow does not open it).
    #[arg(long = "allow-forward", value_name = "CIDR")]
    allow_forward: Vec<IpNet>,
    /// Forward mode: open a destination range refused by default (CIDR,
    /// repeatable). Loopback, private (RFC 1918), link-local (cloud
    /// metadata), unique-local, CGNAT (100.64.0.0/10), multicast, reserved
    /// and unspecified destinations are refused (403), checked on the
    /// resolved addresses; the proxy's own addresses always are (0.0.0.0/0
    /// and ::/0 open all the rest).
    #[arg(long = "allow-destination", value_name = "CIDR")]
    allow_destination: Vec<IpNet>,
    /// Forward mode: refuse a destination range (CIDR, repeatable; wins over
    /// --allow-destination).
    #[arg(long = "deny-destination", value_name = "CIDR")]
    deny_destination: Vec<IpNet>,
    /// Close a tunnel (CONNECT, or an upgrade such as WebSocket) after this
    /// long without a byte either way, as HAProxy's `timeout tunnel`
    /// [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    tunnel_idle_timeout: Option<Duration>,
    /// Ports CONNECT may reach (repeatable) [default: 443].
    #[arg(long = "connect-port", value_name = "PORT")]
    connect_ports: Vec<u16>,
    /// Upstream connection reuse: always, safe (fresh connection for requests
    /// that could not be retried), never [default: safe].
    #[arg(long, value_name = "POLICY")]
    reuse: Option<ReusePolicy>,
    /// Upstream connections per origin [default: 64].
    #[arg(long, value_name = "N")]
    pool_size: Option<usize>,
    /// Idle timeout of upstream connections (shortened by their Keep-Alive hints).
    #[arg(long, default_value = "60s", value_parser = parse_limit, value_name = "DURATION")]
    upstream_idle_timeout: Duration,
    /// Time for an upstream to answer (then 504), and the longest pause
    /// inside its response body (then the client's response is cut short).
    #[arg(long, default_value = "60s", value_parser = parse_limit, value_name = "DURATION")]
    upstream_timeout: Duration,
    /// Idle timeout of client connections.
    #[arg(long, default_value = "75s", value_parser = parse_limit, value_name = "DURATION")]
    idle_timeout: Duration,
    /// Pipelined client requests fetched upstream concurrently (answered in
    /// order); a non-idempotent one (POST, ...) goes alone, in order.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pipeline_depth: usize,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// I/O backend of cleartext HTTP/1 client connections: epoll or uring
    /// (Linux io_uring; TLS and HTTP/2 stay on epoll).
    #[arg(long, default_value = "epoll")]
    io: keepwire::transport::IoBackend,
    #[command(flatten)]
    ops: OpsArgs,
    /// Speak HTTP/2 with prior knowledge (h2c) to http:// upstreams: one
    /// multiplexed connection per upstream instead of a pool. (https://
    /// upstreams choose by ALPN.)
    #[arg(long)]
    upstream_http2_prior_knowledge: bool,
    /// HTTP/3 over QUIC to https:// upstreams, TCP raced 200 ms later and used if
    /// QUIC fails (forward-mode origins stay on TCP).
    #[arg(long)]
    upstream_http3: bool,
    /// The old spelling of --upstream-http2-prior-knowledge.
    #[arg(long, hide = true)]
    upstream_http2: bool,
    /// Answer TRACE: echo it at `Max-Forwards: 0`, relay it otherwise. The
    /// echo leaves out Cookie, Authorization and Proxy-Authorization.
    /// Default: 405.
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    trust: TrustArgs,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    forward: bool,
    #[serde(default)]
    allow: Vec<IpNet>,
    #[serde(default)]
    allow_forward: Vec<IpNet>,
    #[serde(default)]
    allow_destination: Vec<IpNet>,
    #[serde(default)]
    deny_destination: Vec<IpNet>,
    #[serde(default)]
    connect_ports: Vec<u16>,
    reuse: Option<String>,
    pool_size: Option<usize>,
    tunnel_idle_timeout: Option<String>,
    #[serde(default, rename = "route")]
    routes: Vec<FileRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    host: Option<String>,
    #[serde(default = "root")]
    prefix: String,
    upstreams: Vec<String>,
    /// Upgrade protocols relayed on this route (default `["websocket"]`).
    upgrade: Option<Vec<String>>,
}

fn root() -> String {
    "/".into()
}

fn upstreams(list: &[String]) -> Result<Vec<Upstream>, String> {
    list.iter().map(|u| u.parse::<Upstream>()).collect()
}

/// Merges the file (if any) and the flags into a proxy configuration.
fn configure(args: &ProxyArgs) -> Result<(Vec<SocketAddr>, ProxyConfig), String> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--config {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let mut cfg = ProxyConfig::default();
    for r in &file.routes {
        if r.upstreams.is_empty() {
            return Err(format!("route {:?}: no upstreams", r.prefix));
        }
        let mut route = Route::new(r.host.clone(), r.prefix.clone(), upstreams(&r.upstreams)?);
        if let Some(list) = &r.upgrade {
            route = route.with_upgrades(list.iter().cloned());
        }
        cfg.routes.push(route);
    }
    if !args.upstream.is_empty() {
        cfg.routes
            .push(Route::new(None, "/", upstreams(&args.upstream)?));
    }
    cfg.forward = args.forward || file.forward;
    if !cfg.forward && cfg.routes.is_empty() {
        return Err(
            "nothing to proxy: give --upstream URL (reverse proxy), [[route]] tables \
                    in --config, or --forward (forward proxy)"
                .into(),
        );
    }
    // Flags replace the file's lists.
    let pick = |flag: &Vec<IpNet>, file: Vec<IpNet>| {
        if flag.is_empty() { file } else { flag.clone() }
    };
    if !args.allow.is_empty() || !file.allow.is_empty() {
        cfg.allow = pick(&args.allow, file.allow);
    }
    if !args.allow_forward.is_empty() || !file.allow_forward.is_empty() {
        cfg.allow_forward = pick(&args.allow_forward, file.allow_forward);
    }
    cfg.allow_destination = pick(&args.allow_destination, file.allow_destination);
    cfg.deny_destination = pick(&args.deny_destination, file.deny_destination);
    let forward_only = [
        ("--allow-forward", !args.allow_forward.is_empty()),
        ("--allow-destination", !cfg.allow_destination.is_empty()),
        ("--deny-destination", !cfg.deny_destination.is_empty()),
    ];
    if let Some((flag, _)) = forward_only.iter().find(|(_, set)| *set && !cfg.forward) {
        return Err(format!(
            "{flag} (or its --config key) applies to forward mode only: add --forward"
        ));
    }
    if let Some(t) = args.tunnel_idle_timeout {
        cfg.tunnel_idle_timeout = t;
    } else if let Some(t) = &file.tunnel_idle_timeout {
        cfg.tunnel_idle_timeout =
            parse_limit(t).map_err(|e| format!("tunnel_idle_timeout: {e}"))?;
    }
    if !args.connect_ports.is_empty() {
        cfg.connect_ports = args.connect_ports.clone();
    } else if !file.connect_ports.is_empty() {
        cfg.connect_ports = file.connect_ports;
    }
    cfg.reuse = match (&args.reuse, &file.reuse) {
        (Some(r), _) => *r,
        (None, Some(r)) => r.parse()?,
        (None, None) => ReusePolicy::Safe,
    };
    if let Some(n) = args.pool_size.or(file.pool_size) {
        cfg.pool_size = n;
    }
    cfg.upstream_idle_timeout = args.upstream_idle_timeout;
    cfg.upstream_timeout = args.upstream_timeout;
    // Configured upstreams only: forward-mode https:// origins are always
    // verified against the platform's roots.
    if (args.trust.upstream_insecure || args.trust.upstream_cacert.is_some())
        && cfg.routes.is_empty()
    {
        eprintln!(
            "keepwire: note: --upstream-insecure and --upstream-cacert apply to configured \
             upstreams (--upstream, [[route]]), never to forward-mode origins: here they do nothing"
        );
    }
    cfg.upstream_tls = args.trust.client_config()?;
    if args.upstream_http2 {
        deprecated("--upstream-http2", "--upstream-http2-prior-knowledge");
    }
    cfg.upstream_http2 = args.upstream_http2 || args.upstream_http2_prior_knowledge;
    cfg.upstream_http3 = args.upstream_http3;
    cfg.trace = args.trace;
    let listen = if !args.listen.is_empty() {
        args.listen.clone()
    } else if !file.listen.is_empty() {
        let parsed: Result<_, _> = file.listen.iter().map(|a| parse_listen(a)).collect();
        parsed.map_err(|e| format!("listen: {e}"))?
    } else {
        vec!["127.0.0.1:8081".parse().expect("valid")]
    };
    Ok((listen, cfg))
}

/// Runs the proxy until SIGINT/SIGTERM.
pub fn run(args: ProxyArgs) -> Result<(), String> {
    init_logging();
    let (listen, cfg) = configure(&args)?;
    let (tls, self_signed) = args.tls.server_config()?;
    let rt = runtime(args.threads)?;
    rt.block_on(async move {
        let mode = if cfg.forward && cfg.routes.is_empty() {
            "forward".to_string()
        } else if cfg.forward {
            format!("forward + reverse ({} routes)", cfg.routes.len())
        } else {
            format!("reverse ({} routes)", cfg.routes.len())
        };
        let proxy = Proxy::new(cfg);
        let mut server_cfg = Proxy::server_config();
        server_cfg.idle_timeout = args.idle_timeout;
        server_cfg.pipeline_depth = args.pipeline_depth.max(1);
        server_cfg.tls = tls;
        server_cfg.http3 = args.tls.http3()?;
        server_cfg.io = args.io;
        server_cfg.access_log = args.ops.access_log()?;
        let scheme = if server_cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut builder = Server::builder().config(server_cfg);
        for a in &listen {
            builder = builder.listen(*a);
        }
        let server = builder.bind().map_err(|e| e.to_string())?;
        let (p, server_metrics) = (proxy.clone(), server.metrics_source());
        let ready = Ready::new(true.into());
        let render = move || keepwire::metrics::join(&[server_metrics(), p.render_metrics()]);
        let admin = args.ops.admin(render, &ready)?;
        if let Some(admin) = &admin {
            proxy.add_own_address(admin.local_addr());
        }
        for a in server.local_addrs() {
            proxy.add_own_address(a);
            eprintln!("keepwire proxy: listening on {scheme}://{a}/ ({mode})");
        }
        TlsArgs::announce_http3("proxy", &server);
        if let Some(pem) = &self_signed {
            eprintln!("keepwire proxy: {}", self_signed_note(pem.path()));
        }
        OpsArgs::announce(admin.as_ref());
        // Served as `Arc<Proxy>`: HTTP/1 heads go upstream as read.
        let result = server.run(proxy, args.ops.drain(ready)).await;
        if let Some(a) = admin {
            let _ = a.shutdown().await;
        }
        eprintln!("keepwire proxy: stopped");
        result.map_err(|e| e.to_string())
    })
}
