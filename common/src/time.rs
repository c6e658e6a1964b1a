//! The one wall-clock helper: milliseconds since the Unix epoch, as every timestamp on the
//! wire, in the spool and in the collector's database is written.

/// Milliseconds since the Unix epoch; 0 if the clock is before it, `i64::MAX` past year
/// 292 million. Never panics, so it is safe on any path that stamps data.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2024_and_monotone_enough() {
        let a = now_ms();
        assert!(a > 1_704_067_200_000, "{a}");
        assert!(now_ms() >= a);
    }
}
