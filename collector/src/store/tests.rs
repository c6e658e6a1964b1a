//! Store tests against real SQLite files in temporary directories.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_common::wire::{Event, Sample, SeriesDef, SeriesKey};

use super::*;

mod series_limit;

const T0: i64 = 1_700_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Store,
    thread: std::thread::JoinHandle<()>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut StoreConfig)) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data").join("store.db");
        let mut cfg = StoreConfig::new(&path);
        tune(&mut cfg);
        let (store, thread) = Store::open(cfg).expect("open store");
        Fixture {
            _dir: dir,
            path,
            store,
            thread,
        }
    }

    fn reader(&self) -> Reader {
        Reader::open(&self.path).expect("open reader")
    }

    /// Stops the writer and waits for it, keeping the directory.
    fn close(self) -> (tempfile::TempDir, PathBuf) {
        drop(self.store);
        self.thread.join().expect("writer thread exits cleanly");
        (self._dir, self.path)
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(name, labels)
}

fn defs(keys: &[SeriesKey]) -> Vec<SeriesDef> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| SeriesDef {
            id: i as u32,
            key: k.clone(),
        })
        .collect()
}

fn batch(conn: u64, host_id: i64, seq: u64) -> IngestBatch {
    IngestBatch {
        conn,
        host_id,
        seq,
        new_series: Vec::new(),
        samples: Vec::new(),
        events: Vec::new(),
        received: Instant::now(),
    }
}

fn sample(series: u32, ts_ms: i64, value: f64) -> Sample {
    Sample {
        series,
        ts_ms,
        value,
    }
}

/// Registers on connection 0: a connection counts as live from registration on, and tests
/// number the connections they stream on from 1 (or use 0 for the first host).
async fn register(store: &Store, agent: &str) -> AgentSession {
    store
        .register_agent(0, agent, &format!("{agent}.local"), "0.1.0", "boot-1", T0)
        .await
        .expect("register")
}

fn series_id(r: &Reader, agent: &str, name: &str) -> i64 {
    r.series(agent)
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("series {name} missing"))
        .id
}

#[tokio::test]
async fn store_ingest_then_reader_returns_exact_samples() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    assert_eq!(s.last_seq, 0);
    let keys = [
        key("cpu", &[("core", "0")]),
        key("mem_bytes", &[]),
        key("weird", &[]),
    ];
    let mut b = batch(1, s.host_id, 1);
    b.new_series = defs(&keys);
    let nan = f64::from_bits(0x7ff8_0000_dead_beef);
    b.samples = vec![
        sample(0, T0, 12.5),
        sample(1, T0, 8e9),
        sample(2, T0, nan),
        sample(0, T0 + 1000, 13.25),
        sample(2, T0 + 1000, -0.0),
        sample(2, T0 + 2000, f64::NEG_INFINITY),
    ];
    assert_eq!(
        f.store.ingest(b).await.unwrap().outcome,
        IngestOutcome::Committed
    );
    // A second batch reuses the ids declared on the connection.
    let mut b = batch(1, s.host_id, 2);
    b.samples = vec![sample(0, T0 + 2000, 0.1)];
    assert_eq!(
        f.store.ingest(b).await.unwrap().outcome,
        IngestOutcome::Committed
    );

    let r = f.reader();
    assert_eq!(r.last_seq("a1").unwrap(), Some(2));
    assert_eq!(r.last_seq("nobody").unwrap(), None);
    assert_eq!(r.count_samples("a1").unwrap(), 7);
    let cpu = series_id(&r, "a1", "cpu");
    assert_eq!(
        r.raw_samples(cpu, T0, T0 + 2000).unwrap(),
        vec![(T0, 12.5), (T0 + 1000, 13.25), (T0 + 2000, 0.1)]
    );
    assert_eq!(
        r.raw_samples(cpu, T0 + 1, T0 + 1999).unwrap(),
        vec![(T0 + 1000, 13.25)]
    );
    let weird = series_id(&r, "a1", "weird");
    let got: Vec<(i64, u64)> = r
        .raw_samples(weird, i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|(t, v)| (t, v.to_bits()))
        .collect();
    assert_eq!(
        got,
        vec![
            (T0, nan.to_bits()),
            (T0 + 1000, (-0.0f64).to_bits()),
            (T0 + 2000, f64::NEG_INFINITY.to_bits())
        ]
    );
    let cpu_row = r.series("a1").unwrap();
    assert!(cpu_row.iter().any(|s| s.labels == r#"core="0""#));
    let hosts = r.hosts().unwrap();
    assert_eq!(hosts.len(), 1);
    assert!(hosts[0].online);
    assert_eq!(hosts[0].hostname, "a1.local");
    assert!(hosts[0].last_seen_ms > T0, "last_seen follows commits");
    let stats = f.store.stats();
    assert_eq!((stats.batches, stats.samples), (2, 7));
}

#[tokio::test]
async fn store_duplicate_seq_is_acked_without_writing() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let mk = |seq, conn| {
        let mut b = batch(conn, s.host_id, seq);
        b.new_series = defs(&[key("m", &[])]);
        b.samples = vec![sample(0, T0 + seq as i64, 1.0)];
        b.events = vec![Event::Server {
            ts_ms: T0,
            server: "srv".into(),
            kind: "crashed".into(),
            detail: "x".into(),
        }];
        b
    };
    assert_eq!(
        f.store.ingest(mk(5, 1)).await.unwrap().outcome,
        IngestOutcome::Committed
    );
    assert_eq!(
        f.store.ingest(mk(5, 1)).await.unwrap().outcome,
        IngestOutcome::Duplicate
    );
    assert_eq!(
        f.store.ingest(mk(3, 1)).await.unwrap().outcome,
        IngestOutcome::Duplicate
    );
    let r = f.reader();
    assert_eq!(r.count_samples("a1").unwrap(), 1);
    assert_eq!(r.events("a1", 10).unwrap().len(), 1);
    assert_eq!(r.last_seq("a1").unwrap(), Some(5));

    // A duplicate's declarations still count: a replay on a new connection may start with
    // an already-committed batch that declares the series the next batch uses.
    assert_eq!(
        f.store.ingest(mk(4, 2)).await.unwrap().outcome,
        IngestOutcome::Duplicate
    );
    let mut next = batch(2, s.host_id, 6);
    next.samples = vec![sample(0, T0 + 6, 2.0)];
    assert_eq!(
        f.store.ingest(next).await.unwrap().outcome,
        IngestOutcome::Committed
    );
    assert_eq!(r.count_samples("a1").unwrap(), 2);
    assert_eq!(f.store.stats().duplicates, 3);
}

