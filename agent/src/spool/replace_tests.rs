//! Tests of storing and replacing records against the frame limit, on real files: batches
//! split when stored, oversized records replaced exactly once across reopen and crashes,
//! what cannot fit set aside in `rejected/` and described by a gap.

use std::fs;
use std::path::Path;

use mcpwatch_common::wire::{Event, Sample, SeriesKey, DEFAULT_MAX_FRAME_LEN};

use super::split::{stored_wire_len_bound, wire_len_bound};
use super::{Spool, SpoolBatch, SpoolConfig, StoredRecord, REJECTED_DIR};

const LIMIT: usize = 16 * 1024;

fn cfg(dir: &Path, max_frame_len: usize) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 20,
        segment_bytes: 1 << 20,
        fsync: true,
        max_frame_len,
        keep_acked: std::time::Duration::ZERO,
    }
}

/// `n` samples of distinct series at `ts`, about 60 bytes each on the wire.
fn wide(n: usize, ts: i64) -> SpoolBatch {
    SpoolBatch::at(
        ts,
        (0..n)
            .map(|i| {
                let key = SeriesKey::new("mcpwatch_seed_metric", &[("i", &format!("{i:06}"))]);
                (key, i as f64)
            })
            .collect(),
    )
}

/// One sample whose series key alone is larger than [`LIMIT`].
fn huge_key(ts: i64) -> SpoolBatch {
    let key = SeriesKey::new("mcpwatch_seed_huge", &[("v", &"x".repeat(2 * LIMIT))]);
    SpoolBatch::at(ts, vec![(key, 1.0)])
}

fn read_all(s: &Spool) -> Vec<StoredRecord> {
    s.read_from(0, usize::MAX, usize::MAX).unwrap()
}

/// Every (series name + labels, ts, value) the records hold, sorted.
fn samples(records: &[StoredRecord]) -> Vec<(SeriesKey, i64, u64)> {
    let mut out: Vec<_> = records
        .iter()
        .map(|r| r.decode().expect("decodes"))
        .flat_map(|r| {
            let SpoolBatch {
                series, samples, ..
            } = r.batch;
            samples.into_iter().map(move |s: Sample| {
                let key = series[s.series as usize].clone();
                (key, s.ts_ms, s.value.to_bits())
            })
        })
        .collect();
    out.sort();
    out
}

fn gaps(records: &[StoredRecord]) -> Vec<(u64, u64, u64)> {
    records
        .iter()
        .flat_map(|r| &r.events)
        .filter_map(|e| match *e {
            Event::Gap {
                first_seq,
                last_seq,
                samples,
                ..
            } => Some((first_seq, last_seq, samples)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_batch_above_the_frame_limit_is_stored_as_records_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(cfg(dir.path(), LIMIT)).unwrap();
    let batch = wide(2000, 5);
    assert!(wire_len_bound(&batch) > 4 * LIMIT);
    let last = s.append(batch.clone()).unwrap();
    let records = read_all(&s);
    assert!(records.len() >= 5, "{} records", records.len());
    assert_eq!(records.last().unwrap().seq, last);
    assert!(records.iter().all(|r| stored_wire_len_bound(r) <= LIMIT));
    let whole = [StoredRecord::of(0, &batch)];
    assert_eq!(samples(&records), samples(&whole));
    assert_eq!(s.stats().split_records_total, 1);
    // A later collector with a bigger limit changes what is stored next.
    s.set_max_frame_len(DEFAULT_MAX_FRAME_LEN);
    s.append(wide(2000, 6)).unwrap();
    assert_eq!(read_all(&s).len(), records.len() + 1);
}

#[test]
fn an_oversized_record_is_replaced_once_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // Stored under the default limit, as an agent does before it has met its collector.
    let mut s = Spool::open(cfg(dir.path(), DEFAULT_MAX_FRAME_LEN)).unwrap();
    s.append(wide(10, 1)).unwrap();
    let big = s.append(wide(2000, 2)).unwrap();
    let after = s.append(wide(10, 3)).unwrap();
    let before = samples(&read_all(&s));
    let record = read_all(&s).into_iter().find(|r| r.seq == big).unwrap();

    let replaced = s.replace_oversized(record.clone(), LIMIT).unwrap();
    assert!(replaced.records >= 5, "{replaced:?}");
    assert_eq!(replaced.set_aside_samples, 0);
    let records = read_all(&s);
    assert!(records.iter().all(|r| r.seq != big), "never read again");
    assert!(records.iter().all(|r| stored_wire_len_bound(r) <= LIMIT));
    assert!(records.last().unwrap().seq > after, "replacements follow");
    assert_eq!(samples(&records), before, "nothing lost or doubled");
    assert_eq!(s.stats().records_pending, records.len() as u64);
    assert_eq!(s.stats().split_records_total, 1);
    // Asked again (a reconnect that read it before): nothing happens.
    assert_eq!(s.replace_oversized(record, LIMIT).unwrap().records, 0);
    let next = s.next_seq();
    drop(s);

    let s = Spool::open(cfg(dir.path(), DEFAULT_MAX_FRAME_LEN)).unwrap();
    assert_eq!(read_all(&s), records, "the replacement is the commit");
    assert_eq!(s.next_seq(), next);
    assert_eq!(s.stats().records_pending, records.len() as u64);
}

#[test]
fn an_unfinished_replacement_is_discarded_and_the_record_replaced_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(cfg(dir.path(), DEFAULT_MAX_FRAME_LEN)).unwrap();
    let big = s.append(wide(2000, 2)).unwrap();
    let record = read_all(&s).remove(0);
    let replaced = s.replace_oversized(record, LIMIT).unwrap();
    drop(s);
    // A crash before the rename: the complete file exists only under its temporary name.
    let segment = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(".replaces-"))
        .unwrap();
    let mut tmp = segment.clone().into_os_string();
    tmp.push(".tmp");
    fs::rename(&segment, &tmp).unwrap();

    let mut s = Spool::open(cfg(dir.path(), DEFAULT_MAX_FRAME_LEN)).unwrap();
    assert!(!Path::new(&tmp).exists(), "leftover removed");
    let records = read_all(&s);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].seq, big,
        "the old record is the one to send again"
    );
    let again = s.replace_oversized(records[0].clone(), LIMIT).unwrap();
    assert_eq!(again.records, replaced.records);
    assert_eq!(read_all(&s).len(), replaced.records);
}

