//! Tests of the retention of acknowledged records and of `rewind`, the spool's half of a
//! collector restored from a backup.

use std::path::Path;
use std::time::Duration;

use mcpwatch_common::wire::{Sample, SeriesKey};

use super::{Spool, SpoolBatch, SpoolConfig, MIN_SEGMENT_BYTES};

fn cfg(dir: &Path, keep_acked: Duration) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: MIN_SEGMENT_BYTES,
        fsync: false,
        max_frame_len: mcpwatch_common::wire::DEFAULT_MAX_FRAME_LEN,
        keep_acked,
    }
}

/// 100 samples at `ts` (about 1.5 KB stored: a few records fill a 4 KiB segment).
fn batch(ts: i64) -> SpoolBatch {
    SpoolBatch {
        series: vec![SeriesKey::new("m", &[("k", "v")])],
        samples: (0..100)
            .map(|i| Sample {
                series: 0,
                ts_ms: ts + i,
                value: i as f64,
            })
            .collect(),
        events: Vec::new(),
    }
}

fn seqs(s: &Spool, from: u64) -> Vec<u64> {
    s.read_from(from, usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

#[test]
fn spool_keeps_recent_acknowledged_records_and_rewind_sends_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let now = mcpwatch_common::time::now_ms();
    let mut s = Spool::open(cfg(dir.path(), Duration::from_secs(3600))).unwrap();
    for i in 0..12 {
        s.append(batch(now - 60_000 + i)).unwrap();
    }
    let before = segments(dir.path());
    assert!(before >= 3, "{before} segments");
    s.ack(12).unwrap();
    assert_eq!(
        segments(dir.path()),
        before,
        "recent acknowledged segments are kept"
    );
    assert!(seqs(&s, 1).is_empty(), "acknowledged records are not read");

    // A collector restored from a backup holds only up to seq 4.
    assert_eq!(s.rewind(5).unwrap(), 8);
    assert_eq!(s.last_acked(), 4);
    assert_eq!(seqs(&s, 5), (5..=12).collect::<Vec<_>>());
    // The lowered watermark is what a restart finds.
    drop(s);
    let s = Spool::open(cfg(dir.path(), Duration::from_secs(3600))).unwrap();
    assert_eq!(s.last_acked(), 4);
    assert_eq!(seqs(&s, 0), (5..=12).collect::<Vec<_>>());
    // A resume point past the watermark reopens nothing.
    let mut s = s;
    assert_eq!(s.rewind(9).unwrap(), 0);
    assert_eq!(s.last_acked(), 4);
}

#[test]
fn spool_deletes_acknowledged_records_older_than_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let old = mcpwatch_common::time::now_ms() - 2 * 3_600_000;
    let mut s = Spool::open(cfg(dir.path(), Duration::from_secs(3600))).unwrap();
    for i in 0..12 {
        s.append(batch(old + i)).unwrap();
    }
    s.ack(12).unwrap();
    // Only the segment being written remains.
    assert_eq!(segments(dir.path()), 1);
    // What is gone cannot come back: a rewind replays only what is still stored.
    s.rewind(1).unwrap();
    let left = seqs(&s, 1);
    assert!(!left.is_empty() && left.len() < 12, "{left:?}");
    assert_eq!(*left.last().unwrap(), 12);

    // With no retention, acknowledged segments go at once (the previous behaviour).
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(cfg(dir.path(), Duration::ZERO)).unwrap();
    let now = mcpwatch_common::time::now_ms();
    for i in 0..12 {
        s.append(batch(now + i)).unwrap();
    }
    s.ack(12).unwrap();
    assert_eq!(segments(dir.path()), 1);
}
