//! The few statistics the experiments report: milliseconds, the median and
//! a nearest-rank quantile of samples.

use std::time::Duration;

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(super) fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_a_sample() {
        let v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(v.clone()), 3.0);
        assert_eq!(quantile(v.clone(), 0.0), 1.0);
        assert_eq!(quantile(v.clone(), 0.5), 3.0);
        assert_eq!(quantile(v.clone(), 0.9), 5.0);
        assert_eq!(quantile(v, 1.0), 5.0);
        assert_eq!(median(Vec::new()), 0.0);
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
