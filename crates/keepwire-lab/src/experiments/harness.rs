//! The harness every experiment runs in: the servers on the server side
//! of the link, started once ([`Lab`]), what an experiment reports
//! ([`Outcome`]), and its repeats ([`Experiment::repeated`]).
//!
//! Why repeats: with `--loss`, one lost segment costs a retransmission
//! timeout (200 ms or more), several round trips of the 50 ms link, so a
//! single sample can land on either side of a verdict. An experiment is run
//! N times; every measured value becomes its median with p10–p90 and N, the
//! verdict is judged again on the medians by the experiment's own judge,
//! and the timeouts the two namespaces' TCP stacks counted are reported.

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

use super::stats::Spread;
use crate::link::Link;
use crate::load::{Phases, Record};
use crate::site::Site;

/// One row of an experiment's table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured (a strategy, a setting).
    pub label: String,
    /// Values in the experiment's column order; `None` is "-". Over
    /// repeats: the medians.
    pub values: Vec<Option<f64>>,
    /// Per value: median, p10, p90 and N over the repeats that measured it.
    pub spread: Vec<Option<Spread>>,
    /// Repeats this row was measured in.
    pub n: usize,
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
    /// Times the experiment ran; its rows are medians over them.
    pub repeats: usize,
    /// Of those, the runs whose own verdict matched.
    pub runs_matched: usize,
    /// Losses and retransmissions while it ran (all repeats).
    pub losses: Losses,
}

/// What loss cost an experiment: the link's drops and what the two
/// namespaces' TCP stacks counted (`TcpExt: TCPTimeouts` and `Tcp:
/// RetransSegs` of `/proc/thread-self/net/{netstat,snmp}`, per network
/// namespace, so only this lab's connections). The counters are `None` on
/// the approximate link, whose sockets share the host's namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Losses {
    /// Packets the delay line dropped (loss model or full queue).
    pub dropped_packets: u64,
    /// Retransmission timeouts (RTO expiries, SYN timeouts included).
    pub rto: Option<u64>,
    /// Segments retransmitted (timeouts and fast retransmits).
    pub retransmitted_segments: Option<u64>,
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
    /// Runs it once.
    pub run: fn(&Lab) -> Outcome,
    /// Repeats by default on a lossy link (on a lossless one: 1).
    pub repeats: usize,
    /// Its verdict from its rows (medians over repeats): the same function
    /// judges a single run. `None`: the majority of the runs' verdicts.
    pub judge: Option<Judge>,
}

/// An experiment's verdict from its table: does it match, and in words.
pub type Judge = fn(&Lab, &[Row]) -> (bool, String);

impl Experiment {
    /// Repeats when none are asked for: `repeats` on a lossy link, where a
    /// timeout can flip one sample; one on a lossless link, where runs
    /// agree and time matters.
    pub fn default_repeats(&self, loss: f64) -> usize {
        if loss > 0.0 { self.repeats.max(1) } else { 1 }
    }

    /// Runs it `n` times (at least once) and summarises: every value the
    /// median of its repeats with p10–p90 and N, the verdict judged on the
    /// medians, the waterfalls and timelines of the last run, the notes of
    /// all (each once), and the losses counted over all.
    pub fn repeated(&self, lab: &Lab, n: usize) -> Outcome {
        let before = lab.counters();
        let runs: Vec<Outcome> = (0..n.max(1)).map(|_| (self.run)(lab)).collect();
        let after = lab.counters();
        let mut o = summarise(runs, |rows| self.judge.map(|j| j(lab, rows)));
        o.losses = Losses {
            dropped_packets: after.0.saturating_sub(before.0),
            rto: after.1.zip(before.1).map(|(a, b)| a.saturating_sub(b)),
            retransmitted_segments: after.2.zip(before.2).map(|(a, b)| a.saturating_sub(b)),
        };
        o
    }
}

