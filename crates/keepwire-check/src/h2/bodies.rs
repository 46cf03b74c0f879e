//! Response and request bodies under flow control (R10.4): the baseline
//! GET, a body larger than the server allows (declared or streamed), and a
//! response the client never opens the window for.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::{Raw, connect, open_raw, spawn, uri, write_by};
use super::frames::*;
use crate::options::Options;
use crate::probe::Endpoint;
use crate::report::Outcome;
use crate::table::CheckOut;

/// A plain GET through the `h2` crate: the server speaks HTTP/2 at all, and
/// the path has a body (the zero-window check needs one).
pub(super) async fn baseline(t: &Endpoint, opts: &Options, deadline: Instant) -> CheckOut {
    let io = connect(t, opts, false, deadline).await?;
    let within = |what: &'static str| {
        move |e: tokio::time::error::Elapsed| Outcome::fail(format!("{what}: {e}"))
    };
    let (mut client, conn) = tokio::time::timeout_at(deadline.into(), h2::client::handshake(io))
        .await
        .map_err(within("handshake"))?
        .map_err(|e| Outcome::fail(format!("HTTP/2 handshake: {e}")))?;
    let _driver = spawn(conn);
    let req = http::Request::get(uri(t))
        .body(())
        .map_err(|e| Outcome::fail(e.to_string()))?;
    let (resp, _) = client
        .send_request(req, true)
        .map_err(|e| Outcome::fail(format!("request: {e}")))?;
    let resp = tokio::time::timeout_at(deadline.into(), resp)
        .await
        .map_err(within("response"))?
        .map_err(|e| Outcome::fail(format!("response: {e}")))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut len = 0usize;
    while let Some(chunk) = tokio::time::timeout_at(deadline.into(), body.data())
        .await
        .map_err(within("body"))?
    {
        let chunk = chunk.map_err(|e| Outcome::fail(format!("body: {e}")))?;
        len += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
        if len > 1 << 20 {
            break;
        }
    }
    let what = if t.tls { "h2 (ALPN)" } else { "h2c" };
    if status.is_success() && len > 0 {
        Ok(Outcome::pass(format!(
            "{what}: {} with {len} body bytes",
            status
        )))
    } else {
        Ok(Outcome::warn(format!(
            "{what}: {status} with {len} body bytes (the checks want a 200 with a body at this path)"
        )))
    }
}

/// What happened to an upload.
enum Upload {
    Response(http::StatusCode),
    Reset(h2::Reason),
    Error(String),
    Stalled,
}

