//! The notification policy: given an alert's current state, where it is routed, whether it
//! is muted, and what each receiver has been told so far, decide what to send. Pure; the
//! store persists the alert, the "told" log and the outbox rows in one transaction.
//!
//! Per receiver: a firing alert is announced once (again on escalation, and after
//! `repeat_interval` unless acknowledged); muted alerts (silenced or inhibited) are not
//! announced; an acknowledgement is passed on to receivers that were told it fired; a
//! resolve goes to exactly the receivers that were told it fired, muted or not, so no
//! incident is left open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::engine::{AlertState, Transition};
use super::route::Target;
use super::rule::{Level, Severity};
use super::selector::Labels;
use crate::notify::{self, Notification, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Flapping,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Flapping => "flapping",
            AlertStatus::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at_ms: i64,
    pub comment: String,
    /// Level acknowledged; an escalation above it clears the acknowledgement.
    pub level: Option<Level>,
}

/// Where an alert is in its escalation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStatus {
    pub policy: String,
    /// The last step reached (0-based); `None` before the first.
    pub step: Option<usize>,
    /// When the next step is reached; `None` once acknowledged or when none is left.
    pub next_ms: Option<i64>,
}

/// An alert as the outside world sees it (one per fingerprint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub fingerprint: String,
    pub rule: String,
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub status: AlertStatus,
    pub level: Option<Level>,
    pub severity: Severity,
    pub value: Option<f64>,
    pub started_ms: i64,
    pub updated_ms: i64,
    pub resolved_ms: Option<i64>,
    pub ack: Option<Ack>,
    /// Set while a route with an escalation policy takes the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationStatus>,
}

impl AlertRecord {
    /// Applies a notifiable transition; returns the new record, or `None` when the
    /// transition does not concern notifications (pending, cancelled pending).
    pub fn apply(prev: Option<&AlertRecord>, t: &Transition) -> Option<AlertRecord> {
        if !t.notify {
            return None;
        }
        let status = match t.to {
            AlertState::Firing => AlertStatus::Firing,
            AlertState::Flapping => AlertStatus::Flapping,
            AlertState::Resolved | AlertState::Inactive => AlertStatus::Resolved,
            AlertState::Pending => return None,
        };
        let reopened = prev.is_none_or(|p| p.status == AlertStatus::Resolved);
        let started_ms = match prev {
            Some(p) if !reopened => p.started_ms,
            _ => t.at_ms,
        };
        let ack = match prev.and_then(|p| p.ack.clone()) {
            Some(a) if !reopened && status != AlertStatus::Resolved && t.level <= a.level => {
                Some(a)
            }
            Some(a) if status == AlertStatus::Resolved => Some(a),
            _ => None,
        };
        Some(AlertRecord {
            fingerprint: t.fingerprint.clone(),
            rule: t.rule.clone(),
            labels: t.labels.clone(),
            annotations: t.annotations.clone(),
            status,
            level: t.level,
            severity: t.severity,
            value: t.value,
            started_ms,
            updated_ms: t.at_ms,
            resolved_ms: (status == AlertStatus::Resolved).then_some(t.at_ms),
            ack,
            escalation: prev
                .and_then(|p| p.escalation.clone())
                .filter(|_| !reopened),
        })
    }

    pub fn is_active(&self) -> bool {
        self.status != AlertStatus::Resolved
    }
}

/// What a receiver was last told about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "told", content = "level")]
pub enum Told {
    Firing(Option<Level>),
    Flapping,
    Acknowledged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToldEntry {
    pub told: Told,
    /// When the last notification about this alert was queued for this receiver.
    pub sent_ms: i64,
    /// The escalation round it was told in (a later round tells it again).
    #[serde(default)]
    pub round: u32,
}

/// One notification to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub target: Target,
    pub notification: Notification,
    /// The receiver's new "told" entry; `None` = forget it (after a resolve).
    pub told: Option<ToldEntry>,
}

/// Decides what `target` should be sent about `alert`, given what it was told.
pub fn plan(
    alert: &AlertRecord,
    target: &Target,
    told: Option<ToldEntry>,
    muted: bool,
    now_ms: i64,
) -> Option<Outgoing> {
    let send = |status: Status, new: Option<ToldEntry>| {
        Some(Outgoing {
            target: target.clone(),
            notification: notification(alert, status, &target.group_key),
            told: new,
        })
    };
    let entry = |t: Told| {
        Some(ToldEntry {
            told: t,
            sent_ms: now_ms,
            round: target.round,
        })
    };
    // Told in this escalation round already (or a later one).
    let this_round = |t: &ToldEntry| t.round >= target.round;
    match alert.status {
        AlertStatus::Resolved => told.and_then(|_| send(Status::Resolved, None)),
        _ if muted => None,
        _ if alert.ack.is_some() => match told {
            Some(ToldEntry {
                told: Told::Firing(_) | Told::Flapping,
                ..
            }) => send(Status::Acknowledged, entry(Told::Acknowledged)),
            _ => None,
        },
        AlertStatus::Flapping => match told {
            Some(
                t @ ToldEntry {
                    told: Told::Flapping,
                    ..
                },
            ) if this_round(&t) => None,
            _ => send(Status::Firing, entry(Told::Flapping)),
        },
        AlertStatus::Firing => {
            let want = Told::Firing(alert.level);
            match told {
                Some(t) if t.told == want && this_round(&t) => {
                    let due = t.sent_ms.saturating_add(target.opts.repeat_interval_ms);
                    (now_ms >= due).then(|| send(Status::Firing, entry(want)))?
                }
                _ => send(Status::Firing, entry(want)),
            }
        }
    }
}

