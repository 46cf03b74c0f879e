//! Does the server keep a connection when it should, and close it when it
//! must (R5)? HTTP/1.1 persistence, HTTP/1.0 keep-alive, `Connection:
//! close`, the advertised `Keep-Alive` parameters and the idle timeout seen
//! from outside.

use std::time::{Duration, Instant};

use crate::probe::{Ending, Endpoint, Probe, failed};
use crate::report::Outcome;
use crate::response::Response;
use crate::table::CheckOut;

pub(super) async fn persist11(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("first request"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("first response"))?;
    if r1.has_token("connection", "close") {
        return Ok(Outcome::fail(format!(
            "first HTTP/1.1 response closes: {}",
            r1.brief()
        )));
    }
    if r1.close_delimited {
        return Ok(Outcome::fail(format!(
            "first response is not self-delimited: {}",
            r1.brief()
        )));
    }
    p.send(&t.get(""))
        .await
        .map_err(|e| Outcome::fail(format!("second request after {}: {e}", r1.status_line)))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "2 responses on one connection: {} / {}",
            r1.status_line,
            r2.brief()
        ))),
        Err(e) => Ok(Outcome::fail(format!(
            "after {} (no Connection: close) the second request got: {e}",
            r1.status_line
        ))),
    }
}

pub(super) async fn keep_alive10(t: &Endpoint, deadline: Instant) -> CheckOut {
    let req = t.request("GET", &t.path, "1.0", "Connection: keep-alive\r\n");
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&req).await.map_err(failed("request"))?;
    let r1 = p.read_response(false).await.map_err(failed("response"))?;
    if !r1.has_token("connection", "keep-alive") {
        let end = p.ending().await;
        return Ok(Outcome::warn(format!(
            "keep-alive not granted: {}; then {end}",
            r1.brief()
        )));
    }
    if r1.close_delimited {
        return Ok(Outcome::fail(format!(
            "says keep-alive but the body is close-delimited: {}",
            r1.brief()
        )));
    }
    p.send(&req)
        .await
        .map_err(|e| Outcome::fail(format!("said keep-alive ({}) but: {e}", r1.status_line)))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "{}; second request answered: {}",
            r1.brief(),
            r2.status_line
        ))),
        Err(e) => Ok(Outcome::fail(format!(
            "said keep-alive ({}) but the second request got: {e}",
            r1.status_line
        ))),
    }
}

pub(super) async fn close_honoured(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("Connection: close\r\n"))
        .await
        .map_err(failed("request"))?;
    let r = p.read_response(false).await.map_err(failed("response"))?;
    let sent = Instant::now();
    match p.ending().await {
        Ending::Fin | Ending::Reset => Ok(Outcome::pass(format!(
            "{}; then closed after {} ms",
            r.brief(),
            sent.elapsed().as_millis()
        ))),
        other => Ok(Outcome::fail(format!(
            "{}; then {other} (expected the server to close)",
            r.brief()
        ))),
    }
}

pub(super) async fn keep_alive_advertised(t: &Endpoint, deadline: Instant) -> CheckOut {
    let tries = [
        ("HTTP/1.1", t.get("")),
        (
            "HTTP/1.0 keep-alive",
            t.request("GET", &t.path, "1.0", "Connection: keep-alive\r\n"),
        ),
    ];
    for (what, req) in tries {
        let mut p = Probe::connect(t, deadline)
            .await
            .map_err(failed("connect"))?;
        p.send(&req).await.map_err(failed("request"))?;
        let r = p.read_response(false).await.map_err(failed("response"))?;
        if let Some(ka) = r.header("keep-alive") {
            let timeout = ka.split(',').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("timeout")
                    .then(|| v.trim().parse::<u64>())
            });
            return Ok(match timeout {
                Some(Ok(_)) | None => Outcome::pass(format!("{what}: Keep-Alive: {ka}")),
                Some(Err(_)) => Outcome::warn(format!("{what}: unparsable Keep-Alive: {ka}")),
            });
        }
    }
    Ok(Outcome::skip(
        "no Keep-Alive header on HTTP/1.1 or HTTP/1.0 keep-alive responses (optional)",
    ))
}

pub(super) async fn close10(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.request("GET", &t.path, "1.0", ""))
        .await
        .map_err(failed("request"))?;
    let r = p.read_response(false).await.map_err(failed("response"))?;
    if r.has_token("connection", "keep-alive") {
        return Ok(Outcome::fail(format!(
            "keep-alive offered to an HTTP/1.0 client that did not ask: {}",
            r.brief()
        )));
    }
    match p.ending().await {
        Ending::Fin | Ending::Reset => Ok(Outcome::pass(format!("{}; then closed", r.brief()))),
        other => Ok(Outcome::fail(format!(
            "{}; then {other} (an HTTP/1.0 connection without keep-alive must close)",
            r.brief()
        ))),
    }
}

/// `Keep-Alive: max=N` (if any).
fn ka_param(r: &Response, name: &str) -> Option<u64> {
    r.header("keep-alive")?.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

pub(super) async fn max_requests(t: &Endpoint, deadline: Instant) -> CheckOut {
    const CAP: u64 = 1000;
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("request"))?;
    let r1 = p.read_response(false).await.map_err(failed("response"))?;
    let Some(max) = ka_param(&r1, "max") else {
        return Ok(Outcome::skip("no Keep-Alive: max= advertised"));
    };
    if max > CAP {
        return Ok(Outcome::skip(format!(
            "Keep-Alive: max={max} is more than {CAP} requests to try"
        )));
    }
    // `max` counts the transactions left after this one.
    let mut n = 1u64;
    let mut last = r1;
    while !last.has_token("connection", "close") {
        if n > max + 1 {
            return Ok(Outcome::warn(format!(
                "advertised max={max} but answered {n} requests without Connection: close"
            )));
        }
        if let Err(e) = p.send(&t.get("")).await {
            return Ok(Outcome::fail(format!(
                "closed after {n} responses without Connection: close (advertised max={max}): {e}"
            )));
        }
        match p.read_response(false).await {
            Ok(r) => last = r,
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "after {n} responses (advertised max={max}), no Connection: close, then {e}"
                )));
            }
        }
        n += 1;
    }
    let end = p.ending().await;
    let verdict = if matches!(end, Ending::Fin | Ending::Reset) {
        Outcome::pass
    } else {
        Outcome::fail
    };
    Ok(verdict(format!(
        "advertised max={max}; response {n} says Connection: close; then {end}"
    )))
}

pub(super) async fn idle_observed(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("request"))?;
    let r = p.read_response(false).await.map_err(failed("response"))?;
    if r.has_token("connection", "close") {
        return Ok(Outcome::skip(format!("response closes: {}", r.brief())));
    }
    let advertised = ka_param(&r, "timeout");
    let idle_from = Instant::now();
    if let Some(secs) = advertised {
        p.deadline = p
            .deadline
            .min(idle_from + Duration::from_secs(secs) + Duration::from_secs(2));
    }
    let end = p.ending().await;
    let idle = idle_from.elapsed().as_secs_f64();
    let adv = advertised.map_or("none".to_string(), |s| format!("{s} s"));
    Ok(match end {
        Ending::Fin => Outcome::pass(format!(
            "closed (FIN) after {idle:.1} s idle; advertised timeout {adv}"
        )),
        Ending::Reset => Outcome::warn(format!(
            "idle close by RST after {idle:.1} s; advertised timeout {adv}"
        )),
        Ending::Open => Outcome::warn(format!(
            "still open after {idle:.1} s idle; advertised timeout {adv}"
        )),
        other => Outcome::fail(format!("idle connection: {other}")),
    })
}
