//! What to check, named the way a user names it: a server's URL or a
//! proxy's address, and for a proxy where its recording origin listens.

/// What to check: a server (HTTP/1 or HTTP/2) or a proxy.
#[derive(Debug, Clone)]
pub struct Target {
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Server {
        url: String,
    },
    Http2 {
        url: String,
    },
    Proxy {
        addr: String,
        reverse: bool,
        origin_port: Option<u16>,
    },
}

impl Target {
    /// An origin at `url` (`http://host[:port][/path]`), checked over
    /// HTTP/1. Requests go to the path (default `/`), which should answer a
    /// plain GET with 200 and a non-empty body.
    pub fn server(url: impl Into<String>) -> Target {
        Target {
            kind: Kind::Server { url: url.into() },
        }
    }

    /// The HTTP/2 abuse checks of the server at `url`: h2c with prior
    /// knowledge for `http://`, h2 by ALPN for `https://`.
    pub fn http2_server(url: impl Into<String>) -> Target {
        Target {
            kind: Kind::Http2 { url: url.into() },
        }
    }

    /// A forward proxy at `addr` (host:port): requests are sent in absolute
    /// form to the recording origin, which listens on a free port of
    /// 127.0.0.1 unless [`Target::origin_port`] fixes one.
    pub fn forward_proxy(addr: impl Into<String>) -> Target {
        Target {
            kind: Kind::Proxy {
                addr: addr.into(),
                reverse: false,
                origin_port: None,
            },
        }
    }

    /// A reverse proxy at `addr` (host:port) configured to forward to the
    /// recording origin on 127.0.0.1:`origin_port`; requests are sent in
    /// origin form.
    pub fn reverse_proxy(addr: impl Into<String>, origin_port: u16) -> Target {
        Target {
            kind: Kind::Proxy {
                addr: addr.into(),
                reverse: true,
                origin_port: Some(origin_port),
            },
        }
    }

    /// For a proxy target: the port of the recording origin on 127.0.0.1.
    /// Ignored for servers.
    pub fn origin_port(mut self, port: u16) -> Target {
        if let Kind::Proxy { origin_port, .. } = &mut self.kind {
            *origin_port = Some(port);
        }
        self
    }

    /// The URL or address as given.
    pub fn as_str(&self) -> &str {
        match &self.kind {
            Kind::Server { url } | Kind::Http2 { url } => url,
            Kind::Proxy { addr, .. } => addr,
        }
    }
}

/// One check a target runs, as [`Target::checks`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckInfo {
    /// The rule it tests, e.g. `R10.1`.
    pub rule: &'static str,
    /// Its name, as in [`CheckResult::name`](crate::CheckResult::name) and
    /// [`Options::name`](crate::Options::name).
    pub name: &'static str,
    /// It needs a long wait and runs only with
    /// [`Options::slow`](crate::Options::slow).
    pub slow: bool,
}
