//! The page-load engine: URLs, or a page and its sub-resources, fetched
//! through one pooled [`Client`] configured for one of the chapter's ways to
//! load a page (R4.1–R4.5), with a [`Record`] per request of what the client
//! did with its connections: which one, new or reused, retries, and the
//! phases of R1.2.
//!
//! `keepwire get` prints these records and the lab's page-load experiments
//! measure them: both go through [`load`], so what the lab reports is what
//! a user sees with `keepwire get --page`.

mod fetch;
pub mod har;
pub mod record;
pub mod request;
pub mod writeout;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use keepwire::Client;
use keepwire::client::{ClientConfig, ClientMetrics};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::page::{self, SubResources};
pub use fetch::{Chunk, OnChunk};
use fetch::{Fetched, Job, Opts, fetch_one, pipeline_chunk, round3};
pub use record::{ConnRecord, Kind, Phases, Record, Strategy, Summary, TlsRecord};
pub use request::RequestSpec;

/// How [`load`] loads.
///
/// ```
/// use std::time::Duration;
/// use keepwire_lab::load::{LoadConfig, Strategy};
///
/// let config = LoadConfig::default()
///     .strategy(Strategy::Pipelined)
///     .connections(1)
///     .page(true)
///     .timeout(Duration::from_secs(5));
/// assert_eq!(config.depth, 16);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadConfig {
    /// How requests use connections. Default: persistent.
    pub strategy: Strategy,
    /// Connections per origin at most (parallel, persistent, pipelined;
    /// serial uses one). Default 6, as browsers.
    pub connections: u16,
    /// Pipelined: requests sent ahead on a connection before their
    /// responses. Default 16.
    pub depth: u16,
    /// Time allowed to connect, to write a request, and to wait for each
    /// response read. Default 30 s.
    pub timeout: Duration,
    /// Load each URL as a page: fetch it, then every same-origin
    /// sub-resource it references (see [`page::sub_resources`]).
    pub page: bool,
    /// `https://`: offer only HTTP/1.1 by ALPN. The serial, parallel and
    /// pipelined strategies always do.
    pub http1_only: bool,
    /// `https://` trust (`None`: the system's roots), e.g.
    /// `keepwire::client::tls::insecure_config()` for a self-signed server.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Keep the response bodies ([`Loaded::bodies`]).
    pub keep_bodies: bool,
    /// Write a `curl -v` style transcript of each request ([`LoadEvent::Done`]).
    pub transcript: bool,
    /// Sees each body chunk as it arrives (not with pipelined requests,
    /// whose bodies the client reads whole): how `keepwire get` prints a
    /// Server-Sent Events stream while it goes on.
    pub on_chunk: Option<OnChunk>,
    /// Method, headers, body and redirects of each request (default: a
    /// `GET` with `Host`, `User-Agent` and `Accept: */*`).
    pub request: RequestSpec,
    /// Forward proxies (`keepwire::client::proxy`); `None`: direct.
    pub proxy: Option<Arc<keepwire::client::proxy::ProxyConfig>>,
    /// HTTP/3 for `https://` ([`keepwire::client::Http3Mode`]). Default off.
    pub http3: keepwire::client::Http3Mode,
    /// Idempotent requests may go in QUIC 0-RTT early data.
    pub early_data: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            strategy: Strategy::Persistent,
            connections: 6,
            depth: 16,
            timeout: Duration::from_secs(30),
            page: false,
            http1_only: false,
            tls: None,
            keep_bodies: false,
            transcript: false,
            on_chunk: None,
            request: RequestSpec::default(),
            proxy: None,
            http3: keepwire::client::Http3Mode::Off,
            early_data: false,
        }
    }
}

