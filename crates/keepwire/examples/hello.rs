//! The benchmark origin: `GET /` → `Hello, world!` (13 B), `GET /1k` → 1 KiB.
//!
//! The shared peer harness runs it beside nginx and hyper with one worker
//! thread (`--threads 1` is a tokio `current_thread` runtime, as the hyper
//! peer uses), so the comparison is per core.

use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use keepwire::{Body, Server};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

static HELLO: &[u8] = b"Hello, world!";
static ONE_K: [u8; 1024] = [b'x'; 1024];

async fn hello(req: Request<Body>) -> Response<Body> {
    let body = match req.uri().path() {
        "/" => Bytes::from_static(HELLO),
        "/1k" => Bytes::from_static(&ONE_K),
        _ => {
            let mut r = Response::new(Body::from("not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    Response::new(Body::full(body))
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
            .run(hello, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })
}
