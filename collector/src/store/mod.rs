//! The collector's SQLite store: persistence. It opens every connection and owns the
//! schema, migrations, write transactions, the sample codec, rollups and retention; it
//! imports nothing of the alerting runtime or the engine. The one other module that runs
//! SQL, the alerting runtime, does so on connections and transactions the store hands it
//! through [`WriterHook`] and [`Store::exec`].
//!
//! Writes go through [`Store`], a cheap cloneable handle that sends requests over a bounded
//! channel to one dedicated OS thread owning the single write connection (see `writer`).
//! That thread group-commits many batches per transaction, because a synchronous=FULL
//! commit costs far more than the rows in it. Reads use separate connections via
//! [`Reader`]; WAL mode lets them run beside the writer.
//!
//! Writer side: `request` (what the handle sends), `group` (one group transaction, one
//! function per request kind), `batch` (an agent batch as SQL, the per-agent series
//! limit), `connections` (series maps, the per-host series cache, and their undo log), `reply` (the one reply-or-abort rule), `exec` (closures in the
//! group), `hook` (the plug-in interface), `writer` (the thread and maintenance).
//!
//! Exactly-once ingest: the last committed seq per host is stored in the same transaction
//! as the batch, so a batch replayed after a crash between commit and ack is recognised as
//! [`IngestOutcome::Duplicate`] and acknowledged without being written again.

pub mod admin;
pub mod audit_chain;
pub mod backup;
mod batch;
mod codec;
mod connections;
mod error;
mod exec;
mod group;
pub mod hook;
pub mod lock;
pub mod query;
mod reply;
mod request;
pub mod restore;
mod retention;
mod rollup;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_common::wire::{Event, Sample, SeriesDef};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::StoreError;
pub use hook::{NoHook, WriterHook};
pub use query::reader::{EventRow, GapRow, HostRow, Reader, RollupRow, SeriesRow, Tier};
pub use writer::open_connection;

use request::{Registration, WriteRequest};

/// How the store is opened and how long it keeps data.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite database file; its directory is created if missing.
    pub path: PathBuf,
    /// Raw samples older than this are deleted once rolled up. Zero keeps them forever.
    pub retention_raw: Duration,
    /// 1-minute rollups older than this are deleted. Zero keeps them forever.
    pub retention_1m: Duration,
    /// 1-hour rollups, events and gaps older than this are deleted. Zero keeps them forever.
    pub retention_1h: Duration,
    /// Events (server state changes, probe results, gaps) older than this are deleted. Probe
    /// results arrive every 15 s per server, so this stays far below the 1 h tier's. Zero
    /// keeps them forever.
    pub retention_events: Duration,
    /// API audit records older than this are deleted. Zero keeps them forever.
    pub retention_audit: Duration,
    /// Capacity of the request channel; senders wait (backpressure) when it is full.
    pub queue_capacity: usize,
    /// Group-commit cap: the writer stops gathering requests into one transaction once they
    /// hold this many samples.
    pub max_batch_samples: usize,
    /// Series one agent (host) may have in all; new series beyond are refused (not stored,
    /// their samples dropped, the refusal reported in [`Ingested`] and as a `series_limit`
    /// event of the host).
    pub max_series_per_agent: u64,
}

impl StoreConfig {
    /// Suggested defaults: raw 7 d, 1m 30 d, 1h 400 d.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        const DAY: u64 = 86_400;
        StoreConfig {
            path: path.into(),
            retention_raw: Duration::from_secs(7 * DAY),
            retention_1m: Duration::from_secs(30 * DAY),
            retention_1h: Duration::from_secs(400 * DAY),
            retention_events: Duration::from_secs(30 * DAY),
            retention_audit: Duration::from_secs(400 * DAY),
            queue_capacity: 1024,
            max_batch_samples: 100_000,
            max_series_per_agent: 50_000,
        }
    }
}

/// What `register_agent` tells the ingest layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentSession {
    pub host_id: i64,
    /// Last committed seq for this agent, 0 if none.
    pub last_seq: u64,
}