impl LoadConfig {
    /// Sets [`LoadConfig::strategy`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
    /// Sets [`LoadConfig::connections`].
    pub fn connections(mut self, n: u16) -> Self {
        self.connections = n;
        self
    }
    /// Sets [`LoadConfig::depth`].
    pub fn depth(mut self, depth: u16) -> Self {
        self.depth = depth;
        self
    }
    /// Sets [`LoadConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets [`LoadConfig::page`].
    pub fn page(mut self, page: bool) -> Self {
        self.page = page;
        self
    }
    /// Sets [`LoadConfig::http1_only`].
    pub fn http1_only(mut self, yes: bool) -> Self {
        self.http1_only = yes;
        self
    }
    /// Sets [`LoadConfig::tls`].
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Sets [`LoadConfig::http3`] and [`LoadConfig::early_data`].
    pub fn http3(mut self, mode: keepwire::client::Http3Mode, early_data: bool) -> Self {
        self.http3 = mode;
        self.early_data = early_data;
        self
    }
    /// Sets [`LoadConfig::keep_bodies`].
    pub fn keep_bodies(mut self, yes: bool) -> Self {
        self.keep_bodies = yes;
        self
    }
    /// Sets [`LoadConfig::transcript`].
    pub fn transcript(mut self, yes: bool) -> Self {
        self.transcript = yes;
        self
    }

    /// Sets [`LoadConfig::request`].
    pub fn request(mut self, spec: RequestSpec) -> Self {
        self.request = spec;
        self
    }
    /// Sets [`LoadConfig::proxy`].
    pub fn proxy(mut self, proxy: keepwire::client::proxy::ProxyConfig) -> Self {
        self.proxy = (!proxy.is_empty()).then(|| Arc::new(proxy));
        self
    }

    /// Sets [`LoadConfig::on_chunk`].
    pub fn on_chunk(mut self, f: impl Fn(&Chunk<'_>) + Send + Sync + 'static) -> Self {
        self.on_chunk = Some(OnChunk(Arc::new(f)));
        self
    }

    /// The client for the strategy (R4.1–R4.5).
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::default();
        config.connect_timeout = self.timeout;
        config.write_timeout = self.timeout;
        config.response_timeout = self.timeout;
        config.http1_only = self.http1_only
            || matches!(
                self.strategy,
                Strategy::Serial | Strategy::Parallel | Strategy::Pipelined
            );
        config.tls = self.tls.clone();
        config.proxy = self.proxy.clone();
        config.http3 = self.http3;
        config.early_data = self.early_data;
        // Requests wait for a slot as long as the ones ahead take; those are
        // bounded by the timeouts above.
        config.pool.wait_timeout = Duration::from_secs(24 * 3600);
        let n = usize::from(self.connections);
        match self.strategy {
            Strategy::Serial => {
                config.pool.max_per_origin = 1;
                config.pool.reuse = false;
                config.close_after_each = true;
            }
            Strategy::Parallel => {
                config.pool.max_per_origin = n;
                config.pool.reuse = false;
                // R5.3: a request that is the last on its connection says so.
                config.close_after_each = true;
            }
            Strategy::Persistent | Strategy::Pipelined => {
                config.pool.max_per_origin = n;
            }
            Strategy::Multiplexed => {
                config.http2_prior_knowledge = true;
            }
        }
        config
    }
}

/// What happens during [`load`], as it happens.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadEvent<'a> {
    /// A request ended, or could not be made; `transcript` is empty unless
    /// [`LoadConfig::transcript`].
    Done {
        /// Its record.
        record: &'a Record,
        /// `> ` lines sent, `< ` lines received, `* ` lines about the connection.
        transcript: &'a str,
    },
    /// A page's response is not HTML: it has no sub-resources.
    NotHtml {
        /// The page.
        url: &'a Uri,
        /// Its `Content-Type`.
        content_type: Option<&'a str>,
    },
    /// A page's sub-resources were found, before they are fetched.
    Found {
        /// The page.
        url: &'a Uri,
        /// What it references: fetched and skipped.
        found: &'a SubResources,
    },
}

/// What [`load`] did.
#[derive(Debug)]
pub struct Loaded {
    /// One per request, in request order.
    pub records: Vec<Record>,
    /// The run as a whole.
    pub summary: Summary,
    /// With [`LoadConfig::keep_bodies`]: `(request index, body)` in request order.
    pub bodies: Vec<(usize, Bytes)>,
    /// Wall-clock time of the records' zero (`start_ms` 0), for HAR.
    pub started: std::time::SystemTime,
}

