//! The outbox side of alerting: the dispatcher's per-receiver workers fetch a due group
//! and settle what they sent (delivered / retry / dead) through the writer, and rows that
//! cannot be delivered move to the dead-letter list.

use std::sync::atomic::Ordering;

use rusqlite::{params, Connection, OptionalExtension};

use super::runtime::Runtime;
use crate::notify::Notification;
use crate::store::StoreError;

/// One outbox row handed to a worker.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub notification: Notification,
    pub created_ms: i64,
    pub attempts: u32,
}

/// A due group for one receiver, and when the next row after it is due.
#[derive(Debug, Clone, Default)]
pub struct OutboxBatch {
    pub group_key: String,
    pub items: Vec<OutboxItem>,
    pub next_due_ms: Option<i64>,
    /// Rows moved to the dead-letter list because they were too old.
    pub expired: u64,
}

/// How a send of a batch ended.
#[derive(Debug, Clone)]
pub enum OutboxOutcome {
    Delivered { at_ms: i64 },
    Retry { next_ms: i64, error: String },
    Dead { reason: String },
}

impl Runtime {
    /// The oldest due group of `receiver` (expired rows go to the dead-letter list first).
    pub(super) fn outbox_fetch(
        &mut self,
        c: &Connection,
        receiver: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<OutboxBatch, StoreError> {
        let mut batch = OutboxBatch::default();
        let old: Vec<i64> = c
            .prepare_cached("SELECT id FROM outbox WHERE receiver = ?1 AND created_ms < ?2")?
            .query_map(
                params![receiver, now_ms.saturating_sub(self.setup.max_age_ms)],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        for id in old {
            dead_letter(c, id, "expired before it could be delivered", now_ms)?;
            batch.expired += 1;
            self.dead_dirty = true;
        }
        if batch.expired > 0 {
            if let Some(r) = self.shared.receiver(receiver) {
                r.queued.fetch_sub(batch.expired as i64, Ordering::Relaxed);
            }
        }
        let group: Option<String> = c
            .prepare_cached(
                "SELECT group_key FROM outbox WHERE receiver = ?1 AND due_ms <= ?2
                 ORDER BY due_ms, id LIMIT 1",
            )?
            .query_row(params![receiver, now_ms], |r| r.get(0))
            .optional()?;
        if let Some(group) = group {
            let mut stmt = c.prepare_cached(
                "SELECT id, payload, created_ms, attempts FROM outbox
                 WHERE receiver = ?1 AND group_key = ?2 AND due_ms <= ?3 ORDER BY id LIMIT ?4",
            )?;
            let rows =
                stmt.query_map(params![receiver, group, now_ms, limit.max(1) as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?;
            let mut bad = Vec::new();
            for row in rows {
                let (id, payload, created_ms, attempts) = row?;
                match serde_json::from_str::<Notification>(&payload) {
                    Ok(notification) => batch.items.push(OutboxItem {
                        id,
                        notification,
                        created_ms,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    }),
                    Err(_) => bad.push(id),
                }
            }
            drop(stmt);
            for id in bad {
                dead_letter(c, id, "unreadable payload", now_ms)?;
                self.dead_dirty = true;
                if let Some(r) = self.shared.receiver(receiver) {
                    r.queued.fetch_sub(1, Ordering::Relaxed);
                }
            }
            batch.group_key = group;
        }
        batch.next_due_ms = c
            .prepare_cached("SELECT min(due_ms) FROM outbox WHERE receiver = ?1")?
            .query_row(params![receiver], |r| r.get(0))?;
        Ok(batch)
    }

    /// Settles rows a worker sent (or gave up on).
    pub(super) fn outbox_settle(
        &mut self,
        c: &Connection,
        receiver: &str,
        group_key: &str,
        ids: &[i64],
        outcome: &OutboxOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut gone = 0i64;
        for &id in ids {
            match outcome {
                OutboxOutcome::Delivered { .. } => {
                    log_delivery(c, id, "delivered", None, now_ms)?;
                    gone += c
                        .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                        .execute([id])? as i64;
                }
                OutboxOutcome::Retry { next_ms, error } => {
                    log_delivery(c, id, "retry", Some(error), now_ms)?;
                    c.prepare_cached(
                        "UPDATE outbox SET attempts = attempts + 1, due_ms = ?2, last_error = ?3
                         WHERE id = ?1",
                    )?
                    .execute(params![id, next_ms, error])?;
                }
                OutboxOutcome::Dead { reason } => {
                    c.prepare_cached("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1")?
                        .execute([id])?;
                    gone += i64::from(dead_letter(c, id, reason, now_ms)?);
                    self.dead_dirty = true;
                }
            }
        }
        if let OutboxOutcome::Delivered { at_ms } = outcome {
            self.last_flush
                .insert((receiver.to_owned(), group_key.to_owned()), *at_ms);
        }
        if let Some(r) = self.shared.receiver(receiver) {
            r.queued.fetch_sub(gone, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Records the outcome of an attempt at outbox row `id` in the delivery log (attempt =
/// the row's attempts so far + 1 for a send, as they are for a row given up).
fn log_delivery(
    c: &Connection,
    id: i64,
    result: &str,
    error: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let attempt = if result == "dead" {
        "attempts"
    } else {
        "attempts + 1"
    };
    c.prepare_cached(&format!(
        "INSERT INTO deliveries (at_ms, receiver, fingerprint, rule, host, status, result,
             attempt, error)
         SELECT ?2, receiver, fingerprint, coalesce(json_extract(payload, '$.rule'), ''),
             json_extract(payload, '$.labels.host'),
             coalesce(json_extract(payload, '$.status'), ''), ?3, {attempt},
             CASE ?3 WHEN 'dead' THEN ?4 || coalesce(': ' || last_error, '') ELSE ?4 END
         FROM outbox WHERE id = ?1 AND json_valid(payload)
         UNION ALL
         SELECT ?2, receiver, fingerprint, '', NULL, '', ?3, {attempt}, ?4
         FROM outbox WHERE id = ?1 AND NOT json_valid(payload)"
    ))?
    .execute(params![id, now_ms, result, error])?;
    Ok(())
}

/// Moves an outbox row to the dead-letter list (and says so in the delivery log); `false`
/// if it was already gone.
pub(super) fn dead_letter(
    c: &Connection,
    id: i64,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    log_delivery(c, id, "dead", Some(reason), now_ms)?;
    let moved: Option<String> = c
        .prepare_cached(
            "INSERT INTO dead_letters (receiver, group_key, fingerprint, payload, created_ms,
                 failed_ms, attempts, reason)
             SELECT receiver, group_key, fingerprint, payload, created_ms, ?2, attempts,
                 ?3 || coalesce(': ' || last_error, '')
             FROM outbox WHERE id = ?1
             RETURNING fingerprint",
        )?
        .query_row(params![id, now_ms, reason], |r| r.get(0))
        .optional()?;
    c.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
        .execute([id])?;
    if let Some(fingerprint) = &moved {
        tracing::warn!(
            notification_id = id,
            fingerprint = %fingerprint,
            reason,
            "notification moved to the dead-letter list"
        );
    }
    Ok(moved.is_some())
}
