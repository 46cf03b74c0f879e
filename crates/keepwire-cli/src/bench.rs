//! `keepwire bench`: a load generator that shows what connections cost.
//!
//! The engine is [`keepwire::bench`]; this module turns flags into a
//! [`Plan`], draws the progress bar, and prints the report as a table or
//! JSON. Beside the usual throughput and latency it prints what the
//! connection layer did: connections opened, requests per connection,
//! requests the server refused after `Connection: close`, and TIME_WAIT
//! sockets left behind (R2.4). `--ws` and `--sse` load real-time
//! connections instead (WebSocket echo round trips, event-stream delivery)
//! and report through the same table and JSON.
//!
//! Beyond one machine (issue 18): `--json` carries the histograms whole
//! (HdrHistogram's interchange encoding), `keepwire bench merge` adds
//! several loaders' documents into one report, and `--start-at` lets the
//! loaders start together. The engine, the document and the merge live in
//! [`keepwire::bench`]; see docs/deploy/ for loaders as a Kubernetes Job.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http::{HeaderMap, HeaderValue, Method, Version};
use indicatif::{ProgressBar, ProgressStyle};
use keepwire::bench::{self, Document, FailureKind, Plan, Progress, Stop, Target};

use crate::common::parse_duration;
use keepwire_lab::page::parse_url;

const AGENT: &str = concat!("keepwire-bench/", env!("CARGO_PKG_VERSION"));

/// Options of `keepwire bench`.
#[derive(Args, Debug)]
#[command(after_long_help = EXAMPLES, args_conflicts_with_subcommands = true,
          subcommand_negates_reqs = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    merge: Option<BenchCommand>,
    /// The URL to load (`http://`, `https://`; `ws://`, `wss://` imply --ws;
    /// `host:port/path` means `http://host:port/path`).
    #[arg(value_name = "URL", required = true)]
    url: Option<String>,
    /// WebSocket echo: each connection upgrades, then sends a message and waits for
    /// its echo, over and over (--pipeline N: N messages in flight); reports
    /// messages/s and round-trip latency.
    #[arg(long, conflicts_with_all = ["http2", "http2_prior_knowledge", "http10", "rate", "body", "body_file"])]
    ws: bool,
    /// Server-Sent Events: each connection holds a text/event-stream open; reports
    /// events/s and each event's latency from the time stamped in its data (JSON
    /// `"t"` or `"ts"`: Unix time in s, ms, µs or ns; same clock: loopback).
    #[arg(long, conflicts_with_all = ["ws", "http2", "http2_prior_knowledge", "http10", "rate", "body",
                                     "body_file", "pipeline"])]
    sse: bool,
    /// --ws: size of the text message echoed, in bytes.
    #[arg(long, default_value_t = 32, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    message_size: u32,
    /// Concurrent connections.
    #[arg(short, long, default_value_t = 50, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// How long to send (`10`, `10s`, `500ms`); what is in flight then still completes.
    /// The default when neither this nor --requests is given: 10s.
    #[arg(short, long, value_parser = parse_duration, value_name = "DURATION",
          conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Send exactly N requests (--ws: messages; --sse: receive N events), then stop.
    #[arg(short = 'n', long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Event-loop threads; connections are spread over them (default: one per core;
    /// never more than connections).
    #[arg(short, long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Request method.
    #[arg(short = 'X', long, default_value = "GET", value_name = "METHOD")]
    method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE",
          value_parser = crate::common::parse_header)]
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Request body (sent with Content-Length).
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body from a file.
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// `on`: persistent connections (R5). `off`: a new connection per request, each
    /// request saying `Connection: close`; the table then shows the TIME_WAIT sockets
    /// that leaves behind (R2.4).
    #[arg(long, value_enum, default_value_t = OnOff::On, value_name = "on|off")]
    keep_alive: OnOff,
    /// Send HTTP/1.0 requests with `Connection: keep-alive` (as `ab -k` does): the
    /// connection persists only if the server answers with keep-alive too (R5.1).
    #[arg(long = "http1.0", conflicts_with_all = ["http2", "http2_prior_knowledge"])]
    http10: bool,
    /// https://: speak HTTP/2 (R4.5), agreed by ALPN; the run fails if the server
    /// does not offer h2. --pipeline N then sets the concurrent streams per
    /// connection (as h2load's -m does). (On http:// it still means
    /// --http2-prior-knowledge, with a deprecation note.)
    #[arg(long, conflicts_with_all = ["rate", "http2_prior_knowledge"])]
    http2: bool,
    /// https://: speak HTTP/3 over QUIC (UDP to the URL's port); --pipeline N sets the
    /// concurrent streams per connection, as with --http2.
    #[arg(long, conflicts_with_all = ["rate", "http2", "http2_prior_knowledge", "ws", "sse", "http10"])]
    http3: bool,
    /// http://: speak HTTP/2 without negotiating (h2c, as curl spells it); on https://
    /// the same as --http2. --pipeline N sets the streams per connection.
    #[arg(long, conflicts_with = "rate")]
    http2_prior_knowledge: bool,
    /// https://: trust only the certificates in this PEM file (default: the system's
    /// roots).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    cacert: Option<PathBuf>,
    /// https://: do not verify the server's certificate (self-signed test servers).
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Requests kept in flight per connection (pipelining, R7); 1 is none. Closed
    /// loop, they go out DEPTH at a time in one write once the last batch is
    /// answered (as wrk's pipeline script); with --rate, each as it falls due.
    #[arg(long, default_value_t = 1, value_name = "DEPTH",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pipeline: u32,
    /// Open loop: send R requests per second in total on a fixed schedule, and measure
    /// latency from when each request should have been sent, so a stalled server is
    /// charged for every request it delayed (as wrk2 does). A request may go out up to
    /// 2 ms early (timer resolution) and is then measured from its actual write, so
    /// the loader's own timer lateness is not charged to the server (wrk2's is).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// A connect, or a request that makes no progress, fails after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Start the load at this time, so several loaders start together: RFC 3339 in
    /// UTC (`2026-12-07T08:00:00Z`), `+DURATION` from now (`+5s`), or `@SECONDS` since
    /// the Unix epoch. Refused if more than 2s in the past. The report states the
    /// actual start.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    start_at: Option<SystemTime>,
    #[command(flatten)]
    out: Output,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

