//! A read-only connection: the read pool's unit (see `pool`), and in tests a way to look at
//! what the writer stored (the typed row queries below exist only for tests).
//!
//! A [`Reader`] is one SQLite connection (`Send`, not `Sync`), used from blocking context
//! (`spawn_blocking`). WAL mode lets it read a consistent snapshot while the writer commits.
//! `query_only` enforces that it never writes.

use std::path::Path;

#[cfg(test)]
use rusqlite::{params, OptionalExtension};
use rusqlite::{Connection, OpenFlags};

#[cfg(test)]
use crate::store::codec;
use crate::store::{schema, StoreError};

/// One row of `hosts`, with its last committed seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub id: i64,
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub boot_id: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub online: bool,
    pub revoked: bool,
    /// JSON object of operator-assigned labels.
    pub labels: String,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRow {
    pub id: i64,
    pub name: String,
    /// `k="v",...` as produced by `SeriesKey::labels_text`.
    pub labels: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRow {
    pub first_seq: u64,
    pub last_seq: u64,
    pub samples: u64,
    pub from_ts_ms: i64,
    pub to_ts_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub ts_ms: i64,
    /// `gap`, `spool_corruption`, `series_limit`, or a server event's own kind (then
    /// `server` is set).
    pub kind: String,
    pub server: Option<String>,
    /// JSON object.
    pub detail: String,
}

/// One rollup bucket. `min`/`max`/`sum` are NaN when undefined (sum overflowed both ways).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollupRow {
    /// Bucket start, ms since the epoch.
    pub ts: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// Finite samples in the bucket.
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Minute,
    Hour,
}

#[cfg(test)]
impl Tier {
    fn table(self) -> &'static str {
        match self {
            Tier::Minute => "rollup_1m",
            Tier::Hour => "rollup_1h",
        }
    }
}

#[cfg(test)]
fn u64_col(v: i64) -> u64 {
    // Stored from u64 values clamped to i64::MAX, so never negative in practice.
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
fn nan_if_null(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// A read-only connection to the store's database.
pub struct Reader {
    conn: Connection,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens an existing database (never creates one). Read-write flags with `query_only`
    /// rather than SQLITE_OPEN_READ_ONLY, because a read-only handle cannot open a WAL
    /// database whose `-shm` file does not exist yet (e.g. after a clean writer shutdown).
    pub fn open(path: impl AsRef<Path>) -> Result<Reader, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::configure_reader(&conn)?;
        Ok(Reader { conn })
    }

    /// Runs a query function on this read connection.
    pub(crate) fn run<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&self.conn)
    }
}

/// Typed row queries, for tests only (the store's own tests check what the writer stored).
#[cfg(test)]
impl Reader {
    pub fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT h.id, h.agent_id, h.hostname, h.agent_version, h.boot_id, h.first_seen_ms,
                    h.last_seen_ms, h.online, h.revoked, h.labels, coalesce(s.last_seq, 0)
             FROM hosts h LEFT JOIN agent_seq s ON s.host_id = h.id ORDER BY h.agent_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(HostRow {
                    id: r.get(0)?,
                    agent_id: r.get(1)?,
                    hostname: r.get(2)?,
                    agent_version: r.get(3)?,
                    boot_id: r.get(4)?,
                    first_seen_ms: r.get(5)?,
                    last_seen_ms: r.get(6)?,
                    online: r.get(7)?,
                    revoked: r.get(8)?,
                    labels: r.get(9)?,
                    last_seq: u64_col(r.get(10)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The host id of an agent, if it ever registered.
    pub fn host_id(&self, agent_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM hosts WHERE agent_id = ?1")?
            .query_row([agent_id], |r| r.get(0))
            .optional()?)
    }

    /// Last committed seq: `None` for an unknown agent, `Some(0)` before its first batch.
    pub fn last_seq(&self, agent_id: &str) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT coalesce(s.last_seq, 0) FROM hosts h
                 LEFT JOIN agent_seq s ON s.host_id = h.id WHERE h.agent_id = ?1",
            )?
            .query_row([agent_id], |r| r.get(0))
            .optional()?;
        Ok(v.map(u64_col))
    }

