//! The experiments: the catalogue, and the harness every experiment runs
//! in. Each runs keepwire's own server on the server side of the link and a
//! client on the client side, and compares what it measures with the
//! round-trip model the chapter uses; one file per experiment.
//!
//! Raw clients ([`raw`]: a socket and the proto core's skim) are used where
//! the point is what one socket does (Nagle, slow start, a dumb relay, a
//! reset); the pooled client and the load generator where the point is what
//! keepwire does about it.

mod dumb_proxy;
mod hol_blocking;
mod nagle;
mod page_load;
mod raw;
mod reset_loss;
mod slow_start;
mod stale_retry;
mod stats;
mod time_wait;
mod tls;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use keepwire::net::Linger;
use keepwire::proxy::{Proxy, ProxyConfig, Route, Upstream};
use keepwire::{Body, Server};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::link::Link;
use crate::site::Site;

/// One row of an experiment's table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured (a strategy, a setting).
    pub label: String,
    /// Values in the experiment's column order; `None` is "-".
    pub values: Vec<Option<f64>>,
}

/// A request on the page-load waterfall.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    /// Request URL path.
    pub path: String,
    /// Client connection id.
    pub conn: Option<u64>,
    /// Start and end, ms after the first request.
    pub start_ms: f64,
    /// End.
    pub end_ms: f64,
    /// This request opened its connection.
    pub new_conn: bool,
}

/// What one experiment measured.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Short name (`page-load`).
    pub id: &'static str,
    /// Title.
    pub title: &'static str,
    /// Rules it demonstrates.
    pub rules: &'static str,
    /// Column names (units included).
    pub columns: Vec<String>,
    /// Measured rows.
    pub rows: Vec<Row>,
    /// Index of the measured and model columns to chart side by side.
    pub chart: (usize, Option<usize>),
    /// Does the measurement match the rule?
    pub pass: bool,
    /// The verdict in words.
    pub verdict: String,
    /// Assumptions and caveats.
    pub notes: Vec<String>,
    /// Page loads only: one waterfall per strategy.
    pub waterfalls: Vec<(String, Vec<Bar>)>,
}

/// One experiment in the catalogue.
pub struct Experiment {
    /// Short name.
    pub id: &'static str,
    /// Title.
    pub title: &'static str,
    /// Rules it demonstrates.
    pub rules: &'static str,
    /// Runs it.
    pub run: fn(&Lab) -> Outcome,
}

/// Every experiment, in order.
pub const ALL: [Experiment; 9] = [
    Experiment {
        id: "page-load",
        title: "a page of 12 objects: serial, parallel, persistent, pipelined, multiplexed",
        rules: "R4",
        run: page_load::run,
    },
    Experiment {
        id: "nagle",
        title: "head and body in two writes, with and without TCP_NODELAY",
        rules: "R2.3",
        run: nagle::run,
    },
    Experiment {
        id: "slow-start",
        title: "a download on a new vs a warm connection",
        rules: "R2.2",
        run: slow_start::run,
    },
    Experiment {
        id: "time-wait",
        title: "many requests without and with persistence",
        rules: "R2.4",
        run: time_wait::run,
    },
    Experiment {
        id: "dumb-proxy",
        title: "HTTP/1.0 keep-alive through a dumb relay vs keepwire proxy",
        rules: "R6.1",
        run: dumb_proxy::run,
    },
    Experiment {
        id: "reset-loss",
        title: "pipelined requests to a server that full-closes vs closes gracefully",
        rules: "R8.4, R8.5",
        run: reset_loss::run,
    },
    Experiment {
        id: "stale-retry",
        title: "server idle timeout shorter than the client's: errors, retries, duplicates",
        rules: "R8.1, R8.3",
        run: stale_retry::run,
    },
    Experiment {
        id: "hol-blocking",
        title: "a slow first object: pipelined HTTP/1.1 vs multiplexed HTTP/2",
        rules: "R4.4, R4.5, R7.5",
        run: hol_blocking::run,
    },
    Experiment {
        id: "tls",
        title: "the page over HTTPS: a TLS handshake per connection",
        rules: "R2.1, R4.3",
        run: tls::run,
    },
];

