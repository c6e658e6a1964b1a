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
