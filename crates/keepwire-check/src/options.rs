//! How a run is done: which checks, the time limits, and the HTTP/2
//! checks' bounds. One struct for every target, so a caller sets what it
//! cares about and leaves the rest at the defaults.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::report::CheckResult;

/// The time limit of a whole run unless [`Options::total_timeout`] says
/// otherwise (HTTP/2: [`Options::stall_timeout`] + 60 s).
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(110);

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
    /// HTTP/2 over `https://`: trust only the certificates in this PEM file
    /// (default: the platform's roots).
    pub cacert: Option<PathBuf>,
    /// HTTP/2: the request body size the server must refuse beyond; the
    /// oversized-body checks declare (or stream) one byte more.
    pub max_body: u64,
    /// HTTP/2: how long the zero-window check waits for the server to reset
    /// the stalled stream or close the connection.
    pub stall_timeout: Duration,
    /// HTTP/2: streams each reset check opens and resets.
    pub resets: u32,
    /// Told of each check as it starts and ends; see [`Options::on_progress`].
    pub(crate) progress: Option<Progress>,
}

/// What a run reports as it goes, to the [`Options::on_progress`] callback.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A check starts (a check skipped without running only ends).
    Started {
        /// Its rule, e.g. `R5.3`.
        rule: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// A check ended with this result.
    Finished(&'a CheckResult),
}

/// The progress callback (cloned with the options).
#[derive(Clone)]
pub(crate) struct Progress(Arc<dyn Fn(Event<'_>) + Send + Sync>);

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
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
            cacert: None,
            max_body: 16 * 1024 * 1024,
            stall_timeout: Duration::from_secs(90),
            resets: 1000,
            progress: None,
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
    /// Sets [`Options::cacert`].
    pub fn cacert(mut self, pem: impl Into<PathBuf>) -> Self {
        self.cacert = Some(pem.into());
        self
    }
    /// Calls `f` as each check starts and ends (a progress display; the
    /// report still comes whole from [`run`](crate::run)).
    pub fn on_progress(mut self, f: impl Fn(Event<'_>) + Send + Sync + 'static) -> Self {
        self.progress = Some(Progress(Arc::new(f)));
        self
    }
    /// Tells the progress callback, if any.
    pub(crate) fn report(&self, event: Event<'_>) {
        if let Some(Progress(f)) = &self.progress {
            f(event);
        }
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
