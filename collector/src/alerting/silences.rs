//! Silences on the writer: each one's matchers are compiled once, when it is created or
//! loaded (startup, reload after a rollback), and kept by id until it ends, so neither the
//! 1 s tick nor any other change recompiles a regex on the thread that commits agent
//! batches. Creation is capped (`[alerting] max_silences` overall and
//! `max_silences_per_user` per author, counting silences not yet ended); the check runs on
//! the writer in the same step as the insert, so parallel requests cannot overshoot.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use super::runtime::Runtime;
use crate::alert::route::{Silence, SilenceSpec};
use crate::alert::Labels;
use crate::store::StoreError;

/// Caps on silences not yet ended (active or pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilenceLimits {
    /// In all (`[alerting] max_silences`).
    pub max: usize,
    /// Per author: a user (all their tokens and sessions), or a token without a user
    /// (`[alerting] max_silences_per_user`).
    pub per_user: usize,
}

impl Default for SilenceLimits {
    fn default() -> Self {
        SilenceLimits {
            max: 1000,
            per_user: 100,
        }
    }
}

/// The silences not yet ended, compiled, by id.
#[derive(Debug, Default)]
pub(super) struct Silences {
    by_id: BTreeMap<i64, Silence>,
    /// Matcher sets compiled since the runtime started (creations and loads): what a test
    /// reads to see that ticks compile nothing.
    compiled: u64,
}

impl Silences {
    pub(super) fn mutes(&self, labels: &Labels, now_ms: i64) -> bool {
        self.by_id.values().any(|s| s.mutes(labels, now_ms))
    }

    /// Drops the silences that have ended by `now_ms`.
    fn prune(&mut self, now_ms: i64) {
        self.by_id.retain(|_, s| s.spec.ends_ms > now_ms);
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn count_by(&self, author: &str) -> usize {
        self.by_id
            .values()
            .filter(|s| s.spec.author == author)
            .count()
    }

    #[cfg(test)]
    pub(super) fn compiled(&self) -> u64 {
        self.compiled
    }
}

impl Runtime {
    /// Stores a silence unless a cap is reached; returns its id.
    pub(super) fn add_silence(
        &mut self,
        c: &Connection,
        spec: &SilenceSpec,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let matchers = spec.compile().map_err(StoreError::Invalid)?;
        self.silences.compiled += 1;
        self.silences.prune(now_ms);
        let limits = self.setup.silence_limits;
        let metrics = &self.shared.alert_metrics;
        if self.silences.len() >= limits.max {
            metrics.silence_refused("limit");
            return Err(StoreError::Limit(format!(
                "{} silences are active or pending, the most allowed ([alerting] max_silences); \
                 expire one first",
                limits.max
            )));
        }
        if self.silences.count_by(&spec.author) >= limits.per_user {
            metrics.silence_refused("user_limit");
            return Err(StoreError::Limit(format!(
                "{} has {} silences active or pending, the most allowed per user \
                 ([alerting] max_silences_per_user); expire one first",
                spec.author, limits.per_user
            )));
        }
        let id: i64 = c
            .prepare_cached(
                "INSERT INTO silences (matchers, starts_ms, ends_ms, author, comment, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            )?
            .query_row(
                params![
                    spec.matchers,
                    spec.starts_ms,
                    spec.ends_ms,
                    spec.author,
                    spec.comment,
                    now_ms
                ],
                |r| r.get(0),
            )?;
        // A rollback of this group reloads the silences from the database, so memory
        // never keeps one the database lost.
        self.silences.by_id.insert(
            id,
            Silence {
                id,
                spec: spec.clone(),
                matchers,
            },
        );
        self.count_silences();
        Ok(id)
    }

    /// Ends a silence now; alerts it muted are announced on the next tick.
    pub(super) fn expire_silence(
        &mut self,
        c: &Connection,
        id: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = c
            .prepare_cached("UPDATE silences SET ends_ms = ?2 WHERE id = ?1 AND ends_ms > ?2")?
            .execute(params![id, now_ms])?;
        self.silences.by_id.remove(&id);
        self.count_silences();
        Ok(n > 0)
    }

    /// The tick's part: silences that ended are dropped (nothing is read or compiled).
    pub(super) fn prune_silences(&mut self, now_ms: i64) {
        self.silences.prune(now_ms);
        self.count_silences();
    }

    /// Reads and compiles every silence not yet ended: at startup and after a rollback only.
    pub(super) fn reload_silences(
        &mut self,
        c: &Connection,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.silences.by_id.clear();
        let mut stmt = c.prepare(
            "SELECT id, matchers, starts_ms, ends_ms, author, comment FROM silences
             WHERE ends_ms > ?1",
        )?;
        let rows = stmt.query_map([now_ms], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                SilenceSpec {
                    matchers: r.get(1)?,
                    starts_ms: r.get(2)?,
                    ends_ms: r.get(3)?,
                    author: r.get(4)?,
                    comment: r.get(5)?,
                },
            ))
        })?;
        for row in rows {
            let (id, spec) = row?;
            self.silences.compiled += 1;
            match spec.compile() {
                Ok(matchers) => {
                    self.silences
                        .by_id
                        .insert(id, Silence { id, spec, matchers });
                }
                Err(e) => {
                    tracing::warn!(silence = id, error = %e, "ignoring a stored silence that does not compile")
                }
            }
        }
        self.count_silences();
        Ok(())
    }

    fn count_silences(&self) {
        self.shared
            .alert_metrics
            .silences
            .set(i64::try_from(self.silences.len()).unwrap_or(i64::MAX));
    }
}