#[tokio::test]
async fn store_last_seq_and_series_survive_reopen() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let mut b = batch(1, s.host_id, 41);
    b.new_series = defs(&[key("m", &[("a", "b")])]);
    b.samples = vec![sample(0, T0, 3.0)];
    f.store.ingest(b).await.unwrap();
    let (dir, path) = f.close();

    // Closed cleanly: a reader alone can open it.
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.last_seq("a1").unwrap(), Some(41));
    assert!(!r.hosts().unwrap()[0].online, "offline after shutdown");
    drop(r);

    let (store, thread) = Store::open(StoreConfig::new(&path)).unwrap();
    let again = register(&store, "a1").await;
    assert_eq!(
        again,
        AgentSession {
            host_id: s.host_id,
            last_seq: 41
        }
    );
    // The same series on a new connection maps to the same database row.
    let mut b = batch(9, s.host_id, 42);
    b.new_series = defs(&[key("m", &[("a", "b")])]);
    b.samples = vec![sample(0, T0 + 1000, 4.0)];
    assert_eq!(
        store.ingest(b).await.unwrap().outcome,
        IngestOutcome::Committed
    );
    let mut dup = batch(9, s.host_id, 41);
    dup.samples = vec![sample(0, T0, 3.0)];
    assert_eq!(
        store.ingest(dup).await.unwrap().outcome,
        IngestOutcome::Duplicate
    );
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.series("a1").unwrap().len(), 1);
    let id = r.series("a1").unwrap()[0].id;
    assert_eq!(r.raw_samples(id, 0, i64::MAX).unwrap().len(), 2);
    drop(store);
    thread.join().unwrap();
    drop(dir);
}

#[tokio::test]
async fn store_unknown_series_refuses_whole_batch() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let mut b = batch(1, s.host_id, 1);
    b.new_series = defs(&[key("m", &[])]);
    b.samples = vec![sample(0, T0, 1.0), sample(7, T0, 2.0)];
    b.events = vec![Event::SpoolCorruption {
        records: 1,
        bytes: 2,
    }];
    let err = f.store.ingest(b).await.unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownSeries { seq: 1, series: 7 }),
        "{err}"
    );
    let r = f.reader();
    assert_eq!(r.count_samples("a1").unwrap(), 0);
    assert_eq!(r.last_seq("a1").unwrap(), Some(0));
    assert!(r.events("a1", 10).unwrap().is_empty());
    assert!(
        r.series("a1").unwrap().is_empty(),
        "declarations rolled back too"
    );

    // The refused batch left no trace in memory either: id 0 is still unknown.
    let mut b = batch(1, s.host_id, 1);
    b.samples = vec![sample(0, T0, 1.0)];
    assert!(matches!(
        f.store.ingest(b).await,
        Err(StoreError::UnknownSeries { series: 0, .. })
    ));
    // And the same seq, well formed, is accepted afterwards.
    let mut b = batch(1, s.host_id, 1);
    b.new_series = defs(&[key("m", &[])]);
    b.samples = vec![sample(0, T0, 1.0)];
    assert_eq!(
        f.store.ingest(b).await.unwrap().outcome,
        IngestOutcome::Committed
    );
    assert_eq!(f.store.stats().rejected_batches, 2);
}

