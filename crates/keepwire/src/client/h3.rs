//! The client's HTTP/3 path: QUIC (quinn) to an `https://` origin's UDP
//! port, one multiplexed connection per origin as with HTTP/2 (R4.5).
//!
//! Why it exists: HTTP/2 still has TCP's head-of-line blocking (one lost
//! segment stalls every stream), and TCP plus TLS 1.3 cost two round trips
//! before the request; QUIC keeps streams independent in the transport and
//! its handshake is TLS's, one round trip, zero on resumption.
//!
//! When HTTP/3 is used is [`Http3Mode`](super::Http3Mode)'s business: with
//! `Prefer` and `AltSvc` a QUIC handshake races TCP (QUIC first, TCP after
//! [`QUIC_HEAD_START`]); the first to connect carries the request and the
//! other stays open for later ones. An origin whose QUIC failed is marked
//! broken (`alt_svc.rs`) and goes over TCP meanwhile; with `Only` a QUIC
//! failure is the request's error.
//!
//! 0-RTT (early data) is opt-in ([`ClientConfig::early_data`]) and R8.3
//! applies to it (RFC 8470): the server may see early data twice, so only
//! idempotent requests go before the handshake is confirmed; any other
//! request on that connection waits for it. A server that rejects early
//! data never processed it, nor one that answers 425 Too Early: the request
//! goes again on a fresh connection, without early data.
//!
//! Everything read from the network is bounded as over TCP: the handshake
//! by `connect_timeout`, the response head by the limits' `max_head_bytes`
//! (QPACK's `SETTINGS_MAX_FIELD_SECTION_SIZE`), the wait for it by
//! `response_timeout`, each body read by `response_timeout` and the body by
//! `limits.max_body_bytes`, memory in flight by QUIC's flow control.
//!
//! [`ClientConfig::early_data`]: super::ClientConfig::early_data

mod open;
mod upload;

use upload::{Upload, upload};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use keepwire_proto::RequestHead;
use keepwire_proto::hop::is_idempotent;
use tokio::sync::watch;
use tokio::time::Instant;

use super::alt_svc::AltSvcCache;
use super::conn::ConnMeta;
use super::h2::multiplexed_request;
use super::pool::Origin;
use super::replay::ReplayBody;
use super::retry::{AttemptState, FailedAttempt};
use super::{Client, ClientError, Http3Mode, RequestMeta, TcpWon, Timings};
use crate::body::Body;
use crate::body::h3_recv::{self, Reads};

/// How long QUIC runs alone before TCP joins the race (curl's `--http3`
/// eyeballing uses 200 ms too): long enough for a QUIC handshake on most
/// paths, short enough that a network that drops UDP costs little.
pub const QUIC_HEAD_START: Duration = Duration::from_millis(200);

/// QUIC version 1 (RFC 9000), the one quinn speaks.
const QUIC_V1: u32 = 1;

/// What an HTTP/3 connection's QUIC handshake agreed on (in
/// [`ConnMeta::quic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicInfo {
    /// The QUIC version (1: RFC 9000).
    pub version: u32,
    /// 0-RTT: `None` not tried (no ticket, or early data off); `Some(true)`
    /// the server accepted the early data, `Some(false)` it rejected it.
    pub zero_rtt: Option<bool>,
}

/// Why an HTTP/3 request or its QUIC connection failed.
#[derive(Debug, Clone)]
pub struct Http3Error {
    reason: String,
    unprocessed: bool,
}

impl Http3Error {
    fn new(reason: impl std::fmt::Display, unprocessed: bool) -> Self {
        Http3Error {
            reason: reason.to_string(),
            unprocessed,
        }
    }

    /// The server provably did not process the request (`H3_REQUEST_REJECTED`,
    /// a GOAWAY before it was sent, or rejected early data): it may go
    /// again whatever its method.
    pub fn is_unprocessed(&self) -> bool {
        self.unprocessed
    }
}

