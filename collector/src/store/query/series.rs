//! Series and their samples as the API reads them: series lists, the latest value of each
//! series, and ranges over raw samples or the rollup tiers (for `query_range`, the servers
//! view and `/federate`).
//!
//! Samples live in one compressed BLOB per batch (see `codec`), so "the latest value of a
//! series" and "a series over a time range" both mean decoding the blobs of the right rows:
//! rows are chosen by host and time through the `raw_host_ts` / `raw_ts` indexes. Ranges on
//! the rollup tiers add the raw rows not yet folded into them (past the host's rollup
//! watermark) inside the same read transaction, so a range is exact up to the newest sample.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, Connection};

use super::hosts::{host_condition, sql_limit, SCAN_CHUNK};
use crate::store::rollup::{self, HOUR_MS, MINUTE_MS};
use crate::store::{codec, Store, StoreError};

/// One series with the agent it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRecord {
    pub id: i64,
    pub host_id: i64,
    pub agent_id: String,
    pub name: String,
    /// `k="v",...` as stored.
    pub labels: String,
}

fn series_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SeriesRecord> {
    Ok(SeriesRecord {
        id: r.get(0)?,
        host_id: r.get(1)?,
        agent_id: r.get(2)?,
        name: r.get(3)?,
        labels: r.get(4)?,
    })
}

/// Series with `id > after` in id order, of the given hosts (`None`: all) and metric name
/// (`None`: any), keeping those `keep` accepts, until `limit + 1` are found.
fn series_scan(
    c: &Connection,
    hosts: Option<&[i64]>,
    name: Option<&str>,
    after: i64,
    limit: usize,
    mut keep: impl FnMut(&SeriesRecord) -> bool,
) -> Result<Vec<SeriesRecord>, StoreError> {
    if hosts.is_some_and(<[i64]>::is_empty) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT s.id, s.host_id, h.agent_id, s.name, s.labels FROM series s
         JOIN hosts h ON h.id = s.host_id
         WHERE {} AND (?1 IS NULL OR s.name = ?1) AND s.id > ?2 ORDER BY s.id LIMIT ?3",
        host_condition("s.host_id", hosts)
    );
    let mut stmt = c.prepare(&sql)?;
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let rows: Vec<SeriesRecord> = stmt
            .query_map(
                params![name, cursor, sql_limit(SCAN_CHUNK)],
                series_from_row,
            )?
            .collect::<Result<_, _>>()?;
        let full = rows.len() == SCAN_CHUNK;
        for s in rows {
            cursor = s.id;
            if keep(&s) {
                out.push(s);
                if out.len() > limit {
                    return Ok(out);
                }
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Series of one host whose name is `name`, or starts with `prefix` when `prefix` is true.
pub(super) fn host_series(
    c: &Connection,
    host_id: i64,
    name: &str,
    prefix: bool,
) -> Result<Vec<SeriesRecord>, StoreError> {
    // A prefix as a range on the (host_id, name, labels) index: every name starting with
    // `name` sorts in [name, name + U+10FFFF).
    let upper = if prefix {
        format!("{name}\u{10FFFF}")
    } else {
        name.to_owned()
    };
    Ok(c.prepare_cached(
        "SELECT s.id, s.host_id, h.agent_id, s.name, s.labels FROM series s
         JOIN hosts h ON h.id = s.host_id
         WHERE s.host_id = ?1 AND s.name >= ?2 AND s.name <= ?3 ORDER BY s.name, s.labels",
    )?
    .query_map(params![host_id, name, upper], series_from_row)?
    .collect::<Result<_, _>>()?)
}

/// Every series of the fleet with the agent it belongs to.
fn all_series(c: &Connection) -> Result<Vec<SeriesRecord>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT s.id, s.host_id, h.agent_id, s.name, s.labels FROM series s
         JOIN hosts h ON h.id = s.host_id ORDER BY s.name, h.agent_id, s.labels",
    )?
    .query_map([], series_from_row)?
    .collect::<Result<_, _>>()?)
}

/// The newest sample time stored raw for a host.
pub(super) fn newest_raw_ts(c: &Connection, host_id: i64) -> Result<Option<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT max(ts_max) FROM raw WHERE host_id = ?1")?
            .query_row([host_id], |r| r.get(0))?,
    )
}

fn corrupt(row: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        row,
        reason: e.to_string(),
    }
}

