//! The per-agent series limit against real SQLite files: series beyond it are refused
//! (not stored, their samples dropped and reported) while the batch commits, later batches
//! naming a refused series are not failed, other hosts are unaffected, and the count
//! survives a restart.

use super::*;

fn keys(prefix: &str, n: usize) -> Vec<SeriesKey> {
    (0..n)
        .map(|i| key(prefix, &[("i", &i.to_string())]))
        .collect()
}

/// One sample per declared local id `0..n`.
fn samples(n: usize, ts: i64) -> Vec<Sample> {
    (0..n as u32).map(|i| sample(i, ts, f64::from(i))).collect()
}

fn limited(limit: u64) -> impl FnOnce(&mut StoreConfig) {
    move |c| c.max_series_per_agent = limit
}

#[tokio::test]
async fn store_series_beyond_the_agent_limit_are_refused_and_the_batch_commits() {
    let f = Fixture::with(limited(3));
    let a = register(&f.store, "a1").await;
    let mut b = batch(1, a.host_id, 1);
    b.new_series = defs(&keys("m", 5));
    b.samples = samples(5, T0);
    let got = f.store.ingest(b).await.expect("ingest");
    assert_eq!(
        got,
        Ingested {
            outcome: IngestOutcome::Committed,
            refused_series: 2,
            refused_samples: 2,
        }
    );
    let r = f.reader();
    assert_eq!(
        r.series("a1").unwrap().len(),
        3,
        "only the first three stored"
    );
    assert_eq!(r.count_samples("a1").unwrap(), 3);
    assert_eq!(
        r.last_seq("a1").unwrap(),
        Some(1),
        "the batch counts as committed"
    );

    // Later batches naming the refused ids are not failed: their samples are dropped.
    let mut next = batch(1, a.host_id, 2);
    next.samples = samples(5, T0 + 1_000);
    let got = f.store.ingest(next).await.expect("ingest");
    assert_eq!((got.refused_series, got.refused_samples), (0, 2));
    assert_eq!(r.count_samples("a1").unwrap(), 6);
    // An id never declared still refuses its batch.
    let mut bad = batch(1, a.host_id, 3);
    bad.samples = vec![sample(99, T0, 1.0)];
    assert!(matches!(
        f.store.ingest(bad).await,
        Err(StoreError::UnknownSeries { .. })
    ));

    // One notice per connection in the host's events.
    let mut again = batch(1, a.host_id, 3);
    again.new_series = vec![SeriesDef {
        id: 10,
        key: key("other", &[]),
    }];
    again.samples = vec![sample(10, T0, 1.0)];
    let got = f.store.ingest(again).await.expect("ingest");
    assert_eq!((got.refused_series, got.refused_samples), (1, 1));
    let notices: Vec<EventRow> = r
        .events("a1", 10)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "series_limit")
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].detail.contains("\"limit\":3"),
        "{:?}",
        notices[0]
    );

    // Another host has its own allowance.
    let other = f
        .store
        .register_agent(2, "a2", "a2.local", "0.1.0", "boot-1", T0)
        .await
        .expect("register");
    let mut b = batch(2, other.host_id, 1);
    b.new_series = defs(&keys("m", 3));
    b.samples = samples(3, T0);
    let got = f.store.ingest(b).await.expect("ingest");
    assert_eq!((got.refused_series, got.refused_samples), (0, 0));
    assert_eq!(r.series("a2").unwrap().len(), 3);
}

#[tokio::test]
async fn store_series_limit_counts_from_the_database_after_restart_and_reconnect() {
    let f = Fixture::with(limited(3));
    let a = register(&f.store, "a1").await;
    let mut b = batch(1, a.host_id, 1);
    b.new_series = defs(&keys("m", 3));
    b.samples = samples(3, T0);
    f.store.ingest(b).await.expect("ingest");
    f.store.agent_disconnected(a.host_id, 1, T0).await;
    f.store.agent_disconnected(a.host_id, 0, T0).await;
    let (dir, path) = f.close();

    // Restarted with a lower limit: the series the host has stay accepted, new ones not.
    let mut cfg = StoreConfig::new(&path);
    cfg.max_series_per_agent = 2;
    let (store, thread) = Store::open(cfg).expect("reopen");
    let a = register(&store, "a1").await;
    let mut b = batch(5, a.host_id, 2);
    let mut declared = keys("m", 3);
    declared.push(key("new", &[]));
    b.new_series = defs(&declared);
    b.samples = samples(4, T0 + 1_000);
    let got = store.ingest(b).await.expect("ingest");
    assert_eq!((got.refused_series, got.refused_samples), (1, 1));
    let r = Reader::open(&path).expect("reader");
    assert_eq!(r.series("a1").unwrap().len(), 3);

    // After the host's last connection closed, its count is read again.
    store.agent_disconnected(a.host_id, 5, T0).await;
    store.agent_disconnected(a.host_id, 0, T0).await;
    let a = register(&store, "a1").await;
    let mut b = batch(6, a.host_id, 3);
    b.new_series = defs(&[key("newer", &[])]);
    b.samples = samples(1, T0 + 2_000);
    let got = store.ingest(b).await.expect("ingest");
    assert_eq!(got.refused_series, 1);
    assert_eq!(r.series("a1").unwrap().len(), 3);
    drop(store);
    thread.join().expect("writer exits");
    drop(dir);
}