/// Fetches `urls` (text as a user types it: `host:port/path` means
/// `http://host:port/path`) by `config`, telling `on` about each request as
/// it ends. A URL that cannot be requested gets a failed record; the others
/// are still fetched.
pub async fn load(
    urls: &[String],
    config: &LoadConfig,
    on: &mut (dyn FnMut(LoadEvent<'_>) + Send),
) -> Loaded {
    let client_config = config.client_config();
    let started = std::time::SystemTime::now();
    let opts = Arc::new(Opts {
        transcript: config.transcript,
        keep_bodies: config.keep_bodies,
        on_chunk: config.on_chunk.clone(),
        close: client_config.close_after_each,
        depth: usize::from(config.depth),
        t0: Instant::now(),
        spec: config.request.clone(),
        proxy: config.proxy.clone(),
    });
    let mut run = Run {
        client: Client::new(client_config),
        opts,
        strategy: config.strategy,
        connections: usize::from(config.connections),
        records: Vec::new(),
        bodies: Vec::new(),
        next_index: 0,
        on,
    };
    if config.page {
        for text in urls {
            let index = run.next();
            match page::parse_url(text) {
                Ok(uri) => run.load_page(index, uri).await,
                Err(e) => run.reject(index, text, Kind::Page, e),
            }
        }
    } else {
        let mut jobs = Vec::new();
        for text in urls {
            let index = run.next();
            match page::parse_url(text) {
                Ok(url) => jobs.push(Job {
                    index,
                    url,
                    kind: Kind::Url,
                }),
                Err(e) => run.reject(index, text, Kind::Url, e),
            }
        }
        run.fetch_urls(jobs).await;
    }
    run.records.sort_by_key(|r| r.index);
    // Time zero is the first request's start (R4), not the set-up before
    // it (building the client loads the CA roots: tens of ms).
    let zero = run
        .records
        .iter()
        .map(|r| r.start_ms)
        .fold(f64::INFINITY, f64::min);
    let mut started = started;
    if zero.is_finite() {
        run.records
            .iter_mut()
            .for_each(|r| r.start_ms = round3(r.start_ms - zero));
        // `started` is the wall-clock time of the records' zero.
        started += Duration::from_secs_f64(zero.max(0.0) / 1000.0);
    }
    run.bodies.sort_by_key(|(i, _)| *i);
    let summary = summarize(&run.records, urls, config, run.client.metrics());
    Loaded {
        records: run.records,
        summary,
        bodies: run.bodies,
        started,
    }
}

fn summarize(
    records: &[Record],
    urls: &[String],
    config: &LoadConfig,
    metrics: &ClientMetrics,
) -> Summary {
    use std::sync::atomic::Ordering::Relaxed;
    let failed = records.iter().filter(|r| r.error.is_some()).count();
    let wall_ms = records.iter().map(Record::end_ms).fold(0.0, f64::max);
    Summary {
        strategy: config.strategy,
        max_connections: if matches!(config.strategy, Strategy::Serial | Strategy::Multiplexed) {
            1
        } else {
            config.connections
        },
        depth: (config.strategy == Strategy::Pipelined).then_some(config.depth),
        page: config.page,
        urls: urls.to_vec(),
        requests: records.len(),
        succeeded: records.len() - failed,
        failed,
        connections_opened: metrics.connections_opened.load(Relaxed),
        reused: records.iter().filter(|r| r.reused == Some(true)).count(),
        // The rows' retries, failed requests' included, so the summary
        // and the rows agree.
        retries: records.iter().map(|r| u64::from(r.retries)).sum(),
        bytes: records.iter().map(|r| r.size).sum(),
        wall_ms: round3(wall_ms),
    }
}

struct Run<'o> {
    client: Client,
    opts: Arc<Opts>,
    strategy: Strategy,
    connections: usize,
    records: Vec<Record>,
    bodies: Vec<(usize, Bytes)>,
    next_index: usize,
    on: &'o mut (dyn FnMut(LoadEvent<'_>) + Send),
}

