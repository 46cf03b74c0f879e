//! keepwire's runtime: HTTP/1.x connection management on tokio.
//!
//! # Layout
//! - [`server`]: the origin server (persistent connections, pipelining,
//!   limits, lingering close, graceful shutdown).
//! - [`client`]: the pooled client (per-origin cap, hint-aware idle
//!   retirement, retries by rule, per-request timings).
//! - [`proxy`]: the forward/reverse proxy over the server and the client.
//! - [`destination`]: where a forward proxy may connect (checked on the
//!   resolved addresses it dials).
//! - [`bench`]: the load generator behind `keepwire bench`.
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
pub use client::{Client, ClientConfig, ClientError, RequestMeta};
pub use keepwire_proto as proto;
pub use server::{ConnInfo, Server};
