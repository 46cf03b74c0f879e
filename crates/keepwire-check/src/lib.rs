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

pub use options::{DEFAULT_TOTAL, Options};
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
/// report, not an error; see [`CheckReport::passed`].
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
    Ok(CheckReport {
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
