//! Alerts as the API reads them: active alerts, one alert, their history, and the stored
//! labels of the hosts they belong to (for scope checks made by the caller).
//!
//! Lists are filtered by what the caller may see (a predicate) while they are read, so a
//! page holds up to `limit` visible items; each call reads at most `SCAN_MAX` rows and then
//! hands back a cursor to continue from. Alert records are stored as JSON and decoded into
//! the caller's type, so this module does not depend on the alert engine.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;

use crate::store::{Store, StoreError};

/// Label name to value, as stored with an alert.
pub type Labels = BTreeMap<String, String>;

/// Rows one list call examines at most before returning what it found and a cursor.
pub const SCAN_MAX: usize = 20_000;

/// A page of rows and where the next one starts (`None`: nothing more).
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

/// Walks `(id, item)` rows in order, keeping those `keep` accepts, until `limit` are kept
/// (cursor = the last kept id) or `SCAN_MAX` rows were read (cursor = the last read id).
pub(super) fn page<T>(
    rows: impl Iterator<Item = Result<(i64, T), StoreError>>,
    limit: usize,
    mut keep: impl FnMut(&T) -> bool,
) -> Result<Paged<T>, StoreError> {
    let mut items = Vec::new();
    let mut scanned = 0usize;
    let mut rows = rows.peekable();
    while let Some(row) = rows.next() {
        let (id, item) = row?;
        scanned += 1;
        if keep(&item) {
            items.push(item);
        }
        if items.len() >= limit || scanned >= SCAN_MAX {
            let more = rows.peek().is_some();
            return Ok(Paged {
                items,
                next: more.then_some(id),
            });
        }
    }
    Ok(Paged { items, next: None })
}

/// Every host's operator-assigned labels as stored (JSON), by agent id.
fn host_labels(c: &Connection) -> Result<HashMap<String, String>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT agent_id, labels FROM hosts")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored labels (JSON) of one host; `None` for a host the collector never saw.
fn labels_of_host(c: &Connection, agent_id: &str) -> Result<Option<String>, StoreError> {
    Ok(
        c.prepare_cached("SELECT labels FROM hosts WHERE agent_id = ?1")?
            .query_row([agent_id], |r| r.get(0))
            .optional()?,
    )
}

/// Active (firing or flapping) alerts in rowid order after `after`, optionally of one rule.
fn active_alerts<R: DeserializeOwned>(
    c: &Connection,
    after: Option<i64>,
    rule: Option<&str>,
    limit: usize,
    visible: impl Fn(&R) -> bool,
) -> Result<Paged<R>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT rowid, record FROM alerts
         WHERE status != 'resolved' AND rowid > ?1 AND (?2 IS NULL OR rule = ?2)
         ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![after.unwrap_or(i64::MIN), rule], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let parsed = rows.filter_map(|row| match row {
        Ok((id, text)) => match serde_json::from_str::<R>(&text) {
            Ok(rec) => Some(Ok((id, rec))),
            Err(e) => {
                tracing::warn!(alert_rowid = id, error = %e, "skipping an unreadable alert record");
                None
            }
        },
        Err(e) => Some(Err(StoreError::from(e))),
    });
    page(parsed, limit, |rec| visible(rec))
}

/// One alert record (active or resolved) by fingerprint.
fn alert<R: DeserializeOwned>(c: &Connection, fingerprint: &str) -> Result<Option<R>, StoreError> {
    let text: Option<String> = c
        .prepare_cached("SELECT record FROM alerts WHERE fingerprint = ?1")?
        .query_row([fingerprint], |r| r.get(0))
        .optional()?;
    match text {
        None => Ok(None),
        Some(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| StoreError::Invalid(format!("unreadable alert record: {e}"))),
    }
}

/// One row of `alert_history`.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub id: i64,
    pub at_ms: i64,
    pub rule: String,
    pub fingerprint: String,
    pub labels: Labels,
    pub from_state: String,
    pub to_state: String,
    pub level: Option<String>,
    pub value: Option<f64>,
    pub notify: bool,
}

