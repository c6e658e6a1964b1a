//! Dry run of one rule: a fresh engine holding only that rule evaluates it once, at `now`,
//! over recent data, and reports every series it matched with the state it would be in.
//! Nothing is persisted and nothing is notified. A fresh engine has no history, so a rule
//! with `for` shows `pending` where its condition holds (it would fire once `for` has
//! passed), and an absence rule knows only series with a sample in its look-back — exactly
//! what the rule would see right after being added.

use std::collections::BTreeMap;

use serde::Serialize;

use super::engine::{AlertState, Engine, EngineOptions, Phase};
use super::rule::Rule;
use super::selector::Labels;
use super::source::SeriesSource;

/// One series the rule selected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRunSeries {
    pub fingerprint: String,
    /// Series labels + rule labels + `alertname` + `severity`, as an alert would carry.
    pub labels: Labels,
    /// `firing`, `pending` or `inactive`.
    pub state: &'static str,
    /// `warning` or `critical` while pending or firing.
    pub level: Option<&'static str>,
    /// The value the rule computed (seconds of silence for absence rules).
    pub value: Option<f64>,
    /// Rendered `summary`, `description`, `runbook_url` (firing and pending series).
    pub annotations: BTreeMap<String, String>,
}

/// What a dry run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    pub rule: String,
    pub at_ms: i64,
    /// Series (groups, for an aggregating rule) the rule selected, before `limit`.
    pub evaluated: usize,
    pub firing: usize,
    pub pending: usize,
    /// Firing first, then pending, then inactive; at most `limit`.
    pub series: Vec<DryRunSeries>,
    /// More series matched than `series` holds.
    pub truncated: bool,
}

/// Evaluates `rule` alone over `source` at `now_ms`; lists at most `limit` series.
pub fn dry_run(
    rule: Rule,
    mut opts: EngineOptions,
    source: &dyn SeriesSource,
    now_ms: i64,
    limit: usize,
) -> DryRun {
    // No restart to wait for: missing data counts as "condition not met" at once.
    opts.hold_missing_until_ms = 0;
    let name = rule.name.clone();
    let mut engine = Engine::new(vec![rule], opts);
    let transitions = engine.evaluate(source, now_ms);
    // The transitions carry the alert labels and rendered annotations of the series that
    // changed (inactive → pending or firing); inactive series get their labels built here.
    let mut by_fp: BTreeMap<&str, (&Labels, &BTreeMap<String, String>)> = BTreeMap::new();
    for t in &transitions {
        if matches!(t.to, AlertState::Firing | AlertState::Pending) {
            by_fp.insert(t.fingerprint.as_str(), (&t.labels, &t.annotations));
        }
    }
    let rule = &engine.rules()[0];
    let mut series: Vec<DryRunSeries> = Vec::new();
    if let Some(states) = engine.state().rules.get(&name) {
        for (fp, st) in states {
            let state = match st.phase {
                Phase::Firing => "firing",
                Phase::Pending => "pending",
                Phase::Inactive => "inactive",
            };
            let (labels, annotations) = match by_fp.get(fp.as_str()) {
                Some((l, a)) => ((*l).clone(), (*a).clone()),
                None => {
                    let mut l = st.labels.clone();
                    l.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                    l.insert("alertname".to_owned(), rule.name.clone());
                    l.insert("severity".to_owned(), rule.severity.as_str().to_owned());
                    (l, BTreeMap::new())
                }
            };
            series.push(DryRunSeries {
                fingerprint: fp.clone(),
                labels,
                state,
                level: (st.phase != Phase::Inactive)
                    .then(|| st.level.map(|l| l.as_str()))
                    .flatten(),
                value: st.value,
                annotations,
            });
        }
    }
    let rank = |s: &DryRunSeries| match s.state {
        "firing" => 0,
        "pending" => 1,
        _ => 2,
    };
    series.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.labels.cmp(&b.labels)));
    let evaluated = series.len();
    let firing = series.iter().filter(|s| s.state == "firing").count();
    let pending = series.iter().filter(|s| s.state == "pending").count();
    let truncated = series.len() > limit;
    series.truncate(limit);
    DryRun {
        rule: name,
        at_ms: now_ms,
        evaluated,
        firing,
        pending,
        series,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::{labels, rule};
    use crate::alert::MemorySource;

    #[test]
    fn alert_dry_run_reports_states_and_values() {
        let r = rule(
            "[[rule]]\nname = \"hot\"\nselector = 'temp'\nwarning = 50.0\ncritical = 90.0\n\
             summary = \"{{ $labels.host }} at {{ $value }}\"\n",
        );
        let mut src = MemorySource::new();
        src.push("temp", &labels(&[("host", "a")]), 99_000, 95.0);
        src.push("temp", &labels(&[("host", "b")]), 99_000, 60.0);
        src.push("temp", &labels(&[("host", "c")]), 99_000, 10.0);
        let out = dry_run(r, EngineOptions::default(), &src, 100_000, 10);
        assert_eq!((out.evaluated, out.firing, out.pending), (3, 2, 0));
        assert_eq!(out.series[0].labels["host"], "a");
        assert_eq!(out.series[0].level, Some("critical"));
        assert_eq!(out.series[0].annotations["summary"], "a at 95");
        assert_eq!(out.series[1].level, Some("warning"));
        assert_eq!(out.series[2].state, "inactive");
        assert_eq!(out.series[2].value, Some(10.0));
        assert_eq!(out.series[2].labels["alertname"], "hot");

        let slow =
            rule("[[rule]]\nname = \"slow\"\nselector = 'temp'\nfor = \"1m\"\ncritical = 90.0\n");
        let out = dry_run(slow, EngineOptions::default(), &src, 100_000, 0);
        assert_eq!((out.evaluated, out.firing, out.pending), (3, 0, 1));
        assert!(out.truncated && out.series.is_empty());
    }
}
