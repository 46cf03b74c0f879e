//! Where a request goes: a reverse route by host and path prefix, or, in
//! forward mode, the origin its absolute-form target names.
//!
//! Routing reads the same authority the next hop will (the target's when
//! there is one, RFC 9112 §3.2.2, else `Host`), through the one authority
//! parser, so the route and the upstream cannot disagree on the host.

use std::sync::Arc;

use http::header::HOST;
use http::{HeaderMap, Response, StatusCode, Uri};
use keepwire_proto::host::split_authority;

use super::{Proxy, Route, Upstream};
use crate::body::Body;
use crate::client::Origin;

/// Where a request goes.
pub(super) struct Picked<'a> {
    /// Upstreams to try in order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The `Host` to send: the target's authority for an absolute-form
    /// request (RFC 9112 §3.2.2) or an HTTP/2 `:authority`.
    pub host: Option<String>,
    /// Forward mode (the forward pool and its destination policy).
    pub forward: bool,
    /// Upgrade protocols allowed.
    pub upgrade: &'a [String],
}

impl Proxy {
    /// Which upstreams may take a request for `target` with `headers`, and
    /// for forward requests the authority of the absolute-form target.
    #[allow(clippy::result_large_err)]
    pub(super) fn pick(
        &self,
        target: &Uri,
        headers: &HeaderMap,
    ) -> Result<Picked<'_>, Response<Body>> {
        let absolute = target.scheme().is_some();
        // A reverse proxy routes on the target's authority when there is
        // one (an HTTP/2 request may carry Host instead of :authority).
        if absolute && (self.config.forward || target.authority().is_some()) {
            // The target's authority routes it and is the Host sent on.
            let host = target.authority().map(|a| a.as_str().to_string());
            if !self.config.forward {
                // A reverse proxy also accepts absolute-form (RFC 9112
                // §3.2.2), but only for the hosts it routes.
                let route = self.route(target.host(), target.path())?;
                return Ok(Picked {
                    upstreams: route.candidates(),
                    host,
                    forward: false,
                    upgrade: &route.upgrade,
                });
            }
            // The proxy speaks TLS to an `https` origin itself (the client
            // chose not to tunnel; CONNECT is the end-to-end way).
            let scheme = target.scheme_str().unwrap_or("");
            if scheme != "http" && scheme != "https" {
                return Err(self.refuse(
                    StatusCode::BAD_REQUEST,
                    "only http:// and https:// targets are proxied",
                ));
            }
            let Some((origin, authority)) = host.and_then(|a| Some((Origin::new(scheme, &a)?, a)))
            else {
                return Err(self.refuse(
                    StatusCode::BAD_REQUEST,
                    "absolute-form target without a host",
                ));
            };
            return Ok(Picked {
                upstreams: vec![Arc::new(Upstream::for_origin(origin, authority.clone()))],
                host: Some(authority),
                forward: true,
                upgrade: &self.config.forward_upgrade,
            });
        }
        let host = headers
            .get(HOST)
            .and_then(|h| split_authority(h.as_bytes()))
            .map(|(host, _)| host);
        let route = self.route(host, target.path())?;
        Ok(Picked {
            upstreams: route.candidates(),
            host: None,
            forward: false,
            upgrade: &route.upgrade,
        })
    }

    #[allow(clippy::result_large_err)]
    pub(super) fn route(&self, host: Option<&str>, path: &str) -> Result<&Route, Response<Body>> {
        self.config
            .routes
            .iter()
            .filter(|r| r.matches(host, path))
            .max_by_key(|r| (r.host.is_some(), r.prefix.len()))
            .ok_or_else(|| {
                if self.config.forward {
                    self.refuse(
                        StatusCode::BAD_REQUEST,
                        "a forward proxy needs an absolute-form target (http://host/path)",
                    )
                } else {
                    self.refuse(StatusCode::NOT_FOUND, "no route for this host and path")
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxyConfig;

    #[test]
    fn routes_prefer_host_then_longest_prefix() {
        let cfg = ProxyConfig {
            routes: vec![
                Route::new(None, "/", vec![Upstream::new("a:1")]),
                Route::new(None, "/api", vec![Upstream::new("b:1")]),
                Route::new(Some("Example.test".into()), "/", vec![Upstream::new("c:1")]),
            ],
            ..ProxyConfig::default()
        };
        let p = Proxy::new(cfg);
        let pick =
            |h: Option<&str>, path: &str| p.route(h, path).unwrap().upstreams[0].authority.clone();
        assert_eq!(pick(None, "/x"), "a:1");
        assert_eq!(pick(None, "/api/v1"), "b:1");
        assert_eq!(pick(Some("example.test"), "/api"), "c:1");
    }

    #[test]
    fn a_host_routes_without_its_port() {
        let cfg = ProxyConfig {
            routes: vec![
                Route::new(None, "/", vec![Upstream::new("a:1")]),
                Route::new(Some("a.test".into()), "/", vec![Upstream::new("b:1")]),
                Route::new(Some("[::1]".into()), "/", vec![Upstream::new("c:1")]),
            ],
            ..ProxyConfig::default()
        };
        let p = Proxy::new(cfg);
        let via_host = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, host.parse().unwrap());
            let picked = p.pick(&Uri::from_static("/x"), &headers).ok().unwrap();
            picked.upstreams[0].authority.clone()
        };
        assert_eq!(via_host("a.test:8080"), "b:1");
        assert_eq!(via_host("A.test"), "b:1");
        assert_eq!(via_host("[::1]:80"), "c:1");
        assert_eq!(via_host("other.test"), "a:1");
    }
}
