//! `keepwire get`: fetch URLs (or a page and its sub-resources) through one
//! pooled client and show what the client did with its connections, request
//! by request: which connection, new or reused, retries, and the phases of
//! R1.2 (queued, DNS, connect, send, wait for the first byte, download).
//!
//! A `text/event-stream` response (Server-Sent Events) has its events
//! printed as they arrive ([`sse`]), unless `--json`, `--body` or `-o`
//! say what stdout is for.
//!
//! `--strategy` reproduces the chapter's ways to load a page (R4.1–R4.5);
//! the loading is `keepwire_lab::load`, the engine the lab measures. This
//! module turns the flags into its settings; [`table`] prints what it did,
//! and `--waterfall` draws it.

mod sse;
mod table;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use http::{HeaderName, HeaderValue};
use keepwire::client::proxy::ProxyConfig;
use keepwire_lab::load::{self, LoadConfig, LoadEvent, Loaded, Record, Strategy, Summary};
use keepwire_lab::load::{RequestSpec, request};
use keepwire_lab::waterfall;

use crate::common::{parse_duration, parse_header};
use table::{Sink, Table, error, stderr, stdout};

/// Options of `keepwire get`.
#[derive(Args, Debug)]
#[command(after_long_help = COLUMNS_HELP)]
pub struct GetArgs {
    /// URLs to fetch (`http://` or `https://`; `host:port/path` means
    /// `http://host:port/path`). Put --json and --report (optional values) last,
    /// or write `--json=FILE`.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Total requests: the URL list repeated until N (default: each URL once).
    #[arg(short = 'n', long = "requests", value_name = "N")]
    requests: Option<usize>,
    /// Connections per origin at most, and URLs in flight at once (default: 1, so
    /// several URLs reuse one connection per origin as curl does; 6 with --page).
    #[arg(short = 'c', long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: Option<u16>,
    /// Print each request and response head on stderr, like `curl -v`: `> ` lines were
    /// sent (over HTTP/2, curl's `* [HTTP/2] [stream] [:pseudo: value]` lines first),
    /// `< ` lines received, `* ` lines say which connection and what happened (over
    /// HTTP/3: the QUIC handshake's time and version, and whether 0-RTT was accepted).
    #[arg(short, long)]
    verbose: bool,
    /// Method (curl's -X): GET, or POST with a body.
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<http::Method>,
    /// Header to send (repeatable): `Name: value` replaces a default of that name
    /// (`Host:` for a virtual host), `Name:` removes a default (curl's -H).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Body, as curl's -d (repeatable, joined with &): POST with Content-Type
    /// application/x-www-form-urlencoded; `@FILE` reads FILE without CR/LF.
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    data: Vec<String>,
    /// Body as is (`@FILE`: the file byte for byte), as curl's --data-binary.
    #[arg(long, value_name = "DATA")]
    data_binary: Vec<String>,
    /// curl's `--json DATA`: POST DATA with Content-Type and Accept
    /// application/json. (Here --json is the output document, as in every command.)
    #[arg(long, value_name = "DATA")]
    json_data: Vec<String>,
    /// HEAD request; print the response head on stdout (curl's -I).
    #[arg(short = 'I', long = "head")]
    head: bool,
    /// Include each response head before its body in the output (curl's -i);
    /// implies --show-body unless -o.
    #[arg(short = 'i', long)]
    include: bool,
    /// Exit 22 on a status of 400 or more, without writing its body (curl's -f).
    #[arg(short = 'f', long)]
    fail: bool,
    /// curl's -s: no table, no error messages (unless -S); what was asked for
    /// (bodies, -o, -w, -i, --json, --report) is still written.
    #[arg(short = 's', long)]
    silent: bool,
    /// With -s: still print error messages (curl's -S).
    #[arg(short = 'S', long)]
    show_error: bool,
    /// Follow redirects (301/302/303 turn a POST into a GET, as curl).
    #[arg(short = 'L', long = "location")]
    follow: bool,
    /// With -L: redirects followed at most; one more is exit 47.
    #[arg(long, default_value_t = 50, value_name = "N")]
    max_redirs: u32,
    /// After each request print FORMAT on stdout with curl's variables: %{http_code},
    /// %{time_namelookup} .. %{time_total} (seconds, from the request's start),
    /// %{size_download}, %{size_header}, %{num_connects}, %{num_redirects},
    /// %{url_effective}, %{remote_ip}, %{remote_port}, %{local_ip}, %{local_port},
    /// %{http_version}, %{content_type}, %{exitcode}; `\n` escapes. `@FILE` reads it.
    #[arg(short = 'w', long = "write-out", value_name = "FORMAT")]
    write_out: Option<String>,
    /// Forward proxy (`http://host:port`): http:// requests in absolute-form,
    /// https:// through CONNECT. Default: http_proxy (lowercase only),
    /// HTTPS_PROXY, ALL_PROXY, minus NO_PROXY, as curl; `-x ""` for none.
    #[arg(short = 'x', long, value_name = "URL")]
    proxy: Option<String>,
    /// Hosts that go direct (comma-separated; `*` for all), instead of NO_PROXY.
    #[arg(long, value_name = "LIST")]
    noproxy: Option<String>,
    /// Print one JSON document instead of the table (stdout, or FILE): `requests`
    /// (one object per request, with its connection, phases and error) and `summary`.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<PathBuf>,
    /// Write the table (a line per request and the summary) to FILE (`-`: stdout).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    report: Option<PathBuf>,
    /// Write a HAR 1.2 file (HTTP Archive) of the requests, for browser devtools.
    #[arg(long, value_name = "FILE")]
    har: Option<PathBuf>,
    /// Print the response bodies on stdout, in request order, after all requests end
    /// (the table then goes to stderr). By default bodies are read and counted, not shown.
    #[arg(long, conflicts_with_all = ["output"])]
    show_body: bool,
    #[arg(long, hide = true, conflicts_with_all = ["output"])]
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
    #[arg(long, value_enum, default_value_t = StrategyArg::Persistent)]
    strategy: StrategyArg,
    /// Negotiate HTTP/2 by ALPN (https://): the same as --strategy multiplexed.
    /// (On http:// it still means --http2-prior-knowledge, for one release.)
    #[arg(long, conflicts_with_all = ["strategy", "http1", "http2_prior_knowledge"])]
    http2: bool,
    /// Speak HTTP/2 without negotiating (h2c on http://), as curl spells it.
    #[arg(long, conflicts_with_all = ["strategy", "http1"])]
    http2_prior_knowledge: bool,
    /// https://: HTTP/3 over QUIC first, TCP raced 200 ms later and used if QUIC
    /// fails (curl's --http3); `Alt-Svc` answers are honoured.
    #[arg(long, conflicts_with_all = ["http1", "http2_prior_knowledge", "http3_only"])]
    http3: bool,
    /// https://: HTTP/3 only; a QUIC failure is the request's error (curl's --http3-only).
    #[arg(long, conflicts_with_all = ["http1", "http2_prior_knowledge"])]
    http3_only: bool,
    /// With --http3 or --http3-only: on QUIC resumption, send idempotent requests
    /// (GET, HEAD, ...) in 0-RTT early data (RFC 8470); others wait for the handshake.
    #[arg(long)]
    early_data: bool,
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
    /// Pipelined strategy: requests sent ahead on a connection before their responses.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    depth: u16,
    /// Write a waterfall of the requests to FILE.html: a self-contained page (inline
    /// SVG) with one row per request, a bar per phase, rows grouped by connection.
    #[arg(long, value_name = "FILE.html")]
    waterfall: Option<PathBuf>,
    /// Time allowed to connect, to write a request, and to wait for each response read
    /// (`30`, `30s`, `500ms`); running out is exit 28.
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
  connect  TCP (and TLS) handshake, or the QUIC handshake over HTTP/3 ('-' on a reused
           connection)
  send     writing the request
  wait     request written -> first response byte (TTFB)
  recv     first response byte -> body complete
  total    request issued -> body complete

Errors (bad URL, connection refused, a truncated body, ...) are printed on stderr
as one line naming the URL, the cause and what to try; the other URLs are still
fetched. The exit status is curl's, for the last failed request: 3 bad URL, 5 proxy
not resolved, 6 host not resolved, 7 cannot connect, 18 body cut short, 22 HTTP
status >= 400 with -f, 26 cannot read -d @FILE, 28 timeout, 35 TLS handshake,
47 too many redirects, 52 no response, 56 receive failed or CONNECT refused,
60 certificate not verified.

Server-Sent Events: a text/event-stream response has each event's data printed on
stdout as the event arrives (one line per data line; -v adds its id and type on
stderr), unless --json, --show-body, -i, -I, -w or -o is given; its table row
follows when the stream ends.

Examples:
  keepwire get http://127.0.0.1:8080/ http://127.0.0.1:8080/a.css
  keepwire get -f -w '%{http_code} %{time_total}\\n' -d a=1 http://127.0.0.1:8080/echo
  keepwire get -x http://127.0.0.1:3128 https://example.com/ --har run.har
  keepwire get http://127.0.0.1:8080/events
  keepwire get --page --strategy serial http://127.0.0.1:8080/
  keepwire get --page --strategy pipelined -c 1 --waterfall w.html http://127.0.0.1:8080/";

/// The chapter's ways to load a page (R4.1–R4.5).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    /// One request at a time, each on a new connection with `Connection: close` (R4.1).
    Serial,
    /// Up to N (-c) requests at once, each on its own new connection, none reused (R4.2).
    Parallel,
    /// Up to N (-c) requests at once on connections kept open and reused (R4.3);
    /// `-c 1` is one persistent connection.
    Persistent,
    /// Sub-resources split across N (-c) persistent connections, each sending up to
    /// --depth requests without waiting for the responses (R4.4, R7).
    Pipelined,
    /// Every request at once as a stream on one HTTP/2 connection per origin
    /// (R4.5; h2c with prior knowledge for http://, ALPN h2 for https://).
    Multiplexed,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Strategy {
        match s {
            StrategyArg::Serial => Strategy::Serial,
            StrategyArg::Parallel => Strategy::Parallel,
            StrategyArg::Persistent => Strategy::Persistent,
            StrategyArg::Pipelined => Strategy::Pipelined,
            StrategyArg::Multiplexed => Strategy::Multiplexed,
        }
    }
}

