//! One agent batch and one registration as SQL, each run inside its request's savepoint:
//! dedup by seq, series resolution, the compact raw blob, events and gaps. Nothing here
//! changes memory; a released batch's changes come back as [`Staged`] for the writer to
//! apply.

use std::collections::HashMap;

use mcpwatch_common::wire::Event;
use rusqlite::{params, Connection, OptionalExtension};

use super::connections::{ConnSeries, Local, SeriesName, State, Undo};
use super::request::Registration;
use super::{codec, AgentSession, IngestBatch, IngestOutcome, Ingested, StoreError};

/// What one successful ingest changes in memory once its savepoint is released.
pub(crate) struct Staged {
    pub(crate) outcome: IngestOutcome,
    /// The batch's host identity (the `host` label of its series for the alert rules).
    pub(crate) agent_id: String,
    /// The committed samples (database series id, ts, value), for the alert window.
    pub(crate) rows: Vec<codec::Row>,
    pub(crate) samples: usize,
    pub(crate) decl: Declarations,
    /// Samples dropped because their series was refused.
    pub(crate) refused_samples: u64,
    /// The batch wrote the connection's `series_limit` notice.
    pub(crate) noticed: bool,
}

impl Staged {
    /// What the ingest layer is told.
    pub(crate) fn ingested(&self) -> Ingested {
        Ingested {
            outcome: self.outcome,
            refused_series: self.decl.refused,
            refused_samples: self.refused_samples,
        }
    }
}