    pub fn series(&self, agent_id: &str) -> Result<Vec<SeriesRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.id, s.name, s.labels FROM series s JOIN hosts h ON h.id = s.host_id
             WHERE h.agent_id = ?1 ORDER BY s.name, s.labels",
        )?;
        let rows = stmt
            .query_map([agent_id], |r| {
                Ok(SeriesRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    labels: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Raw samples of one series with `from_ms <= ts <= to_ms`, sorted by time (samples
    /// with equal timestamps keep ingest order).
    pub fn raw_samples(
        &self,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let host: Option<i64> = self
            .conn
            .prepare_cached("SELECT host_id FROM series WHERE id = ?1")?
            .query_row([series_id], |r| r.get(0))
            .optional()?;
        let Some(host) = host else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, data FROM raw
             WHERE host_id = ?1 AND ts_max >= ?2 AND ts_min <= ?3 ORDER BY id",
        )?;
        let mut rows = stmt.query(params![host, from_ms, to_ms])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            codec::decode_each(data, |s, ts, v| {
                if s == series_id && ts >= from_ms && ts <= to_ms {
                    out.push((ts, v));
                }
            })
            .map_err(|e| StoreError::Corrupt {
                row: id,
                reason: e.to_string(),
            })?;
        }
        out.sort_by_key(|&(ts, _)| ts);
        Ok(out)
    }

    /// Samples stored for an agent (sum over its raw rows; shrinks as retention runs).
    pub fn count_samples(&self, agent_id: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT coalesce(sum(r.n), 0) FROM raw r JOIN hosts h ON h.id = r.host_id
                 WHERE h.agent_id = ?1",
            )?
            .query_row([agent_id], |r| r.get(0))?;
        Ok(u64_col(n))
    }

    /// Recorded gaps of an agent, oldest first.
    pub fn gaps(&self, agent_id: &str) -> Result<Vec<GapRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT g.first_seq, g.last_seq, g.samples, g.from_ts, g.to_ts
             FROM gaps g JOIN hosts h ON h.id = g.host_id
             WHERE h.agent_id = ?1 ORDER BY g.from_ts, g.first_seq",
        )?;
        let rows = stmt
            .query_map([agent_id], |r| {
                Ok(GapRow {
                    first_seq: u64_col(r.get(0)?),
                    last_seq: u64_col(r.get(1)?),
                    samples: u64_col(r.get(2)?),
                    from_ts_ms: r.get(3)?,
                    to_ts_ms: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The newest `limit` events of an agent, newest first.
    pub fn events(&self, agent_id: &str, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.id, e.ts_ms, e.kind, e.server, e.detail
             FROM events e JOIN hosts h ON h.id = e.host_id
             WHERE h.agent_id = ?1 ORDER BY e.ts_ms DESC, e.id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![agent_id, limit], |r| {
                Ok(EventRow {
                    id: r.get(0)?,
                    ts_ms: r.get(1)?,
                    kind: r.get(2)?,
                    server: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Rollup buckets of one series with `from_ms <= bucket start <= to_ms`, by time.
    pub fn rollup(
        &self,
        tier: Tier,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let sql = format!(
            "SELECT ts, min, max, sum, count FROM {} WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3
             ORDER BY ts",
            tier.table()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params![series_id, from_ms, to_ms], |r| {
                Ok(RollupRow {
                    ts: r.get(0)?,
                    min: nan_if_null(r.get(1)?),
                    max: nan_if_null(r.get(2)?),
                    sum: nan_if_null(r.get(3)?),
                    count: u64_col(r.get(4)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Samples of an agent not yet folded into the rollups (rollup lag).
    pub fn unrolled_samples(&self, agent_id: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT coalesce(sum(r.n), 0) FROM raw r JOIN hosts h ON h.id = r.host_id
                 LEFT JOIN rollup_wm w ON w.host_id = r.host_id
                 WHERE h.agent_id = ?1 AND r.id > coalesce(w.raw_id, 0)",
            )?
            .query_row([agent_id], |r| r.get(0))?;
        Ok(u64_col(n))
    }
}
