//! What changed since a point, for the live feed (`crate::feed`): committed rows of
//! `events`, `alert_history` and `audit_log` after per-table id cursors, and every host's
//! online/revoked/labels state (the feed diffs it). Ids only grow, so a cursor never misses
//! a committed row; all four reads run in one read transaction, so they agree.

use rusqlite::{params, Connection};

use super::events::{event_from_row, EventRecord};
use super::hosts::sql_limit;
use crate::store::{Store, StoreError};

/// The newest row id seen per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursors {
    pub event: i64,
    pub alert: i64,
    pub audit: i64,
}

/// One `alert_history` row, as the feed needs it.
#[derive(Debug, Clone)]
pub struct AlertChange {
    pub id: i64,
    pub at_ms: i64,
    pub rule: String,
    pub fingerprint: String,
    /// JSON object.
    pub labels: String,
    pub from_state: String,
    pub to_state: String,
}

/// One successful mutation in the audit log: its method and route template, e.g.
/// `POST /api/v1/silences`.
#[derive(Debug, Clone)]
pub struct AuditChange {
    pub id: i64,
    pub action: String,
    /// Answered 2xx: the change took effect (refusals and failures change nothing a page
    /// shows, but still move the cursor).
    pub applied: bool,
}

/// A host's state the feed compares from poll to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub agent_id: String,
    pub online: bool,
    pub revoked: bool,
    /// JSON object of operator labels.
    pub labels: String,
}

/// Rows after the cursors (at most `limit` per table, oldest first) and every host's state.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub events: Vec<EventRecord>,
    pub alerts: Vec<AlertChange>,
    pub audit: Vec<AuditChange>,
    pub hosts: Vec<HostState>,
}

fn changes(c: &Connection, after: Cursors, limit: usize) -> Result<Changes, StoreError> {
    let tx = c.unchecked_transaction()?;
    let events = tx
        .prepare_cached(
            "SELECT e.id, h.agent_id, e.ts_ms, e.kind, e.server, e.detail FROM events e
             JOIN hosts h ON h.id = e.host_id WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
        )?
        .query_map(params![after.event, sql_limit(limit)], event_from_row)?
        .collect::<Result<_, _>>()?;
    let alerts = tx
        .prepare_cached(
            "SELECT id, at_ms, rule, fingerprint, labels, from_state, to_state FROM alert_history
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![after.alert, sql_limit(limit)], |r| {
            Ok(AlertChange {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                rule: r.get(2)?,
                fingerprint: r.get(3)?,
                labels: r.get(4)?,
                from_state: r.get(5)?,
                to_state: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let audit = tx
        .prepare_cached(
            "SELECT id, action, result FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![after.audit, sql_limit(limit)], |r| {
            let result: i64 = r.get(2)?;
            Ok(AuditChange {
                id: r.get(0)?,
                action: r.get(1)?,
                applied: (200..300).contains(&result),
            })
        })?
        .collect::<Result<_, _>>()?;
    let hosts = tx
        .prepare_cached("SELECT agent_id, online, revoked, labels FROM hosts ORDER BY id")?
        .query_map([], |r| {
            Ok(HostState {
                agent_id: r.get(0)?,
                online: r.get(1)?,
                revoked: r.get(2)?,
                labels: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    tx.finish()?;
    Ok(Changes {
        events,
        alerts,
        audit,
        hosts,
    })
}

fn cursors_now(c: &Connection) -> Result<Cursors, StoreError> {
    let max = |table: &str| -> Result<i64, StoreError> {
        Ok(c.query_row(
            &format!("SELECT coalesce(max(id), 0) FROM {table}"),
            [],
            |r| r.get(0),
        )?)
    };
    Ok(Cursors {
        event: max("events")?,
        alert: max("alert_history")?,
        audit: max("audit_log")?,
    })
}

impl Store {
    /// Rows committed after `after` (at most `limit` per table) and every host's state.
    pub async fn changes_after(&self, after: Cursors, limit: usize) -> Result<Changes, StoreError> {
        self.read(move |c| changes(c, after, limit)).await
    }

    /// The newest id of each table the feed follows: where a new feed starts.
    pub async fn change_cursors(&self) -> Result<Cursors, StoreError> {
        self.read(cursors_now).await
    }
}
