//! A connection-management conformance checker for HTTP servers and
//! proxies, usable from `cargo test` or CI the way h2spec is.
//!
//! An HTTP client library cannot tell whether a server closes when it must,
//! refuses an ambiguously framed request, bounds a slow head or survives an
//! HTTP/2 reset flood: it hides the bytes, the framing and the way the
//! connection ends. This crate writes requests by hand (some deliberately
//! malformed) over raw sockets, reads the answers with a strict reader of
//! its own, and reports, rule by rule (R1–R10 of docs/CONNECTION-RULES.md),
//! what the server or proxy did, with the evidence. The `keepwire check`
//! command is a thin layer over it.
//!
//! - [`Target::server`]: an origin over HTTP/1 (persistence, pipelining,
//!   framing and request smuggling, `Host`, limits).
//! - [`Target::http2_server`]: HTTP/2 abuse (rapid reset, CONTINUATION,
//!   SETTINGS and PING floods, oversized bodies, zero window), h2c for
//!   `http://`, h2 by ALPN for `https://`.
//! - [`Target::forward_proxy`], [`Target::reverse_proxy`]: the checker runs
//!   its own recording origin behind the proxy and checks what crosses it.
//!
//! [`run`] returns a [`Report`]: one [`CheckResult`] per check with its
//! rule, name, [`Verdict`] and evidence. [`Options`] choose a subset
//! ([`Options::only`] a rule prefix, [`Options::name`] exact names) and the
//! time limits. [`Target::checks`] lists what a target would run.
//!
//! ```
//! use keepwire::{Body, Server};
//! use keepwire_check::{Options, Target, Verdict};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The server under test: keepwire's own, on a free port.
//! let server = Server::builder()
//!     .listen("127.0.0.1:0".parse().unwrap())
//!     .bind()
//!     .unwrap()
//!     .spawn(|_req| async { http::Response::new(Body::from("hello\n")) });
//! let url = format!("http://{}/", server.local_addr());
//!
//! // The R5.3 checks: persistence and `Connection: close`.
//! let report = keepwire_check::run(&Target::server(url), &Options::default().only("R5.3"))
//!     .await
//!     .unwrap();
//! assert!(report.passed(), "{:#?}", report.failures().collect::<Vec<_>>());
//! assert_eq!(report.count(Verdict::Pass), report.checks.len());
//! # }
//! ```

mod h2;
mod probe;
mod proxy;
mod recording_origin;
mod report;
mod response;
mod server;
mod table;

use std::fmt;
use std::time::Duration;

pub use report::{CheckResult, Report, Verdict};

/// The time limit of a whole run unless [`Options::total_timeout`] says
/// otherwise (HTTP/2: [`Options::stall_timeout`] + 60 s).
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(110);

/// What to check: a server (HTTP/1 or HTTP/2) or a proxy.
#[derive(Debug, Clone)]
pub struct Target {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
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

    /// Every check this target runs, in order (before any selection).
    pub fn checks(&self) -> Vec<CheckInfo> {
        fn info<I>(specs: &[table::Spec<I>]) -> Vec<CheckInfo> {
            specs
                .iter()
                .map(|s| CheckInfo {
                    rule: s.rule,
                    name: s.name,
                    slow: s.slow,
                })
                .collect()
        }
        match &self.kind {
            Kind::Server { .. } => info(server::CHECKS),
            Kind::Http2 { .. } => info(h2::CHECKS),
            Kind::Proxy { .. } => info(proxy::CHECKS),
        }
    }
}

/// One check a target runs, as [`Target::checks`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckInfo {
    /// The rule it tests, e.g. `R10.1`.
    pub rule: &'static str,
    /// Its name, as in [`CheckResult::name`] and [`Options::name`].
    pub name: &'static str,
    /// It needs a long wait and runs only with [`Options::slow`].
    pub slow: bool,
}