impl Run<'_> {
    fn next(&mut self) -> usize {
        self.next_index += 1;
        self.next_index
    }

    /// A URL that cannot be requested.
    fn reject(&mut self, index: usize, text: &str, kind: Kind, error: String) {
        let f = Fetched::failed(index, text.to_string(), kind, &self.opts, error);
        self.finish(f);
    }

    /// Reports and keeps one finished request.
    fn finish(&mut self, f: Fetched) {
        (self.on)(LoadEvent::Done {
            record: &f.record,
            transcript: &f.transcript,
        });
        if self.opts.keep_bodies
            && let Some(b) = f.body
        {
            self.bodies.push((f.record.index, b));
        }
        self.records.push(f.record);
    }

    /// A page, then its same-origin sub-resources by the strategy.
    async fn load_page(&mut self, index: usize, url: Uri) {
        let job = Job {
            index,
            url: url.clone(),
            kind: Kind::Page,
        };
        let f = fetch_one(self.client.clone(), self.opts.clone(), job, true).await;
        let html = match (&f.record.error, &f.body) {
            (None, Some(b)) if is_html(f.record.content_type.as_deref()) => Some(b.clone()),
            _ => None,
        };
        let content_type = f.record.content_type.clone();
        let failed = f.record.error.is_some();
        self.finish(f);
        let Some(html) = html else {
            if !failed {
                (self.on)(LoadEvent::NotHtml {
                    url: &url,
                    content_type: content_type.as_deref(),
                });
            }
            return;
        };
        let found = page::sub_resources(&html, &url);
        (self.on)(LoadEvent::Found {
            url: &url,
            found: &found,
        });
        let jobs: Vec<Job> = found
            .fetch
            .into_iter()
            .map(|url| Job {
                index: self.next(),
                url,
                kind: Kind::Resource,
            })
            .collect();
        self.fetch_all(jobs).await;
    }

    /// URLs asked for as such (no `--page`): in order, at most
    /// `connections` at a time, as curl fetches several URLs. Spawned all
    /// at once (as a page's sub-resources are), each would find no idle
    /// connection and open its own up to the cap: nothing reused. The
    /// pipelined strategy splits them as it splits sub-resources.
    async fn fetch_urls(&mut self, jobs: Vec<Job>) {
        if self.strategy == Strategy::Pipelined || self.strategy == Strategy::Serial {
            return self.fetch_all(jobs).await;
        }
        let cap = self.connections.max(1);
        let mut jobs = jobs.into_iter();
        let mut set = JoinSet::new();
        let mut names = HashMap::new();
        loop {
            while set.len() < cap
                && let Some(job) = jobs.next()
            {
                let name = (job.index, job.url.to_string(), job.kind);
                let f = fetch_one(self.client.clone(), self.opts.clone(), job, false);
                names.insert(set.spawn(f).id(), name);
            }
            let Some(res) = set.join_next_with_id().await else {
                return;
            };
            match res {
                Ok((_, f)) => self.finish(f),
                Err(e) => {
                    if let Some((index, url, kind)) = names.remove(&e.id()) {
                        let error = format!("internal error: {e}");
                        let f = Fetched::failed(index, url, kind, &self.opts, error);
                        self.finish(f);
                    }
                }
            }
        }
    }

    /// Fetches `jobs` by the strategy.
    async fn fetch_all(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        match self.strategy {
            Strategy::Serial => {
                for job in jobs {
                    let f = fetch_one(self.client.clone(), self.opts.clone(), job, false).await;
                    self.finish(f);
                }
            }
            Strategy::Parallel | Strategy::Persistent | Strategy::Multiplexed => {
                // All at once: the pool's cap (N) and queue decide who waits,
                // as in a browser.
                let mut set = JoinSet::new();
                let mut names = HashMap::new();
                for job in jobs {
                    let name = (job.index, job.url.to_string(), job.kind);
                    let handle = set.spawn(fetch_one(
                        self.client.clone(),
                        self.opts.clone(),
                        job,
                        false,
                    ));
                    names.insert(handle.id(), vec![name]);
                }
                self.join(set, names, |f| vec![f]).await;
            }
            Strategy::Pipelined => {
                let mut set = JoinSet::new();
                let mut names = HashMap::new();
                for chunk in split_for_pipelining(jobs, self.connections) {
                    let list: Vec<_> = chunk
                        .iter()
                        .map(|j| (j.index, j.url.to_string(), j.kind))
                        .collect();
                    let handle = set.spawn(pipeline_chunk(
                        self.client.clone(),
                        self.opts.clone(),
                        chunk,
                    ));
                    names.insert(handle.id(), list);
                }
                self.join(set, names, |f| f).await;
            }
        }
    }

    /// Finishes the tasks' requests as they end; `names` says which
    /// requests each task had, for one that did not finish.
    async fn join<T: 'static>(
        &mut self,
        mut set: JoinSet<T>,
        mut names: HashMap<tokio::task::Id, Vec<(usize, String, Kind)>>,
        fetched: impl Fn(T) -> Vec<Fetched>,
    ) {
        while let Some(res) = set.join_next_with_id().await {
            match res {
                Ok((_, t)) => {
                    for f in fetched(t) {
                        self.finish(f);
                    }
                }
                // A request task that did not finish (it cannot panic by
                // design; this keeps the promise of a message rather than a
                // crash if it ever does).
                Err(e) => {
                    for (index, url, kind) in names.remove(&e.id()).unwrap_or_default() {
                        let error = format!("internal error: {e}");
                        let f = Fetched::failed(index, url, kind, &self.opts, error);
                        self.finish(f);
                    }
                }
            }
        }
    }
}