/// Ends the process with curl's exit `code` after `message` on stderr.
fn exit(code: u8, message: &str) -> ! {
    error(&format!("keepwire get: {message}\n"));
    std::process::exit(i32::from(code))
}

/// The request each URL gets, from -X, -H, -d, --data-binary, --json-data, -I, -L.
fn request_spec(args: &GetArgs) -> RequestSpec {
    let mut spec = RequestSpec::default();
    let mut parts = Vec::new();
    for (list, binary) in [
        (&args.data, false),
        (&args.data_binary, true),
        (&args.json_data, true),
    ] {
        for d in list {
            parts.push(request::data(d, binary).unwrap_or_else(|e| exit(26, &format!("{e}"))));
        }
    }
    if !parts.is_empty() {
        spec.body = Some(request::join_data(parts));
    }
    if !args.json_data.is_empty() {
        for name in [http::header::CONTENT_TYPE, http::header::ACCEPT] {
            spec.headers
                .push((name, Some(HeaderValue::from_static("application/json"))));
        }
    }
    for h in &args.headers {
        match h.trim_end().strip_suffix(':').filter(|n| !n.contains(':')) {
            Some(name) => match HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(n) => spec.headers.push((n, None)),
                Err(_) => exit(2, &format!("-H {h:?}: invalid header name")),
            },
            None => match parse_header(h) {
                Ok((n, v)) => spec.headers.push((n, Some(v))),
                Err(e) => exit(2, &format!("-H: {e}")),
            },
        }
    }
    spec.method = args
        .method
        .clone()
        .or(args.head.then_some(http::Method::HEAD));
    spec.follow = args.follow.then_some(args.max_redirs);
    spec
}