/// Which history rows to list.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub rule: Option<String>,
    pub fingerprint: Option<String>,
    /// Rows at or after this time.
    pub since_ms: Option<i64>,
    /// Rows before this time.
    pub until_ms: Option<i64>,
}

/// History rows, newest first, with ids below `before`.
fn alert_history(
    c: &Connection,
    f: &HistoryFilter,
    before: Option<i64>,
    limit: usize,
    visible: impl Fn(&Labels) -> bool,
) -> Result<Paged<HistoryRow>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, at_ms, rule, fingerprint, labels, from_state, to_state, level, value, notify
         FROM alert_history
         WHERE id < ?1 AND (?2 IS NULL OR rule = ?2) AND (?3 IS NULL OR fingerprint = ?3)
             AND (?4 IS NULL OR at_ms >= ?4) AND (?5 IS NULL OR at_ms < ?5)
         ORDER BY id DESC",
    )?;
    let rows = stmt.query_map(
        params![
            before.unwrap_or(i64::MAX),
            f.rule,
            f.fingerprint,
            f.since_ms,
            f.until_ms
        ],
        |r| {
            let labels: String = r.get(4)?;
            Ok(HistoryRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                rule: r.get(2)?,
                fingerprint: r.get(3)?,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                from_state: r.get(5)?,
                to_state: r.get(6)?,
                level: r.get(7)?,
                value: r.get(8)?,
                notify: r.get(9)?,
            })
        },
    )?;
    page(
        rows.map(|r| r.map(|h| (h.id, h)).map_err(StoreError::from)),
        limit,
        |h| visible(&h.labels),
    )
}

impl Store {
    /// Every host's stored operator labels (JSON), by agent id.
    pub async fn host_labels(&self) -> Result<HashMap<String, String>, StoreError> {
        self.read(host_labels).await
    }

    /// The stored operator labels (JSON) of each of `agent_ids` the collector has seen.
    pub async fn labels_of_hosts(
        &self,
        agent_ids: Vec<String>,
    ) -> Result<HashMap<String, Option<String>>, StoreError> {
        self.read(move |c| {
            let mut out = HashMap::new();
            for h in agent_ids {
                let l = labels_of_host(c, &h)?;
                out.insert(h, l);
            }
            Ok(out)
        })
        .await
    }

    /// Active (firing or flapping) alerts in rowid order after `after`, optionally of one
    /// rule, keeping those `visible` accepts; unreadable records are skipped (logged).
    pub async fn active_alerts_page<R>(
        &self,
        after: Option<i64>,
        rule: Option<String>,
        limit: usize,
        visible: impl Fn(&R) -> bool + Send + 'static,
    ) -> Result<Paged<R>, StoreError>
    where
        R: DeserializeOwned + Send + 'static,
    {
        self.read(move |c| active_alerts(c, after, rule.as_deref(), limit, visible))
            .await
    }

    /// One alert record (active or resolved) by fingerprint.
    pub async fn alert<R>(&self, fingerprint: String) -> Result<Option<R>, StoreError>
    where
        R: DeserializeOwned + Send + 'static,
    {
        self.read(move |c| alert(c, &fingerprint)).await
    }

    /// Alert history rows, newest first, with ids below `before`, keeping those whose labels
    /// `visible` accepts.
    pub async fn alert_history(
        &self,
        filter: HistoryFilter,
        before: Option<i64>,
        limit: usize,
        visible: impl Fn(&Labels) -> bool + Send + 'static,
    ) -> Result<Paged<HistoryRow>, StoreError> {
        self.read(move |c| alert_history(c, &filter, before, limit, visible))
            .await
    }
}

/// How many pending series one read returns at most.
pub const PENDING_MAX: usize = 10_000;

impl Store {
    /// The alert engine's persisted state of series that are pending (their condition holds,
    /// `for` has not yet passed), as `(rule, fingerprint, state JSON)`, at most
    /// [`PENDING_MAX`], oldest rule first.
    pub async fn pending_states(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT rule, fingerprint, state FROM alert_state
                 WHERE json_extract(state, '$.phase') = 'pending' ORDER BY rule, fingerprint LIMIT ?1",
            )?;
            let rows = stmt.query_map([super::hosts::sql_limit(PENDING_MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