/// Where the JSON document and the table go.
#[derive(Args, Debug)]
struct Output {
    /// Write the JSON document to FILE (`-` or none: stdout, then without the table).
    /// Times in microseconds; `latency`, `first_byte` and `connect` each carry `hdr`:
    /// the histogram in HdrHistogram's V2 compressed form, base64, values in ns
    /// (`histogram_unit`), for `keepwire bench merge` and HdrHistogram's tools. Put
    /// --json last or write --json=FILE: a bare word after it is taken as its FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Write the table to FILE (`-` or none: stdout; the default unless --json goes
    /// to stdout).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    report: Option<String>,
}

const MERGE_JSON: &str = "Write the merged JSON document (the form `keepwire bench --json` \
    writes, mergeable again) to FILE, given as --json=FILE (`-` or none: stdout, then without \
    the table)";
const MERGE_REPORT: &str = "Write the table to FILE, given as --report=FILE (`-` or none: \
    stdout; the default unless --json goes to stdout)";

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Merge several loaders' `--json` documents into one report: counts summed,
    /// histograms added (so percentiles are those of all requests, never averaged),
    /// throughput over the union of the loaders' wall-clock windows (time when any
    /// loader ran, overlaps once). All must come from this keepwire version and have
    /// loaded the same URL, method and protocol. The result can be merged again.
    ///
    /// --json and --report take a FILE only as `--json=FILE` here, so that
    /// `--json a.json b.json` reads both files (and never overwrites a.json).
    #[command(mut_arg("json", |a| a.require_equals(true).help(MERGE_JSON)),
              mut_arg("report", |a| a.require_equals(true).help(MERGE_REPORT)))]
    Merge {
        /// `keepwire bench --json` documents.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
}

