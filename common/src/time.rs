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

/// `ms` as a compact, sortable UTC stamp for file names: `20261205T104528.123Z`.
pub fn compact_utc(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
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

    #[test]
    fn compact_utc_stamps_sort_as_time() {
        assert_eq!(compact_utc(0), "19700101T000000.000Z");
        assert_eq!(compact_utc(1_780_000_000_123), "20260528T202640.123Z");
    }
}
