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

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// HTTP connection management done right: an origin server (serve), a pooled
/// client (get), a proxy (proxy), a conformance checker (check), a load
/// generator (bench), a lab that measures why each rule exists (lab), a
/// WebSocket client (ws), shell completions (completions) and man pages (man).
#[derive(Parser, Debug)]
// No command is a usage error (help on stderr, exit 2), as `keepwire check`.
#[command(name = "keepwire", version, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an origin server (embedded demo site, static files, or a fixed
    /// response) over HTTP/1.1 and HTTP/2 (h2c with prior knowledge; h2 by
    /// ALPN with TLS; WebSocket also over HTTP/2, RFC 8441).
    Serve(serve::ServeArgs),
    /// Fetch URLs, or a page and its sub-resources, through one pooled client.
    ///
    /// Shows per request the connection it used, new or reused, retries and
    /// the timing phases (R1.2); loads a page serial, parallel, persistent or
    /// pipelined (R4); draws a waterfall as HTML.
    Get(get::GetArgs),
    /// Run a forward and/or reverse proxy that follows every hop rule (never
    /// a dumb proxy): HTTP/1.1 and HTTP/2 on either side, TLS listeners and
    /// upstreams, CONNECT tunnels and upgrades.
    Proxy(proxy::ProxyArgs),
    /// Check a server's or a proxy's connection management against the rules (R1–R10):
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
    /// Print a shell completion script, e.g. `keepwire completions bash >
    /// ~/.local/share/bash-completion/completions/keepwire`.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into DIR (keepwire.1 and keepwire-COMMAND.1 for
    /// each command), or keepwire.1 to stdout without DIR.
    Man {
        /// Directory for the pages (created if missing), e.g.
        /// /usr/local/share/man/man1.
        #[arg(value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// The command line with what only the libraries know: the lab's
/// experiment names (checked, completed and listed in `lab --help`).
fn command() -> clap::Command {
    let ids = keepwire_lab::experiments::ALL.iter().map(|e| e.id);
    let names = clap::builder::PossibleValuesParser::new(ids);
    Cli::command().mut_subcommand("lab", |c| c.mut_arg("names", |a| a.value_parser(names)))
}

fn main() -> std::process::ExitCode {
    quiet_when_stdout_closes();
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Get(args) => get::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Check(args) => check::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Ws(args) => ws::run(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "keepwire", &mut script);
            common::Out::Stdout.write(&String::from_utf8_lossy(&script))
        }
        Command::Man { dir: Some(dir) } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(command(), &dir))
            .map_err(|e| format!("man {}: {e}", dir.display())),
        Command::Man { dir: None } => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(command()).render(&mut page) {
                Ok(()) => common::Out::Stdout.write(&String::from_utf8_lossy(&page)),
                Err(e) => Err(format!("man: {e}")),
            }
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

/// `keepwire ... | head`: a reader that leaves is not a crash. Rust ignores
/// SIGPIPE (so a client that goes away never kills a server), which makes
/// `println!` panic on a closed stdout; end quietly instead, with the
/// status a shell shows for `cat` killed by SIGPIPE (141).
fn quiet_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>();
        if msg.is_some_and(|m| {
            m.starts_with("failed printing to stdout") && m.contains("Broken pipe")
        }) {
            common::stdout_closed();
        }
        default(info)
    }));
}