/// The newest sample `(ts_ms, value)` of each series `want` accepts, among samples with
/// `since_ms <= ts <= until_ms`, of one host or (`None`) all hosts. Equal timestamps keep
/// the later-ingested value.
pub(super) fn latest_samples(
    c: &Connection,
    host_id: Option<i64>,
    since_ms: i64,
    until_ms: i64,
    mut want: impl FnMut(i64) -> bool,
) -> Result<HashMap<i64, (i64, f64)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, data FROM raw
         WHERE (?1 IS NULL OR host_id = ?1) AND ts_max >= ?2 AND ts_min <= ?3 ORDER BY id",
    )?;
    let mut rows = stmt.query(params![host_id, since_ms, until_ms])?;
    let mut out: HashMap<i64, (i64, f64)> = HashMap::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        let decoded = codec::decode_each(data, |s, ts, v| {
            if ts < since_ms || ts > until_ms || !want(s) {
                return;
            }
            match out.get_mut(&s) {
                Some(cur) if cur.0 > ts => {}
                Some(cur) => *cur = (ts, v),
                None => {
                    out.insert(s, (ts, v));
                }
            }
        });
        if let Err(e) = decoded {
            // One unreadable row must not hide every other series; the store's own
            // maintenance counts corrupt rows.
            tracing::warn!(error = %corrupt(id, e), "skipping a corrupt raw row");
        }
    }
    Ok(out)
}

/// Where a range is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeTier {
    Raw,
    Minute,
    Hour,
}

impl RangeTier {
    pub fn as_str(self) -> &'static str {
        match self {
            RangeTier::Raw => "raw",
            RangeTier::Minute => "1m",
            RangeTier::Hour => "1h",
        }
    }

    /// Bucket width of the tier (0 for raw).
    pub fn width_ms(self) -> i64 {
        match self {
            RangeTier::Raw => 0,
            RangeTier::Minute => MINUTE_MS,
            RangeTier::Hour => HOUR_MS,
        }
    }
}

/// The oldest data each tier holds for a set of series (`None`: nothing stored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierFloors {
    /// The oldest raw sample time of the host (the smallest `ts_min` among its oldest rows).
    pub raw_oldest: Option<i64>,
    /// Raw data is complete from here on: retention deletes whole rows whose newest sample
    /// is older than its cutoff, so everything from the oldest remaining row's `ts_max` on
    /// is still there.
    pub raw_complete: Option<i64>,
    /// The oldest 1-minute bucket of the series.
    pub minute: Option<i64>,
    /// The oldest 1-hour bucket of the series.
    pub hour: Option<i64>,
}

/// Rows looked at to find a host's oldest raw sample (rows are ordered by their newest
/// sample, so a long batch replayed late may hold an older one further on).
const OLDEST_ROWS: i64 = 16;

