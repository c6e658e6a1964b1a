//! Stored events (gaps, spool corruption, server state changes, probe results) as the API
//! reads them: filtered pages, and the newest events of one MCP server.

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::hosts::{host_condition, sql_limit};
use crate::store::{Store, StoreError};

/// One stored event with its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: i64,
    pub agent_id: String,
    pub ts_ms: i64,
    pub kind: String,
    pub server: Option<String>,
    /// JSON object.
    pub detail: String,
}

pub(super) fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        ts_ms: r.get(2)?,
        kind: r.get(3)?,
        server: r.get(4)?,
        detail: r.get(5)?,
    })
}

/// Which events a page lists.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Hosts to include (`None`: all).
    pub hosts: Option<Vec<i64>>,
    pub server: Option<String>,
    /// Events of one of these kinds only (`None`: any kind).
    pub kinds: Option<Vec<String>>,
    /// Events at or after this time only.
    pub since_ms: Option<i64>,
    /// Ids below this only (the cursor: pages go from the newest to the oldest).
    pub before_id: Option<i64>,
}

/// Up to `limit` events matching `f`, newest first (by id, i.e. arrival order).
pub(super) fn events_page(
    c: &Connection,
    f: &EventFilter,
    limit: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    if f.hosts.as_deref().is_some_and(<[i64]>::is_empty) {
        return Ok(Vec::new());
    }
    // One JSON array parameter, so the statement's text does not vary with the kinds.
    let kinds = f
        .kinds
        .as_ref()
        .map(|k| serde_json::Value::from(k.clone()).to_string());
    let sql = format!(
        "SELECT e.id, h.agent_id, e.ts_ms, e.kind, e.server, e.detail FROM events e
         JOIN hosts h ON h.id = e.host_id
         WHERE {} AND (?1 IS NULL OR e.server = ?1)
           AND (?2 IS NULL OR e.kind IN (SELECT value FROM json_each(?2)))
           AND (?3 IS NULL OR e.ts_ms >= ?3) AND (?4 IS NULL OR e.id < ?4)
         ORDER BY e.id DESC LIMIT ?5",
        host_condition("e.host_id", f.hosts.as_deref())
    );
    Ok(c.prepare(&sql)?
        .query_map(
            params![f.server, kinds, f.since_ms, f.before_id, sql_limit(limit)],
            event_from_row,
        )?
        .collect::<Result<_, _>>()?)
}

/// The newest `limit` events of one server of a host, newest first.
pub(super) fn server_events(
    c: &Connection,
    host_id: i64,
    server: &str,
    limit: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT e.id, h.agent_id, e.ts_ms, e.kind, e.server, e.detail FROM events e
         JOIN hosts h ON h.id = e.host_id
         WHERE e.host_id = ?1 AND e.server = ?2 ORDER BY e.ts_ms DESC, e.id DESC LIMIT ?3",
    )?
    .query_map(params![host_id, server, sql_limit(limit)], event_from_row)?
    .collect::<Result<_, _>>()?)
}

/// The newest event of a server whose kind is one of `kinds`: `(ts_ms, kind)`.
pub(super) fn latest_event_of_kinds(
    c: &Connection,
    host_id: i64,
    server: &str,
    kinds: &[&str],
) -> Result<Option<(i64, String)>, StoreError> {
    if kinds.is_empty() {
        return Ok(None);
    }
    let marks: Vec<String> = (0..kinds.len()).map(|i| format!("?{}", i + 3)).collect();
    let sql = format!(
        "SELECT ts_ms, kind FROM events WHERE host_id = ?1 AND server = ?2 AND kind IN ({})
         ORDER BY ts_ms DESC, id DESC LIMIT 1",
        marks.join(",")
    );
    let mut values: Vec<rusqlite::types::Value> = vec![host_id.into(), server.to_owned().into()];
    values.extend(
        kinds
            .iter()
            .map(|k| rusqlite::types::Value::from((*k).to_owned())),
    );
    Ok(c.prepare_cached(&sql)?
        .query_row(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Names of the servers that reported events on a host (agent-wide events excluded).
pub(super) fn event_servers(c: &Connection, host_id: i64) -> Result<Vec<String>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT DISTINCT server FROM events
         WHERE host_id = ?1 AND server IS NOT NULL AND server != '' ORDER BY server",
    )?
    .query_map([host_id], |r| r.get(0))?
    .collect::<Result<_, _>>()?)
}

impl Store {
    /// Up to `limit` events matching `filter`, newest first (by id, i.e. arrival order).
    pub async fn events_page(
        &self,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.read(move |c| events_page(c, &filter, limit)).await
    }
}
