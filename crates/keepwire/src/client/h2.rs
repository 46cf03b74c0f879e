//! The client's HTTP/2 path (ALPN `h2` over TLS, or h2c with prior
//! knowledge): one multiplexed connection per origin (R4.5) instead of a
//! pool of up to six.
//!
//! The peer's `SETTINGS_MAX_CONCURRENT_STREAMS` is honoured by waiting in
//! `SendRequest::ready` for a free stream. A stream the server refused
//! (`REFUSED_STREAM`, or a connection that ended by GOAWAY before the
//! request left) was never processed: the attempt says so
//! ([`super::retry::AttemptState::Refused`]) and the retry rule sends it
//! again whatever its method, if its body could be kept (the multiplexed
//! form of R8.3).
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
use super::retry::{self, AttemptState, FailedAttempt};
use super::{Client, ClientError, RequestMeta, Timings};
use crate::body::Body;

mod extended;

/// An open HTTP/2 connection.
#[derive(Clone)]
pub(crate) struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    meta: ConnMeta,
    requests: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
    /// A PING's round trip proves the server's SETTINGS (its first frame)
    /// were read: extended CONNECT waits for one before it concludes the
    /// server did not enable it.
    ping: Arc<tokio::sync::Mutex<Option<h2::PingPong>>>,
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
    /// An open connection to `origin` that nobody is replacing.
    pub(crate) fn is_live(&self, origin: &Origin) -> bool {
        let slots = self.map.lock().unwrap_or_else(|e| e.into_inner());
        slots.by_origin.get(origin).is_some_and(|s| {
            s.try_lock()
                .is_ok_and(|c| c.as_ref().is_some_and(|c| c.alive.load(Relaxed)))
        })
    }

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
    /// `won`: the connection was just opened by a race against QUIC, whose
    /// phases the first attempt reports.
    pub(crate) async fn send_h2(
        &self,
        origin: &Origin,
        head: &RequestHead,
        body: &mut ReplayBody,
        mut won: Option<super::TcpWon>,
    ) -> Result<Option<Response<Body>>, ClientError> {
        let started = won.map_or_else(Instant::now, |w| w.started);
        let mut retries = 0;
        loop {
            let won = won.take();
            match self
                .attempt_h2(origin, head, body, started, retries, won)
                .await
            {
                Ok(resp) => return Ok(resp),
                Err(failed) => self.after_failure(origin, head, body, failed, &mut retries)?,
            }
        }
    }

    /// One attempt; the error says how far it got (an HTTP/2 attempt is
    /// never `reused` in R8.1's sense, see [`super::retry::Attempt`]).
    async fn attempt_h2(
        &self,
        origin: &Origin,
        head: &RequestHead,
        body: &mut ReplayBody,
        started: Instant,
        retries: u32,
        won: Option<super::TcpWon>,
    ) -> Result<Option<Response<Body>>, FailedAttempt> {
        use AttemptState::*;
        let cfg = &self.inner.config;
        let mut timings = Timings::default();
        let Some((conn, mut new)) = self
            .h2_conn(origin, &mut timings)
            .await
            .map_err(FailedAttempt::not_sent)?
        else {
            return Ok(None);
        };
        if let Some(w) = won
            && !new
            && conn.requests.load(Relaxed) == 0
        {
            // The race opened it for this request.
            new = true;
            w.apply(&mut timings);
        }
        let queued = Instant::now();
        let send = match tokio::time::timeout(cfg.connect_timeout, conn.send.clone().ready()).await
        {
            Ok(Ok(s)) => s,
            // The connection is gone (GOAWAY, reset) before this request
            // left: never processed.
            Ok(Err(e)) => {
                self.forget_h2(origin, &conn).await;
                return Err(failed(Refused, ClientError::Http2(e)));
            }
            Err(_) => {
                let e = ClientError::Timeout("waiting for an HTTP/2 stream");
                return Err(failed(NotSent, e));
            }
        };
        timings.queued = queued.elapsed();
        let mut send = send;
        let req = multiplexed_request(origin, head, body).map_err(|e| failed(NotSent, e))?;
        let empty = body.is_empty();
        let (resp, stream) = match send.send_request(req, empty) {
            Ok(v) => v,
            Err(e) => {
                let failure = failed(retry::h2_state(&e, false), ClientError::Http2(e));
                return Err(self.ended_by(origin, &conn, failure).await);
            }
        };
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
                r = &mut resp => {
                    break r.map_err(|e| failed(retry::h2_state(&e, true), ClientError::Http2(e)));
                }
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
                            _ => break Err(failed(SentNoResponse, e)),
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    break Err(failed(SentNoResponse, ClientError::Timeout(if pump.done {
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
                return Err(self.ended_by(origin, &conn, e).await);
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
            early_data: false,
        });
        Ok(Some(Response::from_parts(parts, body)))
    }

    /// The origin's connection, opened if there is none (or it ended);
    /// `None` if TLS agreed on HTTP/1.1.
    pub(super) async fn h2_conn(
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
            quic: None,
        };
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let (send, ping) = if origin.scheme == "https" {
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
            ping: Arc::new(tokio::sync::Mutex::new(ping)),
        };
        *current = Some(conn.clone());
        Ok(Some((conn, true)))
    }

    /// `failure`, after forgetting `conn` if it says the connection is
    /// going away (GOAWAY): a retry then opens a new one instead of meeting
    /// the same refusal.
    async fn ended_by(
        &self,
        origin: &Origin,
        conn: &H2Conn,
        failure: FailedAttempt,
    ) -> FailedAttempt {
        if let ClientError::Http2(e) = &failure.error
            && e.is_go_away()
        {
            self.forget_h2(origin, conn).await;
        }
        failure
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
/// that clears `alive` when the connection ends (and its PING handle). A
/// handshake that fails or takes longer than `timeout` is a connect
/// failure: nothing was sent.
async fn handshake<T>(
    io: T,
    alive: Arc<AtomicBool>,
    timeout: Duration,
) -> Result<(h2::client::SendRequest<Bytes>, Option<h2::PingPong>), ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut driver) = match tokio::time::timeout(timeout, h2::client::handshake(io)).await {
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
    let ping = driver.ping_pong();
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(error = %e, "h2 connection ended");
        }
        alive.store(false, Relaxed);
    });
    Ok((send, ping))
}