/// One agent batch, as handed over by the ingest layer.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    /// The ingest layer's connection id; series ids in the batch are scoped to it.
    pub conn: u64,
    pub host_id: i64,
    pub seq: u64,
    pub new_series: Vec<SeriesDef>,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
    /// When the frame arrived, for latency accounting.
    pub received: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Durably committed.
    Committed,
    /// seq <= last committed seq for the host: nothing written, ack anyway.
    Duplicate,
}

/// What the store did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub outcome: IngestOutcome,
    /// Series the batch declared beyond the agent's series limit: not stored. Samples of
    /// the batch's other series are stored; the seq counts as committed, so the agent does
    /// not send the batch again.
    pub refused_series: u32,
    /// Samples dropped because their series was refused (in this batch or earlier on the
    /// connection).
    pub refused_samples: u64,
}

/// What one maintenance pass did (see [`Store::maintain`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub rolled_up_rows: u64,
    pub rolled_up_samples: u64,
    pub corrupt_rows: u64,
    pub pruned_raw: u64,
    pub pruned_rollup_1m: u64,
    pub pruned_rollup_1h: u64,
    /// Events plus alert history, resolved alerts, dead letters and ended silences.
    pub pruned_events: u64,
    pub pruned_gaps: u64,
    /// Rollup or retention work remains beyond this pass's bound.
    pub more: bool,
}

/// Counters for the metrics endpoint; monotonic since open.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub batches: AtomicU64,
    pub duplicates: AtomicU64,
    pub samples: AtomicU64,
    pub groups: AtomicU64,
    pub aborted_groups: AtomicU64,
    pub rejected_batches: AtomicU64,
}

/// A snapshot of [`Store::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches committed (not counting duplicates).
    pub batches: u64,
    pub duplicates: u64,
    pub samples: u64,
    /// Write transactions committed; batches / groups is the group-commit factor.
    pub groups: u64,
    /// Write transactions that failed and were rolled back.
    pub aborted_groups: u64,
    /// Batches refused on their own (unknown series, revoked, invalid).
    pub rejected_batches: u64,
}

/// Handle to the writer thread. Cloning is cheap; the thread stops when every clone (and
/// the ticker) is gone and the queue is drained.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<WriteRequest>,
    counters: Arc<Counters>,
    /// Read-only connections for `Store::read` (see `query::pool`).
    reads: Arc<query::pool::ReadPool>,
}

