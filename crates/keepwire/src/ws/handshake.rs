//! The opening handshake (RFC 6455 §4, RFC 8441 §4) on both sides, over
//! keepwire's own server hand-off and client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{CONNECTION, HOST, HeaderName, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::{Config, Error, Role, WebSocket};
use crate::upgrade::OnUpgrade;
use crate::{Body, Client};

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// Whether `req` asks for a WebSocket: an HTTP/1.1 `Upgrade: websocket`,
/// or an HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441).
/// [`accept`] then checks the rest.
pub fn is_upgrade(req: &Request<Body>) -> bool {
    if req.method() == Method::CONNECT {
        return is_rfc8441(req);
    }
    has_token(req.headers(), &UPGRADE, "websocket")
}

fn is_rfc8441(req: &Request<Body>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Whether a comma-separated field `name` holds `token` (ASCII case
/// ignored), in any of its lines.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Resolves to the [`WebSocket`] once the response that accepted it went
/// out (`None` if the connection ended first). Spawn it, or await it after
/// the handler returned the response.
pub struct Accepting {
    fut: Pin<Box<dyn Future<Output = Option<WebSocket>> + Send>>,
    protocol: Option<String>,
}

impl Accepting {
    /// The subprotocol chosen (`Sec-WebSocket-Protocol`), if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
}

impl std::fmt::Debug for Accepting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepting")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Future for Accepting {
    type Output = Option<WebSocket>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// Checks a WebSocket handshake request and answers it: `Ok` with the
/// response to return (101 with `Sec-WebSocket-Accept`, or 200 to an RFC
/// 8441 CONNECT) and the [`Accepting`] that yields the socket once that
/// response is out; `Err` with the refusal to return instead (400 for a
/// malformed handshake, 426 with `Sec-WebSocket-Version: 13` for another
/// version, 405 for a wrong method).
#[allow(clippy::result_large_err)]
pub fn accept(
    req: &mut Request<Body>,
    cfg: Config,
) -> Result<(Response<Body>, Accepting), Response<Body>> {
    let h2 = is_rfc8441(req);
    if !h2 {
        if req.method() != Method::GET {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket handshake is a GET",
            ));
        }
        if req.version() != Version::HTTP_11 {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "a WebSocket handshake needs HTTP/1.1",
            ));
        }
        if !has_token(req.headers(), &UPGRADE, "websocket") {
            return Err(refuse(StatusCode::BAD_REQUEST, "no Upgrade: websocket"));
        }
        if !has_token(req.headers(), &CONNECTION, "upgrade") {
            return Err(refuse(StatusCode::BAD_REQUEST, "no Connection: upgrade"));
        }
    }
    let versions = req.headers().get_all(&SEC_WEBSOCKET_VERSION);
    if versions.iter().count() != 1 || versions.iter().next().is_none_or(|v| v != "13") {
        let mut resp = refuse(StatusCode::UPGRADE_REQUIRED, "only WebSocket version 13");
        resp.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(resp);
    }
    let accept_key = if h2 {
        None
    } else {
        let keys = req.headers().get_all(&SEC_WEBSOCKET_KEY);
        match (keys.iter().next(), keys.iter().count()) {
            (Some(k), 1) if is_nonce(k.as_bytes()) => Some(derive_accept_key(k.as_bytes())),
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "Sec-WebSocket-Key must be one base64-encoded 16-byte nonce",
                ));
            }
        }
    };
    let protocol = choose_protocol(req.headers(), &cfg.protocols);
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this connection cannot hand over an upgrade",
        ));
    };
    let mut resp = Response::new(Body::empty());
    match accept_key {
        Some(key) => {
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(
                SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&key).expect("base64 is a valid field value"),
            );
        }
        None => *resp.status_mut() = StatusCode::OK,
    }
    if let Some(p) = &protocol {
        resp.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).expect("chosen from the request's own values"),
        );
    }
    let fut = Box::pin(async move {
        let io = on_upgrade.wait().await?;
        Some(WebSocket::from_upgraded(io, Role::Server, cfg))
    });
    Ok((resp, Accepting { fut, protocol }))
}

