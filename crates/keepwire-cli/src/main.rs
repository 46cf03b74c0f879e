//! The `keepwire` command: a thin clap layer over the `keepwire` library.

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
enum Command {}

fn main() {
    let cli = Cli::parse();
    if cli.command.is_none() {
        use clap::CommandFactory;
        Cli::command().print_help().expect("stdout is writable");
        println!();
    }
}
