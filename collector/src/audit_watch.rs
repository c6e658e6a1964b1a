//! The running collector's watch on the audit log's hash chain: verifies it at start and
//! every `[api] audit_verify_interval`. A pass walks only the rows added since the last
//! one (after checking that the last row it accepted is still there, unchanged), and every
//! [`FULL_EVERY`]th pass walks every surviving row again, which is what catches an older row
//! edited or removed in the meantime. A break is logged at ERROR and counted once; the
//! `audit_chain_ok` gauge then stays 0 until restart, and later passes walk on past it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::CollectorMetrics;
use crate::store::query::audit::{Checkpoint, Verdict};
use crate::store::{Store, StoreError};

/// Every this many passes, a pass walks the whole chain (hourly at the default 5 minutes).
pub const FULL_EVERY: u64 = 12;
/// Breaks one pass walks past at most (a chain rewritten wholesale must not pin the pass).
const BREAKS_PER_PASS: usize = 100;

/// What the watch remembers between passes.
struct Watch {
    store: Store,
    metrics: Arc<CollectorMetrics>,
    checkpoint: Option<Checkpoint>,
    passes: u64,
    /// A break was found since start.
    broken: bool,
    /// Breaks at or below this row id were reported already.
    reported_upto: i64,
}

/// Spawns the watch on `tracker`; it stops on `stop` or when the store closes.
pub fn spawn(
    store: &Store,
    metrics: Arc<CollectorMetrics>,
    every: Duration,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    let mut watch = Watch {
        store: store.clone(),
        metrics,
        checkpoint: None,
        passes: 0,
        broken: false,
        reported_upto: i64::MIN,
    };
    tracker.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(StoreError::Closed) = watch.pass().await {
                return;
            }
        }
    });
}

impl Watch {
    /// One pass: from the checkpoint (or everything), past up to [`BREAKS_PER_PASS`] breaks.
    async fn pass(&mut self) -> Result<(), StoreError> {
        let full = self.checkpoint.is_none() || self.passes.is_multiple_of(FULL_EVERY);
        self.passes += 1;
        let mut from = self.checkpoint.clone();
        let mut step_full = full;
        for _ in 0..BREAKS_PER_PASS {
            let verdict = match self.store.verify_audit_chain(from.clone(), step_full).await {
                Ok(v) => v,
                Err(e) => {
                    if !matches!(e, StoreError::Closed) {
                        self.metrics.audit_chain_verify_failures.inc();
                        tracing::warn!(error = %e, "audit chain verification could not run");
                    }
                    return Err(e);
                }
            };
            match verdict {
                Verdict::Intact { rows, checkpoint } => {
                    if !self.broken {
                        self.metrics.audit_chain_ok.set(1);
                    }
                    if step_full {
                        tracing::info!(rows, head_id = checkpoint.id, head_hash = %checkpoint.hash,
                            removed_upto = checkpoint.removed_upto, intact = !self.broken,
                            "audit chain verified");
                    } else {
                        tracing::debug!(rows, head_id = checkpoint.id, "audit chain verified");
                    }
                    self.metrics.audit_chain_verified_id.set(checkpoint.id);
                    self.checkpoint = Some(checkpoint);
                    return Ok(());
                }
                Verdict::Broken { id, reason, resume } => {
                    self.report(id, &reason);
                    match resume {
                        Some(r) => {
                            from = Some(r);
                            step_full = false;
                        }
                        // Nothing to walk on from: start over from retention's anchor,
                        // once (a second anchor-level break ends the pass).
                        None if from.is_some() => {
                            from = None;
                            step_full = true;
                        }
                        None => {
                            self.checkpoint = None;
                            return Ok(());
                        }
                    }
                }
            }
        }
        // Too many breaks for one pass: the next one walks on from here.
        self.checkpoint = from;
        Ok(())
    }

    fn report(&mut self, id: i64, reason: &str) {
        self.broken = true;
        self.metrics.audit_chain_ok.set(0);
        if id > self.reported_upto {
            self.reported_upto = id;
            self.metrics.audit_chain_breaks.inc();
            tracing::error!(
                row = id,
                reason,
                "audit log hash chain broken: a row was changed or removed outside the collector"
            );
        }
    }
}
