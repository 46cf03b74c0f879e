//! One request, or one pipelined connection's share of them, through the
//! pooled client: the body read to its end, the phases measured, the
//! outcome written down as a [`Record`].
//!
//! The transcript (`keepwire get -v`) is written here, while the request and
//! the response heads are at hand, rather than kept whole for a printer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use keepwire::client::proxy::{ProxyConfig, ProxyUrl};
use keepwire::client::{PipelinedResponse, Timings};
use keepwire::{BodyError, Client, ClientError, RequestMeta};
use tokio::time::Instant;

use super::record::{ConnRecord, Kind, Phases, Record, TlsRecord};
use super::request::{self, Hop, RequestSpec};

/// A body chunk as it arrived ([`super::LoadConfig::on_chunk`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Chunk<'a> {
    /// The request's number (as in its [`Record`]).
    pub index: usize,
    /// The response's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The bytes.
    pub data: &'a Bytes,
}

/// A callback for each body chunk ([`super::LoadConfig::on_chunk`]).
#[derive(Clone)]
pub struct OnChunk(pub Arc<dyn Fn(&Chunk<'_>) + Send + Sync>);

impl std::fmt::Debug for OnChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnChunk(..)")
    }
}

/// Settings every request task needs.
pub(super) struct Opts {
    pub transcript: bool,
    pub keep_bodies: bool,
    pub on_chunk: Option<OnChunk>,
    /// Requests carry `Connection: close`.
    pub close: bool,
    pub depth: usize,
    pub t0: Instant,
    /// Method, headers, body and redirects of every request.
    pub spec: RequestSpec,
    /// The client's forward proxies, for the transcript.
    pub proxy: Option<Arc<ProxyConfig>>,
}

/// A request to make.
pub(super) struct Job {
    pub index: usize,
    pub url: Uri,
    pub kind: Kind,
}

/// A finished request: its record, its body if kept, its transcript.
pub(super) struct Fetched {
    pub record: Record,
    pub body: Option<Bytes>,
    pub transcript: String,
}

impl Fetched {
    /// A request that never reached the client.
    pub fn failed(index: usize, url: String, kind: Kind, opts: &Opts, error: String) -> Self {
        let start = ms(opts.t0.elapsed());
        let mut record = Record::failed(index, url, kind, start, error);
        // curl's "URL malformed": the request could not be formed.
        record.exit_code = 3;
        Fetched {
            record,
            body: None,
            transcript: String::new(),
        }
    }
}

/// One request, following redirects when asked (curl's `-L`): the record
/// is the last response's, with the redirects counted and its start and
/// total covering them all, as curl's `time_total` does.
pub(super) async fn fetch_one(client: Client, opts: Arc<Opts>, job: Job, keep: bool) -> Fetched {
    let mut hop = Hop::first(job.url.clone(), &opts.spec);
    let first_start = ms(opts.t0.elapsed());
    let (mut redirects, mut connects, mut retries) = (0u32, 0u32, 0u32);
    let mut transcript = String::new();
    loop {
        let mut f = fetch_hop(&client, &opts, &job, &hop, keep).await;
        connects += u32::from(f.record.reused == Some(false));
        retries += f.record.retries;
        transcript.push_str(&f.transcript);
        let next = match (opts.spec.follow, f.record.status, &f.record.error) {
            (Some(max), Some(status), None) => {
                request::next_hop(&hop, status, f.record.location.as_deref()).map(|n| (n, max))
            }
            _ => None,
        };
        match next {
            Some((next, max)) if redirects < max => {
                redirects += 1;
                if opts.transcript {
                    let _ = writeln!(
                        transcript,
                        "* #{} following the redirect to {}",
                        job.index, next.url
                    );
                }
                hop = next;
                continue;
            }
            Some((_, max)) => {
                f.record.error = Some(format!("maximum ({max}) redirects followed"));
                f.record.exit_code = 47;
            }
            None => {}
        }
        let end = f.record.end_ms();
        f.record.url = job.url.to_string();
        f.record.url_effective = hop.url.to_string();
        f.record.redirects = redirects;
        f.record.connects = connects;
        f.record.retries = retries;
        if redirects > 0 {
            f.record.start_ms = round3(first_start);
            f.record.total_ms = round3(end - first_start);
        }
        f.transcript = transcript;
        return f;
    }
}

