//! What the proxy checks and changes in the messages that cross it: the
//! request's `Host` (R10.3), loops (`Via`), `Max-Forwards`, which upgrades
//! may pass, and the response's hop-by-hop fields (R3.2, R6.1).
//!
//! These are the edits a proxy makes as an intermediary, kept apart from
//! the plumbing that moves the messages, so each rule has one place.

use std::sync::Arc;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, MAX_FORWARDS, TRANSFER_ENCODING, VIA};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, Version};
use keepwire_proto::hop::strip_hop_by_hop;
use keepwire_proto::host::is_valid_host;

use super::Proxy;
use crate::body::Body;
use crate::server::OnUpgrade;

/// What the proxy relays; TRACE only when turned on.
const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH, CONNECT";
pub(super) const ALLOWED_NO_TRACE: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, CONNECT";

/// Why the request's Host is unusable (RFC 9112 §3.2, RFC 9113 §8.3.1), if
/// it is: repeated, not an authority (userinfo included), userinfo in the
/// target, or (HTTP/2) different from `:authority`.
pub(super) fn host_problem(
    headers: &HeaderMap,
    target: &Uri,
    version: Version,
) -> Option<&'static str> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("more than one Host field");
    }
    if let Some(h) = host
        && !is_valid_host(h.as_bytes())
    {
        return Some("invalid Host");
    }
    let authority = target.authority();
    if authority.is_some_and(|a| a.as_str().contains('@')) {
        return Some("userinfo in the request target");
    }
    if version == Version::HTTP_2
        && let (Some(h), Some(a)) = (host, authority)
        && !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())
    {
        return Some(":authority and Host differ");
    }
    None
}

/// Whether a `Via` entry names this proxy (`name`): the request came round.
/// Entries are `PROTOCOL-VERSION RECEIVED-BY`: ours whatever the version.
pub(super) fn is_loop(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(VIA).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|e| e.split_whitespace().nth(1) == Some(name))
        })
    })
}

/// `Max-Forwards` (RFC 9110 §7.6.2), if present and a number.
pub(super) fn max_forwards(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(MAX_FORWARDS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// OPTIONS with `Max-Forwards: 0`: we are the final recipient.
pub(super) fn options_here(trace: bool) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    let allow = if trace { ALLOWED } else { ALLOWED_NO_TRACE };
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The protocols of `offered` (an `Upgrade` value) that `allowed` names,
/// as the value to send on; `None` if there are none.
pub(super) fn allowed_upgrade(offered: &HeaderValue, allowed: &[String]) -> Option<HeaderValue> {
    let kept: Vec<&str> = offered
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .filter(|p| {
            let name = p.split('/').next().unwrap_or("");
            !name.is_empty() && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

impl Proxy {
    /// Our `Via` entry for a message received with `version`.
    pub(super) fn via_for(&self, version: Version) -> HeaderValue {
        let token = match version {
            Version::HTTP_11 => return self.via.clone(),
            Version::HTTP_09 => "0.9",
            Version::HTTP_10 => "1.0",
            Version::HTTP_2 => "2",
            _ => "3",
        };
        HeaderValue::from_str(&format!("{token} {}", self.config.via_name))
            .unwrap_or_else(|_| self.via.clone())
    }

    /// Cleans the upstream response for the client hop and relays it.
    pub(super) fn relay_response(
        self: &Arc<Self>,
        resp: Response<Body>,
        client_upgrade: Option<OnUpgrade>,
    ) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        // RFC 9112 §6.1: Transfer-Encoding overrode a received
        // Content-Length (the body was read chunked or until close), so a
        // forwarded message must lose it; the next hop's framing comes from
        // the body as relayed.
        if parts.headers.contains_key(TRANSFER_ENCODING) {
            parts.headers.remove(CONTENT_LENGTH);
        }
        strip_hop_by_hop(&mut parts.headers, switching);
        // The version the response was received with (HTTP/2 from an
        // upstream that chose it by ALPN).
        parts.headers.append(VIA, self.via_for(parts.version));
        parts.extensions.remove::<crate::client::RequestMeta>();
        if switching {
            let upstream = parts.extensions.remove::<OnUpgrade>();
            match (client_upgrade, upstream) {
                (Some(down), Some(up)) => {
                    parts
                        .headers
                        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                    self.relay_upgrade(down, up);
                }
                _ => {
                    return self.refuse(
                        StatusCode::BAD_GATEWAY,
                        "upstream switched protocols unasked",
                    );
                }
            }
        }
        Response::from_parts(parts, body)
    }
}