impl std::fmt::Display for Http3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
type SendHalf = h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// An open HTTP/3 connection.
#[derive(Clone)]
struct H3Conn {
    send: SendRequest,
    meta: ConnMeta,
    requests: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
    /// Set when 0-RTT was tried: `None` until the handshake says whether
    /// the server accepted the early data.
    early: Option<watch::Receiver<Option<bool>>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<H3Conn>>>;

/// The client's HTTP/3 state: a connection slot per origin, the UDP
/// endpoints, and what origins said about HTTP/3.
#[derive(Default)]
pub(crate) struct H3State {
    slots: Mutex<HashMap<Origin, Slot>>,
    /// One UDP socket per address family, opened on first use.
    endpoints: Mutex<[Option<quinn::Endpoint>; 2]>,
    quic: OnceLock<Result<quinn::ClientConfig, String>>,
    pub(crate) alt_svc: AltSvcCache,
}

impl H3State {
    fn slot(&self, origin: &Origin) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get(origin) {
            return s.clone();
        }
        if slots.len() >= super::alt_svc::MAX_ORIGINS {
            // Forget origins nobody is using whose connection ended.
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.try_lock()
                        .map_or(true, |c| c.as_ref().is_some_and(|c| c.alive.load(Relaxed)))
            });
        }
        let s = Slot::default();
        slots.insert(origin.clone(), s.clone());
        s
    }

    /// The origin's connection if one is open and nobody is replacing it.
    fn live(&self, origin: &Origin) -> Option<H3Conn> {
        let slot = self.slot(origin);
        let current = slot.try_lock().ok()?;
        current.as_ref().filter(|c| c.alive.load(Relaxed)).cloned()
    }

    fn endpoint(&self, peer: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let mut eps = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let i = usize::from(peer.is_ipv6());
        if let Some(e) = &eps[i] {
            return Ok(e.clone());
        }
        let bind: SocketAddr = if peer.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let e = quinn::Endpoint::client(bind)?;
        eps[i] = Some(e.clone());
        Ok(e)
    }
}

/// A failed HTTP/3 attempt.
fn failed(state: AttemptState, error: ClientError) -> FailedAttempt {
    FailedAttempt::new(state, false, error)
}

fn h3_error(e: impl std::fmt::Display, unprocessed: bool) -> ClientError {
    ClientError::Http3(Http3Error::new(e, unprocessed))
}

/// The server did not process the stream (RFC 9114 §4.1.1, §5.2).
fn rejected(e: &h3::error::StreamError) -> bool {
    use h3::error::{Code, StreamError};
    match e {
        StreamError::RemoteClosing { .. } => true,
        StreamError::RemoteTerminate { code, .. } => *code == Code::H3_REQUEST_REJECTED,
        _ => false,
    }
}

/// What the HTTP/3 path did with a request.
pub(crate) enum Http3Outcome {
    /// Sent over HTTP/3: the answer.
    Answered(Response<Body>),
    /// TCP carries it (HTTP/3 off, not advertised, QUIC broken or slower);
    /// `Some` if it just won a race, with what its connection cost.
    Tcp(Option<TcpWon>),
}

/// Who connected first.
enum Raced {
    Quic((H3Conn, bool)),
    Tcp(Option<TcpWon>),
}

