//! Notification: routing each changed alert to its receivers, silences (kept in
//! `silences`) and inhibitions,
//! the per-receiver "told" log, group timing and the outbox rows (all in the open
//! transaction), acknowledgements, and the state shared with the dispatcher (receiver
//! wakeups and counters, the alert metrics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rusqlite::{params, Connection};
use tokio::sync::Notify;

use super::evaluation::save_alert;
use super::runtime::Runtime;
use crate::alert::policy::{plan, AlertRecord, AlertStatus, EscalationStatus, Outgoing};
use crate::alert::route::{inhibited, Target};
use crate::alert::Labels;
use crate::store::StoreError;
// The alert engine's Prometheus types live with the collector's other metrics.
pub use crate::metrics::{AlertMetrics, TransitionLabel};

/// Metric through which the dispatcher's failures reach the rules (built-in
/// `notification_receiver_failing`).
pub const FAILED_METRIC: &str = "mcpwatch_collector_notifications_failed_total";

/// Per-receiver state shared between the writer and the dispatcher.
#[derive(Debug, Default)]
pub struct ReceiverShared {
    /// Signalled after a commit that queued notifications for the receiver.
    pub wake: Notify,
    /// Rows waiting in the outbox.
    pub queued: AtomicI64,
    /// Failed send attempts, fed back to the rules as [`FAILED_METRIC`].
    pub failed: AtomicU64,
}

/// Receiver name → shared state, and the alert engine's metrics. The receivers are the
/// configured ones plus those defined through the API; only the writer changes the set (in
/// the transaction that stores the change), the dispatcher reads it when a worker starts.
#[derive(Debug, Default)]
pub struct OutboxShared {
    receivers: RwLock<BTreeMap<String, Arc<ReceiverShared>>>,
    pub alert_metrics: AlertMetrics,
    /// The collector's own series (backups, remote write), read by every tick.
    pub own_series: super::OwnSeries,
}

impl OutboxShared {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Arc<OutboxShared> {
        Self::with_metrics(names, AlertMetrics::default())
    }

    /// As `new`, with metric handles registered elsewhere (the collector's registry).
    pub fn with_metrics<'a>(
        names: impl IntoIterator<Item = &'a str>,
        alert_metrics: AlertMetrics,
    ) -> Arc<OutboxShared> {
        Arc::new(OutboxShared {
            receivers: RwLock::new(
                names
                    .into_iter()
                    .map(|n| (n.to_owned(), Arc::new(ReceiverShared::default())))
                    .collect(),
            ),
            alert_metrics,
            own_series: super::OwnSeries::default(),
        })
    }

    // A poisoned lock means a panic elsewhere while holding it; the map itself is fine.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<ReceiverShared>>> {
        self.receivers.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<ReceiverShared>>> {
        self.receivers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of receiver `name`, if it is one now.
    pub fn receiver(&self, name: &str) -> Option<Arc<ReceiverShared>> {
        self.read().get(name).cloned()
    }

    /// The current receivers' names.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }
}

