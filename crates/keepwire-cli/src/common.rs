//! What every long-running subcommand shares: logging, the runtime, the
//! admin (metrics) listener and the shutdown signal.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};
use keepwire::server::ServerHandle;
use keepwire::{Body, Server};

use keepwire_lab::site::{status, with_type};

/// `75` (seconds), or a humantime duration such as `75s` or `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Tells the user, once, on stderr, that a flag they used has a new
/// spelling. Old spellings keep working for one release (issue 18).
#[allow(dead_code)] // first callers land with issue 18
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

/// Logs to stderr; `KEEPWIRE_LOG` overrides the filter.
pub fn init_logging(access_log: bool) {
    let default = if access_log {
        "info"
    } else {
        "info,keepwire::access=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEPWIRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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

/// Serves `render()` as Prometheus text at `http://addr/metrics`.
pub fn spawn_admin(
    addr: SocketAddr,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> Result<ServerHandle, String> {
    let admin = Server::builder()
        .listen(addr)
        .bind()
        .map_err(|e| format!("--admin: {e}"))?;
    eprintln!(
        "keepwire: metrics on http://{}/metrics",
        admin.local_addrs()[0]
    );
    Ok(admin.spawn(move |req: Request<Body>| {
        let text = (req.uri().path() == "/metrics").then(&render);
        async move {
            match text {
                Some(t) => with_type(Body::from(t), "text/plain; version=0.0.4"),
                None => status(StatusCode::NOT_FOUND),
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
