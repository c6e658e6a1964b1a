//! Read queries for the HTTP API's alert routes (run on a `Reader` via `Reader::run`):
//! active alerts, their history, silences, stored rules, the hosts' labels for scope checks,
//! and recent raw samples for dry runs the writer's window does not cover.
//!
//! Lists are filtered by what the caller may see (a predicate over labels) while they are
//! read, so a page holds up to `limit` visible items; each call reads at most `SCAN_MAX`
//! rows and then hands back a cursor to continue from.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::{codec, StoreError};
use crate::alert::policy::AlertRecord;
use crate::alert::{Labels, Series, SeriesSource};

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
fn page<T>(
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

/// Every host's operator-assigned labels plus `host` (its agent id), by agent id: the label
/// set host-scoped grants are matched against.
pub fn host_labels(c: &Connection) -> Result<HashMap<String, Labels>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT agent_id, labels FROM hosts")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = HashMap::new();
    for row in rows {
        let (agent, text) = row?;
        out.insert(agent.clone(), labels_for_host(&agent, &text));
    }
    Ok(out)
}

/// The scope labels of one host; a host the collector never saw has only `host`.
pub fn labels_of_host(c: &Connection, agent_id: &str) -> Result<Labels, StoreError> {
    let text: Option<String> = c
        .prepare_cached("SELECT labels FROM hosts WHERE agent_id = ?1")?
        .query_row([agent_id], |r| r.get(0))
        .optional()?;
    Ok(labels_for_host(agent_id, text.as_deref().unwrap_or("{}")))
}

fn labels_for_host(agent_id: &str, json: &str) -> Labels {
    // Unreadable labels give no extra labels (narrower scope matches fail closed).
    let mut l: Labels = serde_json::from_str(json).unwrap_or_default();
    l.insert("host".into(), agent_id.to_owned());
    l
}

/// Active (firing or flapping) alerts in rowid order after `after`, optionally of one rule.
pub fn active_alerts(
    c: &Connection,
    after: Option<i64>,
    rule: Option<&str>,
    limit: usize,
    visible: impl Fn(&AlertRecord) -> bool,
) -> Result<Paged<AlertRecord>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT rowid, record FROM alerts
         WHERE status != 'resolved' AND rowid > ?1 AND (?2 IS NULL OR rule = ?2)
         ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![after.unwrap_or(i64::MIN), rule], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let parsed = rows.filter_map(|row| match row {
        Ok((id, text)) => match serde_json::from_str::<AlertRecord>(&text) {
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
pub fn alert(c: &Connection, fingerprint: &str) -> Result<Option<AlertRecord>, StoreError> {
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
pub fn alert_history(
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
pub fn silences(
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

pub fn silence(c: &Connection, id: i64) -> Result<Option<SilenceRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, matchers, starts_ms, ends_ms, author, comment, created_ms FROM silences
         WHERE id = ?1",
    )?
    .query_row([id], silence_row)
    .optional()?)
}

/// One row of `alert_rules`: the effective definition of a rule and where it comes from.
#[derive(Debug, Clone)]
pub struct RuleRow {
    pub name: String,
    /// `config` (rules files and built-ins) or `api`.
    pub origin: String,
    /// The definition as stored (a `RawRule` as JSON).
    pub definition: serde_json::Value,
    pub updated_ms: i64,
}

fn rule_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RuleRow> {
    let text: String = r.get(2)?;
    Ok(RuleRow {
        name: r.get(0)?,
        origin: r.get(1)?,
        definition: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        updated_ms: r.get(3)?,
    })
}

/// Every stored rule, by name.
pub fn rules(c: &Connection) -> Result<Vec<RuleRow>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT name, origin, definition, updated_ms FROM alert_rules ORDER BY name",
    )?;
    let rows = stmt.query_map([], rule_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn rule(c: &Connection, name: &str) -> Result<Option<RuleRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT name, origin, definition, updated_ms FROM alert_rules WHERE name = ?1",
    )?
    .query_row([name], rule_row)
    .optional()?)
}

/// Recent samples read from the store, as a source for the alert engine.
#[derive(Debug, Default)]
pub struct StoredSamples {
    by_metric: HashMap<String, Vec<Series>>,
}

impl SeriesSource for StoredSamples {
    fn series(&self, metric: &str, since_ms: i64) -> Vec<Series> {
        let Some(list) = self.by_metric.get(metric) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|s| {
                let from = s.samples.partition_point(|x| x.0 < since_ms);
                (from < s.samples.len()).then(|| Series {
                    labels: s.labels.clone(),
                    samples: s.samples[from..].to_vec(),
                })
            })
            .collect()
    }
}

/// The raw samples of `metrics` (every host) from `since_ms` to `until_ms` + 1 min: what a
/// dry run evaluates when the writer's window does not hold those metrics. Series carry
/// their labels plus `host`, as in the window.
pub fn recent_samples(
    c: &Connection,
    metrics: &[&str],
    since_ms: i64,
    until_ms: i64,
) -> Result<StoredSamples, StoreError> {
    let mut names: HashMap<i64, (String, Labels)> = HashMap::new();
    {
        let mut stmt = c.prepare_cached(
            "SELECT s.id, s.name, s.labels, h.agent_id FROM series s
             JOIN hosts h ON h.id = s.host_id WHERE s.name = ?1",
        )?;
        for m in metrics {
            let rows = stmt.query_map([m], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            for row in rows {
                let (id, name, text, host) = row?;
                let Some(pairs) = mcpwatch_common::wire::SeriesKey::parse_labels_text(&text) else {
                    continue;
                };
                let mut labels: Labels = pairs.into_iter().collect();
                labels.insert("host".into(), host);
                names.insert(id, (name, labels));
            }
        }
    }
    let mut out = StoredSamples::default();
    if names.is_empty() {
        return Ok(out);
    }
    let until = until_ms.saturating_add(60_000);
    let mut samples: HashMap<i64, Vec<(i64, f64)>> = HashMap::new();
    let mut stmt =
        c.prepare_cached("SELECT data FROM raw WHERE ts_max >= ?1 AND ts_min <= ?2 ORDER BY id")?;
    let blobs = stmt.query_map(params![since_ms, until], |r| r.get::<_, Vec<u8>>(0))?;
    for blob in blobs {
        let Ok(rows) = codec::decode(&blob?) else {
            continue;
        };
        for (id, ts, v) in rows {
            if (since_ms..=until).contains(&ts) && names.contains_key(&id) {
                samples.entry(id).or_default().push((ts, v));
            }
        }
    }
    for (id, mut list) in samples {
        let Some((name, labels)) = names.remove(&id) else {
            continue;
        };
        list.sort_by_key(|x| x.0);
        // One sample per series and millisecond, the last written winning (as the window).
        let mut dedup: Vec<(i64, f64)> = Vec::with_capacity(list.len());
        for (ts, v) in list {
            match dedup.last_mut() {
                Some(last) if last.0 == ts => last.1 = v,
                _ => dedup.push((ts, v)),
            }
        }
        out.by_metric.entry(name).or_default().push(Series {
            labels,
            samples: dedup,
        });
    }
    Ok(out)
}
