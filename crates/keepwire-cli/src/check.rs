//! `keepwire check`: the command-line face of the `keepwire-check` crate.
//! Exit status: 0 every check passed, 1 a check failed, 2 the target could
//! not be reached (one `cannot connect` line), a proxy does not forward to
//! the recording origin, or the arguments are wrong.
//!
//! `keepwire check server URL` probes an origin over raw TCP with
//! hand-written (and deliberately malformed) request bytes and reports, rule
//! by rule (docs/CONNECTION-RULES.md), what the server does; `--http2` does
//! the same with HTTP/2 frames a hostile client would send. `keepwire check
//! proxy ADDR` runs its own recording origin behind the proxy and checks what
//! crosses the proxy in both directions. This file only turns arguments into
//! [`keepwire_check::Options`] and prints the
//! [`keepwire_check::CheckReport`].

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use clap::{Args, Subcommand};
use keepwire_check::{Error, Event, Options, Target, Verdict};

use crate::common::{Out, parse_limit, use_color};

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 every check passed (WARN and SKIP allowed), 1 a check \
failed, 2 the target could not be reached (one `cannot connect` line), a proxy does not \
forward to the recording origin (one line saying how to set it up) or a usage error."
)]
pub struct CheckArgs {
    #[command(subcommand)]
    target: CheckTarget,
}

#[derive(Subcommand, Debug)]
enum CheckTarget {
    /// Probe an origin server at URL (http://host:port/path) over raw TCP;
    /// --http2 (https://, ALPN) or --http2-prior-knowledge (h2c): HTTP/2
    /// abuse checks.
    Server(ServerArgs),
    /// Check a forward (default) or reverse (--reverse) proxy at ADDR
    /// (host:port) against a recording origin the checker runs itself.
    Proxy(ProxyArgs),
}

#[derive(Args, Debug)]
#[command(override_usage = "keepwire check server [OPTIONS] <URL>")]
struct ServerArgs {
    /// The origin to probe: http://host[:port][/path] (with --http2 also
    /// https://; `host:port/path` means http://). Requests go to path
    /// (default /), which should answer a plain GET with 200 and a
    /// non-empty body.
    // `[/path]` is `--help` text, not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    url: Option<String>,
    /// Run the HTTP/2 abuse checks instead of the HTTP/1 ones, over TLS with
    /// h2 chosen by ALPN (https:// URLs).
    #[arg(long)]
    http2: bool,
    /// Run the HTTP/2 abuse checks over cleartext h2c, without negotiating
    /// (http:// URLs), as curl's flag of that name.
    #[arg(long)]
    http2_prior_knowledge: bool,
    /// With https:// (--http2): accept any server certificate.
    #[arg(short = 'k', long, conflicts_with = "cacert")]
    insecure: bool,
    /// With https:// (--http2): trust only the certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
    /// --http2: the request body size the server must refuse beyond; the
    /// oversized-body checks declare (or stream) one byte more.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body: u64,
    /// --http2: how long the zero-window check waits for the server to
    /// reset the stalled stream or close the connection.
    #[arg(long, default_value = "90s", value_parser = parse_limit, value_name = "DURATION")]
    stall_timeout: Duration,
    /// --http2: streams each reset check opens and resets.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    resets: u32,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
#[command(override_usage = "keepwire check proxy [OPTIONS] <ADDR>")]
struct ProxyArgs {
    /// The proxy to check: host:port.
    addr: Option<String>,
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
    /// Write a JSON document to FILE, or to stdout instead of the table (no
    /// FILE, or `-`). Put it last or write --json=FILE: a word after it is
    /// taken as FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Write the table (one line per check) to FILE instead of stdout.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    report: Option<String>,
    /// Run only the checks whose rule id starts with this prefix (e.g. R7,
    /// R10.1).
    #[arg(long, value_name = "RULE")]
    only: Option<String>,
    /// Time limit of each check, and of the connection made first to see
    /// that the target answers (for a proxy, then a plain GET through it
    /// to the recording origin) (`3`, `3s`, `500ms`).
    #[arg(long, default_value = "3s", value_parser = parse_limit, value_name = "DURATION")]
    timeout: Duration,
    /// Also run the checks that need long waits (observed idle timeout,
    /// slowloris); each is bounded to 60 s.
    #[arg(long)]
    slow: bool,
    /// Time limit of the whole run; checks not started by then are skipped
    /// [default: 110s; the HTTP/2 checks of `check server`: their stall
    /// timeout + 60s].
    #[arg(long, value_parser = parse_limit, value_name = "DURATION")]
    total_timeout: Option<Duration>,
}

impl CommonArgs {
    fn options(&self) -> Options {
        let mut o = Options::default().timeout(self.timeout).slow(self.slow);
        o.total_timeout = self.total_timeout;
        o.only = self.only.clone();
        o
    }

