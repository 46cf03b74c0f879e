//! `keepwire get`: fetch URLs (or a page and its sub-resources) through one
//! pooled client and show what the client did with its connections, request
//! by request: which connection, new or reused, retries, and the phases of
//! R1.2 (queued, DNS, connect, send, wait for the first byte, download).
//!
//! `--strategy` reproduces the chapter's four ways to load a page (R4.1–R4.4)
//! with one [`Client`] configured for each; `--waterfall` draws the result.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use http::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, Uri, Version};
use http_body_util::BodyExt;
use keepwire::client::{ClientConfig, ClientMetrics, PipelinedResponse, Timings};
use keepwire::{Body, BodyError, Client, ClientError, RequestMeta};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::common::parse_duration;
use crate::page;
use crate::waterfall;

const AGENT: &str = concat!("keepwire/", env!("CARGO_PKG_VERSION"));

/// Options of `keepwire get`.
#[derive(Args, Debug)]
#[command(after_long_help = COLUMNS_HELP)]
pub struct GetArgs {
    /// URLs to fetch (`http://` only; `host:port/path` means `http://host:port/path`).
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Print each request and response head on stderr, like `curl -v`: `> ` lines were
    /// sent, `< ` lines received, `* ` lines say which connection and what happened.
    #[arg(short, long)]
    verbose: bool,
    /// Print one JSON document on stdout instead of the table: `requests` (one object
    /// per request, in request order, with its connection, phases and error) and
    /// `summary` (requests, connections opened, wall time, ...).
    #[arg(long)]
    json: bool,
    /// Print the response bodies on stdout, in request order, after all requests end
    /// (the table then goes to stderr). By default bodies are read and counted, not shown.
    #[arg(long, conflicts_with_all = ["json", "output"])]
    body: bool,
    /// Write the response bodies to FILE, in request order.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Load each URL as a browser loads a page: fetch it, then every same-origin
    /// sub-resource it references (`<img src>`, `<script src>`, `<link href>` with
    /// rel stylesheet, icon, preload, modulepreload or manifest), once each.
    #[arg(long)]
    page: bool,
    /// How requests use connections (R4). With `--page` the page itself always comes
    /// first: its body names the sub-resources.
    #[arg(long, value_enum, default_value_t = Strategy::Persistent)]
    strategy: Strategy,
    /// Use HTTP/2: the same as --strategy multiplexed. http:// URLs speak it with
    /// prior knowledge (h2c); https:// URLs ask for it by ALPN and use HTTP/1.1 if
    /// the server picks that. (https:// with the default strategy also asks
    /// for HTTP/2 first, like a browser; serial, parallel and pipelined are
    /// HTTP/1.1 strategies and offer only http/1.1.)
    #[arg(long, conflicts_with_all = ["strategy", "http1"])]
    http2: bool,
    /// https://: offer only HTTP/1.1 by ALPN (never HTTP/2).
    #[arg(long = "http1.1", id = "http1")]
    http1: bool,
    /// https://: trust only the certificates in this PEM file.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    cacert: Option<PathBuf>,
    /// https://: do not verify the server's certificate (for self-signed test
    /// servers; gives up the authentication TLS exists for).
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Connections per origin at most (parallel, persistent, pipelined; serial uses one).
    #[arg(short = 'n', long, default_value_t = 6, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: u16,
    /// Pipelined strategy: requests sent ahead on a connection before their responses.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    depth: u16,
    /// Write a waterfall of the requests to FILE.html: a self-contained page (inline
    /// SVG) with one row per request, a bar per phase, rows grouped by connection.
    #[arg(long, value_name = "FILE.html")]
    waterfall: Option<PathBuf>,
    /// Time allowed to connect, to write a request, and to wait for each response read
    /// (`30`, `30s`, `500ms`).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
}

const COLUMNS_HELP: &str = "\
Output (one line per request, then a summary line; all times in milliseconds):
  #        request number (the page is #1; sub-resources follow in document order)
  status   response status, or ERR
  size     body bytes received
  conn     client connection id (R1.1); `-v` and --json give its 4-tuple
  reuse    new: this request opened the connection; reused: it had carried requests
  rt       retries on a fresh connection after a stale reused one failed (R8.3)
  queued   waiting for a connection slot (the per-origin cap, R4.2) or for its turn
  dns      name resolution ('-' on a reused connection)
  connect  TCP handshake ('-' on a reused connection)
  send     writing the request
  wait     request written -> first response byte (TTFB)
  recv     first response byte -> body complete
  total    request issued -> body complete

Errors (bad URL, connection refused, https://, a truncated body, ...) are printed
on stderr as one line naming the URL and the cause; the other URLs are still
fetched, and the exit status is 1.

Examples:
  keepwire get http://127.0.0.1:8080/
  keepwire get --page --strategy serial http://127.0.0.1:8080/
  keepwire get --page --strategy pipelined -n 1 --waterfall w.html http://127.0.0.1:8080/";

/// The chapter's ways to load a page (R4.1–R4.4).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// One request at a time, each on a new connection with `Connection: close` (R4.1).
    Serial,
    /// Up to N requests at once, each on its own new connection, none reused (R4.2).
    Parallel,
    /// Up to N requests at once on connections kept open and reused (R4.3);
    /// `-n 1` is one persistent connection.
    Persistent,
    /// Sub-resources split across N persistent connections, each sending up to
    /// --depth requests without waiting for the responses (R4.4, R7).
    Pipelined,
    /// Every request at once as a stream on one HTTP/2 connection per origin
    /// (h2c with prior knowledge, R4.5).
    Multiplexed,
}

