//! The writer thread: owns the only write connection, group-commits requests and runs the
//! periodic maintenance (rollup, retention, checkpoint) between groups.
//!
//! Each request in a group runs inside its own SAVEPOINT, so a batch refused for its own
//! reasons (unknown series, revoked host) is rolled back alone while the rest of the group
//! commits. Any SQLite error, or a failed COMMIT, aborts the whole group: the transaction
//! rolls back, in-memory caches are restored from an undo log, and every request of the
//! group is answered with an error. No request is ever left without an answer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_common::wire::Event;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::alert_request::{AlertRequest, Answer};
use super::alerting::Alerting;
use super::{
    codec, retention, rollup, schema, AgentSession, Counters, IngestBatch, IngestOutcome,
    MaintenanceReport, StoreConfig, StoreError,
};

/// Upper bound on requests per group, so zero-sample requests cannot grow a group forever.
const MAX_GROUP_REQUESTS: usize = 4096;
/// Time one tick may spend on rollup steps before yielding to ingest (a step that starts
/// within the budget runs to its own bound).
const ROLLUP_BUDGET: Duration = Duration::from_millis(100);
/// A forced pass (`Store::maintain`) stops after this many rollup steps.
const FORCED_ROLLUP_STEPS: usize = 1000;
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Local ids below this live in a dense vector; agents number series from 0 upwards.
const DENSE_SERIES_IDS: u32 = 1 << 16;
/// A group slower than this end to end is logged.
const SLOW_COMMIT: Duration = Duration::from_secs(1);

pub(crate) enum WriteRequest {
    Register {
        /// The ingest connection registering; it counts as live until `Disconnected`.
        conn: u64,
        agent_id: String,
        hostname: String,
        agent_version: String,
        boot_id: String,
        now_ms: i64,
        reply: oneshot::Sender<Result<AgentSession, StoreError>>,
    },
    Ingest {
        batch: IngestBatch,
        reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
    },
    Disconnected {
        host_id: i64,
        conn: u64,
        now_ms: i64,
        reply: oneshot::Sender<()>,
    },
    SetRevoked {
        agent_id: String,
        revoked: bool,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Tick {
        now_ms: i64,
        force: bool,
        reply: Option<oneshot::Sender<Result<MaintenanceReport, StoreError>>>,
    },
    Alert(AlertRequest),
    Exec(super::exec::ExecFn),
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            WriteRequest::Register { .. } => "Register",
            WriteRequest::Ingest { .. } => "Ingest",
            WriteRequest::Disconnected { .. } => "Disconnected",
            WriteRequest::SetRevoked { .. } => "SetRevoked",
            WriteRequest::Flush { .. } => "Flush",
            WriteRequest::Tick { .. } => "Tick",
            WriteRequest::Alert(_) => "Alert",
            WriteRequest::Exec(_) => "Exec",
        };
        f.write_str(name)
    }
}

impl WriteRequest {
    fn samples(&self) -> usize {
        match self {
            WriteRequest::Ingest { batch, .. } => batch.samples.len(),
            _ => 0,
        }
    }
}

/// Per-connection map from the agent's series ids to database series ids.
struct ConnSeries {
    host_id: i64,
    /// Indexed by local id; 0 = undeclared (database ids start at 1).
    dense: Vec<i64>,
    sparse: HashMap<u32, i64>,
}

impl ConnSeries {
    fn new(host_id: i64) -> Self {
        ConnSeries {
            host_id,
            dense: Vec::new(),
            sparse: HashMap::new(),
        }
    }

    fn get(&self, local: u32) -> Option<i64> {
        if local < DENSE_SERIES_IDS {
            self.dense
                .get(local as usize)
                .copied()
                .filter(|&id| id != 0)
        } else {
            self.sparse.get(&local).copied()
        }
    }

    /// Sets (or with `None` clears) a mapping, returning the previous one for the undo log.
    fn set(&mut self, local: u32, id: Option<i64>) -> Option<i64> {
        if local < DENSE_SERIES_IDS {
            let i = local as usize;
            if self.dense.len() <= i {
                self.dense.resize(i + 1, 0);
            }
            let prev = std::mem::replace(&mut self.dense[i], id.unwrap_or(0));
            (prev != 0).then_some(prev)
        } else {
            match id {
                Some(id) => self.sparse.insert(local, id),
                None => self.sparse.remove(&local),
            }
        }
    }
}

