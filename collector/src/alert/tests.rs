//! Engine tests: pure, every timestamp explicit, no sleeps.

use std::path::Path;

use super::engine::{AlertState, Engine, EngineOptions, Transition};
use super::rule::{parse_rules, validate_rules, Level, Rule};
use super::selector::Labels;
use super::source::MemorySource;

fn rules(toml: &str) -> Vec<Rule> {
    let raw = parse_rules(Path::new("test.toml"), toml).expect("parses");
    validate_rules(raw, false).expect("valid")
}

/// A label set from pairs; shared by the alert modules' tests.
pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The one rule of a `[[rule]]` TOML text, validated; shared by the alert modules' tests.
pub(super) fn rule(toml: &str) -> super::rule::Rule {
    let raw = super::parse_rules(std::path::Path::new("t.toml"), toml).expect("parses");
    super::validate_rules(raw, false).expect("valid").remove(0)
}

fn notified(ts: &[Transition]) -> Vec<(AlertState, Option<Level>)> {
    ts.iter()
        .filter(|t| t.notify)
        .map(|t| (t.to, t.level))
        .collect()
}

const CPU: &str = r#"
[[rule]]
name = "cpu"
selector = 'cpu{cpu="total"}'
window = "10s"
critical = 95.0
critical_clear = 90.0
warning = 80.0
warning_clear = 75.0
summary = "{{ $labels.host }} at {{ $value }} ({{ $level }})"
"#;

/// Feeds one sample at `t` and evaluates at `t`.
fn feed(e: &mut Engine, src: &mut MemorySource, l: &Labels, t: i64, v: f64) -> Vec<Transition> {
    src.push("cpu", l, t, v);
    e.evaluate_metrics(src, ["cpu"], t)
}

#[test]
fn alert_hysteresis_no_flapping_around_threshold() {
    let mut e = Engine::new(rules(CPU), EngineOptions::default());
    let mut src = MemorySource::new();
    let l = labels(&[("host", "a"), ("cpu", "total")]);
    let mut all = Vec::new();
    for i in 0..40 {
        let v = if i % 2 == 0 { 95.1 } else { 94.9 };
        // `last` over a 10 s window: each evaluation sees the newest sample.
        all.extend(feed(&mut e, &mut src, &l, i * 1000, v));
    }
    assert_eq!(
        notified(&all),
        vec![(AlertState::Firing, Some(Level::Critical))]
    );
    assert_eq!(all[0].annotations["summary"], "a at 95.1 (critical)");
    // Below the critical clear threshold: de-escalates to warning, then resolves below 75.
    let t = feed(&mut e, &mut src, &l, 41_000, 89.0);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Firing, Some(Level::Warning))]
    );
    assert_eq!(t[0].from_level, Some(Level::Critical));
    assert!(notified(&feed(&mut e, &mut src, &l, 42_000, 76.0)).is_empty());
    let t = feed(&mut e, &mut src, &l, 43_000, 74.0);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Resolved, Some(Level::Warning))]
    );
}

#[test]
fn alert_escalation_and_de_escalation() {
    let mut e = Engine::new(rules(CPU), EngineOptions::default());
    let mut src = MemorySource::new();
    let l = labels(&[("host", "a"), ("cpu", "total")]);
    let t = feed(&mut e, &mut src, &l, 0, 85.0);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Firing, Some(Level::Warning))]
    );
    let t = feed(&mut e, &mut src, &l, 1000, 97.0);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Firing, Some(Level::Critical))]
    );
    assert_eq!(t[0].from, AlertState::Firing);
    assert_eq!(t[0].from_level, Some(Level::Warning));
    // Same fingerprint throughout.
    let fp = t[0].fingerprint.clone();
    let t = feed(&mut e, &mut src, &l, 2000, 85.0);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Firing, Some(Level::Warning))]
    );
    assert_eq!(t[0].fingerprint, fp);
    assert_eq!(fp.len(), 32);
}

