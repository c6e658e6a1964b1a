//! Alerting through the real store (SQLite files, writer thread): transitions and outbox
//! rows committed with the samples, restart without re-firing, silences, acknowledgements,
//! inhibition, grouping, flap handling and late data.

use super::test_rig::{now, setup, statuses, Rig, RULES};
use crate::alert::route::{GroupBy, InhibitRule, SilenceSpec};
use crate::notify::Status;
use crate::store::StoreError;

#[tokio::test]
async fn store_alert_fires_once_and_a_restart_neither_refires_nor_loses_the_resolve() {
    let mut rig = Rig::new(setup(RULES, |_| {})).await;
    let t = now();
    rig.send("test_value", &[("1", t, 1.0)]).await;
    // The outbox row was committed with the sample: due at once (group_wait 0).
    let sent = rig.drain(now()).await;
    assert_eq!(statuses(&sent), [Status::Firing]);
    let n = &sent[0];
    assert_eq!(n.labels.get("host").map(String::as_str), Some("agent-1"));
    assert_eq!(n.labels.get("i").map(String::as_str), Some("1"));
    assert_eq!(n.summary, "test 1 on agent-1");
    rig.send("test_value", &[("1", now(), 2.0)]).await;
    rig.store.tick(now()).await.expect("tick");
    assert!(
        rig.drain(now()).await.is_empty(),
        "still firing: no duplicate"
    );

    let mut rig = rig.restart().await;
    rig.store.tick(now()).await.expect("tick after restart");
    assert!(
        rig.drain(now()).await.is_empty(),
        "the window is warmed from the store: no resolve and no re-fire after a restart"
    );
    assert_eq!(rig.store.active_alerts().await.unwrap().len(), 1);
    rig.send("test_value", &[("1", now(), 0.0)]).await;
    let sent = rig.drain(now()).await;
    assert_eq!(statuses(&sent), [Status::Resolved]);
    assert_eq!(
        sent[0].fingerprint, n.fingerprint,
        "the resolve reuses the dedup key"
    );
    assert!(rig.store.active_alerts().await.unwrap().is_empty());
    assert_eq!(
        rig.count("SELECT count(*) FROM alert_history WHERE notify = 1"),
        2
    );
    let _ = rig.dir.path();
}

#[tokio::test]
async fn store_alert_late_replay_never_fires() {
    let mut rig = Rig::new(setup(RULES, |_| {})).await;
    rig.send("test_value", &[("1", now() - 60_000, 5.0)]).await;
    rig.store.tick(now()).await.expect("tick");
    assert!(rig.drain(now()).await.is_empty());
    assert_eq!(rig.count("SELECT count(*) FROM alert_history"), 0);
}

#[tokio::test]
async fn store_alert_for_waits_on_the_tick() {
    let rules = RULES.replace("severity =", "for = \"2s\"\nseverity =");
    let mut rig = Rig::new(setup(&rules, |_| {})).await;
    let t = now();
    rig.send("test_value", &[("1", t, 1.0)]).await;
    assert!(rig.drain(now()).await.is_empty(), "pending, not firing");
    rig.store.tick(t + 1_000).await.expect("tick");
    assert!(rig.drain(t + 1_000).await.is_empty());
    rig.store.tick(t + 2_500).await.expect("tick");
    assert_eq!(statuses(&rig.drain(t + 2_500).await), [Status::Firing]);
}

#[tokio::test]
async fn store_alert_silence_then_ack_stops_repeats() {
    let mut rig = Rig::new(setup(RULES, |s| {
        s.routing.default_opts.repeat_interval_ms = 2_000;
    }))
    .await;
    let t = now();
    let silence = rig
        .store
        .add_silence(
            SilenceSpec {
                matchers: r#"{i="1"}"#.into(),
                starts_ms: t - 1_000,
                ends_ms: t + 600_000,
                author: "ops".into(),
                comment: "maintenance".into(),
            },
            t,
        )
        .await
        .expect("silence");
    let bad = SilenceSpec {
        matchers: "{}".into(),
        starts_ms: t,
        ends_ms: t + 1,
        author: "ops".into(),
        comment: String::new(),
    };
    assert!(matches!(
        rig.store.add_silence(bad, t).await,
        Err(StoreError::Invalid(_))
    ));
    rig.send("test_value", &[("1", t, 1.0), ("2", t, 1.0)])
        .await;
    let sent = rig.drain(now()).await;
    assert_eq!(sent.len(), 1, "the silenced alert is not sent");
    assert_eq!(sent[0].labels.get("i").map(String::as_str), Some("2"));

    assert!(rig.store.expire_silence(silence, t + 100).await.unwrap());
    rig.store.tick(t + 100).await.expect("tick");
    let sent = rig.drain(t + 100).await;
    assert_eq!(sent.len(), 1, "announced once the silence ends");
    assert_eq!(sent[0].labels.get("i").map(String::as_str), Some("1"));
    let fp1 = sent[0].fingerprint.clone();

    assert!(rig
        .store
        .acknowledge(&fp1, "alice", "looking", t + 200)
        .await
        .unwrap());
    assert!(!rig.store.acknowledge("nope", "alice", "", t).await.unwrap());
    let sent = rig.drain(t + 200).await;
    assert_eq!(statuses(&sent), [Status::Acknowledged]);
    assert!(sent[0].description.contains("alice"));

    // Past repeat_interval: the unacknowledged alert repeats, the acknowledged one does not.
    rig.store.tick(t + 2_500).await.expect("tick");
    let sent = rig.drain(t + 2_500).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].labels.get("i").map(String::as_str), Some("2"));
    assert_eq!(sent[0].status, Status::Firing);
}

