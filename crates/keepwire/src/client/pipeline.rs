//! Pipelining (R7): several requests on one connection without waiting.
//!
//! The rules, in the order they bite:
//! - R7.1: pipeline only on a connection known to persist. A connection that
//!   has not answered yet sends one request alone first.
//! - R7.4: only idempotent requests are pipelined; any other request is
//!   sent alone, after every earlier response has arrived.
//! - R7.2: responses come back in request order; the n-th response answers
//!   the n-th request still outstanding.
//! - R7.3: when the connection closes with requests unanswered, those
//!   requests are sent again on a new connection (they are idempotent; a
//!   non-idempotent request is never in a batch with others).
//!
//! Bodies are read whole: pipelining is for many small objects (a page's
//! sub-resources), and a buffered response frees the connection for the next.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use keepwire_proto::hop::is_idempotent;
use keepwire_proto::{Event, RequestHead};
use tokio::time::Instant;

use super::pool::Checkout;
use super::{Client, ClientError, RequestMeta, Timings, head_for};
use crate::body::Body;

/// A pipelined response: the whole body in memory, plus what the client did.
pub type PipelinedResponse = Result<(Response<Bytes>, RequestMeta), ClientError>;

impl Client {
    /// Sends `requests` (all to one origin) pipelined up to `depth` at a
    /// time on one connection, following R7; returns the responses in
    /// request order. Idempotent requests left unanswered by a close are
    /// resent on a new connection, at most twice each.
    pub async fn pipeline(
        &self,
        requests: Vec<Request<Body>>,
        depth: usize,
    ) -> Vec<PipelinedResponse> {
        let started = Instant::now();
        let depth = depth.max(1);
        let mut results: Vec<Option<PipelinedResponse>> =
            (0..requests.len()).map(|_| None).collect();
        let mut prepared = Vec::with_capacity(requests.len());
        for (i, req) in requests.into_iter().enumerate() {
            match prepare(req).await {
                Ok(p) => prepared.push((i, p)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let Some(origin) = prepared.first().map(|(_, p)| p.origin.clone()) else {
            return results.into_iter().flatten().collect();
        };
        let mut queue: std::collections::VecDeque<(usize, Prepared, u32)> =
            prepared.into_iter().map(|(i, p)| (i, p, 0)).collect();
        while !queue.is_empty() {
            let mut timings = Timings::default();
            let conn = match self.inner.pool.checkout(&origin, false).await {
                Ok((Checkout::Reused(c), _)) => Ok((c, true)),
                Ok((Checkout::Connect, _)) => match self.connect(&origin, &mut timings).await {
                    Ok(c) => Ok((c, false)),
                    Err(e) => {
                        self.inner.pool.release(&origin);
                        Err(e)
                    }
                },
                Err(()) => Err(ClientError::PoolTimeout),
            };
            let (mut conn, reused) = match conn {
                Ok(c) => c,
                Err(e) => {
                    // Without a connection nothing can go out: report it for
                    // every request still queued, as the same kind of error
                    // (a caller tells a refused connection from a name that
                    // does not resolve).
                    let copy = |e: &ClientError| {
                        let same =
                            |io: &std::io::Error| std::io::Error::new(io.kind(), io.to_string());
                        match e {
                            ClientError::Resolve(io) => ClientError::Resolve(same(io)),
                            ClientError::Connect(io) => ClientError::Connect(same(io)),
                            ClientError::PoolTimeout => ClientError::PoolTimeout,
                            other => ClientError::Io(std::io::Error::other(other.to_string())),
                        }
                    };
                    let waiting: Vec<usize> = queue.drain(..).map(|(i, _, _)| i).collect();
                    if let Some((&last, rest)) = waiting.split_last() {
                        for &i in rest {
                            results[i] = Some(Err(copy(&e)));
                        }
                        results[last] = Some(Err(e));
                    }
                    break;
                }
            };
            timings.queued = Duration::ZERO;
            // The slot goes back to the pool however this ends, also if the
            // caller drops this future mid-pipeline.
            let mut slot = super::SlotGuard {
                pool: &self.inner.pool,
                origin: &origin,
                armed: true,
            };
            let cfg = &self.inner.config;
            let mut healthy = true;
            while healthy && !queue.is_empty() {
                // R7.1 and R7.4: how many may go out together.
                let batch = if !conn.proto.can_pipeline() {
                    1
                } else {
                    queue
                        .iter()
                        .take(depth)
                        .take_while(|(_, p, _)| is_idempotent(&p.head.method))
                        .count()
                        .max(1)
                };
                let batch_started = started.elapsed();
                let mut sent = Vec::with_capacity(batch);
                // The whole batch goes out in one write (R2.3).
                conn.out.clear();
                for _ in 0..batch {
                    let Some((i, p, tries)) = queue.pop_front() else {
                        break;
                    };
                    let body = (!p.body.is_empty()).then_some(&p.body);
                    if let Err((_, e)) = conn.encode_request(&p.head, body) {
                        tracing::debug!(error = %e, "pipelined request not encodable");
                        queue.push_front((i, p, tries));
                        healthy = false;
                        break;
                    }
                    sent.push((i, p, tries));
                }
                if healthy && let Err((_, e)) = conn.flush_out(cfg.write_timeout).await {
                    // Nothing of the batch is answered: R7.3 below resends it.
                    tracing::debug!(error = %e, "pipelined write failed");
                    healthy = false;
                }
                let written = started.elapsed();
                // R7.2: the n-th response answers the n-th request sent.
                let mut answered = 0;
                for (i, p, tries) in &sent {
                    if !healthy {
                        break;
                    }
                    let index = conn.requests;
                    match read_whole(&mut conn, Instant::now() + cfg.response_timeout).await {
                        Ok((resp, first_byte)) => {
                            // Only the first request on a new connection paid
                            // for DNS and connect; later ones waited for their
                            // batch to go out.
                            let first_on_new = !reused && index == 0;
                            let meta = RequestMeta {
                                conn: conn.meta,
                                reused: reused || index > 0,
                                conn_request_index: index,
                                retries: *tries,
                                timings: Timings {
                                    queued: if first_on_new {
                                        timings.queued
                                    } else {
                                        batch_started
                                    },
                                    dns: timings.dns.filter(|_| first_on_new),
                                    connect: timings.connect.filter(|_| first_on_new),
                                    tls: timings.tls.filter(|_| first_on_new),
                                    written,
                                    first_byte: first_byte.duration_since(started),
                                    complete: Some(started.elapsed()),
                                },
                                early_data: false,
                            };
                            results[*i] = Some(Ok((resp, meta)));
                            answered += 1;
                        }
                        Err(e) => {
                            tracing::debug!(path = %p.head.target, error = %e, "pipelined read failed");
                            healthy = false;
                        }
                    }
                }
                // R7.3: unanswered requests go back to the front of the queue.
                for (i, p, tries) in sent.into_iter().skip(answered).rev() {
                    if !super::retry::resend_unanswered(&p.head.method, tries) {
                        results[i] = Some(Err(ClientError::Io(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            Unanswered { resends: tries },
                        ))));
                    } else {
                        self.inner
                            .metrics
                            .retries
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        queue.push_front((i, p, tries + 1));
                    }
                }
                if !conn.reusable() {
                    healthy = false;
                }
            }
            if healthy {
                slot.armed = false;
                self.inner.pool.checkin(&origin, conn);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ClientError::Unexpected)))
            .collect()
    }
}

/// A request made ready to write (several times, if it must be resent).
struct Prepared {
    origin: super::pool::Origin,
    head: RequestHead,
    body: Bytes,
}

async fn prepare(req: Request<Body>) -> Result<Prepared, ClientError> {
    let (mut parts, mut body) = req.into_parts();
    let (origin, head) = head_for(&mut parts)?;
    let body = match body.take_full() {
        Some(b) => b,
        None => body.collect(usize::MAX).await.map_err(ClientError::Body)?,
    };
    Ok(Prepared { origin, head, body })
}

/// Reads one whole response; returns it and when its head arrived.
async fn read_whole(
    conn: &mut super::conn::ClientConn,
    deadline: Instant,
) -> Result<(Response<Bytes>, Instant), ClientError> {
    let (head, _) = conn.read_head(deadline).await.map_err(|(_, e)| e)?;
    let first_byte = Instant::now();
    let mut body = Vec::new();
    loop {
        match conn.next_event(deadline).await.map_err(|(_, e)| e)? {
            Event::Data(b) => body.extend_from_slice(&b),
            Event::End(_) => break,
            _ => return Err(ClientError::Unexpected),
        }
    }
    conn.finish_response();
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    Ok((resp, first_byte))
}

/// Why a pipelined request failed when its connection closed before its
/// answer and it could not go again (R7.3): the inner error of its
/// [`ClientError::Io`], carrying how often it was resent, so a caller can
/// count its retries as [`RequestMeta::retries`] does for an answered one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    /// Times it was resent on a new connection before giving up.
    pub resends: u32,
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connection closed before this pipelined request was answered (resent {} times)",
            self.resends
        )
    }
}

impl std::error::Error for Unanswered {}

impl Unanswered {
    /// The resends carried by `e`, if it is this failure.
    pub fn of(e: &ClientError) -> Option<Unanswered> {
        match e {
            ClientError::Io(io) => io.get_ref()?.downcast_ref::<Unanswered>().copied(),
            _ => None,
        }
    }
}
