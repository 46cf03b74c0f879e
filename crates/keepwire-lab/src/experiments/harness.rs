//! The harness every experiment runs in: the servers on the server side
//! of the link, started once ([`Lab`]), and what an experiment reports
//! ([`Outcome`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use keepwire::proxy::{Proxy, ProxyConfig, Route, Upstream};
use keepwire::{Body, Server};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::link::Link;
use crate::load::{Phases, Record};
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
    /// Its phases (R1.2), if a response head arrived.
    pub phases_ms: Option<Phases>,
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
    /// The same page loads request by request, as the report draws them
    /// (one time axis for all). Not in the JSON: `waterfalls` is.
    #[serde(skip)]
    pub page_loads: Vec<(String, Vec<Record>)>,
    /// Event deliveries only: one timeline per technique.
    pub timelines: Vec<Timeline>,
}

/// Events on a delivery timeline: when each was published at the server
/// and when it reached the client.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// The technique and path (`SSE via keepwire proxy`).
    pub name: String,
    /// Where the run ended, ms after its start.
    pub end_ms: f64,
    /// Per event: published and arrived (`None`: never), ms after the start.
    pub events: Vec<(f64, Option<f64>)>,
    /// When the client sent each request, ms after the start.
    pub requests: Vec<f64>,
}

/// One experiment in the catalogue.
#[derive(Debug, Clone, Copy)]
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

/// Objects on the lab's demo page.
pub(super) const PAGE_OBJECTS: usize = 12;
/// Small enough that a pipelined burst of all objects fits the initial
/// congestion window, so the page-load model can ignore slow start.
pub(super) const OBJECT_SIZE: usize = 512;

/// An experiment's outcome with its catalogue entry's names.
pub(super) fn outcome(
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
        page_loads: Vec::new(),
        timelines: Vec::new(),
    }
}

/// Sizes that differ between a full run and `--quick`.
pub(super) struct Sizes {
    pub(super) page_reps: usize,
    pub(super) nagle_requests: usize,
    pub(super) download: usize,
    pub(super) tw_requests: u64,
    pub(super) tw_connections: usize,
    pub(super) dumb_idle: Duration,
    pub(super) reset_object: usize,
    pub(super) stale_idle: Duration,
    pub(super) stale_requests: usize,
    /// The real-time experiment's random events and the time they spread over.
    pub(super) realtime_events: usize,
    pub(super) realtime_span: Duration,
}

/// The servers every experiment talks to, started once.
pub struct Lab<'a> {
    pub(super) link: &'a Link,
    pub(super) sizes: Sizes,
    pub(super) rtt: Duration,
    /// Client-visible addresses.
    pub(super) origin: SocketAddr,
    /// The same origin over TLS (self-signed; ALPN h2 and http/1.1).
    pub(super) origin_tls: SocketAddr,
    pub(super) origin_local: SocketAddr,
    pub(super) dumb_relay: SocketAddr,
    pub(super) proxy: SocketAddr,
    pub(super) graceful: SocketAddr,
    pub(super) full_close: SocketAddr,
    pub(super) stale: SocketAddr,
    /// POST ids the servers processed, with counts.
    pub(super) posts: Arc<Mutex<HashMap<String, u32>>>,
}

/// The lab's origin: the demo site plus `/lab/bytes/N` and `POST /lab/post`.
#[derive(Clone)]
struct LabSite {
    site: Site,
    posts: Arc<Mutex<HashMap<String, u32>>>,
}

impl LabSite {
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
    /// Starts the servers on the server side of `link`. `quick`: reduced
    /// sizes (fewer requests, shorter timeouts), what the tests run.
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
                realtime_events: 6,
                realtime_span: Duration::from_secs(2),
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
                realtime_events: 20,
                realtime_span: Duration::from_secs(10),
            }
        };
        let posts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let origin = LabSite {
            site: Site::new(PAGE_OBJECTS, OBJECT_SIZE),
            posts: posts.clone(),
        };
        let (ip, client_ip) = (link.server.ip, link.client.ip);
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
                // A full close: no lingering drain at all.
                c.linger.max_time = Duration::ZERO;
                c.linger.idle = Duration::ZERO;
                c.linger.max_bytes = 0;
            }))?;
            let stale = serve(Box::new(move |c| {
                c.idle_timeout = stale_idle;
                c.advertise_keep_alive = false;
            }))?;
            let proxy = Proxy::new({
                let mut pc = ProxyConfig::default();
                pc.routes = vec![Route::new(
                    None,
                    "/",
                    vec![Upstream::new(dumb_origin.local_addr().to_string())],
                )];
                // The link's client is not on loopback, which is all the
                // proxy serves by default: without this it answers 403.
                pc.allow = vec![client_ip.into()];
                pc
            });
            let proxy_server = Server::builder()
                .listen(SocketAddr::new(ip, 0))
                .config(Proxy::server_config())
                .bind()?
                .spawn(proxy);
            let relay = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
            let relay_addr = relay.local_addr()?;
            tokio::task::spawn_local(dumb_relay(relay, dumb_origin.local_addr()));
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

    pub(super) fn r_ms(&self) -> f64 {
        self.rtt.as_secs_f64() * 1000.0
    }

    pub(super) fn note_link(&self, notes: &mut Vec<String>) {
        if !self.link.exact {
            notes.push(
                "approximate: loopback relay (no real handshake, slow start, Nagle or RST)".into(),
            );
        }
    }
}

/// A row of a table.
pub(super) fn row(label: impl Into<String>, values: Vec<Option<f64>>) -> Row {
    Row {
        label: label.into(),
        values,
    }
}

/// The deliberately dumb relay of R6.1: it forwards the first request head
/// verbatim (`Connection: Keep-Alive` included), then copies the origin's
/// answer back until the origin closes, and never reads the client again.
async fn dumb_relay(listener: TcpListener, origin: SocketAddr) {
    while let Ok((mut client, _)) = listener.accept().await {
        tokio::task::spawn_local(async move {
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let Ok(mut upstream) = TcpStream::connect(origin).await else {
                return;
            };
            if upstream.write_all(&head).await.is_err() {
                return;
            }
            // Waits for the origin to close: the response "ends" at EOF.
            let (mut ur, _uw) = upstream.split();
            let (_cr, mut cw) = client.split();
            let _ = tokio::io::copy(&mut ur, &mut cw).await;
        });
    }
}