#[tokio::test]
async fn store_alert_inhibition_mutes_then_lifts() {
    let rules = format!(
        "{RULES}\n[[rule]]\nname = \"host_down\"\nselector = \"down_flag\"\nwindow = \"10s\"\n\
         op = \">\"\ncritical = 0.5\nseverity = \"critical\"\n"
    );
    let mut rig = Rig::new(setup(&rules, |s| s.inhibit = InhibitRule::builtin())).await;
    let t = now();
    rig.send("down_flag", &[("x", t, 1.0)]).await;
    rig.send("test_value", &[("1", t, 1.0)]).await;
    let sent = rig.drain(now()).await;
    let names: Vec<&str> = sent.iter().map(|n| n.rule.as_str()).collect();
    assert_eq!(names, ["host_down"], "the host's other alert is muted");
    rig.send("down_flag", &[("x", t + 10, 0.0)]).await;
    let t2 = now();
    rig.store.tick(t2).await.expect("tick");
    let sent = rig.drain(t2).await;
    let mut got: Vec<(&str, Status)> = sent.iter().map(|n| (n.rule.as_str(), n.status)).collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        [
            ("host_down", Status::Resolved),
            ("test_high", Status::Firing)
        ],
        "the muted alert is announced once the inhibition lifts"
    );
}

#[tokio::test]
async fn store_alert_grouping_waits_for_group_interval() {
    let mut rig = Rig::new(setup(RULES, |s| {
        s.routing.default_opts.group_by = GroupBy::Labels(vec!["alertname".into()]);
        s.routing.default_opts.group_interval_ms = 60_000;
    }))
    .await;
    let t = now();
    rig.send("test_value", &[("1", t, 1.0)]).await;
    let t1 = now();
    assert_eq!(rig.drain(t1).await.len(), 1, "a new group goes out at once");
    rig.send("test_value", &[("2", t, 1.0)]).await;
    rig.send("test_value", &[("3", t, 1.0)]).await;
    assert!(rig.drain(now()).await.is_empty(), "held for group_interval");
    assert!(rig.fetch(t1 + 59_999).await.items.is_empty());
    let b = rig.fetch(t1 + 60_000).await;
    assert_eq!(b.items.len(), 2, "both later alerts in one batch");
    assert_eq!(b.group_key, r#"default:{alertname="test_high"}"#);
}

#[tokio::test]
async fn store_alert_hundred_flaps_make_one_flapping_notice() {
    let mut rig = Rig::new(setup(RULES, |_| {})).await;
    let t = now();
    for k in 0..100i64 {
        let v = if k % 2 == 0 { 1.0 } else { 0.0 };
        rig.send("test_value", &[("1", t + k, v)]).await;
    }
    let rows = rig.count("SELECT count(*) FROM outbox");
    let flapping =
        rig.count("SELECT count(*) FROM outbox WHERE payload LIKE '%\"flapping\":\"true\"%'");
    let keys = rig.count("SELECT count(DISTINCT fingerprint) FROM outbox");
    assert_eq!(flapping, 1, "exactly one flapping notice");
    assert!(rows <= 8, "{rows} notifications for 100 transitions");
    assert_eq!(keys, 1, "every notice reuses the alert's dedup key");
    assert_eq!(
        rig.count("SELECT count(*) FROM alert_history"),
        101,
        "every transition and the flapping notice are in the history"
    );
}

#[tokio::test]
async fn store_alert_long_restart_holds_firing_alerts_until_data_returns() {
    let mut rig = Rig::new(setup(RULES, |_| {})).await;
    // Fired by a sample already 12 s old: by the first tick after the restart it is older
    // than window + grace, as after a long collector outage.
    rig.send("test_value", &[("1", now() - 12_000, 1.0)]).await;
    assert_eq!(statuses(&rig.drain(now()).await), [Status::Firing]);
    let mut rig = rig.restart().await;
    let t = now();
    rig.store.tick(t + 5_000).await.expect("tick");
    assert!(
        rig.drain(t + 5_000).await.is_empty(),
        "no data yet after the restart: the alert is held, not resolved"
    );
    rig.send("test_value", &[("1", now(), 1.0)]).await;
    assert!(
        rig.drain(now()).await.is_empty(),
        "data is back and still bad: no re-page"
    );
    // Once the hold is over, silence means the condition is no longer met.
    rig.store.tick(t + 40_000).await.expect("tick");
    assert_eq!(statuses(&rig.drain(t + 40_000).await), [Status::Resolved]);
}