#[tokio::test]
async fn store_bad_batch_in_a_group_does_not_sink_the_others() {
    let f = Fixture::new();
    let mut sessions = Vec::new();
    for i in 0..20 {
        sessions.push(register(&f.store, &format!("h{i}")).await);
    }
    let mut tasks = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let store = f.store.clone();
        let mut b = batch(i as u64, s.host_id, 1);
        b.new_series = defs(&[key("m", &[])]);
        // Every fourth batch references an undeclared id.
        let bad = i % 4 == 0;
        b.samples = vec![sample(if bad { 3 } else { 0 }, T0, i as f64)];
        tasks.push(tokio::spawn(async move { (bad, store.ingest(b).await) }));
    }
    for t in tasks {
        let (bad, r) = t.await.unwrap();
        if bad {
            assert!(matches!(r, Err(StoreError::UnknownSeries { .. })), "{r:?}");
        } else {
            assert_eq!(r.unwrap().outcome, IngestOutcome::Committed);
        }
    }
    let r = f.reader();
    for i in 0..20 {
        let expect = if i % 4 == 0 { 0 } else { 1 };
        assert_eq!(r.count_samples(&format!("h{i}")).unwrap(), expect, "h{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_concurrent_ingests_are_group_committed() {
    let f = Fixture::new();
    let hosts = 25u64;
    let per_host = 8u64;
    let mut sessions = Vec::new();
    for h in 0..hosts {
        sessions.push(register(&f.store, &format!("h{h}")).await);
    }
    let groups_before = f.store.stats().groups;
    let mut tasks = Vec::new();
    for (h, s) in sessions.into_iter().enumerate() {
        let store = f.store.clone();
        // One task per connection, batches in order (as the ingest layer sends them).
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for seq in 1..=per_host {
                let mut b = batch(h as u64, s.host_id, seq);
                if seq == 1 {
                    b.new_series = defs(&[key("a", &[]), key("b", &[])]);
                }
                b.samples = (0..100)
                    .map(|i| sample(i % 2, T0 + (seq as i64) * 1000 + i64::from(i), 1.0))
                    .collect();
                outcomes.push(store.ingest(b).await);
            }
            outcomes
        }));
    }
    for t in tasks {
        for r in t.await.unwrap() {
            assert_eq!(r.unwrap().outcome, IngestOutcome::Committed);
        }
    }
    let stats = f.store.stats();
    assert_eq!(stats.batches, hosts * per_host);
    let r = f.reader();
    for h in 0..hosts {
        assert_eq!(r.count_samples(&format!("h{h}")).unwrap(), per_host * 100);
        assert_eq!(r.last_seq(&format!("h{h}")).unwrap(), Some(per_host));
    }
    let groups = stats.groups - groups_before;
    assert!(
        groups < hosts * per_host,
        "{groups} transactions for {} batches",
        hosts * per_host
    );
}

