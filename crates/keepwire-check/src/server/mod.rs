//! The HTTP/1 checks of an origin server, over raw TCP (R5, R7, R8.4, R10).
//!
//! Each check is one row of [`CHECKS`]; the responsibilities it tests are
//! cut into files: persistence and keep-alive, pipelining and closing,
//! message framing, `Host`, and the server's limits.

mod framing;
mod host;
mod limits;
mod persistence;
mod pipeline;

use std::time::{Duration, Instant};

use crate::options::Options;
use crate::probe::Endpoint;
use crate::report::CheckResult;
use crate::table::{CheckOut, Spec as TableSpec, c, run_table, slow};
use framing::{Vector, expect, head, not_modified, smuggle};
use host::{HostCase, absolute_form, host_check};
use limits::{long_line, many_headers, slowloris};
use persistence::{
    close_honoured, close10, idle_observed, keep_alive_advertised, keep_alive10, max_requests,
    persist11,
};
use pipeline::{close_mid_pipeline, close_then_more, half_close, pipeline};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Id {
    Persist11,
    KeepAlive10,
    Close10,
    CloseMidPipeline,
    MaxRequests,
    IdleObserved,
    Slowloris,
    CloseHonoured,
    Pipeline,
    CloseThenMore,
    HalfClose,
    Smuggle(Vector),
    Host(HostCase),
    AbsoluteForm,
    LongLine,
    ManyHeaders,
    Head,
    NotModified,
    Expect,
    KeepAliveAdvertised,
}

/// One check: rule, short name, what to run, and whether it needs a long
/// wait (run only with `Options::slow`).
pub(crate) type Spec = TableSpec<Id>;

pub(crate) const CHECKS: &[Spec] = &[
    c("R5.3", "HTTP/1.1 persistence", Id::Persist11),
    c("R5.1", "HTTP/1.0 keep-alive", Id::KeepAlive10),
    c("R5.1", "HTTP/1.0 without keep-alive closes", Id::Close10),
    c("R5.3", "Connection: close honoured", Id::CloseHonoured),
    c("R5.3", "close mid-pipeline ends it", Id::CloseMidPipeline),
    c("R7.2", "pipelined responses in order", Id::Pipeline),
    c(
        "R8.4",
        "requests after close not reset away",
        Id::CloseThenMore,
    ),
    c("R8.4", "client half-close answered", Id::HalfClose),
    c("R10.1", "TE + CL rejected", Id::Smuggle(Vector::TeCl)),
    c(
        "R10.1",
        "differing CLs rejected",
        Id::Smuggle(Vector::TwoCl),
    ),
    c("R10.1", "invalid CL rejected", Id::Smuggle(Vector::BadCl)),
    c(
        "R10.1",
        "TE chunked not final rejected",
        Id::Smuggle(Vector::TeNotFinal),
    ),
    c(
        "R10.1",
        "TE in HTTP/1.0 not trusted",
        Id::Smuggle(Vector::Te10),
    ),
    c(
        "R10.1",
        "invalid chunk size rejected",
        Id::Smuggle(Vector::BadChunk),
    ),
    c(
        "R10.1",
        "space before colon rejected",
        Id::Smuggle(Vector::SpaceColon),
    ),
    c(
        "R10.1",
        "Content-Length: , rejected",
        Id::Smuggle(Vector::CommaCl),
    ),
    c(
        "R10.3",
        "HTTP/1.1 without Host rejected",
        Id::Host(HostCase::Missing),
    ),
    c(
        "R10.3",
        "duplicate Host rejected",
        Id::Host(HostCase::Duplicate),
    ),
    c(
        "R10.3",
        "invalid Host rejected",
        Id::Host(HostCase::Invalid),
    ),
    c(
        "R10.3",
        "absolute-form target wins over Host",
        Id::AbsoluteForm,
    ),
    c(
        "R10.3",
        "empty chunk-size line rejected",
        Id::Smuggle(Vector::EmptyChunk),
    ),
    c(
        "R10.3",
        "whitespace chunk-size line rejected",
        Id::Smuggle(Vector::SpaceChunk),
    ),
    c(
        "R10.3",
        "bare LF after chunk size rejected",
        Id::Smuggle(Vector::LfChunk),
    ),
    c(
        "R10.3",
        "control byte in chunk extension rejected",
        Id::Smuggle(Vector::CtlExt),
    ),
    c(
        "R10.3",
        "bare-LF trailers rejected",
        Id::Smuggle(Vector::LfTrailer),
    ),
    c("R10.2", "10 KB request line bounded", Id::LongLine),
    c("R10.2", "300 header fields bounded", Id::ManyHeaders),
    slow("R10.2", "slowloris head bounded in time", Id::Slowloris),
    c("R5.4", "HEAD response has no body", Id::Head),
    c("R5.4", "304 response has no body", Id::NotModified),
    c("R5.4", "Expect: 100-continue answered", Id::Expect),
    c("R5.2", "Keep-Alive advertised", Id::KeepAliveAdvertised),
    slow("R5.2", "idle timeout observed", Id::IdleObserved),
    c("R5.6", "max requests announced with close", Id::MaxRequests),
];

/// Time limit of a slow check (`Options::slow`).
const SLOW_LIMIT: Duration = Duration::from_secs(60);

pub(crate) async fn run_checks(target: &Endpoint, options: &Options) -> Vec<CheckResult> {
    let total = options
        .total_timeout
        .unwrap_or(crate::options::DEFAULT_TOTAL);
    run_table(CHECKS, options, SLOW_LIMIT, total, |id, deadline| {
        run_one(id, target, deadline)
    })
    .await
}

async fn run_one(id: Id, t: &Endpoint, deadline: Instant) -> CheckOut {
    match id {
        Id::Persist11 => persist11(t, deadline).await,
        Id::KeepAlive10 => keep_alive10(t, deadline).await,
        Id::Close10 => close10(t, deadline).await,
        Id::CloseMidPipeline => close_mid_pipeline(t, deadline).await,
        Id::MaxRequests => max_requests(t, deadline).await,
        Id::IdleObserved => idle_observed(t, deadline).await,
        Id::Slowloris => slowloris(t, deadline).await,
        Id::CloseHonoured => close_honoured(t, deadline).await,
        Id::Pipeline => pipeline(t, deadline).await,
        Id::CloseThenMore => close_then_more(t, deadline).await,
        Id::HalfClose => half_close(t, deadline).await,
        Id::Smuggle(v) => smuggle(t, v, deadline).await,
        Id::Host(case) => host_check(t, case, deadline).await,
        Id::AbsoluteForm => absolute_form(t, deadline).await,
        Id::LongLine => long_line(t, deadline).await,
        Id::ManyHeaders => many_headers(t, deadline).await,
        Id::Head => head(t, deadline).await,
        Id::NotModified => not_modified(t, deadline).await,
        Id::Expect => expect(t, deadline).await,
        Id::KeepAliveAdvertised => keep_alive_advertised(t, deadline).await,
    }
}
