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

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderValue, Method, Version};
use indicatif::{ProgressBar, ProgressStyle};
use keepwire::bench::{self, FailureKind, Plan, Progress, Report, Stop};
use serde_json::{Value, json};

use crate::common::parse_duration;
use keepwire_lab::page::parse_url;

const AGENT: &str = concat!("keepwire-bench/", env!("CARGO_PKG_VERSION"));

/// Options of `keepwire bench`.
#[derive(Args, Debug)]
#[command(after_long_help = EXAMPLES)]
pub struct BenchArgs {
    /// The URL to load (`http://`, `https://`; `ws://`, `wss://` imply --ws;
    /// `host:port/path` means `http://host:port/path`).
    #[arg(value_name = "URL")]
    url: String,
    /// WebSocket echo: each connection upgrades, then sends a message and waits for
    /// its echo, over and over (--pipeline N: N messages in flight); reports
    /// messages/s and round-trip latency.
    #[arg(long, conflicts_with_all = ["http2", "http10", "rate", "body", "body_file"])]
    ws: bool,
    /// Server-Sent Events: each connection holds a text/event-stream open; reports
    /// events/s and each event's latency from the time stamped in its data (JSON
    /// `"t"` or `"ts"`: Unix time in s, ms, µs or ns; same clock: loopback).
    #[arg(long, conflicts_with_all = ["ws", "http2", "http10", "rate", "body", "body_file", "pipeline"])]
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
    /// Event-loop threads; connections are spread over them (default: one per core).
    #[arg(short, long, value_name = "T",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Request method.
    #[arg(short = 'X', long, default_value = "GET", value_name = "METHOD")]
    method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
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
    #[arg(long = "http1.0", conflicts_with = "http2")]
    http10: bool,
    /// Speak HTTP/2 (R4.5): with prior knowledge (h2c) for http://, by ALPN for
    /// https://. --pipeline N then sets the concurrent streams per connection (as
    /// h2load's -m does).
    #[arg(long, conflicts_with = "rate")]
    http2: bool,
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
    /// Print one JSON document on stdout instead of the table (times in microseconds).
    #[arg(long)]
    json: bool,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

const EXAMPLES: &str = "\
Examples:
  keepwire bench -c 50 -d 10s http://127.0.0.1:8080/
  keepwire bench -c 1 -n 1000 --keep-alive off http://127.0.0.1:8080/   # TIME_WAIT
  keepwire bench -c 10 --pipeline 16 http://127.0.0.1:8080/
  keepwire bench -c 10 --rate 20000 -d 30s http://127.0.0.1:8080/      # open loop
  keepwire bench -c 50 -d 10s ws://127.0.0.1:8080/ws                   # WebSocket echo
  keepwire bench -c 100 -d 10s --sse http://127.0.0.1:8080/events      # SSE delivery

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
fn plan(args: &BenchArgs) -> Result<(Plan, String), String> {
    let (url, ws) = match args.url.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("ws") => (format!("http://{rest}"), true),
        Some((s, rest)) if s.eq_ignore_ascii_case("wss") => (format!("https://{rest}"), true),
        _ => (args.url.clone(), args.ws),
    };
    let url = parse_url(&url)?;
    if ws && args.http2 {
        return Err("--ws runs over HTTP/1.1 upgrades: --http2 does not apply".into());
    }
    if (ws || args.sse) && (args.method != "GET" || args.keep_alive == OnOff::Off) {
        return Err(
            "--ws and --sse send GET on held connections: -X and --keep-alive off do not apply"
                .into(),
        );
    }
    let https = url.scheme_str() == Some("https");
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
    if args.http2 && !keep_alive {
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
    for h in &args.headers {
        let (name, value) = crate::common::parse_header(h)?;
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
    let mode = match (keep_alive, args.http10, args.http2) {
        _ if ws => format!(
            "WebSocket echo, {}-byte text messages, {} in flight per connection",
            args.message_size, args.pipeline
        ),
        _ if args.sse => "Server-Sent Events".to_string(),
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
        "keepwire bench {} ({addr}): {} connections, {threads} threads, {length}, {mode}",
        args.url, args.connections
    );
    if args.pipeline > 1 && !args.http2 && !ws {
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
    plan.http2 = args.http2.then(|| bench::Http2Request {
        uri: url.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    plan.tls = if https { Some(tls(args, &url)?) } else { None };
    if ws {
        let text = "keepwire bench ".bytes().cycle();
        let message = text.take(args.message_size as usize).collect::<Vec<u8>>();
        plan.ws = Some(bench::WsRequest::new(&url, &headers, message.into(), true)?);
    }
    if args.sse {
        plan.sse = Some(bench::SseRequest::new(&url, &headers)?);
    }
    Ok((plan, summary))
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

/// Runs `keepwire bench`.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let (plan, summary) = plan(&args)?;
    if plan.tls.is_some() {
        // A certificate or ALPN problem would otherwise show up only as
        // "connect errors": fail first, with the cause, as curl does.
        bench::preflight(&plan).map_err(|e| format!("{}: {e}", args.url))?;
    }
    let stop = plan.stop;
    let unit = match (&plan.ws, &plan.sse) {
        (Some(_), _) => "messages",
        (_, Some(_)) => "events",
        _ => "requests",
    };
    let progress = Arc::new(Progress::default());
    let interrupt = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(interrupt.clone());
    if !args.json {
        eprintln!("{summary}");
    }
    let worker = {
        let (progress, interrupt) = (progress.clone(), interrupt.clone());
        std::thread::Builder::new()
            .name("bench".into())
            .spawn(move || bench::run(plan, progress, interrupt))
            .map_err(|e| format!("cannot start: {e}"))?
    };
    let bar = (!args.no_progress).then(|| progress_bar(stop));
    let start = std::time::Instant::now();
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(bar) = &bar {
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
    if args.json {
        println!("{}", to_json(&report, &summary, unit));
    } else {
        print!("{}", table(&report, unit));
    }
    if interrupt.load(Ordering::Relaxed) {
        eprintln!("keepwire: interrupted; the report covers the run so far");
    }
    if report.responses == 0 {
        let why = report
            .errors
            .iter()
            .map(|(k, n)| format!("{n} {}", k.name()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!("no request succeeded ({why})"));
    }
    Ok(())
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

const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("max", 100.0),
];

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// `812µs`, `12.4ms`, `1.20s`.
fn human(ns: u64) -> String {
    let us = micros(ns);
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn distribution(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let mut parts: Vec<String> = PERCENTILES
        .iter()
        .map(|(name, q)| format!("{name} {}", human(h.value_at_percentile(*q))))
        .collect();
    parts.push(format!("mean {}", human(h.mean() as u64)));
    parts.join("  ")
}

/// The report as a table; `unit` names what was counted (`requests`,
/// `messages` for --ws, `events` for --sse).
fn table(r: &Report, unit: &str) -> String {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<13}{v}\n"));
    let counts = match unit {
        "messages" => format!("{} sent, {} echoed", r.sent, r.responses),
        "events" => format!("{} received", r.responses),
        _ => format!("{} sent, {} responses", r.sent, r.responses),
    };
    let resent = format!(", {} re-sent after Connection: close", r.resent);
    let resent = if unit == "requests" { &resent } else { "" };
    let title = format!("{}{}", unit[..1].to_uppercase(), &unit[1..]);
    line(
        &title,
        format!("{counts}, {} errors{resent}", r.error_total()),
    );
    line(
        "Throughput",
        format!(
            "{:.1} {unit}/s, {:.2} MiB/s read, in {:.2}s",
            r.rate(),
            r.bytes_read as f64 / secs / (1024.0 * 1024.0),
            secs
        ),
    );
    line("Latency", distribution(&r.latency));
    let opening = if unit == "requests" {
        "First byte"
    } else {
        "Handshake"
    };
    line(opening, distribution(&r.first_byte));
    line("Connect", distribution(&r.connect));
    let statuses = r
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    line(
        "Status",
        if statuses.is_empty() {
            "-".into()
        } else {
            statuses
        },
    );
    let errors = FailureKind::ALL
        .iter()
        .filter_map(|k| r.errors.get(k).map(|n| format!("{}: {n}", k.name())))
        .collect::<Vec<_>>()
        .join(", ");
    line(
        "Errors",
        if errors.is_empty() {
            "none".into()
        } else {
            errors
        },
    );
    line(
        "Connections",
        format!(
            "{} opened, {:.1} {unit} per connection on average, {} at most",
            r.connections,
            r.mean_requests_per_connection(),
            r.max_requests_per_connection
        ),
    );
    line(
        "TIME_WAIT",
        match &r.time_wait {
            Ok(tw) => format!(
                "{} client-side sockets (this host closed first), {} server-side (target on this host)",
                tw.client, tw.server
            ),
            Err(e) => e.clone(),
        },
    );
    out
}

fn histogram_json(h: &Histogram<u64>) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("count".into(), json!(h.len()));
    if !h.is_empty() {
        for (name, q) in PERCENTILES {
            map.insert(
                format!("{}_us", name.replace('.', "_")),
                json!(micros(h.value_at_percentile(q))),
            );
        }
        map.insert("mean_us".into(), json!(h.mean() / 1000.0));
        map.insert("min_us".into(), json!(micros(h.min())));
    }
    Value::Object(map)
}

fn to_json(r: &Report, summary: &str, unit: &str) -> Value {
    let errors: serde_json::Map<String, Value> = FailureKind::ALL
        .iter()
        .map(|k| {
            (
                k.name().to_string(),
                json!(r.errors.get(k).copied().unwrap_or(0)),
            )
        })
        .collect();
    let statuses: serde_json::Map<String, Value> = r
        .statuses
        .iter()
        .map(|(s, n)| (s.to_string(), json!(n)))
        .collect();
    let mut doc = json!({
        "summary": summary,
        "unit": unit,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "sent": r.sent,
        "responses": r.responses,
        "errors": errors,
        "error_total": r.error_total(),
        "resent": r.resent,
        "requests_per_s": r.rate(),
        "bytes_read": r.bytes_read,
        "bytes_written": r.bytes_written,
        "statuses": statuses,
        "latency": histogram_json(&r.latency),
        "first_byte": histogram_json(&r.first_byte),
        "connect": histogram_json(&r.connect),
        "connections": r.connections,
        "requests_per_connection": {
            "mean": r.mean_requests_per_connection(),
            "max": r.max_requests_per_connection,
        },
        "time_wait": match &r.time_wait {
            Ok(tw) => json!({"client": tw.client, "server": tw.server}),
            Err(e) => json!({"error": e}),
        },
    });
    // The rate under its own name too (`messages_per_s`, `events_per_s`).
    doc[format!("{unit}_per_s")] = json!(r.rate());
    if unit == "events" {
        doc["bytes_per_event"] = json!(r.bytes_read as f64 / r.responses.max(1) as f64);
    }
    doc
}
