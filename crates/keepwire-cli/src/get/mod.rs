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
use keepwire_lab::load::{self, LoadConfig, LoadEvent, Loaded, Record, Strategy, Summary};
use keepwire_lab::waterfall;

use crate::common::parse_duration;
use table::{Table, stderr, stdout};

/// Options of `keepwire get`.
#[derive(Args, Debug)]
#[command(after_long_help = COLUMNS_HELP)]
pub struct GetArgs {
    /// URLs to fetch (`http://` or `https://`; `host:port/path` means `http://host:port/path`).
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
    #[arg(long, value_enum, default_value_t = StrategyArg::Persistent)]
    strategy: StrategyArg,
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

Server-Sent Events: a text/event-stream response has each event's data printed on
stdout as the event arrives (one line per data line; -v adds its id and type on
stderr), unless --json, --body or -o is given; its table row follows when the
stream ends.

Examples:
  keepwire get http://127.0.0.1:8080/
  keepwire get http://127.0.0.1:8080/events
  keepwire get --page --strategy serial http://127.0.0.1:8080/
  keepwire get --page --strategy pipelined -n 1 --waterfall w.html http://127.0.0.1:8080/";

/// The chapter's ways to load a page (R4.1–R4.5).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
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

/// Runs `keepwire get`.
pub fn run(args: GetArgs) -> Result<(), String> {
    let mut config = LoadConfig::default()
        .strategy(if args.http2 {
            Strategy::Multiplexed
        } else {
            args.strategy.into()
        })
        .connections(args.connections)
        .depth(args.depth)
        .timeout(args.timeout)
        .page(args.page)
        .http1_only(args.http1)
        .keep_bodies(args.body || args.output.is_some())
        .transcript(args.verbose);
    if !args.json && !args.body && args.output.is_none() {
        let printer = sse::Printer::new(args.verbose);
        config = config.on_chunk(move |chunk| printer.chunk(chunk));
    }
    if args.insecure {
        config = config.tls(keepwire::client::tls::insecure_config());
    } else if let Some(path) = &args.cacert {
        let tls =
            keepwire::client::tls::config_with_ca(path).map_err(|e| format!("--cacert {e}"))?;
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
    let mut table = Table::new(!args.json, args.body);
    let verbose = args.verbose;
    let loaded = rt.block_on(load::load(&args.urls, &config, &mut |event| match event {
        LoadEvent::Done { record, transcript } => {
            if verbose && !transcript.is_empty() {
                stderr(transcript);
            }
            if let Some(e) = &record.error {
                stderr(&format!("keepwire get: {}: {e}\n", record.url));
            }
            table.line(record);
        }
        LoadEvent::NotHtml { url, content_type } => stderr(&format!(
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
    output(&args, &loaded, &mut table, body_file, waterfall_file)
}

/// Prints the table's summary or the JSON, writes the waterfall and bodies.
fn output(
    args: &GetArgs,
    loaded: &Loaded,
    table: &mut Table,
    body_file: Option<std::fs::File>,
    waterfall_file: Option<std::fs::File>,
) -> Result<(), String> {
    let summary = &loaded.summary;
    if args.json {
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
        stdout(&format!("{text}\n"));
    } else {
        table.summary(summary);
    }
    if let (Some(path), Some(mut file)) = (&args.waterfall, waterfall_file) {
        let html = waterfall::render(&loaded.records, summary);
        file.write_all(html.as_bytes())
            .map_err(|e| format!("--waterfall {}: {e}", path.display()))?;
        if !args.json {
            stderr(&format!(
                "keepwire get: waterfall written to {}\n",
                path.display()
            ));
        }
    }
    if args.body || args.output.is_some() {
        let write = |w: &mut dyn std::io::Write| -> std::io::Result<()> {
            for (_, b) in &loaded.bodies {
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