/// A POST of `Options::max_body` + 1 bytes, with `content-length` (`declared`) or
/// without. PASS: 413, or the stream refused/reset, before the server
/// granted window for every byte; FAIL: all bytes taken (window granted
/// for each), whatever the answer after that, 413 included.
pub(super) async fn oversized_body(
    t: &Endpoint,
    opts: &Options,
    declared: bool,
    deadline: Instant,
) -> CheckOut {
    let total = opts.max_body.saturating_add(1);
    let io = connect(t, opts, false, deadline).await?;
    let (mut client, conn) = tokio::time::timeout_at(deadline.into(), h2::client::handshake(io))
        .await
        .map_err(|_| Outcome::fail("handshake timed out"))?
        .map_err(|e| Outcome::fail(format!("HTTP/2 handshake: {e}")))?;
    let _driver = spawn(conn);
    let mut req = http::Request::post(uri(t)).header("content-type", "application/octet-stream");
    if declared {
        req = req.header("content-length", total.to_string());
    }
    let req = req.body(()).map_err(|e| Outcome::fail(e.to_string()))?;
    let (resp, mut send) = client
        .send_request(req, false)
        .map_err(|e| Outcome::fail(format!("request: {e}")))?;
    let mut resp = std::pin::pin!(resp);
    let zeros = Bytes::from(vec![0u8; 64 * 1024]);
    let mut sent = 0u64;
    let mut early: Option<http::StatusCode> = None;
    let outcome = loop {
        if sent >= total {
            break None;
        }
        send.reserve_capacity((total - sent).min(zeros.len() as u64) as usize);
        enum Ev {
            Resp(Result<http::Response<h2::RecvStream>, h2::Error>),
            Reset(Result<h2::Reason, h2::Error>),
            Cap(Option<Result<usize, h2::Error>>),
        }
        let ev = tokio::time::timeout_at(
            deadline.into(),
            poll_fn(|cx| {
                if early.is_none()
                    && let Poll::Ready(r) = Pin::new(&mut resp).poll(cx)
                {
                    return Poll::Ready(Ev::Resp(r));
                }
                if let Poll::Ready(r) = send.poll_reset(cx) {
                    return Poll::Ready(Ev::Reset(r));
                }
                send.poll_capacity(cx).map(Ev::Cap)
            }),
        )
        .await;
        match ev {
            Err(_) => break Some(Upload::Stalled),
            Ok(Ev::Resp(Ok(r))) if r.status() == http::StatusCode::PAYLOAD_TOO_LARGE => {
                break Some(Upload::Response(r.status()));
            }
            Ok(Ev::Resp(Ok(r))) => early = Some(r.status()),
            Ok(Ev::Resp(Err(e))) => break Some(h2_end(e)),
            Ok(Ev::Reset(Ok(reason))) => break Some(Upload::Reset(reason)),
            Ok(Ev::Reset(Err(e))) | Ok(Ev::Cap(Some(Err(e)))) => break Some(h2_end(e)),
            Ok(Ev::Cap(None)) => break Some(Upload::Error("stream closed".into())),
            Ok(Ev::Cap(Some(Ok(n)))) => {
                let n = n.min((total - sent) as usize).min(zeros.len());
                if n == 0 {
                    continue;
                }
                let last = sent + n as u64 >= total;
                if let Err(e) = send.send_data(zeros.slice(..n), last) {
                    break Some(h2_end(e));
                }
                sent += n as u64;
            }
        }
    };
    let how = if declared {
        format!("content-length: {total}")
    } else {
        "no content-length".to_string()
    };
    let early_note = early.map_or(String::new(), |s| format!(" (answered {s} first)"));
    match outcome {
        Some(Upload::Response(status)) => Ok(Outcome::pass(format!(
            "{status} after {sent} of {total} body bytes ({how})"
        ))),
        Some(Upload::Reset(reason)) => Ok(Outcome::pass(format!(
            "RST_STREAM {reason:?} after {sent} of {total} body bytes{early_note}: \
             the rest was not taken ({how})"
        ))),
        Some(Upload::Error(e)) => Ok(Outcome::pass(format!(
            "{e} after {sent} of {total} body bytes{early_note} ({how})"
        ))),
        Some(Upload::Stalled) => Ok(Outcome::warn(format!(
            "no window and no answer after {sent} of {total} body bytes{early_note} ({how})"
        ))),
        None => {
            // Every byte was granted window: now the answer.
            let answer = match early {
                Some(s) => Ok(s),
                None => tokio::time::timeout_at(deadline.into(), resp)
                    .await
                    .map_err(|_| "no response before the time limit".to_string())
                    .and_then(|r| r.map(|r| r.status()).map_err(|e| e.to_string())),
            };
            match answer {
                // Refused, but only once every byte was in: the bytes
                // were held somewhere (a proxy that buffers bodies).
                Ok(s) if s == http::StatusCode::PAYLOAD_TOO_LARGE => Ok(Outcome::fail(format!(
                    "{s} only after taking all {total} body bytes ({how})"
                ))),
                Ok(s) => Ok(Outcome::fail(format!(
                    "took all {total} body bytes and answered {s} ({how})"
                ))),
                Err(e) => Ok(Outcome::fail(format!(
                    "took all {total} body bytes; then {e} ({how})"
                ))),
            }
        }
    }
}

fn h2_end(e: h2::Error) -> Upload {
    match e.reason() {
        Some(r) if e.is_go_away() => Upload::Error(format!("GOAWAY {r:?}")),
        Some(r) => Upload::Reset(r),
        None => Upload::Error(e.to_string()),
    }
}

