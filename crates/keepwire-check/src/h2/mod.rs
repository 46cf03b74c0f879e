//! The HTTP/2 connection-abuse checks of a server (R10.4).
//!
//! HTTP/2 moves the costs HTTP/1 bounds per connection (a head, a body, one
//! request at a time) into frames a client can send cheaply and in bulk:
//! streams it resets at once (Rapid Reset, CVE-2023-44487), header blocks
//! that never end (the CONTINUATION flood), control frames whose answers it
//! never reads, bodies without a length and windows it never opens. Each
//! check does one of those, bounded in frames, bytes and time, and says
//! what the server did about it (R10.4: every protocol has the same bounds).
//!
//! The `h2` crate is the client where it can produce the abuse (zero window,
//! oversized bodies); the rest is written as raw frames (`frames.rs`), and
//! the server's frames are read raw too, so the evidence is what crossed
//! the wire (GOAWAY and its code, RST_STREAM codes, the count at which the
//! server reacted).

mod bodies;
mod conn;
mod floods;
mod frames;

use std::time::{Duration, Instant};

use crate::options::Options;
use crate::probe::Endpoint;
use crate::report::CheckResult;
use crate::table::{self, CheckOut, Spec as TableSpec, run_table};
use bodies::{baseline, oversized_body, zero_window};
use floods::{Control, continuation_flood, control_flood, reset_flood};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Id {
    Baseline,
    Reset { delayed: bool },
    Continuation,
    SettingsFlood,
    PingFlood,
    Body { declared: bool },
    ZeroWindow,
}

pub(crate) type Spec = TableSpec<Id>;

/// Every HTTP/2 check is about R10.4.
const fn c(name: &'static str, id: Id) -> Spec {
    table::c("R10.4", name, id)
}

pub(crate) const CHECKS: &[Spec] = &[
    c("HTTP/2 GET answered (baseline)", Id::Baseline),
    c(
        "rapid reset (RST with HEADERS)",
        Id::Reset { delayed: false },
    ),
    c("streams reset after 100 ms", Id::Reset { delayed: true }),
    c("CONTINUATION flood bounded", Id::Continuation),
    c("SETTINGS flood bounded", Id::SettingsFlood),
    c("PING flood bounded", Id::PingFlood),
    c(
        "declared oversized body refused",
        Id::Body { declared: true },
    ),
    c(
        "streamed oversized body refused",
        Id::Body { declared: false },
    ),
    table::long("R10.4", "zero-window stream ended", Id::ZeroWindow),
];

pub(crate) async fn run_checks(t: &Endpoint, opts: &Options) -> Vec<CheckResult> {
    // The zero-window check may legitimately wait out a server's write
    // timeout (nginx's send_timeout and keepwire's are 60 s).
    let long = opts.stall_timeout + Duration::from_secs(5);
    let total = opts
        .total_timeout
        .unwrap_or(opts.stall_timeout + Duration::from_secs(60));
    run_table(CHECKS, opts, long, total, |id, deadline| {
        run_one(id, t, opts, deadline)
    })
    .await
}

/// One TLS connection with h2 chosen by ALPN, made before the checks so a
/// certificate problem is one error, not a FAIL per check.
pub(crate) async fn handshake(t: &Endpoint, opts: &Options) -> Result<(), String> {
    match conn::connect(t, opts, false, Instant::now() + opts.timeout).await {
        Ok(_) => Ok(()),
        Err(o) => Err(o.evidence.trim_start_matches("connect: ").to_string()),
    }
}

async fn run_one(id: Id, t: &Endpoint, opts: &Options, deadline: Instant) -> CheckOut {
    match id {
        Id::Baseline => baseline(t, opts, deadline).await,
        Id::Reset { delayed } => reset_flood(t, opts, delayed, deadline).await,
        Id::Continuation => continuation_flood(t, opts, deadline).await,
        Id::SettingsFlood => control_flood(t, opts, Control::Settings, deadline).await,
        Id::PingFlood => control_flood(t, opts, Control::Ping, deadline).await,
        Id::Body { declared } => oversized_body(t, opts, declared, deadline).await,
        Id::ZeroWindow => zero_window(t, opts, deadline).await,
    }
}
