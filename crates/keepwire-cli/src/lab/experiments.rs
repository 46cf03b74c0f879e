//! The seven experiments. Each runs keepwire's own server on the server side
//! of the link and a client on the client side, and compares what it
//! measures with the round-trip model the chapter uses.
//!
//! Raw clients (a socket and [`skim_response`]) are used where the point is
//! what one socket does (Nagle, slow start, a dumb relay, a reset); the
//! pooled client and the load generator where the point is what keepwire
//! does about it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use keepwire::bench::{self, Plan, Progress, Stop};
use keepwire::net::{Linger, count_time_wait};
use keepwire::proto::{Decoder, Frame, Limits, skim_response};
use keepwire::proxy::{Proxy, ProxyConfig, Route, Upstream};
use keepwire::{Body, Client, ClientConfig, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::link::Link;
use super::{Bar, Outcome, Row};
use crate::get::{Strategy, load_page_quiet};
use crate::site::Site;

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
        run: page_load,
    },
    Experiment {
        id: "nagle",
        title: "head and body in two writes, with and without TCP_NODELAY",
        rules: "R2.3",
        run: nagle,
    },
    Experiment {
        id: "slow-start",
        title: "a download on a new vs a warm connection",
        rules: "R2.2",
        run: slow_start,
    },
    Experiment {
        id: "time-wait",
        title: "many requests without and with persistence",
        rules: "R2.4",
        run: time_wait,
    },
    Experiment {
        id: "dumb-proxy",
        title: "HTTP/1.0 keep-alive through a dumb relay vs keepwire proxy",
        rules: "R6.1",
        run: dumb_proxy,
    },
    Experiment {
        id: "reset-loss",
        title: "pipelined requests to a server that full-closes vs closes gracefully",
        rules: "R8.4, R8.5",
        run: reset_loss,
    },
    Experiment {
        id: "stale-retry",
        title: "server idle timeout shorter than the client's: errors, retries, duplicates",
        rules: "R8.1, R8.3",
        run: stale_retry,
    },
    Experiment {
        id: "hol-blocking",
        title: "a slow first object: pipelined HTTP/1.1 vs multiplexed HTTP/2",
        rules: "R4.4, R4.5, R7.5",
        run: hol_blocking,
    },
    Experiment {
        id: "tls",
        title: "the page over HTTPS: a TLS handshake per connection",
        rules: "R2.1, R4.3",
        run: tls_handshakes,
    },
];

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

/// One connection read by the proto core's skim, for the raw experiments.
struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
}

/// A complete response on a [`RawConn`].
struct RawResp {
    body: u64,
    persistent: bool,
}

impl RawConn {
    async fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<RawConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(nodelay)?;
        Ok(RawConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        })
    }

    /// Reads one response. `Ok(None)`: the connection ended before any byte.
    async fn response(&mut self, limit: Duration) -> Result<Option<RawResp>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        let limits = Limits {
            max_body_bytes: None,
            ..Limits::default()
        };
        let skim = loop {
            match skim_response(&self.buf, &Method::GET, &limits) {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => return Err(format!("bad response: {e}")),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err("timeout".into()),
                Ok(Err(e)) => return Err(format!("{e}")),
                Ok(Ok(0)) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => return Err("truncated head".into()),
                Ok(Ok(_)) => {}
            }
        };
        let _ = self.buf.split_to(skim.head_len);
        let mut decoder = Decoder::new(skim.body, &limits);
        let mut body = 0u64;
        loop {
            match decoder.decode(&mut self.buf) {
                Ok(Some(Frame::Data(d))) => body += d.len() as u64,
                Ok(Some(Frame::End(_))) => break,
                Ok(None) => {
                    match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                        .await
                    {
                        Err(_) => return Err("timeout".into()),
                        Ok(Err(e)) => return Err(format!("{e} after {body} body bytes")),
                        Ok(Ok(0)) => match decoder.finish() {
                            Ok(_) => break,
                            Err(_) => return Err(format!("truncated after {body} body bytes")),
                        },
                        Ok(Ok(_)) => {}
                    }
                }
                Err(e) => return Err(format!("bad body: {e}")),
            }
        }
        Ok(Some(RawResp {
            body,
            persistent: skim.persistent,
        }))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn row(label: impl Into<String>, values: Vec<Option<f64>>) -> Row {
    Row {
        label: label.into(),
        values,
    }
}

