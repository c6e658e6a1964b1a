//! The writer thread: owns the only write connection, group-commits requests (see
//! `group`), calls the plugged-in [`WriterHook`] on every group and tick, and runs the
//! periodic maintenance (rollup, retention, checkpoint) between groups.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::mpsc;

use super::group::Group;
use super::hook::WriterHook;
use super::request::WriteRequest;
use super::{
    connections::State, retention, rollup, schema, Counters, MaintenanceReport, StoreConfig,
    StoreError,
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
pub fn open_connection(path: &std::path::Path) -> Result<Connection, StoreError> {
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

/// Builds the hook on the freshly opened and migrated write connection.
pub(crate) type MakeHook<'a> =
    Box<dyn FnOnce(&mut Connection) -> Result<Box<dyn WriterHook>, StoreError> + 'a>;

pub(crate) struct Writer {
    conn: Connection,
    cfg: StoreConfig,
    state: State,
    maint: Maintenance,
    counters: Arc<Counters>,
    hook: Box<dyn WriterHook>,
}

impl Writer {
    /// Opens and prepares the database on the caller's thread so errors reach `Store::open`.
    pub(crate) fn open(
        cfg: StoreConfig,
        counters: Arc<Counters>,
        make_hook: MakeHook<'_>,
    ) -> Result<Writer, StoreError> {
        let mut conn = open_connection(&cfg.path)?;
        // No agent is connected before the ingest layer registers it.
        conn.execute("UPDATE hosts SET online = 0 WHERE online != 0", [])?;
        // Work left over from a previous run is ripe for the first tick.
        let rollup = rollup::Rollup::load(&conn)?;
        let hook = make_hook(&mut conn)?;
        let now = Instant::now();
        Ok(Writer {
            conn,
            state: State::new(cfg.max_series_per_agent),
            cfg,
            maint: Maintenance {
                rollup,
                last_retention: now,
                retention_more: true,
                retention_cursor: 0,
                last_checkpoint: now,
                dirty: false,
            },
            counters,
            hook,
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
                    self.hook_tick(now_ms);
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

    /// The hook's periodic run (alert evaluation), in its own transaction.
    fn hook_tick(&mut self, now_ms: i64) {
        let result = (|| -> Result<(), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            self.hook.tick(&tx, now_ms)?;
            tx.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => self.hook.committed(),
            Err(e) => {
                tracing::error!(error = %e, "alert evaluation tick failed");
                self.hook.tick_failed(&self.conn, now_ms);
            }
        }
    }

    /// Runs `writes` in one transaction and answers each of them.
    fn commit_group(&mut self, writes: Vec<WriteRequest>) {
        let Writer {
            conn,
            state,
            counters,
            hook,
            maint,
            ..
        } = self;
        let mut group = Group::new(
            state,
            hook.as_mut(),
            counters,
            mcpwatch_common::time::now_ms(),
        );
        match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(mut tx) => {
                for req in writes {
                    group.run(&mut tx, req);
                }
                group.finish(tx);
            }
            Err(e) => {
                group.failed_to_begin(e);
                for req in writes {
                    group.skip(req);
                }
            }
        }
        if let Some(raw_rows) = group.answer(conn) {
            maint.dirty = true;
            for (host, samples) in raw_rows {
                maint.rollup.note(host, samples);
            }
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
