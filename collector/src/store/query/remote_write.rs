//! What remote write reads and writes: the committed raw batches after an endpoint's cursor
//! (with each batch's samples decoded), the labels of the series in them, and the cursor
//! itself. Raw row ids only grow (AUTOINCREMENT, one writer committing in order), so a
//! cursor never skips a committed batch; one that retention deleted first is gone.

use rusqlite::{params, Connection, OptionalExtension};

use super::hosts::sql_limit;
use crate::store::{codec, Store, StoreError};

/// One committed agent batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RawBatch {
    pub id: i64,
    /// Newest sample time in it (ms).
    pub ts_max: i64,
    /// When it was stored (ms); the newest sample time for rows stored before schema v13.
    pub committed_ms: i64,
    /// `(series, ts_ms, value)` in stored order.
    pub samples: Vec<(i64, i64, f64)>,
}

/// Batches after a cursor.
#[derive(Debug, Default)]
pub struct BatchesAfter {
    pub batches: Vec<RawBatch>,
    /// Rows whose blob could not be decoded: skipped (their ids still advance the cursor).
    pub unreadable: Vec<i64>,
    /// The read stopped at its sample or row limit: more may be waiting.
    pub full: bool,
}

/// How far an endpoint has delivered, and how far its last request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteWriteCursor {
    pub delivered: i64,
    /// Above `delivered` only when a crash interrupted a request: that batch is resent alone.
    pub sending_to: i64,
}

/// A series as remote write labels it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesMeta {
    pub id: i64,
    pub agent_id: String,
    pub name: String,
    /// `k="v",...` as stored.
    pub labels: String,
    /// The host's operator labels, JSON object as stored.
    pub host_labels: String,
}

/// Rows read per query at most, whatever their sample counts.
const MAX_ROWS: usize = 4096;

fn batches_after(
    c: &Connection,
    after: i64,
    through: i64,
    max_samples: usize,
) -> Result<BatchesAfter, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, ts_max, n, data, committed_ms FROM raw WHERE id > ?1 AND id <= ?3
         ORDER BY id LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after, sql_limit(MAX_ROWS), through])?;
    let mut out = BatchesAfter::default();
    let mut samples = 0usize;
    let mut read = 0usize;
    while let Some(r) = rows.next()? {
        let n = usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0);
        // Always at least one row, so a batch larger than the cap still goes (alone).
        if read > 0 && samples + n > max_samples {
            out.full = true;
            return Ok(out);
        }
        read += 1;
        let id: i64 = r.get(0)?;
        let ts_max: i64 = r.get(1)?;
        let blob: Vec<u8> = r.get(3)?;
        let committed_ms: i64 = r.get(4)?;
        let mut batch = RawBatch {
            id,
            ts_max,
            committed_ms: if committed_ms > 0 {
                committed_ms
            } else {
                ts_max
            },
            samples: Vec::with_capacity(n),
        };
        match codec::decode_each(&blob, |s, t, v| batch.samples.push((s, t, v))) {
            Ok(_) => {
                samples += batch.samples.len();
                out.batches.push(batch);
            }
            Err(_) => out.unreadable.push(id),
        }
        if samples >= max_samples {
            out.full = true;
            return Ok(out);
        }
    }
    out.full = read == MAX_ROWS;
    Ok(out)
}

fn series_meta(c: &Connection, ids: &[i64]) -> Result<Vec<SeriesMeta>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT s.id, h.agent_id, s.name, s.labels, h.labels FROM series s
         JOIN hosts h ON h.id = s.host_id WHERE s.id = ?1",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = stmt
            .query_row([id], |r| {
                Ok(SeriesMeta {
                    id: r.get(0)?,
                    agent_id: r.get(1)?,
                    name: r.get(2)?,
                    labels: r.get(3)?,
                    host_labels: r.get(4)?,
                })
            })
            .optional()?;
        out.extend(row);
    }
    Ok(out)
}

impl Store {
    /// Committed batches after raw row `after`, in commit order, up to about `max_samples`
    /// samples (at least one batch).
    pub async fn batches_after(
        &self,
        after: i64,
        through: i64,
        max_samples: usize,
    ) -> Result<BatchesAfter, StoreError> {
        self.read(move |c| batches_after(c, after, through, max_samples))
            .await
    }

    /// Labels of the series `ids` (unknown ids are left out).
    pub async fn series_meta(&self, ids: Vec<i64>) -> Result<Vec<SeriesMeta>, StoreError> {
        self.read(move |c| series_meta(c, &ids)).await
    }