/// Experiment 1 (R4): wall time and connections of a page load per strategy.
fn page_load(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let n = PAGE_OBJECTS as f64;
    let wave = |c: f64| (n / c).ceil();
    // (label, strategy, connections, model wall in RTTs, model connections)
    let strategies: [(&str, Strategy, u16, f64, f64); 7] = [
        ("serial", Strategy::Serial, 1, 2.0 * (n + 1.0), n + 1.0),
        (
            "parallel 4",
            Strategy::Parallel,
            4,
            2.0 + 2.0 * wave(4.0),
            n + 1.0,
        ),
        (
            "parallel 6",
            Strategy::Parallel,
            6,
            2.0 + 2.0 * wave(6.0),
            n + 1.0,
        ),
        (
            "persistent 1",
            Strategy::Persistent,
            1,
            1.0 + (n + 1.0),
            1.0,
        ),
        // HTML on one connection (2 RTT); then 5 new connections (2 RTT for
        // their first object) beside the reused one, then one more round.
        (
            "persistent 6",
            Strategy::Persistent,
            6,
            2.0 + 2.0 + (wave(6.0) - 1.0),
            6.0,
        ),
        // Connect, the page, then every object in one round trip.
        ("pipelined 1", Strategy::Pipelined, 1, 3.0, 1.0),
        // The same round trips as pipelining, without its ordering (R4.5).
        ("multiplexed (HTTP/2)", Strategy::Multiplexed, 1, 3.0, 1.0),
    ];
    let url: http::Uri = format!("http://{}/", lab.origin)
        .parse()
        .expect("valid URL");
    let mut rows = Vec::new();
    let mut waterfalls = Vec::new();
    let mut walls = HashMap::new();
    let mut notes = vec![format!(
        "model: the chapter's round trips only (1 RTT per handshake, 1 per request), \
         {PAGE_OBJECTS} objects of {OBJECT_SIZE} B so transfer time and slow start do not matter"
    )];
    for (label, strategy, conns, model_rtts, model_conns) in strategies {
        let load = load_page(lab, &url, strategy, conns);
        let wall = load.wall;
        let model = model_rtts * r;
        let mut values = load.against(label, model, &mut notes);
        values.push(Some(model_conns));
        rows.push(row(label, values));
        walls.insert(label, (wall, model));
        waterfalls.push((label.to_string(), load.bars));
    }
    let w = |k: &str| walls.get(k).map_or(0.0, |v| v.0);
    let ordered = w("pipelined 1") < w("persistent 1")
        && w("persistent 1") < w("serial")
        && w("parallel 6") < w("serial")
        && w("persistent 6") < w("persistent 1")
        && w("multiplexed (HTTP/2)") < w("persistent 1");
    let within: Vec<String> = ["serial", "persistent 1", "pipelined 1"]
        .iter()
        .filter_map(|k| {
            let (wall, model) = walls.get(k)?;
            let off = (wall - model) / model * 100.0;
            (off.abs() > 15.0).then(|| format!("{k} {off:+.0}%"))
        })
        .collect();
    if !within.is_empty() {
        notes.push(format!(
            "off the model by more than 15%: {}",
            within.join(", ")
        ));
    }
    lab.note_link(&mut notes);
    let mut outcome = outcome(
        &ALL[0],
        &[
            "wall ms",
            "model ms",
            "vs model %",
            "connections",
            "model conns",
        ],
        rows,
        (0, Some(1)),
        ordered,
        if ordered {
            "pipelined < persistent < serial, parallel < serial, persistent+parallel < persistent: \
             every round trip saved shows"
                .into()
        } else {
            "the strategies did not order as the round-trip model predicts".into()
        },
        notes,
    );
    outcome.waterfalls = waterfalls;
    outcome
}

/// A page load's medians over the repetitions, and the last one's
/// waterfall.
struct PageLoad {
    wall: f64,
    opened: f64,
    failed: usize,
    bars: Vec<Bar>,
}

impl PageLoad {
    /// Wall, model, distance from the model in %, connections; failures
    /// noted.
    fn against(&self, label: &str, model: f64, notes: &mut Vec<String>) -> Vec<Option<f64>> {
        if self.failed > 0 {
            notes.push(format!("{label}: {} requests failed", self.failed));
        }
        vec![
            Some(self.wall),
            Some(model),
            Some((self.wall - model) / model * 100.0),
            Some(self.opened),
        ]
    }
}

/// Loads the page at `url` `page_reps` times with `strategy`.
fn load_page(lab: &Lab, url: &http::Uri, strategy: Strategy, conns: u16) -> PageLoad {
    let mut samples = Vec::new();
    let mut last = None;
    for _ in 0..lab.sizes.page_reps {
        let url = url.clone();
        let (records, summary) = lab.link.client.run(move || async move {
            load_page_quiet(url, strategy, conns, 16, Duration::from_secs(30)).await
        });
        samples.push((summary.wall_ms, summary.connections_opened, summary.failed));
        last = Some(records);
    }
    let bars = last
        .unwrap_or_default()
        .iter()
        .map(|rec| Bar {
            path: rec
                .url
                .parse::<http::Uri>()
                .map(|u| u.path().to_string())
                .unwrap_or_else(|_| rec.url.clone()),
            conn: rec.connection.as_ref().map(|c| c.id),
            start_ms: rec.start_ms,
            end_ms: rec.end_ms(),
            new_conn: rec.reused == Some(false),
        })
        .collect();
    PageLoad {
        wall: median(samples.iter().map(|s| s.0).collect()),
        opened: median(samples.iter().map(|s| s.1 as f64).collect()),
        failed: samples.iter().map(|s| s.2).sum(),
        bars,
    }
}

