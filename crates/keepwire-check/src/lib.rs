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
//! Before any check, [`run`] connects once: a target that cannot be reached
//! (or, over TLS, whose certificate is not trusted) is one
//! [`Error::CannotConnect`], not a FAIL per check; likewise a proxy that
//! does not pass a plain GET to the recording origin is one
//! [`Error::NotForwarded`] that says how to set it up. [`Options::on_progress`]
//! tells a display which check is running.
//!
//! [`run`] returns a [`CheckReport`]: one [`CheckResult`] per check with its
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
mod options;
mod probe;
mod proxy;
mod recording_origin;
mod report;
mod response;
mod server;
mod table;
mod target;

use std::fmt;
use std::time::Duration;

pub use options::{DEFAULT_TOTAL, Event, Options};
pub use report::{CheckReport, CheckResult, Verdict};
use target::Kind;
pub use target::{CheckInfo, Target};

impl Target {
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
    /// The target could not be reached: its name did not resolve, the
    /// connection was refused or timed out, or (`https://`) the TLS
    /// handshake failed.
    CannotConnect {
        /// The address as given (`host:port`).
        addr: String,
        /// What went wrong.
        cause: String,
    },
    /// The proxy answered, but a plain GET did not reach the recording
    /// origin through it (checked once before the proxy checks).
    NotForwarded {
        /// The proxy (`host:port`).
        addr: String,
        /// What the proxy answered, and how to set it up.
        cause: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Target(e) | Error::Origin(e) => f.write_str(e),
            Error::NothingSelected => f.write_str("no check matches the selection"),
            Error::CannotConnect { addr, cause } => write!(f, "cannot connect: {addr}: {cause}"),
            Error::NotForwarded { addr, cause } => {
                write!(f, "the proxy at {addr} does not forward: {cause}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Connects to `addr` once, within `timeout`, trying each address it
/// resolves to.
async fn reachable(addr: &str, timeout: Duration) -> Result<(), Error> {
    let cannot = |cause: String| Error::CannotConnect {
        addr: addr.to_string(),
        cause,
    };
    let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host(addr)).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) => return Err(cannot(format!("name not resolved ({e})"))),
        Err(_) => return Err(cannot(format!("name not resolved within {timeout:?}"))),
    };
    let mut cause = "the name has no address".to_string();
    for a in addrs {
        // The address tried, when the name was not already one.
        let at = Some(a.to_string())
            .filter(|s| s != addr)
            .map_or(String::new(), |s| format!(" ({s})"));
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(a)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                cause = format!("connection refused{at}");
            }
            Ok(Err(e)) => cause = format!("{e}{at}"),
            Err(_) => cause = format!("no answer within {timeout:?}{at}"),
        }
    }
    Err(cannot(cause))
}

/// Runs the checks `options` select against `target`, one after another,
/// and reports each. A check that fails is a [`Verdict::Fail`] in the
/// report, not an error; see [`CheckReport::passed`]. A target that cannot
/// be reached is [`Error::CannotConnect`], found by one connection (within
/// [`Options::timeout`]) before any check runs.
///
/// Needs a tokio runtime with time and I/O enabled (a current-thread one is
/// enough); the proxy checks spawn their recording origin on it.
pub async fn run(target: &Target, options: &Options) -> Result<CheckReport, Error> {
    let checks = match &target.kind {
        Kind::Server { url } => {
            let endpoint = probe::Endpoint::parse(url).map_err(Error::Target)?;
            if endpoint.tls {
                return Err(Error::Target(
                    "https:// is checked over HTTP/2 only".to_string(),
                ));
            }
            selection(target, options)?;
            reachable(&endpoint.addr, options.timeout).await?;
            server::run_checks(&endpoint, options).await
        }
        Kind::Http2 { url } => {
            let endpoint = probe::Endpoint::parse(url).map_err(Error::Target)?;
            selection(target, options)?;
            reachable(&endpoint.addr, options.timeout).await?;
            if endpoint.tls {
                h2::handshake(&endpoint, options)
                    .await
                    .map_err(|cause| Error::CannotConnect {
                        addr: endpoint.addr.clone(),
                        cause,
                    })?;
            }
            h2::run_checks(&endpoint, options).await
        }
        Kind::Proxy {
            addr,
            reverse,
            origin_port,
        } => {
            selection(target, options)?;
            reachable(proxy::address(addr), options.timeout).await?;
            proxy::run_checks(addr, *reverse, *origin_port, options).await?
        }
    };
    if checks.is_empty() {
        return Err(Error::NothingSelected);
    }
    Ok(CheckReport {
        target: target.as_str().to_string(),
        checks,
    })
}

impl Target {
    /// The checks `options` select, in order: what [`run`] reports (those
    /// that need [`Options::slow`] are reported as skipped without it).
    pub fn selected(&self, options: &Options) -> Vec<CheckInfo> {
        let mut checks = self.checks();
        checks.retain(|c| table::selected(options, c.rule, c.name));
        checks
    }
}

/// [`Error::NothingSelected`] before connecting anywhere.
fn selection(target: &Target, options: &Options) -> Result<(), Error> {
    match target.selected(options).is_empty() {
        true => Err(Error::NothingSelected),
        false => Ok(()),
    }
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

    /// Port 1 of loopback refuses: one error for the run, whatever the target.
    #[test]
    fn an_unreachable_target_is_one_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for target in [
            Target::server("http://127.0.0.1:1/"),
            Target::http2_server("https://127.0.0.1:1/"),
            Target::forward_proxy("127.0.0.1:1"),
        ] {
            let e = rt.block_on(run(&target, &Options::default())).unwrap_err();
            assert_eq!(
                e.to_string(),
                "cannot connect: 127.0.0.1:1: connection refused",
                "{target:?}"
            );
        }
    }

    #[test]
    fn progress_tells_each_check_as_it_runs() {
        use std::sync::{Arc, Mutex};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server = keepwire::Server::builder()
                .listen("127.0.0.1:0".parse().unwrap())
                .bind()
                .unwrap()
                .spawn(|_req| async { http::Response::new(keepwire::Body::from("hello\n")) });
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let options = Options::default().only("R5.3").on_progress(move |e| {
                log.lock().unwrap().push(match e {
                    Event::Started { name, .. } => format!("start {name}"),
                    Event::Finished(r) => format!("end {} {}", r.name, r.verdict),
                })
            });
            let url = format!("http://{}/", server.local_addr());
            let report = run(&Target::server(url), &options).await.unwrap();
            let want: Vec<String> = report
                .checks
                .iter()
                .flat_map(|c| {
                    [
                        format!("start {}", c.name),
                        format!("end {} {}", c.name, c.verdict),
                    ]
                })
                .collect();
            assert!(want.len() >= 4, "{want:?}");
            assert_eq!(
                want.len(),
                2 * Target::server("http://x/").selected(&options).len()
            );
            assert_eq!(*seen.lock().unwrap(), want);
        });
    }
}
