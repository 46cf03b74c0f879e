//! The request a run sends, built once before the run so the hot path only
//! copies bytes.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Uri, Version};
use keepwire_proto::{BodyLength, Conn, ConnConfig, RequestHead, Role};

/// The request an HTTP/2 run sends (h2 builds its own frames per stream).
#[derive(Debug, Clone)]
pub struct Http2Request {
    /// Absolute URI (scheme and authority become pseudo-header fields).
    pub uri: Uri,
    /// Header fields (no connection-specific ones: RFC 9113 §8.2.2).
    pub headers: HeaderMap,
    /// Body, sent in one DATA frame when not empty.
    pub body: Bytes,
}

/// Serialises a request once, through the client's own encoder, so the bytes
/// are exactly what keepwire's client would send. `keep_alive: false` adds
/// `Connection: close`; an HTTP/1.0 request gets `Connection: keep-alive`
/// otherwise (as `ab -k` sends). A `Host` field is added from the URL.
pub fn request_bytes(
    method: &Method,
    url: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    version: Version,
    keep_alive: bool,
) -> Result<Bytes, String> {
    let mut head = request_head(method, url, headers, version)?;
    if !keep_alive {
        head.headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let mut conn = Conn::new(Role::Client, ConnConfig::default());
    let mut out = BytesMut::new();
    conn.send_request(&head, BodyLength::Known(body.len() as u64), &mut out)
        .map_err(|e| e.to_string())?;
    if !body.is_empty() {
        let framed = conn.send_body(body.clone()).map_err(|e| e.to_string())?;
        out.put(framed);
    }
    conn.send_end(None, &mut out).map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

/// The head of a request for `url` (origin-form target), with `headers` and
/// a `Host` field from the URL unless `headers` has one.
pub(super) fn request_head(
    method: &Method,
    url: &Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<RequestHead, String> {
    let target: Uri = url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| format!("bad target: {e}"))?;
    let mut head = RequestHead::new(method.clone(), target, version);
    head.headers = headers.clone();
    if !head.headers.contains_key(http::header::HOST) {
        let host = url.authority().ok_or("the URL has no host")?.as_str();
        let value = host.parse().map_err(|_| format!("bad host {host}"))?;
        head.headers.insert(http::header::HOST, value);
    }
    Ok(head)
}
