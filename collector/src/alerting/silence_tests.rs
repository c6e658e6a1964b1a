//! Silence caps and the compiled-silence cache through the real store (SQLite file, writer
//! thread): per-user and overall caps, parallel creates never overshooting, and ticks (or
//! other changes) compiling no silence again.

use std::path::Path;

use super::runtime::lock;
use super::{Alerting, AlertingSetup, OutboxShared, SilenceLimits};
use crate::alert::route::SilenceSpec;
use crate::store::{StoreConfig, StoreError};

fn open(path: &Path, limits: SilenceLimits) -> (Alerting, std::thread::JoinHandle<()>) {
    let mut setup = AlertingSetup::disabled();
    setup.silence_limits = limits;
    Alerting::open(StoreConfig::new(path), setup, OutboxShared::new(["r"])).expect("open store")
}

fn now() -> i64 {
    mcpwatch_common::time::now_ms()
}

fn spec(author: &str, i: usize, t: i64, ends_ms: i64) -> SilenceSpec {
    SilenceSpec {
        matchers: format!(r#"{{host=~"web-{i}|db-.*", i="{i}"}}"#),
        starts_ms: t,
        ends_ms,
        author: author.into(),
        comment: "maintenance".into(),
    }
}

fn current(path: &Path, t: i64) -> i64 {
    let c = rusqlite::Connection::open(path).expect("open db");
    c.query_row(
        "SELECT count(*) FROM silences WHERE ends_ms > ?1",
        [t],
        |r| r.get(0),
    )
    .expect("count")
}

fn refused(store: &Alerting, reason: &str) -> u64 {
    store
        .shared_metrics()
        .silences_refused
        .get_or_create(&crate::metrics::ReasonLabel {
            reason: reason.into(),
        })
        .get()
}

impl Alerting {
    fn shared_metrics(&self) -> crate::metrics::AlertMetrics {
        lock(&self.runtime).shared.alert_metrics.clone()
    }
}

#[tokio::test]
async fn store_silence_caps_per_user_then_overall_and_ended_ones_free_a_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let (store, _thread) = open(
        &path,
        SilenceLimits {
            max: 5,
            per_user: 3,
        },
    );
    let t = now();
    let long = t + 3_600_000;
    let mut alice = Vec::new();
    for i in 0..3 {
        alice.push(
            store
                .add_silence(spec("user:alice", i, t, long), t)
                .await
                .expect("alice within her cap"),
        );
    }
    let r = store.add_silence(spec("user:alice", 3, t, long), t).await;
    assert!(
        matches!(&r, Err(StoreError::Limit(m)) if m.contains("max_silences_per_user")),
        "{r:?}"
    );
    assert_eq!(refused(&store, "user_limit"), 1);
    // Another user still may, up to the overall cap.
    store
        .add_silence(spec("user:bob", 10, t, long), t)
        .await
        .expect("bob");
    // One of bob's ends soon: it counts until then.
    store
        .add_silence(spec("user:bob", 11, t, t + 1_000), t)
        .await
        .expect("bob, short");
    let r = store.add_silence(spec("token:ci", 20, t, long), t).await;
    assert!(
        matches!(&r, Err(StoreError::Limit(m)) if m.contains("[alerting] max_silences")),
        "{r:?}"
    );
    assert_eq!(refused(&store, "limit"), 1);
    assert_eq!(current(&path, t), 5, "refused silences are not stored");
    assert_eq!(store.shared_metrics().silences.get(), 5);

    // Bob's short silence has ended by t + 2 s: a place is free.
    let later = t + 2_000;
    store
        .add_silence(spec("token:ci", 20, later, long), later)
        .await
        .expect("a place freed by a silence that ended");
    // Expiring one of alice's frees hers.
    assert!(store.expire_silence(alice[0], later).await.expect("expire"));
    store
        .add_silence(spec("user:alice", 4, later, long), later)
        .await
        .expect("alice again after expiring one");
    assert_eq!(current(&path, later), 5);
}

#[tokio::test]
async fn store_silence_caps_hold_under_parallel_creates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let (store, _thread) = open(
        &path,
        SilenceLimits {
            max: 10,
            per_user: 7,
        },
    );
    let t = now();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        let author = if i % 2 == 0 { "user:alice" } else { "user:bob" };
        tasks.push(tokio::spawn(async move {
            store
                .add_silence(spec(author, i, t, t + 3_600_000), t)
                .await
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Limit(_)) => limited += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, limited), (10, 30));
    assert_eq!(current(&path, t), 10);
    for author in ["user:alice", "user:bob"] {
        let c = rusqlite::Connection::open(&path).expect("open db");
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM silences WHERE author = ?1",
                [author],
                |r| r.get(0),
            )
            .expect("count");
        assert!(n <= 7, "{author} has {n} silences, over the per-user cap");
    }
}

#[tokio::test]
async fn store_silence_ticks_and_changes_compile_no_silence_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let limits = SilenceLimits {
        max: 1000,
        per_user: 1000,
    };
    let (store, thread) = open(&path, limits);
    // In the past, so the expiry below is over by the restart (which loads at the wall clock).
    let t = now() - 60_000;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            store
                .add_silence(spec("user:alice", i, t, t + 3_600_000), t)
                .await
                .expect("add"),
        );
    }
    let compiled = || lock(&store.runtime).silences.compiled();
    assert_eq!(compiled(), 300, "one compilation per created silence");
    for k in 1..=20 {
        store.tick(t + k * 1_000).await.expect("tick");
    }
    assert!(store.expire_silence(ids[0], t + 21_000).await.unwrap());
    store
        .add_silence(spec("user:bob", 1, t, t + 3_600_000), t + 21_000)
        .await
        .expect("add");
    store.tick(t + 22_000).await.expect("tick");
    assert_eq!(
        compiled(),
        301,
        "ticks, an expiry and another creation compiled no stored silence again"
    );
    assert_eq!(store.shared_metrics().silences.get(), 300);

    // After a restart the stored silences are compiled once each, then kept.
    drop(store);
    thread.join().expect("writer exits");
    let (store, _thread) = open(&path, limits);
    let compiled = || lock(&store.runtime).silences.compiled();
    assert_eq!(compiled(), 300, "loaded once at startup");
    store.tick(t + 23_000).await.expect("tick");
    assert_eq!(compiled(), 300);
}