/// The proxies, as curl chooses them: -x, else the environment; --noproxy over NO_PROXY.
fn proxy(args: &GetArgs) -> ProxyConfig {
    let config = match args.proxy.as_deref() {
        Some("") => Ok(ProxyConfig::default()),
        Some(url) => ProxyConfig::all(url),
        None => ProxyConfig::from_env(),
    };
    let config = config.unwrap_or_else(|e| exit(5, &e));
    match &args.noproxy {
        Some(list) => config.no_proxy(list),
        None => config,
    }
}

/// Runs `keepwire get`.
pub fn run(mut args: GetArgs) -> Result<(), String> {
    if args.body {
        crate::common::deprecated("--body", "--show-body");
        args.show_body = true;
    }
    if let Some(j) = args.json.as_ref().and_then(|p| p.to_str())
        && (j.starts_with(['{', '[', '@']))
    {
        exit(
            2,
            "--json takes an output FILE here; send curl's --json DATA with --json-data",
        );
    }
    if args.early_data && !(args.http3 || args.http3_only) {
        exit(
            2,
            "--early-data is QUIC's 0-RTT: give --http3 or --http3-only too",
        );
    }
    if args.silent && !args.show_error {
        table::QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let h2c = args.http2_prior_knowledge
        || (args.http2 && args.urls.iter().any(|u| !u.starts_with("https://")));
    if args.http2 && h2c {
        crate::common::deprecated("--http2 on http://", "--http2-prior-knowledge");
    }
    if let Some(n) = args.requests {
        args.urls = args.urls.iter().cycle().take(n).cloned().collect();
    }
    let show = args.show_body || args.include || args.head;
    let data_out = show || args.write_out.is_some();
    let mut config = LoadConfig::default()
        .strategy(if args.http2 || h2c {
            Strategy::Multiplexed
        } else {
            args.strategy.into()
        })
        .connections(args.connections.unwrap_or(if args.page { 6 } else { 1 }))
        .depth(args.depth)
        .timeout(args.timeout)
        .page(args.page)
        .http1_only(args.http1)
        .http3(
            if args.http3_only {
                keepwire::client::Http3Mode::Only
            } else if args.http3 {
                keepwire::client::Http3Mode::Prefer
            } else {
                keepwire::client::Http3Mode::Off
            },
            args.early_data,
        )
        .keep_bodies(show || args.output.is_some())
        .transcript(args.verbose)
        .request(request_spec(&args))
        .proxy(proxy(&args));
    if args.json.is_none() && !data_out && args.output.is_none() {
        let printer = sse::Printer::new(args.verbose);
        config = config.on_chunk(move |chunk| printer.chunk(chunk));
    }
    if args.insecure {
        config = config.tls(keepwire::client::tls::insecure_config());
    } else if let Some(path) = &args.cacert {
        let tls = keepwire::client::tls::config_with_ca(path)
            .unwrap_or_else(|e| exit(77, &format!("--cacert {e}")));
        config = config.tls(tls);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
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
    let json_out = args.json.as_ref().map(|p| p.as_os_str() == "-");
    let sink = match (&args.report, json_out) {
        (Some(p), _) if p.as_os_str() != "-" => Sink::File(
            std::fs::File::create(p).map_err(|e| format!("--report {}: {e}", p.display()))?,
        ),
        (None, _) if args.silent => Sink::Off,
        (Some(_), _) | (None, None | Some(false)) if data_out => Sink::Stderr,
        (Some(_), _) | (None, None | Some(false)) => Sink::Stdout,
        (None, Some(true)) => Sink::Off,
    };
    let mut table = Table::new(sink);
    let verbose = args.verbose;
    let loaded = rt.block_on(load::load(&args.urls, &config, &mut |event| match event {
        LoadEvent::Done { record, transcript } => {
            if verbose && !transcript.is_empty() {
                stderr(transcript);
            }
            if let Some(e) = &record.error {
                let e = crate::common::cert_hint(format!("{}: {e}", record.url));
                let hint = request::hint(record.exit_code)
                    .filter(|_| record.exit_code != 60)
                    .map_or(String::new(), |h| format!(" ({h})"));
                error(&format!("keepwire get: {e}{hint}\n"));
            }
            table.line(record);
        }
        LoadEvent::NotHtml { url, content_type } => error(&format!(
            "keepwire get: {url}: not an HTML page (content-type {}), no sub-resources fetched\n",
            content_type.unwrap_or("none")
        )),
        LoadEvent::Found { url, found } if verbose => {
            let mut note = format!(
                "* {url}: {} same-origin sub-resources to fetch\n",
                found.fetch.len()
            );
            for (reference, why) in &found.skipped {
                note.push_str(&format!("* skipped {reference}: {why}\n"));
            }
            stderr(&note);
        }
        _ => {}
    }));
    let code = output(&args, &loaded, &mut table, body_file, waterfall_file)?;
    if code != 0 {
        std::process::exit(i32::from(code));
    }
    Ok(())
}

/// Writes the summary or the JSON, the waterfall and HAR, then per request
/// (curl's order) its head (-i, -I), its body and its -w line; returns
/// curl's exit code for the last failed request.
fn output(
    args: &GetArgs,
    loaded: &Loaded,
    table: &mut Table,
    body_file: Option<std::fs::File>,
    waterfall_file: Option<std::fs::File>,
) -> Result<u8, String> {
    let mut summary = loaded.summary.clone();
    if args.fail {
        // curl -f: a status ≥ 400 is a failure (exit 22), so it counts as one.
        let bad = loaded
            .records
            .iter()
            .filter(|r| r.error.is_none() && r.status >= Some(400));
        summary.failed += bad.count();
        summary.succeeded = summary.requests - summary.failed;
    }
    let summary = &summary;
    if let Some(path) = &args.json {
        #[derive(serde::Serialize)]
        struct JsonDoc<'a> {
            requests: &'a [Record],
            summary: &'a Summary,
        }
        let doc = JsonDoc {
            requests: &loaded.records,
            summary,
        };
        let text = serde_json::to_string_pretty(&doc).map_err(|e| format!("JSON: {e}"))?;
        write_file(path, "--json", format!("{text}\n").as_bytes())?;
    }
    table.summary(summary);
    if let (Some(path), Some(mut file)) = (&args.waterfall, waterfall_file) {
        let html = waterfall::render(&loaded.records, summary);
        file.write_all(html.as_bytes())
            .map_err(|e| format!("--waterfall {}: {e}", path.display()))?;
        stderr(&format!(
            "keepwire get: waterfall written to {}\n",
            path.display()
        ));
    }
    if let Some(path) = &args.har {
        let har = load::har::build(&loaded.records, loaded.started);
        let text = serde_json::to_string_pretty(&har).map_err(|e| format!("HAR: {e}"))?;
        write_file(path, "--har", text.as_bytes())?;
    }
    let format = match args.write_out.as_deref() {
        Some(f) => match f.strip_prefix('@') {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|e| format!("-w {path}: {e}"))?)
            }
            None => Some(f.to_string()),
        },
        None => None,
    };
    let mut out: Box<dyn std::io::Write> = match body_file {
        Some(f) => Box::new(f),
        None => Box::new(std::io::stdout().lock()),
    };
    let show = args.show_body || args.include || args.head || args.output.is_some();
    let mut last_code = 0;
    let mut bodies = loaded.bodies.iter().peekable();
    for r in &loaded.records {
        let mut code = r.exit_code;
        let body = bodies.next_if(|(i, _)| *i == r.index).map(|(_, b)| b);
        if args.fail && code == 0 && r.status.is_some_and(|s| s >= 400) {
            code = 22;
            error(&format!(
                "keepwire get: {}: the server returned {} (-f)\n",
                r.url_effective,
                r.status.unwrap_or(0)
            ));
        }
        let mut bytes = Vec::new();
        if (args.include || args.head) && code != 22 && r.status.is_some() {
            bytes.extend(load::writeout::head(r).into_bytes());
        }
        if let (true, 0, Some(b)) = (show && !args.head, code, body) {
            bytes.extend_from_slice(b);
        }
        // A reader that went away (`| head`) is not an error; a file is.
        if out.write_all(&bytes).and_then(|()| out.flush()).is_err() && args.output.is_some() {
            code = 23;
        }
        if let Some(f) = &format {
            stdout(&load::writeout::format(f, r, code));
        }
        if code != 0 {
            last_code = code;
        }
    }
    Ok(last_code)
}

/// Writes `bytes` to `path`, or stdout for `-`.
fn write_file(path: &std::path::Path, flag: &str, bytes: &[u8]) -> Result<(), String> {
    if path.as_os_str() == "-" {
        stdout(&String::from_utf8_lossy(bytes));
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| format!("{flag} {}: {e}", path.display()))
}
