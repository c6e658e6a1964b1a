//! Alerting for many teams through the real store: host labels on alerts (and a relabel
//! during a firing alert), owner scopes of rules, receivers and routes enforced by the
//! runtime, and escalation steps notified once each across restarts.

use super::test_rig::{now, setup, statuses, Rig, RULES};
use crate::alert::route::{parse_matchers, Route};
use crate::notify::Status;

fn team_routing(s: &mut super::AlertingSetup) {
    s.routing.all_receivers = vec!["r".into(), "team-a".into()];
    s.routing.routes.push(Route {
        matchers: parse_matchers(r#"{team="a"}"#).expect("matchers"),
        receivers: vec!["team-a".into()],
        opts: s.routing.default_opts.clone(),
        continue_matching: false,
        owner: None,
        escalation: None,
    });
}

async fn relabel(rig: &Rig, agent: &str, json: &str) {
    let out = rig
        .store
        .set_host_labels_checked(agent.into(), json.into(), |_| None::<()>, now())
        .await
        .expect("relabel");
    assert!(matches!(out, crate::store::query::hosts::Relabel::Done(_)));
}

#[tokio::test]
async fn alerting_host_labels_reach_alerts_and_a_relabel_notifies_no_one_twice() {
    // A rule label `team` is overridden by the host's.
    let rules = RULES.replace("severity =", "labels = { team = \"rule\" }\nseverity =");
    let mut rig = Rig::new(setup(&rules, team_routing)).await;
    relabel(&rig, "agent-1", r#"{"team":"a","env":"prod"}"#).await;
    rig.send("test_value", &[("1", now(), 1.0)]).await;
    let sent = rig.drain_for("team-a", now()).await;
    assert_eq!(statuses(&sent), [Status::Firing]);
    assert_eq!(sent[0].labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(sent[0].labels.get("env").map(String::as_str), Some("prod"));
    assert!(rig.drain(now()).await.is_empty(), "team a's route took it");
    let fingerprint = sent[0].fingerprint.clone();

    // Moved to team b while firing: same alert, new labels, a history row; team a is not
    // told again, the default route (which now covers it) is told once.
    relabel(&rig, "agent-1", r#"{"team":"b"}"#).await;
    let active = rig.store.active_alerts().await.expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].fingerprint, fingerprint);
    assert_eq!(active[0].labels.get("team").map(String::as_str), Some("b"));
    assert!(!active[0].labels.contains_key("env"));
    assert_eq!(
        rig.count("SELECT count(*) FROM alert_history WHERE notify = 0 AND labels LIKE '%\"team\":\"b\"%'"),
        1
    );
    assert!(rig.drain_for("team-a", now()).await.is_empty());
    assert_eq!(statuses(&rig.drain(now()).await), [Status::Firing]);
    rig.send("test_value", &[("1", now(), 2.0)]).await;
    rig.store.tick(now()).await.expect("tick");
    assert!(rig.drain_for("team-a", now()).await.is_empty());
    assert!(rig.drain(now()).await.is_empty(), "no duplicate");

    // A restart keeps the labels; the resolve reaches both receivers that were told.
    let mut rig = rig.restart().await;
    rig.send("test_value", &[("1", now(), 0.0)]).await;
    let a = rig.drain_for("team-a", now()).await;
    let r = rig.drain(now()).await;
    assert_eq!(statuses(&a), [Status::Resolved]);
    assert_eq!(statuses(&r), [Status::Resolved]);
    assert_eq!(r[0].labels.get("team").map(String::as_str), Some("b"));
}

fn owner(text: &str) -> crate::alert::OwnerScope {
    crate::alert::OwnerScope::parse(text)
        .expect("owner scope")
        .expect("not empty")
}

/// Two hosts: agent-1 in team a, agent-2 in team b, both sending a high `test_value`.
async fn two_teams(rig: &mut Rig) {
    rig.connect_as("agent-2").await;
    relabel(rig, "agent-2", r#"{"team":"b"}"#).await;
    rig.send("test_value", &[("1", now(), 1.0)]).await;
    rig.connect_as("agent-1").await;
    relabel(rig, "agent-1", r#"{"team":"a"}"#).await;
    rig.send("test_value", &[("1", now(), 1.0)]).await;
}

fn hosts(sent: &[crate::notify::Notification]) -> Vec<String> {
    let mut v: Vec<String> = sent
        .iter()
        .filter_map(|n| n.labels.get("host").cloned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn alerting_owned_catch_all_rule_reads_only_its_hosts() {
    let rules = r#"
[[rule]]
name = "team_a_everything"
selector = '{__name__=~".+"}'
window = "10s"
op = ">"
critical = 0.5
owner = '{team="a"}'
"#;
    let mut rig = Rig::new(setup(rules, |_| {})).await;
    two_teams(&mut rig).await;
    rig.send("other_metric", &[("1", now(), 2.0)]).await;
    rig.connect_as("agent-2").await;
    rig.send("other_metric", &[("1", now(), 2.0)]).await;
    rig.store.tick(now()).await.expect("tick");
    let sent = rig.drain(now()).await;
    assert_eq!(
        hosts(&sent),
        ["agent-1", "agent-1"],
        "team b's series are never read"
    );
    let mut names: Vec<&str> = sent
        .iter()
        .filter_map(|n| n.labels.get("__name__").map(String::as_str))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["other_metric", "test_value"],
        "one alert per metric"
    );
    // Moving agent-2 into team a brings both its series in.
    relabel(&rig, "agent-2", r#"{"team":"a"}"#).await;
    rig.send("test_value", &[("1", now(), 1.0)]).await;
    assert_eq!(hosts(&rig.drain(now()).await), ["agent-2", "agent-2"]);
}

#[tokio::test]
async fn alerting_owned_receiver_and_route_get_only_their_hosts() {
    let mut rig = Rig::new(setup(RULES, |s| {
        s.routing.all_receivers = vec!["r".into(), "team-a".into(), "team-b".into()];
        s.routing.default_receivers = vec!["r".into(), "team-a".into()];
        s.receiver_owners
            .insert("team-a".into(), owner(r#"{team="a"}"#));
        // A route owned by team b matches everything (`{}`) but only takes team b's.
        s.routing.routes.push(Route {
            matchers: parse_matchers("{}").expect("matchers"),
            receivers: vec!["team-b".into()],
            opts: s.routing.default_opts.clone(),
            continue_matching: true,
            owner: Some(owner(r#"{team="b"}"#)),
            escalation: None,
        });
    }))
    .await;
    two_teams(&mut rig).await;
    // agent-1 (team a) matched no route: the default receivers, the team's own included;
    // agent-2 (team b) took team b's route only.
    assert_eq!(hosts(&rig.drain_for("team-a", now()).await), ["agent-1"]);
    assert_eq!(hosts(&rig.drain_for("team-b", now()).await), ["agent-2"]);
    assert_eq!(hosts(&rig.drain(now()).await), ["agent-1"]);
    let mut rig = rig;
    rig.connect_as("agent-1").await;
    rig.send("test_value", &[("1", now(), 0.0)]).await;
    assert_eq!(statuses(&rig.drain(now()).await), [Status::Resolved]);
    assert_eq!(
        statuses(&rig.drain_for("team-a", now()).await),
        [Status::Resolved]
    );
    assert!(rig.drain_for("team-b", now()).await.is_empty());
}

fn escalating(s: &mut super::AlertingSetup) {
    use crate::alert::escalation::{EscalationPolicy, EscalationStep};
    s.routing.all_receivers = vec!["r".into(), "team-a".into()];
    let step = |after_ms: i64, r: &str| EscalationStep {
        after_ms,
        receivers: vec![r.to_owned()],
    };
    let policy = EscalationPolicy::new("p", vec![step(0, "r"), step(2_000, "team-a")], None)
        .expect("policy");
    s.routing.routes.push(Route {
        matchers: parse_matchers("{}").expect("matchers"),
        receivers: Vec::new(),
        opts: s.routing.default_opts.clone(),
        continue_matching: false,
        owner: None,
        escalation: Some(std::sync::Arc::new(policy)),
    });
}

#[tokio::test]
async fn alerting_escalation_steps_told_once_each_across_restarts() {
    let mut rig = Rig::new(setup(RULES, escalating)).await;
    let t = now();
    rig.send("test_value", &[("1", t, 1.0)]).await;
    assert_eq!(statuses(&rig.drain(t + 100).await), [Status::Firing]);
    let a = rig.store.active_alerts().await.expect("active").remove(0);
    let e = a.escalation.expect("escalation status");
    assert_eq!((e.policy.as_str(), e.step), ("p", Some(0)));
    assert_eq!(e.next_ms, Some(a.started_ms + 2_000));
    for _ in 0..3 {
        rig = rig.restart().await;
        rig.store.tick(t + 1_000).await.expect("tick");
        assert!(rig.drain(t + 1_000).await.is_empty(), "step 0 told once");
        assert!(
            rig.drain_for("team-a", t + 1_000).await.is_empty(),
            "not yet"
        );
    }
    rig.store.tick(t + 2_500).await.expect("tick");
    assert_eq!(
        statuses(&rig.drain_for("team-a", t + 2_500).await),
        [Status::Firing]
    );
    let e = rig.store.active_alerts().await.expect("active")[0]
        .escalation
        .clone()
        .expect("escalation status");
    assert_eq!(
        (e.step, e.next_ms),
        (Some(1), None),
        "the last step: nothing next"
    );
    for _ in 0..3 {
        rig = rig.restart().await;
        rig.store.tick(t + 3_000).await.expect("tick");
        assert!(
            rig.drain_for("team-a", t + 3_000).await.is_empty(),
            "step 1 told once"
        );
        assert!(rig.drain(t + 3_000).await.is_empty());
    }
    // The resolve reaches every step that was told.
    // (The drains above flushed at t + 3 s, so the groups are due again only after it.)
    // The ticks ran ahead of the wall clock: the clearing sample and its evaluation follow
    // them.
    rig.send("test_value", &[("1", t + 3_500, 0.0)]).await;
    rig.store.tick(t + 4_000).await.expect("tick");
    assert_eq!(statuses(&rig.drain(t + 5_000).await), [Status::Resolved]);
    assert_eq!(
        statuses(&rig.drain_for("team-a", t + 5_000).await),
        [Status::Resolved]
    );
}

#[tokio::test]
async fn alerting_escalation_stops_at_the_acknowledgement() {
    let mut rig = Rig::new(setup(RULES, escalating)).await;
    let t = now();
    rig.send("test_value", &[("2", t, 1.0)]).await;
    assert_eq!(statuses(&rig.drain(t + 100).await), [Status::Firing]);
    let fp = rig.store.active_alerts().await.expect("active")[0]
        .fingerprint
        .clone();
    assert!(rig
        .store
        .acknowledge(&fp, "ops", "on it", t + 500)
        .await
        .expect("ack"));
    assert_eq!(statuses(&rig.drain(t + 600).await), [Status::Acknowledged]);
    rig.store.tick(t + 10_000).await.expect("tick");
    assert!(
        rig.drain_for("team-a", t + 10_000).await.is_empty(),
        "an ack stops escalation"
    );
}

#[tokio::test]
async fn alerting_owned_absence_rule_tracks_only_its_hosts() {
    let rules = r#"
[[rule]]
name = "team_a_silent"
selector = 'test_value'
absent_for = "2s"
owner = '{team="a"}'
"#;
    let mut rig = Rig::new(setup(rules, |_| {})).await;
    two_teams(&mut rig).await;
    let t = now();
    rig.store.tick(t + 10_000).await.expect("tick");
    let active = rig.store.active_alerts().await.expect("active");
    let hosts: Vec<&str> = active
        .iter()
        .filter_map(|a| a.labels.get("host").map(String::as_str))
        .collect();
    assert_eq!(
        hosts,
        ["agent-1"],
        "team b's silent host is not team a's to report"
    );
}

#[tokio::test]
async fn alerting_dead_letter_retry_only_where_the_receiver_reaches() {
    use super::dead_letters::DeadLetterChange;
    use super::OutboxOutcome;
    let mut rig = Rig::new(setup(RULES, |s| {
        s.routing.all_receivers = vec!["r".into(), "team-a".into()];
        s.routing.default_receivers = vec!["team-a".into()];
        s.receiver_owners
            .insert("team-a".into(), owner(r#"{team="a"}"#));
    }))
    .await;
    relabel(&rig, "agent-1", r#"{"team":"a"}"#).await;
    rig.send("test_value", &[("1", now(), 1.0)]).await;
    let batch = rig.fetch_for("team-a", now()).await;
    let ids: Vec<i64> = batch.items.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 1);
    let dead = OutboxOutcome::Dead {
        reason: "refused: 400".into(),
    };
    rig.store
        .outbox_settle("team-a", &batch.group_key, ids, dead, now())
        .await
        .expect("settle");
    let letters = rig
        .store
        .dead_letters(None, None, 10, |_| true)
        .await
        .expect("dead letters");
    let letter = letters.first().expect("a dead letter").clone();
    // The host moved to team b: team a's receiver does not get the retry.
    relabel(&rig, "agent-1", r#"{"team":"b"}"#).await;
    let change = rig
        .store
        .requeue_dead_letter(letter.id, letter.key(), "ops".into(), now())
        .await
        .expect("retry");
    assert_eq!(change, DeadLetterChange::NotReached("team-a".into()));
    let bulk = rig
        .store
        .requeue_receiver("team-a".into(), "ops".into(), now())
        .await
        .expect("bulk retry");
    assert_eq!(bulk, DeadLetterChange::Done(0));
    // Back in team a: retried; a stale key (another letter under the id) does nothing.
    relabel(&rig, "agent-1", r#"{"team":"a"}"#).await;
    let mut stale = letter.key();
    stale.fingerprint = "other".into();
    let change = rig
        .store
        .requeue_dead_letter(letter.id, stale, "ops".into(), now())
        .await
        .expect("retry");
    assert_eq!(change, DeadLetterChange::Missing);
    let change = rig
        .store
        .requeue_dead_letter(letter.id, letter.key(), "ops".into(), now())
        .await
        .expect("retry");
    assert_eq!(change, DeadLetterChange::Done(1));
    assert_eq!(
        statuses(&rig.drain_for("team-a", now()).await),
        [Status::Firing]
    );
    assert_eq!(
        rig.count("SELECT count(*) FROM deliveries WHERE result = 'requeued' AND actor = 'ops'"),
        1
    );
}
