//! A WebSocket echo server on `keepwire::ws` alone: every text or binary
//! message goes back as it came. `scripts/bench-ws.sh` runs it beside
//! `keepwire serve`'s `/ws` and node's `ws` with one worker thread, so
//! `keepwire bench --ws` compares the WebSocket layer itself, per core.
//!
//!     cargo run --release -p keepwire --example ws_echo -- --listen 127.0.0.1:9001
//!     keepwire bench --ws -c 50 ws://127.0.0.1:9001/

use std::net::SocketAddr;

use clap::Parser;
use http::{Request, Response};
use keepwire::ws::{self, Message};
use keepwire::{Body, Server};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

async fn echo(mut req: Request<Body>) -> Response<Body> {
    let (resp, accepting) = match ws::accept(&mut req, ws::Config::default()) {
        Ok(pair) => pair,
        Err(refusal) => return refusal,
    };
    tokio::spawn(async move {
        let Some(mut socket) = accepting.await else {
            return;
        };
        while let Some(Ok(m)) = socket.recv().await {
            let back = match m {
                Message::Text(_) | Message::Binary(_) => m,
                // Pings are answered by the socket; a close ends the loop
                // once the socket has answered it.
                _ => continue,
            };
            if socket.send(back).await.is_err() {
                break;
            }
        }
    });
    resp
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        let server = Server::builder()
            .listen(args.listen)
            .configure(|c| {
                c.max_requests = None;
                c.max_connections = 100_000;
                c.max_connections_per_ip = 100_000;
            })
            .bind()?;
        server
            .run(echo, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })
}
