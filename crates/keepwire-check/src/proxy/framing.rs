//! Messages across a proxy (R5.4, R7.2, R8.2, R8.3, R10.1): a truncated
//! body is passed on as truncated, a POST is never sent twice, a
//! close-delimited response is re-framed, pipelined responses stay in order
//! and an ambiguously framed request never reaches the origin.

use std::time::{Duration, Instant};

use super::ctx::Ctx;
use crate::probe::{ProbeError, failed};
use crate::recording_origin::H10_BODY;
use crate::report::Outcome;
use crate::response::{Parsed, find, parse_response, show};
use crate::table::CheckOut;

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

pub(super) async fn truncation(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let path = ctx.path("trunc");
    let mut p = ctx.connect(deadline).await?;
    p.send(&ctx.get(&path, ""))
        .await
        .map_err(failed("request"))?;
    let origin = "origin sent Content-Length: 100 and 40 bytes, then closed";
    match p.read_response(false).await {
        Ok(r) if r.status >= 500 => Ok(Outcome::warn(format!(
            "{origin}; proxy answered {} instead of passing the truncated response on",
            r.brief()
        ))),
        Ok(r) if r.close_delimited => Ok(Outcome::warn(format!(
            "{origin}; proxy relayed it close-delimited ({}), so the client cannot see the truncation",
            r.brief()
        ))),
        Ok(r) => Ok(Outcome::fail(format!(
            "{origin}; client got a complete response: {} with {} body bytes (length fixed or padded)",
            r.brief(),
            r.body_len
        ))),
        Err(e @ (ProbeError::Eof { .. } | ProbeError::Reset { .. })) => {
            let head_end = find(&p.buf, b"\r\n\r\n").map(|i| i + 4);
            let status = match head_end {
                Some(_) => match parse_response(&p.buf, true, false) {
                    Parsed::Done(r, _) => r.brief(),
                    _ => "an unparsable head".into(),
                },
                None => "no complete head".into(),
            };
            let body = head_end.map(|h| p.buf.len() - h).unwrap_or(0);
            Ok(Outcome::pass(format!(
                "{origin}; client got {status}, {body} bytes after the head, then {e}"
            )))
        }
        Err(e @ ProbeError::Timeout { .. }) => {
            let body = find(&p.buf, b"\r\n\r\n").map(|i| p.buf.len() - i - 4);
            Ok(Outcome::fail(format!(
                "{origin}; client got {} bytes ({} after the head) and the connection \
                 stayed open ({e}): the client cannot see the truncation",
                p.buf.len(),
                body.unwrap_or(0)
            )))
        }
        Err(e) => Err(failed("response")(e)),
    }
}

pub(super) async fn post_once(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let path = ctx.path("drop");
    let mut p = ctx.connect(deadline).await?;
    let mut req = ctx.request("POST", &path, "1.1", "Content-Length: 5\r\n");
    req.extend_from_slice(b"hello");
    p.send(&req).await.map_err(failed("request"))?;
    let r = p.read_response(false).await;
    // Give a late retry a moment to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = ctx.origin.seen(&path);
    let conns: Vec<u64> = seen.iter().map(|s| s.conn).collect();
    if seen.len() > 1 {
        return Ok(Outcome::fail(format!(
            "origin received the POST {} times (origin connections {conns:?}): a non-idempotent request was retried",
            seen.len()
        )));
    }
    if seen.is_empty() {
        return Ok(Outcome::fail(match r {
            Ok(r) => format!(
                "the POST never reached the origin (proxy answered {})",
                r.brief()
            ),
            Err(e) => format!("the POST never reached the origin ({e})"),
        }));
    }
    let s = &seen[0];
    if s.body != b"hello" {
        return Ok(Outcome::fail(format!(
            "origin received the POST with body {}",
            show(&s.body)
        )));
    }
    match r {
        Ok(r) if r.status == 502 => Ok(Outcome::pass(format!(
            "origin dropped the POST without answering; client got {}; origin saw it once",
            r.brief()
        ))),
        Ok(r) if r.status >= 500 => Ok(Outcome::warn(format!(
            "client got {} (502 expected); origin saw the POST once",
            r.brief()
        ))),
        Ok(r) => Ok(Outcome::fail(format!(
            "origin dropped the POST without answering, but the client got {}",
            r.brief()
        ))),
        Err(e) => Ok(Outcome::warn(format!(
            "origin saw the POST once, but the client got no 5xx: {e}"
        ))),
    }
}