/// Experiment 9 (R2.1, R4.3): the page over HTTPS. TLS 1.3 adds one round
/// trip to every new connection, so a strategy that opens one per object
/// pays it per object, and persistence saves more than over cleartext.
fn tls_handshakes(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let n = PAGE_OBJECTS as f64 + 1.0;
    let http: http::Uri = format!("http://{}/", lab.origin)
        .parse()
        .expect("valid URL");
    let https: http::Uri = format!("https://{}/", lab.origin_tls)
        .parse()
        .expect("valid URL");
    // (label, URL, strategy, model wall in RTTs): a request is one round
    // trip, TCP's handshake one, TLS 1.3's one more.
    let cases: [(&str, &http::Uri, Strategy, f64); 5] = [
        ("serial, http://", &http, Strategy::Serial, 2.0 * n),
        ("serial, https://", &https, Strategy::Serial, 3.0 * n),
        (
            "persistent 1, http://",
            &http,
            Strategy::Persistent,
            1.0 + n,
        ),
        (
            "persistent 1, https://",
            &https,
            Strategy::Persistent,
            2.0 + n,
        ),
        // Connect, TLS, the page, then every object at once (ALPN h2).
        (
            "multiplexed, https:// (h2)",
            &https,
            Strategy::Multiplexed,
            4.0,
        ),
    ];
    let mut rows = Vec::new();
    let mut walls = HashMap::new();
    let mut notes = vec![format!(
        "model: 1 RTT per TCP handshake, 1 per TLS 1.3 handshake, 1 per request; \
         {} requests (the page and {PAGE_OBJECTS} objects)",
        n
    )];
    let mut waterfalls = Vec::new();
    for (label, url, strategy, model_rtts) in cases {
        let load = load_page(lab, url, strategy, 1);
        let model = model_rtts * r;
        rows.push(row(label, load.against(label, model, &mut notes)));
        walls.insert(label, load.wall);
        waterfalls.push((label.to_string(), load.bars));
    }
    let off: Vec<String> = rows
        .iter()
        .filter_map(|row| match row.values[..] {
            [_, _, Some(pct), _] if pct.abs() > 15.0 => Some(format!("{} {pct:+.0}%", row.label)),
            _ => None,
        })
        .collect();
    if !off.is_empty() {
        notes.push(format!(
            "off the model by more than 15%: {}",
            off.join(", ")
        ));
    }
    let w = |k: &str| walls.get(k).copied().unwrap_or(0.0);
    let serial_extra = w("serial, https://") - w("serial, http://");
    let persistent_extra = w("persistent 1, https://") - w("persistent 1, http://");
    rows.push(row(
        "TLS cost, serial",
        vec![Some(serial_extra), Some(n * r), None, None],
    ));
    rows.push(row(
        "TLS cost, persistent 1",
        vec![Some(persistent_extra), Some(r), None, None],
    ));
    // Every new connection pays the handshake: serial pays it n times,
    // persistent once.
    let pass = serial_extra >= 0.7 * n * r
        && persistent_extra < 2.0 * r
        && w("multiplexed, https:// (h2)") < w("persistent 1, https://");
    lab.note_link(&mut notes);
    let mut outcome = outcome(
        &ALL[8],
        &["wall ms", "model ms", "vs model %", "connections"],
        rows,
        (0, Some(1)),
        pass,
        if pass {
            format!(
                "TLS cost {serial_extra:.0} ms serial ({n:.0} handshakes) vs \
                 {persistent_extra:.0} ms persistent (one): persistence saves a round \
                 trip more per request over HTTPS"
            )
        } else {
            format!(
                "TLS cost {serial_extra:.0} ms serial vs {persistent_extra:.0} ms persistent: \
                 not the one round trip per new connection the model predicts"
            )
        },
        notes,
    );
    outcome.waterfalls = waterfalls;
    outcome
}