/// A refusal with `why` in a short text body.
fn refuse(status: StatusCode, why: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!("{why}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Whether `key` is base64 of exactly 16 bytes (RFC 6455 §4.2.1 item 5):
/// 22 symbols whose last carries no bits past the 128th, then `==`.
fn is_nonce(key: &[u8]) -> bool {
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24
        && key[..22].iter().all(b64)
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
        && &key[22..] == b"=="
}

/// The first of `ours` (in our order of preference) that the request
/// offers.
fn choose_protocol(headers: &HeaderMap, ours: &[String]) -> Option<String> {
    ours.iter()
        .find(|p| has_token(headers, &SEC_WEBSOCKET_PROTOCOL, p))
        .cloned()
}

/// What the client's handshake sent and got, for `keepwire ws -v` and
/// for callers that want the chosen subprotocol.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Handshake {
    /// The URL asked for (`http://` or `https://` form).
    pub uri: Uri,
    /// The request's method (`GET`; `CONNECT` over HTTP/2).
    pub method: Method,
    /// The request's header fields as sent by the handshake.
    pub request_headers: HeaderMap,
    /// The HTTP version of the response.
    pub version: Version,
    /// The response status (101; 200 over HTTP/2).
    pub status: StatusCode,
    /// The response's header fields.
    pub response_headers: HeaderMap,
    /// `Sec-WebSocket-Accept` matched the key sent (false when the
    /// response had none to check, as over HTTP/2).
    pub accept_checked: bool,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
}

impl Handshake {
    /// The exchange as `curl -v` shows one: `> ` lines sent, `< ` lines
    /// received, `* ` lines what was checked.
    pub fn transcript(&self) -> String {
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut t = if self.method == Method::CONNECT {
            // One stream, the connection's first (id 1), as curl numbers it.
            let authority = self.uri.authority().map_or("", |a| a.as_str());
            let scheme = self.uri.scheme_str().unwrap_or("http");
            let mut t = crate::client::verbose::h2_pseudo_headers(
                1,
                &[
                    (":method", "CONNECT"),
                    (":protocol", "websocket"),
                    (":scheme", scheme),
                    (":authority", authority),
                    (":path", target),
                ],
            );
            t.push_str(&format!("> CONNECT {target} HTTP/2\n"));
            t
        } else {
            format!("> {} {target} HTTP/1.1\n", self.method)
        };
        let fields = |t: &mut String, mark: &str, h: &HeaderMap| {
            for (n, v) in h {
                t.push_str(&format!(
                    "{mark} {n}: {}\n",
                    String::from_utf8_lossy(v.as_bytes())
                ));
            }
        };
        fields(&mut t, ">", &self.request_headers);
        t.push_str(&crate::client::verbose::status_line(
            self.version,
            self.status,
        ));
        fields(&mut t, "<", &self.response_headers);
        t.push_str(if self.accept_checked {
            "* Sec-WebSocket-Accept matches the key sent\n"
        } else if self.response_headers.contains_key(SEC_WEBSOCKET_ACCEPT) {
            "* Sec-WebSocket-Accept does NOT match the key sent\n"
        } else {
            "* no Sec-WebSocket-Accept to check (none over HTTP/2)\n"
        });
        if let Some(p) = &self.protocol {
            t.push_str(&format!("* subprotocol {p}\n"));
        }
        t
    }
}

/// Opens a WebSocket to `url` (`ws://` or `wss://`) over `client`, with
/// `headers` added to the handshake request: an HTTP/1.1 Upgrade (the
/// client's TLS settings apply to `wss://`) checked for its 101,
/// `Upgrade`, `Connection` and `Sec-WebSocket-Accept`; or, with
/// [`Config::http2`], an extended CONNECT (RFC 8441) checked for its 2xx.
/// Either way any subprotocol chosen must be one offered.
pub async fn connect(
    client: &Client,
    url: &str,
    headers: HeaderMap,
    cfg: Config,
) -> Result<(WebSocket, Handshake), Error> {
    let uri = http_uri(url)?;
    let key = generate_key();
    let mut h = headers;
    let mut req = Request::new(Body::empty());
    if cfg.http2 {
        *req.method_mut() = Method::CONNECT;
        *req.version_mut() = Version::HTTP_2;
        req.extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
    } else {
        if !h.contains_key(HOST) {
            let host = uri.authority().map_or("", |a| a.as_str());
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            h.insert(HOST, value(host)?);
        }
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(SEC_WEBSOCKET_KEY, value(&key)?);
    }
    h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    if !cfg.protocols.is_empty() && !h.contains_key(SEC_WEBSOCKET_PROTOCOL) {
        h.insert(SEC_WEBSOCKET_PROTOCOL, value(&cfg.protocols.join(", "))?);
    }
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = h.clone();
    let mut resp = client.request(req).await?;
    let mut shake = Handshake {
        uri,
        method: if cfg.http2 {
            Method::CONNECT
        } else {
            Method::GET
        },
        request_headers: h,
        version: resp.version(),
        status: resp.status(),
        response_headers: resp.headers().clone(),
        accept_checked: false,
        protocol: None,
    };
    let rh = &shake.response_headers;
    let wrong = if cfg.http2 {
        (!resp.status().is_success()).then(|| {
            format!(
                "expected 200 to the extended CONNECT, got {}",
                resp.status()
            )
        })
    } else if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        Some(format!(
            "expected 101 Switching Protocols, got {}",
            resp.status()
        ))
    } else if !has_token(rh, &UPGRADE, "websocket") {
        Some("the 101 has no Upgrade: websocket".to_string())
    } else if !has_token(rh, &CONNECTION, "upgrade") {
        Some("the 101 has no Connection: upgrade".to_string())
    } else if rh.get(&SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes())
        != Some(derive_accept_key(key.as_bytes()).as_bytes())
    {
        Some("Sec-WebSocket-Accept does not match the key sent".to_string())
    } else {
        None
    };
    if let Some(reason) = wrong {
        return Err(Error::Handshake {
            reason,
            handshake: Some(Box::new(shake)),
        });
    }
    shake.accept_checked = !cfg.http2;
    if let Some(p) = rh.get(SEC_WEBSOCKET_PROTOCOL) {
        let p = p.to_str().unwrap_or_default().trim().to_string();
        if !cfg.protocols.contains(&p) {
            return Err(Error::Handshake {
                reason: format!("the server chose subprotocol {p:?}, which was not offered"),
                handshake: Some(Box::new(shake)),
            });
        }
        shake.protocol = Some(p);
    }
    let upgraded = match resp.extensions_mut().remove::<OnUpgrade>() {
        Some(on) => on.wait().await,
        None => None,
    };
    let Some(io) = upgraded else {
        return Err(Error::Handshake {
            reason: "the connection was not handed over after the handshake".into(),
            handshake: Some(Box::new(shake)),
        });
    };
    Ok((WebSocket::from_upgraded(io, Role::Client, cfg), shake))
}

