//! Read-only looks into a collector database for assertions: batches per agent, gaps.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

fn open(db: &Path) -> Connection {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db read-only");
    c.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    c
}

/// (seq, samples) of every stored batch of `agent_id`, by seq.
pub fn batches(db: &Path, agent_id: &str) -> Vec<(u64, u64)> {
    let c = open(db);
    let mut st = c
        .prepare(
            "SELECT r.seq, r.n FROM raw r JOIN hosts h ON h.id = r.host_id \
             WHERE h.agent_id = ?1 ORDER BY r.seq",
        )
        .expect("prepare");
    st.query_map([agent_id], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

pub fn sample_count(db: &Path, agent_id: &str) -> u64 {
    batches(db, agent_id).iter().map(|b| b.1).sum()
}

/// Samples stored for `agent_id`, or None while the database cannot be read yet (a
/// read-only open fails until the writer has created the WAL files): for polling.
pub fn try_sample_count(db: &Path, agent_id: &str) -> Option<u64> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    c.query_row(
        "SELECT COALESCE(SUM(r.n), 0) FROM raw r JOIN hosts h ON h.id = r.host_id \
         WHERE h.agent_id = ?1",
        [agent_id],
        |r| r.get::<_, i64>(0),
    )
    .ok()
    .map(|n| n as u64)
}

/// (first_seq, last_seq, samples) of every gap recorded for `agent_id`.
pub fn gaps(db: &Path, agent_id: &str) -> Vec<(u64, u64, u64)> {
    let c = open(db);
    let mut st = c
        .prepare(
            "SELECT g.first_seq, g.last_seq, g.samples FROM gaps g JOIN hosts h ON h.id = g.host_id \
             WHERE h.agent_id = ?1 ORDER BY g.first_seq",
        )
        .expect("prepare");
    st.query_map([agent_id], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
        ))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// Asserts no seq is stored twice.
pub fn assert_no_duplicates(batches: &[(u64, u64)]) {
    let mut seqs: Vec<u64> = batches.iter().map(|b| b.0).collect();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "duplicate seqs stored");
}

/// Samples stored for every agent together.
pub fn all_sample_count(db: &Path) -> u64 {
    open(db)
        .query_row("SELECT COALESCE(SUM(n), 0) FROM raw", [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("count") as u64
}

/// One stored agent event.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub ts_ms: i64,
    pub server: String,
    pub kind: String,
    pub detail: String,
}

/// Every event of `agent_id` stored so far, oldest first; empty while the DB is not readable.
pub fn events(db: &Path, agent_id: &str) -> Vec<EventRow> {
    let Ok(c) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Vec::new();
    };
    let Ok(mut st) = c.prepare(
        "SELECT e.ts_ms, COALESCE(e.server, ''), e.kind, e.detail FROM events e \
         JOIN hosts h ON h.id = e.host_id WHERE h.agent_id = ?1 ORDER BY e.id",
    ) else {
        return Vec::new();
    };
    st.query_map([agent_id], |r| {
        Ok(EventRow {
            ts_ms: r.get(0)?,
            server: r.get(1)?,
            kind: r.get(2)?,
            detail: r.get(3)?,
        })
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

/// How many series named `name` are stored for `agent_id` (0 while the database cannot be
/// read yet): for polling.
pub fn series_count(db: &Path, agent_id: &str, name: &str) -> u64 {
    let Ok(c) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return 0;
    };
    c.query_row(
        "SELECT count(*) FROM series s JOIN hosts h ON h.id = s.host_id \
         WHERE h.agent_id = ?1 AND s.name = ?2",
        [agent_id, name],
        |r| r.get::<_, i64>(0),
    )
    .map_or(0, |n| n as u64)
}

/// Series names stored for `agent_id`.
pub fn series_names(db: &Path, agent_id: &str) -> Vec<String> {
    let c = open(db);
    let mut st = c
        .prepare(
            "SELECT DISTINCT s.name FROM series s JOIN hosts h ON h.id = s.host_id \
             WHERE h.agent_id = ?1 ORDER BY s.name",
        )
        .expect("prepare");
    st.query_map([agent_id], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}
