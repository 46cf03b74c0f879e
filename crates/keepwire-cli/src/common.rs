//! What every subcommand shares: flag parsers (durations, headers, listen
//! addresses), colour and error hints, logging, the runtime, the admin
//! listener (metrics, health), the access log and the drain on SIGTERM.

use std::future::Future;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use keepwire::server::ServerHandle;
use keepwire::server::access::AccessLog;
use keepwire::{Body, Server};

use keepwire_lab::site::{status, with_type};

/// `75` (seconds), or a humantime duration such as `75s` or `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A time limit: a duration as [`parse_duration`] reads it, but not zero
/// (a zero limit fails everything at once, or means "none" elsewhere).
pub fn parse_limit(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: a time limit must be more than 0")),
        d => Ok(d),
    }
}

/// A listen address in every form nginx's `listen` takes: `8080` and
/// `:8080` (every IPv4 interface, as nginx), `*:8080`, `127.0.0.1:8080`,
/// `[::1]:8080`, `[::]:8080`, `localhost:8080` (127.0.0.1). Other names are
/// refused rather than resolved: a listener's address should not depend on DNS.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    const FORMS: &str = "PORT, :PORT, HOST:PORT, [IPv6]:PORT or localhost:PORT";
    let bad = |why: &str| format!("invalid address {s:?}: {why} ({FORMS})");
    let (host, port) = s.rsplit_once(':').unwrap_or(("", s));
    let port: u16 = port.parse().map_err(|_| bad("no port"))?;
    let ip = match host {
        "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        h if h.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse().map_err(|_| bad("not an IPv6 address"))?,
            None if h.contains(':') => return Err(bad("write an IPv6 address in brackets")),
            None => h.parse().map_err(|_| bad("not an IP nor localhost"))?,
        },
    };
    Ok(SocketAddr::new(ip, port))
}

/// Whether to colour what goes to `stream`: only a terminal, and only if
/// `NO_COLOR` is unset or empty (no-color.org); never in a pipe or a file.
pub fn use_color(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `e` with the next step when it is about an unverified certificate:
/// `cacert` and `insecure` name the flags that trust a CA or skip the check.
pub fn cert_hint(e: String, cacert: &str, insecure: &str) -> String {
    if e.contains("certificate") && !e.contains(" to skip verification") {
        format!("{e}; use {cacert} to trust its CA, or {insecure} to skip verification")
    } else {
        e
    }
}

/// Where `--json [FILE]` or `--report [FILE]` writes: stdout (`-`) or a
/// file, created when the flag is read so a bad path fails before the work.
pub enum Out {
    Stdout,
    File(std::fs::File, String),
}

impl Out {
    pub fn open(dest: &str, flag: &str) -> Result<Out, String> {
        if dest == "-" {
            return Ok(Out::Stdout);
        }
        let what = format!("{flag} {dest}");
        std::fs::File::create(dest)
            .map(|f| Out::File(f, what.clone()))
            .map_err(|e| format!("{what}: {e}"))
    }

    pub fn is_stdout(&self) -> bool {
        matches!(self, Out::Stdout)
    }

    pub fn write(self, text: &str) -> Result<(), String> {
        use std::io::Write;
        match self {
            Out::Stdout => match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => stdout_closed(),
                r => r.map_err(|e| format!("stdout: {e}")),
            },
            Out::File(mut f, what) => f
                .write_all(text.as_bytes())
                .map_err(|e| format!("{what}: {e}")),
        }
    }
}

/// The reader of stdout left (`keepwire ... | head`): end quietly, with
/// the status a shell shows for `cat` killed by SIGPIPE.
pub fn stdout_closed() -> ! {
    std::process::exit(141)
}

/// Tells the user, once, on stderr, that a flag they used has a new
/// spelling. Old spellings keep working for one release (issue 18).
pub fn deprecated(old: &str, new: &str) {
    eprintln!(
        "keepwire: note: {old} is deprecated; use {new} (the old spelling goes in the next release)"
    );
}

