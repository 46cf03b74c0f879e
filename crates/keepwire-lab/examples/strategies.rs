//! Loads the demo site's page by each of the chapter's strategies over an
//! emulated wide-area link and prints what each cost: wall time and
//! connections opened. As root the link is two network namespaces (real
//! kernel TCP); otherwise a loopback relay, and the numbers are approximate.
//!
//! ```text
//! cargo run -p keepwire-lab --example strategies          # RTT 20 ms
//! cargo run -p keepwire-lab --example strategies -- 100   # RTT 100 ms
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use keepwire::{Body, Server};
use keepwire_lab::load::{self, LoadConfig, Strategy};
use keepwire_lab::site::Site;
use keepwire_lab::{Link, LinkSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rtt_ms: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 20,
    };
    let link = Link::new(LinkSpec::default().rtt(Duration::from_millis(rtt_ms)))?;
    println!(
        "link: RTT {rtt_ms} ms, {}{}",
        link.label(),
        link.fallback_reason
            .as_deref()
            .map_or(String::new(), |why| format!(" ({why})"))
    );

    // The demo site on the server side: a page and 12 objects of 512 bytes.
    let ip = link.server.ip;
    let addr = link.server.run(move || async move {
        let site = Site::new(12, 512);
        let server = Server::builder()
            .listen(SocketAddr::new(ip, 0))
            .bind()?
            .spawn(move |req: http::Request<Body>| {
                let site = site.clone();
                async move { site.handle(req).await }
            });
        let addr = server.local_addr();
        // It serves as long as the server side's runtime runs.
        std::mem::forget(server);
        Ok::<_, std::io::Error>(addr)
    })?;
    let url = format!("http://{}/", link.expose(addr));

    println!(
        "{:<12} {:>5} {:>10} {:>12}",
        "strategy", "-n", "wall ms", "connections"
    );
    for (strategy, n) in [
        (Strategy::Serial, 1),
        (Strategy::Parallel, 6),
        (Strategy::Persistent, 1),
        (Strategy::Persistent, 6),
        (Strategy::Pipelined, 1),
        (Strategy::Multiplexed, 1),
    ] {
        let config = LoadConfig::default()
            .strategy(strategy)
            .connections(n)
            .page(true);
        let url = url.clone();
        // Clients run on the client side, so their sockets cross the link.
        let loaded = link
            .client
            .run(move || async move { load::load(&[url], &config, &mut |_| {}).await });
        let s = &loaded.summary;
        println!(
            "{:<12} {n:>5} {:>10.1} {:>12}{}",
            strategy.name(),
            s.wall_ms,
            s.connections_opened,
            if s.failed > 0 {
                format!("  ({} failed)", s.failed)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
