//! `keepwire serve`: the origin server on the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, Response};
use keepwire::server::Config;
use keepwire::{Body, Server};

use crate::common::{
    OpsArgs, Ready, init_logging, parse_duration, parse_limit, parse_listen, runtime,
};
use crate::tls::TlsArgs;
use keepwire_lab::files::Files;
use keepwire_lab::realtime::{self, Events};
use keepwire_lab::site::{Site, with_type};

/// Options of `keepwire serve`. Defaults sit beside nginx's; see the
/// `keepwire::server` docs for the table.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; repeat for several. As nginx: `8080` or `:8080`
    /// (every IPv4 interface), `localhost:8080`, `127.0.0.1:8080`, `[::]:8080`.
    #[arg(long = "listen", short = 'l', default_value = "127.0.0.1:8080", value_name = "ADDR", value_parser = parse_listen)]
    listen: Vec<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Serve static files from this directory instead of the demo site.
    /// Nothing outside it is served, even through a symlink; names that
    /// start with `.` answer 404 unless --dotfiles is given.
    #[arg(long, conflicts_with = "respond", value_name = "DIR")]
    root: Option<PathBuf>,
    /// With --root: also serve files and directories whose name starts with
    /// `.` (`.git`, `.env`: 404 by default; `.well-known` is always served).
    #[arg(long, requires = "root")]
    dotfiles: bool,
    /// Answer TRACE with an echo of the request (message/http), leaving out
    /// Cookie, Authorization and Proxy-Authorization. Default: 405.
    #[arg(long)]
    trace: bool,
    /// Answer every request but TRACE with 200 and this text (nginx `return 200`).
    #[arg(long, value_name = "TEXT")]
    respond: Option<String>,
    /// Demo site: objects the page references.
    #[arg(long, default_value_t = 12, value_name = "N")]
    objects: usize,
    /// Demo site: bytes per object.
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    object_size: usize,
    /// Demo site: events per second of the event source behind /poll,
    /// /long-poll, /events and /ws (0: none; at most 10000). Long polls are
    /// held 30 s at most; the last 1024 events are kept for `since` and
    /// Last-Event-ID.
    #[arg(long, default_value_t = 1.0, value_name = "RATE", value_parser = parse_rate)]
    events_per_s: f64,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// I/O backend of cleartext HTTP/1 client connections: epoll or uring
    /// (Linux io_uring; TLS and HTTP/2 stay on epoll).
    #[arg(long, default_value = "epoll")]
    io: keepwire::transport::IoBackend,
    /// Idle keep-alive timeout (`75`, `75s`, `500ms`, `1m`).
    #[arg(long, default_value = "75s", value_parser = parse_limit, value_name = "DURATION")]
    idle_timeout: Duration,
    /// Time to receive a request head (slowloris guard).
    #[arg(long, default_value = "60s", value_parser = parse_limit, value_name = "DURATION")]
    header_timeout: Duration,
    /// Time between two reads of a request body.
    #[arg(long, default_value = "60s", value_parser = parse_limit, value_name = "DURATION")]
    body_timeout: Duration,
    /// Time between two writes.
    #[arg(long, default_value = "60s", value_parser = parse_limit, value_name = "DURATION")]
    write_timeout: Duration,
    /// Requests per connection (0 = unlimited); the last gets `Connection: close`.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    max_requests: u64,
    /// Open connections at once (over it: 503).
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one, value_name = "N")]
    max_connections: usize,
    /// Open connections per client IP (over it: 503).
    #[arg(long, default_value_t = 256, value_parser = at_least_one, value_name = "N")]
    max_connections_per_ip: usize,
    /// Pipelined requests whose handlers may run ahead of the response being
    /// written (a non-idempotent one, such as POST, always runs alone).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pipeline_depth: usize,
    /// Largest request body in bytes (over it: 413).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    max_body: u64,
    /// Do not advertise `Keep-Alive: timeout=, max=` on responses.
    #[arg(long)]
    no_keep_alive_header: bool,
    /// Set SO_REUSEPORT on the listeners.
    #[arg(long)]
    reuse_port: bool,
    #[command(flatten)]
    ops: OpsArgs,
    /// Time given to in-flight requests on SIGINT/SIGTERM.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    shutdown_timeout: Duration,
}

/// What answers requests.
enum App {
    Respond(Bytes),
    Files(Files),
    Site(Site),
}