/// `ws://` → `http://`, `wss://` → `https://`.
fn http_uri(url: &str) -> Result<Uri, Error> {
    let bad = |why: &str| Error::Handshake {
        reason: format!("{url}: {why}"),
        handshake: None,
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" => "http",
        "wss" => "https",
        _ => return Err(bad("only ws:// and wss:// URLs")),
    };
    format!("{scheme}://{rest}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))
}

fn value(s: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(s).map_err(|_| Error::Handshake {
        reason: format!("{s:?} is not a valid field value"),
        handshake: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_base64_of_16_bytes() {
        assert!(is_nonce(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_nonce(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!is_nonce(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_nonce(b"short"));
        for _ in 0..100 {
            assert!(is_nonce(generate_key().as_bytes()));
        }
    }

    /// RFC 6455 §1.3's example.
    #[test]
    fn the_accept_key_of_the_rfc_example() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// An RFC 8441 extended CONNECT: recognised, answered 200 with no
    /// Sec-WebSocket-Accept (there is no key), version still checked.
    #[test]
    fn an_rfc8441_connect_is_accepted_with_200() {
        let connect = |version: Option<&'static str>| {
            let mut req = Request::new(Body::empty());
            *req.method_mut() = Method::CONNECT;
            *req.version_mut() = Version::HTTP_2;
            *req.uri_mut() = "https://example.org/chat".parse().unwrap();
            req.extensions_mut()
                .insert(h2::ext::Protocol::from_static("websocket"));
            req.extensions_mut().insert(crate::upgrade::pending().1);
            if let Some(v) = version {
                req.headers_mut()
                    .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(v));
            }
            req.headers_mut()
                .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("x, chat"));
            req
        };
        let mut req = connect(Some("13"));
        assert!(is_upgrade(&req));
        let cfg = Config {
            protocols: vec!["chat".into()],
            ..Config::default()
        };
        let (resp, accepting) = accept(&mut req, cfg).expect("accepted");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(!resp.headers().contains_key(SEC_WEBSOCKET_ACCEPT));
        assert_eq!(resp.headers()[SEC_WEBSOCKET_PROTOCOL], "chat");
        assert_eq!(accepting.protocol(), Some("chat"));
        let refused = accept(&mut connect(None), Config::default()).expect_err("no version");
        assert_eq!(refused.status(), StatusCode::UPGRADE_REQUIRED);
        // CONNECT without :protocol is a tunnel, not a WebSocket.
        let mut tunnel = connect(Some("13"));
        tunnel.extensions_mut().remove::<h2::ext::Protocol>();
        assert!(!is_upgrade(&tunnel));
    }

    #[test]
    fn tokens_ignore_case_and_lists() {
        let mut h = HeaderMap::new();
        h.append(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(has_token(&h, &CONNECTION, "upgrade"));
        assert!(!has_token(&h, &CONNECTION, "close"));
    }
}
