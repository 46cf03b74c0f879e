//! What every proxy check shares: the proxy, the recording origin behind
//! it, and requests addressed to that origin the way this kind of proxy
//! expects them (absolute form for a forward proxy, origin form for a
//! reverse one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::probe::{Endpoint, Probe, failed};
use crate::recording_origin::{Recorded, RecordingOrigin};
use crate::report::Outcome;
use crate::response::Response;

/// Everything a check needs: the proxy, the origin and how to address it.
pub(super) struct Ctx {
    pub(super) proxy: Endpoint,
    pub(super) origin: RecordingOrigin,
    pub(super) reverse: bool,
    pub(super) next: AtomicU64,
}

impl Ctx {
    /// A fresh path for `script`, unique in this run.
    pub(super) fn path(&self, script: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("/kw/{script}/{n}")
    }

    pub(super) fn request(&self, method: &str, path: &str, version: &str, extra: &str) -> Vec<u8> {
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

    pub(super) fn get(&self, path: &str, extra: &str) -> Vec<u8> {
        self.request("GET", path, "1.1", extra)
    }

    pub(super) async fn connect(&self, deadline: Instant) -> Result<Probe, Outcome> {
        Probe::connect(&self.proxy, deadline)
            .await
            .map_err(failed("connect to the proxy"))
    }

    /// The one request the origin saw for `path`, or a FAIL.
    pub(super) fn seen_once(&self, path: &str, resp: &Response) -> Result<Recorded, Outcome> {
        self.origin.seen(path).into_iter().next().ok_or_else(|| {
            Outcome::fail(format!(
                "the request never reached the origin (proxy answered {})",
                resp.brief()
            ))
        })
    }
}

/// Sends one GET for a fresh `script` path with `extra` fields; returns the
/// path and the response.
pub(super) async fn simple(
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
