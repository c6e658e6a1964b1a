//! One group transaction on the writer thread: each request kind runs in turn (in its own
//! SAVEPOINT where it writes, so a batch refused for its own reasons rolls back alone), the
//! plugged-in hook evaluates what the group touched, the transaction commits, and every
//! request is answered. Any SQLite error, or a failed COMMIT, aborts the whole group: the
//! transaction rolls back, in-memory caches are restored from the undo log, the hook
//! reloads, and every request of the group is answered with the error. No request is ever
//! left without an answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Transaction};

use super::batch::{apply_staged, ingest_one, register, Staged};
use super::connections::{ConnSeries, Local, State, Undo};
use super::hook::WriterHook;
use super::reply::{Answer, Reply, SKIPPED};
use super::request::{Registration, WriteRequest};
use super::{
    AgentSession, Counters, IngestBatch, IngestOutcome, Ingested, MaintenanceReport, StoreError,
};

/// A group slower than this end to end is logged.
const SLOW_COMMIT: Duration = Duration::from_secs(1);

/// The state of one group while its requests run.
pub(crate) struct Group<'w> {
    state: &'w mut State,
    hook: &'w mut dyn WriterHook,
    counters: &'w Arc<Counters>,
    now_ms: i64,
    undo: Undo,
    answers: Vec<Answer>,
    touched_hosts: Vec<i64>,
    /// (host, samples) of raw rows written, for the rollup scheduler once committed.
    raw_rows: Vec<(i64, u64)>,
    fatal: Option<String>,
}