impl App {
    async fn handle(&self, req: Request<Body>, trace: bool) -> Response<Body> {
        if req.method() == Method::TRACE {
            return if trace {
                keepwire::trace::echo(&req)
            } else {
                keepwire::trace::refused(match self {
                    App::Files(_) => "GET, HEAD",
                    _ => "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH",
                })
            };
        }
        match self {
            App::Respond(text) => with_type(Body::full(text.clone()), "text/plain; charset=utf-8"),
            App::Files(files) => files.handle(req).await,
            App::Site(site) => site.handle(req).await,
        }
    }
}

/// A connection limit: 0 would answer every request 503.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(0) => Err("must be at least 1 (0 would refuse every connection)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// Runs the server until SIGINT/SIGTERM, then shuts down gracefully.
pub fn run(args: ServeArgs) -> Result<(), String> {
    init_logging();
    let app = match (&args.respond, &args.root) {
        (Some(text), _) => App::Respond(Bytes::from(format!("{text}\n"))),
        (None, Some(root)) => App::Files(
            Files::new(root, args.dotfiles)
                .map_err(|e| format!("--root {}: {e}", root.display()))?,
        ),
        (None, None) => App::Site(
            Site::new(args.objects, args.object_size)
                .with_events(Events::new(realtime::Config::with_rate(args.events_per_s))),
        ),
    };
    let rt = runtime(args.threads)?;
    rt.block_on(serve(args, app))
}

async fn serve(args: ServeArgs, app: App) -> Result<(), String> {
    let mut config = Config::default();
    config.idle_timeout = args.idle_timeout;
    config.advertise_keep_alive = !args.no_keep_alive_header;
    config.header_timeout = args.header_timeout;
    config.body_timeout = args.body_timeout;
    config.write_timeout = args.write_timeout;
    config.max_requests = (args.max_requests > 0).then_some(args.max_requests);
    config.max_connections = args.max_connections;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.pipeline_depth = args.pipeline_depth.max(1);
    config.shutdown_timeout = args.shutdown_timeout;
    config.limits.max_body_bytes = Some(args.max_body);
    let (tls, self_signed) = args.tls.server_config()?;
    config.tls = tls;
    config.http3 = args.tls.http3()?;
    config.io = args.io;
    config.listen.reuse_port = args.reuse_port;
    config.access_log = args.ops.access_log()?;
    let mut builder = Server::builder().config(config);
    for addr in &args.listen {
        builder = builder.listen(*addr);
    }
    let server = builder.bind().map_err(|e| e.to_string())?;
    let what = match &app {
        App::Respond(_) => "fixed response".to_string(),
        App::Files(_) => format!(
            "files from {}",
            args.root
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        ),
        App::Site(s) => format!(
            "demo site: a page with {} objects of {} bytes, {} events/s",
            s.objects,
            s.object_size,
            s.events.config().events_per_s
        ),
    };
    let scheme = if config_is_tls(&server) {
        "https"
    } else {
        "http"
    };
    let ready = Ready::new(true.into());
    let admin = args.ops.admin(server.metrics_source(), &ready)?;
    for addr in server.local_addrs() {
        eprintln!("keepwire serve: listening on {scheme}://{addr}/ ({what})");
    }
    crate::tls::TlsArgs::announce_http3("serve", &server);
    if let Some(pem) = &self_signed {
        eprintln!(
            "keepwire serve: {}",
            crate::tls::self_signed_note(pem.path())
        );
    }
    OpsArgs::announce(admin.as_ref());

    // Streams and long polls never end by themselves: on the signal the
    // event source ends them, so the graceful shutdown need not time out.
    let events = match &app {
        App::Site(site) => Some(site.events.clone()),
        _ => None,
    };
    let app = Arc::new(app);
    let trace = args.trace;
    let handler = move |req: Request<Body>| {
        let app = app.clone();
        async move { app.handle(req, trace).await }
    };
    let drain = args.ops.drain(ready);
    let stop = async move {
        drain.await;
        if let Some(events) = events {
            events.close();
        }
    };
    let result = server.run(handler, stop).await;
    if let Some(admin) = admin {
        let _ = admin.shutdown().await;
    }
    eprintln!("keepwire serve: stopped");
    result.map_err(|e| e.to_string())
}

/// `--events-per-s`: 0 to [`realtime::MAX_EVENTS_PER_S`].
fn parse_rate(s: &str) -> Result<f64, String> {
    let max = realtime::MAX_EVENTS_PER_S;
    match s.parse::<f64>() {
        Ok(r) if (0.0..=max).contains(&r) => Ok(r),
        _ => Err(format!("expected a rate from 0 to {max} events per second")),
    }
}

fn config_is_tls(server: &keepwire::Server) -> bool {
    server.config().tls.is_some()
}
