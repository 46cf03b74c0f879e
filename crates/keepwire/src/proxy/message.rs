//! What the proxy checks and changes in the messages that cross it: the
//! request's `Host` (R10.3), loops (`Via`), `Max-Forwards`, which upgrades
//! may pass, and the response's hop-by-hop fields (R3.2, R6.1).
//!
//! These are the edits a proxy makes as an intermediary, kept apart from
//! the plumbing that moves the messages, so each rule has one place.

use std::sync::Arc;

use http::header::{
    CONNECTION, CONTENT_LENGTH, HOST, MAX_FORWARDS, TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, Version};
use keepwire_proto::RequestHead;
use keepwire_proto::hop::strip_hop_by_hop;
use keepwire_proto::host::is_valid_host;

use super::Proxy;
use crate::body::Body;
use crate::upgrade::OnUpgrade;

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
    if (version == Version::HTTP_2 || version == Version::HTTP_3)
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
    /// Makes the client's request head the upstream's, in place (R3.2,
    /// R6.1): nothing hop-by-hop crosses, an allowed upgrade is asked for
    /// again, our `Via` entry is appended (RFC 9110 §7.6.3), `host` (the
    /// target's authority, when it had one) is the `Host` (RFC 9112
    /// §3.2.2), and the target is in origin-form on HTTP/1.1. Field names
    /// keep their spelling and order. `Err` if no origin-form target can
    /// be made.
    pub(super) fn to_next_hop(
        &self,
        head: &mut RequestHead,
        upgrade: Option<HeaderValue>,
        host: Option<&str>,
    ) -> Result<(), &'static str> {
        // An upgrade the route does not allow goes as a plain request (as
        // nginx does without `proxy_set_header Upgrade`).
        strip_hop_by_hop(&mut head.headers, upgrade.is_some());
        if let Some(protocols) = upgrade {
            head.headers.insert(UPGRADE, protocols);
            head.headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        // The version this request was received with.
        head.headers.append(VIA, self.via_for(head.version));
        head.version = Version::HTTP_11;
        if let Some(authority) = host
            && let Ok(v) = HeaderValue::from_str(authority)
        {
            // The target's authority wins over Host, and the Host sent on
            // says the same (never two of them).
            head.headers.insert(HOST, v);
        }
        // An absolute-form target (forward mode, HTTP/2) is reduced to its
        // path once, here.
        if head.target.scheme().is_some() || head.target.authority().is_some() {
            let pq = head.target.path_and_query().map_or("/", |p| p.as_str());
            head.target = pq.parse().map_err(|_| "cannot form the upstream target")?;
        }
        Ok(())
    }

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
        // What the client measured becomes the access log's upstream=/urt=.
        if let Some(meta) = parts.extensions.remove::<crate::client::RequestMeta>() {
            parts.extensions.insert(crate::server::access::Upstream {
                status: parts.status.as_u16(),
                header_time: meta.timings.first_byte,
            });
        }
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use keepwire_proto::{Conn, ConnConfig, Event, Role};

    use super::*;
    use crate::proxy::ProxyConfig;
    use crate::server::Incoming;

    /// A head as the server reads it, spelling kept.
    fn read(raw: &str) -> RequestHead {
        let mut config = ConnConfig::default();
        config.preserve_header_case = true;
        config.proxy_connection = true;
        let mut conn = Conn::new(Role::Server, config);
        conn.read_buffer().extend_from_slice(raw.as_bytes());
        match conn.poll_event() {
            Ok(Some(Event::Request { head, .. })) => head,
            other => panic!("{other:?}"),
        }
    }

    /// What the upstream hop writes for `head`.
    fn written(head: &RequestHead) -> String {
        let mut conn = Conn::new(Role::Client, ConnConfig::default());
        let mut out = BytesMut::new();
        conn.send_request(head, keepwire_proto::BodyLength::Known(0), &mut out)
            .unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn the_head_goes_on_edited_in_place_with_its_spelling_and_order() {
        let proxy = Proxy::new(ProxyConfig::default());
        let table: [(&str, Option<&str>, Option<&str>, &str); 3] = [
            // Reverse, HTTP/1.1: hop-by-hop fields go, Via is appended,
            // the rest keeps its spelling and order.
            (
                "GET /a?q=1 HTTP/1.1\r\nHost: app\r\nX-Trace-ID: 1\r\nProxy-Connection: keep-alive\r\nKeep-Alive: timeout=5\r\naccept: */*\r\n\r\n",
                None,
                None,
                "GET /a?q=1 HTTP/1.1\r\nHost: app\r\nX-Trace-ID: 1\r\naccept: */*\r\nvia: 1.1 keepwire\r\n\r\n",
            ),
            // Forward, HTTP/1.0, absolute-form: origin-form target, the
            // target's authority as Host, Via says 1.0, sent as HTTP/1.1.
            (
                "GET http://origin.test:8080/p HTTP/1.0\r\nHOST: other\r\nConnection: X-Hop\r\nX-Hop: 1\r\nUser-Agent: t\r\n\r\n",
                None,
                Some("origin.test:8080"),
                "GET /p HTTP/1.1\r\nHOST: origin.test:8080\r\nUser-Agent: t\r\nvia: 1.0 keepwire\r\n\r\n",
            ),
            // An allowed upgrade is asked for again: the fields are set
            // anew (after the kept ones), in the client's spelling.
            (
                "GET /ws HTTP/1.1\r\nHost: app\r\nCONNECTION: Upgrade\r\nUPGRADE: websocket\r\n\r\n",
                Some("websocket"),
                None,
                "GET /ws HTTP/1.1\r\nHost: app\r\nUPGRADE: websocket\r\nCONNECTION: upgrade\r\nvia: 1.1 keepwire\r\n\r\n",
            ),
        ];
        for (raw, upgrade, host, want) in table {
            let mut head = read(raw);
            let upgrade = upgrade.map(HeaderValue::from_static);
            proxy.to_next_hop(&mut head, upgrade, host).unwrap();
            assert_eq!(written(&head), want, "{raw:?}");
        }
    }

    #[test]
    fn the_request_view_and_the_head_carry_the_same_request() {
        let head = read("POST /x HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nx-two: 2\r\n\r\n");
        let req = Incoming {
            head: head.clone(),
            body: crate::Body::empty(),
            info: None,
            on_upgrade: None,
            peer_gone: Default::default(),
        }
        .into_request();
        assert_eq!(req.method(), http::Method::POST);
        assert!(
            req.extensions()
                .get::<keepwire_proto::HeaderCase>()
                .is_some()
        );
        let back = Incoming::from_request(req);
        assert_eq!(back.head, head);
        assert!(back.info.is_none() && back.on_upgrade.is_none());
    }
}