#[tokio::test]
async fn store_many_queued_ingests_share_transactions() {
    // Deterministic group-commit check: queue everything before the writer can drain it.
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let mut first = batch(1, s.host_id, 1);
    first.new_series = defs(&[key("m", &[])]);
    f.store.ingest(first).await.unwrap();
    let groups_before = f.store.stats().groups;
    let mut pending = Vec::new();
    for seq in 2..=201u64 {
        let mut b = batch(1, s.host_id, seq);
        b.samples = vec![sample(0, T0 + seq as i64, seq as f64)];
        pending.push(f.store.submit(b).await.unwrap());
    }
    let results = futures::future::join_all(pending).await;
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(i) if i.outcome == IngestOutcome::Committed)));
    let groups = f.store.stats().groups - groups_before;
    assert!(groups < 200, "{groups} transactions for 200 batches");
    assert_eq!(f.reader().count_samples("a1").unwrap(), 200);
    assert_eq!(f.reader().last_seq("a1").unwrap(), Some(201));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failed_group_answers_everyone_and_rolls_back_memory() {
    let f = Fixture::new();
    let h1 = register(&f.store, "h1").await;
    let h2 = register(&f.store, "h2").await;
    let ext = rusqlite::Connection::open(&f.path).unwrap();
    ext.busy_timeout(Duration::from_secs(5)).unwrap();
    // An SQLite error in the middle of a group (stands in for disk full / I/O error).
    ext.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON raw WHEN NEW.seq = 666
         BEGIN SELECT RAISE(ABORT, 'boom'); END;",
    )
    .unwrap();
    // Stall the writer inside a first group (a job that waits to be released) so the rest
    // queues up behind it and lands in one second group. The job says when it runs: the
    // writer has then closed the first group.
    let (running_tx, running_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let store = f.store.clone();
    let first = tokio::spawn(async move {
        store
            .exec(move |_| {
                let _ = running_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .await
    });
    running_rx.await.expect("first group running");
    let mut a = batch(1, h1.host_id, 1);
    a.new_series = defs(&[key("m", &[])]);
    a.samples = vec![sample(0, T0, 1.0)];
    let mut b = batch(2, h2.host_id, 666);
    b.new_series = defs(&[key("n", &[])]);
    b.samples = vec![sample(0, T0, 2.0)];
    let mut c = batch(1, h1.host_id, 2);
    c.samples = vec![sample(0, T0 + 1, 3.0)];
    let pa = f.store.submit(a.clone()).await.unwrap();
    let pb = f.store.submit(b).await.unwrap();
    let pc = f.store.submit(c.clone()).await.unwrap();
    release_tx.send(()).expect("release the first group");
    first.await.unwrap().unwrap();
    for (name, r) in [("a", pa.await), ("b", pb.await), ("c", pc.await)] {
        assert!(matches!(r, Err(StoreError::Aborted(_))), "{name}: {r:?}");
    }
    assert_eq!(f.store.stats().aborted_groups, 1);
    let r = f.reader();
    assert_eq!(r.count_samples("h1").unwrap(), 0);
    assert_eq!(r.last_seq("h1").unwrap(), Some(0));
    assert!(r.series("h1").unwrap().is_empty());
    ext.execute_batch("DROP TRIGGER boom").unwrap();

    // Memory was rolled back with the transaction: a's declaration is gone...
    assert!(matches!(
        f.store.ingest(c.clone()).await,
        Err(StoreError::UnknownSeries { .. })
    ));
    // ...and replaying the batches (as the agent would) stores them exactly once.
    assert_eq!(
        f.store.ingest(a).await.unwrap().outcome,
        IngestOutcome::Committed
    );
    assert_eq!(
        f.store.ingest(c).await.unwrap().outcome,
        IngestOutcome::Committed
    );
    let id = series_id(&r, "h1", "m");
    assert_eq!(
        r.raw_samples(id, 0, i64::MAX).unwrap(),
        vec![(T0, 1.0), (T0 + 1, 3.0)]
    );
}

#[tokio::test]
async fn store_rollups_aggregate_both_tiers_including_late_data() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let hour = 3_600_000;
    let base = (T0 / hour) * hour; // hour-aligned
    let mut b = batch(1, s.host_id, 1);
    b.new_series = defs(&[key("m", &[])]);
    // Minute 0: 1, 5, NaN (ignored); minute 1: -2.
    b.samples = vec![
        sample(0, base, 1.0),
        sample(0, base + 30_000, 5.0),
        sample(0, base + 40_000, f64::NAN),
        sample(0, base + 60_000, -2.0),
    ];
    f.store.ingest(b).await.unwrap();
    let rep = f.store.maintain(base).await.unwrap();
    assert_eq!((rep.rolled_up_rows, rep.rolled_up_samples), (1, 4));
    let r = f.reader();
    let id = series_id(&r, "a1", "m");
    let m = r.rollup(Tier::Minute, id, base, base + hour).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0].ts, m[0].min, m[0].max, m[0].sum, m[0].count),
        (base, 1.0, 5.0, 6.0, 2)
    );
    assert_eq!(
        (m[1].ts, m[1].min, m[1].max, m[1].sum, m[1].count),
        (base + 60_000, -2.0, -2.0, -2.0, 1)
    );
    // A second pass with nothing new changes nothing (exactly-once).
    assert_eq!(f.store.maintain(base).await.unwrap().rolled_up_rows, 0);

    // Late data for minute 0 plus new data in the next hour, after the watermark moved.
    let mut late = batch(1, s.host_id, 2);
    late.samples = vec![
        sample(0, base + 10_000, 9.0),
        sample(0, base + 20_000, -7.0),
        sample(0, base + hour + 5, 100.0),
    ];
    f.store.ingest(late).await.unwrap();
    f.store.maintain(base).await.unwrap();
    let m = r.rollup(Tier::Minute, id, base, base + hour).unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(
        (m[0].min, m[0].max, m[0].sum, m[0].count),
        (-7.0, 9.0, 8.0, 4)
    );
    assert_eq!(m[2].ts, base + hour);
    let h = r.rollup(Tier::Hour, id, base, base + hour).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(
        (h[0].ts, h[0].min, h[0].max, h[0].sum, h[0].count),
        (base, -7.0, 9.0, 6.0, 5)
    );
    assert_eq!((h[1].ts, h[1].sum, h[1].count), (base + hour, 100.0, 1));
    assert_eq!(r.unrolled_samples("a1").unwrap(), 0);
}

