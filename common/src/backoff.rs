//! The one exponential backoff: `initial · 2^attempt`, capped at `max`, times a random
//! factor drawn from a validated jitter range. Used by the agent's uplink reconnects, its
//! container restart delays and the collector's notification retries.

use std::time::Duration;

/// Why a backoff cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackoffError {
    #[error("the initial delay must be greater than zero")]
    ZeroInitial,
    #[error("the maximum delay ({max:?}) must not be below the initial delay ({initial:?})")]
    MaxBelowInitial { initial: Duration, max: Duration },
    #[error("jitter factors must satisfy 0 < low <= high <= 2 (got {low}..={high})")]
    Jitter { low: f64, high: f64 },
}

/// Exponential backoff with multiplicative jitter.
///
/// `delay(attempt)` is `min(initial · 2^attempt, max) · f` with `f` uniform in
/// `[jitter_low, jitter_high]`. A range of `[1, 1]` is deterministic (restart delays that
/// operators read in events); `[0.5, 1]` spreads reconnects of a fleet without ever waiting
/// longer than the cap; `[0.8, 1.2]` keeps receivers that failed together from retrying in
/// lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    initial: Duration,
    max: Duration,
    jitter_low: f64,
    jitter_high: f64,
}

impl ExponentialBackoff {
    /// A deterministic backoff (no jitter) from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Result<Self, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial { initial, max });
        }
        Ok(ExponentialBackoff {
            initial,
            max,
            jitter_low: 1.0,
            jitter_high: 1.0,
        })
    }

    /// The same backoff with each delay multiplied by a factor uniform in `[low, high]`.
    pub fn with_jitter(self, low: f64, high: f64) -> Result<Self, BackoffError> {
        // Written so that NaN fails too.
        if !(low > 0.0 && low <= high && high <= 2.0) {
            return Err(BackoffError::Jitter { low, high });
        }
        Ok(ExponentialBackoff {
            jitter_low: low,
            jitter_high: high,
            ..self
        })
    }

    pub fn initial(&self) -> Duration {
        self.initial
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `attempt` (0-based) without jitter:
    /// `min(initial · 2^attempt, max)`. Never overflows.
    pub fn base(&self, attempt: u32) -> Duration {
        // 2^31 already saturates any sensible initial delay; clamping keeps the shift legal.
        self.initial
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.max)
    }

    /// The delay before retry number `attempt` (0-based), jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = if self.jitter_low == self.jitter_high {
            self.jitter_low
        } else {
            self.jitter_low + (self.jitter_high - self.jitter_low) * fastrand::f64()
        };
        self.base(attempt).mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn invalid_settings_refused() {
        let s = Duration::from_secs(1);
        assert_eq!(
            ExponentialBackoff::new(Duration::ZERO, s),
            Err(BackoffError::ZeroInitial)
        );
        assert!(ExponentialBackoff::new(s * 2, s).is_err());
        let ok = ExponentialBackoff::new(s, s * 10).expect("valid");
        for (low, high) in [(0.0, 1.0), (1.2, 0.8), (1.0, 2.5), (f64::NAN, 1.0)] {
            assert!(ok.with_jitter(low, high).is_err(), "{low}..{high}");
        }
    }

    #[test]
    fn deterministic_doubles_to_the_cap() {
        let b = ExponentialBackoff::new(Duration::from_secs(10), Duration::from_secs(300))
            .expect("valid");
        let got: Vec<u64> = (0..7).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }

    proptest! {
        #[test]
        fn delay_stays_within_the_jitter_band(
            initial_ms in 1u64..10_000,
            extra_ms in 0u64..1_000_000,
            low in 0.01f64..1.0,
            spread in 0.0f64..1.0,
            attempt in 0u32..200,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = initial + Duration::from_millis(extra_ms);
            let high = (low + spread).min(2.0);
            let b = ExponentialBackoff::new(initial, max)
                .and_then(|b| b.with_jitter(low, high))
                .expect("valid");
            let base = b.base(attempt);
            prop_assert!(base >= initial && base <= max);
            let d = b.delay(attempt);
            // mul_f64 rounds to the nanosecond.
            let slack = Duration::from_nanos(2);
            prop_assert!(d + slack >= base.mul_f64(low), "{d:?} < {base:?}·{low}");
            prop_assert!(d <= base.mul_f64(high) + slack, "{d:?} > {base:?}·{high}");
            if attempt > 0 {
                prop_assert!(b.base(attempt) >= b.base(attempt - 1));
            }
        }
    }
}
