//! The HTTP/1 path of a request: the attempts, the retry between them
//! (decided by [`super::retry`]), and the response body that returns its
//! connection to the pool when it ends.

use std::sync::atomic::Ordering::Relaxed;

use http::header::CONNECTION;
use http::{HeaderValue, Response};
use keepwire_proto::{BodyKind, Event, RequestHead};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::pool::{Checkout, Origin, SlotGuard};
use super::replay::ReplayBody;
use super::retry::{self, AttemptState, FailedAttempt, Resend, RetryDecision};
use super::{Client, ClientConn, ClientError, RequestMeta, Timings};
use crate::body::{Body, BodyError};
use crate::upgrade::Upgraded;

impl Client {
    /// Sends an already-formed head (origin-form target, `Host` set) and a
    /// body to `origin`: the path for callers that hold those parts
    /// already, such as the proxy, which forwards without re-parsing URLs.
    /// A retry resends the body only if `body` could keep all of it that
    /// was sent; on failure `body` is left rewound when it can go again
    /// (to another origin), else as far as it got.
    pub async fn send(
        &self,
        origin: &Origin,
        mut head: RequestHead,
        body: &mut ReplayBody,
        mut fresh: bool,
    ) -> Result<Response<Body>, ClientError> {
        let cfg = &self.inner.config;
        // An HTTP/1.1 Upgrade (a WebSocket handshake) has no meaning in
        // HTTP/2 (RFC 9113 §8.6): it goes over HTTP/1.1 whatever ALPN offers.
        let h2 = if head.headers.contains_key(http::header::UPGRADE) {
            false
        } else if origin.scheme == "https" {
            !cfg.http1_only && !self.speaks_http1(origin)
        } else {
            // Not through a forward proxy (an absolute-form target).
            cfg.http2_prior_knowledge && head.target.scheme().is_none()
        };
        // `None`: ALPN chose HTTP/1.1; the pool takes over.
        // (Boxed, as the connect in `attempt`: inline they made every
        // HTTP/1 request's future, and a proxy handler's around it, 10 KB to
        // allocate and copy.)
        let mut won = None;
        if cfg.http3 != super::Http3Mode::Off {
            match Box::pin(self.send_h3(origin, &head, body, fresh)).await? {
                super::h3::Http3Outcome::Answered(resp) => return Ok(resp),
                super::h3::Http3Outcome::Tcp(w) => won = w,
            }
        }
        if h2 && let Some(resp) = Box::pin(self.send_h2(origin, &head, body, won)).await? {
            self.learn_alt_svc(origin, &resp);
            return Ok(resp);
        }
        let started = won.map_or_else(Instant::now, |w| w.started);
        if self.inner.config.close_after_each {
            head.headers
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let mut retries = 0u32;
        loop {
            match self
                .attempt(
                    origin,
                    &mut head,
                    body,
                    started,
                    (fresh, won.take()),
                    retries,
                )
                .await
            {
                Ok(resp) => {
                    self.learn_alt_svc(origin, &resp);
                    return Ok(resp);
                }
                Err(failed) => {
                    self.after_failure(origin, &head, body, failed, &mut retries)?;
                    fresh = true;
                }
            }
        }
    }

    /// Remembers an `https` origin's `Alt-Svc` answer, when HTTP/3 may
    /// be used at all.
    fn learn_alt_svc(&self, origin: &Origin, resp: &Response<Body>) {
        if self.inner.config.http3 != super::Http3Mode::Off && origin.scheme == "https" {
            self.inner.h3.alt_svc.learn(origin, resp.headers());
        }
    }

    /// After a failed attempt, of either version: `Ok` to send again (the
    /// body rewound, the retry counted), else the error to report (the body
    /// rewound if it can be, for another origin).
    pub(crate) fn after_failure(
        &self,
        origin: &Origin,
        head: &RequestHead,
        body: &mut ReplayBody,
        failed: FailedAttempt,
        retries: &mut u32,
    ) -> Result<(), ClientError> {
        let FailedAttempt { attempt, error } = failed;
        // The body must be whole again for a resend: a large one that was
        // partly sent is not (its copy was dropped).
        let request = Resend::of(&head.method, &head.headers, body.rewind());
        match retry::decide(request, attempt, &error, *retries) {
            RetryDecision::RetryFresh => {
                tracing::debug!(%origin, ?attempt, %error, "retrying on a fresh connection");
                self.inner.metrics.retries.fetch_add(1, Relaxed);
                *retries += 1;
                Ok(())
            }
            RetryDecision::Fail => {
                if error.is_truncated() {
                    self.inner.metrics.truncated.fetch_add(1, Relaxed);
                }
                Err(error)
            }
        }
    }

    /// One attempt: checkout, write, read the head, hand the body over.
    async fn attempt(
        &self,
        origin: &Origin,
        head: &mut RequestHead,
        body: &mut ReplayBody,
        started: Instant,
        (fresh, won): (bool, Option<super::TcpWon>),
        retries: u32,
    ) -> Result<Response<Body>, FailedAttempt> {
        let inner = &self.inner;
        let mut timings = Timings::default();
        let (checkout, dropped) = inner
            .pool
            .checkout(origin, fresh)
            .await
            .map_err(|()| FailedAttempt::not_sent(ClientError::PoolTimeout))?;
        inner
            .metrics
            .retired_idle
            .fetch_add(dropped.expired as u64, Relaxed);
        inner
            .metrics
            .stale_idle
            .fetch_add(dropped.stale as u64, Relaxed);
        timings.queued = started.elapsed();
        // From here the slot is ours; it goes back to the pool on every way
        // out, including this future being dropped mid-attempt (a proxy
        // whose client went away).
        let mut slot = SlotGuard {
            pool: &inner.pool,
            origin,
            armed: true,
        };
        let (mut conn, reused) = match checkout {
            Checkout::Reused(c) => (c, true),
            Checkout::Connect => match Box::pin(self.connect(origin, &mut timings)).await {
                Ok(c) => {
                    // The pool's spare, opened by a race TCP won.
                    if let Some(w) = won
                        && timings.connect.is_none()
                    {
                        w.apply(&mut timings);
                    }
                    (c, false)
                }
                Err(e) => return Err(FailedAttempt::not_sent(e)),
            },
        };
        if reused {
            inner.metrics.reused.fetch_add(1, Relaxed);
        }
        let index = conn.requests;
        let cfg = &inner.config;
        let result = async {
            if let Err((state, err)) = conn.send_streaming(head, body, cfg.write_timeout).await {
                // The server may have answered before it stopped reading
                // (an early 413, then a close that broke our write): that
                // answer is the one to relay, not the write error.
                let answered = state != AttemptState::NotSent
                    && matches!(err, ClientError::Io(_))
                    && conn.has_response_bytes();
                if !answered {
                    return Err((state, err));
                }
                tracing::debug!(error = %err, "request cut short by an early response");
            }
            timings.written = started.elapsed();
            let head = conn
                .read_head(Instant::now() + cfg.response_timeout)
                .await?;
            timings.first_byte = started.elapsed();
            Ok(head)
        }
        .await;
        let (resp_head, kind) = match result {
            Ok(h) => h,
            Err((state, err)) => return Err(FailedAttempt::new(state, reused, err)),
        };
        let meta = RequestMeta {
            conn: conn.meta,
            reused,
            conn_request_index: index,
            retries,
            timings,
            early_data: false,
        };
        if conn.proto.is_upgraded() {
            // 101 Switching Protocols (R9.1): the connection leaves the pool
            // and belongs to the caller, through the response's OnUpgrade
            // (`slot` gives its place in the pool back).
            let read_buf = conn.proto.take_read_buffer();
            let (tx, on_upgrade) = crate::upgrade::pending();
            let _ = tx.send(Upgraded::new(conn.stream, read_buf));
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = resp_head.status;
            *resp.version_mut() = resp_head.version;
            *resp.headers_mut() = resp_head.headers;
            resp.extensions_mut().insert(meta);
            resp.extensions_mut().insert(on_upgrade);
            return Ok(resp);
        }
        // The body (or `response_body` itself) returns the slot.
        slot.armed = false;
        let body = self
            .response_body(origin, conn, kind)
            .map_err(|e| FailedAttempt::new(AttemptState::PartlyAnswered, reused, e))?;
        let mut resp = Response::new(body);
        *resp.status_mut() = resp_head.status;
        *resp.version_mut() = resp_head.version;
        *resp.headers_mut() = resp_head.headers;
        resp.extensions_mut().insert(meta);
        if !resp_head.header_case.is_empty() {
            resp.extensions_mut().insert(resp_head.header_case);
        }
        Ok(resp)
    }

    /// The response body: whole if it is already buffered (the connection
    /// goes straight back to the pool), else streamed by a task that returns
    /// the connection when the body ends.
    fn response_body(
        &self,
        origin: &Origin,
        mut conn: Box<ClientConn>,
        kind: BodyKind,
    ) -> Result<Body, ClientError> {
        let pool = &self.inner.pool;
        let (chunks, ended) = match conn.buffered_body() {
            Ok(v) => v,
            Err(e) => {
                pool.release(origin);
                return Err(e);
            }
        };
        if ended {
            pool.checkin(origin, conn);
            return Ok(match chunks.len() {
                0 => Body::empty(),
                1 => Body::full(chunks.into_iter().next().unwrap_or_default()),
                _ => Body::full(chunks.concat()),
            });
        }
        let length = match kind {
            BodyKind::Length(n) => Some(n),
            _ => None,
        };
        let (tx, rx) = mpsc::channel(4);
        let client = self.clone();
        let origin = origin.clone();
        tokio::spawn(async move {
            for c in chunks {
                if tx.send(Ok(c)).await.is_err() {
                    client.inner.pool.release(&origin);
                    return;
                }
            }
            let timeout = client.inner.config.response_timeout;
            loop {
                match conn.next_event(Instant::now() + timeout).await {
                    Ok(Event::Data(b)) => {
                        if tx.send(Ok(b)).await.is_err() {
                            // The reader gave up: the rest of the body is
                            // unread, so the connection cannot be reused.
                            client.inner.pool.release(&origin);
                            return;
                        }
                    }
                    Ok(Event::End(_)) => {
                        conn.finish_response();
                        client.inner.pool.checkin(&origin, conn);
                        return;
                    }
                    Ok(_) => {
                        let _ = tx.send(Err(BodyError::Closed)).await;
                        client.inner.pool.release(&origin);
                        return;
                    }
                    Err((_, err)) => {
                        if err.is_truncated() {
                            client.inner.metrics.truncated.fetch_add(1, Relaxed);
                        }
                        let _ = tx
                            .send(Err(match err {
                                ClientError::Protocol(e) => BodyError::Protocol(e),
                                other => BodyError::Source(Box::new(other)),
                            }))
                            .await;
                        client.inner.pool.release(&origin);
                        return;
                    }
                }
            }
        });
        Ok(Body::incoming(rx, None, length))
    }
}
