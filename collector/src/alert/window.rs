//! Window functions over the samples of one series: `last`, `avg`, `min`, `max`, `rate`,
//! `increase`, `time_until`. Every function returns `None` when it has nothing to say (no samples, or
//! fewer than two for `rate` and `increase`), which the engine treats as "condition not met"
//! rather than as zero.

use serde::{Deserialize, Serialize};

use super::counter::increase;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowFn {
    Last,
    Avg,
    Min,
    Max,
    /// Per-second increase of a counter. A drop in value is a counter reset (the process
    /// restarted from zero), so the new value itself counts as the increase after the reset.
    /// No extrapolation to the window edges: the increase between the first and last sample
    /// divided by the time between them.
    Rate,
    /// Growth of a counter between the first and last sample, resets counted as `Rate`
    /// does (see `counter.rs`).
    Increase,
    /// For a series whose value is a Unix time in seconds (a certificate's notAfter): the
    /// seconds from the last sample's own timestamp to that time. Measured against the
    /// sample's time, not the evaluator's clock, so the answer does not depend on when the
    /// rule runs.
    TimeUntil,
}

impl WindowFn {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "last" => WindowFn::Last,
            "avg" => WindowFn::Avg,
            "min" => WindowFn::Min,
            "max" => WindowFn::Max,
            "rate" => WindowFn::Rate,
            "increase" => WindowFn::Increase,
            "time_until" => WindowFn::TimeUntil,
            _ => return None,
        })
    }

    /// Applies the function to `samples` (sorted by timestamp, already cut to the window).
    /// NaN samples are skipped: one bad reading must not poison an average.
    pub fn apply(self, samples: &[(i64, f64)]) -> Option<f64> {
        let vals = samples.iter().filter(|(_, v)| !v.is_nan());
        match self {
            WindowFn::Last => samples.iter().rev().find(|(_, v)| !v.is_nan()).map(|s| s.1),
            WindowFn::Avg => {
                let (sum, n) = vals.fold((0.0, 0u64), |(s, n), (_, v)| (s + v, n + 1));
                (n > 0).then(|| sum / n as f64)
            }
            WindowFn::Min => vals.map(|s| s.1).reduce(f64::min),
            WindowFn::Max => vals.map(|s| s.1).reduce(f64::max),
            WindowFn::Rate => {
                let (grew, ms) = increase(samples)?;
                let secs = ms as f64 / 1000.0;
                (secs > 0.0).then(|| grew / secs)
            }
            WindowFn::Increase => increase(samples).map(|(grew, _)| grew),
            WindowFn::TimeUntil => samples
                .iter()
                .rev()
                .find(|(_, v)| !v.is_nan())
                .map(|(ts_ms, v)| v - *ts_ms as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_window_functions() {
        let s = [(0, 1.0), (1000, f64::NAN), (2000, 3.0), (3000, 2.0)];
        assert_eq!(WindowFn::Last.apply(&s), Some(2.0));
        assert_eq!(WindowFn::Avg.apply(&s), Some(2.0));
        assert_eq!(WindowFn::Min.apply(&s), Some(1.0));
        assert_eq!(WindowFn::Max.apply(&s), Some(3.0));
        assert_eq!(WindowFn::Avg.apply(&[]), None);
        assert_eq!(WindowFn::Rate.apply(&[(0, 5.0)]), None);
        assert_eq!(WindowFn::Increase.apply(&[(0, 5.0)]), None);
        assert_eq!(WindowFn::Increase.apply(&[(0, 5.0), (9, 2.0)]), Some(2.0));
        // Expires at t = 1000 s; last seen at 400 s: 600 s left.
        let expiry = [(100_000, 1000.0), (400_000, 1000.0)];
        assert_eq!(WindowFn::TimeUntil.apply(&expiry), Some(600.0));
        assert_eq!(WindowFn::TimeUntil.apply(&[]), None);
    }

    #[test]
    fn alert_rate_handles_counter_reset() {
        // 100 → 110 (+10), reset to 4 (+4), → 10 (+6): 20 over 3 s.
        let s = [(0, 100.0), (1000, 110.0), (2000, 4.0), (3000, 10.0)];
        let r = WindowFn::Rate.apply(&s).expect("rate");
        assert!((r - 20.0 / 3.0).abs() < 1e-9, "{r}");
        // A flat counter has rate 0, never negative across a reset to 0.
        let flat = [(0, 7.0), (1000, 7.0), (2000, 0.0)];
        assert_eq!(WindowFn::Rate.apply(&flat), Some(0.0));
        // Extreme timestamps (found by proptest) must not overflow.
        let wide = [(i64::MIN, 0.0), (i64::MAX, 1.0)];
        assert!(WindowFn::Rate.apply(&wide).is_some());
    }
}
