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
use super::source::{Series, SeriesSource};
use super::template::render;

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
    fn new(labels: Labels, now_ms: i64) -> Self {
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
        for (i, r) in rules.iter().enumerate() {
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
        let idx: BTreeSet<usize> = metrics
            .into_iter()
            .filter_map(|m| self.by_metric.get(m))
            .flatten()
            .copied()
            .collect();
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
            Some(absent_for) => eval_absent(rule, opts, absent_for, states, source, now, out),
            None => eval_threshold(rule, opts, states, source, now, out, &mut forgotten),
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

fn eval_threshold(
    rule: &Rule,
    opts: &EngineOptions,
    states: &mut BTreeMap<String, SeriesState>,
    source: &dyn SeriesSource,
    now: i64,
    out: &mut Vec<Transition>,
    forgotten: &mut Vec<String>,
) {
    let since = now.saturating_sub(rule.window_ms.saturating_add(opts.grace_ms));
    let dens: Option<Vec<Series>> = rule.divide_by.as_ref().map(|d| {
        source
            .series(&d.metric, since)
            .into_iter()
            .filter(|s| d.matches(&s.labels))
            .collect()
    });
    let den_by_labels: HashMap<&Labels, &Series> =
        dens.iter().flatten().map(|s| (&s.labels, s)).collect();
    let mut seen = HashSet::new();
    for s in source.series(&rule.selector.metric, since) {
        if !rule.selector.matches(&s.labels) {
            continue;
        }
        let mut value = window_value(rule, &s.samples, since);
        if dens.is_some() {
            let den = den_by_labels
                .get(&s.labels)
                .and_then(|d| window_value(rule, &d.samples, since));
            value = match (value, den) {
                (Some(n), Some(d)) if d != 0.0 => Some(n / d),
                _ => None,
            };
        }
        let fp = fingerprint(&rule.name, &s.labels);
        let st = states
            .entry(fp.clone())
            .or_insert_with(|| SeriesState::new(s.labels.clone(), now));
        let desired = desired_level(rule, value, st);
        step(rule, opts, &fp, st, desired, value, now, out);
        seen.insert(fp);
    }
    // Series with no recent data: the condition is not met (a stale or replayed series must
    // neither keep nor start an alert); firing ones resolve after `keep_firing_for`.
    let holding = now < opts.hold_missing_until_ms;
    for (fp, st) in states.iter_mut() {
        let held = holding && st.phase != Phase::Inactive;
        if !seen.contains(fp) && !held {
            step(rule, opts, fp, st, None, None, now, out);
        }
    }
    // Forget quiet series so state stays bounded as containers come and go.
    states.retain(|fp, st| {
        let keep = seen.contains(fp) || st.phase != Phase::Inactive || st.flapping;
        if !keep {
            forgotten.push(fp.clone());
        }
        keep
    });
}

fn eval_absent(
    rule: &Rule,
    opts: &EngineOptions,
    absent_for: i64,
    states: &mut BTreeMap<String, SeriesState>,
    source: &dyn SeriesSource,
    now: i64,
    out: &mut Vec<Transition>,
) {
    // Only fresh samples can introduce a series: a host first seen through old replayed
    // samples must not be declared down for the gap it is replaying.
    let since = now.saturating_sub(absent_for.saturating_add(opts.grace_ms));
    for s in source.series(&rule.selector.metric, since) {
        if !rule.selector.matches(&s.labels) {
            continue;
        }
        let Some(newest) = s.samples.iter().map(|x| x.0).max() else {
            continue;
        };
        let fp = fingerprint(&rule.name, &s.labels);
        let st = states
            .entry(fp)
            .or_insert_with(|| SeriesState::new(s.labels.clone(), now));
        st.last_seen_ms = Some(st.last_seen_ms.map_or(newest, |t| t.max(newest)));
    }
    for (fp, st) in states.iter_mut() {
        let Some(seen) = st.last_seen_ms else {
            continue;
        };
        let silent = now.saturating_sub(seen);
        let value = Some(silent.max(0) as f64 / 1000.0);
        let desired = (silent >= absent_for).then_some(Level::Critical);
        step(rule, opts, fp, st, desired, value, now, out);
    }
}

/// The window function over samples at or after `since`.
fn window_value(rule: &Rule, samples: &[(i64, f64)], since: i64) -> Option<f64> {
    let from = samples.partition_point(|x| x.0 < since);
    samples.get(from..).and_then(|s| rule.function.apply(s))
}

/// Level the value asks for. Hysteresis: a level already held (or exceeded) is kept while
/// the comparison holds against its clear threshold; a new level needs its fire threshold.
fn desired_level(rule: &Rule, value: Option<f64>, st: &SeriesState) -> Option<Level> {
    let v = value?;
    let held = if st.phase == Phase::Firing {
        st.level
    } else {
        None
    };
    let active = |t: Option<super::rule::LevelThreshold>, lvl: Level| {
        t.is_some_and(|t| {
            let threshold = if held.is_some_and(|h| h >= lvl) {
                t.clear
            } else {
                t.fire
            };
            rule.comparator.holds(v, threshold)
        })
    };
    if active(rule.thresholds.critical, Level::Critical) {
        Some(Level::Critical)
    } else if active(rule.thresholds.warning, Level::Warning) {
        Some(Level::Warning)
    } else {
        None
    }
}

#[allow(clippy::too_many_arguments)]
fn step(
    rule: &Rule,
    opts: &EngineOptions,
    fp: &str,
    st: &mut SeriesState,
    desired: Option<Level>,
    value: Option<f64>,
    now: i64,
    out: &mut Vec<Transition>,
) {
    if let Some(v) = value.filter(|v| v.is_finite()) {
        st.value = Some(v);
    }
    let ctx = Ctx {
        rule,
        opts,
        fp,
        now,
    };
    match (st.phase, desired) {
        (Phase::Inactive, None) => {}
        (Phase::Inactive, Some(l)) => {
            st.level = Some(l);
            st.since_ms = now;
            st.last_active_ms = now;
            if rule.for_ms <= 0 {
                st.phase = Phase::Firing;
                ctx.change(
                    st,
                    AlertState::Inactive,
                    AlertState::Firing,
                    None,
                    true,
                    out,
                );
            } else {
                st.phase = Phase::Pending;
                ctx.change(
                    st,
                    AlertState::Inactive,
                    AlertState::Pending,
                    None,
                    false,
                    out,
                );
            }
        }
        (Phase::Pending, None) => {
            st.phase = Phase::Inactive;
            st.since_ms = now;
            let lvl = st.level;
            ctx.change(
                st,
                AlertState::Pending,
                AlertState::Inactive,
                lvl,
                false,
                out,
            );
        }
        (Phase::Pending, Some(l)) => {
            st.level = Some(l);
            st.last_active_ms = now;
            if now.saturating_sub(st.since_ms) >= rule.for_ms {
                st.phase = Phase::Firing;
                st.since_ms = now;
                ctx.change(st, AlertState::Pending, AlertState::Firing, None, true, out);
            }
        }
        (Phase::Firing, Some(l)) => {
            st.last_active_ms = now;
            if st.level != Some(l) {
                let before = st.level;
                st.level = Some(l);
                ctx.change(
                    st,
                    AlertState::Firing,
                    AlertState::Firing,
                    before,
                    true,
                    out,
                );
            }
        }
        (Phase::Firing, None) => {
            if now.saturating_sub(st.last_active_ms) >= rule.keep_firing_for_ms {
                st.phase = Phase::Inactive;
                st.since_ms = now;
                let lvl = st.level;
                ctx.change(st, AlertState::Firing, AlertState::Resolved, lvl, true, out);
            }
        }
    }
    // End of flapping: tell the receivers where the series settled, under the same
    // fingerprint, so the incident opened by the flapping notice is updated or closed.
    if st.flapping && now.saturating_sub(st.last_change_ms) >= opts.flap_quiet_ms {
        st.flapping = false;
        st.changes_ms.clear();
        let to = if st.phase == Phase::Firing {
            AlertState::Firing
        } else {
            AlertState::Resolved
        };
        out.push(ctx.transition(st, AlertState::Flapping, to, st.level, true));
    }
}

struct Ctx<'a> {
    rule: &'a Rule,
    opts: &'a EngineOptions,
    fp: &'a str,
    now: i64,
}

impl Ctx<'_> {
    /// Records a change; `notifiable` changes count towards flap detection and are muted
    /// while flapping. Crossing the threshold emits exactly one `Flapping` notice.
    fn change(
        &self,
        st: &mut SeriesState,
        from: AlertState,
        to: AlertState,
        from_level: Option<Level>,
        notifiable: bool,
        out: &mut Vec<Transition>,
    ) {
        if !notifiable {
            out.push(self.transition(st, from, to, from_level, false));
            return;
        }
        let now = self.now;
        st.last_change_ms = now;
        st.changes_ms
            .retain(|t| now.saturating_sub(*t) < self.opts.flap_window_ms);
        st.changes_ms.push(now);
        // Only "more than threshold" matters, so older entries beyond that are dropped.
        let cap = self.opts.flap_threshold.saturating_add(1);
        if st.changes_ms.len() > cap {
            let excess = st.changes_ms.len() - cap;
            st.changes_ms.drain(..excess);
        }
        if st.flapping {
            out.push(self.transition(st, from, to, from_level, false));
        } else if st.changes_ms.len() > self.opts.flap_threshold {
            st.flapping = true;
            out.push(self.transition(st, from, to, from_level, false));
            out.push(self.transition(st, to, AlertState::Flapping, st.level, true));
        } else {
            out.push(self.transition(st, from, to, from_level, true));
        }
    }

    fn transition(
        &self,
        st: &SeriesState,
        from: AlertState,
        to: AlertState,
        from_level: Option<Level>,
        notify: bool,
    ) -> Transition {
        let rule = self.rule;
        let mut labels = st.labels.clone();
        labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert("alertname".to_owned(), rule.name.clone());
        labels.insert("severity".to_owned(), rule.severity.as_str().to_owned());
        let level = st.level.map_or("", Level::as_str);
        let mut annotations = BTreeMap::new();
        for (key, tmpl) in [
            ("summary", &rule.summary),
            ("description", &rule.description),
            ("runbook_url", &rule.runbook_url),
        ] {
            if !tmpl.is_empty() {
                annotations.insert(key.to_owned(), render(tmpl, &labels, st.value, level));
            }
        }
        Transition {
            rule: rule.name.clone(),
            fingerprint: self.fp.to_owned(),
            labels,
            from,
            to,
            from_level,
            level: st.level,
            severity: rule.severity,
            value: st.value,
            annotations,
            at_ms: self.now,
            notify,
        }
    }
}

/// Hex of the first 128 bits of SHA-256 over the length-prefixed rule name and sorted
/// labels: stable across restarts, platforms and Rust versions (unlike `DefaultHasher`).
pub fn fingerprint(rule: &str, labels: &Labels) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |s: &str| {
        ctx.update(&(s.len() as u64).to_le_bytes());
        ctx.update(s.as_bytes());
    };
    field(rule);
    for (k, v) in labels {
        field(k);
        field(v);
    }
    let digest = ctx.finish();
    digest
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
