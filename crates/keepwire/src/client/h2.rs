//! The client's HTTP/2 path (h2c with prior knowledge): one multiplexed
//! connection per origin (R4.5) instead of a pool of up to six.
//!
//! The peer's `SETTINGS_MAX_CONCURRENT_STREAMS` is honoured by waiting in
//! `SendRequest::ready` for a free stream. A stream the server refused
//! (`REFUSED_STREAM`, or a connection that ended by GOAWAY before the
//! request left) was never processed, so it is sent again on a new
//! connection whatever its method (if its body could be kept): the
//! multiplexed form of R8.3.
//!
//! Opening a connection is single-flight per origin: requests to an origin
//! whose connection is being opened wait for that one, and nothing else
//! does, so one slow or silent origin cannot stall the others. A failed
//! TLS or HTTP/2 handshake is a connect failure (nothing was sent): the
//! caller may try another upstream and count this one down.
//!
//! Bodies stream both ways under flow control. The request body is sent
//! alongside the wait for the response (a server may answer first, and
//! stream its answer while still reading); the response body is timed per
//! read like HTTP/1's, so a stalled upstream ends it as a truncation (R8.2)
//! instead of holding the client forever.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response, Uri};
use keepwire_proto::RequestHead;
use tokio::time::Instant;

use super::conn::ConnMeta;
use super::pool::Origin;
use super::replay::ReplayBody;
use super::{Client, ClientError, RequestMeta, Timings};
use crate::body::Body;

/// An open HTTP/2 connection.
#[derive(Clone)]
pub(crate) struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    meta: ConnMeta,
    requests: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
}

/// The connection of one origin, or none yet; its lock is held only by
/// whoever opens it (single-flight).
type Slot = Arc<tokio::sync::Mutex<Option<H2Conn>>>;

/// One connection per origin.
#[derive(Default)]
pub(crate) struct H2Conns {
    map: std::sync::Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    by_origin: HashMap<Origin, Slot>,
    /// Forget dead slots when the map reaches this size (amortised).
    prune_at: usize,
}

impl Slots {
    /// Forgets origins whose connection ended and that nobody is opening or
    /// using (a forward proxy meets many).
    fn prune(&mut self) {
        self.by_origin.retain(|_, s| {
            Arc::strong_count(s) > 1
                || s.try_lock()
                    .map_or(true, |c| c.as_ref().is_some_and(|c| c.alive.load(Relaxed)))
        });
        self.prune_at = (self.by_origin.len() * 2).max(64);
    }
}

impl H2Conns {
    fn slot(&self, origin: &Origin) -> Slot {
        let mut slots = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.by_origin.get(origin) {
            return s.clone();
        }
        if slots.by_origin.len() >= slots.prune_at {
            slots.prune();
        }
        let s = Slot::default();
        slots.by_origin.insert(origin.clone(), s.clone());
        s
    }
}