const EXAMPLES: &str = "\
Examples:
  keepwire bench -c 50 -d 10s http://127.0.0.1:8080/
  keepwire bench -c 1 -n 1000 --keep-alive off http://127.0.0.1:8080/   # TIME_WAIT
  keepwire bench -c 10 --pipeline 16 http://127.0.0.1:8080/
  keepwire bench -c 10 --rate 20000 -d 30s http://127.0.0.1:8080/      # open loop
  keepwire bench -c 50 -d 10s ws://127.0.0.1:8080/ws                   # WebSocket echo
  keepwire bench -c 100 -d 10s --sse http://127.0.0.1:8080/events      # SSE delivery
  keepwire bench -c 50 -d 30s --start-at 2026-12-07T08:00:00Z --json=a.json URL
  keepwire bench merge a.json b.json                                   # several loaders

Errors by kind: connect (could not connect), reset (RST or a write to a closed
socket), timeout (no progress within --timeout), truncated (the connection ended
inside a response), closed (it ended before the response began, without the server
announcing Connection: close: a stale keep-alive connection; with --ws or --sse, the
server closed or ended the stream), parse (not HTTP, or a frame breaking RFC 6455),
refused (no WebSocket upgrade, or no 200 text/event-stream).
Requests left unanswered after a response with Connection: close were not processed
(R8.4); they are sent again and counted as re-sent, not as errors.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// Turns the flags into a plan, or says what is wrong with them.
fn plan(args: &BenchArgs, given: &str) -> Result<(Plan, String, Target), String> {
    let (url, ws) = match given.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("ws") => (format!("http://{rest}"), true),
        Some((s, rest)) if s.eq_ignore_ascii_case("wss") => (format!("https://{rest}"), true),
        _ => (given.to_string(), args.ws),
    };
    let url = parse_url(&url)?;
    // HTTP/3 sends the same multiplexed request as HTTP/2.
    let http2 = args.http2 || args.http2_prior_knowledge || args.http3;
    if ws && http2 {
        return Err("--ws runs over HTTP/1.1 upgrades: --http2 does not apply".into());
    }
    if (ws || args.sse) && (args.method != "GET" || args.keep_alive == OnOff::Off) {
        return Err(
            "--ws and --sse send GET on held connections: -X and --keep-alive off do not apply"
                .into(),
        );
    }
    let https = url.scheme_str() == Some("https");
    if args.http3 && !https {
        return Err("--http3 needs an https:// URL (QUIC carries TLS 1.3)".into());
    }
    if args.http2 && !https {
        crate::common::deprecated("--http2 on http://", "--http2-prior-knowledge");
    }
    let authority = url.authority().ok_or("invalid URL: no host")?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr: SocketAddr = (authority.host().trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", authority.host()))?
        .next()
        .ok_or_else(|| format!("{} has no address", authority.host()))?;
    let method: Method = args
        .method
        .parse()
        .map_err(|_| format!("invalid method {:?}", args.method))?;
    if method == Method::CONNECT {
        return Err("CONNECT cannot be benchmarked (it opens a tunnel)".into());
    }
    let keep_alive = args.keep_alive == OnOff::On;
    if http2 && !keep_alive {
        return Err("--http2 multiplexes one connection: --keep-alive off does not apply".into());
    }
    if !keep_alive && args.pipeline > 1 {
        return Err(
            "--pipeline needs --keep-alive on (a closed connection carries one request)".into(),
        );
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(format!(
            "--rate must be a positive number of requests per second, not {r}"
        ));
    }
    let mut headers = HeaderMap::new();
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static(AGENT));
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    for (name, value) in args.headers.iter().cloned() {
        if name == http::header::CONNECTION
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::CONTENT_LENGTH
        {
            return Err(format!(
                "-H {name}: set by keepwire bench itself (use --keep-alive, --http1.0, --body)"
            ));
        }
        headers.insert(name, value);
    }
    let body = match (&args.body, &args.body_file) {
        (Some(text), _) => Bytes::from(text.clone()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(path).map_err(|e| format!("--body-file {}: {e}", path.display()))?,
        ),
        (None, None) => Bytes::new(),
    };
    let version = if args.http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let request = bench::request_bytes(&method, &url, &headers, &body, version, keep_alive)?;
    let stop = match args.requests {
        Some(n) => Stop::Requests(n),
        None => Stop::Duration(args.duration.unwrap_or(Duration::from_secs(10))),
    };
    if let Stop::Duration(d) = stop
        && d.is_zero()
    {
        return Err("--duration must be more than zero".into());
    }
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| t as usize,
    );
    let threads = threads.min(args.connections as usize);
    let mode = match (keep_alive, args.http10, http2) {
        _ if ws => format!(
            "WebSocket echo, {}-byte text messages, {} in flight per connection",
            args.message_size, args.pipeline
        ),
        _ if args.sse => "Server-Sent Events".to_string(),
        _ if args.http3 => format!("HTTP/3 over QUIC, {} streams per connection", args.pipeline),
        (_, _, true) if https => {
            format!("HTTP/2 over TLS, {} streams per connection", args.pipeline)
        }
        (_, _, true) => format!("HTTP/2 (h2c), {} streams per connection", args.pipeline),
        (false, _, _) => "new connection per request".to_string(),
        (true, true, _) => "HTTP/1.0 keep-alive".to_string(),
        (true, false, _) => "keep-alive".to_string(),
    };
    let length = match stop {
        Stop::Requests(n) if ws => format!("{n} messages"),
        Stop::Requests(n) if args.sse => format!("{n} events"),
        Stop::Requests(n) => format!("{n} requests"),
        Stop::Duration(d) => humantime::format_duration(d).to_string(),
    };
    let mut summary = format!(
        "keepwire bench {given} ({addr}): {} connections, {threads} threads, {length}, {mode}",
        args.connections
    );
    if args.pipeline > 1 && !http2 && !ws {
        summary.push_str(&format!(", pipeline {}", args.pipeline));
    }
    if let Some(r) = args.rate {
        summary.push_str(&format!(", open loop at {r} req/s"));
    }
    let mut plan = Plan::default();
    plan.addr = addr;
    plan.request = request;
    plan.method = method;
    plan.connections = args.connections as usize;
    plan.threads = threads;
    plan.stop = stop;
    plan.pipeline = args.pipeline as usize;
    plan.close_each = !keep_alive;
    plan.rate = args.rate;
    plan.timeout = args.timeout;
    plan.start_at = args.start_at;
    plan.http2 = http2.then(|| bench::Http2Request {
        uri: url.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    plan.tls = if https { Some(tls(args, &url)?) } else { None };
    plan.http3 = args.http3;
    if ws {
        let text = "keepwire bench ".bytes().cycle();
        let message = text.take(args.message_size as usize).collect::<Vec<u8>>();
        plan.ws = Some(bench::WsRequest::new(&url, &headers, message.into(), true)?);
    }
    if args.sse {
        plan.sse = Some(bench::SseRequest::new(&url, &headers)?);
    }
    let protocol = match (ws, args.sse, http2, https, args.http10) {
        (true, ..) => "ws",
        (_, true, ..) => "sse",
        _ if args.http3 => "h3",
        (_, _, true, true, _) => "h2",
        (_, _, true, false, _) => "h2c",
        (.., true) => "http/1.0",
        _ => "http/1.1",
    };
    let target = Target::new(given, plan.method.as_str(), protocol);
    Ok((plan, summary, target))
}

/// `--start-at`: RFC 3339 in UTC, `+DURATION` from now, or `@SECONDS`
/// since the Unix epoch; at most 2 s in the past (a loader that comes up
/// late must not start alone and still report as if on time).
fn parse_start_at(s: &str) -> Result<SystemTime, String> {
    let now = SystemTime::now();
    let at = if let Some(d) = s.strip_prefix('+') {
        now + parse_duration(d)?
    } else if let Some(secs) = s.strip_prefix('@') {
        let secs: f64 = secs
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("{s:?}: @ takes seconds since the Unix epoch"))?;
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs)
    } else {
        humantime::parse_rfc3339_weak(s).map_err(|e| {
            format!(
                "{s:?}: {e}; give RFC 3339 in UTC (2026-12-07T08:00:00Z), +DURATION or @SECONDS"
            )
        })?
    };
    if let Ok(late) = now.duration_since(at)
        && late > Duration::from_secs(2)
    {
        return Err(format!(
            "{} is {} in the past (now {}): give a time ahead, e.g. +10s",
            humantime::format_rfc3339_millis(at),
            humantime::format_duration(Duration::from_millis(late.as_millis() as u64)),
            humantime::format_rfc3339_millis(now),
        ));
    }
    Ok(at)
}

