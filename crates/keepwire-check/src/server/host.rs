//! Which host a request is for (R10.3): a missing, repeated or invalid
//! `Host` is refused, and an absolute-form target wins over `Host`, so that
//! a server and the proxies in front of it cannot route one request two
//! ways.

use std::time::Instant;

use crate::probe::{Endpoint, Probe, ProbeError, failed};
use crate::report::Outcome;
use crate::table::CheckOut;

/// What is wrong with `Host` (RFC 9112 §3.2: each is a 400).
#[derive(Debug, Clone, Copy)]
pub(crate) enum HostCase {
    Missing,
    Duplicate,
    Invalid,
}

/// A host no test server serves: what a request names when `Host` should
/// not matter.
const OTHER_HOST: &str = "kw-other.invalid";

/// RFC 9112 §3.2: a missing (HTTP/1.1), repeated or invalid `Host` is 400.
/// Another 4xx is a WARN (refused, but not as the RFC says); anything else
/// was accepted: FAIL.
pub(super) async fn host_check(t: &Endpoint, case: HostCase, deadline: Instant) -> CheckOut {
    let ua = "User-Agent: keepwire-check\r\n";
    let req = match case {
        HostCase::Missing => format!("GET {} HTTP/1.1\r\n{ua}\r\n", t.path),
        HostCase::Duplicate => format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nHost: {OTHER_HOST}\r\n{ua}\r\n",
            t.path, t.host
        ),
        // '/' is not allowed in an authority (RFC 3986 §3.2.2).
        HostCase::Invalid => format!(
            "GET {} HTTP/1.1\r\nHost: kw-check/invalid\r\n{ua}\r\n",
            t.path
        ),
    };
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(req.as_bytes()).await.map_err(failed("request"))?;
    let r = match p.read_response(false).await {
        Ok(r) => r,
        Err(ProbeError::Eof { got: 0 }) | Err(ProbeError::Reset { got: 0 }) => {
            return Ok(Outcome::warn(
                "connection closed without a status (400 required)",
            ));
        }
        Err(e) => return Err(failed("response")(e)),
    };
    Ok(if r.status == 400 {
        Outcome::pass(r.brief())
    } else if (400..500).contains(&r.status) {
        Outcome::warn(format!("{} (RFC 9112 §3.2 requires 400)", r.brief()))
    } else {
        Outcome::fail(format!("accepted: {}", r.brief()))
    })
}

/// RFC 9112 §3.2.2: with an absolute-form target the server uses the
/// target's authority and ignores `Host`. Sent with the right authority in
/// the target and a `Host` the server does not serve, the answer must be
/// the one the right `Host` gets in origin form (a 400, or a different
/// status, means `Host` decided).
pub(super) async fn absolute_form(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(&t.get("Connection: close\r\n"))
        .await
        .map_err(failed("origin-form request"))?;
    let r0 = p
        .read_response(false)
        .await
        .map_err(failed("origin-form response"))?;
    let target = format!("http://{}{}", t.host, t.path);
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {OTHER_HOST}\r\nUser-Agent: keepwire-check\r\n\r\n"
    );
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    p.send(req.as_bytes())
        .await
        .map_err(failed("absolute-form request"))?;
    let r1 = p
        .read_response(false)
        .await
        .map_err(failed("absolute-form response"))?;
    let what = format!("GET {target} with Host: {OTHER_HOST}: {}", r1.brief());
    Ok(if r1.status == 400 {
        Outcome::fail(format!(
            "{what}: rejected, but the target's authority must win over Host"
        ))
    } else if r1.status == r0.status {
        Outcome::pass(format!(
            "{what} ({} body bytes); origin-form with the right Host: {} ({} body bytes)",
            r1.body_len, r0.status_line, r0.body_len
        ))
    } else {
        Outcome::fail(format!(
            "{what}, but origin-form with the right Host gets {}: Host decided, not the target",
            r0.status_line
        ))
    })
}
