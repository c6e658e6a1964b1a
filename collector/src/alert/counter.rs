//! Counter arithmetic shared by the alert engine (`increase`, `rate`) and the API's tool
//! figures: how much a cumulative counter grew over a run of samples. A drop is a reset (the
//! agent restarted and its counters began again at zero), so the new value itself is the
//! growth since the reset, as in Prometheus's `increase`; there is no extrapolation to the
//! edges of the window.

/// The growth of one counter series, fed its samples in time order.
///
/// Samples before the range only set the baseline. The first sample of the range is
/// compared with the baseline; without one it is the starting point (no growth) unless the
/// accumulator was made with `from_zero`, for callers that know a series without a baseline
/// is new (it began at zero).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterIncrease {
    from_zero: bool,
    prev: Option<(i64, f64)>,
    /// Growth over the range so far.
    pub increase: f64,
    /// Samples in the range, including the first.
    pub samples: u64,
    first_ms: Option<i64>,
    /// The newest sample in the range at which the counter grew.
    pub last_increase_ms: Option<i64>,
    /// Samples not later than the one before (skipped: the order is broken).
    pub out_of_order: u64,
}

impl CounterIncrease {
    pub fn new(from_zero: bool) -> Self {
        CounterIncrease {
            from_zero,
            ..Self::default()
        }
    }

    /// One sample; `in_range` false makes it a baseline only. Non-finite values are
    /// skipped (they are not counts).
    pub fn push(&mut self, ts_ms: i64, value: f64, in_range: bool) {
        if !value.is_finite() {
            return;
        }
        if self.prev.is_some_and(|(t, _)| ts_ms <= t) {
            self.out_of_order += 1;
            return;
        }
        let grew = match self.prev {
            Some((_, p)) if value >= p => value - p,
            Some(_) => value,
            None if self.from_zero => value.max(0.0),
            None => 0.0,
        };
        self.prev = Some((ts_ms, value));
        if !in_range {
            return;
        }
        self.samples += 1;
        self.first_ms.get_or_insert(ts_ms);
        if grew > 0.0 {
            self.increase += grew;
            self.last_increase_ms = Some(ts_ms);
        }
    }

    /// Time of the first and the newest sample in the range.
    pub fn span_ms(&self) -> Option<(i64, i64)> {
        Some((self.first_ms?, self.prev?.0))
    }
}

/// The growth of a counter over `samples` (sorted by time, all in the range, the first one
/// the baseline), with the time between its first and last sample; `None` with fewer than
/// two samples.
pub fn increase(samples: &[(i64, f64)]) -> Option<(f64, i64)> {
    let mut c = CounterIncrease::new(false);
    for &(ts, v) in samples {
        c.push(ts, v, true);
    }
    let (first, last) = c.span_ms()?;
    (c.samples >= 2).then(|| (c.increase, last.saturating_sub(first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_increase_counts_resets_as_growth_from_zero() {
        // 100 → 110 (+10), reset to 4 (+4), → 10 (+6), flat, reset to 0 (+0), → 3 (+3).
        let s = [
            (0, 100.0),
            (1_000, 110.0),
            (2_000, 4.0),
            (3_000, 10.0),
            (4_000, 10.0),
            (5_000, 0.0),
            (6_000, 3.0),
        ];
        assert_eq!(increase(&s), Some((23.0, 6_000)));
        assert_eq!(increase(&s[..1]), None, "one sample tells nothing");
        assert_eq!(increase(&[]), None);
        // NaN is skipped, not a reset.
        let nan = [(0, 5.0), (1_000, f64::NAN), (2_000, 7.0)];
        assert_eq!(increase(&nan), Some((2.0, 2_000)));
    }

    #[test]
    fn alert_counter_baseline_from_zero_and_order() {
        // A baseline before the range: growth from it counts, the baseline itself does not.
        let mut c = CounterIncrease::new(false);
        c.push(-1_000, 40.0, false);
        c.push(1_000, 45.0, true);
        c.push(2_000, 45.0, true);
        assert_eq!((c.increase, c.samples), (5.0, 2));
        assert_eq!(c.last_increase_ms, Some(1_000));
        assert_eq!(c.span_ms(), Some((1_000, 2_000)));
        // Without a baseline the first sample is the starting point...
        let mut c = CounterIncrease::new(false);
        c.push(1_000, 3.0, true);
        assert_eq!((c.increase, c.last_increase_ms), (0.0, None));
        // ...unless the series is known to be new: it began at zero.
        let mut c = CounterIncrease::new(true);
        c.push(1_000, 3.0, true);
        c.push(2_000, 1.0, true);
        assert_eq!((c.increase, c.last_increase_ms), (4.0, Some(2_000)));
        // A baseline wins over `from_zero`; a sample not after the previous one is skipped.
        let mut c = CounterIncrease::new(true);
        c.push(0, 10.0, false);
        c.push(1_000, 12.0, true);
        c.push(1_000, 99.0, true);
        c.push(500, 0.0, true);
        c.push(2_000, 12.0, true);
        assert_eq!((c.increase, c.out_of_order, c.samples), (2.0, 2, 2));
        assert_eq!(c.last_increase_ms, Some(1_000));
    }
}
