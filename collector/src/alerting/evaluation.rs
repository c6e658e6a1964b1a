//! Evaluation: the engine driven by committed samples (per group) and by the 1 s tick,
//! transitions recorded as history, alert records and engine state in the open
//! transaction, alerts whose rule is gone resolved, and the sample window fed and warmed.

use std::sync::atomic::Ordering;

use rusqlite::{params, Connection};

use super::host_scopes::ScopedWindow;
use super::notification::{TransitionLabel, FAILED_METRIC};
use super::runtime::Runtime;
use super::AlertingSetup;
use crate::alert::policy::{AlertRecord, AlertStatus};
use crate::alert::{EngineState, Labels, SeriesState, Transition};
use crate::store::hook::{each_recent_sample, each_series};
use crate::store::StoreError;

/// How often the state of a quiet absence-tracked series is written (it only matters to know
/// the series exists after a restart, whose absence clocks restart anyway).
const QUIET_PERSIST_MS: i64 = 60_000;

/// The longest span of data any rule looks at.
pub(super) fn max_span(setup: &AlertingSetup) -> i64 {
    setup
        .rules
        .iter()
        .map(|r| r.window_ms.max(r.absent_for_ms.unwrap_or(0)))
        .max()
        .unwrap_or(0)
        .saturating_add(setup.engine.grace_ms)
}

impl Runtime {
    /// A series declared by an agent (see [`SampleWindow::declare`](super::sample_window::SampleWindow::declare)).
    pub(super) fn declare(&mut self, id: i64, host: &str, name: &str, labels: &[(String, String)]) {
        self.hosts.note(host);
        self.window.declare(id, host, name, labels);
    }

    /// A committed sample.
    pub(super) fn observe(&mut self, id: i64, ts_ms: i64, value: f64, now_ms: i64) {
        if let Some(metric) = self.window.push(id, ts_ms, value, now_ms) {
            if !self.touched.contains(metric) {
                self.touched.insert(metric.to_owned());
            }
        }
    }

    /// Evaluates the rules reading metrics observed since the last call.
    pub(super) fn evaluate_touched(
        &mut self,
        c: &Connection,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.touched.is_empty() {
            return Ok(());
        }
        self.hosts.learn_unknown(c)?;
        let touched = std::mem::take(&mut self.touched);
        let source = ScopedWindow::new(&self.window, &self.hosts);
        let transitions =
            self.engine
                .evaluate_metrics(&source, touched.iter().map(String::as_str), now_ms);
        self.apply(c, transitions, now_ms, false)
    }

    /// The 1 s tick: `for`, `keep_firing_for`, absence, the collector's own series, repeats,
    /// silences starting or ending, inhibitions lifting.
    pub(super) fn tick(&mut self, c: &Connection, now_ms: i64) -> Result<(), StoreError> {
        self.window.prune(now_ms);
        self.hosts.learn_unknown(c)?;
        let failed: Vec<(String, u64)> = self
            .shared
            .read()
            .iter()
            .map(|(name, r)| (name.clone(), r.failed.load(Ordering::Relaxed)))
            .collect();
        for (name, n) in failed {
            let labels: Labels = [("receiver".to_owned(), name)].into_iter().collect();
            self.window
                .push_own(FAILED_METRIC, labels, now_ms, n as f64);
        }
        self.dead_letter_tick(c, now_ms)?;
        for (name, labels, value) in self.shared.own_series.current() {
            self.window.push_own(&name, labels, now_ms, value);
        }
        self.prune_silences(now_ms);
        self.touched.clear();
        let source = ScopedWindow::new(&self.window, &self.hosts);
        let transitions = self.engine.evaluate(&source, now_ms);
        self.apply(c, transitions, now_ms, true)
    }

