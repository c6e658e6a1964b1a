//! The per-(rule, series) state machine:
//! inactive → pending → firing(warning|critical) → resolved (→ inactive), with escalation and
//! de-escalation, `for`, `keep_firing_for`, hysteresis (clear thresholds), absence rules and
//! flap detection. Pure: samples come from a `SeriesSource`, time from the caller, and the
//! whole state is a serde value (`EngineState`) that the store persists in the same
//! transaction as the outbox rows made from the returned transitions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::rule::{Level, Rule, Severity};
use super::selector::Labels;
use super::source::SeriesSource;
use super::state_machine;

/// Tuning that is not per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Allowance beyond a rule's window for transport and commit delay: samples older than
    /// `now - window - grace` are ignored, so a spool replayed after an outage never fires.
    pub grace_ms: i64,
    /// Flap detection looks at notified state changes within this window...
    pub flap_window_ms: i64,
    /// ...and declares the series flapping when there are more than this many.
    pub flap_threshold: usize,
    /// A flapping series notifies again only after this long without a state change.
    pub flap_quiet_ms: i64,
    /// Until this time, a pending or firing series with no recent data is left as it is
    /// instead of counting as "condition not met": after a collector restart the data
    /// needed to decide has not arrived yet, and resolving now would page again later.
    pub hold_missing_until_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            grace_ms: 5_000,
            flap_window_ms: 10 * 60_000,
            flap_threshold: 6,
            flap_quiet_ms: 10 * 60_000,
            hold_missing_until_ms: 0,
        }
    }
}

/// Where a series stands internally. `Resolved` is not stored: a resolve goes straight back
/// to `Inactive` (the transition carries `to: Resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Inactive,
    Pending,
    Firing,
}

/// The states a transition goes between, as the outside world sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
    Resolved,
    Flapping,
}

/// Everything the engine knows about one (rule, series). Serializable for persistence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    pub labels: Labels,
    pub phase: Phase,
    /// Level while pending or firing; the last level after a resolve.
    pub level: Option<Level>,
    /// When the current phase began.
    pub since_ms: i64,
    /// Last evaluation at which the condition held (for `keep_firing_for`).
    pub last_active_ms: i64,
    /// Last finite value seen (JSON has no NaN, so non-finite values are not kept).
    pub value: Option<f64>,
    /// Newest sample timestamp (absence rules).
    pub last_seen_ms: Option<i64>,
    /// Times of recent notified changes (flap detection), bounded.
    pub changes_ms: Vec<i64>,
    pub flapping: bool,
    pub last_change_ms: i64,
}

impl SeriesState {
    pub(super) fn new(labels: Labels, now_ms: i64) -> Self {
        SeriesState {
            labels,
            phase: Phase::Inactive,
            level: None,
            since_ms: now_ms,
            last_active_ms: now_ms,
            value: None,
            last_seen_ms: None,
            changes_ms: Vec::new(),
            flapping: false,
            last_change_ms: now_ms,
        }
    }
}

/// rule name → fingerprint → state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EngineState {
    pub rules: BTreeMap<String, BTreeMap<String, SeriesState>>,
}

/// One state change. Only `notify == true` transitions go to the outbox; the others
/// (pending, a cancelled pending, changes while flapping) are for history and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub rule: String,
    /// Stable across restarts and versions: hex SHA-256 (128 bits) of the rule name and the
    /// series labels. Used as the PagerDuty dedup key.
    pub fingerprint: String,
    /// Series labels + rule labels + `alertname` + `severity`.
    pub labels: Labels,
    pub from: AlertState,
    pub to: AlertState,
    /// Level before the change (differs from `level` on escalation / de-escalation).
    pub from_level: Option<Level>,
    pub level: Option<Level>,
    pub severity: Severity,
    pub value: Option<f64>,
    /// `summary`, `description`, `runbook_url` rendered (absent when the template is empty).
    pub annotations: BTreeMap<String, String>,
    pub at_ms: i64,
    pub notify: bool,
}

pub struct Engine {
    rules: Vec<Rule>,
    /// metric name → indices of the rules that read it (selector or divide_by).
    by_metric: HashMap<String, Vec<usize>>,
    /// Rules whose selector picks metrics by `__name__`: evaluated when any metric their
    /// matcher accepts is touched.
    by_name: Vec<usize>,
    opts: EngineOptions,
    state: EngineState,
    /// (rule, fingerprint) whose persisted state may differ from the last `take_dirty`.
    dirty: BTreeSet<(String, String)>,
}

/// One row of incremental persistence: the new state, or `None` when it was forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDelta {
    pub rule: String,
    pub fingerprint: String,
    pub state: Option<SeriesState>,
}

impl Engine {
    pub fn new(rules: Vec<Rule>, opts: EngineOptions) -> Self {
        Self::restore(rules, opts, EngineState::default())
    }

