//! The writer's plug-in interface. Something that must change state in the same transaction
//! as the samples that caused it (the alerting runtime) implements [`WriterHook`]; the
//! writer owns it and calls it at fixed points of every group and tick. Its own requests
//! (changes made on behalf of API callers or workers) reach the same transaction through
//! [`super::Store::exec`].
//!
//! Also here: the two reads of the store's own tables a hook needs to warm up after a
//! start or a rollback (every series, recent raw samples), so the hook never has to know
//! how series and samples are stored.

use rusqlite::Connection;

use super::{codec, StoreError};

/// Called by the writer thread, in this order per group: `declare` / `observe` for every
/// committed batch, `before_commit` on the open group transaction, then `committed` or
/// `rolled_back`. Every second `tick` runs in a transaction of its own.
pub trait WriterHook: Send {
    /// An agent declared series `series` (database id) of host `host` (its agent id).
    fn declare(&mut self, series: i64, host: &str, name: &str, labels: &[(String, String)]);

    /// The samples one batch of the open group wrote, as `(series, ts_ms, value)`: one call
    /// per batch, because this sits on the per-sample path.
    fn observe(&mut self, samples: &[(i64, i64, f64)], now_ms: i64);

    /// The group's requests have run; writes made on `tx` commit with them. An error
    /// rolls back the whole group (then `rolled_back` follows).
    fn before_commit(&mut self, tx: &Connection, now_ms: i64) -> Result<(), StoreError>;

    /// The periodic run, in its own transaction; an error rolls it back and is followed by
    /// `tick_failed`.
    fn tick(&mut self, tx: &Connection, now_ms: i64) -> Result<(), StoreError>;

    /// The transaction of the last group or tick committed.
    fn committed(&mut self);

    /// The group's transaction rolled back: memory may be ahead of the database. `conn`
    /// is outside any transaction.
    fn rolled_back(&mut self, conn: &Connection, now_ms: i64);

    /// The tick's transaction rolled back (`conn` is outside any transaction).
    fn tick_failed(&mut self, conn: &Connection, now_ms: i64);
}

/// A store without a runtime plugged in (tools, tests, benchmarks).
pub struct NoHook;

impl WriterHook for NoHook {
    fn declare(&mut self, _: i64, _: &str, _: &str, _: &[(String, String)]) {}
    fn observe(&mut self, _: &[(i64, i64, f64)], _: i64) {}
    fn before_commit(&mut self, _: &Connection, _: i64) -> Result<(), StoreError> {
        Ok(())
    }
    fn tick(&mut self, _: &Connection, _: i64) -> Result<(), StoreError> {
        Ok(())
    }
    fn committed(&mut self) {}
    fn rolled_back(&mut self, _: &Connection, _: i64) {}
    fn tick_failed(&mut self, _: &Connection, _: i64) {}
}

/// Every stored series (or only those named `name`) as (id, name, label pairs, host agent
/// id); series whose labels do not parse are skipped. The one reader of series with their
/// host: the alerting runtime's warm-up and the API's dry runs both use it.
pub fn each_series(
    c: &Connection,
    name: Option<&str>,
    mut f: impl FnMut(i64, &str, &[(String, String)], &str),
) -> Result<(), StoreError> {
    const ALL: &str =
        "SELECT s.id, s.name, s.labels, h.agent_id FROM series s JOIN hosts h ON h.id = s.host_id";
    // A separate statement per case, so the named one can use the index on `name`.
    let mut stmt = match name {
        None => c.prepare_cached(ALL)?,
        Some(_) => c.prepare_cached(&format!("{ALL} WHERE s.name = ?1"))?,
    };
    let map = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    };
    let rows = match name {
        None => stmt.query_map([], map)?,
        Some(n) => stmt.query_map([n], map)?,
    };
    for row in rows {
        let (id, name, labels, host) = row?;
        if let Some(pairs) = mcpwatch_common::wire::SeriesKey::parse_labels_text(&labels) {
            f(id, &name, &pairs, &host);
        }
    }
    Ok(())
}

/// Every raw sample of the batches whose newest sample is at or after `since_ms`, in
/// ingest order, as (series id, ts, value); unreadable blobs are skipped.
pub fn each_recent_sample(
    c: &Connection,
    since_ms: i64,
    mut f: impl FnMut(i64, i64, f64),
) -> Result<(), StoreError> {
    let mut stmt = c.prepare("SELECT data FROM raw WHERE ts_max >= ?1 ORDER BY id")?;
    let blobs = stmt.query_map([since_ms], |r| r.get::<_, Vec<u8>>(0))?;
    for blob in blobs {
        let Ok(rows) = codec::decode(&blob?) else {
            continue;
        };
        for (id, ts, v) in rows {
            f(id, ts, v);
        }
    }
    Ok(())
}

/// The operator labels (stored JSON) of every host, or of those named in `only`, as
/// (agent id, labels JSON). The alerting runtime learns hosts' labels from it at start, after
/// a rollback and when it meets a host it did not know.
pub fn each_host_labels(
    c: &Connection,
    only: Option<&str>,
    mut f: impl FnMut(&str, &str),
) -> Result<(), StoreError> {
    const ALL: &str = "SELECT agent_id, labels FROM hosts";
    let mut stmt = match only {
        None => c.prepare_cached(ALL)?,
        Some(_) => c.prepare_cached(&format!("{ALL} WHERE agent_id = ?1"))?,
    };
    let map = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?));
    let rows = match only {
        None => stmt.query_map([], map)?,
        Some(h) => stmt.query_map([h], map)?,
    };
    for row in rows {
        let (agent, labels) = row?;
        f(&agent, &labels);
    }
    Ok(())
}