/// The experiment named `id` (`page-load`, `nagle`, ...).
pub fn find(id: &str) -> Option<&'static Experiment> {
    ALL.iter().find(|e| e.id == id)
}

const PAGE_OBJECTS: usize = 12;
/// Small enough that a pipelined burst of all objects fits the initial
/// congestion window, so the page-load model can ignore slow start.
const OBJECT_SIZE: usize = 512;

/// An experiment's outcome with its catalogue entry's names.
fn outcome(
    e: &Experiment,
    columns: &[&str],
    rows: Vec<Row>,
    chart: (usize, Option<usize>),
    pass: bool,
    verdict: String,
    notes: Vec<String>,
) -> Outcome {
    Outcome {
        id: e.id,
        title: e.title,
        rules: e.rules,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
        chart,
        pass,
        verdict,
        notes,
        waterfalls: Vec::new(),
    }
}

/// Sizes that differ between a full run and `--quick`.
struct Sizes {
    page_reps: usize,
    nagle_requests: usize,
    download: usize,
    tw_requests: u64,
    tw_connections: usize,
    dumb_idle: Duration,
    reset_object: usize,
    stale_idle: Duration,
    stale_requests: usize,
}

/// The servers every experiment talks to, started once.
pub struct Lab<'a> {
    link: &'a Link,
    sizes: Sizes,
    rtt: Duration,
    /// Client-visible addresses.
    origin: SocketAddr,
    /// The same origin over TLS (self-signed; ALPN h2 and http/1.1).
    origin_tls: SocketAddr,
    origin_local: SocketAddr,
    dumb_relay: SocketAddr,
    proxy: SocketAddr,
    graceful: SocketAddr,
    full_close: SocketAddr,
    stale: SocketAddr,
    /// POST ids the servers processed, with counts.
    posts: Arc<Mutex<HashMap<String, u32>>>,
}