/// TLS for an `https://` run: verified against the default roots, a CA
/// file, or not at all.
fn tls(args: &BenchArgs, url: &http::Uri) -> Result<bench::Tls, String> {
    let config = if args.insecure {
        keepwire::client::tls::insecure_config()
    } else if let Some(path) = &args.cacert {
        keepwire::client::tls::config_with_ca(path).map_err(|e| format!("--cacert {e}"))?
    } else {
        keepwire::client::tls::default_config()
    };
    let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
    let server_name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host}: not a name TLS can verify: {e}"))?;
    Ok(bench::Tls::new(config, server_name))
}

/// Runs `keepwire bench` (or `keepwire bench merge`).
pub fn run(args: BenchArgs) -> Result<(), String> {
    if let Some(BenchCommand::Merge { files, out }) = &args.merge {
        return merge(files, out);
    }
    let given = args.url.clone().unwrap_or_default();
    let report_to = args.out.report_to()?;
    let (plan, summary, target) = plan(&args, &given)?;
    if plan.tls.is_some() {
        // A certificate or ALPN problem would otherwise show up only as
        // "connect errors": fail first, with the cause, as curl does.
        bench::preflight(&plan).map_err(|e| crate::common::cert_hint(format!("{given}: {e}")))?;
    }
    let addr = plan.addr;
    let stop = plan.stop;
    let unit = match (&plan.ws, &plan.sse) {
        (Some(_), _) => "messages",
        (_, Some(_)) => "events",
        _ => "requests",
    };
    let progress = Arc::new(Progress::default());
    let interrupt = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(interrupt.clone());
    if args.out.json.as_deref() != Some("-") {
        eprintln!("{summary}");
    }
    if let Some(at) = args.start_at {
        eprintln!(
            "keepwire: waiting to start at {}",
            humantime::format_rfc3339_millis(at)
        );
    }
    let worker = {
        let (progress, interrupt) = (progress.clone(), interrupt.clone());
        std::thread::Builder::new()
            .name("bench".into())
            .spawn(move || bench::run(plan, progress, interrupt))
            .map_err(|e| format!("cannot start: {e}"))?
    };
    let bar = (!args.no_progress).then(|| progress_bar(stop));
    let mut start = None;
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(bar) = &bar
            && !progress.started()
        {
            if args.start_at.is_some() {
                bar.set_message("waiting for --start-at");
            }
        } else if let Some(bar) = &bar {
            let start = *start.get_or_insert_with(std::time::Instant::now);
            let (done, errors) = progress.counts();
            let secs = start.elapsed().as_secs_f64();
            match stop {
                Stop::Requests(_) => bar.set_position(done + errors),
                Stop::Duration(d) => bar.set_position(start.elapsed().min(d).as_millis() as u64),
            }
            bar.set_message(format!(
                "{done} {unit}, {errors} errors, {:.0}/s",
                done as f64 / secs.max(1e-3)
            ));
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = worker
        .join()
        .map_err(|_| "the load generator crashed".to_string())?
        .map_err(|e| format!("cannot run: {e}"))?;
    if let (Some(at), Some(w)) = (args.start_at, report.windows.first()) {
        let late = w.start.duration_since(at).unwrap_or_default();
        eprintln!(
            "keepwire: started at {}, {:.1}ms after --start-at",
            humantime::format_rfc3339_micros(w.start),
            late.as_secs_f64() * 1000.0
        );
    }
    let mut doc = Document::new(report, unit, target, &summary);
    doc.start_at = args.start_at;
    args.out.write(&doc, report_to.as_deref())?;
    if interrupt.load(Ordering::Relaxed) {
        eprintln!("keepwire: interrupted; the report covers the run so far");
    }
    if doc.report.responses == 0 {
        let why = doc
            .report
            .errors
            .iter()
            .map(|(k, n)| format!("{n} {}", k.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let only_connect = doc.report.errors.keys().all(|k| *k == FailureKind::Connect);
        let hint = if only_connect && !doc.report.errors.is_empty() {
            format!(": could not connect to {addr} (is the server up?)")
        } else {
            String::new()
        };
        return Err(format!("no request succeeded ({why}){hint}"));
    }
    Ok(())
}

/// `keepwire bench merge FILE...`: reads each document, adds them up in
/// order, and prints the merged report as a single run's.
fn merge(files: &[PathBuf], out: &Output) -> Result<(), String> {
    /// A document is a few kilobytes; refuse anything absurd before reading it.
    const MAX_BYTES: u64 = 64 << 20;
    let report_to = out.report_to()?;
    let mut merged: Option<Document> = None;
    for path in files {
        let name = path.display();
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{name}: {e}"))?
            .len();
        if size > MAX_BYTES {
            return Err(format!("{name}: {size} bytes is not a bench document"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
        let doc = Document::from_json(&text).map_err(|e| format!("{name}: {e}"))?;
        match &mut merged {
            None => merged = Some(doc),
            Some(m) => m
                .merge(&doc)
                .map_err(|e| format!("cannot merge {name} with {}: {e}", files[0].display()))?,
        }
    }
    let mut doc = merged.ok_or("no files to merge")?;
    if files.len() > 1 {
        doc.summary = format!("{} reports merged; the first: {}", files.len(), doc.summary);
    }
    if out.json.as_deref() != Some("-") {
        let t = &doc.target;
        eprintln!(
            "keepwire bench merge: {} documents, {} loaders, {} {} over {}",
            files.len(),
            doc.report.windows.len(),
            t.method,
            t.url,
            t.protocol
        );
    }
    out.write(&doc, report_to.as_deref())
}

impl Output {
    /// Where the table goes: `--report`'s FILE or stdout, unless the JSON
    /// takes stdout (then nowhere, unless --report names a file).
    fn report_to(&self) -> Result<Option<String>, String> {
        match (self.json.as_deref(), self.report.as_deref()) {
            (Some("-"), Some("-")) => {
                Err("--json and --report cannot both go to stdout: give one of them a FILE".into())
            }
            (Some("-"), None) => Ok(None),
            (_, r) => Ok(Some(r.unwrap_or("-").to_string())),
        }
    }

    fn write(&self, doc: &Document, report_to: Option<&str>) -> Result<(), String> {
        if let Some(dest) = &self.json {
            emit(dest, &(doc.to_json() + "\n"))?;
        }
        match report_to {
            Some(dest) => emit(dest, &doc.table()),
            None => Ok(()),
        }
    }
}

/// Writes `text` to stdout (`-`) or to the file `dest`.
fn emit(dest: &str, text: &str) -> Result<(), String> {
    if dest == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => crate::common::stdout_closed(),
                _ => format!("stdout: {e}"),
            })
    } else {
        std::fs::write(dest, text).map_err(|e| format!("{dest}: {e}"))
    }
}

/// Ctrl-C stops sending; the report still prints.
fn watch_ctrl_c(flag: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("signal".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    flag.store(true, Ordering::Relaxed);
                }
            });
        });
}

fn progress_bar(stop: Stop) -> ProgressBar {
    let (len, template) = match stop {
        Stop::Requests(n) => (n, "{bar:30} {pos}/{len} requests  {msg}"),
        Stop::Duration(d) => (d.as_millis() as u64, "{bar:30} {elapsed}  {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