impl Client {
    /// Sends the request over HTTP/3 if the mode and the origin say so,
    /// else says TCP carries it.
    pub(crate) async fn send_h3(
        &self,
        origin: &Origin,
        head: &RequestHead,
        body: &mut ReplayBody,
        fresh: bool,
    ) -> Result<Http3Outcome, ClientError> {
        let cfg = &self.inner.config;
        let state = &self.inner.h3;
        // No reuse (the serial and parallel strategies, R4.1, R4.2): a new
        // QUIC connection per request, which is also how a second one
        // resumes the first's session in 0-RTT.
        let fresh = fresh || !cfg.pool.reuse;
        let only = cfg.http3 == Http3Mode::Only;
        // curl's --http3-only refuses what QUIC cannot carry, rather than
        // quietly using TCP.
        if only && origin.scheme != "https" {
            let e = format!("{origin}: HTTP/3 needs https://");
            return Err(ClientError::InvalidUrl(e));
        }
        if only && self.proxy_for(origin).is_some() {
            let e = "HTTP/3 only, but this origin goes through an HTTP proxy";
            return Err(ClientError::Config(e.into()));
        }
        if cfg.http3 == Http3Mode::Off
            || origin.scheme != "https"
            || head.method == http::Method::CONNECT
            || head.headers.contains_key(http::header::UPGRADE)
            || self.proxy_for(origin).is_some()
        {
            return Ok(Http3Outcome::Tcp(None));
        }
        let port = match (cfg.http3, state.alt_svc.port(origin)) {
            (_, Some(p)) => p,
            (Http3Mode::AltSvc, None) => return Ok(Http3Outcome::Tcp(None)),
            _ => origin.port,
        };
        let started = Instant::now();
        let mut retries = 0;
        loop {
            let mut timings = Timings::default();
            // RFC 8470: early data only for what may repeat, never on a retry.
            let early = cfg.early_data && retries == 0 && is_idempotent(&head.method);
            let fresh = fresh || retries > 0;
            let conn = if only {
                let c = self.h3_conn(origin, port, early, fresh, &mut timings).await;
                c.map(Raced::Quic)
            } else if let Some(c) = state.live(origin).filter(|_| !fresh) {
                Ok(Raced::Quic((c, false)))
            } else if state.alt_svc.is_broken(origin) {
                Ok(Raced::Tcp(None))
            } else {
                self.race(origin, port, early, fresh, &mut timings).await
            };
            let conn = match conn {
                Ok(Raced::Quic(c)) => c,
                Ok(Raced::Tcp(won)) => return Ok(Http3Outcome::Tcp(won)),
                Err(e) if !only => {
                    tracing::debug!(%origin, error = %e, "QUIC failed, TCP instead");
                    state.alt_svc.mark_broken(origin);
                    return Ok(Http3Outcome::Tcp(None));
                }
                Err(e) => {
                    let failure = FailedAttempt::not_sent(e);
                    self.after_failure(origin, head, body, failure, &mut retries)?;
                    continue;
                }
            };
            match self
                .attempt_h3(origin, head, body, conn, timings, started, retries)
                .await
            {
                Ok(resp) => return Ok(Http3Outcome::Answered(resp)),
                Err(failure) => self.after_failure(origin, head, body, failure, &mut retries)?,
            }
        }
    }

    /// QUIC against TCP: QUIC's connection if it connected first; else TCP
    /// carries the request (its connection waits in the HTTP/2 slot or as
    /// the pool's spare) and the QUIC handshake goes on for later requests.
    /// A TCP connection already open to the origin is used at once, with
    /// QUIC opening beside it (browsers do the same).
    async fn race(
        &self,
        origin: &Origin,
        port: u16,
        early: bool,
        fresh: bool,
        timings: &mut Timings,
    ) -> Result<Raced, ClientError> {
        let state = &self.inner.h3;
        let started = Instant::now();
        let mut quic = {
            let (client, origin) = (self.clone(), origin.clone());
            tokio::spawn(async move {
                let mut t = Timings::default();
                let r = client.h3_conn(&origin, port, early, fresh, &mut t).await;
                match &r {
                    Ok(_) => client.inner.h3.alt_svc.mark_working(&origin),
                    Err(_) => client.inner.h3.alt_svc.mark_broken(&origin),
                }
                r.map(|c| (c, t))
            })
        };
        let joined = |r: Result<_, tokio::task::JoinError>| {
            r.map_err(|e| ClientError::Connect(std::io::Error::other(e)))
                .and_then(|r| r)
        };
        if self.tcp_ready(origin) {
            return Ok(Raced::Tcp(None));
        }
        tokio::select! {
            r = &mut quic => {
                let (conn, t) = joined(r)?;
                *timings = t;
                return Ok(Raced::Quic(conn));
            }
            _ = tokio::time::sleep(QUIC_HEAD_START) => {}
        }
        let tcp = async {
            let mut t = Timings::default();
            self.h2_conn(origin, &mut t).await.map(|_| t)
        };
        tokio::select! {
            r = &mut quic => match joined(r) {
                Ok((conn, t)) => {
                    *timings = t;
                    Ok(Raced::Quic(conn))
                }
                // TCP is still connecting; the request path picks it up.
                Err(_) => Ok(Raced::Tcp(None)),
            },
            r = tcp => {
                if let Ok(t) = r {
                    // Until QUIC connects (or fails), TCP serves.
                    state.alt_svc.mark_broken(origin);
                    let dns = t.dns.unwrap_or_default();
                    let timings = Timings {
                        dns: t.dns,
                        connect: Some(started.elapsed().saturating_sub(dns)),
                        tls: t.tls,
                        ..Timings::default()
                    };
                    return Ok(Raced::Tcp(Some(TcpWon { started, timings })));
                }
                match tokio::time::timeout(self.inner.config.connect_timeout, quic).await {
                    Ok(r) => joined(r).map(|(conn, t)| {
                        *timings = t;
                        Raced::Quic(conn)
                    }),
                    Err(_) => Ok(Raced::Tcp(None)),
                }
            }
        }
    }