/// Experiment 2 (R2.3): requests written as head, then body.
fn nagle(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let n = lab.sizes.nagle_requests;
    let mut rows = Vec::new();
    let mut p50 = [0.0; 2];
    let mut errors = Vec::new();
    for (i, nodelay) in [true, false].into_iter().enumerate() {
        let addr = lab.origin;
        let result: Result<Vec<f64>, String> = lab.link.client.run(move || async move {
            let mut c = RawConn::connect(addr, nodelay)
                .await
                .map_err(|e| e.to_string())?;
            let body = [b'b'; 64];
            let mut lat = Vec::new();
            for k in 0..n {
                let head = format!(
                    "POST /lab/post HTTP/1.1\r\nHost: lab\r\nX-Id: nagle-{nodelay}-{k}\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                );
                let t0 = Instant::now();
                c.stream
                    .write_all(head.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                c.stream.write_all(&body).await.map_err(|e| e.to_string())?;
                c.response(Duration::from_secs(10))
                    .await?
                    .ok_or("closed early")?;
                lat.push(ms(t0.elapsed()));
                // Idle a little, as an interactive client would.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(lat)
        });
        let label = if nodelay {
            "TCP_NODELAY (Nagle off)"
        } else {
            "Nagle on"
        };
        match result {
            Ok(lat) => {
                p50[i] = quantile(lat.clone(), 0.5);
                // Linux's delayed-ACK floor (TCP_DELACK_MIN) is 40 ms.
                let model = if nodelay { r } else { 2.0 * r + 40.0 };
                rows.push(row(
                    label,
                    vec![
                        Some(quantile(lat.clone(), 0.5)),
                        Some(quantile(lat.clone(), 0.9)),
                        Some(quantile(lat, 1.0)),
                        Some(model),
                    ],
                ));
            }
            Err(e) => {
                errors.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None, None, None, None]));
            }
        }
    }
    let pass = errors.is_empty() && p50[1] >= p50[0] + 0.8 * r;
    let mut notes = vec![
        "model: without Nagle the body leaves at once (1 RTT); with Nagle it waits for the \
         ACK of the head (1 more RTT), which the server delays (Linux: at least 40 ms once \
         out of quick-ACK mode): 2 RTT + 40 ms"
            .into(),
    ];
    notes.extend(errors);
    lab.note_link(&mut notes);
    outcome(
        &ALL[1],
        &["p50 ms", "p90 ms", "max ms", "model ms"],
        rows,
        (0, Some(3)),
        pass,
        format!(
            "Nagle on adds {:.0} ms at the median ({:.1} RTT): the second small write waits for an ACK",
            p50[1] - p50[0],
            (p50[1] - p50[0]) / r
        ),
        notes,
    )
}

/// Rounds of slow start to send `bytes` from an initial window of 10
/// segments of 1448 bytes, doubling each round.
fn slow_start_rounds(bytes: usize) -> f64 {
    let segments = bytes.div_ceil(1448) as f64;
    let mut rounds = 0.0;
    let mut sent = 0.0;
    let mut cwnd = 10.0;
    while sent < segments {
        sent += cwnd;
        cwnd *= 2.0;
        rounds += 1.0;
    }
    rounds
}

