//! The API audit log in SQLite: one record per change and per denial, listed newest first.
//! Rows form a hash chain (`store::audit_chain`): appended only on the writer, removed only
//! by retention, verified by [`Store::verify_audit_chain`] and `mcpwatch-collector audit
//! verify`.

use rusqlite::{params, Connection};
use serde::Serialize;

pub use crate::store::audit_chain::{Checkpoint, Verdict};
use crate::store::{audit_chain, Store, StoreError};

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
    /// The request's `X-Request-Id` (absent on rows written before request ids existed).
    pub request_id: Option<String>,
}

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
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
}

/// Appends `e` to the chain; returns its id. On the writer's connection only.
pub fn insert_audit(c: &Connection, e: &AuditEntry) -> Result<i64, StoreError> {
    audit_chain::append(c, e)
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
    /// Rows before this time.
    pub until_ms: Option<i64>,
    /// Exact request id (`X-Request-Id`).
    pub request_id: Option<String>,
    /// Exact object, e.g. `/api/v1/users/3`.
    pub object: Option<String>,
    /// Exact result (HTTP status), e.g. 403.
    pub result: Option<i64>,
}

impl AuditRow {
    /// A row from `SELECT id, at_ms, actor, token_id, session_id, source, action, object,
    /// result, detail, request_id` (further columns are the caller's).
    pub(crate) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
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
            request_id: r.get(10)?,
        })
    }
}

/// Newest first, rows with id below `before` (cursor) that pass `filter`, at most `limit`.
pub fn list_audit(
    c: &Connection,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<AuditRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, at_ms, actor, token_id, session_id, source, action, object, result, detail,
             request_id
         FROM audit_log
         WHERE (?1 IS NULL OR id < ?1) AND (?3 IS NULL OR actor = ?3)
           AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR at_ms >= ?5)
           AND (?6 IS NULL OR request_id = ?6) AND (?7 IS NULL OR at_ms < ?7)
           AND (?8 IS NULL OR object = ?8) AND (?9 IS NULL OR result = ?9)
         ORDER BY id DESC LIMIT ?2",
    )?
    .query_map(
        params![
            before,
            i64::try_from(limit).unwrap_or(i64::MAX),
            filter.actor,
            filter.action,
            filter.since_ms,
            filter.request_id,
            filter.until_ms,
            filter.object,
            filter.result
        ],
        AuditRow::from_row,
    )?
    .collect::<Result<_, _>>()?)
}

impl Store {
    /// Appends an audit record; resolves once it is committed, with its id.
    pub async fn insert_audit(&self, entry: AuditEntry) -> Result<i64, StoreError> {
        self.exec(move |c| insert_audit(c, &entry)).await
    }

    /// Verifies the audit chain on a read connection: every surviving row when `from` is
    /// `None` or `full`, else the rows after the checkpoint `from` (see
    /// `audit_chain::verify`).
    pub async fn verify_audit_chain(
        &self,
        from: Option<Checkpoint>,
        full: bool,
    ) -> Result<Verdict, StoreError> {
        self.read(move |c| audit_chain::verify(c, from.as_ref(), full))
            .await
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