/// (host id, series name, labels text).
type SeriesCacheKey = (i64, String, String);

/// In-memory state that must stay consistent with what is committed.
#[derive(Default)]
struct State {
    series: HashMap<SeriesCacheKey, i64>,
    conns: HashMap<u64, ConnSeries>,
}

/// What a group changed in [`State`], to undo if its transaction rolls back.
#[derive(Default)]
struct Undo {
    series: Vec<SeriesCacheKey>,
    conns_created: Vec<u64>,
    conn_sets: Vec<(u64, u32, Option<i64>)>,
}

impl Undo {
    fn apply(self, state: &mut State) {
        for key in self.series {
            state.series.remove(&key);
        }
        for (conn, local, prev) in self.conn_sets.into_iter().rev() {
            if let Some(cs) = state.conns.get_mut(&conn) {
                cs.set(local, prev);
            }
        }
        for conn in self.conns_created {
            state.conns.remove(&conn);
        }
    }
}

/// What one successful ingest changes in memory once its savepoint is released.
struct Staged {
    outcome: IngestOutcome,
    /// The batch's host identity (the `host` label of its series for the alert rules).
    agent_id: String,
    /// The committed samples (database series id, ts, value), for the alert window.
    rows: Vec<codec::Row>,
    samples: usize,
    defs: Vec<(u32, i64)>,
    new_series: Vec<(SeriesCacheKey, i64)>,
}