#[test]
fn what_cannot_fit_alone_is_kept_aside_and_reported_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(cfg(dir.path(), DEFAULT_MAX_FRAME_LEN)).unwrap();
    let mut batch = huge_key(42);
    batch.samples.push(Sample {
        series: 0,
        ts_ms: 43,
        value: 2.0,
    });
    let mut small = wide(3, 40);
    let offset = batch.series.len() as u32;
    batch.series.append(&mut small.series);
    batch.samples.extend(small.samples.iter().map(|x| Sample {
        series: x.series + offset,
        ..*x
    }));
    let seq = s.append(batch).unwrap();
    let record = read_all(&s).remove(0);

    let replaced = s.replace_oversized(record, LIMIT).unwrap();
    assert_eq!(replaced.set_aside_samples, 2);
    assert!(replaced.kept);
    let records = read_all(&s);
    assert_eq!(samples(&records).len(), 3, "the small samples still go");
    assert_eq!(gaps(&records), vec![(seq, seq, 2)]);
    let stats = s.stats();
    assert_eq!(
        (stats.oversized_records_total, stats.split_records_total),
        (1, 1)
    );

    // The set-aside part is kept in the record layout, under the old seq.
    let kept = dir.path().join(REJECTED_DIR).join(format!("{seq:020}.rec"));
    let bytes = fs::read(&kept).unwrap();
    let header = super::record::parse_header(&bytes).unwrap();
    assert_eq!(header.seq, seq);
    let payload = &bytes[super::record::HEADER_LEN as usize..];
    let aside = super::segment::decode(payload).unwrap();
    assert_eq!(aside.samples.len(), 2);

    // Acknowledging the replacement covers the old seq; the spool empties.
    let last = records.last().unwrap().seq;
    s.ack(last).unwrap();
    assert!(read_all(&s).is_empty());
    assert_eq!(s.stats().records_pending, 0);
}

#[test]
fn an_event_only_record_too_large_is_set_aside_with_a_gap_of_no_samples() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(cfg(dir.path(), LIMIT)).unwrap();
    let event = Event::Server {
        ts_ms: 1,
        server: "fixture".into(),
        kind: "tools_changed".into(),
        detail: "d".repeat(2 * LIMIT),
    };
    // Even at write time it cannot be cut: stored alone, set aside when sent.
    let seq = s.append(SpoolBatch::of_events(vec![event])).unwrap();
    let record = read_all(&s).remove(0);
    let replaced = s.replace_oversized(record, LIMIT).unwrap();
    assert_eq!((replaced.records, replaced.set_aside_events), (1, 1));
    assert_eq!(gaps(&read_all(&s)), vec![(seq, seq, 0)]);
}

#[test]
fn rejected_holds_at_most_a_quarter_of_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cfg(dir.path(), DEFAULT_MAX_FRAME_LEN);
    config.max_bytes = 256 << 10;
    config.segment_bytes = 16 << 10;
    let mut s = Spool::open(config).unwrap();
    let mut kept = 0;
    for ts in 0..6 {
        s.append(huge_key(ts)).unwrap();
        let record = read_all(&s).into_iter().last().unwrap();
        let replaced = s.replace_oversized(record, LIMIT).unwrap();
        assert_eq!(replaced.set_aside_samples, 1);
        kept += usize::from(replaced.kept);
    }
    let held: u64 = fs::read_dir(dir.path().join(REJECTED_DIR))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(held <= 64 << 10, "{held}");
    assert!((1..6).contains(&kept), "{kept} kept");
    assert_eq!(s.stats().oversized_records_total, 6, "all counted");
    assert_eq!(gaps(&read_all(&s)).len(), 6, "all reported");
}

#[test]
fn dropping_a_replaced_record_at_the_cap_does_not_count_it_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cfg(dir.path(), DEFAULT_MAX_FRAME_LEN);
    config.max_bytes = 1 << 20;
    config.segment_bytes = 64 << 10;
    let mut s = Spool::open(config).unwrap();
    let big = s.append(wide(2000, 1)).unwrap();
    let record = read_all(&s).remove(0);
    s.replace_oversized(record, LIMIT).unwrap();
    // Fill until the segment holding only the replaced record is dropped as the oldest.
    let first_segment = dir.path().join(format!("{big:020}.seg"));
    let mut ts = 2;
    while first_segment.exists() {
        s.append(wide(20, ts)).unwrap();
        ts += 1;
    }
    let stats = s.stats();
    assert_eq!(
        (stats.dropped_records_total, stats.dropped_samples_total),
        (0, 0),
        "its content lives on in the replacement"
    );
    assert!(gaps(&read_all(&s)).is_empty());
    assert_eq!(stats.records_pending, read_all(&s).len() as u64);
}