#[test]
fn alert_for_pending_then_firing_and_cancel() {
    let toml = r#"
[[rule]]
name = "up"
selector = "up"
op = "=="
critical = 0.0
window = "10s"
for = "30s"
"#;
    let mut e = Engine::new(rules(toml), EngineOptions::default());
    let mut src = MemorySource::new();
    let l = labels(&[("server", "s")]);
    let mut step = |src: &mut MemorySource, t: i64, v: f64| {
        src.push("up", &l, t, v);
        e.evaluate(src, t)
    };
    let t = step(&mut src, 0, 0.0);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].to, t[0].notify), (AlertState::Pending, false));
    // Recovers before 30 s: pending cancelled, nothing notified.
    assert!(notified(&step(&mut src, 10_000, 0.0)).is_empty());
    let t = step(&mut src, 20_000, 1.0);
    assert_eq!(
        (t[0].from, t[0].to, t[0].notify),
        (AlertState::Pending, AlertState::Inactive, false)
    );
    // Down again: fires only once 30 s have passed since pending began.
    step(&mut src, 40_000, 0.0);
    assert!(notified(&step(&mut src, 69_000, 0.0)).is_empty());
    let t = step(&mut src, 70_000, 0.0);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Firing, Some(Level::Critical))]
    );
}

#[test]
fn alert_keep_firing_for() {
    let toml = r#"
[[rule]]
name = "r"
selector = "m"
critical = 1.0
window = "5s"
keep_firing_for = "20s"
"#;
    let mut e = Engine::new(rules(toml), EngineOptions::default());
    let mut src = MemorySource::new();
    let l = Labels::new();
    src.push("m", &l, 0, 5.0);
    assert_eq!(notified(&e.evaluate(&src, 0)).len(), 1);
    src.push("m", &l, 1000, 0.0);
    assert!(e.evaluate(&src, 1000).is_empty());
    assert!(
        e.evaluate(&src, 19_999).is_empty(),
        "still within keep_firing_for"
    );
    // Condition true again within keep_firing_for: no new notification, timer restarts.
    src.push("m", &l, 21_000, 5.0);
    assert!(e.evaluate(&src, 21_000).is_empty());
    src.push("m", &l, 22_000, 0.0);
    assert!(e.evaluate(&src, 40_000).is_empty());
    let t = e.evaluate(&src, 41_000);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Resolved, Some(Level::Critical))]
    );
}

#[test]
fn alert_flapping_one_notice_stable_fingerprint() {
    let toml = r#"
[[rule]]
name = "r"
selector = "m"
critical = 1.0
window = "5s"
"#;
    let opts = EngineOptions::default();
    let mut e = Engine::new(rules(toml), opts);
    let mut src = MemorySource::new();
    let l = labels(&[("host", "h")]);
    let mut all = Vec::new();
    for i in 0..100 {
        let t = i * 1000;
        src.push("m", &l, t, if i % 2 == 0 { 5.0 } else { 0.0 });
        all.extend(e.evaluate(&src, t));
    }
    let flapping = all.iter().filter(|t| t.to == AlertState::Flapping).count();
    assert_eq!(flapping, 1);
    // Notified before flapping: exactly `flap_threshold` changes, then the notice.
    let sent: Vec<_> = all.iter().filter(|t| t.notify).collect();
    assert_eq!(sent.len(), opts.flap_threshold + 1);
    let fp = &all[0].fingerprint;
    assert!(all.iter().all(|t| &t.fingerprint == fp));
    // Stable (resolved) for the quiet period: one resolve under the same fingerprint.
    let last = 99_000;
    src.push("m", &l, last + 1000, 0.0);
    let mut after = Vec::new();
    let mut t = last + 1000;
    while t <= last + opts.flap_quiet_ms + 2000 {
        src.push("m", &l, t, 0.0);
        after.extend(e.evaluate(&src, t));
        t += 1000;
    }
    let sent: Vec<_> = after.iter().filter(|t| t.notify).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].from, sent[0].to),
        (AlertState::Flapping, AlertState::Resolved)
    );
    assert_eq!(&sent[0].fingerprint, fp);
    // Afterwards it notifies normally again.
    src.push("m", &l, t, 5.0);
    assert_eq!(notified(&e.evaluate(&src, t)).len(), 1);
}