/// The outcome of several runs of one experiment: rows matched by label (in
/// order of first appearance), each value's spread, the verdict from
/// `judge` on the medians, or the majority of the runs' if it has none.
pub(super) fn summarise(
    runs: Vec<Outcome>,
    judge: impl FnOnce(&[Row]) -> Option<(bool, String)>,
) -> Outcome {
    let matched = runs.iter().filter(|o| o.pass).count();
    let n = runs.len();
    let mut labels: Vec<&str> = Vec::new();
    for r in runs.iter().flat_map(|o| &o.rows) {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    let rows: Vec<Row> = labels
        .iter()
        .map(|label| {
            let same: Vec<&Row> = runs
                .iter()
                .filter_map(|o| o.rows.iter().find(|r| r.label == *label))
                .collect();
            let width = same.iter().map(|r| r.values.len()).max().unwrap_or(0);
            let spread: Vec<Option<Spread>> = (0..width)
                .map(|c| {
                    let v: Vec<f64> = same
                        .iter()
                        .filter_map(|r| r.values.get(c).copied().flatten())
                        .collect();
                    Spread::of(&v)
                })
                .collect();
            Row {
                label: label.to_string(),
                values: spread.iter().map(|s| s.map(|s| s.median)).collect(),
                spread,
                n: same.len(),
            }
        })
        .collect();
    let mut notes: Vec<String> = Vec::new();
    for note in runs.iter().flat_map(|o| &o.notes) {
        if !notes.contains(note) {
            notes.push(note.clone());
        }
    }
    let mut o = runs.into_iter().last().expect("at least one run");
    let (pass, verdict) = match judge(&rows) {
        Some(v) if n > 1 => v,
        Some(_) | None if n == 1 => (o.pass, o.verdict.clone()),
        _ => (
            matched * 2 > n,
            format!("{matched} of {n} runs matched; the last: {}", o.verdict),
        ),
    };
    // One run keeps its rows as it made them: an experiment that repeats
    // inside its run (transport-hol) has already put its spread there.
    if n > 1 {
        o.rows = rows;
    }
    o.notes = notes;
    o.pass = pass;
    o.verdict = verdict;
    o.repeats = n;
    o.runs_matched = matched;
    o
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
        repeats: 1,
        runs_matched: usize::from(pass),
        losses: Losses::default(),
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
    /// Page loads per loss rate and protocol in `transport-hol`.
    pub(super) hol_reps: usize,
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

/// The lab's origin: the demo site plus `/lab/bytes/N`, `/lab/paced/N`
/// and `POST /lab/post`.
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
        if let Some(n) = path.strip_prefix("/lab/paced/") {
            return super::paced::paced(n.parse().unwrap_or(0));
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
                hol_reps: 10,
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
                hol_reps: 30,
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

    /// The link's drops, and the timeouts and retransmitted segments of
    /// both namespaces (exact link only).
    fn counters(&self) -> (u64, Option<u64>, Option<u64>) {
        let dropped = self.link.dropped.load(std::sync::atomic::Ordering::Relaxed);
        if !self.link.exact {
            return (dropped, None, None);
        }
        let read = || async { tcp_counters() };
        let (c, s) = (self.link.client.run(read), self.link.server.run(read));
        let sum = |f: fn(&(u64, u64)) -> u64| c.zip(s).map(|(c, s)| f(&c) + f(&s));
        (dropped, sum(|t| t.0), sum(|t| t.1))
    }

    pub(super) fn note_link(&self, notes: &mut Vec<String>) {
        if !self.link.exact {
            notes.push(
                "approximate: loopback relay (no real handshake, slow start, Nagle or RST)".into(),
            );
        }
    }
}

/// `TCPTimeouts` and `RetransSegs` of the calling thread's network
/// namespace (`/proc/thread-self`: `/proc/net` is the process's).
fn tcp_counters() -> Option<(u64, u64)> {
    let field = |file: &str, prefix: &str, name: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).ok()?;
        let mut lines = text.lines().filter(|l| l.starts_with(prefix));
        let (names, values) = (lines.next()?, lines.next()?);
        let at = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(at)?.parse().ok()
    };
    Some((
        field("netstat", "TcpExt:", "TCPTimeouts")?,
        field("snmp", "Tcp:", "RetransSegs")?,
    ))
}

/// A row of a table: one run's values.
pub(super) fn row(label: impl Into<String>, values: Vec<Option<f64>>) -> Row {
    Row {
        label: label.into(),
        spread: values
            .iter()
            .map(|v| v.and_then(|v| Spread::of(&[v])))
            .collect(),
        values,
        n: 1,
    }
}