/// The oldest data of the host's raw rows and of the series' rollup buckets.
fn tier_floors(c: &Connection, host_id: i64, series: &[i64]) -> Result<TierFloors, StoreError> {
    let (raw_oldest, raw_complete): (Option<i64>, Option<i64>) = c
        .prepare_cached(
            "SELECT min(ts_min), min(ts_max) FROM
                 (SELECT ts_min, ts_max FROM raw WHERE host_id = ?1 ORDER BY ts_max LIMIT ?2)",
        )?
        .query_row(params![host_id, OLDEST_ROWS], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut floors = TierFloors {
        raw_oldest,
        raw_complete,
        minute: None,
        hour: None,
    };
    for &s in series {
        let m: Option<i64> = c
            .prepare_cached("SELECT min(ts) FROM rollup_1m WHERE series_id = ?1")?
            .query_row([s], |r| r.get(0))?;
        let h: Option<i64> = c
            .prepare_cached("SELECT min(ts) FROM rollup_1h WHERE series_id = ?1")?
            .query_row([s], |r| r.get(0))?;
        floors.minute = min_opt(floors.minute, m);
        floors.hour = min_opt(floors.hour, h);
    }
    Ok(floors)
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Aggregate of the samples in one step bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepAgg {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// Finite samples aggregated.
    pub count: u64,
}

impl StepAgg {
    fn merge(&mut self, min: f64, max: f64, sum: f64, count: u64) {
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        self.sum += sum;
        self.count += count;
    }

    /// The mean, NaN when undefined.
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// A range query: samples with `start_ms <= ts <= end_ms` aggregated into buckets
/// `[start + k·step, start + (k+1)·step)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSpec {
    pub host_id: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    pub tier: RangeTier,
}

/// Per series, the non-empty step buckets (key: the bucket's index `k`).
pub type RangeResult = HashMap<i64, BTreeMap<i64, StepAgg>>;

/// Reads a range of the given series of one host from `spec.tier`, in one read transaction.
/// Only finite values are aggregated (as in the rollups). On the rollup tiers a bucket
/// counts when its start lies in the range or it overlaps the range's start; raw rows not
/// yet folded into the rollups are added from the raw table.
fn range(c: &Connection, spec: &RangeSpec, series: &[i64]) -> Result<RangeResult, StoreError> {
    if spec.step_ms <= 0 || spec.end_ms < spec.start_ms {
        return Err(StoreError::Invalid(
            "range needs step > 0 and start <= end".into(),
        ));
    }
    let tx = c.unchecked_transaction()?;
    let mut out: RangeResult = series.iter().map(|&s| (s, BTreeMap::new())).collect();
    let index = |ts: i64| (ts.max(spec.start_ms) - spec.start_ms) / spec.step_ms;
    let add = |out: &mut RangeResult, s: i64, k: i64, min: f64, max: f64, sum: f64, n: u64| {
        if let Some(buckets) = out.get_mut(&s) {
            buckets
                .entry(k)
                .and_modify(|a| a.merge(min, max, sum, n))
                .or_insert(StepAgg {
                    min,
                    max,
                    sum,
                    count: n,
                });
        }
    };
    let table = match spec.tier {
        RangeTier::Raw => None,
        RangeTier::Minute => Some("rollup_1m"),
        RangeTier::Hour => Some("rollup_1h"),
    };
    let mut raw_after = 0;
    if let Some(table) = table {
        let w = spec.tier.width_ms();
        let first = rollup::bucket(spec.start_ms, w);
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT ts, min, max, sum, count FROM {table}
             WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 ORDER BY ts"
        ))?;
        for &s in series {
            let mut rows = stmt.query(params![s, first, spec.end_ms])?;
            while let Some(r) = rows.next()? {
                let ts: i64 = r.get(0)?;
                let n: i64 = r.get(4)?;
                let n = u64::try_from(n).unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let min = r.get::<_, Option<f64>>(1)?.unwrap_or(f64::NAN);
                let max = r.get::<_, Option<f64>>(2)?.unwrap_or(f64::NAN);
                let sum = r.get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN);
                add(&mut out, s, index(ts), min, max, sum, n);
            }
        }
        raw_after = rollup::watermark(&tx, spec.host_id)?;
    }
    let mut stmt = tx.prepare_cached(
        "SELECT id, data FROM raw
         WHERE host_id = ?1 AND ts_max >= ?2 AND ts_min <= ?3 AND id > ?4 ORDER BY id",
    )?;
    let mut rows = stmt.query(params![spec.host_id, spec.start_ms, spec.end_ms, raw_after])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        let decoded = codec::decode_each(data, |s, ts, v| {
            if ts < spec.start_ms || ts > spec.end_ms || !v.is_finite() {
                return;
            }
            add(&mut out, s, index(ts), v, v, v, 1);
        });
        if let Err(e) = decoded {
            tracing::warn!(error = %corrupt(id, e), "skipping a corrupt raw row");
        }
    }
    drop(rows);
    drop(stmt);
    tx.finish()?;
    Ok(out)
}

impl Store {
    /// Series with `id > after` (of `hosts`, or every host; of one metric `name` or all), in
    /// id order, that `keep` accepts: up to `limit + 1`.
    pub async fn series_page(
        &self,
        hosts: Option<Vec<i64>>,
        name: Option<String>,
        after: i64,
        limit: usize,
        keep: impl FnMut(&SeriesRecord) -> bool + Send + 'static,
    ) -> Result<Vec<SeriesRecord>, StoreError> {
        self.read(move |c| series_scan(c, hosts.as_deref(), name.as_deref(), after, limit, keep))
            .await
    }

    /// The series of one host named `name` (or, with `prefix`, starting with it).
    pub async fn host_series(
        &self,
        host_id: i64,
        name: String,
        prefix: bool,
    ) -> Result<Vec<SeriesRecord>, StoreError> {
        self.read(move |c| host_series(c, host_id, &name, prefix))
            .await
    }

    /// How far back each tier holds data for these series of the host.
    pub async fn tier_floors(
        &self,
        host_id: i64,
        series: Vec<i64>,
    ) -> Result<TierFloors, StoreError> {
        self.read(move |c| tier_floors(c, host_id, &series)).await
    }

    /// The series over `spec`'s range, aggregated per step.
    pub async fn series_range(
        &self,
        spec: RangeSpec,
        series: Vec<i64>,
    ) -> Result<RangeResult, StoreError> {
        self.read(move |c| range(c, &spec, &series)).await
    }