/// Experiment 3 (R2.2): the same download, cold and warm.
fn slow_start(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let size = lab.sizes.download;
    let addr = lab.origin;
    let result: Result<(f64, f64), String> = lab.link.client.run(move || async move {
        let path = format!("GET /lab/bytes/{size} HTTP/1.1\r\nHost: lab\r\n\r\n");
        let t0 = Instant::now();
        let mut c = RawConn::connect(addr, true)
            .await
            .map_err(|e| e.to_string())?;
        c.stream
            .write_all(path.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let got = c.response(Duration::from_secs(60)).await?.ok_or("closed")?;
        let cold = ms(t0.elapsed());
        if got.body != size as u64 {
            return Err(format!("short body {}", got.body));
        }
        // At once, before the idle restart of slow start (RFC 5681 §4.1).
        let t1 = Instant::now();
        c.stream
            .write_all(path.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        c.response(Duration::from_secs(60)).await?.ok_or("closed")?;
        Ok((cold, ms(t1.elapsed())))
    });
    let transfer = size as f64 * 8.0 / lab.link.spec.bandwidth as f64 * 1000.0;
    let rounds = slow_start_rounds(size);
    let model_cold = 2.0 * r + (rounds - 1.0) * r + transfer;
    let model_warm = r + transfer;
    let mut notes = vec![format!(
        "model: cold = handshake + request + {} more rounds of slow start (IW 10 × 1448 B, \
         doubling) + {transfer:.0} ms at the link rate; warm = 1 RTT + transfer",
        rounds - 1.0
    )];
    if let Some(cc) = congestion_control(lab) {
        notes.push(format!("congestion control in the namespaces: {cc}"));
    }
    lab.note_link(&mut notes);
    let mbit = |t: f64| size as f64 * 8.0 / (t / 1000.0) / 1e6;
    let (rows, pass, verdict) = match result {
        Ok((cold, warm)) => (
            vec![
                row(
                    format!("new connection, {} KiB", size / 1024),
                    vec![Some(cold), Some(model_cold), Some(mbit(cold))],
                ),
                row(
                    format!("warm connection, {} KiB", size / 1024),
                    vec![Some(warm), Some(model_warm), Some(mbit(warm))],
                ),
            ],
            warm + r <= cold,
            format!(
                "the warm connection is {:.0} ms ({:.1} RTT) faster: its window is already open",
                cold - warm,
                (cold - warm) / r
            ),
        ),
        Err(e) => (Vec::new(), false, format!("failed: {e}")),
    };
    outcome(
        &ALL[2],
        &["time ms", "model ms", "Mbit/s"],
        rows,
        (0, Some(1)),
        pass,
        verdict,
        notes,
    )
}

fn congestion_control(lab: &Lab) -> Option<String> {
    if !lab.link.exact {
        return None;
    }
    lab.link.client.blocking(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .ok()
            .map(|s| s.trim().to_string())
    })
}

/// Experiment 4 (R2.4): the load generator with and without persistence.
fn time_wait(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let (n, c) = (lab.sizes.tw_requests, lab.sizes.tw_connections);
    let mut rows = Vec::new();
    let mut totals = [0u64; 2];
    let mut rates = [0.0; 2];
    let mut notes = Vec::new();
    for (i, keep_alive) in [false, true].into_iter().enumerate() {
        let url: http::Uri = format!("http://{}/obj/0.png", lab.origin)
            .parse()
            .expect("url");
        let request = bench::request_bytes(
            &Method::GET,
            &url,
            &HeaderMap::new(),
            &Bytes::new(),
            Version::HTTP_11,
            keep_alive,
        )
        .expect("a valid request");
        let plan = Plan {
            addr: lab.origin,
            request,
            method: Method::GET,
            connections: c,
            threads: 1,
            stop: Stop::Requests(n),
            pipeline: 1,
            close_each: !keep_alive,
            rate: None,
            timeout: Duration::from_secs(10),
            http2: None,
            tls: None,
        };
        let origin_local = lab.origin_local;
        let server_before = lab
            .link
            .server
            .blocking(move || count_time_wait(origin_local).map(|t| t.server).unwrap_or(0));
        let report = lab.link.client.blocking(move || {
            bench::run(
                plan,
                Arc::new(Progress::default()),
                Arc::new(AtomicBool::new(false)),
            )
        });
        // The server's last closes reach TIME_WAIT a round trip later.
        let server_after = lab.link.server.blocking(move || {
            let settle = Instant::now() + Duration::from_secs(3);
            loop {
                let now = count_time_wait(origin_local).unwrap_or_default();
                if now.closing == 0 || Instant::now() >= settle {
                    return now.server;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let label = if keep_alive {
            format!("persistent ({c} connections)")
        } else {
            "new connection per request".to_string()
        };
        match report {
            Ok(rep) => {
                let client_tw = rep.time_wait.as_ref().map(|t| t.client).unwrap_or(0);
                let server_tw = server_after.saturating_sub(server_before);
                totals[i] = client_tw + server_tw;
                rates[i] = rep.rate();
                let model_rate = if keep_alive {
                    c as f64 / (r / 1000.0)
                } else {
                    c as f64 / (2.0 * r / 1000.0)
                };
                let model_tw = if keep_alive { c as f64 } else { n as f64 };
                if rep.error_total() > 0 {
                    notes.push(format!("{label}: {} errors", rep.error_total()));
                }
                rows.push(row(
                    label,
                    vec![
                        Some(rep.rate()),
                        Some(model_rate),
                        Some(rep.connections as f64),
                        Some(client_tw as f64),
                        Some(server_tw as f64),
                        Some(model_tw),
                    ],
                ));
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None; 6]));
            }
        }
    }
    notes.push(format!(
        "{n} requests over {c} connections at once; every connection one side closes first \
         leaves a TIME_WAIT socket there for 60 s (Linux), holding its port pair; the \
         ephemeral ports consumed are the connections opened"
    ));
    lab.note_link(&mut notes);
    let pass = totals[0] >= n * 9 / 10 && totals[1] <= c as u64 && rates[1] > rates[0];
    outcome(
        &ALL[3],
        &[
            "req/s",
            "model req/s",
            "connections",
            "TIME_WAIT client",
            "TIME_WAIT server",
            "model TIME_WAIT",
        ],
        rows,
        (0, Some(1)),
        pass,
        format!(
            "without persistence {} sockets sit in TIME_WAIT, with it {}; persistence also \
             runs {:.1}× faster",
            totals[0],
            totals[1],
            rates[1] / rates[0].max(1e-9)
        ),
        notes,
    )
}

/// Experiment 5 (R6.1): an HTTP/1.0 keep-alive client's second request.
fn dumb_proxy(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let idle = lab.sizes.dumb_idle;
    let mut rows = Vec::new();
    let mut waits = [0.0; 2];
    let mut answered = [false; 2];
    let mut notes = Vec::new();
    for (i, (label, addr)) in [
        ("dumb relay", lab.dumb_relay),
        ("keepwire proxy", lab.proxy),
    ]
    .into_iter()
    .enumerate()
    {
        let limit = idle * 3;
        let result: Result<(f64, f64, bool), String> = lab.link.client.run(move || async move {
            let req =
                b"GET /lab/bytes/100 HTTP/1.0\r\nHost: origin\r\nConnection: Keep-Alive\r\n\r\n";
            let t0 = Instant::now();
            let mut c = RawConn::connect(addr, true)
                .await
                .map_err(|e| e.to_string())?;
            c.stream.write_all(req).await.map_err(|e| e.to_string())?;
            let first = c
                .response(limit)
                .await?
                .ok_or("closed before the first response")?;
            let first_ms = ms(t0.elapsed());
            if !first.persistent {
                return Ok((first_ms, 0.0, false));
            }
            // The response said keep-alive: reuse the connection, as the
            // client in the chapter does.
            let t1 = Instant::now();
            c.stream.write_all(req).await.map_err(|e| e.to_string())?;
            let second = c.response(limit).await;
            let ok = matches!(second, Ok(Some(_)));
            Ok((first_ms, ms(t1.elapsed()), ok))
        });
        let model = if i == 0 { ms(idle) } else { r };
        match result {
            Ok((first, wait, ok)) => {
                waits[i] = wait;
                answered[i] = ok;
                rows.push(row(
                    label,
                    vec![
                        Some(first),
                        Some(wait),
                        Some(model),
                        Some(if ok { 1.0 } else { 0.0 }),
                    ],
                ));
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None; 4]));
            }
        }
    }
    notes.push(format!(
        "the origin closes idle connections after {} ms; the dumb relay forwarded \
         `Connection: Keep-Alive`, so the client reused a connection the relay no longer reads",
        ms(idle)
    ));
    lab.note_link(&mut notes);
    let pass =
        !answered[0] && waits[0] >= ms(idle) * 0.9 && answered[1] && waits[1] < ms(idle) / 2.0;
    outcome(
        &ALL[4],
        &["request 1 ms", "request 2 wait ms", "model ms", "answered"],
        rows,
        (1, Some(2)),
        pass,
        format!(
            "through the dumb relay the second request hung {:.0} ms and got no answer{}; \
             through keepwire proxy it took {:.0} ms",
            waits[0],
            if answered[0] {
                " (it was answered!)"
            } else {
                ""
            },
            waits[1]
        ),
        notes,
    )
}