/// A processed request waiting for the group's commit before being answered.
enum Done {
    Register(
        oneshot::Sender<Result<AgentSession, StoreError>>,
        Result<AgentSession, StoreError>,
    ),
    Ingest(
        oneshot::Sender<Result<IngestOutcome, StoreError>>,
        Result<IngestOutcome, StoreError>,
        usize,
        Instant,
    ),
    Disconnected(oneshot::Sender<()>),
    SetRevoked(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Alert(Answer),
}

impl Done {
    /// Answers the request; `abort` replaces every success with the group's failure.
    fn answer(self, abort: Option<&str>, counters: &Counters) {
        let fail = |msg: &str| StoreError::Aborted(msg.to_owned());
        // A send error means the caller stopped waiting; nothing to do about it.
        match self {
            Done::Register(tx, r) => {
                let _ = tx.send(match abort {
                    Some(m) if r.is_ok() => Err(fail(m)),
                    _ => r,
                });
            }
            Done::Ingest(tx, r, samples, received) => {
                let r = match abort {
                    Some(m) if r.is_ok() => Err(fail(m)),
                    _ => r,
                };
                match &r {
                    Ok(IngestOutcome::Committed) => {
                        counters.batches.fetch_add(1, Ordering::Relaxed);
                        counters
                            .samples
                            .fetch_add(samples as u64, Ordering::Relaxed);
                        let latency = received.elapsed();
                        if latency > SLOW_COMMIT {
                            tracing::warn!(?latency, samples, "slow batch commit");
                        }
                    }
                    Ok(IngestOutcome::Duplicate) => {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(StoreError::Aborted(_)) => {}
                    Err(_) => {
                        counters.rejected_batches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = tx.send(r);
            }
            Done::Disconnected(tx) => {
                let _ = tx.send(());
            }
            Done::SetRevoked(tx, r) => {
                let _ = tx.send(match abort {
                    Some(m) if r.is_ok() => Err(fail(m)),
                    _ => r,
                });
            }
            Done::Flush(tx) => {
                let _ = tx.send(match abort {
                    Some(m) => Err(fail(m)),
                    None => Ok(()),
                });
            }
            Done::Alert(answer) => answer(abort),
        }
    }
}

/// Scheduling state of the periodic work.
struct Maintenance {
    rollup: rollup::Rollup,
    last_retention: Instant,
    retention_more: bool,
    /// Next series id the rollup retention pass starts from.
    retention_cursor: i64,
    last_checkpoint: Instant,
    dirty: bool,
}

/// Opens a write connection to `path` (creating its directory and the database if
/// missing) and brings the schema up to date.
pub(crate) fn open_connection(path: &std::path::Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut conn = Connection::open(path)?;
    schema::configure_writer(&conn)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

pub(crate) struct Writer {
    conn: Connection,
    cfg: StoreConfig,
    state: State,
    maint: Maintenance,
    counters: Arc<Counters>,
    alerting: Alerting,
}

impl Writer {
    /// Opens and prepares the database on the caller's thread so errors reach `Store::open`.
    pub(crate) fn open(cfg: StoreConfig, counters: Arc<Counters>) -> Result<Writer, StoreError> {
        let mut conn = open_connection(&cfg.path)?;
        // No agent is connected before the ingest layer registers it.
        conn.execute("UPDATE hosts SET online = 0 WHERE online != 0", [])?;
        // Work left over from a previous run is ripe for the first tick.
        let rollup = rollup::Rollup::load(&conn)?;
        let alerting = Alerting::open(
            &mut conn,
            cfg.alerting.clone(),
            cfg.outbox.clone(),
            mcpwatch_common::time::now_ms(),
        )?;
        let now = Instant::now();
        Ok(Writer {
            conn,
            cfg,
            state: State::default(),
            maint: Maintenance {
                rollup,
                last_retention: now,
                retention_more: true,
                retention_cursor: 0,
                last_checkpoint: now,
                dirty: false,
            },
            counters,
            alerting,
        })
    }

    /// The thread body: runs until every sender is dropped and the queue is empty.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<WriteRequest>) {
        while let Some(first) = rx.blocking_recv() {
            let mut samples = first.samples();
            let mut group = vec![first];
            while samples < self.cfg.max_batch_samples && group.len() < MAX_GROUP_REQUESTS {
                match rx.try_recv() {
                    Ok(req) => {
                        samples += req.samples();
                        group.push(req);
                    }
                    Err(_) => break,
                }
            }
            let mut ticks = Vec::new();
            let mut writes = Vec::with_capacity(group.len());
            for req in group {
                match req {
                    WriteRequest::Tick {
                        now_ms,
                        force,
                        reply,
                    } => ticks.push((now_ms, force, reply)),
                    other => writes.push(other),
                }
            }
            if !writes.is_empty() {
                self.commit_group(writes);
            }
            // Maintenance runs after the group is answered so it never delays those acks.
            for (now_ms, force, reply) in ticks {
                if !force {
                    self.alert_tick(now_ms);
                }
                let result = self.maintain(now_ms, force);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "store maintenance failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
        self.shutdown();
    }

    fn shutdown(self) {
        if let Err(e) = self.conn.execute("UPDATE hosts SET online = 0", []) {
            tracing::warn!(error = %e, "could not mark hosts offline at shutdown");
        }
        // Fold the WAL back so the database file alone is complete; readers may block it,
        // which is fine: the WAL stays valid.
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the store failed");
        }
    }

    /// The alert engine's 1 s tick, in its own transaction.
    fn alert_tick(&mut self, now_ms: i64) {
        let result = (|| -> Result<(), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            self.alerting.tick(&tx, now_ms)?;
            tx.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => self.alerting.committed(),
            Err(e) => {
                tracing::error!(error = %e, "alert evaluation tick failed");
                self.alerting.evaluation_failed();
                self.alerting.rolled_back(&self.conn, now_ms);
            }
        }
    }

    /// Runs `writes` in one transaction and answers each of them.
    fn commit_group(&mut self, writes: Vec<WriteRequest>) {
        let Writer {
            conn,
            state,
            counters,
            alerting,
            ..
        } = self;
        let now_ms = mcpwatch_common::time::now_ms();
        let mut undo = Undo::default();
        let mut done = Vec::with_capacity(writes.len());
        let mut touched_hosts: Vec<i64> = Vec::new();
        // (host, samples) of raw rows written, for the rollup scheduler once committed.
        let mut raw_rows: Vec<(i64, u64)> = Vec::new();
        let mut fatal: Option<String> = None;

        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => Some(tx),
            Err(e) => {
                fatal = Some(e.to_string());
                None
            }
        };
        for req in writes {
            // After a fatal error the rest are only collected, to be answered with it.
            let Some(tx) = tx.as_mut().filter(|_| fatal.is_none()) else {
                done.extend(unprocessed(req));
                continue;
            };
            // Every arm pushes exactly one `Done`, also on a fatal error, so every request
            // gets an answer.
            match req {
                WriteRequest::Ingest { batch, reply } => {
                    let r = match in_savepoint(tx, |c| ingest_one(c, state, &batch, now_ms)) {
                        Ok(r) => r.map(|staged| {
                            apply_staged(state, &mut undo, &batch, &staged);
                            for (def, (_, id)) in batch.new_series.iter().zip(&staged.defs) {
                                alerting.declare(
                                    *id,
                                    &staged.agent_id,
                                    &def.key.name,
                                    &def.key.labels,
                                );
                            }
                            for &(id, ts, v) in &staged.rows {
                                alerting.observe(id, ts, v, now_ms);
                            }
                            if staged.outcome == IngestOutcome::Committed {
                                touched_hosts.push(batch.host_id);
                                if staged.samples > 0 {
                                    raw_rows.push((batch.host_id, staged.samples as u64));
                                }
                            }
                            (staged.outcome, staged.samples)
                        }),
                        Err(e) => Err(abort(&mut fatal, e)),
                    };
                    let samples = r.as_ref().map(|(_, n)| *n).unwrap_or(0);
                    done.push(Done::Ingest(
                        reply,
                        r.map(|(o, _)| o),
                        samples,
                        batch.received,
                    ));
                }
                WriteRequest::Register {
                    conn: conn_id,
                    agent_id,
                    hostname,
                    agent_version,
                    boot_id,
                    now_ms,
                    reply,
                } => {
                    let r = in_savepoint(tx, |c| {
                        register(c, &agent_id, &hostname, &agent_version, &boot_id, now_ms)
                    })
                    .unwrap_or_else(|e| Err(abort(&mut fatal, e)));
                    // The connection counts as live from its Hello on, so an older
                    // connection of the same host closing now cannot mark the host offline.
                    if let Ok(session) = &r {
                        if let std::collections::hash_map::Entry::Vacant(e) =
                            state.conns.entry(conn_id)
                        {
                            e.insert(ConnSeries::new(session.host_id));
                            undo.conns_created.push(conn_id);
                        }
                    }
                    done.push(Done::Register(reply, r));
                }
                WriteRequest::Disconnected {
                    host_id,
                    conn: conn_id,
                    now_ms,
                    reply,
                } => {
                    // Memory first: the connection is gone whatever the database says.
                    state.conns.remove(&conn_id);
                    let still_connected = state.conns.values().any(|c| c.host_id == host_id);
                    if let Err(e) = tx.execute(
                        "UPDATE hosts SET online = CASE WHEN ?3 THEN online ELSE 0 END,
                             last_seen_ms = max(last_seen_ms, ?2)
                         WHERE id = ?1",
                        params![host_id, now_ms, still_connected],
                    ) {
                        abort(&mut fatal, e);
                    }
                    done.push(Done::Disconnected(reply));
                }
                WriteRequest::SetRevoked {
                    agent_id,
                    revoked,
                    reply,
                } => {
                    let r = tx
                        .execute(
                            "UPDATE hosts SET revoked = ?2,
                                 online = CASE WHEN ?2 THEN 0 ELSE online END
                             WHERE agent_id = ?1",
                            params![agent_id, revoked],
                        )
                        .map(|n| n > 0)
                        .map_err(|e| abort(&mut fatal, e));
                    done.push(Done::SetRevoked(reply, r));
                }
                WriteRequest::Flush { reply } => done.push(Done::Flush(reply)),
                WriteRequest::Exec(job) => match tx.savepoint() {
                    Ok(sp) => {
                        let (answer, err, keep) = job(Some(&sp));
                        let end = if keep { sp.commit() } else { sp.finish() };
                        if let Some(e) = err.or(end.err()) {
                            abort(&mut fatal, e);
                        }
                        done.push(Done::Alert(answer));
                    }
                    Err(e) => {
                        abort(&mut fatal, e);
                        done.push(Done::Alert(job(None).0));
                    }
                },
                WriteRequest::Alert(req) => {
                    let (answer, err) = req.run(alerting, tx);
                    if let Some(e) = err {
                        abort(&mut fatal, e);
                    }
                    done.push(Done::Alert(answer));
                }
                WriteRequest::Tick { reply, .. } => {
                    // Ticks are split off before commit_group; answer defensively.
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(MaintenanceReport::default()));
                    }
                }
            }
        }

        if fatal.is_none() {
            if let Some(tx) = tx.as_ref() {
                // Alerts caused by this group's samples commit with them.
                if let Err(e) = alerting.evaluate_touched(tx, now_ms) {
                    alerting.evaluation_failed();
                    fatal = Some(e.to_string());
                }
            }
        }
        if fatal.is_none() {
            if let Some(tx) = tx.as_ref() {
                touched_hosts.sort_unstable();
                touched_hosts.dedup();
                for host in &touched_hosts {
                    let r = tx
                        .prepare_cached(
                            "UPDATE hosts SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
                        )
                        .and_then(|mut s| s.execute(params![host, now_ms]));
                    if let Err(e) = r {
                        fatal = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        // `{ tx }` moves the whole Option, ending the borrow of `conn` here.
        if let Some(tx) = { tx } {
            if fatal.is_none() {
                if let Err(e) = tx.commit() {
                    fatal = Some(e.to_string());
                }
            } else if let Err(e) = tx.rollback() {
                tracing::error!(error = %e, "rollback of a failed group failed");
            }
        }

        if let Some(msg) = &fatal {
            tracing::error!(error = %msg, requests = done.len(), "store group aborted");
            counters.aborted_groups.fetch_add(1, Ordering::Relaxed);
            alerting.rolled_back(conn, now_ms);
            undo.apply(state);
            // Ids cached from the failed transaction may have been handed out again.
            state.series.clear();
        } else {
            counters.groups.fetch_add(1, Ordering::Relaxed);
            alerting.committed();
            self.maint.dirty = true;
            for (host, samples) in raw_rows {
                self.maint.rollup.note(host, samples);
            }
        }
        for d in done {
            d.answer(fatal.as_deref(), counters);
        }
    }

    /// Periodic work: bounded rollup steps, a bounded retention pass, a passive checkpoint.
    fn maintain(&mut self, now_ms: i64, force: bool) -> Result<MaintenanceReport, StoreError> {
        let mut report = MaintenanceReport::default();
        let m = &mut self.maint;
        let started = Instant::now();
        let mut steps = 0;
        'hosts: for host in m.rollup.ripe(force) {
            loop {
                let (step, more) = m.rollup.step(&mut self.conn, host)?;
                steps += 1;
                report.rolled_up_rows += step.rows;
                report.rolled_up_samples += step.samples;
                report.corrupt_rows += step.corrupt;
                m.dirty |= step.rows > 0;
                let out_of_budget = if force {
                    steps >= FORCED_ROLLUP_STEPS
                } else {
                    started.elapsed() >= ROLLUP_BUDGET
                };
                if out_of_budget {
                    break 'hosts;
                }
                if !more {
                    break;
                }
            }
        }
        if force || m.retention_more || m.last_retention.elapsed() >= RETENTION_INTERVAL {
            let step = retention::step(&mut self.conn, &self.cfg, now_ms, &mut m.retention_cursor)?;
            report.pruned_raw = step.raw;
            report.pruned_rollup_1m = step.rollup_1m;
            report.pruned_rollup_1h = step.rollup_1h;
            report.pruned_events = step.events;
            report.pruned_gaps = step.gaps;
            m.retention_more = step.more;
            m.last_retention = Instant::now();
            m.dirty = true;
        }
        if m.dirty && (force || m.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL) {
            // PASSIVE never waits for readers; whatever it cannot copy now it copies later.
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            m.last_checkpoint = Instant::now();
            m.dirty = false;
        }
        report.more = m.rollup.has_pending() || m.retention_more;
        Ok(report)
    }
}

/// Records a group-fatal SQLite error and returns the error for the request that hit it.
fn abort(fatal: &mut Option<String>, e: rusqlite::Error) -> StoreError {
    let msg = e.to_string();
    *fatal = Some(msg.clone());
    StoreError::Aborted(msg)
}

/// Turns a request the group never got to into an answer carrying the group's failure.
fn unprocessed(req: WriteRequest) -> Option<Done> {
    let skipped = || StoreError::Aborted("an earlier request in the group failed".into());
    Some(match req {
        WriteRequest::Register { reply, .. } => Done::Register(reply, Err(skipped())),
        WriteRequest::Ingest { batch, reply } => {
            Done::Ingest(reply, Err(skipped()), 0, batch.received)
        }
        WriteRequest::Disconnected { reply, .. } => Done::Disconnected(reply),
        WriteRequest::SetRevoked { reply, .. } => Done::SetRevoked(reply, Err(skipped())),
        WriteRequest::Flush { reply } => Done::Flush(reply),
        WriteRequest::Alert(req) => Done::Alert(req.skipped()),
        WriteRequest::Exec(job) => Done::Alert(job(None).0),
        WriteRequest::Tick { reply, .. } => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(skipped()));
            }
            return None;
        }
    })
}

/// Runs `f` inside a savepoint. A logical error rolls back just this request
/// (`Ok(Err(_))`); an SQLite error is returned as `Err` and aborts the group, because after
/// I/O or disk-full errors the transaction's state cannot be trusted.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, rusqlite::Error> {
    let sp = tx.savepoint()?;
    match f(&sp) {
        Ok(v) => {
            sp.commit()?;
            Ok(Ok(v))
        }
        Err(StoreError::Sqlite(e)) => Err(e),
        Err(e) => {
            // Default drop behaviour is rollback; finish() surfaces its errors.
            sp.finish()?;
            Ok(Err(e))
        }
    }
}

fn register(
    c: &Connection,
    agent_id: &str,
    hostname: &str,
    agent_version: &str,
    boot_id: &str,
    now_ms: i64,
) -> Result<AgentSession, StoreError> {
    let revoked: Option<bool> = c
        .query_row(
            "SELECT revoked FROM hosts WHERE agent_id = ?1",
            [agent_id],
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
fn ingest_one(
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
    let mut defs = Vec::with_capacity(b.new_series.len());
    let mut new_series: Vec<(SeriesCacheKey, i64)> = Vec::new();
    for def in &b.new_series {
        let key: SeriesCacheKey = (b.host_id, def.key.name.clone(), def.key.labels_text());
        let cached = state.series.get(&key).copied().or_else(|| {
            new_series
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, id)| *id)
        });
        let id = match cached {
            Some(id) => id,
            None => {
                let id = resolve_series(c, &key)?;
                new_series.push((key, id));
                id
            }
        };
        defs.push((def.id, id));
    }

    if seq <= last_seq {
        return Ok(Staged {
            outcome: IngestOutcome::Duplicate,
            agent_id,
            rows: Vec::new(),
            samples: 0,
            defs,
            new_series,
        });
    }

    // Map every sample before writing anything, so an undeclared id refuses the batch.
    let overlay: HashMap<u32, i64> = defs.iter().copied().collect();
    let mut rows = Vec::with_capacity(b.samples.len());
    let (mut ts_min, mut ts_max) = (i64::MAX, i64::MIN);
    for s in &b.samples {
        let id = overlay
            .get(&s.series)
            .copied()
            .or_else(|| conn_map.and_then(|cs| cs.get(s.series)))
            .ok_or(StoreError::UnknownSeries {
                seq: b.seq,
                series: s.series,
            })?;
        ts_min = ts_min.min(s.ts_ms);
        ts_max = ts_max.max(s.ts_ms);
        rows.push((id, s.ts_ms, s.value));
    }
    if !rows.is_empty() {
        let mut blob = Vec::new();
        codec::encode(&mut rows, &mut blob);
        c.prepare_cached(
            "INSERT INTO raw (host_id, seq, ts_min, ts_max, n, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            b.host_id,
            seq,
            ts_min,
            ts_max,
            rows.len() as i64,
            blob
        ])?;
    }
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
        defs,
        new_series,
    })
}

