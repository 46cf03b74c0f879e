//! `keepwire proxy`: the forward/reverse proxy on the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use keepwire::Server;
use keepwire::proxy::{Proxy, ProxyConfig, ReusePolicy, Route, Upstream, parse_authority};
use keepwire::server::Config;
use serde::Deserialize;

use crate::common::{init_logging, parse_duration, runtime, shutdown_signal, spawn_admin};
use crate::tls::{TlsArgs, TrustArgs, self_signed_note};

/// Options of `keepwire proxy`.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address to listen on (repeatable). Defaults to loopback so the proxy is
    /// never open to the network by accident.
    #[arg(long = "listen", short = 'l')]
    listen: Vec<SocketAddr>,
    /// Reverse proxy: send requests to this origin (`http://host:port`, or
    /// `https://host:port`: TLS, HTTP/2 or HTTP/1.1 as ALPN decides); repeat for
    /// round-robin over several.
    #[arg(long = "upstream", short = 'u')]
    upstream: Vec<String>,
    /// TOML file with `listen`, `forward`, `allow`, `connect_ports`, `reuse`,
    /// `pool_size` and `[[route]]` tables (`host`, `prefix`, `upstreams`).
    /// Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Forward proxy: accept absolute-form requests (`GET http://host/`) and
    /// CONNECT tunnels. On by default when no upstream or route is given.
    #[arg(long)]
    forward: bool,
    /// Client networks allowed to use the proxy (CIDR, repeatable; default
    /// loopback only).
    #[arg(long = "allow")]
    allow: Vec<IpNet>,
    /// Ports CONNECT may reach (repeatable; default 443).
    #[arg(long = "connect-port")]
    connect_ports: Vec<u16>,
    /// Upstream connection reuse: always, safe (fresh connection for requests
    /// that could not be retried), never.
    #[arg(long)]
    reuse: Option<ReusePolicy>,
    /// Upstream connections per origin.
    #[arg(long)]
    pool_size: Option<usize>,
    /// Idle timeout of upstream connections (shortened by their Keep-Alive hints).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    upstream_idle_timeout: Duration,
    /// Time for an upstream to answer (then 504), and the longest pause
    /// inside its response body (then the client's response is cut short).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    upstream_timeout: Duration,
    /// Idle timeout of client connections.
    #[arg(long, default_value = "75s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Pipelined client requests fetched upstream concurrently (answered in
    /// order); a non-idempotent one (POST, ...) goes alone, in order.
    #[arg(long, default_value_t = 8)]
    pipeline_depth: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Log one line per request.
    #[arg(long)]
    access_log: bool,
    /// Speak HTTP/2 with prior knowledge (h2c) to http:// upstreams: one
    /// multiplexed connection per upstream instead of a pool. (https://
    /// upstreams choose by ALPN.)
    #[arg(long)]
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
    listen: Vec<SocketAddr>,
    #[serde(default)]
    forward: bool,
    #[serde(default)]
    allow: Vec<IpNet>,
    #[serde(default)]
    connect_ports: Vec<u16>,
    reuse: Option<String>,
    pool_size: Option<usize>,
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
}

fn root() -> String {
    "/".into()
}

fn upstreams(list: &[String]) -> Result<Vec<Upstream>, String> {
    list.iter()
        .map(|u| parse_authority(u).map(Upstream::new))
        .collect()
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
        cfg.routes.push(Route::new(
            r.host.clone(),
            r.prefix.clone(),
            upstreams(&r.upstreams)?,
        ));
    }
    if !args.upstream.is_empty() {
        cfg.routes
            .push(Route::new(None, "/", upstreams(&args.upstream)?));
    }
    cfg.forward = args.forward || file.forward || cfg.routes.is_empty();
    if !args.allow.is_empty() {
        cfg.allow = args.allow.clone();
    } else if !file.allow.is_empty() {
        cfg.allow = file.allow;
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
    cfg.upstream_tls = args.trust.client_config()?;
    cfg.upstream_http2 = args.upstream_http2;
    cfg.trace = args.trace;
    let listen = if !args.listen.is_empty() {
        args.listen.clone()
    } else if !file.listen.is_empty() {
        file.listen
    } else {
        vec!["127.0.0.1:8081".parse().expect("valid")]
    };
    Ok((listen, cfg))
}

/// Runs the proxy until SIGINT/SIGTERM.
pub fn run(args: ProxyArgs) -> Result<(), String> {
    init_logging(args.access_log);
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
        let server_cfg = Config {
            idle_timeout: args.idle_timeout,
            pipeline_depth: args.pipeline_depth.max(1),
            proxy_connection: true,
            preserve_header_case: true,
            max_requests: None,
            tls,
            ..Config::default()
        };
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
        for a in server.local_addrs() {
            eprintln!("keepwire proxy: listening on {scheme}://{a}/ ({mode})");
        }
        if let Some(pem) = &self_signed {
            eprintln!("keepwire proxy: {}", self_signed_note(pem.path()));
        }
        let admin = match args.admin {
            Some(addr) => {
                let p = proxy.clone();
                let server_metrics = server.metrics_source();
                Some(spawn_admin(addr, move || {
                    format!("{}{}", server_metrics(), p.render_metrics())
                })?)
            }
            None => None,
        };
        let handler = move |req| proxy.clone().handle(req);
        let result = server.run(handler, shutdown_signal()).await;
        if let Some(a) = admin {
            let _ = a.shutdown().await;
        }
        eprintln!("keepwire proxy: stopped");
        result.map_err(|e| e.to_string())
    })
}