impl Client {
    /// Sends one request on the origin's HTTP/2 connection; `None` if
    /// ALPN chose HTTP/1.1 instead (the connection is kept for the pool).
    pub(crate) async fn send_h2(
        &self,
        origin: &Origin,
        head: &RequestHead,
        body: &mut ReplayBody,
    ) -> Result<Option<Response<Body>>, ClientError> {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            match self.attempt_h2(origin, head, body, started, retries).await {
                Ok(resp) => return Ok(resp),
                // Never processed by the server: safe to send again, once,
                // if the body is whole again.
                Err((true, _)) if retries == 0 && body.rewind() => {
                    self.inner.metrics.retries.fetch_add(1, Relaxed);
                    retries += 1;
                }
                Err((_, e)) => {
                    body.rewind();
                    return Err(e);
                }
            }
        }
    }

    /// One attempt; the error says whether the request was refused unseen.
    async fn attempt_h2(
        &self,
        origin: &Origin,
        head: &RequestHead,
        body: &mut ReplayBody,
        started: Instant,
        retries: u32,
    ) -> Result<Option<Response<Body>>, (bool, ClientError)> {
        let cfg = &self.inner.config;
        let mut timings = Timings::default();
        let Some((conn, new)) = self
            .h2_conn(origin, &mut timings)
            .await
            .map_err(|e| (false, e))?
        else {
            return Ok(None);
        };
        let queued = Instant::now();
        let send = match tokio::time::timeout(cfg.connect_timeout, conn.send.clone().ready()).await
        {
            Ok(Ok(s)) => s,
            // The connection is gone (GOAWAY, reset) before this request left.
            Ok(Err(e)) => {
                self.forget_h2(origin, &conn).await;
                return Err((true, ClientError::Http2(e)));
            }
            Err(_) => return Err((false, ClientError::Timeout("waiting for an HTTP/2 stream"))),
        };
        timings.queued = queued.elapsed();
        let mut send = send;
        let mut req = Request::new(());
        *req.method_mut() = head.method.clone();
        let path = head.target.path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = Uri::builder()
            .scheme(origin.scheme.as_str())
            .authority(format!("{}:{}", origin.host, origin.port))
            .path_and_query(path)
            .build()
            .map_err(|e| (false, ClientError::InvalidUrl(e.to_string())))?;
        *req.headers_mut() = head.headers.clone();
        // :authority carries the host; connection-specific fields are
        // malformed in HTTP/2 (RFC 9113 §8.2.2).
        req.headers_mut().remove(HOST);
        keepwire_proto::hop::strip_hop_by_hop(req.headers_mut(), false);
        // The length h2 checks the DATA frames against: the body's own.
        req.headers_mut().remove(http::header::CONTENT_LENGTH);
        if let Some(n) = body.length()
            && (n > 0 || !head.method.is_safe())
        {
            req.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                keepwire_proto::encode::decimal_value(n),
            );
        }
        let empty = body.is_empty();
        let (resp, stream) = send
            .send_request(req, empty)
            .map_err(|e| (refused(&e), ClientError::Http2(e)))?;
        let mut pump = Pump {
            body: std::mem::take(body),
            stream,
            pending: None,
            done: empty,
        };
        // Send the body while waiting for the answer: the response timeout
        // runs once the body is out; until then the upload's own progress
        // is timed (a server that grants no window for `write_timeout`).
        let mut resp = std::pin::pin!(resp);
        let mut last_progress = Instant::now();
        let result = loop {
            let deadline = if pump.done {
                last_progress + cfg.response_timeout
            } else {
                last_progress + cfg.write_timeout
            };
            tokio::select! {
                r = &mut resp => break r.map_err(|e| (refused(&e), ClientError::Http2(e))),
                step = std::future::poll_fn(|cx| pump.poll(cx)), if !pump.done => match step {
                    Ok(()) => {
                        last_progress = Instant::now();
                        if pump.done {
                            timings.written = started.elapsed();
                        }
                    }
                    // A server that answered early may have reset the
                    // stream: its answer is still the one to relay.
                    Err(e) => {
                        pump.done = true;
                        match tokio::time::timeout(cfg.response_timeout, &mut resp).await {
                            Ok(Ok(r)) => break Ok(r),
                            _ => break Err((false, e)),
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    break Err((false, ClientError::Timeout(if pump.done {
                        "waiting for the response"
                    } else {
                        "sending the request body"
                    })));
                }
            }
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                *body = pump.body;
                return Err(e);
            }
        };
        if !pump.done {
            // Answered before the body was all sent (an echo, or an early
            // error): the rest goes on in the background, for as long as
            // the server reads it.
            let write_timeout = cfg.write_timeout;
            tokio::spawn(async move {
                while !pump.done {
                    let step = tokio::time::timeout(
                        write_timeout,
                        std::future::poll_fn(|cx| pump.poll(cx)),
                    )
                    .await;
                    if !matches!(step, Ok(Ok(()))) {
                        pump.stream.send_reset(h2::Reason::CANCEL);
                        return;
                    }
                }
            });
        } else if timings.written.is_zero() {
            timings.written = started.elapsed();
        }
        timings.first_byte = started.elapsed();
        let (mut parts, recv) = resp.into_parts();
        // Each read is timed like the HTTP/1 pool's: a stalled upstream ends
        // the body with an error (the client hop then shows a truncation,
        // R8.2), and dropping it resets the stream.
        let body = Body::from_h2_bounded(
            recv,
            crate::body::H2BodyBounds {
                timeout: Some(cfg.response_timeout),
                ..Default::default()
            },
        );
        let index = conn.requests.fetch_add(1, Relaxed);
        if !new {
            self.inner.metrics.reused.fetch_add(1, Relaxed);
        }
        parts.extensions.insert(RequestMeta {
            conn: conn.meta,
            reused: !new || index > 0,
            conn_request_index: index,
            retries,
            timings,
        });
        Ok(Some(Response::from_parts(parts, body)))
    }

    /// The origin's connection, opened if there is none (or it ended);
    /// `None` if TLS agreed on HTTP/1.1.
    async fn h2_conn(
        &self,
        origin: &Origin,
        timings: &mut Timings,
    ) -> Result<Option<(H2Conn, bool)>, ClientError> {
        // Single-flight per origin: concurrent first requests share one
        // connection instead of racing to open several, and wait only for
        // their own origin's connect.
        let slot = self.inner.h2.slot(origin);
        let mut current = slot.lock().await;
        if let Some(c) = current.as_ref()
            && c.alive.load(Relaxed)
        {
            return Ok(Some((c.clone(), false)));
        }
        *current = None;
        let cfg = &self.inner.config;
        let stream = self.open_tcp(origin, timings).await?;
        let _ = stream.set_nodelay(true);
        let mut meta = ConnMeta {
            id: self.inner.next_id.fetch_add(1, Relaxed) + 1,
            local: stream.local_addr().map_err(ClientError::Connect)?,
            peer: stream.peer_addr().map_err(ClientError::Connect)?,
            tls: None,
        };
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let send = if origin.scheme == "https" {
            let tls = self.inner.tls_any.clone();
            let stream = self.tls_connect(origin, stream, tls, timings).await?;
            meta.tls = Some(crate::transport::TlsInfo::of(stream.get_ref().1));
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                tracing::debug!(%origin, "ALPN: HTTP/1.1");
                self.learned_http1(origin, stream.into());
                return Ok(None);
            }
            handshake(stream, flag, cfg.connect_timeout).await?
        } else {
            handshake(stream, flag, cfg.connect_timeout).await?
        };
        self.inner.metrics.connections_opened.fetch_add(1, Relaxed);
        let conn = H2Conn {
            send,
            meta,
            requests: Arc::new(AtomicU64::new(0)),
            alive,
        };
        *current = Some(conn.clone());
        Ok(Some((conn, true)))
    }

    async fn forget_h2(&self, origin: &Origin, conn: &H2Conn) {
        conn.alive.store(false, Relaxed);
        let slot = self.inner.h2.slot(origin);
        let mut current = slot.lock().await;
        if current.as_ref().is_some_and(|c| c.meta.id == conn.meta.id) {
            *current = None;
        }
    }
}

