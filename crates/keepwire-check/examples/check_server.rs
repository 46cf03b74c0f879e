//! Runs the HTTP/1 checks against a server from your own program, as a CI
//! step would:
//!
//! ```text
//! cargo run -p keepwire-check --example check_server -- http://127.0.0.1:8080/ R10
//! ```
//!
//! The first argument is the server's URL, the second an optional rule
//! prefix (`R5`, `R10.1`). Without a URL the example starts keepwire's own
//! server on a free port and checks that. The exit status is non-zero if a
//! check failed.

use std::process::ExitCode;

use keepwire::{Body, Server};
use keepwire_check::{Options, Target, Verdict};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut _local = None;
    let url = match args.next() {
        Some(url) => url,
        None => {
            let server = Server::builder()
                .listen("127.0.0.1:0".parse().expect("an address"))
                .bind()
                .expect("a free port on 127.0.0.1")
                .spawn(|_req| async { http::Response::new(Body::from("hello\n")) });
            let url = format!("http://{}/", server.local_addr());
            _local = Some(server);
            url
        }
    };
    let mut options = Options::default();
    if let Some(rule) = args.next() {
        options = options.only(rule);
    }
    println!("checking {url}");
    let report = match keepwire_check::run(&Target::server(url), &options).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cannot check: {e}");
            return ExitCode::FAILURE;
        }
    };
    for c in &report.checks {
        println!("{:6} {} {}: {}", c.rule, c.verdict, c.name, c.evidence);
    }
    println!(
        "{} passed, {} failed, {} warnings, {} skipped",
        report.count(Verdict::Pass),
        report.count(Verdict::Fail),
        report.count(Verdict::Warn),
        report.count(Verdict::Skip)
    );
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