#[tokio::test]
async fn store_retention_deletes_only_expired_rows() {
    let day = 86_400_000i64;
    let f = Fixture::with(|c| {
        c.retention_raw = Duration::from_secs(86_400); // 1 d
        c.retention_1m = Duration::from_secs(2 * 86_400);
        c.retention_1h = Duration::from_secs(3 * 86_400);
        // Events keep their own horizon, shorter than the 1 h tier's.
        c.retention_events = Duration::from_secs(2 * 86_400);
    });
    let s = register(&f.store, "a1").await;
    let now = T0 + 10 * day;
    let ages = [5 * day, 5 * day / 2, 3 * day / 2, day / 2];
    for (i, age) in ages.iter().enumerate() {
        let mut b = batch(1, s.host_id, i as u64 + 1);
        if i == 0 {
            b.new_series = defs(&[key("m", &[])]);
        }
        b.samples = vec![sample(0, now - age, i as f64)];
        b.events = vec![Event::Server {
            ts_ms: now - age,
            server: "s".into(),
            kind: "probe".into(),
            detail: String::new(),
        }];
        f.store.ingest(b).await.unwrap();
    }
    let rep = f.store.maintain(now).await.unwrap();
    assert_eq!((rep.rolled_up_rows, rep.pruned_raw), (4, 3));
    // Ages 5 d and 2.5 d are past the 2 d event horizon; 1.5 d and 0.5 d stay.
    assert_eq!(rep.pruned_events, 2);
    // Late data that is already expired: rolled up, then pruned from every tier.
    let mut late = batch(1, s.host_id, 10);
    late.samples = vec![sample(0, now - 4 * day, 42.0)];
    f.store.ingest(late).await.unwrap();
    let rep = f.store.maintain(now).await.unwrap();
    assert_eq!(rep.rolled_up_rows, 1);
    assert_eq!(
        (rep.pruned_raw, rep.pruned_rollup_1m, rep.pruned_rollup_1h),
        (1, 1, 1)
    );

    let r = f.reader();
    let id = series_id(&r, "a1", "m");
    let raw: Vec<f64> = r
        .raw_samples(id, 0, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(raw, vec![3.0], "only the half-day-old raw row is kept");
    let mins: Vec<f64> = r
        .rollup(Tier::Minute, id, 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|x| x.sum)
        .collect();
    assert_eq!(mins, vec![2.0, 3.0], "1m keeps < 2 d: ages 1.5 d and 0.5 d");
    let hours: Vec<f64> = r
        .rollup(Tier::Hour, id, 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|x| x.sum)
        .collect();
    assert_eq!(
        hours,
        vec![1.0, 2.0, 3.0],
        "1h keeps < 3 d: ages 2.5 d, 1.5 d, 0.5 d"
    );
    assert_eq!(
        r.events("a1", 100).unwrap().len(),
        2,
        "events keep < 2 d: ages 1.5 d, 0.5 d"
    );
}

#[tokio::test]
async fn store_expired_raw_rows_wait_for_the_rollup() {
    let day = 86_400_000i64;
    let f = Fixture::with(|c| c.retention_raw = Duration::from_secs(86_400));
    let s = register(&f.store, "a1").await;
    let now = T0 + 10 * day;
    let mut b = batch(1, s.host_id, 1);
    b.new_series = defs(&[key("m", &[])]);
    b.samples = vec![sample(0, now - 5 * day, 1.0)];
    f.store.ingest(b).await.unwrap();
    // Retention alone (as in writer::maintain without rollup) must not delete it.
    {
        let cfg = {
            let mut c = StoreConfig::new(&f.path);
            c.retention_raw = Duration::from_secs(86_400);
            c
        };
        let mut conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let mut cursor = 0;
        let step = retention::step(&mut conn, &cfg, now, &mut cursor).unwrap();
        assert_eq!(step.raw, 0);
    }
    assert_eq!(f.reader().count_samples("a1").unwrap(), 1);
    let rep = f.store.maintain(now).await.unwrap();
    assert_eq!((rep.rolled_up_rows, rep.pruned_raw), (1, 1));
    assert_eq!(f.reader().count_samples("a1").unwrap(), 0);
}

#[tokio::test]
async fn store_revoked_host_is_refused() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let mut b = batch(1, s.host_id, 1);
    b.new_series = defs(&[key("m", &[])]);
    b.samples = vec![sample(0, T0, 1.0)];
    f.store.ingest(b).await.unwrap();
    assert!(f.store.set_revoked("a1", true).await.unwrap());
    assert!(!f.store.set_revoked("ghost", true).await.unwrap());

    let err = f
        .store
        .register_agent(0, "a1", "x", "0.1.0", "b", T0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Revoked(ref a) if a == "a1"),
        "{err}"
    );
    let mut b = batch(1, s.host_id, 2);
    b.samples = vec![sample(0, T0 + 1, 2.0)];
    assert!(matches!(
        f.store.ingest(b).await,
        Err(StoreError::Revoked(_))
    ));
    let r = f.reader();
    let h = &r.hosts().unwrap()[0];
    assert!(h.revoked && !h.online);
    assert_eq!(
        h.hostname, "a1.local",
        "refused registration changed nothing"
    );
    assert_eq!(r.count_samples("a1").unwrap(), 1);

    assert!(f.store.set_revoked("a1", false).await.unwrap());
    assert_eq!(register(&f.store, "a1").await.last_seq, 1);
}

