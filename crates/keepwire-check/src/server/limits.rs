//! A server's bounds on what one client may make it hold (R10.2): a head
//! too long or with too many fields is refused with a status, and a head
//! that trickles in (slowloris) is cut off in time.

use std::time::{Duration, Instant};

use crate::probe::{Endpoint, Probe, ProbeError, failed};
use crate::report::Outcome;
use crate::response::{Parsed, parse_response, show};
use crate::table::CheckOut;

/// A request that exceeds a limit: 4xx PASS (best: `want`), accepted WARN,
/// no status (close, reset, hang) FAIL.
async fn over_limit(t: &Endpoint, req: Vec<u8>, want: u16, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    let _ = p.send(&req).await;
    let r = p
        .read_response(false)
        .await
        .map_err(|e| Outcome::fail(format!("{} bytes sent; {e}", req.len())))?;
    if r.status == want {
        Ok(Outcome::pass(r.brief()))
    } else if (400..500).contains(&r.status) {
        Ok(Outcome::pass(format!("{} ({want} preferred)", r.brief())))
    } else {
        Ok(Outcome::warn(format!(
            "accepted: {} (limit above {} bytes)",
            r.brief(),
            req.len()
        )))
    }
}

pub(super) async fn long_line(t: &Endpoint, deadline: Instant) -> CheckOut {
    let path = t.path_with(&format!("kw-long={}", "a".repeat(10 * 1024)));
    over_limit(t, t.request("GET", &path, "1.1", ""), 414, deadline).await
}

pub(super) async fn many_headers(t: &Endpoint, deadline: Instant) -> CheckOut {
    let fields: String = (0..300).map(|i| format!("X-Kw-{i}: v\r\n")).collect();
    over_limit(t, t.get(&fields), 431, deadline).await
}

pub(super) async fn slowloris(t: &Endpoint, deadline: Instant) -> CheckOut {
    let mut p = Probe::connect(t, deadline)
        .await
        .map_err(failed("connect"))?;
    let started = Instant::now();
    let mut head = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", t.path, t.host).into_bytes();
    head.extend(b"X-Kw-Slow: ".iter());
    p.send(&head).await.map_err(failed("request start"))?;
    let mut sent = head.len();
    loop {
        let tick = (Instant::now() + Duration::from_millis(500)).min(deadline);
        let filled = p.fill(tick).await;
        let secs = started.elapsed().as_secs_f64();
        match filled {
            Ok(true) => {
                return Ok(match parse_response(&p.buf, false, false) {
                    Parsed::Done(r, _) if (400..500).contains(&r.status) => {
                        Outcome::pass(format!("{} after {secs:.1} s, {sent} bytes", r.brief()))
                    }
                    Parsed::Done(r, _) => {
                        Outcome::fail(format!("unexpected {} to an unfinished head", r.brief()))
                    }
                    _ => Outcome::pass(format!("answered after {secs:.1} s: {}", show(&p.buf))),
                });
            }
            Ok(false) => {
                return Ok(Outcome::pass(format!(
                    "closed (FIN) without a status after {secs:.1} s, {sent} bytes (408 preferred)"
                )));
            }
            Err(ProbeError::Reset { .. }) => {
                return Ok(Outcome::warn(format!(
                    "reset (RST) after {secs:.1} s, {sent} bytes"
                )));
            }
            Err(ProbeError::Timeout { .. }) if Instant::now() >= deadline => {
                return Ok(Outcome::fail(format!(
                    "still reading a {sent}-byte head after {secs:.1} s (one byte every 0.5 s)"
                )));
            }
            Err(ProbeError::Timeout { .. }) => {
                if p.send(b"a").await.is_err() {
                    return Ok(Outcome::pass(format!(
                        "server stopped reading after {secs:.1} s, {sent} bytes"
                    )));
                }
                sent += 1;
            }
            Err(e) => return Err(failed("slow head")(e)),
        }
    }
}
