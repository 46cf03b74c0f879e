//! Extended CONNECT from the client (RFC 8441): one stream of the origin's
//! HTTP/2 connection switched to another protocol (a WebSocket over
//! HTTP/2), handed to the caller as an [`Upgraded`] through the response's
//! [`OnUpgrade`](crate::upgrade::OnUpgrade), as HTTP/1's 101 hands over the
//! connection.
//!
//! Only a server that sent `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` may be
//! asked (RFC 8441 §3). Its SETTINGS may still be in flight on a new
//! connection; a PING's round trip settles that before the request is
//! refused here.

use bytes::Bytes;
use http::header::HOST;
use http::{Method, Request, Response, Uri};
use keepwire_proto::RequestHead;
use tokio::time::Instant;

use super::super::pool::Origin;
use super::super::retry::{AttemptState, h2_state};
use super::super::{Client, ClientError, RequestMeta, Timings};
use super::H2Conn;

/// A stream opened by [`Client::open_stream`]: its connection (and whether
/// that was new), the response to wait for, and the sending half.
type Opened = (
    H2Conn,
    bool,
    h2::client::ResponseFuture,
    h2::SendStream<Bytes>,
);
use crate::body::Body;
use crate::upgrade::h2::H2Stream;
use crate::upgrade::{Protocol, Upgraded};

impl Client {
    /// Sends `head` (a CONNECT) as an extended CONNECT with `protocol` on
    /// the origin's HTTP/2 connection. A 2xx answer carries the stream as
    /// the response's `OnUpgrade`; any other is an ordinary response.
    pub(crate) async fn extended_connect(
        &self,
        origin: &Origin,
        head: &RequestHead,
        protocol: Protocol,
    ) -> Result<Response<Body>, ClientError> {
        let cfg = &self.inner.config;
        let h2 = if origin.scheme == "https" {
            !cfg.http1_only
        } else {
            cfg.http2_prior_knowledge
        };
        if !h2 {
            return Err(ClientError::ExtendedConnect(
                "it needs HTTP/2: https with ALPN h2, or prior knowledge for http",
            ));
        }
        let started = Instant::now();
        let mut timings = Timings::default();
        let mut retried = false;
        let (conn, new, resp, mut stream) = loop {
            let opened = match self
                .open_stream(origin, head, &protocol, &mut timings)
                .await
            {
                Ok(v) => v,
                Err((conn, e)) => match (conn, e) {
                    (Some(conn), ClientError::Http2(e)) if !retried && e.is_go_away() => {
                        self.forget_h2(origin, &conn).await;
                        retried = true;
                        continue;
                    }
                    (_, e) => return Err(e),
                },
            };
            let (conn, new, resp, stream) = opened;
            timings.written = started.elapsed();
            let resp = tokio::time::timeout(cfg.response_timeout, resp)
                .await
                .map_err(|_| ClientError::Timeout("waiting for the response"))?;
            match resp {
                Ok(resp) => break (conn, new, resp, stream),
                // Refused unprocessed (REFUSED_STREAM, or GOAWAY below its
                // id): once more, on a new connection.
                Err(e) if !retried && matches!(h2_state(&e, true), AttemptState::Refused) => {
                    self.forget_h2(origin, &conn).await;
                    retried = true;
                }
                Err(e) => return Err(ClientError::Http2(e)),
            }
        };
        timings.first_byte = started.elapsed();
        let (mut parts, recv) = resp.into_parts();
        let index = conn
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        parts.extensions.insert(RequestMeta {
            conn: conn.meta,
            reused: !new || index > 0,
            conn_request_index: index,
            retries: u32::from(retried),
            timings,
            early_data: false,
        });
        if !parts.status.is_success() {
            // Refused: an ordinary answer, and nothing more from us.
            let _ = stream.send_data(Bytes::new(), true);
            let body = Body::from_h2_bounded(
                recv,
                crate::body::H2BodyBounds {
                    timeout: Some(cfg.response_timeout),
                    ..Default::default()
                },
            );
            return Ok(Response::from_parts(parts, body));
        }
        let (tx, on_upgrade) = crate::upgrade::pending();
        let _ = tx.send(Upgraded::h2_stream(H2Stream::new(stream, recv), None));
        parts.extensions.insert(on_upgrade);
        Ok(Response::from_parts(parts, Body::empty()))
    }

    /// The origin's connection and a new stream on it carrying the extended
    /// CONNECT; on failure, the connection if there was one.
    async fn open_stream(
        &self,
        origin: &Origin,
        head: &RequestHead,
        protocol: &Protocol,
        timings: &mut Timings,
    ) -> Result<Opened, (Option<H2Conn>, ClientError)> {
        let cfg = &self.inner.config;
        let Some((conn, new)) = self.h2_conn(origin, timings).await.map_err(|e| (None, e))? else {
            let e = ClientError::ExtendedConnect("the server chose HTTP/1.1 by ALPN");
            return Err((None, e));
        };
        if !enabled(&conn, cfg.connect_timeout).await {
            let e = ClientError::ExtendedConnect(
                "the server did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL",
            );
            return Err((Some(conn), e));
        }
        let send = tokio::time::timeout(cfg.connect_timeout, conn.send.clone().ready()).await;
        let mut send = match send {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err((Some(conn), ClientError::Http2(e))),
            Err(_) => {
                let e = ClientError::Timeout("waiting for an HTTP/2 stream");
                return Err((Some(conn), e));
            }
        };
        let mut req = Request::new(());
        *req.method_mut() = Method::CONNECT;
        let path = head.target.path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme(origin.scheme.as_str())
            .authority(format!("{}:{}", origin.host, origin.port))
            .path_and_query(path)
            .build();
        *req.uri_mut() = match uri {
            Ok(u) => u,
            Err(e) => return Err((Some(conn), ClientError::InvalidUrl(e.to_string()))),
        };
        *req.headers_mut() = head.headers.clone();
        // :authority carries the host; connection-specific fields are
        // malformed in HTTP/2 (RFC 9113 §8.2.2).
        req.headers_mut().remove(HOST);
        keepwire_proto::hop::strip_hop_by_hop(req.headers_mut(), false);
        req.extensions_mut().insert(protocol.clone());
        match send.send_request(req, false) {
            Ok((resp, stream)) => Ok((conn, new, resp, stream)),
            Err(e) => Err((Some(conn), ClientError::Http2(e))),
        }
    }
}

/// Whether the server enabled extended CONNECT; on a connection whose
/// SETTINGS may not have been read yet, after one PING round trip.
async fn enabled(conn: &H2Conn, timeout: std::time::Duration) -> bool {
    if conn.send.is_extended_connect_protocol_enabled() {
        return true;
    }
    let mut ping = conn.ping.lock().await;
    if let Some(p) = ping.as_mut() {
        let _ = tokio::time::timeout(timeout, p.ping(h2::Ping::opaque())).await;
    }
    conn.send.is_extended_connect_protocol_enabled()
}
