//! The reads behind the fleet summary (`crate::fleet`): new series of a few metrics, the
//! raw samples committed after a row cursor, and recent 1-minute rollups for warming the
//! sparklines after a start. Raw row ids only grow (AUTOINCREMENT, one writer committing in
//! order), so a cursor never misses a committed batch.

use rusqlite::{params, Connection};

use super::hosts::sql_limit;
use crate::store::rollup::MINUTE_MS;
use crate::store::{codec, Store, StoreError};

/// One series the fleet summary follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedSeries {
    pub id: i64,
    pub agent_id: String,
    pub name: String,
    /// `(name, value)` pairs, parsed from the stored text.
    pub labels: Vec<(String, String)>,
}

/// Samples of committed batches after a raw row cursor.
#[derive(Debug, Default)]
pub struct NewSamples {
    /// `(series, ts_ms, value)` in commit order.
    pub samples: Vec<(i64, i64, f64)>,
    /// The newest raw row read (the next cursor).
    pub last_raw_id: i64,
    /// Rows that could not be decoded (counted, skipped).
    pub unreadable: usize,
    /// The read stopped at its row limit: more may be waiting.
    pub full: bool,
}

fn tracked_series(
    c: &Connection,
    names: &[&str],
    after: i64,
) -> Result<Vec<TrackedSeries>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT s.id, h.agent_id, s.name, s.labels FROM series s JOIN hosts h ON h.id = s.host_id
         WHERE s.name = ?1 AND s.id > ?2",
    )?;
    let mut out = Vec::new();
    for name in names {
        let rows = stmt.query_map(params![name, after], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (id, agent_id, name, text) = row?;
            // Unparsable stored labels: not followed (the API's views skip them too).
            if let Some(labels) = mcpwatch_common::wire::SeriesKey::parse_labels_text(&text) {
                out.push(TrackedSeries {
                    id,
                    agent_id,
                    name,
                    labels,
                });
            }
        }
    }
    out.sort_by_key(|s| s.id);
    Ok(out)
}

fn samples_after(
    c: &Connection,
    after: i64,
    since_ms: i64,
    limit: usize,
) -> Result<NewSamples, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, data FROM raw WHERE id > ?1 AND ts_max >= ?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after, since_ms, sql_limit(limit)], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = NewSamples {
        last_raw_id: after,
        ..NewSamples::default()
    };
    let mut n = 0;
    for row in rows {
        let (id, blob) = row?;
        n += 1;
        out.last_raw_id = id;
        let decoded = codec::decode_each(&blob, |s, t, v| out.samples.push((s, t, v)));
        if decoded.is_err() {
            out.unreadable += 1;
        }
    }
    out.full = n == limit;
    Ok(out)
}

impl Store {
    /// Series named one of `names` with `id > after`, in id order.
    pub async fn tracked_series(
        &self,
        names: Vec<&'static str>,
        after: i64,
    ) -> Result<Vec<TrackedSeries>, StoreError> {
        self.read(move |c| tracked_series(c, &names, after)).await
    }

    /// Samples of the raw rows after `after` whose newest sample is at or after
    /// `since_ms`, at most `limit` rows.
    pub async fn samples_after(
        &self,
        after: i64,
        since_ms: i64,
        limit: usize,
    ) -> Result<NewSamples, StoreError> {
        self.read(move |c| samples_after(c, after, since_ms, limit))
            .await
    }

    /// The newest raw row id (0 for none).
    pub async fn newest_raw_id(&self) -> Result<i64, StoreError> {
        self.read(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM raw", [], |r| r.get(0))?))
            .await
    }

    /// The id just before the first raw row whose newest sample is at or after `since_ms`
    /// (the newest id when there is none).
    pub async fn raw_id_before(&self, since_ms: i64) -> Result<i64, StoreError> {
        self.read(move |c| {
            let first: Option<i64> = c.query_row(
                "SELECT MIN(id) FROM raw WHERE ts_max >= ?1",
                [since_ms],
                |r| r.get(0),
            )?;
            Ok(match first {
                Some(id) => id - 1,
                None => c.query_row("SELECT COALESCE(MAX(id), 0) FROM raw", [], |r| r.get(0))?,
            })
        })
        .await
    }

    /// Per series, its 1-minute rollups from `since_ms` as `(series, minute_ms, mean)`.
    pub async fn minute_means(
        &self,
        series: Vec<i64>,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64, f64)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT ts, sum, count FROM rollup_1m WHERE series_id = ?1 AND ts >= ?2",
            )?;
            let since = since_ms - since_ms.rem_euclid(MINUTE_MS);
            let mut out = Vec::new();
            for id in series {
                let rows = stmt.query_map(params![id, since], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<f64>>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
                for row in rows {
                    if let (ts, Some(sum), count) = row? {
                        if count > 0 {
                            out.push((id, ts, sum / count as f64));
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}
