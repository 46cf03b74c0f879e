//! `keepwire check`: a connection-management conformance checker.
//!
//! `keepwire check server URL` probes an origin over raw TCP with
//! hand-written (and deliberately malformed) request bytes and reports, rule
//! by rule (../shared/docs/CONNECTION-RULES.md), what the server does;
//! `--http2` does the same with HTTP/2 frames a hostile client would send.
//! `keepwire check proxy ADDR` runs its own recording origin behind the proxy
//! and checks what crosses the proxy in both directions.

mod h2;
mod proxy;
mod response;
mod server;

use std::fmt;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::common::parse_duration;

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(subcommand)]
    target: CheckTarget,
}

#[derive(Subcommand, Debug)]
enum CheckTarget {
    /// Probe an origin server at URL (http://host:port/path) over raw TCP;
    /// --http2: HTTP/2 abuse checks (h2c, or https:// by ALPN).
    Server(server::ServerArgs),
    /// Check a forward (default) or reverse (--reverse) proxy at ADDR
    /// (host:port) against a recording origin the checker runs itself.
    Proxy(proxy::ProxyArgs),
}

/// Options every check target shares.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Print a JSON document instead of one line per check.
    #[arg(long)]
    pub json: bool,
    /// Run only the checks whose rule id starts with this prefix (e.g. R7,
    /// R10.1).
    #[arg(long, value_name = "RULE")]
    pub only: Option<String>,
    /// Time limit of each check (seconds, or e.g. 500ms).
    #[arg(long, default_value = "3", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Also run the checks that need long waits (observed idle timeout,
    /// slowloris); each is bounded to 60 s.
    #[arg(long)]
    pub slow: bool,
    /// Time limit of the whole run; checks not started by then are skipped
    /// [default: 110 s; with --http2, --stall-timeout + 60 s].
    #[arg(long, value_parser = parse_duration)]
    pub total_timeout: Option<Duration>,
}

impl CommonArgs {
    /// `--total-timeout`, or `default` if not given.
    pub fn total_or(&self, default: Duration) -> Duration {
        self.total_timeout.unwrap_or(default)
    }
}

/// `--total-timeout` unless given otherwise.
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(110);

pub fn run(args: CheckArgs) -> Result<(), String> {
    match args.target {
        CheckTarget::Server(a) => server::run(a),
        CheckTarget::Proxy(a) => proxy::run(a),
    }
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A SHOULD-level rule is not followed.
    Warn,
    /// Not applicable or not run.
    Skip,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Warn => "WARN",
            Verdict::Skip => "SKIP",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check found: a verdict and the evidence that justifies it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    pub evidence: String,
}

impl Outcome {
    pub fn pass(e: impl Into<String>) -> Self {
        Outcome {
            verdict: Verdict::Pass,
            evidence: e.into(),
        }
    }
    pub fn fail(e: impl Into<String>) -> Self {
        Outcome {
            verdict: Verdict::Fail,
            evidence: e.into(),
        }
    }
    pub fn warn(e: impl Into<String>) -> Self {
        Outcome {
            verdict: Verdict::Warn,
            evidence: e.into(),
        }
    }
    pub fn skip(e: impl Into<String>) -> Self {
        Outcome {
            verdict: Verdict::Skip,
            evidence: e.into(),
        }
    }
}

/// One finished check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub rule: &'static str,
    pub name: &'static str,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// Prints the results (text or JSON) and turns any FAIL into an error, so
/// that the exit status is non-zero.
pub fn report(target: &str, results: &[CheckResult], json: bool) -> Result<(), String> {
    let count = |v: Verdict| results.iter().filter(|r| r.outcome.verdict == v).count();
    let (passed, failed, warned, skipped) = (
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Warn),
        count(Verdict::Skip),
    );
    if json {
        let checks: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "rule": r.rule,
                    "name": r.name,
                    "result": r.outcome.verdict.as_str(),
                    "evidence": r.outcome.evidence,
                    "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "target": target,
            "checks": checks,
            "summary": {
                "passed": passed,
                "failed": failed,
                "warnings": warned,
                "skipped": skipped,
            },
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
    } else {
        let rule_w = results.iter().map(|r| r.rule.len()).max().unwrap_or(0);
        let name_w = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in results {
            println!(
                "{:rule_w$}  {}  {:name_w$}  {}",
                r.rule, r.outcome.verdict, r.name, r.outcome.evidence
            );
        }
        if warned > 0 || skipped > 0 {
            println!("{warned} warnings, {skipped} skipped");
        }
        println!("{passed} passed, {failed} failed");
    }
    if failed > 0 {
        Err(format!("{failed} check(s) failed against {target}"))
    } else {
        Ok(())
    }
}

/// One row of a check table: its rule, its name, what to run, whether it
/// needs `--slow`, and whether it runs by default but for up to the long
/// limit (`slow_limit`) instead of `--timeout`.
pub(super) struct Spec<I> {
    pub rule: &'static str,
    pub name: &'static str,
    pub id: I,
    pub slow: bool,
    pub long: bool,
}

/// Runs the table's checks in order, those `--only` selects: each bounded by
/// its deadline (`--timeout`, or `slow_limit` for slow ones) plus an outer
/// safety net, and the whole run by `total` (`--total-timeout`).
pub(super) async fn run_table<I: Copy, F, Fut>(
    checks: &[Spec<I>],
    common: &CommonArgs,
    slow_limit: Duration,
    total: Duration,
    mut run: F,
) -> Vec<CheckResult>
where
    F: FnMut(I, std::time::Instant) -> Fut,
    Fut: std::future::Future<Output = server::CheckOut>,
{
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    let only = common.only.as_deref().map(str::to_ascii_uppercase);
    for spec in checks {
        if let Some(prefix) = &only
            && !server::rule_matches(spec.rule, prefix)
        {
            continue;
        }
        let t0 = std::time::Instant::now();
        let limit = if spec.slow || spec.long {
            slow_limit
        } else {
            common.timeout
        };
        let outcome = if spec.slow && !common.slow {
            Outcome::skip("needs a long wait; run with --slow")
        } else if started.elapsed() + limit > total {
            Outcome::skip("the run's time limit (--total-timeout) was reached")
        } else {
            // The probe deadline bounds every read; this outer limit is a
            // safety net for anything that does not look at it.
            match tokio::time::timeout(limit + Duration::from_millis(500), run(spec.id, t0 + limit))
                .await
            {
                Ok(Ok(o)) | Ok(Err(o)) => o,
                Err(_) => Outcome::fail(format!("check did not finish within {limit:?}")),
            }
        };
        results.push(CheckResult {
            rule: spec.rule,
            name: spec.name,
            outcome,
            elapsed: t0.elapsed(),
        });
    }
    results
}