/// How to run the checks: which ones, and the time limits.
///
/// `Options::default()` runs every check that needs no long wait, each
/// within 3 s; the setters chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Time limit of each check.
    pub timeout: Duration,
    /// Also run the checks that need long waits (observed idle timeout,
    /// slowloris); each is bounded to 60 s.
    pub slow: bool,
    /// Time limit of the whole run; checks not started by then are
    /// skipped. `None`: [`DEFAULT_TOTAL`], or for HTTP/2
    /// [`Options::stall_timeout`] + 60 s.
    pub total_timeout: Option<Duration>,
    /// Run only the checks whose rule starts with this prefix (`R7`,
    /// `R10.1`; `R1` does not match `R10.1`).
    pub only: Option<String>,
    /// Run only the checks with these names (empty: all).
    pub names: Vec<String>,
    /// HTTP/2 over `https://`: accept any server certificate.
    pub insecure: bool,
    /// HTTP/2: the request body size the server must refuse beyond; the
    /// oversized-body checks declare (or stream) one byte more.
    pub max_body: u64,
    /// HTTP/2: how long the zero-window check waits for the server to reset
    /// the stalled stream or close the connection.
    pub stall_timeout: Duration,
    /// HTTP/2: streams each reset check opens and resets.
    pub resets: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(3),
            slow: false,
            total_timeout: None,
            only: None,
            names: Vec::new(),
            insecure: false,
            max_body: 16 * 1024 * 1024,
            stall_timeout: Duration::from_secs(90),
            resets: 1000,
        }
    }
}

impl Options {
    /// Sets [`Options::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets [`Options::slow`].
    pub fn slow(mut self, slow: bool) -> Self {
        self.slow = slow;
        self
    }
    /// Sets [`Options::total_timeout`].
    pub fn total_timeout(mut self, total: Duration) -> Self {
        self.total_timeout = Some(total);
        self
    }
    /// Sets [`Options::only`], a rule prefix.
    pub fn only(mut self, rule_prefix: impl Into<String>) -> Self {
        self.only = Some(rule_prefix.into());
        self
    }
    /// Adds one check name to [`Options::names`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }
    /// Sets [`Options::insecure`].
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }
    /// Sets [`Options::max_body`].
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }
    /// Sets [`Options::stall_timeout`].
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }
    /// Sets [`Options::resets`].
    pub fn resets(mut self, resets: u32) -> Self {
        self.resets = resets;
        self
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The URL or address cannot be checked (the message says why).
    Target(String),
    /// The recording origin of the proxy checks could not start.
    Origin(String),
    /// The options select no check of this target.
    NothingSelected,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Target(e) | Error::Origin(e) => f.write_str(e),
            Error::NothingSelected => f.write_str("no check matches the selection"),
        }
    }
}

impl std::error::Error for Error {}

/// Runs the checks `options` select against `target`, one after another,
/// and reports each. A check that fails is a [`Verdict::Fail`] in the
/// report, not an error; see [`Report::passed`].
///
/// Needs a tokio runtime with time and I/O enabled (a current-thread one is
/// enough); the proxy checks spawn their recording origin on it.
pub async fn run(target: &Target, options: &Options) -> Result<Report, Error> {
    let checks = match &target.kind {
        Kind::Server { url } => {
            let endpoint = probe::Endpoint::parse(url).map_err(Error::Target)?;
            if endpoint.tls {
                return Err(Error::Target(
                    "https:// is checked over HTTP/2 only".to_string(),
                ));
            }
            server::run_checks(&endpoint, options).await
        }
        Kind::Http2 { url } => {
            let endpoint = probe::Endpoint::parse(url).map_err(Error::Target)?;
            h2::run_checks(&endpoint, options).await
        }
        Kind::Proxy {
            addr,
            reverse,
            origin_port,
        } => proxy::run_checks(addr, *reverse, *origin_port, options)
            .await
            .map_err(Error::Origin)?,
    };
    if checks.is_empty() {
        return Err(Error::NothingSelected);
    }
    Ok(Report {
        target: target.as_str().to_string(),
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names select one check each: no target has two checks of one name.
    #[test]
    fn check_names_are_unique_per_target() {
        for target in [
            Target::server("http://127.0.0.1/"),
            Target::http2_server("http://127.0.0.1/"),
            Target::forward_proxy("127.0.0.1:1"),
        ] {
            let checks = target.checks();
            let mut names: Vec<&str> = checks.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), checks.len(), "{target:?}");
        }
    }

    #[test]
    fn unusable_targets_are_errors() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = Options::default();
        let https = rt.block_on(run(&Target::server("https://127.0.0.1/"), &opts));
        assert!(matches!(https, Err(Error::Target(_))), "{https:?}");
        let ftp = rt.block_on(run(&Target::http2_server("ftp://127.0.0.1/"), &opts));
        assert!(matches!(ftp, Err(Error::Target(_))), "{ftp:?}");
        let none = Options::default().only("R99");
        let nothing = rt.block_on(run(&Target::server("http://127.0.0.1:1/"), &none));
        assert_eq!(nothing.unwrap_err(), Error::NothingSelected);
    }
}