/// Splits jobs per origin, then each origin's list into at most `n`
/// contiguous runs (one pipelined connection each).
fn split_for_pipelining(jobs: Vec<Job>, n: usize) -> Vec<Vec<Job>> {
    let mut origins: Vec<((String, String, u16), Vec<Job>)> = Vec::new();
    for job in jobs {
        let o = page::origin(&job.url);
        match origins.iter_mut().find(|(k, _)| *k == o) {
            Some((_, list)) => list.push(job),
            None => origins.push((o, vec![job])),
        }
    }
    let mut out = Vec::new();
    for (_, list) in origins {
        let per = list.len().div_ceil(n.max(1));
        let mut list = list.into_iter().peekable();
        while list.peek().is_some() {
            out.push(list.by_ref().take(per).collect());
        }
    }
    out
}

fn is_html(content_type: Option<&str>) -> bool {
    match content_type {
        None => true,
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("text/html")
                || essence.eq_ignore_ascii_case("application/xhtml+xml")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(i: usize, url: &str) -> Job {
        Job {
            index: i,
            url: url.parse().unwrap(),
            kind: Kind::Resource,
        }
    }

    #[test]
    fn pipelining_splits_per_origin_into_contiguous_runs() {
        let jobs = (1..=7)
            .map(|i| job(i, &format!("http://a/{i}")))
            .chain([job(8, "http://b/x")])
            .collect();
        let chunks = split_for_pipelining(jobs, 3);
        let idx: Vec<Vec<usize>> = chunks
            .iter()
            .map(|c| c.iter().map(|j| j.index).collect())
            .collect();
        assert_eq!(idx, [vec![1, 2, 3], vec![4, 5, 6], vec![7], vec![8]]);
    }

    #[test]
    fn each_strategy_configures_the_client_as_the_chapter_says() {
        let default_cap = ClientConfig::default().pool.max_per_origin;
        // (strategy, per-origin cap, reuse, Connection: close, HTTP/1.1 only, h2c)
        let cases = [
            (Strategy::Serial, 1, false, true, true, false),
            (Strategy::Parallel, 4, false, true, true, false),
            (Strategy::Persistent, 4, true, false, false, false),
            (Strategy::Pipelined, 4, true, false, true, false),
            (Strategy::Multiplexed, default_cap, true, false, false, true),
        ];
        for (strategy, cap, reuse, close, http1, h2c) in cases {
            let c = LoadConfig::default()
                .strategy(strategy)
                .connections(4)
                .client_config();
            assert_eq!(
                (
                    c.pool.max_per_origin,
                    c.pool.reuse,
                    c.close_after_each,
                    c.http1_only,
                    c.http2_prior_knowledge
                ),
                (cap, reuse, close, http1, h2c),
                "{strategy:?}"
            );
        }
        let c = LoadConfig::default().http1_only(true).client_config();
        assert!(c.http1_only, "--http1.1 holds for every strategy");
    }

    #[test]
    fn html_content_types() {
        assert!(is_html(Some("text/html; charset=utf-8")));
        assert!(is_html(Some("TEXT/HTML")));
        assert!(is_html(None));
        assert!(!is_html(Some("text/css")));
    }
}
