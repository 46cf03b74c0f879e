//! Where does a message end (R10.1, R5.4)? Requests whose framing is
//! ambiguous must be refused, not guessed at (request smuggling), and
//! responses that have no body (HEAD, 304) or come after `100 Continue` must
//! leave the connection where the next message starts.

use std::time::{Duration, Instant};

use crate::probe::{Ending, Endpoint, Probe, ProbeError, failed};
use crate::report::Outcome;
use crate::response::show;
use crate::table::CheckOut;

/// A request-smuggling vector (R10.1): a request whose framing is
/// ambiguous, followed by a `GET /smuggled` that must not be answered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Vector {
    TeCl,
    TwoCl,
    BadCl,
    TeNotFinal,
    Te10,
    BadChunk,
    SpaceColon,
    /// `Content-Length: ,` (an empty list is not a length).
    CommaCl,
    /// An empty chunk-size line (a lenient parser reads it as the last chunk).
    EmptyChunk,
    /// A chunk-size line of whitespace only.
    SpaceChunk,
    /// A chunk-size line ended by a bare LF.
    LfChunk,
    /// A control byte inside a chunk extension.
    CtlExt,
    /// A trailer section ended by bare LFs instead of CRLF CRLF.
    LfTrailer,
}

fn smuggle_bytes(t: &Endpoint, v: Vector) -> Vec<u8> {
    let (version, fields, body): (&str, &str, &str) = match v {
        Vector::TeCl => (
            "1.1",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
        ),
        Vector::TwoCl => (
            "1.1",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "hello!",
        ),
        Vector::BadCl => ("1.1", "Content-Length: +6\r\n", "hello!"),
        Vector::TeNotFinal => ("1.1", "Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
        Vector::Te10 => ("1.0", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        Vector::BadChunk => (
            "1.1",
            "Transfer-Encoding: chunked\r\n",
            "zz\r\nhello\r\n0\r\n\r\n",
        ),
        Vector::SpaceColon => ("1.1", "Content-Length : 6\r\n", "hello!"),
        Vector::CommaCl => ("1.1", "Content-Length: ,\r\n", ""),
        Vector::EmptyChunk => ("1.1", "Transfer-Encoding: chunked\r\n", "\r\n\r\n"),
        Vector::SpaceChunk => ("1.1", "Transfer-Encoding: chunked\r\n", " \r\n\r\n"),
        Vector::LfChunk => (
            "1.1",
            "Transfer-Encoding: chunked\r\n",
            "5\nhello\r\n0\r\n\r\n",
        ),
        Vector::CtlExt => (
            "1.1",
            "Transfer-Encoding: chunked\r\n",
            "5;kw=\x01\r\nhello\r\n0\r\n\r\n",
        ),
        Vector::LfTrailer => (
            "1.1",
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\nX-Kw-Trailer: 1\n\n",
        ),
    };
    let mut b = t.request("POST", &t.path, version, fields);
    b.extend_from_slice(body.as_bytes());
    b.extend(t.request("GET", "/smuggled", "1.1", ""));
    b
}

pub(super) async fn smuggle(t: &Endpoint, v: Vector, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&smuggle_bytes(t, v))
        .await
        .map_err(failed("request"))?;
    let rejected = |s: u16| (400..500).contains(&s) || s == 501;
    let r1 = match p.read_response(false).await {
        Ok(r) => r,
        Err(ProbeError::Eof { got: 0 }) | Err(ProbeError::Reset { got: 0 }) => {
            return Ok(Outcome::warn(
                "connection closed without a 400 (safe, but no status)",
            ));
        }
        Err(e) => return Err(failed("response")(e)),
    };
    if rejected(r1.status) {
        return match p.ending().await {
            Ending::Fin | Ending::Reset => {
                Ok(Outcome::pass(format!("{}, then closed", r1.brief())))
            }
            Ending::Data(d) => Ok(Outcome::fail(format!(
                "{}, but then {} more bytes: {}",
                r1.status_line,
                d.len(),
                show(&d)
            ))),
            other => Ok(Outcome::fail(format!(
                "{}, but then {other} (must close)",
                r1.status_line
            ))),
        };
    }
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::fail(format!(
            "accepted ({}), then a second response ({}): the bytes after the \
             body (GET /smuggled) were taken as another request",
            r1.status_line, r2.status_line
        ))),
        // RFC 9112 §6.3 (3): a server MAY process TE + CL by the
        // Transfer-Encoding alone if it closes the connection afterwards;
        // R10.1 asks for a 400, so that is a warning, not a failure.
        Err(e @ (ProbeError::Eof { .. } | ProbeError::Reset { .. }))
            if matches!(v, Vector::TeCl) =>
        {
            Ok(Outcome::warn(format!(
                "processed by Transfer-Encoding ({}), then {e}: allowed by RFC 9112 \
                 §6.3 if the connection closes; R10.1 asks for 400",
                r1.status_line
            )))
        }
        Err(e) if matches!(v, Vector::Te10) => Ok(Outcome::warn(format!(
            "accepted ({}); smuggled request not answered ({e})",
            r1.status_line
        ))),
        Err(e) => Ok(Outcome::fail(format!(
            "accepted with {} instead of 400; then {e}",
            r1.brief()
        ))),
    }
}

