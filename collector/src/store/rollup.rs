//! 1-minute and 1-hour rollups, folded from raw rows in ingest order, per host.
//!
//! Each host has a watermark on `raw.id` (table `rollup_wm`) marking the rows already
//! folded. One step reads a host's next rows past it, aggregates them in memory, UPSERTs
//! (merging min/max/sum/count) into both tiers and advances the watermark, all in one
//! transaction: each raw row is counted exactly once, even across crashes. Late data
//! (replayed from an agent's spool hours later) simply arrives as new raw rows and merges
//! into the old buckets.
//!
//! Why per host rather than one global watermark: the cost of a step is dominated by the
//! UPSERTs, one per distinct (series, bucket). Rows in global id order interleave hosts,
//! so a bounded step holds about one scrape per series and pays ~2 UPSERTs per sample. A
//! host's rows folded after they have accumulated for [`RIPE_AGE`] hold ~30 scrapes per
//! series, so the same work needs ~30× fewer UPSERTs. The writer tells [`Rollup`] about
//! every committed row, so choosing which host is ripe needs no query.
//!
//! Only finite values are aggregated: NaN cannot be stored in SQLite (it becomes NULL) and
//! an infinity would poison the sum; raw storage keeps them bit-exact.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{codec, StoreError};

pub(crate) const MINUTE_MS: i64 = 60_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// A host's unfolded rows are folded once the oldest has waited this long...
const RIPE_AGE: Duration = Duration::from_secs(30);
/// ...or once this many samples are waiting, whichever comes first.
const RIPE_SAMPLES: u64 = 100_000;
/// Bounds of one step (one transaction): samples read, distinct 1-minute buckets, rows.
const STEP_SAMPLES: u64 = 200_000;
const STEP_BUCKETS: usize = 50_000;
const STEP_ROWS: i64 = 4096;

/// What one or more steps did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RollupStep {
    pub rows: u64,
    pub samples: u64,
    pub corrupt: u64,
}

/// Unfolded work of one host, as known from commits (the database stays the truth).
#[derive(Debug, Clone, Copy)]
struct Pending {
    since: Instant,
    samples: u64,
}

/// Which hosts have unfolded raw rows, and since when.
#[derive(Debug, Default)]
pub(crate) struct Rollup {
    pending: HashMap<i64, Pending>,
}

#[derive(Debug, Clone, Copy)]
struct Agg {
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
}

impl Agg {
    fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
    }
}

type Aggs = HashMap<(i64, i64), Agg>;

fn fold(map: &mut Aggs, series: i64, bucket: i64, v: f64) {
    map.entry((series, bucket))
        .and_modify(|a| a.add(v))
        .or_insert(Agg {
            min: v,
            max: v,
            sum: v,
            count: 1,
        });
}

/// Start of the bucket of width `w` holding `ts` (floor, also for negative ts; saturates
/// instead of overflowing for absurd timestamps).
pub(crate) fn bucket(ts: i64, w: i64) -> i64 {
    ts.saturating_sub(ts.rem_euclid(w))
}