    /// The raw row id endpoint `name` has delivered up to, if it has a cursor, and the row
    /// a request in flight reached (at or below the cursor when none was).
    pub async fn remote_write_cursor(
        &self,
        name: String,
    ) -> Result<Option<RemoteWriteCursor>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT raw_id, sending_to FROM remote_write_cursors WHERE endpoint = ?1",
                [name],
                |r| {
                    Ok(RemoteWriteCursor {
                        delivered: r.get(0)?,
                        sending_to: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// Records that endpoint `name` is about to send everything up to raw row `raw_id`.
    pub async fn set_remote_write_sending(
        &self,
        name: String,
        raw_id: i64,
    ) -> Result<(), StoreError> {
        self.exec(move |c| {
            c.execute(
                "UPDATE remote_write_cursors SET sending_to = ?2 WHERE endpoint = ?1",
                params![name, raw_id],
            )?;
            Ok(())
        })
        .await
    }

    /// Records that endpoint `name` has delivered everything up to raw row `raw_id`, and,
    /// when known, the upper row of its next request (`sending_to`).
    pub async fn set_remote_write_cursor(
        &self,
        name: String,
        raw_id: i64,
        sending_to: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.exec(move |c| {
            c.execute(
                "INSERT INTO remote_write_cursors (endpoint, raw_id, updated_ms, sending_to)
                 VALUES (?1, ?2, ?3, coalesce(?4, 0))
                 ON CONFLICT (endpoint) DO UPDATE SET raw_id = excluded.raw_id,
                     updated_ms = excluded.updated_ms,
                     sending_to = coalesce(?4, remote_write_cursors.sending_to)",
                params![name, raw_id, now_ms, sending_to],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use mcpwatch_common::wire::{Sample, SeriesDef};

    #[tokio::test]
    async fn remote_write_reads_batches_after_a_cursor_within_a_sample_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(StoreConfig::new(dir.path().join("c.db"))).unwrap();
        let reg = store
            .register_agent(1, "web-1", "web-1", "1", "boot", 0)
            .await
            .unwrap();
        let defs = vec![SeriesDef {
            id: 0,
            key: mcpwatch_common::wire::SeriesKey::new("m", &[("k", "v")]),
        }];
        for seq in 1..=3u64 {
            let samples: Vec<Sample> = (0..10)
                .map(|i| Sample {
                    series: 0,
                    ts_ms: seq as i64 * 1000 + i,
                    value: i as f64,
                })
                .collect();
            let defs = if seq == 1 { defs.clone() } else { Vec::new() };
            store
                .ingest(crate::store::IngestBatch {
                    conn: 1,
                    host_id: reg.host_id,
                    seq,
                    new_series: defs,
                    samples,
                    events: Vec::new(),
                    received: std::time::Instant::now(),
                })
                .await
                .unwrap();
        }
        let all = store.batches_after(0, i64::MAX, 1000).await.unwrap();
        assert_eq!(all.batches.len(), 3);
        assert!(!all.full);
        // 15 samples of budget: the second batch would pass it, so one batch, and "full".
        let some = store.batches_after(0, i64::MAX, 15).await.unwrap();
        assert_eq!(some.batches.len(), 1);
        assert!(some.full);
        // A budget below one batch still reads one.
        let one = store
            .batches_after(some.batches[0].id, i64::MAX, 1)
            .await
            .unwrap();
        assert_eq!(one.batches.len(), 1);
        assert_eq!(one.batches[0].samples[0].1, 2000);
        // An upper bound: a resend reads only the rows its interrupted request held.
        let first = all.batches[0].id;
        let bounded = store.batches_after(0, first, 1000).await.unwrap();
        assert_eq!(bounded.batches.len(), 1);
        assert!(!bounded.full);
        let meta = store
            .series_meta(vec![one.batches[0].samples[0].0, 999])
            .await
            .unwrap();
        assert_eq!(meta.len(), 1);
        assert_eq!(
            (meta[0].agent_id.as_str(), meta[0].name.as_str()),
            ("web-1", "m")
        );
        assert_eq!(store.remote_write_cursor("vm".into()).await.unwrap(), None);
        store
            .set_remote_write_cursor("vm".into(), 2, None, 5)
            .await
            .unwrap();
        store
            .set_remote_write_cursor("vm".into(), 3, None, 6)
            .await
            .unwrap();
        store
            .set_remote_write_sending("vm".into(), 9)
            .await
            .unwrap();
        assert_eq!(
            store.remote_write_cursor("vm".into()).await.unwrap(),
            Some(RemoteWriteCursor {
                delivered: 3,
                sending_to: 9
            })
        );
        // A cursor with the next request's bound in one write; without one, the old stays.
        store
            .set_remote_write_cursor("vm".into(), 9, Some(12), 7)
            .await
            .unwrap();
        store
            .set_remote_write_cursor("vm".into(), 12, None, 8)
            .await
            .unwrap();
        assert_eq!(
            store.remote_write_cursor("vm".into()).await.unwrap(),
            Some(RemoteWriteCursor {
                delivered: 12,
                sending_to: 12
            })
        );
        drop(store);
        writer.join().unwrap();
    }
}