pub(super) async fn head(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.request("HEAD", &t.path, "1.1", ""))
        .await
        .map_err(failed("HEAD request"))?;
    let r1 = p
        .read_response(true)
        .await
        .map_err(failed("HEAD response"))?;
    if r1.has_token("connection", "close") {
        return Ok(Outcome::skip(format!(
            "HEAD response closes the connection: {}",
            r1.brief()
        )));
    }
    p.send(&t.get("")).await.map_err(failed("GET after HEAD"))?;
    match p.read_response(false).await {
        Ok(r2) => Ok(Outcome::pass(format!(
            "HEAD {} (content-length {}); next GET {} with {} body bytes",
            r1.status,
            r1.header("content-length").unwrap_or_else(|| "-".into()),
            r2.status,
            r2.body_len
        ))),
        Err(ProbeError::Malformed(e)) => Ok(Outcome::fail(format!(
            "bytes after the HEAD response (a body?): {e}"
        ))),
        Err(e) => Ok(Outcome::fail(format!("GET after HEAD {}: {e}", r1.status))),
    }
}

/// A 304 ends at its head (RFC 9112 §6.3): provoked with the validator the
/// server itself sent (ETag or Last-Modified), then a GET on the same
/// connection must parse cleanly. A server without validators is SKIPped.
pub(super) async fn not_modified(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("")).await.map_err(failed("GET"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("GET response"))?;
    let condition = match (r1.header("etag"), r1.header("last-modified")) {
        (Some(etag), _) => format!("If-None-Match: {etag}\r\n"),
        (None, Some(lm)) => format!("If-Modified-Since: {lm}\r\n"),
        (None, None) => {
            return Ok(Outcome::skip(
                "no ETag or Last-Modified to make a conditional request with",
            ));
        }
    };
    if r1.has_token("connection", "close") {
        return Ok(Outcome::skip(format!(
            "GET closes the connection: {}",
            r1.brief()
        )));
    }
    p.send(&t.get(&condition))
        .await
        .map_err(failed("conditional GET"))?;
    let r2 = p
        .read_response(false)
        .await
        .map_err(failed("conditional response"))?;
    if r2.status != 304 {
        return Ok(Outcome::skip(format!(
            "conditional GET answered {} instead of 304",
            r2.status_line
        )));
    }
    if r2.has_token("connection", "close") {
        return Ok(Outcome::pass(format!(
            "{}, then the server closes",
            r2.brief()
        )));
    }
    p.send(&t.get("")).await.map_err(failed("GET after 304"))?;
    match p.read_response(false).await {
        Ok(r3) => Ok(Outcome::pass(format!(
            "{}; next GET {} with {} body bytes",
            r2.status_line, r3.status, r3.body_len
        ))),
        Err(ProbeError::Malformed(e)) => Ok(Outcome::fail(format!(
            "bytes after the 304 head (a body?): {e}"
        ))),
        Err(e) => Ok(Outcome::fail(format!("GET after 304: {e}"))),
    }
}

pub(super) async fn expect(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    let req = t.request(
        "POST",
        &t.path,
        "1.1",
        "Content-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\n",
    );
    p.send(&req).await.map_err(failed("request head"))?;
    let sent = Instant::now();
    let wait = (sent + Duration::from_secs(1)).min(deadline);
    match p.read_response_by(false, wait).await {
        Ok(r) if r.status == 100 => {
            let ms = sent.elapsed().as_millis();
            p.send(b"hello").await.map_err(failed("body after 100"))?;
            let fin = p
                .read_response(false)
                .await
                .map_err(failed("final response after 100"))?;
            Ok(Outcome::pass(format!(
                "{} after {ms} ms, then {}",
                r.status_line, fin.status_line
            )))
        }
        Ok(r) => Ok(Outcome::pass(format!(
            "final response without 100 Continue: {}",
            r.brief()
        ))),
        Err(ProbeError::Timeout { got: 0 }) => {
            p.send(b"hello").await.map_err(failed("body"))?;
            let fin = p
                .read_response(false)
                .await
                .map_err(failed("final response"))?;
            Ok(Outcome::warn(format!(
                "nothing within 1 s of Expect: 100-continue; after the body: {}",
                fin.status_line
            )))
        }
        Err(e) => Err(failed("waiting for 100 Continue")(e)),
    }
}
