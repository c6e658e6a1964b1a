//! One evaluation step of one (rule, series or group of series): the value (from
//! `aggregate.rs`), the level it asks for with hysteresis, `for` / `keep_firing_for`,
//! absence, flap detection, and the transitions that result. Called by
//! [`super::engine::Engine`] for each rule; pure like it.

use std::collections::{BTreeMap, HashSet};

use super::aggregate::{group_values, readable};
use super::engine::{AlertState, EngineOptions, Phase, SeriesState, Transition};
use super::rule::{Level, Rule};
use super::selector::Labels;
use super::source::{select, SeriesSource};
use super::template::render;

pub(super) fn eval_threshold(
    rule: &Rule,
    opts: &EngineOptions,
    states: &mut BTreeMap<String, SeriesState>,
    source: &dyn SeriesSource,
    now: i64,
    out: &mut Vec<Transition>,
    forgotten: &mut Vec<String>,
) {
    let since = now.saturating_sub(rule.window_ms.saturating_add(opts.grace_ms));
    let mut seen = HashSet::new();
    for (labels, value) in group_values(rule, source, since) {
        let fp = fingerprint(&rule.name, &labels);
        let st = states
            .entry(fp.clone())
            .or_insert_with(|| SeriesState::new(labels, now));
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

pub(super) fn eval_absent(
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
    for s in select(source, &rule.selector, since) {
        // A team's absence rule tracks only its hosts' series (see `aggregate::readable`).
        if !rule.selector.matches(&s.labels) || !readable(rule, source, &s.labels) {
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
        // A series whose host left the rule's owner scope is no longer the rule's to report:
        // it clears instead of turning absent.
        let inside = readable(rule, source, &st.labels);
        let desired = (inside && silent >= absent_for).then_some(Level::Critical);
        step(rule, opts, fp, st, desired, value, now, out);
    }
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
// Over 80 lines on purpose: the whole transition table of one series in one place, so
// every transition can be read against every other.
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
    mcpwatch_common::hex::encode(&digest.as_ref()[..16])
}