/// The notification payload for `alert` in `status`.
pub fn notification(alert: &AlertRecord, status: Status, group_key: &str) -> Notification {
    let flapping = alert.status == AlertStatus::Flapping;
    let mut labels = alert.labels.clone();
    if let Some(l) = alert.level {
        labels.insert("level".into(), l.as_str().into());
    }
    if flapping {
        labels.insert("flapping".into(), "true".into());
    }
    let summary = alert
        .annotations
        .get("summary")
        .cloned()
        .unwrap_or_else(|| alert.rule.clone());
    let summary = if flapping {
        format!("Flapping: {summary}")
    } else {
        summary
    };
    let mut description = alert
        .annotations
        .get("description")
        .cloned()
        .unwrap_or_default();
    if let (Status::Acknowledged, Some(a)) = (status, &alert.ack) {
        let note = format!("Acknowledged by {}: {}", a.by, a.comment);
        description = if description.is_empty() {
            note
        } else {
            format!("{description}\n{note}")
        };
    }
    Notification {
        fingerprint: alert.fingerprint.clone(),
        status,
        severity: severity(alert.severity),
        rule: alert.rule.clone(),
        summary,
        description,
        runbook_url: alert.annotations.get("runbook_url").cloned(),
        labels,
        value: alert.value,
        starts_at_ms: alert.started_ms,
        ends_at_ms: alert.resolved_ms,
        group_key: group_key.to_owned(),
    }
}

fn severity(s: Severity) -> notify::Severity {
    match s {
        Severity::Critical => notify::Severity::Critical,
        Severity::High => notify::Severity::High,
        Severity::Medium => notify::Severity::Medium,
        Severity::Low => notify::Severity::Low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::route::{GroupBy, RouteOpts};

    fn target() -> Target {
        Target {
            receiver: "r".into(),
            group_key: "g".into(),
            round: 0,
            opts: RouteOpts {
                group_by: GroupBy::All,
                group_wait_ms: 0,
                group_interval_ms: 1000,
                repeat_interval_ms: 10_000,
            },
        }
    }

    fn alert(status: AlertStatus, level: Level) -> AlertRecord {
        AlertRecord {
            fingerprint: "fp".into(),
            rule: "r".into(),
            labels: Labels::new(),
            annotations: BTreeMap::new(),
            status,
            level: Some(level),
            severity: Severity::High,
            value: Some(1.0),
            started_ms: 0,
            updated_ms: 0,
            resolved_ms: None,
            ack: None,
            escalation: None,
        }
    }

    fn told(t: Told, at: i64) -> Option<ToldEntry> {
        Some(ToldEntry {
            told: t,
            sent_ms: at,
            round: 0,
        })
    }

    #[test]
    fn alert_policy_fires_once_then_repeats() {
        let a = alert(AlertStatus::Firing, Level::Warning);
        let first = plan(&a, &target(), None, false, 100).expect("first");
        assert_eq!(first.notification.status, Status::Firing);
        let t = first.told;
        assert!(plan(&a, &target(), t, false, 5_000).is_none(), "no dup");
        let again = plan(&a, &target(), t, false, 10_100).expect("repeat");
        assert_eq!(again.told.unwrap().sent_ms, 10_100);
        let crit = alert(AlertStatus::Firing, Level::Critical);
        assert!(
            plan(&crit, &target(), t, false, 200).is_some(),
            "escalation"
        );
    }

    #[test]
    fn alert_policy_muted_ack_and_resolve() {
        let a = alert(AlertStatus::Firing, Level::Warning);
        assert!(plan(&a, &target(), None, true, 0).is_none(), "muted");
        let mut acked = a.clone();
        acked.ack = Some(Ack {
            by: "ops".into(),
            at_ms: 5,
            comment: "on it".into(),
            level: Some(Level::Warning),
        });
        let o = plan(
            &acked,
            &target(),
            told(Told::Firing(Some(Level::Warning)), 0),
            false,
            10,
        )
        .expect("ack notice");
        assert_eq!(o.notification.status, Status::Acknowledged);
        assert!(o.notification.description.contains("on it"));
        assert!(
            plan(&acked, &target(), o.told, false, 1_000_000).is_none(),
            "an ack stops repeats"
        );
        let resolved = alert(AlertStatus::Resolved, Level::Warning);
        assert!(plan(&resolved, &target(), None, false, 0).is_none());
        let r = plan(&resolved, &target(), o.told, true, 0).expect("resolve while muted");
        assert_eq!(r.notification.status, Status::Resolved);
        assert!(r.told.is_none());
    }

    #[test]
    fn alert_policy_a_later_escalation_round_tells_again() {
        let a = alert(AlertStatus::Firing, Level::Warning);
        let first = plan(&a, &target(), None, false, 0).expect("round 0");
        assert!(plan(&a, &target(), first.told, false, 100).is_none());
        let mut round1 = target();
        round1.round = 1;
        let again = plan(&a, &round1, first.told, false, 200).expect("round 1");
        assert_eq!(again.told.unwrap().round, 1);
        assert!(
            plan(&a, &round1, again.told, false, 300).is_none(),
            "once per round"
        );
    }

    #[test]
    fn alert_policy_flapping_once() {
        let a = alert(AlertStatus::Flapping, Level::Warning);
        let o = plan(&a, &target(), told(Told::Firing(None), 0), false, 1).expect("notice");
        assert!(o.notification.summary.starts_with("Flapping: "));
        assert_eq!(o.notification.labels.get("flapping").unwrap(), "true");
        assert!(plan(&a, &target(), o.told, false, 100_000_000).is_none());
    }
}
