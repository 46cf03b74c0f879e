//! keepwire's runtime: HTTP/1.x and HTTP/2 connection management on tokio.
//!
//! # Layout
//! - [`server`]: the origin server (persistent connections, pipelining,
//!   limits, lingering close, graceful shutdown).
//! - [`client`]: the pooled client (per-origin cap, hint-aware idle
//!   retirement, retries by rule, per-request timings).
//! - [`proxy`]: the forward/reverse proxy over the server and the client.
//! - [`destination`]: where a forward proxy may connect (checked on the
//!   resolved addresses it dials).
//! - [`bench`](mod@bench): the load generator behind `keepwire bench`.
//! - [`body`]: one streaming body type for requests and responses.
//! - [`net`]: socket options and the lingering close (R2.3, R8.5).
//! - [`metrics`]: connection counters in Prometheus text format.
//! - [`trace`]: TRACE, off by default, and an echo that keeps credentials out.
//! - [`upgrade`]: the connection (or HTTP/2 stream, RFC 8441) handed over
//!   after 101 or CONNECT, on either side.
//! - [`ws`]: WebSocket on that hand-off, server and client.
//!
//! The protocol itself lives in the sans-IO [`proto`] crate; this crate is
//! the pump that moves bytes, runs handlers and owns the clocks.
//!
//! # Example
//!
//! A server and a client on loopback; the second request reuses the first
//! one's connection:
//!
//! ```
//! use keepwire::{Body, Client, RequestMeta, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder()
//!     .listen("127.0.0.1:0".parse()?)
//!     .bind()?
//!     .spawn(|_req: http::Request<Body>| async { http::Response::new(Body::from("hello\n")) });
//! let url = format!("http://{}/", server.local_addr());
//!
//! let client = Client::default();
//! let first = client.get(&url).await?;
//! assert_eq!(&first.into_body().collect(1024).await?[..], b"hello\n");
//! let second = client.get(&url).await?;
//! assert!(second.extensions().get::<RequestMeta>().unwrap().reused);
//! # drop(second);
//! # drop(client);
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//! - `tower`: serve any `tower::Service` (`tower::TowerHandler`, axum
//!   routers among them), and use the [`Client`] as a `tower::Service`.
//! - `axum`: `tower`, plus axum's `ConnectInfo<SocketAddr>` on every
//!   request served through `TowerHandler`.

#![deny(missing_docs)]

pub mod bench;
pub mod body;
mod buffers;
pub mod client;
mod date;
pub mod destination;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod server;
#[cfg(feature = "tower")]
pub mod tower;
pub mod trace;
pub mod transport;
pub mod upgrade;
pub mod ws;

pub use body::{Body, BodyError, BodySender};
pub use client::{Client, ClientBuilder, ClientConfig, ClientError, RequestMeta};
pub use keepwire_proto as proto;
pub use server::{ConnInfo, Server};