/// The head of `head` as an HTTP/2 or HTTP/3 request: pseudo-header
/// fields from the origin and target, no connection-specific fields, and
/// the body's own length.
pub(crate) fn multiplexed_request(
    origin: &Origin,
    head: &RequestHead,
    body: &ReplayBody,
) -> Result<Request<()>, ClientError> {
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    let path = head.target.path_and_query().map_or("/", |p| p.as_str());
    // RFC 9113 §8.3.1 (RFC 9114 §4.3.1): :authority says what Host would
    // (a virtual host the caller named, as curl's `-H Host:` does).
    let authority = head
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| format!("{}:{}", origin.host, origin.port), str::to_owned);
    *req.uri_mut() = Uri::builder()
        .scheme(origin.scheme.as_str())
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| ClientError::InvalidUrl(e.to_string()))?;
    *req.headers_mut() = head.headers.clone();
    // :authority carries the host; connection-specific fields are
    // malformed (RFC 9113 §8.2.2, RFC 9114 §4.2).
    req.headers_mut().remove(HOST);
    keepwire_proto::hop::strip_hop_by_hop(req.headers_mut(), false);
    // The length the DATA frames are checked against: the body's own.
    req.headers_mut().remove(http::header::CONTENT_LENGTH);
    if let Some(n) = body.length()
        && (n > 0 || !head.method.is_safe())
    {
        req.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            keepwire_proto::encode::decimal_value(n),
        );
    }
    Ok(req)
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

/// A failed HTTP/2 attempt.
fn failed(state: AttemptState, error: ClientError) -> FailedAttempt {
    FailedAttempt::new(state, false, error)
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

    /// An h2c origin that refuses its first stream unprocessed, by
    /// `REFUSED_STREAM` (then answers on the same connection), or by a
    /// GOAWAY whose last stream id is 0 (then answers on the next
    /// connection); answers are 200 "ok".
    async fn refuses_once(by_goaway: bool) -> (u16, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut first = !by_goaway;
            let mut raw = None;
            if by_goaway {
                // By hand, so the GOAWAY names a stream id below the
                // request's: SETTINGS, then frames until the HEADERS.
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut preface = [0u8; 24];
                tcp.read_exact(&mut preface).await.unwrap();
                tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
                loop {
                    let mut head = [0u8; 9];
                    tcp.read_exact(&mut head).await.unwrap();
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
                    let mut payload = vec![0u8; len as usize];
                    tcp.read_exact(&mut payload).await.unwrap();
                    if head[3] == 1 {
                        break;
                    }
                }
                let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                tcp.write_all(&goaway).await.unwrap();
                raw = Some(tcp);
            }
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(tcp).await.unwrap();
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                if std::mem::take(&mut first) {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                let resp = http::Response::new(());
                let mut send = respond.send_response(resp, false).unwrap();
                send.send_data(Bytes::from_static(b"ok"), true).unwrap();
            }
            drop(raw);
        });
        (port, task)
    }

    /// A POST refused unprocessed goes again, once: by `REFUSED_STREAM`,
    /// and by a GOAWAY whose last stream id is below it (on a new
    /// connection: that one takes no new streams).
    #[tokio::test]
    async fn a_stream_refused_unprocessed_is_sent_again() {
        for by_goaway in [false, true] {
            let (port, origin) = refuses_once(by_goaway).await;
            let client = Client::new(super::super::ClientConfig {
                http2_prior_knowledge: true,
                ..Default::default()
            });
            let req = Request::post(format!("http://127.0.0.1:{port}/"))
                .body(Body::full("x"))
                .unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .expect("an answer in time")
                .unwrap_or_else(|e| panic!("GOAWAY {by_goaway}: {e}"));
            assert_eq!(resp.status(), 200, "GOAWAY {by_goaway}");
            let meta = resp.extensions().get::<RequestMeta>().unwrap();
            assert_eq!(meta.retries, 1, "GOAWAY {by_goaway}");
            drop(resp);
            drop(client);
            origin.abort();
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