impl Store {
    /// Opens (creating and migrating if needed) the database and starts the writer thread,
    /// with no hook. Join the returned handle after dropping every `Store` to wait for the
    /// final checkpoint.
    pub fn open(cfg: StoreConfig) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        Store::open_with_hook(cfg, |_| Ok(Box::new(NoHook)))
    }

    /// As [`Store::open`], with the hook `make_hook` builds on the opened, migrated write
    /// connection (on the caller's thread, before the writer starts); the writer owns it.
    pub fn open_with_hook(
        cfg: StoreConfig,
        make_hook: impl FnOnce(&mut rusqlite::Connection) -> Result<Box<dyn WriterHook>, StoreError>,
    ) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let counters = Arc::new(Counters::default());
        let writer = writer::Writer::open(cfg.clone(), counters.clone(), Box::new(make_hook))?;
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let handle = std::thread::Builder::new()
            .name("mcpwatch-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Io {
                path: cfg.path.clone(),
                source,
            })?;
        let reads = Arc::new(query::pool::ReadPool::new(cfg.path.clone()));
        Ok((
            Store {
                tx,
                counters,
                reads,
            },
            handle,
        ))
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> WriteRequest,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        // The writer answers every request it takes, even on failure; a dropped sender
        // means the thread is gone.
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Upserts the host row (first_seen kept) and marks it online. Refused if revoked.
    pub async fn register_agent(
        &self,
        conn: u64,
        agent_id: &str,
        hostname: &str,
        agent_version: &str,
        boot_id: &str,
        now_ms: i64,
    ) -> Result<AgentSession, StoreError> {
        self.call(|reply| WriteRequest::Register {
            hello: Registration {
                conn,
                agent_id: agent_id.to_owned(),
                hostname: hostname.to_owned(),
                agent_version: agent_version.to_owned(),
                boot_id: boot_id.to_owned(),
                now_ms,
            },
            reply,
        })
        .await?
    }

    /// Stores a batch. Resolves once the batch is committed and fsynced (ack the agent then)
    /// or known to be a duplicate.
    pub async fn ingest(&self, batch: IngestBatch) -> Result<Ingested, StoreError> {
        self.submit(batch).await?.await
    }

    /// Queues a batch and returns once it is queued; the returned [`PendingIngest`]
    /// resolves like [`Store::ingest`]. Lets one connection pipeline: awaiting `submit`
    /// calls one after another keeps its batches in seq order in the queue, while their
    /// commits are awaited later (together, in whatever group the writer forms).
    pub async fn submit(&self, batch: IngestBatch) -> Result<PendingIngest, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteRequest::Ingest { batch, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(PendingIngest { rx })
    }

    /// Forgets the connection's series ids and marks the host offline (unless another of
    /// its connections is still sending). Best effort: errors are logged.
    pub async fn agent_disconnected(&self, host_id: i64, conn: u64, now_ms: i64) {
        let _ = self
            .call(|reply| WriteRequest::Disconnected {
                host_id,
                conn,
                now_ms,
                reply,
            })
            .await;
    }

    /// Revokes (or un-revokes) an agent: registration and ingest are refused while revoked.
    /// Returns whether the agent exists.
    pub async fn set_revoked(&self, agent_id: &str, revoked: bool) -> Result<bool, StoreError> {
        self.call(|reply| WriteRequest::SetRevoked {
            agent_id: agent_id.to_owned(),
            revoked,
            reply,
        })
        .await?
    }

    /// Resolves once everything queued before it is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(|reply| WriteRequest::Flush { reply }).await?
    }

    /// Runs one full maintenance pass now (rollup until caught up or bounded, retention
    /// relative to `now_ms`, checkpoint), regardless of the ticker's schedule.
    pub async fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StoreError> {
        self.call(|reply| WriteRequest::Tick {
            now_ms,
            force: true,
            reply: Some(reply),
        })
        .await?
    }

    /// Runs one regular tick at `now_ms` — alert evaluation (`for`, absence, repeats,
    /// silences) then bounded maintenance — and waits for it. The ticker does this every
    /// second with the wall clock; tests drive it with explicit times.
    pub async fn tick(&self, now_ms: i64) -> Result<MaintenanceReport, StoreError> {
        self.call(|reply| WriteRequest::Tick {
            now_ms,
            force: false,
            reply: Some(reply),
        })
        .await?
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            batches: c.batches.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            samples: c.samples.load(Ordering::Relaxed),
            groups: c.groups.load(Ordering::Relaxed),
            aborted_groups: c.aborted_groups.load(Ordering::Relaxed),
            rejected_batches: c.rejected_batches.load(Ordering::Relaxed),
        }
    }

    /// Spawns the 1 s maintenance ticker on `tracker` (current tokio runtime). It holds only
    /// a weak handle, so it never keeps the writer alive, and skips a tick when the queue is
    /// full (ingest has priority). Stops on `cancel` or when the store closes.
    pub fn spawn_ticker(
        &self,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let weak = self.tx.downgrade();
        tracker.spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = interval.tick() => {}
                }
                let Some(tx) = weak.upgrade() else { return };
                let tick = WriteRequest::Tick {
                    now_ms: mcpwatch_common::time::now_ms(),
                    force: false,
                    reply: None,
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(tick) {
                    return;
                }
            }
        })
    }
}

/// A queued batch; resolves when it is committed (or refused). See [`Store::submit`].
#[derive(Debug)]
#[must_use = "the batch is only known to be durable once this resolves"]
pub struct PendingIngest {
    rx: oneshot::Receiver<Result<Ingested, StoreError>>,
}

impl std::future::Future for PendingIngest {
    type Output = Result<Ingested, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// A duration in ms for SQL arithmetic; `None` means "keep forever" (zero).
pub(crate) fn retention_ms(d: Duration) -> Option<i64> {
    if d.is_zero() {
        None
    } else {
        Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}
