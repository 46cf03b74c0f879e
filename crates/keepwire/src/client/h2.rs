//! The client's HTTP/2 path (h2c with prior knowledge): one multiplexed
//! connection per origin (R4.5) instead of a pool of up to six.
//!
//! The peer's `SETTINGS_MAX_CONCURRENT_STREAMS` is honoured by waiting in
//! `SendRequest::ready` for a free stream. A stream the server refused
//! (`REFUSED_STREAM`, or a connection that ended by GOAWAY before the
//! request left) was never processed, so it is sent again on a new
//! connection whatever its method: the multiplexed form of R8.3.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response, Uri};
use keepwire_proto::RequestHead;
use tokio::time::Instant;

use super::conn::ConnMeta;
use super::pool::Origin;
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

/// One connection per origin.
#[derive(Default)]
pub(crate) struct H2Conns {
    map: tokio::sync::Mutex<HashMap<Origin, H2Conn>>,
}

impl Client {
    /// Sends one request on the origin's HTTP/2 connection; `None` if
    /// ALPN chose HTTP/1.1 instead (the connection is kept for the pool).
    pub(crate) async fn send_h2(
        &self,
        origin: &Origin,
        head: &RequestHead,
        payload: &Bytes,
    ) -> Result<Option<Response<Body>>, ClientError> {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            match self
                .attempt_h2(origin, head, payload, started, retries)
                .await
            {
                Ok(resp) => return Ok(resp),
                // Never processed by the server: safe to send again, once.
                Err((true, _)) if retries == 0 => {
                    self.inner.metrics.retries.fetch_add(1, Relaxed);
                    retries += 1;
                }
                Err((_, e)) => return Err(e),
            }
        }
    }

    /// One attempt; the error says whether the request was refused unseen.
    async fn attempt_h2(
        &self,
        origin: &Origin,
        head: &RequestHead,
        payload: &Bytes,
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
        let (resp, mut body_tx) = send
            .send_request(req, payload.is_empty())
            .map_err(|e| (refused(&e), ClientError::Http2(e)))?;
        if !payload.is_empty() {
            body_tx
                .send_data(payload.clone(), true)
                .map_err(|e| (false, ClientError::Http2(e)))?;
        }
        timings.written = started.elapsed();
        let resp = match tokio::time::timeout(cfg.response_timeout, resp).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err((refused(&e), ClientError::Http2(e))),
            Err(_) => return Err((false, ClientError::Timeout("waiting for the response"))),
        };
        timings.first_byte = started.elapsed();
        let (mut parts, recv) = resp.into_parts();
        let body = Body::from_h2(recv);
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
        // Held across the connect: concurrent first requests share one
        // connection instead of racing to open several.
        let mut map = self.inner.h2.map.lock().await;
        if let Some(c) = map.get(origin)
            && c.alive.load(Relaxed)
        {
            return Ok(Some((c.clone(), false)));
        }
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
            meta.tls = Some(super::TlsInfo::of(stream.get_ref().1));
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                tracing::debug!(%origin, "ALPN: HTTP/1.1");
                self.learned_http1(origin, stream.into());
                return Ok(None);
            }
            handshake(stream, flag).await?
        } else {
            handshake(stream, flag).await?
        };
        self.inner.metrics.connections_opened.fetch_add(1, Relaxed);
        let conn = H2Conn {
            send,
            meta,
            requests: Arc::new(AtomicU64::new(0)),
            alive,
        };
        map.insert(origin.clone(), conn.clone());
        Ok(Some((conn, true)))
    }

    async fn forget_h2(&self, origin: &Origin, conn: &H2Conn) {
        conn.alive.store(false, Relaxed);
        let mut map = self.inner.h2.map.lock().await;
        if map.get(origin).is_some_and(|c| c.meta.id == conn.meta.id) {
            map.remove(origin);
        }
    }
}

impl H2Conns {
    /// Forgets connections that ended (skipped if a connect holds the map).
    pub(crate) fn sweep(&self) {
        if let Ok(mut map) = self.map.try_lock() {
            map.retain(|_, c| c.alive.load(Relaxed));
        }
    }
}

/// The HTTP/2 handshake on `io`, with the connection driven by its own task
/// that clears `alive` when the connection ends.
async fn handshake<T>(
    io: T,
    alive: Arc<AtomicBool>,
) -> Result<h2::client::SendRequest<Bytes>, ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, driver) = h2::client::handshake(io)
        .await
        .map_err(ClientError::Http2)?;
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(error = %e, "h2 connection ended");
        }
        alive.store(false, Relaxed);
    });
    Ok(send)
}

/// The server refused the stream unprocessed (RFC 9113 §8.7).
fn refused(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM)
}
