//! The notification dispatcher: one worker per receiver drains that receiver's outbox
//! through the store — fetch the oldest due group, send it once, then settle the rows as
//! delivered, to retry (exponential backoff with jitter, or the provider's Retry-After) or
//! dead. Rows leave the outbox only once settled, so a crash at any point resends at most
//! the one batch that was in flight.
//!
//! The set of workers follows the receivers defined through the API: [`Dispatcher::start`]
//! starts one for a new receiver or replaces the worker of a changed one (the old worker
//! finishes the send it is in, and the new one starts only after it stopped, so no batch
//! goes out twice), [`Dispatcher::stop`] stops the worker of a deleted one.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::config::RetryPolicy;
use super::{Alerting, OutboxBatch, OutboxOutcome, OutboxShared, ReceiverShared};
use crate::metrics::CollectorMetrics;
use crate::notify::{Notification, Receiver, SendErrorKind};
use crate::now_ms;
use crate::store::StoreError;

/// Rows sent in one request at most (one group).
const BATCH_LIMIT: usize = 100;
/// Tries to record one send's outcome before giving up (and resending later).
const SETTLE_ATTEMPTS: u32 = 5;
/// Longest idle wait; a wakeup normally comes much sooner from the writer.
const IDLE_WAIT: Duration = Duration::from_secs(30);

/// Starts one worker per receiver on `tracker`; they stop on `cancel`.
pub fn spawn(
    store: &Alerting,
    receivers: Vec<Receiver>,
    shared: Arc<OutboxShared>,
    retry: RetryPolicy,
    metrics: Arc<CollectorMetrics>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Dispatcher {
    let d = Dispatcher {
        inner: Arc::new(Inner {
            store: store.clone(),
            shared,
            retry,
            metrics,
            tracker: tracker.clone(),
            cancel,
            workers: Mutex::new(HashMap::new()),
            skipped: Mutex::new(BTreeSet::new()),
            changes: tokio::sync::Mutex::new(()),
        }),
    };
    for receiver in receivers {
        let name = receiver.name().to_owned();
        if !d.start(receiver) {
            // Not in the outbox state: a bug in how the collector put them together.
            tracing::error!(receiver = %name, "receiver has no outbox state; not dispatching");
        }
    }
    d
}

/// Handle to the running workers, one per receiver. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("receivers", &self.running())
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Alerting,
    shared: Arc<OutboxShared>,
    retry: RetryPolicy,
    metrics: Arc<CollectorMetrics>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    workers: Mutex<HashMap<String, Running>>,
    /// API receivers not running because they could not be loaded at startup.
    skipped: Mutex<BTreeSet<String>>,
    changes: tokio::sync::Mutex<()>,
}

