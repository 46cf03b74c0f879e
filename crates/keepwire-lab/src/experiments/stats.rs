//! The few statistics the experiments report: milliseconds, quantiles of
//! samples, and the summary of an experiment's repeats (median, p10, p90,
//! N) its verdict is judged on.
//!
//! Quantiles interpolate linearly between the two nearest samples (the
//! usual "type 7" definition): the median of two runs is their mean, not
//! the larger one, so a single slow repeat cannot become the median.

use std::time::Duration;

use serde::Serialize;

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn median(v: Vec<f64>) -> f64 {
    quantile(v, 0.5)
}

/// The `q` quantile (0–1) of `v`, interpolated; 0 for no samples.
pub(super) fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let at = (v.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

/// One measured value over an experiment's repeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The median: what the table shows and the verdict is judged on.
    pub median: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Samples (repeats that measured this value).
    pub n: usize,
}

impl Spread {
    /// The spread of `samples`; `None` if there are none.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        if samples.is_empty() {
            return None;
        }
        let v = samples.to_vec();
        Some(Spread {
            median: median(v.clone()),
            p10: quantile(v.clone(), 0.1),
            p90: quantile(v, 0.9),
            n: samples.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_samples() {
        let v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(v.clone()), 3.0);
        assert_eq!(quantile(v.clone(), 0.0), 1.0);
        assert_eq!(quantile(v.clone(), 0.5), 3.0);
        assert!((quantile(v.clone(), 0.9) - 4.6).abs() < 1e-9);
        assert_eq!(quantile(v, 1.0), 5.0);
        // Two samples: the median is their mean.
        assert_eq!(median(vec![100.0, 300.0]), 200.0);
        assert_eq!(median(Vec::new()), 0.0);
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }

    #[test]
    fn spread_of_known_samples() {
        // 1..=11: p10 is the 2nd sample, p90 the 10th exactly.
        let v: Vec<f64> = (1..=11).rev().map(f64::from).collect();
        let s = Spread::of(&v).unwrap();
        assert_eq!((s.median, s.p10, s.p90, s.n), (6.0, 2.0, 10.0, 11));
        // Three repeats, one hit by a retransmission timeout: the median
        // is the typical run, the timeout shows in p90.
        let s = Spread::of(&[150.0, 152.0, 360.0]).unwrap();
        assert_eq!(s.median, 152.0);
        assert!((s.p10 - 150.4).abs() < 1e-9, "{s:?}");
        assert!((s.p90 - 318.4).abs() < 1e-9, "{s:?}");
        assert_eq!(Spread::of(&[]), None);
        let one = Spread::of(&[7.0]).unwrap();
        assert_eq!((one.median, one.p10, one.p90, one.n), (7.0, 7.0, 7.0, 1));
    }
}