/// The request line and fields as sent, kept for the record and `-v`.
struct Sent {
    method: Method,
    url: Uri,
    headers: HeaderMap,
    body: u64,
    /// The forward proxy it went through.
    proxy: Option<ProxyUrl>,
}

impl Sent {
    fn of(req: &Request<keepwire::Body>, opts: &Opts) -> Sent {
        let proxy = opts.proxy.as_ref().and_then(|p| {
            let origin = keepwire::client::origin_of(req.uri()).ok()?;
            p.for_origin(&origin).cloned()
        });
        Sent {
            method: req.method().clone(),
            url: req.uri().clone(),
            headers: req.headers().clone(),
            body: http_body::Body::size_hint(req.body()).exact().unwrap_or(0),
            proxy,
        }
    }
}

/// One request through the pool; reads the whole body (counting it, keeping
/// it if asked) and measures when it completed.
async fn fetch_hop(client: &Client, opts: &Opts, job: &Job, hop: &Hop, keep: bool) -> Fetched {
    let keep = keep || opts.keep_bodies;
    let url = hop.url.to_string();
    let req = match request::build(hop, &opts.spec, opts.close) {
        Ok(r) => r,
        Err(e) => return Fetched::failed(job.index, url, job.kind, opts, e),
    };
    let sent = Sent::of(&req, opts);
    let mut transcript = String::new();
    let start = Instant::now();
    let start_ms = ms(start.duration_since(opts.t0));
    let resp = client.request(req).await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let mut record = Record::failed(job.index, url, job.kind, start_ms, client_cause(&e));
            record.exit_code = request::exit_code(&e);
            record.retries = keepwire::client::Unanswered::of(&e).map_or(0, |u| u.resends);
            record.start_ms = round3(start_ms);
            record.total_ms = round3(ms(start.elapsed()));
            fill_sent(&mut record, &sent);
            if opts.transcript {
                transcript = failure_note(&request_head(&sent, Version::HTTP_11, 0), &record);
            }
            return Fetched {
                record,
                body: None,
                transcript,
            };
        }
    };
    let head_at = start.elapsed();
    let (parts, mut body) = resp.into_parts();
    let meta = parts.extensions.get::<RequestMeta>().copied();
    if opts.transcript {
        if let Some(m) = &meta {
            transcript.push_str(&conn_note(job.index, m));
        }
        let stream = meta.map_or(0, |m| m.conn_request_index);
        transcript.push_str(&request_head(&sent, parts.version, stream));
        transcript.push_str(&response_head(parts.version, parts.status, &parts.headers));
    }
    let mut size = 0u64;
    let mut kept = keep.then(BytesMut::new);
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let body_error = loop {
        match body.frame().await {
            None => break None,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if let Some(on) = &opts.on_chunk {
                        (on.0)(&Chunk {
                            index: job.index,
                            content_type,
                            data: &data,
                        });
                    }
                    size += data.len() as u64;
                    if let Some(k) = kept.as_mut() {
                        k.extend_from_slice(&data);
                    }
                }
            }
            Some(Err(e)) => break Some((body_cause(&e), request::body_exit_code(&e))),
        }
    };
    let complete = start.elapsed();
    let mut record = match &meta {
        Some(m) => record_from_meta(job.index, &hop.url, job.kind, start_ms, m, complete),
        None => {
            // Every response of the client carries its meta; if one ever
            // does not, the request still gets a row.
            let mut r = Record::failed(job.index, url, job.kind, start_ms, String::new());
            r.error = None;
            r.first_byte_ms = Some(round3(ms(head_at)));
            r.total_ms = round3(ms(complete));
            r
        }
    };
    record.status = Some(parts.status.as_u16());
    record.version = Some(format!("{:?}", parts.version));
    record.content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    record.size = size;
    record.exit_code = body_error.as_ref().map_or(0, |(_, code)| *code);
    record.error = body_error.map(|(e, _)| e);
    fill_sent(&mut record, &sent);
    fill_received(&mut record, parts.version, parts.status, &parts.headers);
    if opts.transcript {
        match &record.error {
            Some(e) => {
                let _ = writeln!(transcript, "* #{} {}: {e}", job.index, record.url);
            }
            None => {
                let _ = writeln!(
                    transcript,
                    "* #{} {size} body bytes, complete after {:.2} ms",
                    job.index, record.total_ms
                );
            }
        }
    }
    Fetched {
        record,
        body: kept.map(BytesMut::freeze),
        transcript,
    }
}

