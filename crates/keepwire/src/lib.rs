//! keepwire's runtime: HTTP/1.x connection management on tokio.
//!
//! The server, client pool and proxy arrive in later steps; this crate
//! re-exports the sans-IO core they are built on so that users depend on one
//! crate.

#![deny(missing_docs)]

pub use keepwire_proto as proto;
