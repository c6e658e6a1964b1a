//! Dead letters and the delivery log for operators: listing both (newest first, filtered by
//! the caller's scope as they are read), putting dead letters back in the outbox (one, or a
//! receiver's all after an outage is fixed), discarding them, and the per-receiver count the
//! built-in rule `notification_dead_letters` watches.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::runtime::Runtime;
use super::Alerting;
use crate::alert::Labels;
use crate::notify::Notification;
use crate::store::StoreError;

/// Series through which dead letters reach the rules (built-in
/// `notification_dead_letters`), per receiver.
pub const DEAD_LETTERS_METRIC: &str = "mcpwatch_collector_notification_dead_letters";

/// How often the delivery log is pruned to `[alerting] delivery_log_keep`.
const PRUNE_EVERY_MS: i64 = 600_000;

/// One dead letter.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub receiver: String,
    pub fingerprint: String,
    /// The rule of the alert it was about.
    pub rule: String,
    /// `firing`, `resolved` or `acknowledged`: what it would have said.
    pub status: String,
    pub summary: String,
    /// The alert's labels (the `host` label decides who sees it).
    pub labels: Labels,
    /// Why it was given up: the last error, or that it expired.
    pub reason: String,
    pub attempts: i64,
    /// When it was queued and when it was given up.
    pub created_ms: i64,
    pub failed_ms: i64,
}

/// One line of the delivery log: a send attempt's outcome, or a change by an operator.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub at_ms: i64,
    pub receiver: String,
    pub fingerprint: String,
    pub rule: String,
    pub host: Option<String>,
    /// `firing`, `resolved` or `acknowledged`.
    pub status: String,
    /// `delivered`, `retry` (failed, will be tried again), `dead` (given up), `requeued`
    /// (taken back from the dead-letter list) or `discarded`.
    pub result: String,
    /// Which attempt this was (1 = the first send).
    pub attempt: i64,
    /// The error of a failed attempt, or why it was given up.
    pub error: Option<String>,
    /// Who requeued or discarded it.
    pub actor: Option<String>,
}

/// What a request about one dead letter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterChange {
    /// No such dead letter (any more).
    Missing,
    /// Its receiver no longer exists: it cannot be sent.
    NoReceiver(String),
    /// Its receiver (a team's) does not reach the alert's host (any more): it is not sent.
    NotReached(String),
    /// Done; how many.
    Done(u64),
}

fn dead_letter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    let payload: String = r.get(3)?;
    let n = serde_json::from_str::<Notification>(&payload).ok();
    Ok(DeadLetter {
        id: r.get(0)?,
        receiver: r.get(1)?,
        fingerprint: r.get(2)?,
        rule: n.as_ref().map(|n| n.rule.clone()).unwrap_or_default(),
        status: n
            .as_ref()
            .map(|n| n.status.as_str().to_owned())
            .unwrap_or_default(),
        summary: n.as_ref().map(|n| n.summary.clone()).unwrap_or_default(),
        labels: n.map(|n| n.labels).unwrap_or_default(),
        reason: r.get(4)?,
        attempts: r.get(5)?,
        created_ms: r.get(6)?,
        failed_ms: r.get(7)?,
    })
}

const DEAD_COLS: &str =
    "id, receiver, fingerprint, payload, reason, attempts, created_ms, failed_ms";