/// One pipelined connection's share of the jobs (R7): `client.pipeline`
/// sends them down one persistent connection, `depth` at a time.
pub(super) async fn pipeline_chunk(
    client: Client,
    opts: Arc<Opts>,
    jobs: Vec<Job>,
) -> Vec<Fetched> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut requests = Vec::new();
    let mut sent = Vec::new();
    for job in jobs {
        match request::build(
            &Hop::first(job.url.clone(), &opts.spec),
            &opts.spec,
            opts.close,
        ) {
            Ok(req) => {
                let head = Sent::of(&req, &opts);
                requests.push(req);
                sent.push((job, head));
            }
            Err(e) => out.push(Fetched::failed(
                job.index,
                job.url.to_string(),
                job.kind,
                &opts,
                e,
            )),
        }
    }
    let start = Instant::now();
    let start_ms = ms(start.duration_since(opts.t0));
    let results: Vec<PipelinedResponse> = client.pipeline(requests, opts.depth).await;
    let ended = start.elapsed();
    for ((job, head), result) in sent.into_iter().zip(results) {
        out.push(pipelined_record(job, head, result, start_ms, ended, &opts));
    }
    out
}

fn pipelined_record(
    job: Job,
    sent: Sent,
    result: PipelinedResponse,
    start_ms: f64,
    ended: Duration,
    opts: &Opts,
) -> Fetched {
    let mut transcript = String::new();
    match result {
        Err(e) => {
            let mut record = Record::failed(
                job.index,
                job.url.to_string(),
                job.kind,
                round3(start_ms),
                client_cause(&e),
            );
            record.pipelined = true;
            record.exit_code = request::exit_code(&e);
            record.retries = keepwire::client::Unanswered::of(&e).map_or(0, |u| u.resends);
            record.total_ms = round3(ms(ended));
            fill_sent(&mut record, &sent);
            if opts.transcript {
                transcript = failure_note(&request_head(&sent, Version::HTTP_11, 0), &record);
            }
            Fetched {
                record,
                body: None,
                transcript,
            }
        }
        Ok((resp, meta)) => {
            // The library reads a pipelined body whole right after its head.
            let complete = meta.timings.complete.unwrap_or(meta.timings.first_byte);
            let mut record =
                record_from_meta(job.index, &job.url, job.kind, start_ms, &meta, complete);
            record.pipelined = true;
            record.status = Some(resp.status().as_u16());
            record.version = Some(format!("{:?}", resp.version()));
            record.content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            record.size = resp.body().len() as u64;
            fill_sent(&mut record, &sent);
            fill_received(&mut record, resp.version(), resp.status(), resp.headers());
            if opts.transcript {
                transcript.push_str(&conn_note(job.index, &meta));
                transcript.push_str(&request_head(
                    &sent,
                    resp.version(),
                    meta.conn_request_index,
                ));
                transcript.push_str(&response_head(
                    resp.version(),
                    resp.status(),
                    resp.headers(),
                ));
                let _ = writeln!(
                    transcript,
                    "* #{} {} body bytes, pipelined, complete after {:.2} ms",
                    job.index, record.size, record.total_ms
                );
            }
            Fetched {
                record,
                body: opts.keep_bodies.then(|| resp.into_body()),
                transcript,
            }
        }
    }
}

/// The transcript of a request that got no response: what was sent, and why.
fn failure_note(sent_head: &str, record: &Record) -> String {
    format!(
        "{sent_head}* #{} {}: {}\n",
        record.index,
        record.url,
        record.error.as_deref().unwrap_or("")
    )
}

/// A one-line cause for a failed request.
fn client_cause(e: &ClientError) -> String {
    match e {
        ClientError::InvalidUrl(m) => format!("invalid URL: {m}"),
        ClientError::Resolve(io) => format!("cannot resolve the host name: {io}"),
        ClientError::Connect(io) => format!("cannot connect: {io}"),
        ClientError::Io(io) => format!("connection failed: {io}"),
        ClientError::Protocol(p) if p.is_truncated() => format!("truncated response: {p}"),
        ClientError::Protocol(p) => format!("protocol error: {p}"),
        other => other.to_string(),
    }
}

