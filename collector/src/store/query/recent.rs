//! What a rule's dry run reads when the alert engine's window does not hold its metrics:
//! the recent raw samples of chosen metrics across the fleet, and the metric names a
//! `__name__` pattern is matched against.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, Connection};

use crate::store::{codec, Store, StoreError};

/// One series' recent raw samples, for a dry run.
#[derive(Debug, Clone)]
pub struct RecentSeries {
    pub metric: String,
    /// The series labels plus `host` (its agent id).
    pub labels: BTreeMap<String, String>,
    /// `(ts_ms, value)` by time, one per millisecond.
    pub samples: Vec<(i64, f64)>,
}

/// The raw samples of `metrics` (every host) from `since_ms` to `until_ms` + 1 min: what a
/// dry run evaluates when the writer's window does not hold those metrics. Series carry
/// their labels plus `host`, as in the window.
fn recent_samples(
    c: &Connection,
    metrics: &[String],
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<RecentSeries>, StoreError> {
    let mut names: HashMap<i64, (String, BTreeMap<String, String>)> = HashMap::new();
    for m in metrics {
        crate::store::hook::each_series(c, Some(m), |id, name, pairs, host| {
            let mut labels: BTreeMap<String, String> = pairs.iter().cloned().collect();
            labels.insert("host".into(), host.to_owned());
            names.insert(id, (name.to_owned(), labels));
        })?;
    }
    let mut out = Vec::new();
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
        out.push(RecentSeries {
            metric: name,
            labels,
            samples: dedup,
        });
    }
    Ok(out)
}

impl Store {
    /// Every metric name stored, at most `limit` (the dry run of a `__name__` selector).
    pub async fn metric_names(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT DISTINCT name FROM series LIMIT ?1")?;
            let names = stmt.query_map([limit as i64], |r| r.get(0))?;
            Ok(names.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The raw samples of `metrics` (every host) from `since_ms` to `until_ms` + 1 min.
    pub async fn recent_samples(
        &self,
        metrics: Vec<String>,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<RecentSeries>, StoreError> {
        self.read(move |c| recent_samples(c, &metrics, since_ms, until_ms))
            .await
    }
}