impl H2Conns {
    /// Forgets connections that ended.
    pub(crate) fn sweep(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).prune();
    }
}

/// The HTTP/2 handshake on `io`, with the connection driven by its own task
/// that clears `alive` when the connection ends. A handshake that fails or
/// takes longer than `timeout` is a connect failure: nothing was sent.
async fn handshake<T>(
    io: T,
    alive: Arc<AtomicBool>,
    timeout: Duration,
) -> Result<h2::client::SendRequest<Bytes>, ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, driver) = match tokio::time::timeout(timeout, h2::client::handshake(io)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Err(ClientError::Connect(std::io::Error::other(format!(
                "HTTP/2 handshake: {e}"
            ))));
        }
        Err(_) => {
            return Err(ClientError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("HTTP/2 handshake timed out after {timeout:?}"),
            )));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(error = %e, "h2 connection ended");
        }
        alive.store(false, Relaxed);
    });
    Ok(send)
}

/// A request body on its way out under the stream's flow control.
struct Pump {
    body: ReplayBody,
    stream: h2::SendStream<Bytes>,
    /// Bytes taken from the body that got no window yet.
    pending: Option<Bytes>,
    done: bool,
}

impl Pump {
    /// Sends what it can; `Ready(Ok(()))` after each DATA frame (progress)
    /// and at the end (`done`).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        loop {
            if self.pending.is_none() {
                match std::task::ready!(self.body.poll_chunk(cx)) {
                    Some(Ok(chunk)) => self.pending = Some(chunk),
                    Some(Err(e)) => {
                        self.stream.send_reset(h2::Reason::CANCEL);
                        self.done = true;
                        return Poll::Ready(Err(ClientError::Body(e)));
                    }
                    None => {
                        self.done = true;
                        return Poll::Ready(
                            self.stream
                                .send_data(Bytes::new(), true)
                                .map_err(ClientError::Http2),
                        );
                    }
                }
            }
            let Some(chunk) = self.pending.as_mut() else {
                continue;
            };
            self.stream.reserve_capacity(chunk.len());
            let n = match std::task::ready!(self.stream.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Poll::Ready(Err(ClientError::Http2(e))),
                None => {
                    return Poll::Ready(Err(ClientError::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "HTTP/2 stream closed while sending the request body",
                    ))));
                }
            };
            if n == 0 {
                continue;
            }
            let part = chunk.split_to(n.min(chunk.len()));
            if chunk.is_empty() {
                self.pending = None;
            }
            self.stream
                .send_data(part, false)
                .map_err(ClientError::Http2)?;
            return Poll::Ready(Ok(()));
        }
    }
}

/// The server refused the stream unprocessed (RFC 9113 §8.7).
fn refused(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(port: u16) -> Origin {
        Origin {
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn slots_of_origins_without_a_connection_are_forgotten() {
        let conns = H2Conns::default();
        let held = conns.slot(&origin(1));
        for port in 2..200 {
            drop(conns.slot(&origin(port)));
        }
        let slots = conns.map.lock().unwrap();
        assert!(slots.by_origin.len() < 64, "{}", slots.by_origin.len());
        assert!(
            slots
                .by_origin
                .get(&origin(1))
                .is_some_and(|s| Arc::ptr_eq(s, &held)),
            "a slot in use was dropped"
        );
    }
}
