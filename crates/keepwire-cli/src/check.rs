//! `keepwire check`: the command-line face of the `keepwire-check` crate.
//!
//! `keepwire check server URL` probes an origin over raw TCP with
//! hand-written (and deliberately malformed) request bytes and reports, rule
//! by rule (docs/CONNECTION-RULES.md), what the server does; `--http2` does
//! the same with HTTP/2 frames a hostile client would send. `keepwire check
//! proxy ADDR` runs its own recording origin behind the proxy and checks what
//! crosses the proxy in both directions. This file only turns arguments into
//! [`keepwire_check::Options`] and prints the [`CheckReport`].

use std::time::Duration;

use clap::{Args, Subcommand};
use keepwire_check::{CheckReport, Error, Options, Target, Verdict};

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
    Server(ServerArgs),
    /// Check a forward (default) or reverse (--reverse) proxy at ADDR
    /// (host:port) against a recording origin the checker runs itself.
    Proxy(ProxyArgs),
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// The origin to probe: http://host[:port][/path] (with --http2 also
    /// https://). Requests go to path (default /), which should answer a
    /// plain GET with 200 and a non-empty body.
    url: String,
    /// Run the HTTP/2 abuse checks instead of the HTTP/1 ones: h2c with
    /// prior knowledge for http://, h2 by ALPN for https://.
    #[arg(long)]
    http2: bool,
    /// With https:// (--http2): accept any server certificate.
    #[arg(short = 'k', long)]
    insecure: bool,
    /// --http2: the request body size the server must refuse beyond; the
    /// oversized-body checks declare (or stream) one byte more.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body: u64,
    /// --http2: how long the zero-window check waits for the server to
    /// reset the stalled stream or close the connection.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    stall_timeout: Duration,
    /// --http2: streams each reset check opens and resets.
    #[arg(long, default_value_t = 1000)]
    resets: u32,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
struct ProxyArgs {
    /// The proxy to check: host:port.
    addr: String,
    /// Port of the recording origin on 127.0.0.1 (default: a free port).
    /// Needed with --reverse: configure the proxy to forward to it.
    #[arg(long, value_name = "PORT")]
    origin_port: Option<u16>,
    /// Treat ADDR as a reverse proxy (origin-form requests) that forwards to
    /// the recording origin on --origin-port. Default: a forward proxy
    /// (absolute-form requests `GET http://127.0.0.1:PORT/...`).
    #[arg(long)]
    reverse: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options every check target shares.
#[derive(Args, Debug, Clone)]
struct CommonArgs {
    /// Print a JSON document instead of one line per check.
    #[arg(long)]
    json: bool,
    /// Run only the checks whose rule id starts with this prefix (e.g. R7,
    /// R10.1).
    #[arg(long, value_name = "RULE")]
    only: Option<String>,
    /// Time limit of each check (seconds, or e.g. 500ms).
    #[arg(long, default_value = "3", value_parser = parse_duration)]
    timeout: Duration,
    /// Also run the checks that need long waits (observed idle timeout,
    /// slowloris); each is bounded to 60 s.
    #[arg(long)]
    slow: bool,
    /// Time limit of the whole run; checks not started by then are skipped
    /// [default: 110 s; with --http2, --stall-timeout + 60 s].
    #[arg(long, value_parser = parse_duration)]
    total_timeout: Option<Duration>,
}

impl CommonArgs {
    fn options(&self) -> Options {
        let mut o = Options::default().timeout(self.timeout).slow(self.slow);
        o.total_timeout = self.total_timeout;
        o.only = self.only.clone();
        o
    }
}

pub fn run(args: CheckArgs) -> Result<(), String> {
    let (target, options, common) = match args.target {
        CheckTarget::Server(a) => {
            let target = if a.http2 {
                Target::http2_server(&a.url)
            } else {
                Target::server(&a.url)
            };
            let options = a
                .common
                .options()
                .insecure(a.insecure)
                .max_body(a.max_body)
                .stall_timeout(a.stall_timeout)
                .resets(a.resets);
            (target, options, a.common)
        }
        CheckTarget::Proxy(a) => {
            let target = match (a.reverse, a.origin_port) {
                (true, Some(port)) => Target::reverse_proxy(&a.addr, port),
                (true, None) => {
                    return Err(
                        "--reverse needs --origin-port (the port the proxy forwards to)".into(),
                    );
                }
                (false, Some(port)) => Target::forward_proxy(&a.addr).origin_port(port),
                (false, None) => Target::forward_proxy(&a.addr),
            };
            (target, a.common.options(), a.common)
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    match rt.block_on(keepwire_check::run(&target, &options)) {
        Ok(report) => print(&report, common.json),
        Err(Error::NothingSelected) => Err(format!(
            "no check matches --only {}",
            common.only.as_deref().unwrap_or("")
        )),
        Err(Error::Target(e)) if e.starts_with("https://") => Err(format!("{e}: add --http2")),
        Err(e) => Err(e.to_string()),
    }
}

/// Prints the results (text or JSON) and turns any FAIL into an error, so
/// that the exit status is non-zero.
fn print(report: &CheckReport, json: bool) -> Result<(), String> {
    let results = &report.checks;
    let (passed, failed, warned, skipped) = (
        report.count(Verdict::Pass),
        report.count(Verdict::Fail),
        report.count(Verdict::Warn),
        report.count(Verdict::Skip),
    );
    if json {
        let checks: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "rule": r.rule,
                    "name": r.name,
                    "result": r.verdict.as_str(),
                    "evidence": r.evidence,
                    "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "target": report.target,
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
                r.rule, r.verdict, r.name, r.evidence
            );
        }
        if warned > 0 || skipped > 0 {
            println!("{warned} warnings, {skipped} skipped");
        }
        println!("{passed} passed, {failed} failed");
    }
    if failed > 0 {
        Err(format!(
            "{failed} check(s) failed against {}",
            report.target
        ))
    } else {
        Ok(())
    }
}