/// A `-H 'Name: value'` argument.
pub fn parse_header(h: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("invalid header {h:?}: expected `Name: value`"))?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("invalid header name in {h:?}"))?;
    let value = http::HeaderValue::from_str(value.trim())
        .map_err(|_| format!("invalid header value in {h:?}"))?;
    Ok((name, value))
}

/// The diagnostic log (not the access log) on stderr: the filter comes
/// from `KEEPWIRE_LOG`, else `RUST_LOG`, else `info`; colour only on a
/// terminal without `NO_COLOR`.
pub fn init_logging() {
    let spec = ["KEEPWIRE_LOG", "RUST_LOG"].iter().find_map(|v| {
        std::env::var(v)
            .ok()
            .filter(|s| !s.is_empty())
            .map(|s| (*v, s))
    });
    let filter = match &spec {
        None => tracing_subscriber::EnvFilter::new("info"),
        Some((var, spec)) => tracing_subscriber::EnvFilter::try_new(spec).unwrap_or_else(|e| {
            eprintln!("keepwire: ignoring {var}={spec:?}: {e}");
            tracing_subscriber::EnvFilter::new("info")
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_color(&std::io::stderr()))
        .try_init();
}

/// `/readyz`: true while serving, false from the moment a drain starts.
pub type Ready = Arc<AtomicBool>;

/// The operations flags `serve` and `proxy` share: admin listener, access
/// log, drain (docs/OPERATIONS.md).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Logs: diagnostics go to stderr, filtered by RUST_LOG (e.g. RUST_LOG=debug or \
RUST_LOG=keepwire=debug; default info); KEEPWIRE_LOG is an alias that wins when both are set. \
Colour only when stderr is a terminal and NO_COLOR is unset. The access log (--access-log) is \
not filtered by them. Formats and metric names: docs/OPERATIONS.md."
)]
pub struct OpsArgs {
    /// Admin listener: Prometheus metrics at http://ADDR/metrics, liveness
    /// at /healthz (200 while the process runs), readiness at /readyz (200
    /// while serving, 503 from SIGTERM/SIGINT on). ADDR in any --listen
    /// form (`9090` is every IPv4 interface, as nginx).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub admin: Option<SocketAddr>,
    /// One line per request to FILE (appended), or to stderr with no
    /// value: nginx's combined format, then `local=IP:PORT peer=IP:PORT
    /// conn=N req=K rt=SECONDS close=REASON|- proto=HTTP/1.1|HTTP/1.0|HTTP/2
    /// upstream=STATUS|- urt=SECONDS|-`. Written by a separate thread (a
    /// slow disk never stalls a connection). Put it last or use
    /// --access-log=FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub access_log: Option<PathBuf>,
    /// On SIGTERM/SIGINT, first answer /readyz with 503 and keep accepting
    /// for this long, then shut down gracefully: load balancers stop
    /// sending first (behind Kubernetes: at least the readiness probe's
    /// period × failureThreshold). A second signal skips the rest.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_delay: Duration,
}

impl OpsArgs {
    /// The access log `--access-log` asks for.
    pub fn access_log(&self) -> Result<Option<Arc<AccessLog>>, String> {
        let log = match self.access_log.as_deref() {
            None => return Ok(None),
            Some(p) if p.as_os_str() == "-" => AccessLog::stderr(),
            Some(p) => {
                AccessLog::append_to(p).map_err(|e| format!("--access-log {}: {e}", p.display()))?
            }
        };
        Ok(Some(Arc::new(log)))
    }

    /// The admin listener, if `--admin` asks for one.
    pub fn admin(
        &self,
        render: impl Fn() -> String + Send + Sync + 'static,
        ready: &Ready,
    ) -> Result<Option<ServerHandle>, String> {
        self.admin
            .map(|addr| spawn_admin(addr, render, ready.clone()))
            .transpose()
    }

