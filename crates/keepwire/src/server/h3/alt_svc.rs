//! `Alt-Svc: h3=":PORT"` on the TCP listeners' responses (RFC 7838): how a
//! client that reached us over TCP learns it may use HTTP/3 next time.
//! The QUIC endpoint sits on the same port as the listener the request
//! came in on, so the value names that port.

use std::sync::Arc;

use http::{HeaderValue, Request, header::ALT_SVC};

use crate::body::Body;
use crate::server::{ConnInfo, Handler, Incoming, ResponseFuture};

/// How long a client may remember the advertisement (a day, as most
/// servers say).
const MAX_AGE: u32 = 86_400;

/// The handler the TCP connections of a server with HTTP/3 call: the
/// application's, with `Alt-Svc` set on its responses (the server knows its own QUIC
/// port; an upstream's advertisement, passed on by the proxy, would name
/// the upstream's).
pub(in crate::server) struct AltSvc {
    inner: Arc<dyn Handler>,
    /// One value per QUIC port.
    values: Vec<(u16, HeaderValue)>,
}

impl AltSvc {
    pub(in crate::server) fn new(inner: Arc<dyn Handler>, ports: &[u16]) -> Self {
        let values = ports
            .iter()
            .filter_map(|p| {
                let v = format!("h3=\":{p}\"; ma={MAX_AGE}");
                Some((*p, HeaderValue::from_str(&v).ok()?))
            })
            .collect();
        AltSvc { inner, values }
    }

    fn value(&self, info: Option<&ConnInfo>) -> Option<HeaderValue> {
        let port = info?.local.port();
        let (_, v) = self.values.iter().find(|(p, _)| *p == port)?;
        Some(v.clone())
    }

    fn advertise(&self, fut: ResponseFuture, value: Option<HeaderValue>) -> ResponseFuture {
        let Some(value) = value else {
            return fut;
        };
        Box::pin(async move {
            let mut resp = fut.await;
            resp.headers_mut().insert(ALT_SVC, value);
            resp
        })
    }
}

impl Handler for AltSvc {
    fn call(&self, req: Request<Body>) -> ResponseFuture {
        let value = self.value(req.extensions().get::<ConnInfo>());
        self.advertise(self.inner.call(req), value)
    }

    fn call_incoming(&self, req: Incoming) -> ResponseFuture {
        let value = self.value(req.info.as_ref());
        self.advertise(self.inner.call_incoming(req), value)
    }
}