impl Strategy {
    /// As on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Serial => "serial",
            Strategy::Parallel => "parallel",
            Strategy::Persistent => "persistent",
            Strategy::Pipelined => "pipelined",
            Strategy::Multiplexed => "multiplexed",
        }
    }
}

/// What a request was for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A URL from the command line.
    Url,
    /// A page loaded with `--page`.
    Page,
    /// A sub-resource of a page.
    Resource,
}

/// The connection that carried a request (R1.1).
#[derive(Debug, Clone, Serialize)]
pub struct ConnInfo {
    /// Client connection id.
    pub id: u64,
    /// Our address.
    pub local: String,
    /// The server's address.
    pub peer: String,
    /// What TLS agreed on (https only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsJson>,
}

/// A TLS connection's version, cipher suite and ALPN protocol.
#[derive(Debug, Clone, Serialize)]
pub struct TlsJson {
    /// e.g. `TLSv1_3`.
    pub version: &'static str,
    /// e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
    /// `h2`, `http/1.1`, or none (no ALPN: HTTP/1.1).
    pub alpn: Option<&'static str>,
}

/// Phase durations in ms (R1.2); they follow each other from the request's start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phases {
    /// Waiting for a connection (slot, or turn on a pipelined connection).
    pub queued: f64,
    /// Name resolution; `None` on a reused connection.
    pub dns: Option<f64>,
    /// TCP handshake; `None` on a reused connection.
    pub connect: Option<f64>,
    /// Writing the request.
    pub send: f64,
    /// Request written to first response byte (TTFB).
    pub wait: f64,
    /// First response byte to body complete.
    pub download: f64,
}

/// One request's result.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Request number, from 1, in the order requests were made known.
    pub index: usize,
    /// Absolute URL.
    pub url: String,
    /// Why it was fetched.
    pub kind: Kind,
    /// Response status, if a response head arrived.
    pub status: Option<u16>,
    /// Response version.
    pub version: Option<String>,
    /// Response `Content-Type`.
    pub content_type: Option<String>,
    /// Body bytes received.
    pub size: u64,
    /// Connection that carried it.
    pub connection: Option<ConnInfo>,
    /// The connection had carried requests before.
    pub reused: Option<bool>,
    /// Requests the connection had answered before this one.
    pub conn_request_index: Option<u64>,
    /// Retries on a fresh connection (R8.3).
    pub retries: u32,
    /// Sent with `client.pipeline`.
    pub pipelined: bool,
    /// When the request was issued, ms after the first request.
    pub start_ms: f64,
    /// Phase durations, if a response head arrived.
    pub phases_ms: Option<Phases>,
    /// Request issued to first response byte, ms.
    pub first_byte_ms: Option<f64>,
    /// Request issued to body complete (or failure), ms.
    pub total_ms: f64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl Record {
    fn failed(index: usize, url: String, kind: Kind, start_ms: f64, error: String) -> Self {
        Record {
            index,
            url,
            kind,
            status: None,
            version: None,
            content_type: None,
            size: 0,
            connection: None,
            reused: None,
            conn_request_index: None,
            retries: 0,
            pipelined: false,
            start_ms,
            phases_ms: None,
            first_byte_ms: None,
            total_ms: 0.0,
            error: Some(error),
        }
    }

    /// End of the request, ms after the first request.
    pub fn end_ms(&self) -> f64 {
        self.start_ms + self.total_ms
    }
}

/// The run as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Strategy used.
    pub strategy: Strategy,
    /// `--connections`.
    pub max_connections: u16,
    /// `--depth` (pipelined only).
    pub depth: Option<u16>,
    /// `--page`.
    pub page: bool,
    /// URLs as given.
    pub urls: Vec<String>,
    /// Requests made (failed ones included).
    pub requests: usize,
    /// Requests with a complete response.
    pub succeeded: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Connections the client opened.
    pub connections_opened: u64,
    /// Requests carried by a reused connection.
    pub reused: usize,
    /// Retries (R8.3), pipelined resends included.
    pub retries: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// First request issued to last request ended, ms.
    pub wall_ms: f64,
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    requests: &'a [Record],
    summary: &'a Summary,
}

/// Settings every request task needs.
struct Opts {
    /// Print nothing (the lab measures through this code).
    quiet: bool,
    verbose: bool,
    keep_bodies: bool,
    /// Requests carry `Connection: close`.
    close: bool,
    depth: usize,
    t0: Instant,
}

/// A request to make.
struct Job {
    index: usize,
    url: Uri,
    kind: Kind,
}