impl<'w> Group<'w> {
    pub(crate) fn new(
        state: &'w mut State,
        hook: &'w mut dyn WriterHook,
        counters: &'w Arc<Counters>,
        now_ms: i64,
    ) -> Group<'w> {
        Group {
            state,
            hook,
            counters,
            now_ms,
            undo: Undo::default(),
            answers: Vec::new(),
            touched_hosts: Vec::new(),
            raw_rows: Vec::new(),
            fatal: None,
        }
    }

    /// Records a group-fatal SQLite error and returns the error for the request that hit it.
    fn abort(&mut self, e: rusqlite::Error) -> StoreError {
        let msg = e.to_string();
        self.fatal = Some(msg.clone());
        StoreError::Aborted(msg)
    }

    /// The transaction could not even begin.
    pub(crate) fn failed_to_begin(&mut self, e: rusqlite::Error) {
        self.abort(e);
    }

    /// Runs one request; after a fatal error, only collects it to answer with that error.
    pub(crate) fn run(&mut self, tx: &mut Transaction<'_>, req: WriteRequest) {
        if self.fatal.is_some() {
            return self.skip(req);
        }
        // Every arm pushes exactly one answer, also on a fatal error.
        match req {
            WriteRequest::Ingest { batch, reply } => self.ingest(tx, batch, reply),
            WriteRequest::Register { hello, reply } => self.register(tx, hello, reply),
            WriteRequest::Disconnected {
                host_id,
                conn,
                now_ms,
                reply,
            } => self.disconnected(tx, host_id, conn, now_ms, reply),
            WriteRequest::SetRevoked {
                agent_id,
                revoked,
                reply,
            } => self.set_revoked(tx, &agent_id, revoked, reply),
            WriteRequest::Flush { reply } => self.answers.push(Answer::new(reply, Ok(()))),
            WriteRequest::Exec(job) => {
                let (answer, err) = job(Some(tx));
                if let Some(e) = err {
                    self.abort(e);
                }
                self.answers.push(answer);
            }
            WriteRequest::Tick { reply, .. } => {
                // Ticks are split off before a group forms; answer defensively.
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(MaintenanceReport::default()));
                }
            }
        }
    }

    /// Collects a request the group never got to, to be answered with the group's failure.
    pub(crate) fn skip(&mut self, req: WriteRequest) {
        let answer = match req {
            WriteRequest::Register { reply, .. } => Answer::skipped(reply),
            WriteRequest::Ingest { reply, .. } => Answer::skipped(reply),
            WriteRequest::SetRevoked { reply, .. } => Answer::skipped(reply),
            // These carry no result of their own: they get the group's failure itself.
            WriteRequest::Disconnected { reply, .. } | WriteRequest::Flush { reply } => {
                Answer::new(reply, Ok(()))
            }
            WriteRequest::Exec(job) => job(None).0,
            WriteRequest::Tick { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(StoreError::Aborted(SKIPPED.into())));
                }
                return;
            }
        };
        self.answers.push(answer);
    }

    fn ingest(&mut self, tx: &mut Transaction<'_>, batch: IngestBatch, reply: Reply<Ingested>) {
        let state = &*self.state;
        let now_ms = self.now_ms;
        let r = match in_savepoint(tx, |c| ingest_one(c, state, &batch, now_ms)) {
            Ok(r) => r.map(|staged| self.stage(&batch, staged)),
            Err(e) => Err(self.abort(e)),
        };
        let samples = r.as_ref().map(|(_, n)| *n).unwrap_or(0);
        let counters = self.counters.clone();
        let received = batch.received;
        self.answers
            .push(Answer::observed(reply, r.map(|(o, _)| o), move |r| {
                count_ingest(&counters, r, samples, received)
            }));
    }

    /// Applies a released batch to memory and hands its series and samples to the hook.
    fn stage(&mut self, batch: &IngestBatch, staged: Staged) -> (Ingested, usize) {
        apply_staged(self.state, &mut self.undo, batch, &staged);
        for (def, (_, to)) in batch.new_series.iter().zip(&staged.decl.defs) {
            if let Local::Series(id) = to {
                self.hook
                    .declare(*id, &staged.agent_id, &def.key.name, &def.key.labels);
            }
        }
        self.hook.observe(&staged.rows, self.now_ms);
        if staged.outcome == IngestOutcome::Committed {
            self.touched_hosts.push(batch.host_id);
            if staged.samples > 0 {
                self.raw_rows.push((batch.host_id, staged.samples as u64));
            }
        }
        (staged.ingested(), staged.samples)
    }

    fn register(
        &mut self,
        tx: &mut Transaction<'_>,
        hello: Registration,
        reply: Reply<AgentSession>,
    ) {
        let r = in_savepoint(tx, |c| register(c, &hello)).unwrap_or_else(|e| Err(self.abort(e)));
        // The connection counts as live from its Hello on, so an older connection of the
        // same host closing now cannot mark the host offline.
        if let Ok(session) = &r {
            if let std::collections::hash_map::Entry::Vacant(e) = self.state.conns.entry(hello.conn)
            {
                e.insert(ConnSeries::new(session.host_id));
                self.undo.conns_created.push(hello.conn);
            }
        }
        self.answers.push(Answer::new(reply, r));
    }

    fn disconnected(
        &mut self,
        tx: &Transaction<'_>,
        host_id: i64,
        conn: u64,
        now_ms: i64,
        reply: Reply<()>,
    ) {
        // Memory first: the connection is gone whatever the database says.
        self.state.conns.remove(&conn);
        let still_connected = self.state.conns.values().any(|c| c.host_id == host_id);
        if !still_connected {
            // The series cache holds connected hosts only; the count is re-read at next use.
            self.state.hosts.remove(&host_id);
        }
        if let Err(e) = tx.execute(
            "UPDATE hosts SET online = CASE WHEN ?3 THEN online ELSE 0 END,
                 last_seen_ms = max(last_seen_ms, ?2)
             WHERE id = ?1",
            params![host_id, now_ms, still_connected],
        ) {
            self.abort(e);
        }
        self.answers.push(Answer::new(reply, Ok(())));
    }

    fn set_revoked(
        &mut self,
        tx: &Transaction<'_>,
        agent_id: &str,
        revoked: bool,
        reply: Reply<bool>,
    ) {
        let r = tx
            .execute(
                "UPDATE hosts SET revoked = ?2,
                     online = CASE WHEN ?2 THEN 0 ELSE online END
                 WHERE agent_id = ?1",
                params![agent_id, revoked],
            )
            .map(|n| n > 0)
            .map_err(|e| self.abort(e));
        self.answers.push(Answer::new(reply, r));
    }

    /// Lets the hook evaluate what the group touched (alerts caused by the group's samples
    /// commit with them), marks the hosts seen, then commits, or rolls back after a fatal
    /// error.
    pub(crate) fn finish(&mut self, tx: Transaction<'_>) {
        if self.fatal.is_none() {
            if let Err(e) = self.hook.before_commit(&tx, self.now_ms) {
                self.fatal = Some(e.to_string());
            }
        }
        if self.fatal.is_none() {
            if let Err(e) = self.touch_hosts(&tx) {
                self.fatal = Some(e.to_string());
            }
        }
        if self.fatal.is_none() {
            if let Err(e) = tx.commit() {
                self.fatal = Some(e.to_string());
            }
        } else if let Err(e) = tx.rollback() {
            tracing::error!(error = %e, "rollback of a failed group failed");
        }
    }

    fn touch_hosts(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        self.touched_hosts.sort_unstable();
        self.touched_hosts.dedup();
        let mut stmt = tx.prepare_cached(
            "UPDATE hosts SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
        )?;
        for host in &self.touched_hosts {
            stmt.execute(params![host, self.now_ms])?;
        }
        Ok(())
    }

    /// After commit or rollback: brings memory and the hook in line with the database and
    /// answers every request. Returns the raw rows written if the group committed.
    pub(crate) fn answer(self, conn: &Connection) -> Option<Vec<(i64, u64)>> {
        let Group {
            state,
            hook,
            counters,
            now_ms,
            undo,
            answers,
            raw_rows,
            fatal,
            ..
        } = self;
        if let Some(msg) = &fatal {
            tracing::error!(error = %msg, requests = answers.len(), "store group aborted");
            counters.aborted_groups.fetch_add(1, Ordering::Relaxed);
            hook.rolled_back(conn, now_ms);
            undo.apply(state);
        } else {
            counters.groups.fetch_add(1, Ordering::Relaxed);
            hook.committed();
        }
        for a in answers {
            a.send(fatal.as_deref());
        }
        fatal.is_none().then_some(raw_rows)
    }
}

/// Counts what an ingest request was finally answered.
fn count_ingest(
    counters: &Counters,
    r: &Result<Ingested, StoreError>,
    samples: usize,
    received: Instant,
) {
    match r {
        Ok(Ingested {
            outcome: IngestOutcome::Committed,
            ..
        }) => {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters
                .samples
                .fetch_add(samples as u64, Ordering::Relaxed);
            let latency = received.elapsed();
            if latency > SLOW_COMMIT {
                tracing::warn!(?latency, samples, "slow batch commit");
            }
        }
        Ok(Ingested {
            outcome: IngestOutcome::Duplicate,
            ..
        }) => {
            counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Err(StoreError::Aborted(_)) => {}
        Err(_) => {
            counters.rejected_batches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs `f` inside a savepoint. A logical error rolls back just this request
/// (`Ok(Err(_))`); an SQLite error is returned as `Err` and aborts the group, because after
/// I/O or disk-full errors the transaction's state cannot be trusted.
pub(crate) fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
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