    /// Every series of every host with its latest sample between `since_ms` and
    /// `until_ms` (no series at all when no series has one), for `/federate`.
    pub async fn fresh_series(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<(Vec<SeriesRecord>, HashMap<i64, (i64, f64)>), StoreError> {
        self.read(move |c| {
            let latest = latest_samples(c, None, since_ms, until_ms, |_| true)?;
            let series = if latest.is_empty() {
                Vec::new()
            } else {
                all_series(c)?
            };
            Ok((series, latest))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use mcpwatch_common::wire::{Event, Sample, SeriesDef, SeriesKey};

    use super::*;
    use crate::store::query::events::{
        event_servers, events_page, latest_event_of_kinds, EventFilter,
    };
    use crate::store::{IngestBatch, Reader, Store, StoreConfig};

    const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;

    fn batch(host_id: i64, seq: u64, defs: Vec<SeriesDef>, samples: Vec<Sample>) -> IngestBatch {
        IngestBatch {
            conn: 1,
            host_id,
            seq,
            new_series: defs,
            samples,
            events: Vec::new(),
            received: Instant::now(),
        }
    }

    fn sample(series: u32, ts_ms: i64, value: f64) -> Sample {
        Sample {
            series,
            ts_ms,
            value,
        }
    }

    #[tokio::test]
    async fn api_hosts_range_is_the_same_on_every_tier_and_before_and_after_folding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (store, thread) = Store::open(StoreConfig::new(&path)).unwrap();
        let s = store
            .register_agent(1, "h1", "h1.local", "0.1", "b", T0)
            .await
            .unwrap();
        // One sample every 10 s for 3 h: value = minute index (so each minute is constant).
        let defs = vec![SeriesDef {
            id: 0,
            key: SeriesKey::new("m", &[("k", "v")]),
        }];
        let mut seq = 1;
        let mut first = Some(defs);
        for chunk in 0..18 {
            let samples = (0..60)
                .map(|i| {
                    let ts = T0 + (chunk * 60 + i) * 10_000;
                    sample(0, ts, ((ts - T0) / MINUTE_MS) as f64)
                })
                .collect();
            store
                .ingest(batch(
                    s.host_id,
                    seq,
                    first.take().unwrap_or_default(),
                    samples,
                ))
                .await
                .unwrap();
            seq += 1;
        }
        let mut b = batch(
            s.host_id,
            seq,
            Vec::new(),
            vec![sample(0, T0 + 5, f64::NAN)],
        );
        b.events = vec![Event::Server {
            ts_ms: T0,
            server: "srv".into(),
            kind: "started".into(),
            detail: "x".into(),
        }];
        store.ingest(b).await.unwrap();
        let r = Reader::open(&path).unwrap();
        let sid = r.series("h1").unwrap()[0].id;
        let spec = |tier| RangeSpec {
            host_id: s.host_id,
            start_ms: T0,
            end_ms: T0 + 3 * HOUR_MS - 1,
            step_ms: HOUR_MS,
            tier,
        };
        let before: Vec<RangeResult> = [RangeTier::Raw, RangeTier::Minute, RangeTier::Hour]
            .into_iter()
            .map(|t| r.run(|c| range(c, &spec(t), &[sid])).unwrap())
            .collect();
        store.maintain(T0 + 4 * HOUR_MS).await.unwrap();
        let after: Vec<RangeResult> = [RangeTier::Raw, RangeTier::Minute, RangeTier::Hour]
            .into_iter()
            .map(|t| r.run(|c| range(c, &spec(t), &[sid])).unwrap())
            .collect();
        for got in before.iter().chain(&after) {
            let buckets = &got[&sid];
            assert_eq!(buckets.len(), 3, "{got:?}");
            for (k, a) in buckets {
                assert_eq!(a.count, 360, "the NaN sample is not aggregated");
                assert_eq!(a.min, (k * 60) as f64);
                assert_eq!(a.max, (k * 60 + 59) as f64);
                assert_eq!(a.avg(), *k as f64 * 60.0 + 29.5);
            }
        }
        let floors = r.run(|c| tier_floors(c, s.host_id, &[sid])).unwrap();
        assert_eq!(floors.minute, Some(T0));
        assert_eq!(floors.hour, Some(T0));
        assert_eq!(floors.raw_oldest, Some(T0));
        assert_eq!(floors.raw_complete, Some(T0 + 5), "the NaN batch");

        // Latest samples: the newest finite one and the NaN after it.
        let latest = r
            .run(|c| latest_samples(c, Some(s.host_id), T0, T0 + 4 * HOUR_MS, |_| true))
            .unwrap();
        let (ts, v) = latest[&sid];
        assert_eq!(ts, T0 + (18 * 60 - 1) * 10_000);
        assert_eq!(v, 179.0);
        assert_eq!(
            r.run(|c| event_servers(c, s.host_id)).unwrap(),
            vec!["srv".to_owned()]
        );
        let ev = r
            .run(|c| latest_event_of_kinds(c, s.host_id, "srv", &["started", "exited"]))
            .unwrap();
        assert_eq!(ev, Some((T0, "started".to_owned())));
        let found = r
            .run(|c| host_series(c, s.host_id, "m", true))
            .unwrap()
            .len();
        assert_eq!(found, 1);
        let page = r
            .run(|c| events_page(c, &EventFilter::default(), 10))
            .unwrap();
        assert_eq!(page.len(), 1);
        drop(store);
        thread.join().unwrap();
    }
}
