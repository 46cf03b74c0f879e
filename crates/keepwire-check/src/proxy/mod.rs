//! The checks of a forward or reverse proxy: what crosses it, both ways.
//!
//! The checker talks to the proxy over raw TCP (the probe) and addresses
//! its own recording origin through it, so each check sees what the client
//! sent, what the origin received and what came back.

mod framing;
mod hop;
mod tunnel;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Options;
use crate::probe::{Endpoint, Probe, failed};
use crate::recording_origin::{Recorded, RecordingOrigin};
use crate::report::{CheckResult, Outcome};
use crate::response::Response;
use crate::table::{CheckOut, Spec as TableSpec, run_table};
use framing::{pipeline, post_once, reframe, smuggle, truncation};
use hop::{dumb10, hop_to_client, hop_to_origin, proxy_connection, via};
use tunnel::{connect, upgrade};

/// Everything a check needs: the proxy, the origin and how to address it.
struct Ctx {
    proxy: Endpoint,
    origin: RecordingOrigin,
    reverse: bool,
    next: AtomicU64,
}

impl Ctx {
    /// A fresh path for `script`, unique in this run.
    fn path(&self, script: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("/kw/{script}/{n}")
    }

    fn request(&self, method: &str, path: &str, version: &str, extra: &str) -> Vec<u8> {
        let port = self.origin.port;
        let (target, host) = if self.reverse {
            (path.to_string(), self.proxy.host.clone())
        } else {
            (
                format!("http://127.0.0.1:{port}{path}"),
                format!("127.0.0.1:{port}"),
            )
        };
        format!(
            "{method} {target} HTTP/{version}\r\nHost: {host}\r\nUser-Agent: keepwire-check\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn get(&self, path: &str, extra: &str) -> Vec<u8> {
        self.request("GET", path, "1.1", extra)
    }

    async fn connect(&self, deadline: Instant) -> Result<Probe, Outcome> {
        Probe::connect(&self.proxy, deadline)
            .await
            .map_err(failed("connect to the proxy"))
    }

    /// The one request the origin saw for `path`, or a FAIL.
    fn seen_once(&self, path: &str, resp: &Response) -> Result<Recorded, Outcome> {
        self.origin.seen(path).into_iter().next().ok_or_else(|| {
            Outcome::fail(format!(
                "the request never reached the origin (proxy answered {})",
                resp.brief()
            ))
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Id {
    HopToOrigin,
    HopToClient,
    ProxyConnection,
    Dumb10,
    Truncation,
    PostOnce,
    Reframe,
    Pipeline,
    Smuggle(Vector),
    Via,
    Connect,
    Upgrade,
}

/// A request-smuggling vector (R10.1): a request whose framing is ambiguous,
/// followed by a `GET .../kw/smuggled/N` that must never reach the origin.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Vector {
    /// `Content-Length: 4` and `Transfer-Encoding: chunked`.
    TeCl,
    /// `Content-Length: N` (the smuggled request's length) and
    /// `Content-Length: 0`.
    DupCl,
    /// `Transfer-Encoding: chunked, gzip` (chunked not final).
    NonFinalChunked,
    /// `Transfer-Encoding: chunked` with a chunk size of `5zz`.
    BadChunk,
}

pub(crate) type Spec = TableSpec<Id>;

const fn c(rule: &'static str, name: &'static str, id: Id) -> Spec {
    Spec {
        rule,
        name,
        id,
        slow: false,
        long: false,
    }
}

pub(crate) const CHECKS: &[Spec] = &[
    c("R3.2", "hop-by-hop removed toward origin", Id::HopToOrigin),
    c("R3.2", "hop-by-hop removed toward client", Id::HopToClient),
    c(
        "R6.2",
        "Proxy-Connection never forwarded",
        Id::ProxyConnection,
    ),
    c("R6.1", "HTTP/1.0 keep-alive does not hang", Id::Dumb10),
    c("R8.2", "truncated body passed on, closed", Id::Truncation),
    c("R8.3", "POST never delivered twice", Id::PostOnce),
    c("R5.4", "close-delimited response re-framed", Id::Reframe),
    c("R7.2", "pipelined responses in order", Id::Pipeline),
    c("R10.1", "TE + CL not passed on", Id::Smuggle(Vector::TeCl)),
    c(
        "R10.1",
        "differing Content-Length not passed on",
        Id::Smuggle(Vector::DupCl),
    ),
    c(
        "R10.1",
        "non-final chunked not passed on",
        Id::Smuggle(Vector::NonFinalChunked),
    ),
    c(
        "R10.1",
        "invalid chunk size not passed on",
        Id::Smuggle(Vector::BadChunk),
    ),
    c("R6.3", "Via added (RFC 9110 7.6.3)", Id::Via),
    c("R9.1", "upgrade relayed, bytes tunneled", Id::Upgrade),
    c("R9.3", "CONNECT tunnel relays bytes", Id::Connect),
];

/// Starts the recording origin (on `origin_port`, or a free port) and runs
/// the selected checks against the proxy at `addr` (host:port).
pub(crate) async fn run_checks(
    addr: &str,
    reverse: bool,
    origin_port: Option<u16>,
    options: &Options,
) -> Result<Vec<CheckResult>, String> {
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let ctx = Ctx {
        proxy: Endpoint {
            addr: addr.to_string(),
            host: addr.to_string(),
            path: "/".to_string(),
            tls: false,
        },
        origin: RecordingOrigin::start(origin_port).await?,
        reverse,
        next: AtomicU64::new(1),
    };
    let total = options.total_timeout.unwrap_or(crate::DEFAULT_TOTAL);
    Ok(
        run_table(CHECKS, options, Duration::ZERO, total, |id, deadline| {
            run_one(id, &ctx, deadline)
        })
        .await,
    )
}

async fn run_one(id: Id, ctx: &Ctx, deadline: Instant) -> CheckOut {
    match id {
        Id::HopToOrigin => hop_to_origin(ctx, deadline).await,
        Id::HopToClient => hop_to_client(ctx, deadline).await,
        Id::ProxyConnection => proxy_connection(ctx, deadline).await,
        Id::Dumb10 => dumb10(ctx, deadline).await,
        Id::Truncation => truncation(ctx, deadline).await,
        Id::PostOnce => post_once(ctx, deadline).await,
        Id::Reframe => reframe(ctx, deadline).await,
        Id::Pipeline => pipeline(ctx, deadline).await,
        Id::Smuggle(v) => smuggle(ctx, v, deadline).await,
        Id::Via => via(ctx, deadline).await,
        Id::Connect => connect(ctx, deadline).await,
        Id::Upgrade => upgrade(ctx, deadline).await,
    }
}

/// Sends one GET for a fresh `script` path with `extra` fields; returns the
/// path and the response.
async fn simple(
    ctx: &Ctx,
    script: &str,
    extra: &str,
    deadline: Instant,
) -> Result<(String, Response), Outcome> {
    let path = ctx.path(script);
    let mut p = ctx.connect(deadline).await?;
    p.send(&ctx.get(&path, extra))
        .await
        .map_err(failed("request"))?;
    let r = p.read_response(false).await.map_err(failed("response"))?;
    Ok((path, r))
}
