//! Running a table of checks: which ones the options select, the time each
//! may take and the time the whole run may take. The server, HTTP/2 and
//! proxy checks are each one table of [`Spec`] rows.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::options::{Event, Options};
use crate::report::{CheckResult, Outcome};

/// What a check function returns; `Err` is an early FAIL (`?` on a probe
/// error), reported like any other outcome.
pub(crate) type CheckOut = Result<Outcome, Outcome>;

/// One row of a check table: its rule, its name, what to run, whether it
/// needs [`Options::slow`], and whether it runs by default but for up to
/// the long limit (`slow_limit`) instead of [`Options::timeout`].
pub(crate) struct Spec<I> {
    pub(crate) rule: &'static str,
    pub(crate) name: &'static str,
    pub(crate) id: I,
    pub(crate) slow: bool,
    pub(crate) long: bool,
}

/// A row that runs by default, within [`Options::timeout`].
pub(crate) const fn c<I>(rule: &'static str, name: &'static str, id: I) -> Spec<I> {
    row(rule, name, id, false, false)
}

/// A row that runs only with [`Options::slow`].
pub(crate) const fn slow<I>(rule: &'static str, name: &'static str, id: I) -> Spec<I> {
    row(rule, name, id, true, false)
}

/// A row that runs by default, for up to the long limit.
pub(crate) const fn long<I>(rule: &'static str, name: &'static str, id: I) -> Spec<I> {
    row(rule, name, id, false, true)
}

const fn row<I>(rule: &'static str, name: &'static str, id: I, slow: bool, long: bool) -> Spec<I> {
    Spec {
        rule,
        name,
        id,
        slow,
        long,
    }
}

/// `R10` matches R10.1 and R10.2 but not R1; `R10.1` matches only R10.1.
fn rule_matches(rule: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('.');
    rule == prefix || rule.starts_with(&format!("{prefix}."))
}

/// Whether `options` select the check `rule`/`name`: its rule matches
/// [`Options::only`] (if set) and its name is among [`Options::names`] (if
/// any are given).
pub(crate) fn selected(options: &Options, rule: &str, name: &str) -> bool {
    let by_rule = options
        .only
        .as_deref()
        .is_none_or(|p| rule_matches(rule, &p.to_ascii_uppercase()));
    let by_name = options.names.is_empty() || options.names.iter().any(|n| n == name);
    by_rule && by_name
}

/// Runs the table's checks in order, those `options` select: each bounded
/// by its deadline ([`Options::timeout`], or `slow_limit` for slow ones)
/// plus an outer safety net, and the whole run by `total`.
pub(crate) async fn run_table<I: Copy, F, Fut>(
    checks: &[Spec<I>],
    options: &Options,
    slow_limit: Duration,
    total: Duration,
    mut run: F,
) -> Vec<CheckResult>
where
    F: FnMut(I, Instant) -> Fut,
    Fut: Future<Output = CheckOut>,
{
    let started = Instant::now();
    let mut results = Vec::new();
    for spec in checks {
        if !selected(options, spec.rule, spec.name) {
            continue;
        }
        let t0 = Instant::now();
        let limit = if spec.slow || spec.long {
            slow_limit
        } else {
            options.timeout
        };
        let outcome = if spec.slow && !options.slow {
            Outcome::skip("needs a long wait; run with --slow")
        } else if started.elapsed() + limit > total {
            Outcome::skip("the run's time limit (--total-timeout) was reached")
        } else {
            options.report(Event::Started {
                rule: spec.rule,
                name: spec.name,
            });
            // The probe deadline bounds every read; this outer limit is a
            // safety net for anything that does not look at it.
            match tokio::time::timeout(limit + Duration::from_millis(500), run(spec.id, t0 + limit))
                .await
            {
                Ok(Ok(o)) | Ok(Err(o)) => o,
                Err(_) => Outcome::fail(format!("check did not finish within {limit:?}")),
            }
        };
        let result = CheckResult {
            rule: spec.rule,
            name: spec.name,
            verdict: outcome.verdict,
            evidence: outcome.evidence,
            elapsed: t0.elapsed(),
        };
        options.report(Event::Finished(&result));
        results.push(result);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_prefixes() {
        assert!(rule_matches("R10.1", "R10"));
        assert!(rule_matches("R10.1", "R10.1"));
        assert!(!rule_matches("R1.2", "R10"));
        assert!(!rule_matches("R10.1", "R1"));
    }

    /// Selection by rule prefix, by name, by both, and by neither.
    #[test]
    fn selection() {
        let all = Options::default();
        let r5 = Options::default().only("r5");
        let named = Options::default().name("TE + CL rejected");
        let both = Options::default().only("R5").name("TE + CL rejected");
        let cases: [(&Options, &str, &str, bool); 8] = [
            (&all, "R10.1", "TE + CL rejected", true),
            (&all, "R5.3", "HTTP/1.1 persistence", true),
            (&r5, "R5.3", "HTTP/1.1 persistence", true),
            (&r5, "R10.1", "TE + CL rejected", false),
            (&named, "R10.1", "TE + CL rejected", true),
            (&named, "R10.1", "differing CLs rejected", false),
            (&both, "R10.1", "TE + CL rejected", false),
            (&both, "R5.3", "TE + CL rejected", true),
        ];
        for (options, rule, name, want) in cases {
            assert_eq!(selected(options, rule, name), want, "{rule} {name}");
        }
    }
}