#[test]
fn alert_absence_fires_and_resolves() {
    let toml = r#"
[[rule]]
name = "host_down"
selector = "uptime"
absent_for = "30s"
severity = "critical"
summary = "{{ $labels.host }} silent for {{ $value }} s"
"#;
    let mut e = Engine::new(rules(toml), EngineOptions::default());
    let mut src = MemorySource::new();
    let l = labels(&[("host", "h")]);
    for t in (0..=10_000).step_by(1000) {
        src.push("uptime", &l, t, t as f64);
        assert!(e.evaluate(&src, t).is_empty());
    }
    assert!(e.evaluate(&src, 39_999).is_empty());
    let t = e.evaluate(&src, 40_000);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Firing, Some(Level::Critical))]
    );
    assert_eq!(t[0].annotations["summary"], "h silent for 30 s");
    // Still down an hour later: no repeat from the engine (repeats are the router's job).
    assert!(e.evaluate(&src, 3_600_000).is_empty());
    src.push("uptime", &l, 3_601_000, 1.0);
    let t = e.evaluate_metrics(&src, ["uptime"], 3_601_000);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Resolved, Some(Level::Critical))]
    );
}

#[test]
fn alert_late_data_never_fires() {
    let mut e = Engine::new(rules(CPU), EngineOptions::default());
    let mut src = MemorySource::new();
    let l = labels(&[("host", "a"), ("cpu", "total")]);
    let now = 10_000_000;
    // A spool replay: an hour of 99 % CPU, all older than window + grace.
    for i in 0..3600 {
        src.push("cpu", &l, now - 3_600_000 + i * 1000 - 40_000, 99.0);
    }
    assert!(e.evaluate(&src, now).is_empty());
    // An absence rule is not tripped by a series first seen through old samples either.
    let mut e = Engine::new(
        rules("[[rule]]\nname = \"down\"\nselector = 'cpu'\nabsent_for = \"30s\"\n"),
        EngineOptions::default(),
    );
    assert!(e.evaluate(&src, now).is_empty());
    assert!(e.evaluate(&src, now + 60_000).is_empty());
}

#[test]
fn alert_restore_from_snapshot_does_not_refire() {
    let mut e = Engine::new(rules(CPU), EngineOptions::default());
    let mut src = MemorySource::new();
    let l = labels(&[("host", "a"), ("cpu", "total")]);
    assert_eq!(notified(&feed(&mut e, &mut src, &l, 0, 99.0)).len(), 1);
    // Persist as the store would (JSON), restart, evaluate the same data.
    let json = serde_json::to_string(&e.snapshot()).expect("serializes");
    let state = serde_json::from_str(&json).expect("deserializes");
    let mut e2 = Engine::restore(rules(CPU), EngineOptions::default(), state);
    assert_eq!(e2.snapshot(), e.snapshot());
    assert!(feed(&mut e2, &mut src, &l, 1000, 99.0).is_empty());
    // The resolve is not lost after another restart.
    let mut e3 = Engine::restore(rules(CPU), EngineOptions::default(), e2.snapshot());
    let t = feed(&mut e3, &mut src, &l, 2000, 10.0);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Resolved, Some(Level::Critical))]
    );
    // Nor is it lost when the data simply stops (series vanished during the restart).
    let mut e4 = Engine::restore(rules(CPU), EngineOptions::default(), e2.snapshot());
    let t = e4.evaluate(&MemorySource::new(), 60_000);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Resolved, Some(Level::Critical))]
    );
}

#[test]
fn alert_regex_matchers_and_ratio_rule() {
    let toml = r#"
[[rule]]
name = "disk"
selector = 'used{host=~"web-.*", mountpoint!="/boot"}'
divide_by = "total"
window = "10s"
critical = 0.9
"#;
    let mut e = Engine::new(rules(toml), EngineOptions::default());
    let mut src = MemorySource::new();
    for (host, mp) in [
        ("web-1", "/"),
        ("web-1", "/boot"),
        ("db-1", "/"),
        ("xweb-1", "/"),
    ] {
        let l = labels(&[("host", host), ("mountpoint", mp)]);
        src.push("used", &l, 0, 95.0);
        src.push("total", &l, 0, 100.0);
    }
    let t = e.evaluate_metrics(&src, ["total"], 0);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].labels["host"], "web-1");
    assert_eq!(t[0].labels["mountpoint"], "/");
    assert_eq!(t[0].labels["alertname"], "disk");
    assert_eq!(t[0].value, Some(0.95));
    // Unrelated metrics do not trigger evaluation.
    assert!(e.evaluate_metrics(&src, ["other"], 0).is_empty());
}

