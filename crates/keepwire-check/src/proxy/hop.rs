//! What a proxy must not pass on, and what it must add (R3.2, R6): the
//! hop-by-hop fields in both directions, `Proxy-Connection`, the HTTP/1.0
//! keep-alive that a dumb proxy turns into a hang, and `Via`.

use std::time::Instant;

use super::ctx::{Ctx, simple};
use crate::probe::{Ending, ProbeError, failed};
use crate::report::Outcome;
use crate::table::CheckOut;

pub(super) async fn hop_to_origin(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let extra = "Connection: X-Hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
                 TE: trailers\r\nProxy-Connection: keep-alive\r\nX-End: 1\r\n";
    let (path, r) = simple(ctx, "hop", extra, deadline).await?;
    let s = ctx.seen_once(&path, &r)?;
    let mut leaked = Vec::new();
    if let Some(v) = s.header("connection") {
        if s.has_token("connection", "x-hop") {
            leaked.push(format!("Connection: {v}"));
        }
    }
    for name in ["X-Hop", "Proxy-Connection"] {
        if let Some(v) = s.header(name) {
            leaked.push(format!("{name}: {v}"));
        }
    }
    if let Some(v) = s.header("keep-alive") {
        if v.contains("timeout=5") {
            leaked.push(format!("Keep-Alive: {v}"));
        }
    }
    if let Some(v) = s.header("te") {
        if !s.has_token("connection", "te") {
            leaked.push(format!("TE: {v} (not named in Connection)"));
        }
    }
    if !leaked.is_empty() {
        return Ok(Outcome::fail(format!(
            "forwarded to the origin: {}",
            leaked.join("; ")
        )));
    }
    if s.header("x-end").is_none() {
        return Ok(Outcome::fail(
            "the end-to-end field X-End: 1 did not reach the origin",
        ));
    }
    let own = s
        .header("connection")
        .map(|v| format!(" (proxy's own Connection: {v})"))
        .unwrap_or_default();
    Ok(Outcome::pass(format!(
        "origin saw none of Connection-named X-Hop, Keep-Alive, TE, Proxy-Connection; X-End arrived{own}"
    )))
}

pub(super) async fn hop_to_client(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let (_, r) = simple(ctx, "hopresp", "", deadline).await?;
    let mut leaked = Vec::new();
    if r.has_token("connection", "x-bar") {
        leaked.push(format!(
            "Connection: {}",
            r.header("connection").unwrap_or_default()
        ));
    }
    for name in ["X-Bar", "Proxy-Authenticate"] {
        if let Some(v) = r.header(name) {
            leaked.push(format!("{name}: {v}"));
        }
    }
    if let Some(v) = r.header("keep-alive") {
        if v.contains("timeout=99") {
            leaked.push(format!("Keep-Alive: {v}"));
        }
    }
    if !leaked.is_empty() {
        return Ok(Outcome::fail(format!(
            "origin's hop-by-hop fields reached the client: {}",
            leaked.join("; ")
        )));
    }
    Ok(Outcome::pass(format!(
        "{}; no X-Bar, Keep-Alive: timeout=99 or Proxy-Authenticate",
        r.brief()
    )))
}

pub(super) async fn proxy_connection(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let (path, r) = simple(ctx, "pc", "Proxy-Connection: keep-alive\r\n", deadline).await?;
    let s = ctx.seen_once(&path, &r)?;
    match s.header("proxy-connection") {
        Some(v) => Ok(Outcome::fail(format!(
            "origin received Proxy-Connection: {v}"
        ))),
        None => Ok(Outcome::pass("origin received no Proxy-Connection")),
    }
}

pub(super) async fn dumb10(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let mut p = ctx.connect(deadline).await?;
    let req = |path: &str| ctx.request("GET", path, "1.0", "Connection: Keep-Alive\r\n");
    p.send(&req(&ctx.path("ka10")))
        .await
        .map_err(failed("first request"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("first response"))?;
    let persists = !r1.close_delimited
        && !r1.has_token("connection", "close")
        && (r1.has_token("connection", "keep-alive") || r1.status_line.starts_with("HTTP/1.1"));
    if !persists {
        return match p.ending().await {
            Ending::Fin | Ending::Reset => Ok(Outcome::pass(format!(
                "proxy declined keep-alive and closed: {}",
                r1.brief()
            ))),
            other => Ok(Outcome::fail(format!(
                "{} does not keep the connection, but then {other}",
                r1.brief()
            ))),
        };
    }
    let t = Instant::now();
    p.send(&req(&ctx.path("ka10")))
        .await
        .map_err(failed("second request"))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "2 responses on one HTTP/1.0 keep-alive connection: {} / {} (second in {:?})",
            r1.brief(),
            r2.status_line,
            t.elapsed()
        ))),
        Err(e @ ProbeError::Timeout { .. }) => Ok(Outcome::fail(format!(
            "{} kept the connection, but the second request hung for {:?}: {e} \
             (dumb proxy: Connection: Keep-Alive forwarded?)",
            r1.brief(),
            t.elapsed()
        ))),
        Err(e) => Ok(Outcome::warn(format!(
            "{} kept the connection, but the second request got: {e}",
            r1.brief()
        ))),
    }
}

pub(super) async fn via(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let (path, r) = simple(ctx, "echo", "", deadline).await?;
    let s = ctx.seen_once(&path, &r)?;
    let back = r
        .header("via")
        .map(|v| format!("; response Via: {v}"))
        .unwrap_or_else(|| "; no Via on the response".into());
    match s.header("via") {
        Some(v) => Ok(Outcome::pass(format!("origin saw Via: {v}{back}"))),
        None => Ok(Outcome::warn(format!(
            "origin saw no Via header (SHOULD add one){back}"
        ))),
    }
}