pub(super) async fn reframe(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let path = ctx.path("h10");
    let mut p = ctx.connect(deadline).await?;
    p.send(&ctx.get(&path, ""))
        .await
        .map_err(failed("request"))?;
    let r = match p.read_response(false).await {
        Ok(r) => r,
        Err(e @ ProbeError::Timeout { .. }) => {
            let head = find(&p.buf, b"\r\n\r\n").map(|i| &p.buf[..i]);
            let framed = head.is_some_and(|h| {
                let h = String::from_utf8_lossy(h).to_ascii_lowercase();
                h.contains("\ncontent-length:") || h.contains("\ntransfer-encoding:")
            });
            let what = match head {
                None => "no complete head".to_string(),
                Some(_) if framed => "a framed response that never completed".to_string(),
                Some(h) => format!(
                    "{} with neither Content-Length nor chunked",
                    show(&h[..h.len().min(60)])
                ),
            };
            return Ok(Outcome::fail(format!(
                "origin sent a {}-byte close-delimited body; client got {} bytes ({what}) \
                 and the connection stayed open ({e}): the client cannot find the end of the body",
                H10_BODY.len(),
                p.buf.len()
            )));
        }
        Err(e) => return Err(failed("response")(e)),
    };
    if r.body != H10_BODY.as_bytes() {
        return Ok(Outcome::fail(format!(
            "origin sent a {}-byte close-delimited body; client got {} with {}",
            H10_BODY.len(),
            r.brief(),
            show(&r.body)
        )));
    }
    if r.close_delimited {
        return Ok(Outcome::warn(format!(
            "relayed close-delimited ({}); the client connection cannot persist",
            r.brief()
        )));
    }
    let framing = if r.header("transfer-encoding").is_some() {
        "chunked"
    } else {
        "Content-Length"
    };
    if r.has_token("connection", "close") {
        return Ok(Outcome::warn(format!(
            "re-framed ({framing}) but the proxy closes the client connection: {}",
            r.brief()
        )));
    }
    let next = ctx.path("echo");
    p.send(&ctx.get(&next, ""))
        .await
        .map_err(failed("follow-up request"))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "re-framed with {framing}, complete {}-byte body; connection reused ({})",
            r.body_len, r2.status_line
        ))),
        Err(e) => Ok(Outcome::warn(format!(
            "re-framed with {framing}, but the client connection was not usable: {e}"
        ))),
    }
}

pub(super) async fn pipeline(ctx: &Ctx, deadline: Instant) -> CheckOut {
    let paths: Vec<String> = (0..3).map(|_| ctx.path("echo")).collect();
    let mut burst = Vec::new();
    for path in &paths {
        burst.extend(ctx.get(path, ""));
    }
    let mut p = ctx.connect(deadline).await?;
    p.send(&burst).await.map_err(failed("pipelined burst"))?;
    for (i, path) in paths.iter().enumerate() {
        let r = match p.read_response(false).await {
            Ok(r) => r,
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "{i} of 3 pipelined requests answered, then {e}"
                )));
            }
        };
        if r.status != 200 || !r.body.ends_with(path.as_bytes()) {
            return Ok(Outcome::fail(format!(
                "response {} is {} with body {} (expected the echo of {path})",
                i + 1,
                r.status_line,
                show(&r.body)
            )));
        }
        if i < 2 && (r.has_token("connection", "close") || r.close_delimited) {
            return Ok(Outcome::warn(format!(
                "proxy closed mid-pipeline after {} of 3: {}",
                i + 1,
                r.brief()
            )));
        }
    }
    Ok(Outcome::pass(format!(
        "3 pipelined responses in order ({})",
        paths.join(", ")
    )))
}

pub(super) async fn smuggle(ctx: &Ctx, vector: Vector, deadline: Instant) -> CheckOut {
    let post = ctx.path("smug");
    let hidden = ctx.path("smuggled");
    let hidden_req = ctx.get(&hidden, "");
    let (fields, body): (String, &[u8]) = match vector {
        Vector::TeCl => (
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n".into(),
            b"0\r\n\r\n",
        ),
        Vector::DupCl => (
            format!(
                "Content-Length: {}\r\nContent-Length: 0\r\n",
                hidden_req.len()
            ),
            b"",
        ),
        Vector::NonFinalChunked => ("Transfer-Encoding: chunked, gzip\r\n".into(), b"0\r\n\r\n"),
        Vector::BadChunk => (
            "Transfer-Encoding: chunked\r\n".into(),
            b"5zz\r\nhello\r\n0\r\n\r\n",
        ),
    };
    let mut bytes = ctx.request("POST", &post, "1.1", &fields);
    bytes.extend_from_slice(body);
    bytes.extend(hidden_req);
    let mut p = ctx.connect(deadline).await?;
    p.send(&bytes).await.map_err(failed("request"))?;
    let r = p.read_response(false).await;
    // Whatever happened, let the origin see what it will see.
    let _ = p.ending().await;
    let smuggled = ctx.origin.seen(&hidden);
    let posted = ctx.origin.seen(&post);
    if let Some(s) = smuggled.first() {
        return Ok(Outcome::fail(format!(
            "the smuggled request reached the origin: {}",
            show(&s.head)
        )));
    }
    let note = if posted.is_empty() {
        "nothing reached the origin".to_string()
    } else {
        format!(
            "the POST reached the origin as {}",
            show(&posted[0].head[..posted[0].head.len().min(200)])
        )
    };
    match r {
        Ok(r) if (400..500).contains(&r.status) => {
            Ok(Outcome::pass(format!("{}; {note}", r.brief())))
        }
        Ok(r) => Ok(Outcome::warn(format!(
            "accepted with {} (400 expected); smuggled request not forwarded; {note}",
            r.brief()
        ))),
        Err(e) => Ok(Outcome::warn(format!(
            "no status ({e}); smuggled request not forwarded; {note}"
        ))),
    }
}