    /// The URL or ADDR, also when `--json URL` took it as its FILE.
    fn target(&mut self, given: Option<String>) -> String {
        let swallowed = |v: &mut Option<String>| v.replace("-".into()).filter(|v| v != "-");
        match given {
            Some(t) => t,
            None => swallowed(&mut self.json)
                .or_else(|| swallowed(&mut self.report))
                .unwrap_or_else(|| usage("missing the URL (or ADDR) to check".into())),
        }
    }
}

/// Exit status 2 (unusable target, usage), after one line.
fn usage(msg: String) -> ! {
    eprintln!("keepwire: {msg}");
    std::process::exit(2)
}

pub fn run(args: CheckArgs) -> Result<(), String> {
    let (target, options, common) = match args.target {
        CheckTarget::Server(mut a) => {
            let url = a.common.target(a.url.take());
            if a.http2 && url.starts_with("http://") {
                crate::common::deprecated("--http2 on http://", "--http2-prior-knowledge");
            }
            let target = if a.http2 || a.http2_prior_knowledge {
                Target::http2_server(&url)
            } else {
                Target::server(&url)
            };
            let mut options = a.common.options().insecure(a.insecure);
            // A missing or empty file is the flag's fault, not the target's.
            if let Some(Err(e)) = a
                .cacert
                .as_deref()
                .map(keepwire::client::tls::config_with_ca)
            {
                usage(format!("--cacert {e}"));
            }
            options.cacert = a.cacert;
            let options = options
                .max_body(a.max_body)
                .stall_timeout(a.stall_timeout)
                .resets(a.resets);
            (target, options, a.common)
        }
        CheckTarget::Proxy(mut a) => {
            let addr = a.common.target(a.addr.take());
            let target = match (a.reverse, a.origin_port) {
                (true, Some(port)) => Target::reverse_proxy(&addr, port),
                (true, None) => {
                    usage("--reverse needs --origin-port (the port the proxy forwards to)".into())
                }
                (false, Some(port)) => Target::forward_proxy(&addr).origin_port(port),
                (false, None) => Target::forward_proxy(&addr),
            };
            (target, a.common.options(), a.common)
        }
    };
    let json = common
        .json
        .as_deref()
        .map(|f| Out::open(f, "--json"))
        .transpose()
        .unwrap_or_else(|e| usage(e));
    let default = if json.as_ref().is_some_and(Out::is_stdout) {
        None
    } else {
        Some("-")
    };
    // Exit 1 means a check failed: a bad path is a usage error (2).
    let table = (common.report.as_deref().or(default))
        .map(|f| Out::open(f, "--report").unwrap_or_else(|e| usage(e)));
    if json.as_ref().is_some_and(Out::is_stdout) && table.as_ref().is_some_and(Out::is_stdout) {
        usage("--json and --report cannot both go to stdout: give one a FILE".into());
    }
    let bar = std::io::stderr().is_terminal().then(|| spinner(&target));
    let options = match &bar {
        Some(bar) => {
            let (bar, done) = (bar.clone(), AtomicUsize::new(0));
            let all = target.selected(&options).len();
            options.on_progress(move |e| match e {
                Event::Started { rule, name } => {
                    let done = done.load(Relaxed);
                    bar.set_message(format!("{rule} {name} ({done} of {all} done)"));
                }
                _ => _ = done.fetch_add(1, Relaxed),
            })
        }
        None => options,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = rt.block_on(keepwire_check::run(&target, &options));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(Error::NothingSelected) => {
            let mut rules: Vec<&str> = Vec::new();
            for c in target.checks() {
                if !rules.contains(&c.rule) {
                    rules.push(c.rule);
                }
            }
            usage(format!(
                "no check matches --only {}; this target's rules: {}",
                common.only.as_deref().unwrap_or(""),
                rules.join(", ")
            ))
        }
        Err(Error::Target(e)) if e.starts_with("https://") => usage(format!("{e}: add --http2")),
        Err(e) => usage(crate::common::cert_hint(e.to_string())),
    };
    if let Some(out) = json {
        out.write(&report.to_json())?;
    }
    if let Some(out) = table {
        let color = out.is_stdout() && use_color(&std::io::stdout());
        out.write(&report.table(color))?;
    }
    match report.count(Verdict::Fail) {
        0 => Ok(()),
        n => Err(format!("{n} check(s) failed against {}", report.target)),
    }
}

/// The spinner on stderr (a terminal) while the checks run.
fn spinner(target: &Target) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("connecting to {}", target.as_str()));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