#[test]
fn alert_rate_with_counter_reset_fires() {
    let toml = r#"
[[rule]]
name = "dropping"
selector = "dropped_total"
function = "rate"
window = "1m"
warning = 0.0
"#;
    let mut e = Engine::new(rules(toml), EngineOptions::default());
    let mut src = MemorySource::new();
    let l = labels(&[("host", "h")]);
    // Agent restarted: counter 50 → 0 → 0 is no increase, so no alert.
    for (t, v) in [(0, 50.0), (10_000, 0.0), (20_000, 0.0)] {
        src.push("dropped_total", &l, t, v);
    }
    assert!(e.evaluate(&src, 20_000).is_empty());
    // After the reset it increases: fires.
    src.push("dropped_total", &l, 30_000, 3.0);
    let t = e.evaluate(&src, 30_000);
    assert_eq!(
        notified(&t),
        vec![(AlertState::Firing, Some(Level::Warning))]
    );
    assert!((t[0].value.unwrap_or(0.0) - 0.1).abs() < 1e-9);
}

mod no_panic {
    use super::*;
    use crate::alert::selector::Selector;
    use crate::alert::template::render;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn alert_parsers_and_templates_never_panic(s in "\\PC{0,40}") {
            let _ = Selector::parse(&s);
            let _ = render(&s, &Labels::new(), Some(f64::NAN), "critical");
            let _ = parse_rules(Path::new("x.toml"), &s);
        }

        #[test]
        fn alert_engine_never_panics_on_odd_samples(
            samples in proptest::collection::vec(
                (any::<i64>(), prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)]),
                0..40,
            ),
            now in any::<i64>(),
        ) {
            let toml = format!(
                "{CPU}\n[[rule]]\nname = \"rate\"\nselector = 'cpu'\nfunction = \"rate\"\n\
                 warning = 0.0\n[[rule]]\nname = \"down\"\nselector = 'cpu'\nabsent_for = \"1s\"\n"
            );
            let mut e = Engine::new(rules(&toml), EngineOptions::default());
            let mut src = MemorySource::new();
            let l = labels(&[("cpu", "total")]);
            for (t, v) in samples {
                src.push("cpu", &l, t, v);
                let _ = e.evaluate(&src, t);
            }
            let _ = e.evaluate(&src, now);
            // Whatever happened, the state persists as JSON.
            let json = serde_json::to_string(&e.snapshot());
            prop_assert!(json.is_ok());
        }
    }
}

#[test]
fn alert_incremental_state_matches_snapshot() {
    let mut e = Engine::new(rules(CPU), EngineOptions::default());
    let mut src = MemorySource::new();
    let a = labels(&[("host", "a"), ("cpu", "total")]);
    let b = labels(&[("host", "b"), ("cpu", "total")]);
    // The store's table, kept by applying deltas.
    let mut table = std::collections::BTreeMap::new();
    let mut apply = |e: &mut Engine| {
        for d in e.take_dirty() {
            match d.state {
                Some(s) => table.insert((d.rule, d.fingerprint), s),
                None => table.remove(&(d.rule, d.fingerprint)),
            };
        }
        let mut full = std::collections::BTreeMap::new();
        for (rule, m) in &e.snapshot().rules {
            for (fp, s) in m {
                // Quiet inactive series need not be persisted.
                if s.phase != super::engine::Phase::Inactive || s.flapping {
                    full.insert((rule.clone(), fp.clone()), s.clone());
                }
            }
        }
        let persisted: std::collections::BTreeMap<_, _> = table
            .iter()
            .filter(|(_, s)| s.phase != super::engine::Phase::Inactive || s.flapping)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(persisted, full);
    };
    for (t, va, vb) in [(0, 99.0, 10.0), (1000, 99.0, 99.0), (2000, 10.0, 99.0)] {
        src.push("cpu", &a, t, va);
        src.push("cpu", &b, t, vb);
        e.evaluate(&src, t);
        apply(&mut e);
    }
    // Data stops: both resolve and are forgotten; the deltas delete their rows.
    e.evaluate(&MemorySource::new(), 100_000);
    apply(&mut e);
    assert!(e.take_dirty().is_empty());
}
