//! Unit tests of the uplink: backoff, and fitting spool records into frames.

use super::*;
use crate::spool::SpoolBatch;
use std::time::Duration;

#[test]
fn backoff_grows_to_the_cap_with_jitter() {
    let (min, max) = (Duration::from_millis(100), Duration::from_secs(30));
    // The uplink's reconnect backoff as `agent::run` builds it.
    let reconnect = ExponentialBackoff::new(min, max)
        .and_then(|b| b.with_jitter(0.5, 1.0))
        .expect("valid backoff");
    let backoff = |_min, _max, attempt| reconnect.delay(attempt);
    for attempt in 0..40 {
        let d = backoff(min, max, attempt);
        let ceiling = min.saturating_mul(1 << attempt.min(20)).min(max);
        assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
    }
    assert!(backoff(min, max, 30) >= Duration::from_secs(15));
}

fn wide_record(seq: u64, keys: usize) -> StoredRecord {
    let values = (0..keys)
        .map(|i| (SeriesKey::new("m", &[("i", &format!("{i:040}"))]), i as f64))
        .collect();
    StoredRecord::of(seq, &SpoolBatch::at(1, values))
}

#[test]
fn a_record_over_the_limit_comes_back_unsent_with_nothing_interned() {
    let mut i = Interner::default();
    let Ok(Fitted::Frame(_)) = i.fit(wide_record(1, 3), 1024) else {
        panic!("a small record fits");
    };
    let (record, len) = match i.fit(wide_record(2, 200), 1024) {
        Ok(Fitted::TooLarge(record, len)) => (record, len),
        _ => panic!("200 keys of 50 bytes do not fit in 1 KiB"),
    };
    assert_eq!((record.seq, record.series().len()), (2, 200));
    assert!(len > 1024);
    assert_eq!(i.ids.len(), 3, "the refused record's keys are forgotten");
    let Ok(Fitted::Frame(Frame::Batch(b))) = i.fit(wide_record(3, 4), 1024) else {
        panic!("fits");
    };
    assert_eq!(b.new_series.len(), 1);
    assert_eq!(b.new_series[0].id, 3, "ids stay dense");
}

#[test]
fn a_record_whose_keys_are_interned_is_measured_exactly() {
    let mut i = Interner::default();
    let Ok(Fitted::Frame(_)) = i.fit(wide_record(1, 40), 1 << 20) else {
        panic!("fits");
    };
    // Resent on the same connection, only ids travel: under the bound, which counts keys.
    let again = wide_record(2, 40);
    let (batch, new) = Interner { ids: i.ids.clone() }.wire_batch(&again).unwrap();
    assert!(new.is_empty());
    let exact = wire::encoded_len(&Frame::Batch(batch)).unwrap();
    assert!(stored_wire_len_bound(&again) > exact + 1000);
    assert!(matches!(i.fit(again, exact), Ok(Fitted::Frame(_))));
}

#[test]
fn interner_sends_each_key_once_per_connection() {
    let key = |n: &str| SeriesKey::new(n, &[]);
    let rec = |seq, names: &[&str]| {
        StoredRecord::of(
            seq,
            &SpoolBatch {
                series: names.iter().map(|n| key(n)).collect(),
                samples: (0..names.len() as u32)
                    .map(|i| Sample {
                        series: i,
                        ts_ms: 1,
                        value: i as f64,
                    })
                    .chain([Sample {
                        series: 99,
                        ts_ms: 1,
                        value: 0.0,
                    }])
                    .collect(),
                events: vec![],
            },
        )
    };
    let mut i = Interner::default();
    let (a, _) = i.wire_batch(&rec(1, &["a", "b"])).unwrap();
    assert_eq!(a.new_series.len(), 2);
    assert_eq!(a.samples.len(), 2, "out-of-table sample dropped");
    let (b, new) = i.wire_batch(&rec(2, &["b", "c"])).unwrap();
    assert_eq!(new, vec![1], "only c is new, at table position 1");
    assert_eq!(
        b.new_series,
        vec![SeriesDef {
            id: 2,
            key: key("c")
        }]
    );
    assert_eq!(b.samples[0].series, 1);
    assert_eq!(b.samples[1].series, 2);
}