/// Dead letters with `id < before` (newest first) that `keep` accepts, up to `limit`;
/// only those of `receiver` when given.
fn dead_page(
    c: &Connection,
    receiver: Option<&str>,
    before: i64,
    limit: usize,
    mut keep: impl FnMut(&DeadLetter) -> bool,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {DEAD_COLS} FROM dead_letters WHERE id < ?1 AND (?2 IS NULL OR receiver = ?2)
         ORDER BY id DESC"
    ))?;
    let mut out = Vec::new();
    for row in stmt.query_map(params![before, receiver], dead_letter_row)? {
        let d = row?;
        if keep(&d) {
            out.push(d);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub receiver: Option<String>,
    pub fingerprint: Option<String>,
    pub result: Option<String>,
    pub since_ms: Option<i64>,
}

fn delivery_page(
    c: &Connection,
    f: &DeliveryFilter,
    before: i64,
    limit: usize,
    mut keep: impl FnMut(&Delivery) -> bool,
) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, at_ms, receiver, fingerprint, rule, host, status, result, attempt, error,
             actor
         FROM deliveries WHERE id < ?1 AND (?2 IS NULL OR receiver = ?2)
             AND (?3 IS NULL OR fingerprint = ?3) AND (?4 IS NULL OR result = ?4)
             AND (?5 IS NULL OR at_ms >= ?5)
         ORDER BY id DESC",
    )?;
    let rows = stmt.query_map(
        params![before, f.receiver, f.fingerprint, f.result, f.since_ms],
        |r| {
            Ok(Delivery {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                receiver: r.get(2)?,
                fingerprint: r.get(3)?,
                rule: r.get(4)?,
                host: r.get(5)?,
                status: r.get(6)?,
                result: r.get(7)?,
                attempt: r.get(8)?,
                error: r.get(9)?,
                actor: r.get(10)?,
            })
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let d = row?;
        if keep(&d) {
            out.push(d);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// Which dead letter a caller checked (its scope, in the API) and means: a retry or
/// discard acts only when the row under the id is still that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterKey {
    pub receiver: String,
    pub fingerprint: String,
    pub created_ms: i64,
}

impl DeadLetter {
    pub fn key(&self) -> DeadLetterKey {
        DeadLetterKey {
            receiver: self.receiver.clone(),
            fingerprint: self.fingerprint.clone(),
            created_ms: self.created_ms,
        }
    }
}

/// The dead letter under `id`: its key and its alert's host.
fn stored_letter(
    c: &Connection,
    id: i64,
) -> Result<Option<(DeadLetterKey, Option<String>)>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT receiver, fingerprint, created_ms,
                 CASE WHEN json_valid(payload) THEN json_extract(payload, '$.labels.host') END
             FROM dead_letters WHERE id = ?1",
    )?
    .query_row([id], |r| {
        Ok((
            DeadLetterKey {
                receiver: r.get(0)?,
                fingerprint: r.get(1)?,
                created_ms: r.get(2)?,
            },
            r.get::<_, Option<String>>(3)?,
        ))
    })
    .optional()?)
}

impl Runtime {
    /// Puts dead letters back in the outbox, due now and with a fresh `max_age` (ids in
    /// order). Left where they are: those of receivers that no longer exist, and those
    /// whose receiver does not reach the alert's host now (a receiver of the same name made
    /// by another team gets none of the letters of the one it replaced). With `expect`, the
    /// one id must still be that letter. Logged as `requeued`.
    pub(super) fn requeue(
        &mut self,
        c: &Connection,
        ids: &[i64],
        expect: Option<&DeadLetterKey>,
        actor: &str,
        now_ms: i64,
    ) -> Result<DeadLetterChange, StoreError> {
        // One letter the caller checked answers why it was not sent; a bulk retry skips.
        let single = expect.is_some();
        let mut done = 0u64;
        for &id in ids {
            let found = stored_letter(c, id)?.filter(|(key, _)| expect.is_none_or(|e| e == key));
            let Some((key, host)) = found else {
                if single {
                    return Ok(DeadLetterChange::Missing);
                }
                continue;
            };
            let receiver = key.receiver;
            let Some(shared) = self.shared.receiver(&receiver) else {
                if single {
                    return Ok(DeadLetterChange::NoReceiver(receiver));
                }
                continue;
            };
            let scope = self.hosts.scope_labels(host.as_deref());
            if !self.receiver_reaches(&receiver, scope.as_ref()) {
                if single {
                    return Ok(DeadLetterChange::NotReached(receiver));
                }
                continue;
            }
            log_change(c, id, "requeued", actor, now_ms)?;
            c.prepare_cached(
                "INSERT INTO outbox (receiver, group_key, fingerprint, payload, created_ms, due_ms)
                 SELECT receiver, group_key, fingerprint, payload, ?2, ?2
                 FROM dead_letters WHERE id = ?1",
            )?
            .execute(params![id, now_ms])?;
            c.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                .execute([id])?;
            shared.queued.fetch_add(1, Ordering::Relaxed);
            self.woken.insert(receiver);
            done += 1;
        }
        self.dead_dirty = true;
        Ok(DeadLetterChange::Done(done))
    }

    /// Drops a dead letter for good, if it is still the one the caller checked. Logged as
    /// `discarded`.
    pub(super) fn discard(
        &mut self,
        c: &Connection,
        id: i64,
        expect: &DeadLetterKey,
        actor: &str,
        now_ms: i64,
    ) -> Result<DeadLetterChange, StoreError> {
        if stored_letter(c, id)?.is_none_or(|(key, _)| &key != expect) {
            return Ok(DeadLetterChange::Missing);
        }
        log_change(c, id, "discarded", actor, now_ms)?;
        let n = c
            .prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
            .execute([id])?;
        self.dead_dirty = true;
        Ok(if n == 0 {
            DeadLetterChange::Missing
        } else {
            DeadLetterChange::Done(1)
        })
    }