#[tokio::test]
async fn store_gap_event_lands_in_gaps_table() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let mut b = batch(1, s.host_id, 9);
    b.events = vec![
        Event::Gap {
            first_seq: 3,
            last_seq: 8,
            samples: 6000,
            from_ts_ms: T0,
            to_ts_ms: T0 + 6000,
        },
        Event::Server {
            ts_ms: T0 + 7000,
            server: "fs".into(),
            kind: "restarted".into(),
            detail: "exit \"1\"".into(),
        },
    ];
    f.store.ingest(b).await.unwrap();
    let r = f.reader();
    assert_eq!(
        r.gaps("a1").unwrap(),
        vec![GapRow {
            first_seq: 3,
            last_seq: 8,
            samples: 6000,
            from_ts_ms: T0,
            to_ts_ms: T0 + 6000
        }]
    );
    let ev = r.events("a1", 10).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].kind, "restarted");
    assert_eq!(ev[0].server.as_deref(), Some("fs"));
    let detail: serde_json::Value = serde_json::from_str(&ev[0].detail).unwrap();
    assert_eq!(detail["detail"], "exit \"1\"");
    assert_eq!(ev[1].kind, "gap");
    assert_eq!(ev[1].server, None);
    let detail: serde_json::Value = serde_json::from_str(&ev[1].detail).unwrap();
    assert_eq!(detail["samples"], 6000);
}

#[tokio::test]
async fn store_a_registered_connection_keeps_its_host_online_before_its_first_batch() {
    let f = Fixture::new();
    let s = f
        .store
        .register_agent(1, "a1", "x", "0.1.0", "b", T0)
        .await
        .unwrap();
    // Reconnect race: the new connection (2) registers before the old one (1) is closed.
    f.store
        .register_agent(2, "a1", "x", "0.1.0", "b", T0 + 1)
        .await
        .unwrap();
    f.store.agent_disconnected(s.host_id, 1, T0 + 2).await;
    assert!(
        f.reader().hosts().unwrap()[0].online,
        "live connection 2 ignored"
    );
    f.store.agent_disconnected(s.host_id, 2, T0 + 3).await;
    assert!(!f.reader().hosts().unwrap()[0].online);
}