/// The value in column `col` of the row labelled `label`.
pub(super) fn value(rows: &[Row], label: &str, col: usize) -> Option<f64> {
    rows.iter()
        .find(|r| r.label == label)?
        .values
        .get(col)
        .copied()
        .flatten()
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

#[cfg(test)]
mod tests {
    use super::*;

    const E: Experiment = Experiment {
        id: "synthetic",
        title: "t",
        rules: "R0",
        run: |_| unreachable!("not run"),
        repeats: 3,
        judge: None,
    };

    /// One run of a Nagle-like experiment: Nagle off and on at the median.
    fn run(off: f64, on: f64, note: &str) -> Outcome {
        let rows = vec![
            row("off", vec![Some(off), None]),
            row("on", vec![Some(on), Some(140.0)]),
        ];
        let (pass, verdict) = judge(&rows);
        outcome(
            &E,
            &["p50 ms", "model ms"],
            rows,
            (0, Some(1)),
            pass,
            verdict,
            vec![note.into()],
        )
    }

    fn judge(rows: &[Row]) -> (bool, String) {
        let (off, on) = (value(rows, "off", 0), value(rows, "on", 0));
        match off.zip(on) {
            Some((off, on)) => (on >= off + 40.0, format!("on − off = {}", on - off)),
            None => (false, "not measured".into()),
        }
    }

    #[test]
    fn the_verdict_is_on_the_medians_not_on_one_run() {
        // The second run's Nagle-off sample hit a retransmission timeout:
        // judged alone it would flip the verdict.
        let runs = vec![
            run(51.0, 145.0, "a"),
            run(260.0, 146.0, "b"),
            run(52.0, 150.0, "a"),
        ];
        assert!(!runs[1].pass, "the flipped run fails on its own");
        let o = summarise(runs, |rows| Some(judge(rows)));
        assert!(o.pass, "{o:?}");
        assert_eq!(o.verdict, "on − off = 94");
        assert_eq!((o.repeats, o.runs_matched), (3, 2));
        let off = &o.rows[0];
        assert_eq!((off.label.as_str(), off.n), ("off", 3));
        assert_eq!(off.values, vec![Some(52.0), None]);
        let s = off.spread[0].expect("a spread");
        assert_eq!((s.median, s.n), (52.0, 3));
        assert!(
            (s.p10 - 51.2).abs() < 1e-9 && (s.p90 - 218.4).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(off.spread[1], None, "never measured: no spread");
        assert_eq!(o.notes, vec!["a".to_string(), "b".to_string()], "each once");
    }

    #[test]
    fn rows_are_matched_by_label_and_one_run_keeps_its_verdict() {
        let mut failed = run(50.0, 150.0, "x");
        failed.rows.remove(1);
        let o = summarise(vec![run(50.0, 150.0, "x"), failed], |rows| {
            Some(judge(rows))
        });
        assert_eq!(o.rows.iter().map(|r| r.n).collect::<Vec<_>>(), vec![2, 1]);
        assert!(o.pass);
        // One run: its own verdict, not a second opinion, and its own
        // spread (repeats inside the run), not one of a single sample.
        let mut single = run(50.0, 60.0, "x");
        single.pass = true;
        single.rows[0].spread[0] = Spread::of(&[40.0, 50.0, 90.0]);
        let o = summarise(vec![single], |_| Some((false, "ignored".into())));
        assert!(o.pass && o.repeats == 1, "{o:?}");
        assert_eq!(o.rows[0].spread[0].map(|s| s.n), Some(3));
    }

    #[test]
    fn without_a_judge_the_majority_of_runs_decides() {
        let o = summarise(
            vec![
                run(50.0, 150.0, "x"),
                run(50.0, 60.0, "x"),
                run(50.0, 150.0, "x"),
            ],
            |_| None,
        );
        assert!(o.pass);
        assert!(
            o.verdict.starts_with("2 of 3 runs matched"),
            "{}",
            o.verdict
        );
        let o = summarise(vec![run(50.0, 150.0, "x"), run(50.0, 60.0, "x")], |_| None);
        assert!(!o.pass, "a tie is not a majority");
    }

    #[test]
    fn default_repeats_apply_only_with_loss() {
        assert_eq!(E.default_repeats(0.0), 1);
        assert_eq!(E.default_repeats(0.01), 3);
    }
}
