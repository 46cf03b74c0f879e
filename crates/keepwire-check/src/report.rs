//! What a run found, as values a caller can assert on: one [`CheckResult`]
//! per check (its rule, its name, a [`Verdict`] and the evidence), gathered
//! in a [`CheckReport`], which renders itself as the table or the JSON
//! document `keepwire check` prints (so a CI job calling the library can
//! print the same).

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

    /// One line per check (rule, verdict, name, evidence), then the
    /// counts; with `color`, the verdicts in ANSI colours (for a terminal).
    pub fn table(&self, color: bool) -> String {
        let rule_w = self.checks.iter().map(|r| r.rule.len()).max().unwrap_or(0);
        let name_w = self.checks.iter().map(|r| r.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for r in &self.checks {
            let v = match (color, r.verdict) {
                (false, v) => v.to_string(),
                (true, Verdict::Pass) => format!("\x1b[32m{}\x1b[0m", r.verdict),
                (true, Verdict::Fail) => format!("\x1b[1;31m{}\x1b[0m", r.verdict),
                (true, Verdict::Warn) => format!("\x1b[33m{}\x1b[0m", r.verdict),
                (true, Verdict::Skip) => format!("\x1b[2m{}\x1b[0m", r.verdict),
            };
            let (rule, name, evidence) = (r.rule, r.name, &r.evidence);
            out += &format!("{rule:rule_w$}  {v}  {name:name_w$}  {evidence}\n");
        }
        let (warned, skipped) = (self.count(Verdict::Warn), self.count(Verdict::Skip));
        if warned > 0 || skipped > 0 {
            out += &format!("{warned} warnings, {skipped} skipped\n");
        }
        let (passed, failed) = (self.count(Verdict::Pass), self.count(Verdict::Fail));
        out + &format!("{passed} passed, {failed} failed\n")
    }

    /// The report as a JSON document: `target`, `checks` (`rule`, `name`,
    /// `result`, `evidence`, `elapsed_ms`) and `summary` (`passed`,
    /// `failed`, `warnings`, `skipped`).
    pub fn to_json(&self) -> String {
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|r| {
                serde_json::json!({
                    "rule": r.rule,
                    "name": r.name,
                    "result": r.verdict.as_str(),
                    "evidence": r.evidence,
                    "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "target": self.target,
            "checks": checks,
            "summary": {
                "passed": self.count(Verdict::Pass),
                "failed": self.count(Verdict::Fail),
                "warnings": self.count(Verdict::Warn),
                "skipped": self.count(Verdict::Skip),
            },
        });
        format!("{doc:#}\n")
    }
}