struct Running {
    kind: &'static str,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Dispatcher {
    // A poisoned lock means a panic elsewhere while holding it; the map itself is fine.
    fn workers(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.inner.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn skipped(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.inner.skipped.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_skipped(&self) {
        let n = self.skipped().len();
        self.inner
            .metrics
            .receivers_skipped
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Every worker is running: one that ended on its own (a panic) means notifications
    /// to its receiver stopped, which the heartbeat must not hide.
    pub fn healthy(&self) -> bool {
        self.workers().values().all(|r| !r.task.is_finished())
    }

    /// Ends receiver `name`'s worker as a panic would (it stays listed): for tests of what
    /// watches [`Dispatcher::healthy`].
    #[cfg(test)]
    pub(crate) async fn kill_worker(&self, name: &str) {
        let task = {
            let workers = self.workers();
            let Some(running) = workers.get(name) else {
                return;
            };
            running.task.abort();
            running.task.abort_handle()
        };
        while !task.is_finished() {
            tokio::task::yield_now().await;
        }
    }

    /// Records the API receivers that could not be loaded at startup (counted until they
    /// are changed or deleted).
    pub fn set_skipped(&self, names: impl IntoIterator<Item = String>) {
        self.skipped().extend(names);
        self.count_skipped();
    }

    /// Serialises receiver changes: hold it from storing a change until the workers follow
    /// it, so the workers end up as the last committed change says.
    pub async fn lock_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.changes.lock().await
    }

    /// Starts the worker of `receiver`, replacing the one running under its name (which
    /// finishes the send it is in first). `false` when the store does not know the
    /// receiver (it must be stored first).
    pub fn start(&self, receiver: Receiver) -> bool {
        let name = receiver.name().to_owned();
        let Some(shared) = self.inner.shared.receiver(&name) else {
            return false;
        };
        let kind = receiver.kind();
        let stop = self.inner.cancel.child_token();
        let worker = Worker {
            store: self.inner.store.clone(),
            receiver: Arc::new(receiver),
            shared,
            retry: self.inner.retry,
            metrics: self.inner.metrics.clone(),
        };
        let mut workers = self.workers();
        let previous = workers.remove(&name);
        if let Some(p) = &previous {
            p.stop.cancel();
            if p.kind != kind {
                self.inner.metrics.forget_receiver_kind(&name, p.kind);
            }
        }
        self.inner.metrics.notify_receiver(&name, kind);
        let token = stop.clone();
        let task = self.inner.tracker.spawn(async move {
            if let Some(p) = previous {
                // Its rows are still due: sending them too before it has settled them
                // would send them twice.
                let _ = p.task.await;
            }
            worker.run(token).await;
        });
        workers.insert(name.clone(), Running { kind, stop, task });
        drop(workers);
        if self.skipped().remove(&name) {
            self.count_skipped();
        }
        true
    }

    /// Stops the worker of `name` (a send in progress finishes). `false` if none ran.
    pub fn stop(&self, name: &str) -> bool {
        let running = self.workers().remove(name);
        if self.skipped().remove(name) {
            self.count_skipped();
        }
        let Some(r) = running else {
            return false;
        };
        r.stop.cancel();
        // Its series go once it has stopped (it may still settle a send), unless the name
        // has a worker again by then.
        let this = self.clone();
        let name = name.to_owned();
        self.inner.tracker.spawn(async move {
            let _ = r.task.await;
            if !this.is_running(&name) {
                this.inner.metrics.forget_receiver(&name, r.kind);
            }
        });
        true
    }

    /// Whether a worker runs for `name`.
    pub fn is_running(&self, name: &str) -> bool {
        self.workers().contains_key(name)
    }

    /// The receivers with a running worker.
    pub fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self.workers().keys().cloned().collect();
        v.sort();
        v
    }
}

struct Worker {
    store: Alerting,
    receiver: Arc<Receiver>,
    shared: Arc<ReceiverShared>,
    retry: RetryPolicy,
    metrics: Arc<CollectorMetrics>,
}

impl Worker {
    async fn run(self, cancel: CancellationToken) {
        let name = self.receiver.name().to_owned();
        let shared = self.shared.as_ref();
        let mut store_failures = 0u32;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let now = now_ms();
            let batch = match self.store.outbox_fetch(&name, now, BATCH_LIMIT).await {
                Ok(b) => {
                    store_failures = 0;
                    b
                }
                Err(StoreError::Closed) => return,
                Err(e) => {
                    store_failures = store_failures.saturating_add(1);
                    tracing::warn!(receiver = %name, error = %e, "outbox fetch failed");
                    let wait = self.backoff(store_failures);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            self.metrics.notify_dead(&name, batch.expired, "expired");
            // Stopped (deleted, or replaced by a new definition) while fetching: leave the
            // rows to whoever comes next.
            if cancel.is_cancelled() {
                return;
            }
            self.metrics
                .set_outbox_depth(&name, shared.queued.load(Ordering::Relaxed));
            if batch.items.is_empty() {
                let wait = batch
                    .next_due_ms
                    .map(
                        |d| Duration::from_millis(d.saturating_sub(now).clamp(1, 3_600_000) as u64),
                    )
                    .unwrap_or(IDLE_WAIT)
                    .min(IDLE_WAIT);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            // A send that started runs to its end and is settled (bounded by the receiver's
            // timeout), so a graceful stop never causes a duplicate. Every line about it
            // names the notifications (outbox ids) and the alerts (fingerprints) it carries.
            let span = tracing::info_span!("dispatch", receiver = %name,
                notification_ids = %join(batch.items.iter().map(|i| i.id.to_string())),
                fingerprints = %join(batch.items.iter().map(|i| i.notification.fingerprint.clone())));
            self.send(&name, batch, shared).instrument(span).await;
        }
    }

    async fn send(&self, name: &str, batch: OutboxBatch, shared: &ReceiverShared) {
        let ids: Vec<i64> = batch.items.iter().map(|i| i.id).collect();
        let attempts = batch.items.iter().map(|i| i.attempts).max().unwrap_or(0);
        let notes = latest_per_alert(&batch);
        let started = Instant::now();
        let result = self.receiver.send(&notes).await;
        let took = started.elapsed();
        let now = now_ms();
        let outcome = match &result {
            Ok(()) => {
                self.metrics.notify_sent(name, batch.items.len() as u64);
                for item in &batch.items {
                    let age = now.saturating_sub(item.created_ms).max(0) as f64 / 1000.0;
                    self.metrics.notify_latency(name, age);
                }
                tracing::info!(receiver = %name, group = %batch.group_key, alerts = notes.len(),
                    took_ms = took.as_millis() as u64, "notification delivered");
                OutboxOutcome::Delivered { at_ms: now }
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.notify_failed(name);
                match e.kind {
                    SendErrorKind::Retry { after } => {
                        let mut wait = self.backoff(attempts.saturating_add(1));
                        if let Some(after) = after {
                            wait = wait.max(after);
                        }
                        self.metrics.notify_retried(name);
                        tracing::warn!(receiver = %name, error = %e, attempt = attempts + 1,
                            retry_in_ms = wait.as_millis() as u64, "notification failed; will retry");
                        OutboxOutcome::Retry {
                            next_ms: now.saturating_add(
                                i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                            ),
                            error: e.message.clone(),
                        }
                    }
                    SendErrorKind::Permanent => {
                        self.metrics
                            .notify_dead(name, batch.items.len() as u64, "permanent");
                        tracing::error!(receiver = %name, error = %e,
                            "notification refused permanently; moved to the dead-letter list");
                        OutboxOutcome::Dead {
                            reason: format!("refused: {}", e.message),
                        }
                    }
                }
            }
        };
        // Settling is idempotent, so a failed settle is retried rather than the send: only
        // if the store stays unavailable are the rows sent again (a duplicate, never a loss).
        for attempt in 1..=SETTLE_ATTEMPTS {
            match self
                .store
                .outbox_settle(name, &batch.group_key, ids.clone(), outcome.clone(), now)
                .await
            {
                Ok(()) => break,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::error!(receiver = %name, error = %e, attempt,
                        "could not record a send outcome");
                    tokio::time::sleep(self.backoff(attempt).min(Duration::from_secs(5))).await;
                }
            }
        }
        self.metrics
            .set_outbox_depth(name, shared.queued.load(Ordering::Relaxed));
    }

    /// `initial · 2^(attempt-1)`, capped at `max`, with the policy's jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        self.retry.delay(attempt.saturating_sub(1))
    }
}

/// Comma-separated, distinct, in order: the ids and fingerprints of a batch for its log span.
fn join(items: impl Iterator<Item = String>) -> String {
    let mut seen = std::collections::HashSet::new();
    items
        .filter(|i| seen.insert(i.clone()))
        .collect::<Vec<_>>()
        .join(",")
}

/// One notification per alert: when a group holds several rows for the same alert (say
/// firing, then resolved), only the newest state is worth sending.
fn latest_per_alert(batch: &OutboxBatch) -> Vec<Notification> {
    let mut order: Vec<&str> = Vec::new();
    let mut latest: HashMap<&str, &Notification> = HashMap::new();
    for item in &batch.items {
        let fp = item.notification.fingerprint.as_str();
        if latest.insert(fp, &item.notification).is_none() {
            order.push(fp);
        }
    }
    order
        .into_iter()
        .filter_map(|fp| latest.get(fp).map(|n| (*n).clone()))
        .collect()
}
