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

use crate::Error;
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
) -> Result<Vec<CheckResult>, Error> {
    let addr = address(addr);
    let ctx = Ctx {
        proxy: Endpoint {
            addr: addr.to_string(),
            host: addr.to_string(),
            path: "/".to_string(),
            tls: false,
        },
        origin: RecordingOrigin::start(origin_port)
            .await
            .map_err(Error::Origin)?,
        reverse,
        next: AtomicU64::new(1),
    };
    preflight(&ctx, options.timeout).await?;
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

/// One plain GET through the proxy before any check. A proxy that does
/// not pass it to the recording origin (a forward proxy refusing loopback
/// destinations, a reverse proxy sending elsewhere, `--reverse` forgotten)
/// would fail every check for that one reason: one error that says how to
/// set it up instead.
async fn preflight(ctx: &Ctx, timeout: Duration) -> Result<(), Error> {
    let origin = format!("127.0.0.1:{}", ctx.origin.port);
    let not_forwarded = |answer: String| {
        let setup = match ctx.reverse {
            false => format!(
                "a forward proxy must let {origin} through (keepwire proxy --forward \
                 --allow-destination 127.0.0.1/32); for a reverse proxy add --reverse \
                 --origin-port PORT"
            ),
            true => format!(
                "a reverse proxy must forward to {origin} (keepwire proxy --upstream \
                 http://{origin}); without --reverse the proxy is taken as a forward one"
            ),
        };
        Error::NotForwarded {
            addr: ctx.proxy.addr.clone(),
            cause: format!("a plain GET for the recording origin {answer}; {setup}"),
        }
    };
    let deadline = Instant::now() + timeout;
    let (path, resp) = match ctx::simple(ctx, "preflight", "", deadline).await {
        Ok(answer) => answer,
        // No answer at all: how it is set up is not the question.
        Err(o) => {
            return Err(Error::NotForwarded {
                addr: ctx.proxy.addr.clone(),
                cause: format!(
                    "a plain GET for the recording origin failed: {}",
                    o.evidence
                ),
            });
        }
    };
    match ctx.origin.seen(&path).is_empty() {
        false => Ok(()),
        true => Err(not_forwarded(format!(
            "was answered {} {} without reaching it",
            resp.brief(),
            crate::response::show(&resp.body)
        ))),
    }
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
