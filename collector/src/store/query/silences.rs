//! Silences as the API reads them: pages (filtered by what the caller may see) and one
//! silence. They are created and expired through the writer.

use rusqlite::{params, Connection, OptionalExtension};

use super::alerts::{page, Paged};
use crate::store::{Store, StoreError};

/// One row of `silences`.
#[derive(Debug, Clone)]
pub struct SilenceRow {
    pub id: i64,
    pub matchers: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub author: String,
    pub comment: String,
    pub created_ms: i64,
}

fn silence_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SilenceRow> {
    Ok(SilenceRow {
        id: r.get(0)?,
        matchers: r.get(1)?,
        starts_ms: r.get(2)?,
        ends_ms: r.get(3)?,
        author: r.get(4)?,
        comment: r.get(5)?,
        created_ms: r.get(6)?,
    })
}

/// Silences, newest first, with ids below `before`; only those not yet ended at `now_ms`
/// unless `include_ended`.
fn silences(
    c: &Connection,
    include_ended: bool,
    now_ms: i64,
    before: Option<i64>,
    limit: usize,
    visible: impl Fn(&SilenceRow) -> bool,
) -> Result<Paged<SilenceRow>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, matchers, starts_ms, ends_ms, author, comment, created_ms FROM silences
         WHERE id < ?1 AND (?2 OR ends_ms > ?3) ORDER BY id DESC",
    )?;
    let rows = stmt.query_map(
        params![before.unwrap_or(i64::MAX), include_ended, now_ms],
        silence_row,
    )?;
    page(
        rows.map(|r| r.map(|s| (s.id, s)).map_err(StoreError::from)),
        limit,
        |s| visible(s),
    )
}

fn silence(c: &Connection, id: i64) -> Result<Option<SilenceRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, matchers, starts_ms, ends_ms, author, comment, created_ms FROM silences
         WHERE id = ?1",
    )?
    .query_row([id], silence_row)
    .optional()?)
}

impl Store {
    /// Silences, newest first, with ids below `before`; only those not yet ended at `now_ms`
    /// unless `include_ended`; keeping those `visible` accepts.
    pub async fn silences(
        &self,
        include_ended: bool,
        now_ms: i64,
        before: Option<i64>,
        limit: usize,
        visible: impl Fn(&SilenceRow) -> bool + Send + 'static,
    ) -> Result<Paged<SilenceRow>, StoreError> {
        self.read(move |c| silences(c, include_ended, now_ms, before, limit, visible))
            .await
    }

    /// One silence by id.
    pub async fn silence(&self, id: i64) -> Result<Option<SilenceRow>, StoreError> {
        self.read(move |c| silence(c, id)).await
    }
}
