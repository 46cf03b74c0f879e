//! After the proxy stops reading HTTP (R9): an upgrade (`101`) and a
//! CONNECT tunnel must relay raw bytes both ways.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::ctx::Ctx;
use crate::probe::{ProbeError, failed};
use crate::report::Outcome;
use crate::response::{find, show};
use crate::table::CheckOut;

pub(super) async fn connect(ctx: &Ctx, deadline: Instant) -> CheckOut {
    if ctx.reverse {
        return Ok(Outcome::skip("CONNECT is for forward proxies (--reverse)"));
    }
    let authority = format!("127.0.0.1:{}", ctx.origin.port);
    let mut p = ctx.connect(deadline).await?;
    p.send(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(failed("CONNECT"))?;
    let r = p
        .read_response(true)
        .await
        .map_err(failed("CONNECT response"))?;
    if r.status == 403 || r.status == 405 {
        return Ok(Outcome::skip(format!(
            "CONNECT to port {port} refused: {} (proxy restricts CONNECT ports? to check \
             it, allow a port and pass it: keepwire proxy --connect-port {port}, check \
             proxy --origin-port {port})",
            r.brief(),
            port = ctx.origin.port
        )));
    }
    if !(200..300).contains(&r.status) {
        return Ok(Outcome::fail(format!(
            "CONNECT {authority} answered {}",
            r.brief()
        )));
    }
    let marker = format!("KWTUNNEL {}\n", ctx.next.fetch_add(1, Ordering::Relaxed));
    p.send(marker.as_bytes())
        .await
        .map_err(failed("bytes into the tunnel"))?;
    while find(&p.buf, marker.as_bytes()).is_none() {
        match p.fill(deadline).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Outcome::fail(format!(
                    "tunnel closed after {} bytes back: {}",
                    p.buf.len(),
                    show(&p.buf)
                )));
            }
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "{} then {} bytes back through the tunnel ({}): {e}",
                    r.status_line,
                    p.buf.len(),
                    show(&p.buf)
                )));
            }
        }
    }
    if !ctx.origin.tunnel_bytes(marker.as_bytes()) {
        return Ok(Outcome::fail(
            "the echo came back but the origin never saw the bytes",
        ));
    }
    Ok(Outcome::pass(format!(
        "{}; {} raw bytes relayed to the origin and echoed back",
        r.status_line,
        marker.len()
    )))
}

/// R9.1: an upgrade request is relayed, the origin's 101 comes back, and raw
/// bytes then cross the proxy both ways.
pub(super) async fn upgrade(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let path = ctx.path("upgrade");
    let mut p = ctx.connect(deadline).await?;
    p.send(&ctx.get(&path, "Connection: Upgrade\r\nUpgrade: websocket\r\n"))
        .await
        .map_err(failed("upgrade request"))?;
    let r = match p.read_response(true).await {
        Ok(r) => r,
        Err(e @ ProbeError::Timeout { .. }) => {
            return Ok(Outcome::fail(format!(
                "no answer to the upgrade request ({e}): the proxy hangs"
            )));
        }
        Err(e) => return Err(failed("upgrade response")(e)),
    };
    let seen = ctx.origin.seen(&path);
    let origin_saw = match seen.first() {
        None => "the request never reached the origin".to_string(),
        Some(s) => match s.header("upgrade") {
            Some(v) => format!("origin saw Upgrade: {v} and answered 101"),
            None => "origin saw no Upgrade field and answered 200".to_string(),
        },
    };
    if r.status != 101 {
        return Ok(Outcome::warn(format!(
            "proxy answered the upgrade request with {} ({origin_saw}): upgrades are not relayed",
            r.brief()
        )));
    }
    if !seen.iter().any(|s| s.has_token("upgrade", "websocket")) {
        return Ok(Outcome::fail(format!(
            "client got {} but {origin_saw}",
            r.status_line
        )));
    }
    let marker = format!("KWUPGRADE {}\n", ctx.next.fetch_add(1, Ordering::Relaxed));
    p.send(marker.as_bytes())
        .await
        .map_err(failed("bytes into the upgraded connection"))?;
    while p.buf.len() < marker.len() {
        match p.fill(deadline).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Outcome::fail(format!(
                    "{}, then the connection closed after {} bytes back: {}",
                    r.status_line,
                    p.buf.len(),
                    show(&p.buf)
                )));
            }
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "{}, then {} of {} echoed bytes back through the tunnel ({}): {e}",
                    r.status_line,
                    p.buf.len(),
                    marker.len(),
                    show(&p.buf)
                )));
            }
        }
    }
    if !p.buf.starts_with(marker.as_bytes()) {
        return Ok(Outcome::fail(format!(
            "{}, then sent {} but got back {}: the tunnel is corrupted",
            r.status_line,
            show(marker.as_bytes()),
            show(&p.buf)
        )));
    }
    if !ctx.origin.tunnel_bytes(marker.as_bytes()) {
        return Ok(Outcome::fail(
            "the echo came back but the origin never saw the bytes",
        ));
    }
    let up = r
        .header("upgrade")
        .map(|v| format!(" (Upgrade: {v})"))
        .unwrap_or_default();
    Ok(Outcome::pass(format!(
        "{}{up}; origin saw Upgrade: websocket; {} raw bytes relayed to the origin and echoed back",
        r.status_line,
        marker.len()
    )))
}