/// SETTINGS_INITIAL_WINDOW_SIZE = 0 and no WINDOW_UPDATE ever: the response
/// body can never be sent. Raw frames, so the evidence is the frame that
/// ended it (RST_STREAM and its code, GOAWAY, or the close); the server's
/// PINGs are answered, as a live client would. PASS: the stream reset or
/// the connection closed within `Options::stall_timeout` of the response head;
/// FAIL: still open after it.
pub(super) async fn zero_window(t: &Endpoint, opts: &Options, deadline: Instant) -> CheckOut {
    let raw = open_raw(
        t,
        opts,
        &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)],
        false,
        deadline,
    )
    .await?;
    let Raw {
        mut reader, mut wr, ..
    } = raw;
    let get = frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block(t, "GET"),
    );
    write_by(&mut wr, &get, deadline)
        .await
        .map_err(|e| Outcome::fail(format!("request: {e}")))?;
    let head_by = (Instant::now() + Duration::from_secs(10)).min(deadline);
    // Set once the response head is in: from then on the stall is timed.
    let mut started: Option<Instant> = None;
    let mut stall_by = head_by;
    loop {
        let secs = || started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let f = match reader.next(stall_by).await {
            Ok(f) => f,
            Err(End::Timeout) if started.is_none() => {
                return Ok(Outcome::fail("no response head before the time limit"));
            }
            Err(End::Timeout) => {
                return Ok(Outcome::fail(format!(
                    "response stream still open after {:.1} s with no window (the server never gave up on it)",
                    secs()
                )));
            }
            Err(e @ (End::Fin | End::Reset)) if started.is_some() => {
                return Ok(Outcome::pass(format!("{e} after {:.1} s", secs())));
            }
            Err(e) => return Ok(Outcome::fail(format!("before the response head: {e}"))),
        };
        match f.ty {
            HEADERS if f.stream == 1 && started.is_none() => {
                if f.flags & END_STREAM != 0 {
                    return Ok(Outcome::skip(
                        "the response has no body: nothing to hold back (use a path with a body)",
                    ));
                }
                let now = Instant::now();
                started = Some(now);
                stall_by = (now + opts.stall_timeout).min(deadline);
            }
            DATA if f.stream == 1 && !f.payload.is_empty() => {
                return Ok(Outcome::fail(format!(
                    "{} DATA bytes sent into a zero window (flow-control violation)",
                    f.payload.len()
                )));
            }
            // A zero-length DATA needs no window: the server gave up on the
            // body and ended the stream (HAProxy does at `timeout client`),
            // which cuts the response short but holds nothing.
            DATA if f.stream == 1 && f.flags & END_STREAM != 0 => {
                return Ok(Outcome::pass(format!(
                    "stream ended (empty DATA with END_STREAM, the body cut short) after {:.1} s",
                    secs()
                )));
            }
            RST_STREAM | GOAWAY if started.is_none() => {
                let mut seen = Seen::default();
                seen.note(&f);
                let what = if f.ty == GOAWAY {
                    seen.reaction()
                } else {
                    seen.reset_summary()
                };
                return Ok(Outcome::fail(format!("before the response head: {what}")));
            }
            RST_STREAM if f.stream == 1 && f.payload.len() >= 4 => {
                let code =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
                return Ok(Outcome::pass(format!(
                    "RST_STREAM {} after {:.1} s",
                    code_name(code),
                    secs()
                )));
            }
            GOAWAY => {
                let mut seen = Seen::default();
                seen.note(&f);
                return Ok(Outcome::pass(format!(
                    "{} after {:.1} s",
                    seen.reaction(),
                    secs()
                )));
            }
            PING if f.flags & ACK == 0 => {
                let pong = frame(PING, ACK, 0, &f.payload);
                if let Err(e) = write_by(&mut wr, &pong, stall_by).await {
                    return Ok(Outcome::pass(format!(
                        "write failed ({e}) after {:.1} s",
                        secs()
                    )));
                }
            }
            _ => {}
        }
    }
}