    /// Records transitions and the engine state, then reconciles notifications for the
    /// alerts they touched (or for every active alert).
    pub(super) fn apply(
        &mut self,
        c: &Connection,
        transitions: Vec<Transition>,
        now_ms: i64,
        all: bool,
    ) -> Result<(), StoreError> {
        let changed = self.record_transitions(c, &transitions)?;
        self.persist_engine_state(c, now_ms)?;
        let mut todo: Vec<AlertRecord> = changed;
        if all {
            let done: std::collections::HashSet<String> =
                todo.iter().map(|r| r.fingerprint.clone()).collect();
            for rec in self.active.values() {
                if !done.contains(&rec.fingerprint) {
                    todo.push(rec.clone());
                }
            }
        }
        for rec in &todo {
            self.reconcile(c, rec, now_ms)?;
        }
        self.shared
            .alert_metrics
            .active
            .set(i64::try_from(self.active.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Writes each transition to the history and updates the alert records; returns the
    /// records that changed, newest state per alert.
    fn record_transitions(
        &mut self,
        c: &Connection,
        transitions: &[Transition],
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let mut changed: Vec<AlertRecord> = Vec::new();
        for t in transitions {
            let t = &self.with_host_labels(t);
            self.shared
                .alert_metrics
                .transitions
                .get_or_create(&TransitionLabel {
                    to: state_str(t.to).to_owned(),
                })
                .inc();
            c.prepare_cached(
                "INSERT INTO alert_history (at_ms, rule, fingerprint, labels, from_state, to_state,
                     level, value, notify) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                t.at_ms,
                t.rule,
                t.fingerprint,
                serde_json::to_string(&t.labels)?,
                state_str(t.from),
                state_str(t.to),
                t.level.map(|l| l.as_str()),
                t.value.filter(|v| v.is_finite()),
                t.notify,
            ])?;
            let prev = self.active.get(&t.fingerprint).cloned().or_else(|| {
                changed
                    .iter()
                    .rev()
                    .find(|r| r.fingerprint == t.fingerprint)
                    .cloned()
            });
            if let Some(rec) = AlertRecord::apply(prev.as_ref(), t) {
                save_alert(c, &rec)?;
                if rec.is_active() {
                    self.active.insert(rec.fingerprint.clone(), rec.clone());
                } else {
                    self.active.remove(&rec.fingerprint);
                }
                changed.retain(|r| r.fingerprint != rec.fingerprint);
                changed.push(rec);
            }
        }
        Ok(changed)
    }

    /// Writes the engine's changed per-series states (quiet ones at most once per
    /// [`QUIET_PERSIST_MS`]).
    fn persist_engine_state(&mut self, c: &Connection, now_ms: i64) -> Result<(), StoreError> {
        for d in self.engine.take_dirty() {
            let key = (d.rule.clone(), d.fingerprint.clone());
            let quiet = d
                .state
                .as_ref()
                .is_some_and(|st| st.phase == crate::alert::Phase::Inactive && !st.flapping);
            if quiet {
                match self.persisted.get(&key) {
                    Some(&at) if now_ms.saturating_sub(at) < QUIET_PERSIST_MS => continue,
                    _ => {
                        self.persisted.insert(key, now_ms);
                    }
                }
            } else {
                self.persisted.remove(&key);
            }
            match d.state {
                Some(st) => c
                    .prepare_cached(
                        "INSERT INTO alert_state (rule, fingerprint, state) VALUES (?1, ?2, ?3)
                         ON CONFLICT (rule, fingerprint) DO UPDATE SET state = excluded.state",
                    )?
                    .execute(params![d.rule, d.fingerprint, serde_json::to_string(&st)?])?,
                None => c
                    .prepare_cached("DELETE FROM alert_state WHERE rule = ?1 AND fingerprint = ?2")?
                    .execute(params![d.rule, d.fingerprint])?,
            };
        }
        Ok(())
    }

    /// Counts an evaluation that failed (its transaction rolled back).
    pub(super) fn evaluation_failed(&self) {
        self.shared.alert_metrics.evaluation_failures.inc();
    }

    /// Alerts whose rule is gone (removed, renamed, disabled) or whose engine state was lost
    /// can never resolve by evaluation: resolve them now, telling the receivers that were
    /// told they fired, so none stays open or keeps muting others.
    pub(super) fn resolve_orphans(
        &mut self,
        tx: &Connection,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let orphans: Vec<AlertRecord> = self
            .active
            .values()
            .filter(|a| {
                self.engine
                    .state()
                    .rules
                    .get(&a.rule)
                    .is_none_or(|m| !m.contains_key(&a.fingerprint))
            })
            .cloned()
            .collect();
        for mut rec in orphans {
            tracing::info!(rule = %rec.rule, fingerprint = %rec.fingerprint,
                "resolving an alert whose rule or state no longer exists");
            rec.status = AlertStatus::Resolved;
            rec.resolved_ms = Some(now_ms);
            rec.updated_ms = now_ms;
            save_alert(tx, &rec)?;
            self.active.remove(&rec.fingerprint);
            self.reconcile(tx, &rec, now_ms)?;
        }
        Ok(())
    }

    /// Learns every stored series' name and labels (startup, and after a rollback made the
    /// id mapping untrustworthy), so samples keep reaching the rules without a reconnect.
    pub(super) fn declare_all(&mut self, c: &Connection) -> Result<(), StoreError> {
        if self.setup.rules.is_empty() {
            return Ok(());
        }
        let window = &mut self.window;
        each_series(c, None, |id, name, labels, host| {
            window.declare(id, host, name, labels)
        })
    }

    /// Reads back the recent raw samples of the metrics rules read.
    pub(super) fn warm(
        &mut self,
        c: &Connection,
        now_ms: i64,
        span: i64,
    ) -> Result<(), StoreError> {
        if self.setup.rules.is_empty() || span <= 0 {
            return Ok(());
        }
        let mut n = 0u64;
        let window = &mut self.window;
        each_recent_sample(c, now_ms.saturating_sub(span), |id, ts, v| {
            if window.push(id, ts, v, now_ms).is_some() {
                n += 1;
            }
        })?;
        tracing::debug!(samples = n, "alert window warmed from the store");
        Ok(())
    }
}

/// The engine's persisted per-series state; unreadable rows are dropped with a warning.
pub(super) fn load_engine_state(c: &Connection) -> Result<EngineState, StoreError> {
    let mut state = EngineState::default();
    let mut stmt = c.prepare("SELECT rule, fingerprint, state FROM alert_state")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (rule, fp, text) = row?;
        match serde_json::from_str::<SeriesState>(&text) {
            Ok(st) => {
                state.rules.entry(rule).or_default().insert(fp, st);
            }
            Err(e) => tracing::warn!(rule, error = %e, "dropping unreadable alert state"),
        }
    }
    Ok(state)
}

pub(super) fn save_alert(c: &Connection, rec: &AlertRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO alerts (fingerprint, rule, status, started_ms, updated_ms, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (fingerprint) DO UPDATE SET rule = excluded.rule, status = excluded.status,
             started_ms = excluded.started_ms, updated_ms = excluded.updated_ms,
             record = excluded.record",
    )?
    .execute(params![
        rec.fingerprint,
        rec.rule,
        rec.status.as_str(),
        rec.started_ms,
        rec.updated_ms,
        serde_json::to_string(rec)?
    ])?;
    Ok(())
}

fn state_str(s: crate::alert::AlertState) -> &'static str {
    use crate::alert::AlertState as S;
    match s {
        S::Inactive => "inactive",
        S::Pending => "pending",
        S::Firing => "firing",
        S::Resolved => "resolved",
        S::Flapping => "flapping",
    }
}
