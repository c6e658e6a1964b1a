//! A host's raw samples of chosen series over a time range, handed one by one to the
//! caller's fold instead of being collected: figures over long ranges (counter increases,
//! histogram buckets) then cost memory per series, not per sample. Samples come in the
//! order they were committed, which for one series is time order (a blob holds each
//! series' samples by time, and an agent's batches are committed in seq order).

use std::collections::HashSet;

use rusqlite::params;

use crate::store::{codec, Store, StoreError};

impl Store {
    /// Folds `f(&mut acc, series_id, ts_ms, value)` over the raw samples of `series` (of
    /// host `host_id`) with `since_ms <= ts <= until_ms`, in one read transaction. A
    /// corrupt row is skipped with a warning, as in the other raw reads.
    pub async fn fold_samples<A, F>(
        &self,
        host_id: i64,
        series: HashSet<i64>,
        since_ms: i64,
        until_ms: i64,
        init: A,
        mut f: F,
    ) -> Result<A, StoreError>
    where
        A: Send + 'static,
        F: FnMut(&mut A, i64, i64, f64) + Send + 'static,
    {
        self.read(move |c| {
            let mut acc = init;
            if series.is_empty() || until_ms < since_ms {
                return Ok(acc);
            }
            let tx = c.unchecked_transaction()?;
            let mut stmt = tx.prepare_cached(
                "SELECT id, data FROM raw
                 WHERE host_id = ?1 AND ts_max >= ?2 AND ts_min <= ?3 ORDER BY id",
            )?;
            let mut rows = stmt.query(params![host_id, since_ms, until_ms])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                let decoded = codec::decode_each(data, |s, ts, v| {
                    if (since_ms..=until_ms).contains(&ts) && series.contains(&s) {
                        f(&mut acc, s, ts, v);
                    }
                });
                if let Err(e) = decoded {
                    tracing::warn!(row = id, error = %e, "skipping a corrupt raw row");
                }
            }
            drop(rows);
            drop(stmt);
            tx.finish()?;
            Ok(acc)
        })
        .await
    }
}