    /// A TCP connection to `origin` is open and could take a request now.
    fn tcp_ready(&self, origin: &Origin) -> bool {
        self.inner.h2.is_live(origin) || self.inner.pool.counts(origin).1 > 0
    }

    async fn forget_h3(&self, origin: &Origin, conn: &H3Conn) {
        conn.alive.store(false, Relaxed);
        let slot = self.inner.h3.slot(origin);
        let mut current = slot.lock().await;
        if current.as_ref().is_some_and(|c| c.meta.id == conn.meta.id) {
            *current = None;
        }
    }

    /// One request on `conn`: head, body alongside the wait for the
    /// answer (as HTTP/2's), the response with its body bounded.
    #[allow(clippy::too_many_arguments)]
    async fn attempt_h3(
        &self,
        origin: &Origin,
        head: &RequestHead,
        body: &mut ReplayBody,
        (conn, new): (H3Conn, bool),
        mut timings: Timings,
        started: Instant,
        retries: u32,
    ) -> Result<Response<Body>, FailedAttempt> {
        use AttemptState::*;
        let cfg = &self.inner.config;
        let queued = Instant::now();
        // Before the handshake is confirmed only idempotent requests go
        // (RFC 8470); the others wait for it.
        let mut in_early_data = false;
        if let Some(rx) = &conn.early
            && rx.borrow().is_none()
        {
            if is_idempotent(&head.method) {
                in_early_data = true;
            } else {
                let mut rx = rx.clone();
                let wait = rx.wait_for(|v| v.is_some());
                if !matches!(
                    tokio::time::timeout(cfg.connect_timeout, wait).await,
                    Ok(Ok(_))
                ) {
                    let e = ClientError::Timeout("waiting for the QUIC handshake");
                    return Err(failed(NotSent, e));
                }
            }
        }
        let req = multiplexed_request(origin, head, body).map_err(|e| failed(NotSent, e))?;
        let mut send = conn.send.clone();
        // Waits for a stream the server allows (its MAX_STREAMS).
        let stream = match tokio::time::timeout(cfg.connect_timeout, send.send_request(req)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.forget_h3(origin, &conn).await;
                // The stream never reached the server's processing.
                return Err(failed(Refused, h3_error(e, true)));
            }
            Err(_) => {
                let e = ClientError::Timeout("waiting for an HTTP/3 stream");
                return Err(failed(NotSent, e));
            }
        };
        timings.queued = queued.elapsed();
        let (tx, mut rx) = stream.split();
        let tx = Upload { tx, done: false };
        let mut upload = Some(Box::pin(upload(
            tx,
            std::mem::take(body),
            cfg.write_timeout,
        )));
        let mut uploaded: Option<Upload> = None;
        let result = {
            let mut resp = std::pin::pin!(rx.recv_response());
            loop {
                let deadline = Instant::now() + cfg.response_timeout;
                tokio::select! {
                    r = &mut resp => break r.map_err(|e| {
                        let unprocessed = rejected(&e);
                        let state = if unprocessed { Refused } else { SentNoResponse };
                        failed(state, h3_error(e, unprocessed))
                    }),
                    (r, b, tx) = async { upload.as_mut().expect("polled while some").await },
                        if upload.is_some() => {
                        upload = None;
                        *body = b;
                        timings.written = started.elapsed();
                        match r {
                            Ok(()) => uploaded = Some(tx),
                            // No credit for the body within the write
                            // timeout, or its source failed: nothing to wait for.
                            Err(e @ (ClientError::Timeout(_) | ClientError::Body(_))) => {
                                break Err(failed(SentNoResponse, e));
                            }
                            Err(e) => {
                                // The server may have answered and stopped reading.
                                match tokio::time::timeout(cfg.response_timeout, &mut resp).await {
                                    Ok(Ok(r)) => break Ok(r),
                                    _ => break Err(failed(SentNoResponse, e)),
                                }
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(deadline), if upload.is_none() => {
                        break Err(failed(SentNoResponse, ClientError::Timeout("waiting for the response")));
                    }
                }
            }
        };
        let resp = match result {
            Ok(r) => r,
            Err(mut e) => {
                if in_early_data && early_rejected(&conn, cfg.connect_timeout).await {
                    // Rejected early data never reached the server.
                    let reason = format!("0-RTT rejected: {}", e.error);
                    e = failed(Refused, h3_error(reason, true));
                }
                if matches!(&e.error, ClientError::Http3(h) if h.is_unprocessed()) {
                    self.forget_h3(origin, &conn).await;
                }
                return Err(e);
            }
        };
        if let Some(rest) = upload {
            // Answered before the body was all sent: the rest goes on in
            // the background, for as long as the server reads it.
            tokio::spawn(rest);
        }
        drop(uploaded);
        if resp.status() == http::StatusCode::TOO_EARLY && in_early_data {
            // RFC 8470 §5.2: not processed because it came early; it goes
            // again, after a full handshake.
            let e = h3_error("425 Too Early to a request in early data", true);
            return Err(failed(Refused, e));
        }
        timings.first_byte = started.elapsed();
        let (mut parts, ()) = resp.into_parts();
        // A HEAD answer, 204 and 304 carry no body whatever they declare.
        let bodiless = head.method == http::Method::HEAD
            || parts.status == http::StatusCode::NO_CONTENT
            || parts.status == http::StatusCode::NOT_MODIFIED;
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .filter(|_| !bodiless);
        let bounds = crate::body::H2BodyBounds {
            max: cfg.limits.max_body_bytes,
            timeout: Some(cfg.response_timeout),
            length,
            broken: None,
        };
        let index = conn.requests.fetch_add(1, Relaxed);
        if !new {
            self.inner.metrics.reused.fetch_add(1, Relaxed);
        }
        let mut meta = conn.meta;
        let accepted = conn.early.as_ref().and_then(|rx| *rx.borrow());
        if let Some(q) = &mut meta.quic {
            q.zero_rtt = conn.early.as_ref().map(|_| accepted.unwrap_or(false));
        }
        parts.extensions.insert(RequestMeta {
            conn: meta,
            reused: !new || index > 0,
            conn_request_index: index,
            retries,
            timings,
            early_data: in_early_data && accepted == Some(true),
        });
        Ok(Response::from_parts(
            parts,
            h3_recv::body(rx, bounds, Reads::Response),
        ))
    }
}

/// The server rejected the connection's early data (waiting, at most
/// `limit`, for the handshake to say, since the failure of a stream sent
/// early can come before the verdict).
async fn early_rejected(conn: &H3Conn, limit: Duration) -> bool {
    let Some(rx) = &conn.early else {
        return false;
    };
    let mut rx = rx.clone();
    let verdict = tokio::time::timeout(limit, rx.wait_for(|v| v.is_some())).await;
    matches!(verdict, Ok(Ok(v)) if *v == Some(false))
}
