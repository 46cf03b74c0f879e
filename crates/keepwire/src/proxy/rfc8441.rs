//! Extended CONNECT from HTTP/2 clients (RFC 8441), relayed to HTTP/1.1
//! origins as the Upgrade they understand, and back.
//!
//! Browsers open a WebSocket on an HTTP/2 connection that advertised
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL` with a CONNECT carrying
//! `:protocol websocket`, and expect a 200; origins behind the proxy
//! (node `ws`, most WebSocket servers) speak only RFC 6455's GET with
//! `Upgrade: websocket` and answer 101. The proxy translates (as Envoy
//! does), and then relays the two as it relays any upgrade:
//! - The CONNECT becomes a GET with `Upgrade: <protocol>` and
//!   `Connection: Upgrade`; for WebSocket, a fresh `Sec-WebSocket-Key`
//!   (RFC 8441 §5: the HTTP/2 side has none) and `Sec-WebSocket-Version:
//!   13` unless the client sent its own. `Sec-WebSocket-Protocol` and
//!   `-Extensions` go on as they came, and come back likewise.
//! - A 101 becomes a 200, once its `Sec-WebSocket-Accept` proves the
//!   origin answered this handshake (else 502). A 2xx without a switch
//!   would tell the client it has a tunnel it does not have: 502. Any
//!   other answer goes back as it is.
//! - The routes' upgrade allowlist applies as to HTTP/1.1 upgrades.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::message::allowed_upgrade;
use super::{Proxy, text};
use crate::body::Body;
use crate::server::Incoming;
use crate::upgrade::Protocol;

impl Proxy {
    /// Relays an extended CONNECT (`req` is one) as an HTTP/1.1 upgrade.
    pub(super) async fn extended_connect(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        let (mut parts, _) = req.into_parts();
        let protocol = parts.extensions.remove::<Protocol>();
        let Some(upgrade) = protocol.and_then(|p| HeaderValue::from_str(p.as_str()).ok()) else {
            return self.refuse(StatusCode::BAD_REQUEST, "bad :protocol");
        };
        match self.pick(&parts.uri, &parts.headers) {
            Ok(picked) if allowed_upgrade(&upgrade, picked.upgrade).is_none() => {
                return self.refuse(
                    StatusCode::FORBIDDEN,
                    "this protocol is not relayed on this route",
                );
            }
            Ok(_) => {}
            Err(resp) => return resp,
        }
        let websocket = upgrade.as_bytes().eq_ignore_ascii_case(b"websocket");
        parts.method = Method::GET;
        // The upstream hop is HTTP/1.1, where an upgrade is asked for.
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        if !headers.contains_key(HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(HOST, v);
        }
        headers.insert(UPGRADE, upgrade);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        let key = websocket.then(generate_key);
        headers.remove(SEC_WEBSOCKET_KEY);
        if let Some(key) = &key {
            headers.insert(
                SEC_WEBSOCKET_KEY,
                HeaderValue::from_str(key).expect("base64"),
            );
            headers
                .entry(SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
        let req = Request::from_parts(parts, Body::empty());
        let resp = self
            .clone()
            .handle_incoming(Incoming::from_request(req))
            .await;
        self.switched(resp, key.as_deref())
    }

    /// The origin's answer to the translated upgrade, as the HTTP/2 client
    /// expects it.
    fn switched(&self, resp: Response<Body>, key: Option<&str>) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(key) = key {
                let want = derive_accept_key(key.as_bytes());
                let accept = parts.headers.get(SEC_WEBSOCKET_ACCEPT);
                if accept.is_none_or(|v| v.as_bytes() != want.as_bytes()) {
                    return self.bad_gateway("the upstream's Sec-WebSocket-Accept does not match");
                }
            }
            parts.status = StatusCode::OK;
            for name in [SEC_WEBSOCKET_ACCEPT, UPGRADE, CONNECTION] {
                parts.headers.remove(name);
            }
            return Response::from_parts(parts, Body::empty());
        }
        if parts.status.is_success() {
            return self.bad_gateway("the upstream did not switch protocols");
        }
        Response::from_parts(parts, body)
    }

    fn bad_gateway(&self, why: &str) -> Response<Body> {
        self.metrics.bad_gateway.fetch_add(1, Relaxed);
        text(StatusCode::BAD_GATEWAY, why)
    }
}
