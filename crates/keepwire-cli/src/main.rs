//! The `keepwire` command: a thin clap layer over the `keepwire` library.

mod common;
mod files;
mod proxy;
mod serve;
mod site;

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
    /// Run a forward and/or reverse HTTP/1.x proxy that follows every hop
    /// rule (never a dumb proxy).
    Proxy(proxy::ProxyArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Proxy(args)) => proxy::run(args),
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
