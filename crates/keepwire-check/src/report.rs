//! What a run found, as values a caller can assert on: one [`CheckResult`]
//! per check (its rule, its name, a [`Verdict`] and the evidence), gathered
//! in a [`CheckReport`]. Printing them is the caller's business (the `keepwire`
//! command prints a table or JSON).

use std::fmt;
use std::time::Duration;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The rule is followed.
    Pass,
    /// A MUST-level rule is broken.
    Fail,
    /// A SHOULD-level rule is not followed.
    Warn,
    /// Not applicable or not run.
    Skip,
}

impl Verdict {
    /// `PASS`, `FAIL`, `WARN` or `SKIP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Warn => "WARN",
            Verdict::Skip => "SKIP",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check found: a verdict and the evidence that justifies it.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) verdict: Verdict,
    pub(crate) evidence: String,
}

impl Outcome {
    pub(crate) fn pass(e: impl Into<String>) -> Self {
        Outcome {
            verdict: Verdict::Pass,
            evidence: e.into(),
        }
    }
    pub(crate) fn fail(e: impl Into<String>) -> Self {
        Outcome {
            verdict: Verdict::Fail,
            evidence: e.into(),
        }
    }
    pub(crate) fn warn(e: impl Into<String>) -> Self {
        Outcome {
            verdict: Verdict::Warn,
            evidence: e.into(),
        }
    }
    pub(crate) fn skip(e: impl Into<String>) -> Self {
        Outcome {
            verdict: Verdict::Skip,
            evidence: e.into(),
        }
    }
}

/// One finished check.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckResult {
    /// The rule the check tests, e.g. `R10.1` (docs/CONNECTION-RULES.md).
    pub rule: &'static str,
    /// The check's name, e.g. `TE + CL rejected`.
    pub name: &'static str,
    pub verdict: Verdict,
    /// What was sent and seen that justifies the verdict.
    pub evidence: String,
    /// How long the check ran.
    pub elapsed: Duration,
}

/// The checks of one run, in the order they ran.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckReport {
    /// The URL or address that was checked, as given.
    pub target: String,
    pub checks: Vec<CheckResult>,
}

impl CheckReport {
    /// How many checks ended with `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Fail)
    }

    /// No check failed (warnings and skips allowed).
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }
}
