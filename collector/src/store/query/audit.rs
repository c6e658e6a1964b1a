//! The API audit log in SQLite: one record per change and per denial, listed newest first
//! and pruned by retention.

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub token_id: Option<i64>,
    pub session_id: Option<i64>,
    pub source: String,
    pub action: String,
    pub object: String,
    pub result: i64,
    pub detail: String,
}

// ---- audit ----

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub actor: String,
    pub token_id: Option<i64>,
    pub session_id: Option<i64>,
    pub source: String,
    pub action: String,
    pub object: String,
    pub result: u16,
    pub detail: String,
}

pub fn insert_audit(c: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO audit_log (at_ms, actor, token_id, session_id, source, action, object,
             result, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.at_ms,
        e.actor,
        e.token_id,
        e.session_id,
        e.source,
        e.action,
        e.object,
        e.result,
        e.detail
    ])?;
    Ok(())
}

/// Which audit rows to list (every field optional).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact actor, e.g. `user:alice`.
    pub actor: Option<String>,
    /// Exact action, e.g. `POST /api/v1/users`.
    pub action: Option<String>,
    /// Rows at or after this time.
    pub since_ms: Option<i64>,
}

/// Newest first, rows with id below `before` (cursor) that pass `filter`, at most `limit`.
pub fn list_audit(
    c: &Connection,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<AuditRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, at_ms, actor, token_id, session_id, source, action, object, result, detail
         FROM audit_log
         WHERE (?1 IS NULL OR id < ?1) AND (?3 IS NULL OR actor = ?3)
           AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR at_ms >= ?5)
         ORDER BY id DESC LIMIT ?2",
    )?
    .query_map(
        params![
            before,
            i64::try_from(limit).unwrap_or(i64::MAX),
            filter.actor,
            filter.action,
            filter.since_ms
        ],
        |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                token_id: r.get(3)?,
                session_id: r.get(4)?,
                source: r.get(5)?,
                action: r.get(6)?,
                object: r.get(7)?,
                result: r.get(8)?,
                detail: r.get(9)?,
            })
        },
    )?
    .collect::<Result<_, _>>()?)
}

/// Deletes audit rows older than `before_ms` (retention), at most `limit`.
pub fn prune_audit(c: &Connection, before_ms: i64, limit: i64) -> Result<usize, StoreError> {
    Ok(c.prepare_cached(
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at_ms < ?1 LIMIT ?2)",
    )?
    .execute(params![before_ms, limit])?)
}

impl Store {
    pub async fn insert_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.exec(move |c| insert_audit(c, &entry)).await
    }

    /// Up to `limit` audit records matching `filter` with ids below `before`, newest first.
    pub async fn audit_page(
        &self,
        filter: AuditFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StoreError> {
        self.read(move |c| list_audit(c, &filter, before, limit))
            .await
    }
}