/// A finished request: its record, its body if kept, its `-v` text.
struct Fetched {
    record: Record,
    body: Option<Bytes>,
    verbose: String,
}

/// Runs `keepwire get`.
pub fn run(mut args: GetArgs) -> Result<(), String> {
    if args.http2 {
        args.strategy = Strategy::Multiplexed;
    }
    if let Some(path) = &args.cacert {
        keepwire::client::tls::config_with_ca(path).map_err(|e| format!("--cacert {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(run_async(args))
}

/// The client for a strategy (R4.1–R4.4).
fn client_config(strategy: Strategy, n: usize, timeout: Duration) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.connect_timeout = timeout;
    config.write_timeout = timeout;
    config.response_timeout = timeout;
    // Requests wait for a slot as long as the ones ahead take; those are
    // bounded by the timeouts above.
    config.pool.wait_timeout = Duration::from_secs(24 * 3600);
    match strategy {
        Strategy::Serial => {
            config.pool.max_per_origin = 1;
            config.pool.reuse = false;
            config.close_after_each = true;
        }
        Strategy::Parallel => {
            config.pool.max_per_origin = n;
            config.pool.reuse = false;
            // R5.3: a request that is the last on its connection says so.
            config.close_after_each = true;
        }
        Strategy::Persistent | Strategy::Pipelined => {
            config.pool.max_per_origin = n;
        }
        Strategy::Multiplexed => {
            config.http2_prior_knowledge = true;
        }
    }
    config
}

async fn run_async(args: GetArgs) -> Result<(), String> {
    // Files are opened before any request: a bad path fails at once.
    let body_file = args
        .output
        .as_ref()
        .map(|p| std::fs::File::create(p).map_err(|e| format!("-o {}: {e}", p.display())))
        .transpose()?;
    let waterfall_file = args
        .waterfall
        .as_ref()
        .map(|p| std::fs::File::create(p).map_err(|e| format!("--waterfall {}: {e}", p.display())))
        .transpose()?;
    let mut run = execute(&args, false).await;
    let wall_ms = run.records.iter().map(Record::end_ms).fold(0.0, f64::max);
    let summary = summarize(&run, &args, wall_ms, run.client.metrics());
    output(&args, &mut run, &summary, body_file, waterfall_file)
}

/// Loads `url` as a page with `strategy`, printing nothing: the lab's
/// page-load experiment, measured by the same code as `keepwire get --page`.
/// `https://` is not verified (the lab's servers are self-signed), and
/// speaks HTTP/2 only for the multiplexed strategy: the others are the
/// chapter's HTTP/1.1 strategies.
pub async fn load_page_quiet(
    url: Uri,
    strategy: Strategy,
    connections: u16,
    depth: u16,
    timeout: Duration,
) -> (Vec<Record>, Summary) {
    let insecure = url.scheme_str() == Some("https");
    let http1 = strategy != Strategy::Multiplexed;
    let args = GetArgs {
        urls: vec![url.to_string()],
        verbose: false,
        json: true,
        body: false,
        output: None,
        page: true,
        strategy,
        http2: false,
        http1,
        cacert: None,
        insecure,
        connections,
        depth,
        waterfall: None,
        timeout,
    };
    let run = execute(&args, true).await;
    let wall_ms = run.records.iter().map(Record::end_ms).fold(0.0, f64::max);
    let summary = summarize(&run, &args, wall_ms, run.client.metrics());
    (run.records, summary)
}

/// Makes every request `args` asks for; records come back sorted.
async fn execute(args: &GetArgs, quiet: bool) -> Run {
    let n = usize::from(args.connections);
    let mut config = client_config(args.strategy, n, args.timeout);
    config.http1_only = args.http1
        || matches!(
            args.strategy,
            Strategy::Serial | Strategy::Parallel | Strategy::Pipelined
        );
    if args.insecure {
        config.tls = Some(keepwire::client::tls::insecure_config());
    } else if let Some(path) = &args.cacert {
        // Checked in `run` before any request; a failure here cannot happen.
        config.tls = keepwire::client::tls::config_with_ca(path).ok();
    }
    let opts = Arc::new(Opts {
        quiet,
        verbose: args.verbose,
        keep_bodies: args.body || args.output.is_some(),
        close: config.close_after_each,
        depth: usize::from(args.depth),
        t0: Instant::now(),
    });
    let mut run = Run {
        client: Client::new(config),
        opts,
        strategy: args.strategy,
        connections: n,
        records: Vec::new(),
        bodies: Vec::new(),
        next_index: 0,
        table: Table {
            enabled: !args.json,
            to_stderr: args.body,
            header_done: false,
        },
    };

    if args.page {
        for text in &args.urls {
            let index = run.next();
            match page::parse_url(text) {
                Ok(uri) => run.load_page(index, uri).await,
                Err(e) => run.reject(index, text, Kind::Page, e),
            }
        }
    } else {
        let mut jobs = Vec::new();
        for text in &args.urls {
            let index = run.next();
            match page::parse_url(text) {
                Ok(url) => jobs.push(Job {
                    index,
                    url,
                    kind: Kind::Url,
                }),
                Err(e) => run.reject(index, text, Kind::Url, e),
            }
        }
        run.fetch_all(jobs).await;
    }
    run.records.sort_by_key(|r| r.index);
    run
}

/// Prints the table or JSON, writes the waterfall and bodies.
fn output(
    args: &GetArgs,
    run: &mut Run,
    summary: &Summary,
    body_file: Option<std::fs::File>,
    waterfall_file: Option<std::fs::File>,
) -> Result<(), String> {
    let summary = summary.clone();
    if args.json {
        let doc = JsonDoc {
            requests: &run.records,
            summary: &summary,
        };
        let text = serde_json::to_string_pretty(&doc).map_err(|e| format!("JSON: {e}"))?;
        stdout(&format!("{text}\n"));
    } else {
        run.table.summary(&summary);
    }

    if let (Some(path), Some(mut file)) = (&args.waterfall, waterfall_file) {
        let html = waterfall::render(&run.records, &summary);
        file.write_all(html.as_bytes())
            .map_err(|e| format!("--waterfall {}: {e}", path.display()))?;
        if !args.json {
            stderr(&format!(
                "keepwire get: waterfall written to {}\n",
                path.display()
            ));
        }
    }
    if run.opts.keep_bodies {
        run.bodies.sort_by_key(|(i, _)| *i);
        let write = |w: &mut dyn std::io::Write| -> std::io::Result<()> {
            for (_, b) in &run.bodies {
                w.write_all(b)?;
            }
            w.flush()
        };
        match (body_file, &args.output) {
            (Some(mut file), Some(path)) => {
                write(&mut file).map_err(|e| format!("-o {}: {e}", path.display()))?
            }
            _ => {
                // A reader that went away (`| head`) is not an error.
                let _ = write(&mut std::io::stdout().lock());
            }
        }
    }

    if summary.failed > 0 {
        Err(format!(
            "get: {} of {} requests failed",
            summary.failed, summary.requests
        ))
    } else {
        Ok(())
    }
}

fn summarize(run: &Run, args: &GetArgs, wall_ms: f64, metrics: &ClientMetrics) -> Summary {
    use std::sync::atomic::Ordering::Relaxed;
    let failed = run.records.iter().filter(|r| r.error.is_some()).count();
    Summary {
        strategy: args.strategy,
        max_connections: if matches!(args.strategy, Strategy::Serial | Strategy::Multiplexed) {
            1
        } else {
            args.connections
        },
        depth: (args.strategy == Strategy::Pipelined).then_some(args.depth),
        page: args.page,
        urls: args.urls.clone(),
        requests: run.records.len(),
        succeeded: run.records.len() - failed,
        failed,
        connections_opened: metrics.connections_opened.load(Relaxed),
        reused: run
            .records
            .iter()
            .filter(|r| r.reused == Some(true))
            .count(),
        retries: metrics.retries.load(Relaxed),
        bytes: run.records.iter().map(|r| r.size).sum(),
        wall_ms: round3(wall_ms),
    }
}

struct Run {
    client: Client,
    opts: Arc<Opts>,
    strategy: Strategy,
    connections: usize,
    records: Vec<Record>,
    bodies: Vec<(usize, Bytes)>,
    next_index: usize,
    table: Table,
}

impl Run {
    fn next(&mut self) -> usize {
        self.next_index += 1;
        self.next_index
    }

    /// A URL that cannot be requested.
    fn reject(&mut self, index: usize, text: &str, kind: Kind, error: String) {
        let start = ms(self.opts.t0.elapsed());
        self.finish(Fetched {
            record: Record::failed(index, text.to_string(), kind, start, error),
            body: None,
            verbose: String::new(),
        });
    }

    /// Reports and keeps one finished request.
    fn finish(&mut self, f: Fetched) {
        if self.opts.verbose && !f.verbose.is_empty() {
            stderr(&f.verbose);
        }
        if let Some(e) = &f.record.error
            && !self.opts.quiet
        {
            stderr(&format!("keepwire get: {}: {e}\n", f.record.url));
        }
        self.table.line(&f.record);
        if self.opts.keep_bodies
            && let Some(b) = f.body
        {
            self.bodies.push((f.record.index, b));
        }
        self.records.push(f.record);
    }

    /// `--page`: the page, then its same-origin sub-resources by the strategy.
    async fn load_page(&mut self, index: usize, url: Uri) {
        let job = Job {
            index,
            url: url.clone(),
            kind: Kind::Page,
        };
        let f = fetch_one(self.client.clone(), self.opts.clone(), job, true).await;
        let html = match (&f.record.error, &f.body) {
            (None, Some(b)) if is_html(f.record.content_type.as_deref()) => Some(b.clone()),
            _ => None,
        };
        let content_type = f.record.content_type.clone();
        let failed = f.record.error.is_some();
        self.finish(f);
        let Some(html) = html else {
            if !failed {
                stderr(&format!(
                    "keepwire get: {url}: not an HTML page (content-type {}), no sub-resources fetched\n",
                    content_type.as_deref().unwrap_or("none")
                ));
            }
            return;
        };
        let found = page::sub_resources(&html, &url);
        if self.opts.verbose {
            let mut note = format!(
                "* {url}: {} same-origin sub-resources to fetch\n",
                found.fetch.len()
            );
            for (reference, why) in &found.skipped {
                let _ = writeln!(note, "* skipped {reference}: {why}");
            }
            stderr(&note);
        }
        let jobs: Vec<Job> = found
            .fetch
            .into_iter()
            .map(|url| Job {
                index: self.next(),
                url,
                kind: Kind::Resource,
            })
            .collect();
        self.fetch_all(jobs).await;
    }

    /// Fetches `jobs` by the strategy.
    async fn fetch_all(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        match self.strategy {
            Strategy::Serial => {
                for job in jobs {
                    let f = fetch_one(self.client.clone(), self.opts.clone(), job, false).await;
                    self.finish(f);
                }
            }
            Strategy::Parallel | Strategy::Persistent | Strategy::Multiplexed => {
                // All at once: the pool's cap (N) and queue decide who waits,
                // as in a browser.
                let mut set = JoinSet::new();
                let mut names = HashMap::new();
                for job in jobs {
                    let name = (job.index, job.url.to_string(), job.kind);
                    let handle = set.spawn(fetch_one(
                        self.client.clone(),
                        self.opts.clone(),
                        job,
                        false,
                    ));
                    names.insert(handle.id(), name);
                }
                self.join(set, names).await;
            }
            Strategy::Pipelined => {
                let mut set = JoinSet::new();
                let mut names = HashMap::new();
                for chunk in split_for_pipelining(jobs, self.connections) {
                    let list: Vec<_> = chunk
                        .iter()
                        .map(|j| (j.index, j.url.to_string(), j.kind))
                        .collect();
                    let handle = set.spawn(pipeline_chunk(
                        self.client.clone(),
                        self.opts.clone(),
                        chunk,
                    ));
                    names.insert(handle.id(), list);
                }
                while let Some(res) = set.join_next_with_id().await {
                    match res {
                        Ok((_, fetched)) => {
                            for f in fetched {
                                self.finish(f);
                            }
                        }
                        Err(e) => {
                            for (index, url, kind) in names.remove(&e.id()).unwrap_or_default() {
                                self.lost(index, url, kind, &e);
                            }
                        }
                    }
                }
            }
        }
    }

    async fn join(
        &mut self,
        mut set: JoinSet<Fetched>,
        mut names: HashMap<tokio::task::Id, (usize, String, Kind)>,
    ) {
        while let Some(res) = set.join_next_with_id().await {
            match res {
                Ok((_, f)) => self.finish(f),
                Err(e) => {
                    if let Some((index, url, kind)) = names.remove(&e.id()) {
                        self.lost(index, url, kind, &e);
                    }
                }
            }
        }
    }

    /// A request task that did not finish (it cannot panic by design; this
    /// keeps the promise of a message rather than a crash if it ever does).
    fn lost(&mut self, index: usize, url: String, kind: Kind, e: &tokio::task::JoinError) {
        let start = ms(self.opts.t0.elapsed());
        self.finish(Fetched {
            record: Record::failed(index, url, kind, start, format!("internal error: {e}")),
            body: None,
            verbose: String::new(),
        });
    }
}

/// Splits jobs per origin, then each origin's list into at most `n`
/// contiguous runs (one pipelined connection each).
fn split_for_pipelining(jobs: Vec<Job>, n: usize) -> Vec<Vec<Job>> {
    let mut origins: Vec<((String, String, u16), Vec<Job>)> = Vec::new();
    for job in jobs {
        let o = page::origin(&job.url);
        match origins.iter_mut().find(|(k, _)| *k == o) {
            Some((_, list)) => list.push(job),
            None => origins.push((o, vec![job])),
        }
    }
    let mut out = Vec::new();
    for (_, list) in origins {
        let per = list.len().div_ceil(n.max(1));
        let mut list = list.into_iter().peekable();
        while list.peek().is_some() {
            out.push(list.by_ref().take(per).collect());
        }
    }
    out
}

fn is_html(content_type: Option<&str>) -> bool {
    match content_type {
        None => true,
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("text/html")
                || essence.eq_ignore_ascii_case("application/xhtml+xml")
        }
    }
}

/// The request for `url`, with the head fields we send spelled out so `-v`
/// shows them.
fn build_request(url: &Uri, close: bool) -> Result<Request<Body>, String> {
    let host = url.authority().map_or("", |a| a.as_str());
    let mut req = Request::get(url.clone())
        .header(
            HOST,
            HeaderValue::from_str(host).map_err(|e| format!("invalid host: {e}"))?,
        )
        .header(USER_AGENT, AGENT)
        .header(ACCEPT, "*/*");
    if close {
        req = req.header(CONNECTION, "close");
    }
    req.body(Body::empty())
        .map_err(|e| format!("invalid request: {e}"))
}

/// The `> ` lines of a request head.
fn request_head(req: &Request<Body>) -> String {
    let mut s = format!(
        "> {} {} HTTP/1.1\n",
        req.method(),
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    for (name, value) in req.headers() {
        let _ = writeln!(s, "> {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    s.push_str(">\n");
    s
}

/// The `< ` lines of a response head.
fn response_head(version: Version, status: http::StatusCode, headers: &HeaderMap) -> String {
    let mut s = format!(
        "< {:?} {} {}\n",
        version,
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in headers {
        let _ = writeln!(s, "< {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    s.push_str("<\n");
    s
}

fn conn_note(index: usize, meta: &RequestMeta) -> String {
    let mut s = if meta.reused {
        format!(
            "* #{index} connection #{} reused (request {} on it) {} -> {}\n",
            meta.conn.id,
            meta.conn_request_index + 1,
            meta.conn.local,
            meta.conn.peer
        )
    } else {
        let mut s = format!(
            "* #{index} connection #{} new {} -> {}\n",
            meta.conn.id, meta.conn.local, meta.conn.peer
        );
        if let Some(t) = meta.conn.tls {
            let alpn = t.alpn.unwrap_or("none (HTTP/1.1)");
            let _ = writeln!(s, "* #{index} TLS {} {}, ALPN {alpn}", t.version, t.cipher);
        }
        s
    };
    if meta.retries > 0 {
        let _ = writeln!(
            s,
            "* #{index} retried {} time(s) on a fresh connection (R8.3)",
            meta.retries
        );
    }
    s
}

/// Phases from the library's timings (each measured from the request's
/// start) and our `complete`.
fn phases(t: &Timings, reused: bool, complete: Duration) -> Phases {
    let mut at = t.queued;
    let (dns, connect) = if reused {
        (None, None)
    } else {
        (t.dns, t.connect)
    };
    let dns = dns.map(|d| {
        at += d;
        ms(d)
    });
    let connect = connect.map(|d| {
        at += d;
        ms(d)
    });
    let written = t.written.max(at);
    let first = t.first_byte.max(written);
    let complete = complete.max(first);
    Phases {
        queued: round3(ms(t.queued)),
        dns: dns.map(round3),
        connect: connect.map(round3),
        send: round3(ms(written - at)),
        wait: round3(ms(first - written)),
        download: round3(ms(complete - first)),
    }
}

fn record_from_meta(
    index: usize,
    url: &Uri,
    kind: Kind,
    start_ms: f64,
    meta: &RequestMeta,
    complete: Duration,
) -> Record {
    Record {
        index,
        url: url.to_string(),
        kind,
        status: None,
        version: None,
        content_type: None,
        size: 0,
        connection: Some(ConnInfo {
            id: meta.conn.id,
            local: meta.conn.local.to_string(),
            peer: meta.conn.peer.to_string(),
            tls: meta.conn.tls.map(|t| TlsJson {
                version: t.version,
                cipher: t.cipher,
                alpn: t.alpn,
            }),
        }),
        reused: Some(meta.reused),
        conn_request_index: Some(meta.conn_request_index),
        retries: meta.retries,
        pipelined: false,
        start_ms: round3(start_ms),
        phases_ms: Some(phases(&meta.timings, meta.reused, complete)),
        first_byte_ms: Some(round3(ms(meta.timings.first_byte))),
        total_ms: round3(ms(complete.max(meta.timings.first_byte))),
        error: None,
    }
}

/// One request through the pool; reads the whole body (counting it, keeping
/// it if asked) and measures when it completed.
async fn fetch_one(client: Client, opts: Arc<Opts>, job: Job, keep: bool) -> Fetched {
    let keep = keep || opts.keep_bodies;
    let url = job.url.to_string();
    let req = match build_request(&job.url, opts.close) {
        Ok(r) => r,
        Err(e) => {
            let start = ms(opts.t0.elapsed());
            return Fetched {
                record: Record::failed(job.index, url, job.kind, start, e),
                body: None,
                verbose: String::new(),
            };
        }
    };
    let mut verbose = String::new();
    let sent_head = if opts.verbose {
        request_head(&req)
    } else {
        String::new()
    };
    let start = Instant::now();
    let start_ms = ms(start.duration_since(opts.t0));
    let resp = client.request(req).await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let mut record = Record::failed(job.index, url, job.kind, start_ms, client_cause(&e));
            record.start_ms = round3(start_ms);
            record.total_ms = round3(ms(start.elapsed()));
            if opts.verbose {
                verbose = format!(
                    "{sent_head}* #{} {}: {}\n",
                    job.index,
                    record.url,
                    record.error.as_deref().unwrap_or("")
                );
            }
            return Fetched {
                record,
                body: None,
                verbose,
            };
        }
    };
    let head_at = start.elapsed();
    let (parts, mut body) = resp.into_parts();
    let meta = parts.extensions.get::<RequestMeta>().copied();
    if opts.verbose {
        if let Some(m) = &meta {
            verbose.push_str(&conn_note(job.index, m));
        }
        verbose.push_str(&sent_head);
        verbose.push_str(&response_head(parts.version, parts.status, &parts.headers));
    }
    let mut size = 0u64;
    let mut kept = keep.then(BytesMut::new);
    let body_error = loop {
        match body.frame().await {
            None => break None,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    size += data.len() as u64;
                    if let Some(k) = kept.as_mut() {
                        k.extend_from_slice(&data);
                    }
                }
            }
            Some(Err(e)) => break Some(body_cause(&e)),
        }
    };
    let complete = start.elapsed();
    let mut record = match &meta {
        Some(m) => record_from_meta(job.index, &job.url, job.kind, start_ms, m, complete),
        None => {
            // Every response of the client carries its meta; if one ever
            // does not, the request still gets a row.
            let mut r = Record::failed(job.index, url, job.kind, start_ms, String::new());
            r.error = None;
            r.first_byte_ms = Some(round3(ms(head_at)));
            r.total_ms = round3(ms(complete));
            r
        }
    };
    record.status = Some(parts.status.as_u16());
    record.version = Some(format!("{:?}", parts.version));
    record.content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    record.size = size;
    record.error = body_error;
    if opts.verbose {
        match &record.error {
            Some(e) => {
                let _ = writeln!(verbose, "* #{} {}: {e}", job.index, record.url);
            }
            None => {
                let _ = writeln!(
                    verbose,
                    "* #{} {size} body bytes, complete after {:.2} ms",
                    job.index, record.total_ms
                );
            }
        }
    }
    Fetched {
        record,
        body: kept.map(BytesMut::freeze),
        verbose,
    }
}

/// One pipelined connection's share of the jobs (R7): `client.pipeline`
/// sends them down one persistent connection, `--depth` at a time.
async fn pipeline_chunk(client: Client, opts: Arc<Opts>, jobs: Vec<Job>) -> Vec<Fetched> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut requests = Vec::new();
    let mut sent = Vec::new();
    for job in jobs {
        match build_request(&job.url, opts.close) {
            Ok(req) => {
                let head = if opts.verbose {
                    request_head(&req)
                } else {
                    String::new()
                };
                requests.push(req);
                sent.push((job, head));
            }
            Err(e) => {
                let start = ms(opts.t0.elapsed());
                out.push(Fetched {
                    record: Record::failed(job.index, job.url.to_string(), job.kind, start, e),
                    body: None,
                    verbose: String::new(),
                });
            }
        }
    }
    let start = Instant::now();
    let start_ms = ms(start.duration_since(opts.t0));
    let results: Vec<PipelinedResponse> = client.pipeline(requests, opts.depth).await;
    let ended = start.elapsed();
    for ((job, head), result) in sent.into_iter().zip(results) {
        out.push(pipelined_record(job, head, result, start_ms, ended, &opts));
    }
    out
}

fn pipelined_record(
    job: Job,
    sent_head: String,
    result: PipelinedResponse,
    start_ms: f64,
    ended: Duration,
    opts: &Opts,
) -> Fetched {
    let mut verbose = String::new();
    match result {
        Err(e) => {
            let mut record = Record::failed(
                job.index,
                job.url.to_string(),
                job.kind,
                round3(start_ms),
                client_cause(&e),
            );
            record.pipelined = true;
            record.total_ms = round3(ms(ended));
            if opts.verbose {
                verbose = format!(
                    "{sent_head}* #{} {}: {}\n",
                    job.index,
                    record.url,
                    record.error.as_deref().unwrap_or("")
                );
            }
            Fetched {
                record,
                body: None,
                verbose,
            }
        }
        Ok((resp, meta)) => {
            // The library reads a pipelined body whole right after its head.
            let complete = meta.timings.complete.unwrap_or(meta.timings.first_byte);
            let mut record =
                record_from_meta(job.index, &job.url, job.kind, start_ms, &meta, complete);
            record.pipelined = true;
            record.status = Some(resp.status().as_u16());
            record.version = Some(format!("{:?}", resp.version()));
            record.content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            record.size = resp.body().len() as u64;
            if opts.verbose {
                verbose.push_str(&conn_note(job.index, &meta));
                verbose.push_str(&sent_head);
                verbose.push_str(&response_head(
                    resp.version(),
                    resp.status(),
                    resp.headers(),
                ));
                let _ = writeln!(
                    verbose,
                    "* #{} {} body bytes, pipelined, complete after {:.2} ms",
                    job.index, record.size, record.total_ms
                );
            }
            Fetched {
                record,
                body: opts.keep_bodies.then(|| resp.into_body()),
                verbose,
            }
        }
    }
}

/// A one-line cause for a failed request.
fn client_cause(e: &ClientError) -> String {
    match e {
        ClientError::InvalidUrl(m) => format!("invalid URL: {m}"),
        ClientError::Resolve(io) => format!("cannot resolve the host name: {io}"),
        ClientError::Connect(io) => format!("cannot connect: {io}"),
        ClientError::Io(io) => format!("connection failed: {io}"),
        ClientError::Protocol(p) if p.is_truncated() => format!("truncated response: {p}"),
        ClientError::Protocol(p) => format!("protocol error: {p}"),
        other => other.to_string(),
    }
}

fn body_cause(e: &BodyError) -> String {
    match e {
        BodyError::Protocol(p) if p.is_truncated() => format!("truncated body: {p}"),
        BodyError::Protocol(p) => format!("body: protocol error: {p}"),
        BodyError::Closed => "truncated body: the connection closed before the body ended".into(),
        BodyError::Source(s) => format!("body: {s}"),
        other @ (BodyError::TooLarge(_) | BodyError::TimedOut(_)) => other.to_string(),
    }
}

/// The per-request table.
struct Table {
    enabled: bool,
    to_stderr: bool,
    header_done: bool,
}

impl Table {
    fn emit(&self, text: &str) {
        if self.to_stderr {
            stderr(text);
        } else {
            stdout(text);
        }
    }

    fn line(&mut self, r: &Record) {
        if !self.enabled {
            return;
        }
        let mut s = String::new();
        if !self.header_done {
            self.header_done = true;
            let _ = writeln!(
                s,
                "{:>4} {:>6} {:>9} {:>5} {:<6} {:>2} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}  url",
                "#",
                "status",
                "size",
                "conn",
                "reuse",
                "rt",
                "queued",
                "dns",
                "connect",
                "send",
                "wait",
                "recv",
                "total"
            );
        }
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let status = match (r.status, &r.error) {
            (Some(s), None) => s.to_string(),
            (Some(s), Some(_)) => format!("{s}!"),
            (None, _) => "ERR".to_string(),
        };
        let conn = r
            .connection
            .as_ref()
            .map_or("-".to_string(), |c| format!("#{}", c.id));
        let reuse = match r.reused {
            Some(true) => "reused",
            Some(false) => "new",
            None => "-",
        };
        let p = r.phases_ms;
        let _ = write!(
            s,
            "{:>4} {:>6} {:>9} {:>5} {:<6} {:>2} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}  {}",
            r.index,
            status,
            r.size,
            conn,
            reuse,
            r.retries,
            opt(p.map(|p| p.queued)),
            opt(p.and_then(|p| p.dns)),
            opt(p.and_then(|p| p.connect)),
            opt(p.map(|p| p.send)),
            opt(p.map(|p| p.wait)),
            opt(p.map(|p| p.download)),
            format!("{:.2}", r.total_ms),
            r.url
        );
        if let Some(e) = &r.error {
            let _ = write!(s, "  ({e})");
        }
        s.push('\n');
        self.emit(&s);
    }

    fn summary(&mut self, s: &Summary) {
        let outcome = if s.failed > 0 {
            format!("{} ok, {} failed", s.succeeded, s.failed)
        } else {
            format!("{} ok", s.succeeded)
        };
        let depth = s.depth.map_or(String::new(), |d| format!(", depth {d}"));
        let plural = |n: u64, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        self.emit(&format!(
            "{} ({outcome}), {} opened, {} reused, {}, {} body bytes, wall {:.2} ms [{}, {}{depth}]\n",
            plural(s.requests as u64, "request", "requests"),
            plural(s.connections_opened, "connection", "connections"),
            s.reused,
            plural(s.retries, "retry", "retries"),
            s.bytes,
            s.wall_ms,
            s.strategy.name(),
            if s.strategy == Strategy::Serial {
                "one connection at a time".to_string()
            } else {
                format!(
                    "up to {}",
                    plural(u64::from(s.max_connections), "connection", "connections")
                )
            },
        ));
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not a reason to panic.
fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes to stderr, ignoring failures.
fn stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(i: usize, url: &str) -> Job {
        Job {
            index: i,
            url: url.parse().unwrap(),
            kind: Kind::Resource,
        }
    }

    #[test]
    fn pipelining_splits_per_origin_into_contiguous_runs() {
        let jobs = (1..=7)
            .map(|i| job(i, &format!("http://a/{i}")))
            .chain([job(8, "http://b/x")])
            .collect();
        let chunks = split_for_pipelining(jobs, 3);
        let idx: Vec<Vec<usize>> = chunks
            .iter()
            .map(|c| c.iter().map(|j| j.index).collect())
            .collect();
        assert_eq!(idx, [vec![1, 2, 3], vec![4, 5, 6], vec![7], vec![8]]);
    }

    #[test]
    fn phases_follow_each_other() {
        let t = Timings {
            queued: Duration::from_millis(1),
            dns: Some(Duration::from_millis(2)),
            connect: Some(Duration::from_millis(3)),
            written: Duration::from_millis(7),
            first_byte: Duration::from_millis(10),
            ..Timings::default()
        };
        let p = phases(&t, false, Duration::from_millis(15));
        assert_eq!(
            (p.queued, p.dns, p.connect, p.send, p.wait, p.download),
            (1.0, Some(2.0), Some(3.0), 1.0, 3.0, 5.0)
        );
        let p = phases(&t, true, Duration::from_millis(15));
        assert_eq!((p.dns, p.connect, p.send), (None, None, 6.0));
    }

    #[test]
    fn html_content_types() {
        assert!(is_html(Some("text/html; charset=utf-8")));
        assert!(is_html(Some("TEXT/HTML")));
        assert!(is_html(None));
        assert!(!is_html(Some("text/css")));
    }
}