/// Experiment 6 (R8.4, R8.5): pipelined requests to a server that closes
/// after 3.
fn reset_loss(lab: &Lab) -> Outcome {
    let size = lab.sizes.reset_object;
    let mut rows = Vec::new();
    let mut complete = [0u64; 2];
    let mut notes = Vec::new();
    for (i, (label, addr)) in [
        ("graceful close (lingering)", lab.graceful),
        ("full close", lab.full_close),
    ]
    .into_iter()
    .enumerate()
    {
        let result: Result<(u64, u64, String), String> = lab.link.client.run(move || async move {
            let c = RawConn::connect(addr, true)
                .await
                .map_err(|e| e.to_string())?;
            let RawConn { stream, buf } = c;
            let (mut rd, mut wr) = stream.into_split();
            // Keep the pipeline going, as a pipelining client does: a
            // request every 5 ms until the connection ends, so requests keep
            // arriving while the server closes.
            let ended_flag = Arc::new(AtomicBool::new(false));
            let stop = ended_flag.clone();
            let writer = tokio::task::spawn_local(async move {
                let req = format!("GET /lab/bytes/{size} HTTP/1.1\r\nHost: lab\r\n\r\n");
                for _ in 0..1000 {
                    if stop.load(Ordering::Relaxed) || wr.write_all(req.as_bytes()).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                wr
            });
            let mut all = buf;
            let mut ended = String::from("FIN");
            loop {
                match tokio::time::timeout(Duration::from_secs(10), rd.read_buf(&mut all)).await {
                    Err(_) => {
                        ended = "timeout".into();
                        break;
                    }
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        ended = if e.kind() == io::ErrorKind::ConnectionReset {
                            "RST".into()
                        } else {
                            e.to_string()
                        };
                        break;
                    }
                }
            }
            ended_flag.store(true, Ordering::Relaxed);
            drop(writer.await);
            let total = all.len() as u64;
            // Count complete responses in what arrived.
            let limits = Limits {
                max_body_bytes: None,
                ..Limits::default()
            };
            let mut n = 0;
            while let Ok(Some(s)) = skim_response(&all, &Method::GET, &limits) {
                let body = match s.body {
                    keepwire::proto::BodyKind::Length(l) => l as usize,
                    _ => 0,
                };
                if all.len() < s.head_len + body {
                    break;
                }
                let _ = all.split_to(s.head_len + body);
                n += 1;
            }
            Ok((n, total, ended))
        });
        match result {
            Ok((n, total, ended)) => {
                complete[i] = n;
                rows.push(row(
                    format!("{label}: ended by {ended}"),
                    vec![
                        Some(3.0),
                        Some(n as f64),
                        Some(3.0 - n as f64),
                        Some(total as f64),
                    ],
                ));
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None; 4]));
            }
        }
    }
    notes.push(format!(
        "the server answers 3 requests of {} KiB (the third with Connection: close) and \
         closes; the client keeps pipelining a request every 5 ms until the connection ends. A full close with unread input \
         sends RST, which discards what was still queued to send",
        size / 1024
    ));
    lab.note_link(&mut notes);
    let pass = complete[0] == 3 && complete[1] < 3;
    outcome(
        &ALL[5],
        &["answered", "received", "lost", "bytes"],
        rows,
        (1, Some(0)),
        pass,
        format!(
            "graceful close delivered {} of 3 responses, full close {}",
            complete[0], complete[1]
        ),
        notes,
    )
}