    /// On the tick: the dead-letter counts per receiver (read again after a change) as the
    /// collector's own series, and the delivery log pruned now and then.
    pub(super) fn dead_letter_tick(
        &mut self,
        c: &Connection,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.dead_dirty {
            let mut counts: BTreeMap<String, i64> =
                self.dead_counts.keys().map(|k| (k.clone(), 0)).collect();
            let mut stmt =
                c.prepare_cached("SELECT receiver, count(*) FROM dead_letters GROUP BY receiver")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (receiver, n) = row?;
                counts.insert(receiver, n);
            }
            self.dead_counts = counts;
            self.dead_dirty = false;
        }
        for (receiver, n) in &self.dead_counts {
            let labels: Labels = [("receiver".to_owned(), receiver.clone())]
                .into_iter()
                .collect();
            self.window
                .push_own(DEAD_LETTERS_METRIC, labels, now_ms, *n as f64);
        }
        if now_ms.saturating_sub(self.deliveries_pruned_ms) >= PRUNE_EVERY_MS {
            self.deliveries_pruned_ms = now_ms;
            c.prepare_cached("DELETE FROM deliveries WHERE at_ms < ?1")?
                .execute([now_ms.saturating_sub(self.setup.delivery_log_keep_ms)])?;
        }
        Ok(())
    }
}

/// A delivery-log line for an operator's change to dead letter `id`.
fn log_change(
    c: &Connection,
    id: i64,
    result: &str,
    actor: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO deliveries (at_ms, receiver, fingerprint, rule, host, status, result,
             attempt, error, actor)
         SELECT ?2, receiver, fingerprint,
             coalesce(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.rule') END, ''),
             CASE WHEN json_valid(payload) THEN json_extract(payload, '$.labels.host') END,
             coalesce(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.status') END, ''),
             ?3, attempts, NULL, ?4
         FROM dead_letters WHERE id = ?1",
    )?
    .execute(params![id, now_ms, result, actor])?;
    Ok(())
}

impl Alerting {
    /// Dead letters with `id < before`, newest first, that `keep` accepts (the caller's
    /// scope), up to `limit`.
    pub async fn dead_letters(
        &self,
        receiver: Option<String>,
        before: Option<i64>,
        limit: usize,
        keep: impl FnMut(&DeadLetter) -> bool + Send + 'static,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        self.store()
            .read(move |c| dead_page(c, receiver.as_deref(), before, limit, keep))
            .await
    }

    /// One dead letter.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.store()
            .read(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {DEAD_COLS} FROM dead_letters WHERE id = ?1"
                ))?
                .query_row([id], dead_letter_row)
                .optional()?)
            })
            .await
    }

    /// The delivery log with `id < before`, newest first, that `keep` accepts, up to `limit`.
    pub async fn deliveries(
        &self,
        filter: DeliveryFilter,
        before: Option<i64>,
        limit: usize,
        keep: impl FnMut(&Delivery) -> bool + Send + 'static,
    ) -> Result<Vec<Delivery>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        self.store()
            .read(move |c| delivery_page(c, &filter, before, limit, keep))
            .await
    }

    /// Puts one dead letter back in the outbox, if it is still the one `expect` names.
    pub async fn requeue_dead_letter(
        &self,
        id: i64,
        expect: DeadLetterKey,
        actor: String,
        now_ms: i64,
    ) -> Result<DeadLetterChange, StoreError> {
        self.call(move |rt, c| rt.requeue(c, &[id], Some(&expect), &actor, now_ms))
            .await
    }

    /// Puts every dead letter of `receiver` back in the outbox, oldest first.
    pub async fn requeue_receiver(
        &self,
        receiver: String,
        actor: String,
        now_ms: i64,
    ) -> Result<DeadLetterChange, StoreError> {
        self.call(move |rt, c| {
            if rt.shared.receiver(&receiver).is_none() {
                return Ok(DeadLetterChange::NoReceiver(receiver));
            }
            let ids: Vec<i64> = c
                .prepare_cached("SELECT id FROM dead_letters WHERE receiver = ?1 ORDER BY id")?
                .query_map([&receiver], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            rt.requeue(c, &ids, None, &actor, now_ms)
        })
        .await
    }

    /// Drops one dead letter, if it is still the one `expect` names.
    pub async fn discard_dead_letter(
        &self,
        id: i64,
        expect: DeadLetterKey,
        actor: String,
        now_ms: i64,
    ) -> Result<DeadLetterChange, StoreError> {
        self.call(move |rt, c| rt.discard(c, id, &expect, &actor, now_ms))
            .await
    }
}