/// The host's watermark: highest raw.id already folded (0 if none).
pub(crate) fn watermark(c: &Connection, host_id: i64) -> Result<i64, StoreError> {
    Ok(
        c.prepare_cached("SELECT raw_id FROM rollup_wm WHERE host_id = ?1")?
            .query_row([host_id], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    )
}

impl Rollup {
    /// Finds work left by a previous run; it counts as ripe at once.
    pub(crate) fn load(c: &Connection) -> Result<Rollup, StoreError> {
        let mut stmt = c.prepare(
            "SELECT r.host_id, sum(r.n) FROM raw r LEFT JOIN rollup_wm w ON w.host_id = r.host_id
             WHERE r.id > coalesce(w.raw_id, 0) GROUP BY r.host_id",
        )?;
        let old = Instant::now()
            .checked_sub(RIPE_AGE)
            .unwrap_or_else(Instant::now);
        let pending = stmt
            .query_map([], |r| {
                let samples: i64 = r.get(1)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    Pending {
                        since: old,
                        samples: u64::try_from(samples).unwrap_or(0),
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(Rollup { pending })
    }

    /// Records a committed raw row of `samples` samples for `host_id`.
    pub(crate) fn note(&mut self, host_id: i64, samples: u64) {
        self.pending
            .entry(host_id)
            .or_insert(Pending {
                since: Instant::now(),
                samples: 0,
            })
            .samples += samples;
    }

    /// Hosts to fold now, oldest first; with `all`, every host with pending rows.
    pub(crate) fn ripe(&self, all: bool) -> Vec<i64> {
        let mut hosts: Vec<(Instant, i64)> = self
            .pending
            .iter()
            .filter(|(_, p)| all || p.samples >= RIPE_SAMPLES || p.since.elapsed() >= RIPE_AGE)
            .map(|(&h, p)| (p.since, h))
            .collect();
        hosts.sort_unstable();
        hosts.into_iter().map(|(_, h)| h).collect()
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Folds one bounded chunk of `host_id`'s unfolded rows. Returns what it did and
    /// whether rows remain for that host.
    pub(crate) fn step(
        &mut self,
        conn: &mut Connection,
        host_id: i64,
    ) -> Result<(RollupStep, bool), StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let wm = watermark(&tx, host_id)?;
        let mut out = RollupStep::default();
        let mut last_id = wm;
        let mut more = false;
        let mut minutes = Aggs::new();
        let mut hours = Aggs::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, data FROM raw WHERE host_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![host_id, wm, STEP_ROWS])?;
            let mut fetched = 0i64;
            while let Some(row) = rows.next()? {
                fetched += 1;
                let id: i64 = row.get(0)?;
                let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                last_id = id;
                out.rows += 1;
                // Decode fully before folding so a corrupt blob contributes nothing.
                match codec::decode(data) {
                    Ok(samples) => {
                        out.samples += samples.len() as u64;
                        for (series, ts, v) in samples {
                            if v.is_finite() {
                                fold(&mut minutes, series, bucket(ts, MINUTE_MS), v);
                                fold(&mut hours, series, bucket(ts, HOUR_MS), v);
                            }
                        }
                    }
                    Err(e) => {
                        // Skipping keeps the rollup from stalling forever on one bad row.
                        tracing::error!(raw_id = id, error = %e, "corrupt raw blob skipped by rollup");
                        out.corrupt += 1;
                    }
                }
                if out.samples >= STEP_SAMPLES || minutes.len() >= STEP_BUCKETS {
                    more = true;
                    break;
                }
            }
            if fetched == STEP_ROWS {
                more = true;
            }
        }
        if last_id > wm {
            upsert(&tx, "rollup_1m", minutes)?;
            upsert(&tx, "rollup_1h", hours)?;
            tx.prepare_cached(
                "INSERT INTO rollup_wm (host_id, raw_id) VALUES (?1, ?2)
                 ON CONFLICT (host_id) DO UPDATE SET raw_id = excluded.raw_id",
            )?
            .execute(params![host_id, last_id])?;
            tx.commit()?;
        }
        if more {
            if let Some(p) = self.pending.get_mut(&host_id) {
                p.samples = p.samples.saturating_sub(out.samples);
            }
        } else {
            self.pending.remove(&host_id);
        }
        Ok((out, more))
    }
}

/// Merges aggregates into a tier table. `table` is one of two constants, never input.
fn upsert(c: &Connection, table: &str, aggs: Aggs) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO {table} (series_id, ts, min, max, sum, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (series_id, ts) DO UPDATE SET
             min = min({table}.min, excluded.min),
             max = max({table}.max, excluded.max),
             sum = {table}.sum + excluded.sum,
             count = {table}.count + excluded.count"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    // Primary-key order keeps the B-tree writes local.
    let mut aggs: Vec<((i64, i64), Agg)> = aggs.into_iter().collect();
    aggs.sort_unstable_by_key(|(k, _)| *k);
    for ((series, ts), a) in aggs {
        stmt.execute(params![series, ts, a.min, a.max, a.sum, a.count])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_rollup_buckets_floor_negative_and_extreme_timestamps() {
        assert_eq!(bucket(59_999, MINUTE_MS), 0);
        assert_eq!(bucket(60_000, MINUTE_MS), 60_000);
        assert_eq!(bucket(-1, MINUTE_MS), -60_000);
        assert_eq!(bucket(i64::MIN, MINUTE_MS), i64::MIN);
        assert!(bucket(i64::MAX, HOUR_MS) > i64::MAX - HOUR_MS);
    }

    #[test]
    fn store_rollup_ripeness_follows_age_and_volume() {
        let mut r = Rollup::default();
        r.note(1, 10);
        r.note(2, RIPE_SAMPLES);
        assert_eq!(r.ripe(false), vec![2]);
        let mut both = r.ripe(true);
        both.sort_unstable();
        assert_eq!(both, vec![1, 2]);
    }
}