#[tokio::test]
async fn store_disconnect_marks_offline_and_forgets_series() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let mut b = batch(1, s.host_id, 1);
    b.new_series = defs(&[key("m", &[])]);
    f.store.ingest(b).await.unwrap();
    // A second live connection keeps the host online when the first one goes.
    let mut b2 = batch(2, s.host_id, 2);
    b2.new_series = defs(&[key("m", &[])]);
    f.store.ingest(b2).await.unwrap();
    f.store.agent_disconnected(s.host_id, 1, T0 + 5).await;
    assert!(f.reader().hosts().unwrap()[0].online);
    f.store.agent_disconnected(s.host_id, 2, T0 + 5).await;
    // The registering connection is live until it goes too.
    assert!(f.reader().hosts().unwrap()[0].online);
    f.store.agent_disconnected(s.host_id, 0, T0 + 5).await;
    assert!(!f.reader().hosts().unwrap()[0].online);

    let mut b = batch(1, s.host_id, 3);
    b.samples = vec![sample(0, T0, 1.0)];
    assert!(matches!(
        f.store.ingest(b).await,
        Err(StoreError::UnknownSeries { .. })
    ));
    // A connection id cannot be borrowed by another host.
    let other = register(&f.store, "a2").await;
    let mut b = batch(7, s.host_id, 3);
    b.new_series = defs(&[key("m", &[])]);
    f.store.ingest(b).await.unwrap();
    let mut b = batch(7, other.host_id, 1);
    b.samples = vec![sample(0, T0, 1.0)];
    assert!(matches!(
        f.store.ingest(b).await,
        Err(StoreError::Invalid(_))
    ));
    let mut b = batch(8, 9999, 1);
    b.samples = vec![];
    assert!(matches!(
        f.store.ingest(b).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn store_open_marks_everyone_offline_and_flush_answers() {
    let f = Fixture::new();
    register(&f.store, "a1").await;
    f.store.flush().await.unwrap();
    assert_eq!(f.store.queue_depth(), 0);
    let (_dir, path) = f.close();
    // Simulate a crash that left online = 1 behind.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE hosts SET online = 1", []).unwrap();
    drop(conn);
    let (store, thread) = Store::open(StoreConfig::new(&path)).unwrap();
    assert!(!Reader::open(&path).unwrap().hosts().unwrap()[0].online);
    drop(store);
    thread.join().unwrap();
}

#[tokio::test]
async fn store_ticker_folds_backlog_left_by_a_previous_run() {
    let f = Fixture::new();
    let s = register(&f.store, "a1").await;
    let mut b = batch(1, s.host_id, 1);
    b.new_series = defs(&[key("m", &[])]);
    // Recent timestamps: the ticker's retention runs against the wall clock.
    let now = mcpwatch_common::time::now_ms();
    b.samples = vec![sample(0, now, 1.0), sample(0, now + 1, 2.0)];
    f.store.ingest(b).await.unwrap();
    let (_dir, path) = f.close();
    assert_eq!(
        Reader::open(&path).unwrap().unrolled_samples("a1").unwrap(),
        2
    );

    // Reopened, the backlog counts as ripe, so the very first tick folds it.
    let (store, thread) = Store::open(StoreConfig::new(&path)).unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let ticker = store.spawn_ticker(&tracker, cancel.clone());
    let r = Reader::open(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.unrolled_samples("a1").unwrap() != 0 {
        assert!(Instant::now() < deadline, "ticker never rolled up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = series_id(&r, "a1", "m");
    assert_eq!(r.rollup(Tier::Minute, id, 0, i64::MAX).unwrap()[0].count, 2);
    cancel.cancel();
    ticker.await.unwrap();
    tracker.close();
    assert!(tracker.is_empty());
    drop(store);
    thread.join().unwrap();
}

#[test]
fn store_reader_refuses_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Reader::open(dir.path().join("nope.db")).is_err());
}

// ---------------------------------------------------------------------------------------
// Measurement: realistic host-metric batches.

/// One host scrape: `n` series shaped like what the agent sends (f32 CPU percentages,
/// byte gauges and counters, 2-decimal load averages, container CPU seconds as arbitrary
/// f64, probe latencies, 0/1 flags).
fn host_scrape(n: u32, tick: i64, rng: &mut fastrand::Rng) -> (Vec<SeriesKey>, Vec<f64>) {
    let mut keys = Vec::with_capacity(n as usize);
    let mut values = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (k, v) = match i % 10 {
            0 | 1 => (
                key("mcpwatch_host_cpu_usage_ratio", &[("core", &i.to_string())]),
                f64::from(rng.f32() * 100.0),
            ),
            2 => (
                key("mcpwatch_host_memory_used_bytes", &[("i", &i.to_string())]),
                (8_000_000_000u64 + rng.u64(0..1_000_000) * 4096) as f64,
            ),
            3 | 4 => (
                key(
                    "mcpwatch_host_network_received_bytes_total",
                    &[("if", &i.to_string())],
                ),
                (1_000_000_000_000i64 + tick * 125_000 + i64::from(i) * 7) as f64,
            ),
            5 => (
                key("mcpwatch_host_load1", &[("i", &i.to_string())]),
                f64::from(rng.u32(0..800)) / 100.0,
            ),
            6 => (
                key(
                    "mcpwatch_container_cpu_seconds_total",
                    &[("c", &i.to_string())],
                ),
                12_345.0 + tick as f64 * 0.0137 + rng.f64(),
            ),
            7 => (
                key("mcpwatch_probe_duration_seconds", &[("s", &i.to_string())]),
                rng.f64() * 0.2,
            ),
            8 => (
                key("mcpwatch_server_up", &[("s", &i.to_string())]),
                f64::from(u8::from(rng.u8(..) > 5)),
            ),
            _ => (
                key(
                    "mcpwatch_container_restarts_total",
                    &[("s", &i.to_string())],
                ),
                f64::from(rng.u32(0..5)),
            ),
        };
        keys.push(k);
        values.push(v);
    }
    (keys, values)
}

fn file_size(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Bytes SQLite uses for `tables` (with their indexes), after folding the WAL back.
fn table_bytes(conn: &rusqlite::Connection, tables: &[&str]) -> i64 {
    let mut total = 0;
    for t in tables {
        let n: i64 = conn
            .query_row(
                "SELECT coalesce(sum(d.pgsize), 0) FROM dbstat d JOIN sqlite_schema s
                 ON s.name = d.name WHERE s.tbl_name = ?1",
                [t],
                |r| r.get(0),
            )
            .unwrap();
        total += n;
    }
    total
}

/// Many hosts ingesting concurrently all commit exactly; also prints throughput and
/// bytes/sample (`-- --nocapture`; a debug build understates release throughput several
/// times). The figures are informational: the assertion is on what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_throughput() {
    let hosts = 100u64;
    let batches_per_host = 30u64;
    let per_batch = 1000u32;
    let f = Fixture::with(|c| c.max_batch_samples = 100_000);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut sessions = Vec::new();
    for h in 0..hosts {
        sessions.push(register(&f.store, &format!("host-{h}")).await);
    }
    // Pre-build all batches so the timing covers only the store. Batch 1 of each host
    // declares its series and is ingested before timing (steady state, not connect).
    let mut per_host: Vec<Vec<IngestBatch>> = Vec::new();
    for (h, s) in sessions.iter().enumerate() {
        let mut list = Vec::new();
        for seq in 1..=batches_per_host + 1 {
            let tick = seq as i64;
            let (keys, values) = host_scrape(per_batch, tick, &mut rng);
            let mut b = batch(h as u64, s.host_id, seq);
            if seq == 1 {
                b.new_series = defs(&keys);
            }
            b.samples = values
                .iter()
                .enumerate()
                .map(|(i, &v)| sample(i as u32, T0 + tick * 1000, v))
                .collect();
            list.push(b);
        }
        let first = list.remove(0);
        f.store.ingest(first).await.unwrap();
        per_host.push(list);
    }
    let warm = f.store.stats();
    let timed = hosts * batches_per_host * u64::from(per_batch);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for list in per_host {
        let store = f.store.clone();
        let lat = latencies.clone();
        tasks.push(tokio::spawn(async move {
            // Like one agent connection: batches in order, each acked before the next.
            for mut b in list {
                b.received = Instant::now();
                let t = Instant::now();
                let r = store.ingest(b).await;
                assert!(r.is_ok(), "{r:?}");
                lat.lock().unwrap().push(t.elapsed());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = f.store.stats();
    let total = stats.samples;
    let roll_start = Instant::now();
    let mut rolled = 0;
    loop {
        let rep = f.store.maintain(T0).await.unwrap();
        rolled += rep.rolled_up_samples;
        if !rep.more {
            break;
        }
    }
    let roll_elapsed = roll_start.elapsed();
    let conn = rusqlite::Connection::open(&f.path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let blob: i64 = conn
        .query_row("SELECT sum(length(data)) FROM raw", [], |r| r.get(0))
        .unwrap();
    let raw = table_bytes(&conn, &["raw"]);
    let series = table_bytes(&conn, &["series"]);
    let rollups = table_bytes(&conn, &["rollup_1m", "rollup_1h"]);
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    let per = |b: i64| b as f64 / total as f64;
    println!(
        "{}",
        serde_json::json!({
            "timed_samples": timed,
            "seconds": elapsed.as_secs_f64(),
            "samples_per_s": timed as f64 / elapsed.as_secs_f64(),
            "timed_batches": stats.batches - warm.batches,
            "timed_groups": stats.groups - warm.groups,
            "p50_ingest_ms": pct(50),
            "p99_ingest_ms": pct(99),
            "stored_samples": total,
            "blob_bytes_per_sample": per(blob),
            "raw_table_bytes_per_sample": per(raw),
            "series_table_bytes_per_sample": per(series),
            "rollup_tables_bytes_per_sample": per(rollups),
            "db_file_bytes_per_sample": per(file_size(&f.path) as i64),
            "rollup_samples_per_s": rolled as f64 / roll_elapsed.as_secs_f64(),
            "debug_build": cfg!(debug_assertions),
        })
    );
    assert_eq!(timed, total - hosts * u64::from(per_batch));
}