fn body_cause(e: &BodyError) -> String {
    match e {
        BodyError::Protocol(p) if p.is_truncated() => format!("truncated body: {p}"),
        BodyError::Protocol(p) => format!("body: protocol error: {p}"),
        BodyError::Closed => "truncated body: the connection closed before the body ended".into(),
        BodyError::Source(s) => format!("body: {s}"),
        other @ (BodyError::TooLarge(_) | BodyError::TimedOut(_)) => other.to_string(),
    }
}

/// The record's copy of what was sent.
fn fill_sent(record: &mut Record, sent: &Sent) {
    record.method = sent.method.to_string();
    record.request_headers = pairs(&sent.headers);
    record.request_body_size = sent.body;
}

/// The record's copy of the response head.
fn fill_received(
    record: &mut Record,
    version: Version,
    status: http::StatusCode,
    headers: &HeaderMap,
) {
    record.header_size = request::head_size(version, status, headers);
    record.response_headers = pairs(headers);
    record.location = headers
        .get(LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
}

fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The `> ` lines of a request head as `version` sends it: over HTTP/2,
/// curl's `* [HTTP/2] [stream] [:pseudo: value]` lines first, then the
/// fields h2 sends (no `Host`, no connection-specific fields; stream `n`
/// is the `n`th on its connection).
fn request_head(sent: &Sent, version: Version, stream: u64) -> String {
    let path = sent.url.path_and_query().map_or("/", |p| p.as_str());
    let mut s = String::new();
    let mut headers = sent.headers.clone();
    let shown = if version == Version::HTTP_2 || version == Version::HTTP_3 {
        // Client-initiated bidirectional streams: 1, 3, 5 in HTTP/2; 0, 4,
        // 8 in QUIC.
        let id = if version == Version::HTTP_3 {
            4 * stream
        } else {
            2 * stream + 1
        };
        let scheme = sent.url.scheme_str().unwrap_or("http");
        let authority = match sent.headers.get(HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => host.to_string(),
            None => keepwire::client::origin_of(&sent.url)
                .map(|o| format!("{}:{}", o.host, o.port))
                .unwrap_or_default(),
        };
        s.push_str(&keepwire::client::verbose::pseudo_headers(
            version,
            id,
            &[
                (":method", sent.method.as_str()),
                (":scheme", scheme),
                (":authority", authority.as_str()),
                (":path", path),
            ],
        ));
        headers.remove(HOST);
        keepwire::proto::hop::strip_hop_by_hop(&mut headers, false);
        if version == Version::HTTP_3 {
            "HTTP/3"
        } else {
            "HTTP/2"
        }
    } else {
        "HTTP/1.1"
    };
    let absolute = sent.url.to_string();
    let mut target = path;
    if let Some(p) = &sent.proxy {
        if sent.url.scheme_str() == Some("https") {
            let o =
                keepwire::client::origin_of(&sent.url).map(|o| format!("{}:{}", o.host, o.port));
            let _ = writeln!(
                s,
                "* via the proxy {p}: CONNECT {} tunnel",
                o.unwrap_or_default()
            );
        } else {
            let _ = writeln!(s, "* via the proxy {p}, in absolute-form");
            target = &absolute;
        }
    }
    let _ = writeln!(s, "> {} {target} {shown}", sent.method);
    for (name, value) in &headers {
        let _ = writeln!(s, "> {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    if let Some(p) = sent.proxy.as_ref().filter(|_| target == absolute)
        && p.authorization().is_some()
    {
        s.push_str("> proxy-authorization: Basic [redacted]\n");
    }
    s.push_str(">\n");
    s
}

/// The `< ` lines of a response head.
fn response_head(version: Version, status: http::StatusCode, headers: &HeaderMap) -> String {
    let mut s = keepwire::client::verbose::status_line(version, status);
    for (name, value) in headers {
        let _ = writeln!(s, "< {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    s.push_str("<\n");
    s
}

/// The `* ` lines that say which connection carried a request.
fn conn_note(index: usize, meta: &RequestMeta) -> String {
    let mut s = if meta.reused {
        format!(
            "* #{index} connection #{} reused (request {} on it) {} -> {}\n",
            meta.conn.id,
            meta.conn_request_index + 1,
            meta.conn.local,
            meta.conn.peer
        )
    } else {
        let mut s = format!(
            "* #{index} connection #{} new {} -> {}\n",
            meta.conn.id, meta.conn.local, meta.conn.peer
        );
        if let Some(q) = meta.conn.quic {
            // QUIC: the handshake is TLS 1.3's, inside QUIC's packets.
            let handshake = meta.timings.connect.unwrap_or_default();
            let _ = writeln!(
                s,
                "* #{index} QUIC handshake {:.1} ms, QUIC version {}, TLSv1.3, ALPN h3",
                handshake.as_secs_f64() * 1e3,
                q.version
            );
        } else if let Some(t) = meta.conn.tls {
            let alpn = t.alpn.unwrap_or("none (HTTP/1.1)");
            let _ = writeln!(s, "* #{index} TLS {} {}, ALPN {alpn}", t.version, t.cipher);
        }
        s
    };
    if let Some(q) = meta.conn.quic
        && (!meta.reused || meta.early_data)
    {
        let zero_rtt = match q.zero_rtt {
            None => "not tried (no session ticket, or --early-data off)",
            Some(true) if meta.early_data => "accepted (this request went in early data)",
            Some(true) => "accepted",
            Some(false) => "rejected by the server",
        };
        let _ = writeln!(s, "* #{index} 0-RTT: {zero_rtt}");
    }
    if meta.retries > 0 {
        let _ = writeln!(
            s,
            "* #{index} retried {} time(s) on a fresh connection (R8.3)",
            meta.retries
        );
    }
    s
}

/// Phases from the library's timings (each measured from the request's
/// start) and our `complete`.
fn phases(t: &Timings, reused: bool, complete: Duration) -> Phases {
    let mut at = t.queued;
    let (dns, connect) = if reused {
        (None, None)
    } else {
        (t.dns, t.connect)
    };
    let dns = dns.map(|d| {
        at += d;
        ms(d)
    });
    let connect = connect.map(|d| {
        at += d;
        ms(d)
    });
    let written = t.written.max(at);
    let first = t.first_byte.max(written);
    let complete = complete.max(first);
    Phases {
        queued: round3(ms(t.queued)),
        dns: dns.map(round3),
        connect: connect.map(round3),
        tls: t.tls.filter(|_| !reused).map(|d| round3(ms(d))),
        send: round3(ms(written - at)),
        wait: round3(ms(first - written)),
        download: round3(ms(complete - first)),
    }
}

fn record_from_meta(
    index: usize,
    url: &Uri,
    kind: Kind,
    start_ms: f64,
    meta: &RequestMeta,
    complete: Duration,
) -> Record {
    Record {
        index,
        url: url.to_string(),
        kind,
        status: None,
        version: None,
        content_type: None,
        size: 0,
        connection: Some(ConnRecord {
            id: meta.conn.id,
            local: meta.conn.local.to_string(),
            peer: meta.conn.peer.to_string(),
            tls: meta.conn.tls.map(|t| TlsRecord {
                version: t.version,
                cipher: t.cipher,
                alpn: t.alpn,
            }),
        }),
        reused: Some(meta.reused),
        conn_request_index: Some(meta.conn_request_index),
        retries: meta.retries,
        pipelined: false,
        start_ms: round3(start_ms),
        phases_ms: Some(phases(&meta.timings, meta.reused, complete)),
        first_byte_ms: Some(round3(ms(meta.timings.first_byte))),
        total_ms: round3(ms(complete.max(meta.timings.first_byte))),
        error: None,
        ..Record::failed(index, url.to_string(), kind, start_ms, String::new())
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_each_other() {
        let t = Timings {
            queued: Duration::from_millis(1),
            dns: Some(Duration::from_millis(2)),
            connect: Some(Duration::from_millis(3)),
            written: Duration::from_millis(7),
            first_byte: Duration::from_millis(10),
            ..Timings::default()
        };
        let p = phases(&t, false, Duration::from_millis(15));
        assert_eq!(
            (p.queued, p.dns, p.connect, p.send, p.wait, p.download),
            (1.0, Some(2.0), Some(3.0), 1.0, 3.0, 5.0)
        );
        let p = phases(&t, true, Duration::from_millis(15));
        assert_eq!((p.dns, p.connect, p.send), (None, None, 6.0));
    }
}
