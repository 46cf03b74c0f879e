//! Several requests on one connection before the answers (R7.2), and what
//! happens to the bytes after a request that closes it (R5.3, R8.4): a
//! server must answer in order, stop after `Connection: close`, and close
//! so that its last response is not lost to a reset.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::probe::{Ending, Endpoint, Probe, failed};
use crate::report::Outcome;
use crate::response::{find, show};
use crate::table::CheckOut;

/// Finds `kw-pipe=N` in a body (servers that echo the request).
fn pipe_marker(body: &[u8]) -> Option<u32> {
    let i = find(body, b"kw-pipe=")?;
    let digits: String = body[i + 8..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| b as char)
        .collect();
    digits.parse().ok()
}

pub(super) async fn pipeline(t: &Endpoint, deadline: Instant) -> CheckOut {
    const N: u32 = 5;
    let mut burst = Vec::new();
    for i in 1..=N {
        burst.extend(t.request("GET", &t.path_with(&format!("kw-pipe={i}")), "1.1", ""));
    }
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&burst).await.map_err(failed("pipelined burst"))?;
    let mut lines = Vec::new();
    let mut markers = Vec::new();
    for i in 1..=N {
        match p.read_response(false).await {
            Ok(r) => {
                lines.push(r.status.to_string());
                if let Some(m) = pipe_marker(&r.body) {
                    markers.push(m);
                }
                if i < N && (r.has_token("connection", "close") || r.close_delimited) {
                    return Ok(Outcome::warn(format!(
                        "server closed mid-pipeline after {i} of {N}: {}",
                        r.brief()
                    )));
                }
            }
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "{} of {N} pipelined requests answered ({}), then {e}",
                    i - 1,
                    lines.join(" ")
                )));
            }
        }
    }
    if !markers.is_empty() && markers != (1..=N).collect::<Vec<_>>() {
        return Ok(Outcome::fail(format!(
            "responses out of order: bodies echo requests {markers:?}"
        )));
    }
    p.send(&t.get(""))
        .await
        .map_err(|e| Outcome::fail(format!("{N} responses, then the connection: {e}")))?;
    let after = p.read_response(false).await.map_err(|e| {
        Outcome::fail(format!(
            "{N} responses ({}), then a further request got: {e}",
            lines.join(" ")
        ))
    })?;
    let order = if markers.is_empty() {
        "order not echoed"
    } else {
        "in order"
    };
    Ok(Outcome::pass(format!(
        "{N} responses ({}; {order}); connection persists ({})",
        lines.join(" "),
        after.status
    )))
}

pub(super) async fn close_then_more(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut bytes = t.get("Connection: close\r\n");
    let mut i = 0;
    while bytes.len() < 64 * 1024 + 1024 {
        i += 1;
        bytes.extend(t.request(
            "GET",
            &t.path_with(&format!("kw-after-close={i}")),
            "1.1",
            "",
        ));
    }
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    // A server that closes early may make part of this write fail; what
    // matters is what can still be read.
    let write_note = match p.send(&bytes).await {
        Ok(()) => String::new(),
        Err(e) => format!(" ({e})"),
    };
    // Give an RST time to arrive before reading, as a slow client would.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = p.read_response(false).await.map_err(|e| {
        Outcome::fail(format!(
            "sent {} bytes ({i} requests after close){write_note}; response lost: {e}",
            bytes.len()
        ))
    })?;
    match p.ending().await {
        Ending::Fin => Ok(Outcome::pass(format!(
            "{} with {} body bytes, then FIN; {i} later requests ignored",
            r.brief(),
            r.body_len
        ))),
        Ending::Reset => Ok(Outcome::fail(format!(
            "{} read, but the connection ended in RST (not a lingering close)",
            r.brief()
        ))),
        other => Ok(Outcome::fail(format!("{} then {other}", r.brief()))),
    }
}

pub(super) async fn half_close(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("request"))?;
    p.stream
        .shutdown()
        .await
        .map_err(|e| Outcome::fail(format!("shutdown(Write): {e}")))?;
    let r = p
        .read_response(false)
        .await
        .map_err(failed("response after the client's FIN"))?;
    Ok(Outcome::pass(format!(
        "{} ({} body bytes) after the client's FIN",
        r.brief(),
        r.body_len
    )))
}

pub(super) async fn close_mid_pipeline(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut burst = t.request("GET", &t.path_with("kw-pipe=1"), "1.1", "");
    burst.extend(t.request(
        "GET",
        &t.path_with("kw-pipe=2"),
        "1.1",
        "Connection: close\r\n",
    ));
    burst.extend(t.request("GET", &t.path_with("kw-pipe=3"), "1.1", ""));
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&burst).await.map_err(failed("pipelined burst"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("response 1 of 2"))?;
    let r2 = p.read_response(false).await.map_err(|e| {
        Outcome::fail(format!(
            "{} for request 1, then the closing request 2 got: {e}",
            r1.status
        ))
    })?;
    match p.ending().await {
        Ending::Fin | Ending::Reset => Ok(Outcome::pass(format!(
            "{} / {}; then closed, request 3 not answered",
            r1.status,
            r2.brief()
        ))),
        Ending::Data(d) => Ok(Outcome::fail(format!(
            "answered a request sent after Connection: close: {}",
            show(&d)
        ))),
        other => Ok(Outcome::fail(format!(
            "{} / {}; then {other}",
            r1.status,
            r2.brief()
        ))),
    }
}
