//! The checks of a forward or reverse proxy: what crosses it, both ways.
//!
//! The checker talks to the proxy over raw TCP (the probe) and addresses
//! its own recording origin through it, so each check sees what the client
//! sent, what the origin received and what came back.

mod ctx;
mod framing;
mod hop;
mod tunnel;

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::options::Options;
use crate::probe::Endpoint;
use crate::recording_origin::RecordingOrigin;
use crate::report::CheckResult;
use crate::table::{CheckOut, Spec as TableSpec, c, run_table};
use ctx::Ctx;
use framing::{Vector, pipeline, post_once, reframe, smuggle, truncation};
use hop::{dumb10, hop_to_client, hop_to_origin, proxy_connection, via};
use tunnel::{connect, upgrade};

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

pub(crate) type Spec = TableSpec<Id>;

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

/// The proxy's `host:port`, also when given as `http://host:port/`.
pub(crate) fn address(addr: &str) -> &str {
    addr.trim_start_matches("http://").trim_end_matches('/')
}

/// Starts the recording origin (on `origin_port`, or a free port) and runs
/// the selected checks against the proxy at `addr` (host:port).
pub(crate) async fn run_checks(
    addr: &str,
    reverse: bool,
    origin_port: Option<u16>,
    options: &Options,
) -> Result<Vec<CheckResult>, String> {
    let addr = address(addr);
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
    let total = options
        .total_timeout
        .unwrap_or(crate::options::DEFAULT_TOTAL);
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
