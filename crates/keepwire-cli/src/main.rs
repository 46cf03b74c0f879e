//! The `keepwire` command: a thin clap layer over the `keepwire` library.

mod bench;
mod check;
mod common;
mod get;
mod lab;
mod proxy;
mod serve;
mod tls;
mod ws;

use clap::{Parser, Subcommand};

/// HTTP connection management done right: an origin server, a pooled client,
/// a proxy, a load generator and a lab that measures why each rule exists.
#[derive(Parser, Debug)]
#[command(name = "keepwire", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an HTTP/1.x origin server (embedded demo site, static files, or a
    /// fixed response).
    Serve(serve::ServeArgs),
    /// Fetch URLs, or a page and its sub-resources, through one pooled client.
    ///
    /// Shows per request the connection it used, new or reused, retries and
    /// the timing phases (R1.2); loads a page serial, parallel, persistent or
    /// pipelined (R4); draws a waterfall as HTML.
    Get(get::GetArgs),
    /// Run a forward and/or reverse HTTP/1.x proxy that follows every hop
    /// rule (never a dumb proxy).
    Proxy(proxy::ProxyArgs),
    /// Check a server's connection management against the rules (R1–R10):
    /// one line per check with PASS / FAIL / WARN / SKIP and the evidence.
    Check(check::CheckArgs),
    /// Load-test a URL and show what the connections cost: throughput, latency
    /// percentiles, connect and first-byte times, errors by kind, connections
    /// opened, requests per connection, TIME_WAIT sockets left behind (R2.4).
    Bench(bench::BenchArgs),
    /// The chapter's experiments, measured over an emulated wide-area link
    /// (RTT 50 ms by default): page loads by strategy, Nagle and delayed ACK,
    /// slow start, TIME_WAIT, a dumb proxy, reset loss, stale connections,
    /// head-of-line blocking (HTTP/1.1 vs HTTP/2), TLS handshakes, real-time
    /// delivery (polling, long polling, SSE, WebSocket); each beside the
    /// round-trip model, with a verdict and an HTML report.
    Lab(lab::LabArgs),
    /// Talk to a WebSocket server (ws://, wss://) like websocat: stdin lines out
    /// as text messages, messages received on stdout, `-v` shows the handshake.
    Ws(ws::WsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Get(args)) => get::run(args),
        Some(Command::Proxy(args)) => proxy::run(args),
        Some(Command::Check(args)) => check::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Lab(args)) => lab::run(args),
        Some(Command::Ws(args)) => ws::run(args),
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            println!();
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keepwire: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
