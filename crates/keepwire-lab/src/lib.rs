//! The keepwire lab as a library: the measurements that show why each
//! connection rule exists, usable from a test or a program as well as from
//! `keepwire lab` and `keepwire get`.
//!
//! The rules in `docs/CONNECTION-RULES.md` claim costs in round trips: a
//! connection per request pays a handshake each time (R4), Nagle delays a
//! second small write (R2.3), a full close loses queued responses (R8.5).
//! Loopback has a round trip of microseconds, so those costs vanish there.
//! This crate brings the pieces to see them:
//!
//! - [`link`]: an emulated wide-area link with a real RTT, bandwidth and
//!   loss (two network namespaces and a userspace delay line, made inside
//!   a user namespace when not root; a loopback relay where user
//!   namespaces are disabled);
//! - [`wire`]: what crossed the link (packets, bytes with headers,
//!   connections), counted by the delay line;
//! - [`load`]: the page-load engine: URLs or a page and its sub-resources
//!   through one pooled client by one of the chapter's strategies, with a
//!   [`Record`](load::Record) per request of its connection and phases;
//! - [`experiments`]: the catalogue of experiments, each run against
//!   keepwire's own servers over the link and compared with the round-trip
//!   model;
//! - [`report`] and [`waterfall`]: self-contained HTML of a lab run and of a
//!   page load, both drawing their waterfalls with [`waterfall::chart`]
//!   (phases coloured as browser devtools do, one time axis per chart);
//! - [`realtime`]: one event source offered by polling, long polling,
//!   Server-Sent Events and WebSocket (R9.4);
//! - [`site`]: the demo site (a page with embedded objects), [`page`]: what
//!   a page makes a browser fetch, [`tls`]: a self-signed certificate.
//!
//! It stands on `keepwire` (server, client, proxy, load generator) and knows
//! nothing of command lines: `keepwire-cli` parses arguments and prints.
//!
//! # Loading a page
//!
//! Serve the demo site on loopback and load its page with one persistent
//! connection: thirteen requests (the page and its twelve objects), one
//! connection opened, every request after the first on a reused connection.
//!
//! ```
//! use keepwire::{Body, Server};
//! use keepwire_lab::load::{self, LoadConfig, Strategy};
//! use keepwire_lab::site::Site;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let site = Site::default();
//!     let server = Server::builder()
//!         .listen("127.0.0.1:0".parse()?)
//!         .bind()?
//!         .spawn(move |req: http::Request<Body>| {
//!             let site = site.clone();
//!             async move { site.handle(req).await }
//!         });
//!     let url = format!("http://{}/", server.local_addr());
//!     let config = LoadConfig::default()
//!         .strategy(Strategy::Persistent)
//!         .connections(1)
//!         .page(true);
//!     let loaded = load::load(&[url], &config, &mut |_| {}).await;
//!     assert_eq!(loaded.records.len(), 13);
//!     assert_eq!(loaded.summary.connections_opened, 1);
//!     assert!(loaded.records[1..].iter().all(|r| r.reused == Some(true)));
//!     let html = keepwire_lab::waterfall::render(&loaded.records, &loaded.summary);
//!     assert!(html.contains("<svg"));
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Running an experiment
//!
//! ```no_run
//! use keepwire_lab::{Lab, Link, LinkSpec, LabReport, experiments};
//!
//! let link = Link::new(LinkSpec::default())?; // exact; before any thread starts when not root
//! let lab = Lab::start(&link, true).map_err(std::io::Error::other)?;
//! let nagle = experiments::find("nagle").expect("in the catalogue");
//! let outcome = (nagle.run)(&lab);
//! println!("{}: {}", outcome.id, outcome.verdict);
//! drop(lab);
//! let html = keepwire_lab::report::render(&LabReport::new(&link, true, vec![outcome]));
//! # let _ = html;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod experiments;
pub mod files;
pub mod link;
pub mod load;
pub mod page;
pub mod realtime;
pub mod reply;
pub mod report;
pub mod site;
pub mod tls;
pub mod waterfall;
pub mod wire;

pub use experiments::{Experiment, Lab, Outcome};
pub use link::{CongestionControl, Link, LinkSpec};
pub use report::LabReport;