/// The lab's origin: the demo site plus `/lab/bytes/N` and `POST /lab/post`.
#[derive(Clone)]
struct Origin {
    site: Site,
    posts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Origin {
    async fn handle(self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if let Some(n) = path.strip_prefix("/lab/bytes/") {
            let n: usize = n.parse().unwrap_or(0).min(64 << 20);
            return Response::new(Body::from(Bytes::from(vec![b'x'; n])));
        }
        if let Some(ms) = path.strip_prefix("/lab/slow/") {
            let ms: u64 = ms.parse().unwrap_or(0).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return Response::new(Body::from(Bytes::from(vec![b's'; OBJECT_SIZE])));
        }
        if path == "/lab/post" && req.method() == Method::POST {
            let id = req
                .headers()
                .get("x-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let _ = req.into_body().collect(1 << 20).await;
            *self
                .posts
                .lock()
                .expect("posts lock")
                .entry(id)
                .or_default() += 1;
            return Response::new(Body::from("ok"));
        }
        self.site.handle(req).await
    }
}

impl<'a> Lab<'a> {
    /// Starts the servers on the server side of `link`.
    pub fn start(link: &'a Link, quick: bool) -> Result<Lab<'a>, String> {
        let sizes = if quick {
            Sizes {
                page_reps: 1,
                nagle_requests: 5,
                download: 256 * 1024,
                tw_requests: 200,
                tw_connections: 6,
                dumb_idle: Duration::from_millis(800),
                reset_object: 64 * 1024,
                stale_idle: Duration::from_millis(400),
                stale_requests: 6,
            }
        } else {
            Sizes {
                page_reps: 3,
                nagle_requests: 20,
                download: 1024 * 1024,
                tw_requests: 5000,
                tw_connections: 50,
                dumb_idle: Duration::from_secs(3),
                reset_object: 64 * 1024,
                stale_idle: Duration::from_secs(1),
                stale_requests: 8,
            }
        };
        let posts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let origin = Origin {
            site: Site {
                objects: PAGE_OBJECTS,
                object_size: OBJECT_SIZE,
            },
            posts: posts.clone(),
        };
        let ip = link.server.ip;
        let (dumb_idle, stale_idle) = (sizes.dumb_idle, sizes.stale_idle);
        let (tls, _pem) = crate::tls::self_signed(vec![ip.to_string()])
            .map_err(|e| format!("cannot make the lab's certificate: {e}"))?;
        let addrs = link.server.run(move || async move {
            let serve = |configure: Box<dyn FnOnce(&mut keepwire::server::Config) + Send>| {
                let o = origin.clone();
                Server::builder()
                    .listen(SocketAddr::new(ip, 0))
                    .configure(configure)
                    .bind()
                    .map(|s| s.spawn(move |req| o.clone().handle(req)))
            };
            let main = serve(Box::new(|c| c.idle_timeout = Duration::from_secs(60)))?;
            let main_tls = serve(Box::new(|c| {
                c.idle_timeout = Duration::from_secs(60);
                c.tls = Some(tls);
            }))?;
            let dumb_origin = serve(Box::new(move |c| c.idle_timeout = dumb_idle))?;
            let graceful = serve(Box::new(|c| c.max_requests = Some(3)))?;
            let full = serve(Box::new(|c| {
                c.max_requests = Some(3);
                c.linger = Linger {
                    max_time: Duration::ZERO,
                    idle: Duration::ZERO,
                    max_bytes: 0,
                };
            }))?;
            let stale = serve(Box::new(move |c| {
                c.idle_timeout = stale_idle;
                c.advertise_keep_alive = false;
            }))?;
            let proxy = Proxy::new(ProxyConfig {
                routes: vec![Route::new(
                    None,
                    "/",
                    vec![Upstream::new(dumb_origin.local_addr().to_string())],
                )],
                ..ProxyConfig::default()
            });
            let proxy_server = Server::builder()
                .listen(SocketAddr::new(ip, 0))
                .configure(|c| c.proxy_connection = true)
                .bind()?
                .spawn(move |req| proxy.clone().handle(req));
            let relay = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
            let relay_addr = relay.local_addr()?;
            tokio::task::spawn_local(dumb_proxy::dumb_relay(relay, dumb_origin.local_addr()));
            let addrs = [
                main.local_addr(),
                relay_addr,
                proxy_server.local_addr(),
                graceful.local_addr(),
                full.local_addr(),
                stale.local_addr(),
                main_tls.local_addr(),
            ];
            // The servers run as long as this side's runtime does.
            std::mem::forget((main, main_tls, dumb_origin, graceful, full, stale));
            std::mem::forget(proxy_server);
            Ok::<_, io::Error>(addrs)
        });
        let addrs = addrs.map_err(|e| format!("cannot start the lab's servers: {e}"))?;
        let origin_local = addrs[0];
        Ok(Lab {
            link,
            rtt: link.spec.rtt,
            origin: link.expose(addrs[0]),
            origin_local,
            dumb_relay: link.expose(addrs[1]),
            proxy: link.expose(addrs[2]),
            graceful: link.expose(addrs[3]),
            full_close: link.expose(addrs[4]),
            stale: link.expose(addrs[5]),
            origin_tls: link.expose(addrs[6]),
            sizes,
            posts,
        })
    }

    fn r_ms(&self) -> f64 {
        self.rtt.as_secs_f64() * 1000.0
    }

    fn note_link(&self, notes: &mut Vec<String>) {
        if !self.link.exact {
            notes.push(
                "approximate: loopback relay (no real handshake, slow start, Nagle or RST)".into(),
            );
        }
    }
}

/// A row of a table.
fn row(label: impl Into<String>, values: Vec<Option<f64>>) -> Row {
    Row {
        label: label.into(),
        values,
    }
}