pub(crate) fn register(c: &Connection, hello: &Registration) -> Result<AgentSession, StoreError> {
    let Registration {
        agent_id,
        hostname,
        agent_version,
        boot_id,
        now_ms,
        ..
    } = hello;
    let revoked: Option<bool> = c
        .query_row(
            "SELECT revoked FROM hosts WHERE agent_id = ?1",
            [agent_id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if revoked == Some(true) {
        return Err(StoreError::Revoked(agent_id.to_owned()));
    }
    let host_id: i64 = c.query_row(
        "INSERT INTO hosts (agent_id, hostname, agent_version, boot_id, first_seen_ms,
                            last_seen_ms, online)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1)
         ON CONFLICT (agent_id) DO UPDATE SET
             hostname = excluded.hostname,
             agent_version = excluded.agent_version,
             boot_id = excluded.boot_id,
             last_seen_ms = max(hosts.last_seen_ms, excluded.last_seen_ms),
             online = 1
         RETURNING id",
        params![agent_id, hostname, agent_version, boot_id, now_ms],
        |r| r.get(0),
    )?;
    let last_seq: Option<i64> = c
        .query_row(
            "SELECT last_seq FROM agent_seq WHERE host_id = ?1",
            [host_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(AgentSession {
        host_id,
        // Stored seqs come from u64 values checked to fit i64, so they are never negative.
        last_seq: u64::try_from(last_seq.unwrap_or(0)).unwrap_or(0),
    })
}

/// Writes one batch (inside its savepoint). Reads `state` but does not change it: the
/// changes come back as [`Staged`] and are applied only if the savepoint is released.
pub(crate) fn ingest_one(
    c: &Connection,
    state: &State,
    b: &IngestBatch,
    now_ms: i64,
) -> Result<Staged, StoreError> {
    let seq = i64::try_from(b.seq)
        .map_err(|_| StoreError::Invalid(format!("seq {} does not fit in i64", b.seq)))?;
    let host: Option<(String, bool, i64)> = c
        .prepare_cached(
            "SELECT h.agent_id, h.revoked, coalesce(s.last_seq, 0)
             FROM hosts h LEFT JOIN agent_seq s ON s.host_id = h.id WHERE h.id = ?1",
        )?
        .query_row([b.host_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((agent_id, revoked, last_seq)) = host else {
        return Err(StoreError::Invalid(format!(
            "unknown host id {}",
            b.host_id
        )));
    };
    if revoked {
        return Err(StoreError::Revoked(agent_id));
    }
    let conn_map = state.conns.get(&b.conn);
    if let Some(cs) = conn_map.filter(|cs| cs.host_id != b.host_id) {
        return Err(StoreError::Invalid(format!(
            "connection {} belongs to host {}, not {}",
            b.conn, cs.host_id, b.host_id
        )));
    }

    // Declarations are honoured even for a duplicate batch: later batches on this
    // connection rely on them.
    let decl = resolve_declarations(c, state, b)?;
    let noticed = decl.refused > 0 && !conn_map.is_some_and(|cs| cs.limit_noticed);
    if noticed {
        insert_limit_notice(c, b, &decl, state.max_series_per_agent, now_ms)?;
    }

    if seq <= last_seq {
        return Ok(Staged {
            outcome: IngestOutcome::Duplicate,
            agent_id,
            rows: Vec::new(),
            samples: 0,
            decl,
            refused_samples: 0,
            noticed,
        });
    }

    let (mut rows, refused_samples) = map_samples(b, &decl.defs, conn_map)?;
    // Sorts `rows` too (by series, then time): the hook observes them in that order.
    write_raw(c, b.host_id, seq, &mut rows, now_ms)?;
    for ev in &b.events {
        insert_event(c, b.host_id, ev, now_ms)?;
    }
    c.prepare_cached(
        "INSERT INTO agent_seq (host_id, last_seq) VALUES (?1, ?2)
         ON CONFLICT (host_id) DO UPDATE SET last_seq = excluded.last_seq",
    )?
    .execute(params![b.host_id, seq])?;
    Ok(Staged {
        outcome: IngestOutcome::Committed,
        agent_id,
        samples: rows.len(),
        rows,
        decl,
        refused_samples,
        noticed,
    })
}

/// How a batch's series declarations were resolved.
pub(crate) struct Declarations {
    /// (agent's series id, what it maps to) per declaration.
    pub(crate) defs: Vec<(u32, Local)>,
    /// Series found or created that the host's cache did not hold.
    pub(crate) new_series: HashMap<SeriesName, i64>,
    /// The host's series count after the batch, when it was needed (a series to create).
    pub(crate) count: Option<u64>,
    /// Declarations refused: new series beyond the agent's limit.
    pub(crate) refused: u32,
    /// The first refused series, for the notice.
    pub(crate) first_refused: Option<String>,
}

/// Resolves the series the batch declares to database ids. A series the host does not have
/// yet is created while the host has fewer than `max_series_per_agent`, and refused beyond:
/// existing series are always accepted, so lowering the limit stops only growth.
fn resolve_declarations(
    c: &Connection,
    state: &State,
    b: &IngestBatch,
) -> Result<Declarations, StoreError> {
    let host = state.hosts.get(&b.host_id);
    let mut decl = Declarations {
        defs: Vec::with_capacity(b.new_series.len()),
        new_series: HashMap::new(),
        count: host.and_then(|h| h.count),
        refused: 0,
        first_refused: None,
    };
    for def in &b.new_series {
        let name: SeriesName = (def.key.name.clone(), def.key.labels_text());
        let cached = host
            .and_then(|h| h.ids.get(&name))
            .or_else(|| decl.new_series.get(&name))
            .copied();
        let to = match cached {
            Some(id) => Local::Series(id),
            None => match find_series(c, b.host_id, &name)? {
                Some(id) => {
                    decl.new_series.insert(name, id);
                    Local::Series(id)
                }
                None => {
                    let count = match decl.count {
                        Some(n) => n,
                        None => count_series(c, b.host_id)?,
                    };
                    if count < state.max_series_per_agent {
                        let id = create_series(c, b.host_id, &name)?;
                        decl.count = Some(count + 1);
                        decl.new_series.insert(name, id);
                        Local::Series(id)
                    } else {
                        decl.count = Some(count);
                        decl.refused = decl.refused.saturating_add(1);
                        if decl.first_refused.is_none() {
                            decl.first_refused = Some(format!("{}{{{}}}", name.0, name.1));
                        }
                        Local::Refused
                    }
                }
            },
        };
        decl.defs.push((def.id, to));
    }
    Ok(decl)
}

/// Writes the host's `series_limit` event: once per connection, when its first series is
/// refused, so the operator sees it in the host's events (the refusals themselves are
/// counted in metrics).
fn insert_limit_notice(
    c: &Connection,
    b: &IngestBatch,
    decl: &Declarations,
    limit: u64,
    now_ms: i64,
) -> Result<(), StoreError> {
    let detail = serde_json::json!({
        "limit": limit,
        "series": decl.count,
        "refused_in_batch": decl.refused,
        "first_refused": decl.first_refused,
        "detail": "new series beyond [ingest] max_series_per_agent are not stored; \
                   their samples are dropped",
    });
    c.prepare_cached(
        "INSERT INTO events (host_id, ts_ms, kind, server, detail)
         VALUES (?1, ?2, 'series_limit', NULL, ?3)",
    )?
    .execute(params![b.host_id, now_ms, detail.to_string()])?;
    Ok(())
}

/// Every sample as (database series id, ts, value), mapped before anything is written so
/// an undeclared id refuses the whole batch; samples of refused series are dropped and
/// counted (the second value).
fn map_samples(
    b: &IngestBatch,
    defs: &[(u32, Local)],
    conn_map: Option<&ConnSeries>,
) -> Result<(Vec<codec::Row>, u64), StoreError> {
    let overlay: HashMap<u32, Local> = defs.iter().copied().collect();
    let lenient = conn_map.is_some_and(|cs| cs.lenient);
    let mut rows = Vec::with_capacity(b.samples.len());
    let mut refused = 0u64;
    for s in &b.samples {
        let to = overlay
            .get(&s.series)
            .copied()
            .or_else(|| conn_map.and_then(|cs| cs.get(s.series)));
        match to {
            Some(Local::Series(id)) => rows.push((id, s.ts_ms, s.value)),
            Some(Local::Refused) => refused += 1,
            None if lenient => refused += 1,
            None => {
                return Err(StoreError::UnknownSeries {
                    seq: b.seq,
                    series: s.series,
                })
            }
        }
    }
    Ok((rows, refused))
}

/// Stores the batch's samples as one compact raw row (nothing for an empty batch); the
/// encoding sorts `rows` by series, then time.
fn write_raw(
    c: &Connection,
    host_id: i64,
    seq: i64,
    rows: &mut [codec::Row],
    committed_ms: i64,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ts_min = rows.iter().map(|r| r.1).min().unwrap_or(i64::MAX);
    let ts_max = rows.iter().map(|r| r.1).max().unwrap_or(i64::MIN);
    let mut blob = Vec::new();
    codec::encode(rows, &mut blob);
    c.prepare_cached(
        "INSERT INTO raw (host_id, seq, ts_min, ts_max, n, data, committed_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        host_id,
        seq,
        ts_min,
        ts_max,
        rows.len() as i64,
        blob,
        committed_ms
    ])?;
    Ok(())
}

/// The id of the host's series `name`, if it exists.
fn find_series(c: &Connection, host_id: i64, name: &SeriesName) -> Result<Option<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT id FROM series WHERE host_id = ?1 AND name = ?2 AND labels = ?3")?
            .query_row(params![host_id, name.0, name.1], |r| r.get(0))
            .optional()?,
    )
}

fn create_series(c: &Connection, host_id: i64, name: &SeriesName) -> Result<i64, StoreError> {
    Ok(c.prepare_cached(
        "INSERT INTO series (host_id, name, labels) VALUES (?1, ?2, ?3) RETURNING id",
    )?
    .query_row(params![host_id, name.0, name.1], |r| r.get(0))?)
}

/// The host's series rows (an index range scan: series are unique by host, name, labels).
fn count_series(c: &Connection, host_id: i64) -> Result<u64, StoreError> {
    let n: i64 = c
        .prepare_cached("SELECT count(*) FROM series WHERE host_id = ?1")?
        .query_row([host_id], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Clamps a u64 counter into SQLite's integer range.
fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn insert_event(c: &Connection, host_id: i64, ev: &Event, now_ms: i64) -> Result<(), StoreError> {
    let (ts, kind, server, detail) = match ev {
        Event::Gap {
            first_seq,
            last_seq,
            samples,
            from_ts_ms,
            to_ts_ms,
        } => {
            c.prepare_cached(
                "INSERT INTO gaps (host_id, first_seq, last_seq, samples, from_ts, to_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                host_id,
                sql_u64(*first_seq),
                sql_u64(*last_seq),
                sql_u64(*samples),
                from_ts_ms,
                to_ts_ms
            ])?;
            let detail = serde_json::json!({
                "first_seq": first_seq, "last_seq": last_seq, "samples": samples,
                "from_ts_ms": from_ts_ms, "to_ts_ms": to_ts_ms,
            });
            (*from_ts_ms, "gap", None, detail)
        }
        Event::SpoolCorruption { records, bytes } => {
            let detail = serde_json::json!({ "records": records, "bytes": bytes });
            // The agent gives no time for this one; the collector's clock is the best bound.
            (now_ms, "spool_corruption", None, detail)
        }
        Event::Server {
            ts_ms,
            server,
            kind,
            detail,
        } => (
            *ts_ms,
            kind.as_str(),
            Some(server.as_str()),
            serde_json::json!({ "detail": detail }),
        ),
    };
    c.prepare_cached(
        "INSERT INTO events (host_id, ts_ms, kind, server, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![host_id, ts, kind, server, detail.to_string()])?;
    Ok(())
}

/// Applies a released batch's changes to memory, logging how to undo the connection's.
pub(crate) fn apply_staged(state: &mut State, undo: &mut Undo, b: &IngestBatch, staged: &Staged) {
    let decl = &staged.decl;
    if decl.count.is_some() || !decl.new_series.is_empty() {
        let host = state.hosts.entry(b.host_id).or_default();
        if decl.count.is_some() {
            host.count = decl.count;
        }
        for (name, id) in &decl.new_series {
            host.ids.insert(name.clone(), *id);
        }
    }
    if decl.defs.is_empty() {
        return;
    }
    let cs = state.conns.entry(b.conn).or_insert_with(|| {
        undo.conns_created.push(b.conn);
        ConnSeries::new(b.host_id)
    });
    if staged.noticed {
        cs.limit_noticed = true;
        undo.noticed.push(b.conn);
    }
    for &(local, to) in &decl.defs {
        let prev = cs.set(local, Some(to));
        undo.conn_sets.push((b.conn, local, prev));
    }
}