/// Experiment 7 (R8.1, R8.3): idle gaps around the server's idle timeout.
fn stale_retry(lab: &Lab) -> Outcome {
    let r = lab.rtt;
    let t = lab.sizes.stale_idle;
    let m = lab.sizes.stale_requests;
    // Gaps in and around the race window (t − RTT, t): a request sent there
    // crosses the server's FIN on the wire.
    // Requests go GET, GET, POST, POST, ...: each method sees one gap
    // after the FIN arrived and one inside the race.
    let gaps: Vec<Duration> = (0..m)
        .map(|i| match i % 4 {
            0 => t + r,
            1 => t.saturating_sub(r / 3),
            2 => t + r / 2,
            _ => t.saturating_sub(r * 2 / 3),
        })
        .collect();
    let is_post = |i: usize| i % 4 >= 2;
    let addr = lab.stale;
    let posts = lab.posts.clone();
    let dup = move |prefix: &str| -> u64 {
        posts
            .lock()
            .expect("posts lock")
            .iter()
            .filter(|(id, n)| id.starts_with(prefix) && **n > 1)
            .count() as u64
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // A naive client: reuses its connection without a liveness probe and
    // never retries.
    let naive_gaps = gaps.clone();
    let naive: (u64, u64) = lab.link.client.run(move || async move {
        let (mut get_err, mut post_err) = (0, 0);
        let mut conn: Option<RawConn> = None;
        for (i, gap) in naive_gaps.iter().enumerate() {
            tokio::time::sleep(*gap).await;
            let post = is_post(i);
            if conn.is_none() {
                conn = RawConn::connect(addr, true).await.ok();
            }
            let Some(c) = conn.as_mut() else {
                continue;
            };
            let req = if post {
                format!(
                    "POST /lab/post HTTP/1.1\r\nHost: lab\r\nX-Id: naive-{i}\r\nContent-Length: 2\r\n\r\nhi"
                )
            } else {
                "GET /obj/0.png HTTP/1.1\r\nHost: lab\r\n\r\n".to_string()
            };
            let ok = c.stream.write_all(req.as_bytes()).await.is_ok()
                && matches!(c.response(Duration::from_secs(5)).await, Ok(Some(_)));
            if !ok {
                if post {
                    post_err += 1;
                } else {
                    get_err += 1;
                }
                conn = None;
            }
        }
        (get_err, post_err)
    });
    let kw_gaps = gaps.clone();
    let keepwire: (u64, u64, u64) = lab.link.client.run(move || async move {
        let client = Client::new(ClientConfig::default());
        let (mut get_err, mut post_err) = (0, 0);
        for (i, gap) in kw_gaps.iter().enumerate() {
            tokio::time::sleep(*gap).await;
            let post = is_post(i);
            let req = if post {
                Request::post(format!("http://{addr}/lab/post"))
                    .header("x-id", format!("keepwire-{i}"))
                    .body(Body::from("hi"))
            } else {
                Request::get(format!("http://{addr}/obj/0.png")).body(Body::empty())
            }
            .expect("valid request");
            let ok = match client.request(req).await {
                Ok(resp) => {
                    resp.status() == StatusCode::OK
                        && resp.into_body().collect(1 << 20).await.is_ok()
                }
                Err(_) => false,
            };
            if !ok {
                if post {
                    post_err += 1;
                } else {
                    get_err += 1;
                }
            }
        }
        let retries = client.metrics().retries.load(Ordering::Relaxed);
        (get_err, post_err, retries)
    });
    let (naive_dup, kw_dup) = (dup("naive-"), dup("keepwire-"));
    rows.push(row(
        "naive (no probe, no retry)",
        vec![
            Some(m as f64),
            Some(naive.0 as f64),
            Some(naive.1 as f64),
            None,
            Some(naive_dup as f64),
        ],
    ));
    rows.push(row(
        "keepwire client",
        vec![
            Some(m as f64),
            Some(keepwire.0 as f64),
            Some(keepwire.1 as f64),
            Some(keepwire.2 as f64),
            Some(kw_dup as f64),
        ],
    ));
    notes.push(format!(
        "the server closes connections idle for {} ms without announcing it; requests follow \
         idle gaps of {} ms",
        ms(t),
        gaps.iter()
            .map(|g| format!("{:.0}", ms(*g)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    notes.push(
        "keepwire probes a pooled connection before reuse and retries a request that failed \
         on a reused connection only if it is idempotent or was never sent (R8.3); a POST that \
         may have been sent is reported, never repeated"
            .into(),
    );
    lab.note_link(&mut notes);
    let pass = keepwire.0 == 0 && kw_dup == 0 && naive_dup == 0 && naive.0 + naive.1 > 0;
    outcome(
        &ALL[6],
        &[
            "requests",
            "GET errors",
            "POST errors",
            "retries",
            "POSTs run twice",
        ],
        rows,
        (1, None),
        pass,
        format!(
            "naive client: {} failed requests; keepwire: {} GET errors, {} POST errors, {} \
             retries, {} POSTs duplicated",
            naive.0 + naive.1,
            keepwire.0,
            keepwire.1,
            keepwire.2,
            kw_dup
        ),
        notes,
    )
}

/// Experiment 8 (R4.4, R4.5, R7.5): the page's first object takes `delay`
/// at the server. Pipelined on one HTTP/1.1 connection, every object behind
/// it waits (responses go in request order); multiplexed on one HTTP/2
/// connection, they do not.
fn hol_blocking(lab: &Lab) -> Outcome {
    let r = lab.r_ms();
    let delay = lab.sizes.dumb_idle / 2;
    let paths: Vec<String> = std::iter::once(format!("/lab/slow/{}", delay.as_millis()))
        .chain((1..PAGE_OBJECTS).map(|i| format!("/obj/{i}.css")))
        .collect();
    let addr = lab.origin;
    // (slow object ms, last other object ms, median other object ms)
    type Times = Result<(f64, f64, f64), String>;
    let pipelined_paths = paths.clone();
    let pipelined: Times = lab.link.client.run(move || async move {
        let mut c = RawConn::connect(addr, true)
            .await
            .map_err(|e| e.to_string())?;
        let mut batch = String::new();
        for p in &pipelined_paths {
            batch.push_str(&format!("GET {p} HTTP/1.1\r\nHost: lab\r\n\r\n"));
        }
        let t0 = Instant::now();
        c.stream
            .write_all(batch.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut done = Vec::new();
        for _ in &pipelined_paths {
            c.response(Duration::from_secs(30)).await?.ok_or("closed")?;
            done.push(ms(t0.elapsed()));
        }
        let others = done[1..].to_vec();
        Ok((
            done[0],
            quantile(others.clone(), 1.0),
            quantile(others, 0.5),
        ))
    });
    let multiplexed: Times = lab.link.client.run(move || async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = h2::client::handshake(tcp)
            .await
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_local(conn);
        let mut send = send.ready().await.map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for p in &paths {
            let req = Request::get(format!("http://{addr}{p}"))
                .body(())
                .map_err(|e| e.to_string())?;
            let (resp, _) = send.send_request(req, true).map_err(|e| e.to_string())?;
            tasks.push(tokio::task::spawn_local(async move {
                let mut body = resp.await?.into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Ok::<f64, h2::Error>(ms(t0.elapsed()))
            }));
        }
        let mut done = Vec::new();
        for t in tasks {
            done.push(
                t.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?,
            );
        }
        let others = done[1..].to_vec();
        Ok((
            done[0],
            quantile(others.clone(), 1.0),
            quantile(others, 0.5),
        ))
    });
    let d = ms(delay);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut last_other = [0.0; 2];
    for (i, (label, result, model)) in [
        ("pipelined, HTTP/1.1", pipelined, r + d),
        ("multiplexed, HTTP/2", multiplexed, r),
    ]
    .into_iter()
    .enumerate()
    {
        match result {
            Ok((slow, last, median)) => {
                last_other[i] = last;
                rows.push(row(
                    label,
                    vec![Some(slow), Some(median), Some(last), Some(model)],
                ));
            }
            Err(e) => {
                notes.push(format!("{label}: {e}"));
                rows.push(row(label, vec![None; 4]));
            }
        }
    }
    notes.push(format!(
        "one open connection each, all {PAGE_OBJECTS} requests sent at once; the first \
         takes {d:.0} ms at the server. Model for the other objects: pipelined 1 RTT + \
         {d:.0} ms (responses leave in request order), multiplexed 1 RTT"
    ));
    lab.note_link(&mut notes);
    let measured = rows.iter().all(|r| r.values.iter().all(Option::is_some));
    let pass = measured && last_other[1] + d / 2.0 < last_other[0];
    outcome(
        &ALL[7],
        &[
            "slow object ms",
            "others p50 ms",
            "others last ms",
            "model others ms",
        ],
        rows,
        (2, Some(3)),
        pass,
        format!(
            "the objects behind the slow one finished after {:.0} ms pipelined and {:.0} ms \
             multiplexed: HTTP/2 removes HTTP/1.1's head-of-line blocking",
            last_other[0], last_other[1]
        ),
        notes,
    )
}