    /// Completes when the listeners should close: at SIGINT/SIGTERM
    /// `ready` turns false, then `--drain-delay` passes (or a second
    /// signal comes).
    pub fn drain(&self, ready: Ready) -> impl Future<Output = ()> + Send + 'static {
        let delay = self.drain_delay;
        async move {
            shutdown_signal().await;
            ready.store(false, Ordering::SeqCst);
            if !delay.is_zero() {
                eprintln!(
                    "keepwire: draining: /readyz answers 503, the listeners close in {}",
                    humantime::format_duration(delay)
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown_signal() => {}
                }
            }
        }
    }
}

/// A tokio runtime with `threads` workers (default one per core; 1 is a
/// current-thread runtime).
pub fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// The admin listener: `render()` at `/metrics` (OpenMetrics text to a
/// scraper that accepts it, as Prometheus does; else the older Prometheus
/// text format),
/// `/healthz` (200 while the process runs) and `/readyz` (200 while
/// `ready`, else 503).
pub fn spawn_admin(
    addr: SocketAddr,
    render: impl Fn() -> String + Send + Sync + 'static,
    ready: Ready,
) -> Result<ServerHandle, String> {
    let admin = Server::builder()
        .listen(addr)
        .bind()
        .map_err(|e| format!("--admin: {e}"))?;
    let at = admin.local_addrs()[0];
    eprintln!("keepwire: metrics on http://{at}/metrics, health on /healthz and /readyz");
    Ok(admin.spawn(move |req: Request<Body>| {
        let accept = req.headers().get(http::header::ACCEPT);
        let openmetrics = accept.is_some_and(|a| {
            let a = a.to_str().unwrap_or("");
            a.contains("application/openmetrics-text")
        });
        let answer = match req.uri().path() {
            "/metrics" if openmetrics => Ok((render(), keepwire::metrics::CONTENT_TYPE)),
            "/metrics" => Ok((
                keepwire::metrics::to_prometheus_text(&render()),
                keepwire::metrics::TEXT_CONTENT_TYPE,
            )),
            "/healthz" => Err((StatusCode::OK, "ok\n")),
            "/readyz" if ready.load(Ordering::SeqCst) => Err((StatusCode::OK, "ready\n")),
            "/readyz" => Err((StatusCode::SERVICE_UNAVAILABLE, "draining\n")),
            _ => Err((StatusCode::NOT_FOUND, "")),
        };
        async move {
            match answer {
                Ok((t, kind)) => with_type(Body::from(t), kind),
                Err((code, "")) => status(code),
                Err((code, text)) => {
                    let mut r = with_type(Body::from(text), "text/plain; charset=utf-8");
                    *r.status_mut() = code;
                    r
                }
            }
        }
    }))
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("keepwire: shutting down (finishing in-flight requests)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_in_every_nginx_form() {
        let ok = [
            ("8080", "0.0.0.0:8080"),
            (":8080", "0.0.0.0:8080"),
            ("*:8080", "0.0.0.0:8080"),
            ("0", "0.0.0.0:0"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("localhost:8080", "127.0.0.1:8080"),
            ("LocalHost:0", "127.0.0.1:0"),
            ("[::]:8080", "[::]:8080"),
            ("[::1]:0", "[::1]:0"),
        ];
        for (input, want) in ok {
            assert_eq!(parse_listen(input), Ok(want.parse().unwrap()), "{input}");
        }
        for bad in [
            "", "x", "host:80", "::1", "::1:80", "[::1]", "1.2.3.4", ":99999", "[x]:80",
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains("PORT, :PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn certificate_errors_say_what_to_do() {
        let e = cert_hint(
            "invalid peer certificate: UnknownIssuer".into(),
            "--cacert FILE",
            "-k",
        );
        assert!(
            e.ends_with("use --cacert FILE to trust its CA, or -k to skip verification"),
            "{e}"
        );
        assert_eq!(cert_hint(e.clone(), "--cacert FILE", "-k"), e, "once only");
        assert_eq!(cert_hint("refused".into(), "a", "b"), "refused");
    }
}