    /// Resumes from persisted state. State of rules that no longer exist is dropped; a
    /// firing series stays firing (no re-notification) and resolves on the next evaluation
    /// if its condition cleared meanwhile.
    pub fn restore(rules: Vec<Rule>, opts: EngineOptions, state: EngineState) -> Self {
        let mut engine = Engine {
            rules: Vec::new(),
            by_metric: HashMap::new(),
            by_name: Vec::new(),
            dirty: BTreeSet::new(),
            opts,
            state,
        };
        engine.set_rules(rules);
        engine
    }

    /// Replaces the rules (reload), keeping the state of rules whose name survives.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        let names: HashSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let dirty = &mut self.dirty;
        self.state.rules.retain(|name, states| {
            let keep = names.contains(name.as_str());
            if !keep {
                dirty.extend(states.keys().map(|fp| (name.clone(), fp.clone())));
            }
            keep
        });
        let mut by_metric: HashMap<String, Vec<usize>> = HashMap::new();
        self.by_name.clear();
        for (i, r) in rules.iter().enumerate() {
            if r.selector.name.is_some() {
                self.by_name.push(i);
                continue;
            }
            by_metric
                .entry(r.selector.metric.clone())
                .or_default()
                .push(i);
            if let Some(d) = &r.divide_by {
                if d.metric != r.selector.metric {
                    by_metric.entry(d.metric.clone()).or_default().push(i);
                }
            }
        }
        self.by_metric = by_metric;
        self.rules = rules;
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// A copy of the whole state, to persist with the transitions of the same evaluation.
    pub fn snapshot(&self) -> EngineState {
        self.state.clone()
    }

    /// Incremental alternative to `snapshot`: the states changed since the last call (`None`
    /// = delete the row). Inactive series that did not transition are not reported — their
    /// persisted row, if any, was deleted when they went inactive — so a steady fleet only
    /// writes its pending, firing, flapping and absence-tracked series.
    pub fn take_dirty(&mut self) -> Vec<StateDelta> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|(rule, fingerprint)| {
                let state = self
                    .state
                    .rules
                    .get(&rule)
                    .and_then(|m| m.get(&fingerprint))
                    .cloned();
                StateDelta {
                    rule,
                    fingerprint,
                    state,
                }
            })
            .collect()
    }

    /// Evaluates every rule (the 1 s tick: `for`, `keep_firing_for`, absence, flap quiet).
    pub fn evaluate(&mut self, source: &dyn SeriesSource, now_ms: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            self.eval_rule(i, source, now_ms, &mut out);
        }
        out
    }

    /// Evaluates only the rules that read one of `metrics` (after a committed batch).
    pub fn evaluate_metrics<'a>(
        &mut self,
        source: &dyn SeriesSource,
        metrics: impl IntoIterator<Item = &'a str>,
        now_ms: i64,
    ) -> Vec<Transition> {
        let mut idx: BTreeSet<usize> = BTreeSet::new();
        for m in metrics {
            if let Some(rules) = self.by_metric.get(m) {
                idx.extend(rules.iter().copied());
            }
            for &i in &self.by_name {
                if self.rules.get(i).is_some_and(|r| r.selector.reads(m)) {
                    idx.insert(i);
                }
            }
        }
        let mut out = Vec::new();
        for i in idx {
            self.eval_rule(i, source, now_ms, &mut out);
        }
        out
    }

    fn eval_rule(
        &mut self,
        idx: usize,
        source: &dyn SeriesSource,
        now: i64,
        out: &mut Vec<Transition>,
    ) {
        let Some(rule) = self.rules.get(idx) else {
            return;
        };
        let opts = &self.opts;
        let states = self.state.rules.entry(rule.name.clone()).or_default();
        let start = out.len();
        let mut forgotten = Vec::new();
        match rule.absent_for_ms {
            Some(absent_for) => {
                state_machine::eval_absent(rule, opts, absent_for, states, source, now, out)
            }
            None => {
                state_machine::eval_threshold(rule, opts, states, source, now, out, &mut forgotten)
            }
        }
        let dirty = &mut self.dirty;
        let name = &rule.name;
        dirty.extend(
            out[start..]
                .iter()
                .map(|t| (name.clone(), t.fingerprint.clone())),
        );
        dirty.extend(forgotten.into_iter().map(|fp| (name.clone(), fp)));
        // Live states change on every evaluation (`last_active_ms`, `last_seen_ms`, value).
        dirty.extend(
            states
                .iter()
                .filter(|(_, st)| {
                    st.phase != Phase::Inactive || st.flapping || st.last_seen_ms.is_some()
                })
                .map(|(fp, _)| (name.clone(), fp.clone())),
        );
    }
}