/// Finds or creates the series row.
fn resolve_series(c: &Connection, key: &SeriesCacheKey) -> Result<i64, StoreError> {
    let existing: Option<i64> = c
        .prepare_cached("SELECT id FROM series WHERE host_id = ?1 AND name = ?2 AND labels = ?3")?
        .query_row(params![key.0, key.1, key.2], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = c
        .prepare_cached(
            "INSERT INTO series (host_id, name, labels) VALUES (?1, ?2, ?3) RETURNING id",
        )?
        .query_row(params![key.0, key.1, key.2], |r| r.get(0))?;
    Ok(id)
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

/// Applies a released batch's changes to memory, logging how to undo them.
fn apply_staged(state: &mut State, undo: &mut Undo, b: &IngestBatch, staged: &Staged) {
    for (key, id) in &staged.new_series {
        state.series.insert(key.clone(), *id);
        undo.series.push(key.clone());
    }
    if staged.defs.is_empty() {
        return;
    }
    let cs = state.conns.entry(b.conn).or_insert_with(|| {
        undo.conns_created.push(b.conn);
        ConnSeries::new(b.host_id)
    });
    for &(local, id) in &staged.defs {
        let prev = cs.set(local, Some(id));
        undo.conn_sets.push((b.conn, local, prev));
    }
}