impl Runtime {
    /// Queues whatever each receiver of `rec` should now be sent.
    pub(super) fn reconcile(
        &mut self,
        c: &Connection,
        rec: &AlertRecord,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let scope = self
            .hosts
            .scope_labels(rec.labels.get("host").map(String::as_str));
        // The escalation clock runs from the start until an acknowledgement.
        let until = rec.ack.as_ref().map_or(now_ms, |a| a.at_ms);
        let elapsed = until.saturating_sub(rec.started_ms);
        let mut targets = self
            .setup
            .routing
            .targets(&rec.labels, scope.as_ref(), elapsed);
        // A team's receiver only ever gets alerts about hosts inside its scope.
        targets.retain(|t| self.receiver_reaches(&t.receiver, scope.as_ref()));
        let status = rec.is_active().then(|| {
            self.setup
                .routing
                .escalation(&rec.labels, scope.as_ref())
                .map(|p| EscalationStatus {
                    policy: p.name.clone(),
                    step: p.current_step(elapsed),
                    next_ms: if rec.ack.is_some() {
                        None
                    } else {
                        p.next_at(elapsed).map(|e| rec.started_ms.saturating_add(e))
                    },
                })
        });
        if let Some(status) = status.filter(|s| *s != rec.escalation) {
            // Shown by the API and the console: stored when it changes.
            let mut updated = rec.clone();
            updated.escalation = status;
            save_alert(c, &updated)?;
            self.active.insert(updated.fingerprint.clone(), updated);
        }
        if rec.status == AlertStatus::Resolved {
            // Receivers told earlier get the resolve even if routing changed since.
            for (rcv, fp) in self.told.keys() {
                if fp == &rec.fingerprint && !targets.iter().any(|t| &t.receiver == rcv) {
                    targets.push(Target {
                        receiver: rcv.clone(),
                        group_key: "unrouted".into(),
                        opts: self.setup.routing.default_opts.clone(),
                        round: 0,
                    });
                }
            }
        }
        // Rows for a receiver no longer configured could never be sent.
        {
            let receivers = self.shared.read();
            targets.retain(|t| receivers.contains_key(&t.receiver));
        }
        let muted = rec.is_active() && self.muted(&rec.labels, now_ms);
        for target in &targets {
            let key = (target.receiver.clone(), rec.fingerprint.clone());
            let told = self.told.get(&key).copied();
            if let Some(out) = plan(rec, target, told, muted, now_ms) {
                self.enqueue(c, &out, now_ms)?;
                match out.told {
                    Some(t) => {
                        c.prepare_cached(
                            "INSERT INTO notify_log (receiver, fingerprint, told) VALUES (?1, ?2, ?3)
                             ON CONFLICT (receiver, fingerprint) DO UPDATE SET told = excluded.told",
                        )?
                        .execute(params![key.0, key.1, serde_json::to_string(&t)?])?;
                        self.told.insert(key, t);
                    }
                    None => {
                        c.prepare_cached(
                            "DELETE FROM notify_log WHERE receiver = ?1 AND fingerprint = ?2",
                        )?
                        .execute(params![key.0, key.1])?;
                        self.told.remove(&key);
                    }
                }
            }
        }
        if !rec.is_active() {
            // Nothing more will be sent about this incident.
            let fp = rec.fingerprint.clone();
            self.told.retain(|k, _| k.1 != fp);
            c.prepare_cached("DELETE FROM notify_log WHERE fingerprint = ?1")?
                .execute([&fp])?;
        }
        Ok(())
    }

    /// Silenced, or inhibited by another firing alert.
    pub(super) fn muted(&self, labels: &Labels, now_ms: i64) -> bool {
        self.silences.mutes(labels, now_ms)
            || inhibited(
                &self.setup.inhibit,
                labels,
                self.active.values().map(|a| &a.labels),
            )
    }

    pub(super) fn enqueue(
        &mut self,
        c: &Connection,
        out: &Outgoing,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let t = &out.target;
        let flush = self
            .last_flush
            .get(&(t.receiver.clone(), t.group_key.clone()))
            .copied();
        // Only a batch still waiting for its first send can be joined: rows being sent now or
        // backing off after a failure must not hold back (or hurry) a new notification.
        let pending: Option<i64> = c
            .prepare_cached(
                "SELECT min(due_ms) FROM outbox WHERE receiver = ?1 AND group_key = ?2
                     AND attempts = 0 AND due_ms > ?3",
            )?
            .query_row(params![t.receiver, t.group_key, now_ms], |r| r.get(0))?;
        let due = match (pending, flush) {
            // Join the batch already waiting for this group.
            (Some(p), _) => p,
            (None, Some(f)) if now_ms.saturating_sub(f) < t.opts.group_interval_ms => {
                f.saturating_add(t.opts.group_interval_ms)
            }
            _ => now_ms.saturating_add(t.opts.group_wait_ms),
        };
        c.prepare_cached(
            "INSERT INTO outbox (receiver, group_key, fingerprint, payload, created_ms, due_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            t.receiver,
            t.group_key,
            out.notification.fingerprint,
            serde_json::to_string(&out.notification)?,
            now_ms,
            due
        ])?;
        if let Some(r) = self.shared.receiver(&t.receiver) {
            r.queued.fetch_add(1, Ordering::Relaxed);
        }
        self.woken.insert(t.receiver.clone());
        Ok(())
    }

    /// Acknowledges an active alert: repeats stop, receivers told it fired are told it is
    /// acknowledged. `false` when no such alert is active.
    pub(super) fn acknowledge(
        &mut self,
        c: &Connection,
        fingerprint: &str,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let Some(mut rec) = self.active.get(fingerprint).cloned() else {
            return Ok(false);
        };
        rec.ack = Some(crate::alert::policy::Ack {
            by: by.to_owned(),
            at_ms: now_ms,
            comment: comment.to_owned(),
            level: rec.level,
        });
        save_alert(c, &rec)?;
        self.active.insert(rec.fingerprint.clone(), rec.clone());
        self.reconcile(c, &rec, now_ms)?;
        Ok(true)
    }

    pub(super) fn active_alerts(&self) -> Vec<AlertRecord> {
        let mut v: Vec<AlertRecord> = self.active.values().cloned().collect();
        v.sort_by(|a, b| {
            a.started_ms
                .cmp(&b.started_ms)
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        v
    }
}
