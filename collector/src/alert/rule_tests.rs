//! Tests of rule validation: defaults, hysteresis, and every rejection naming its key.

use super::*;

fn one(toml: &str) -> Result<Rule, RuleError> {
    let raw = parse_rules(Path::new("rules.toml"), toml).expect("parses");
    validate_rules(raw, false).map(|mut v| v.remove(0))
}

fn rejected(toml: &str, key: &str, needle: &str) {
    let e = one(toml).expect_err("must be rejected");
    assert_eq!(e.key, key, "{e}");
    assert!(e.message.contains(needle), "{e}");
    assert_eq!(e.rule, "r");
}

#[test]
fn alert_rule_valid_with_defaults_and_hysteresis() {
    let r = one(r#"[[rule]]
name = "cpu"
selector = 'mcpwatch_host_cpu_usage_ratio{cpu="total", host=~"web-.*"}'
function = "avg"
window = "5m"
critical = 95.0
critical_clear = 90.0
warning = 80.0
for = "30s"
severity = "high"
labels = { team = "ops" }
summary = "CPU {{ $value }} on {{ $labels.host }}"
"#)
    .expect("valid");
    assert_eq!(r.function, WindowFn::Avg);
    assert_eq!(r.window_ms, 300_000);
    assert_eq!(r.for_ms, 30_000);
    assert_eq!(r.comparator, Comparator::Gt);
    assert_eq!(
        r.thresholds.critical,
        Some(LevelThreshold {
            fire: 95.0,
            clear: 90.0
        })
    );
    assert_eq!(
        r.thresholds.warning,
        Some(LevelThreshold {
            fire: 80.0,
            clear: 80.0
        })
    );
    assert_eq!(r.severity, Severity::High);
}

#[test]
fn alert_invalid_rules_rejected_with_reasons() {
    let base = "[[rule]]\nname = \"r\"\nselector = 'm'\n";
    rejected(
        &format!("{base}critical = 1.0\nlabels = {{ host = \"other\" }}\n"),
        "labels",
        "reserved",
    );
    rejected(
        &format!("{base}critical = 95.0\ncritical_clear = 99.0\n"),
        "critical_clear",
        "wrong side",
    );
    rejected(
        &format!("{base}op = \"<\"\ncritical = 5.0\ncritical_clear = 1.0\n"),
        "critical_clear",
        "wrong side",
    );
    rejected(
        &format!("{base}op = \"==\"\ncritical = 0.0\ncritical_clear = 1.0\n"),
        "critical_clear",
        "no hysteresis",
    );
    rejected(base, "critical", "no threshold");
    rejected(
        &format!("{base}function = \"median\"\ncritical = 1.0\n"),
        "function",
        "unknown function",
    );
    rejected(
        &format!("{base}op = \"=>\"\ncritical = 1.0\n"),
        "op",
        "unknown comparator",
    );
    rejected(
        &format!("{base}severity = \"urgent\"\ncritical = 1.0\n"),
        "severity",
        "unknown severity",
    );
    rejected(
        &format!("{base}warning = 99.0\ncritical = 95.0\n"),
        "warning",
        "beyond critical",
    );
    rejected(
        &format!("{base}warning_clear = 1.0\ncritical = 2.0\n"),
        "warning_clear",
        "without",
    );
    rejected(
        &format!("{base}absent_for = \"30s\"\ncritical = 1.0\n"),
        "critical",
        "absent_for",
    );
    rejected(
        "[[rule]]\nname = \"r\"\nselector = 'm{host=~\"(\"}'\ncritical = 1.0\n",
        "selector",
        "invalid regex",
    );
    rejected(
        "[[rule]]\nname = \"r\"\ncritical = 1.0\n",
        "selector",
        "missing",
    );
    rejected(
        &format!("{base}function = \"quantile\"\ncritical = 1.0\n"),
        "quantile",
        "required",
    );
    rejected(
        &format!("{base}function = \"quantile\"\nquantile = 0.9\ncritical = 1.0\n"),
        "selector",
        "_bucket",
    );
    rejected(
        "[[rule]]\nname = \"r\"\nselector = 'm_bucket'\nfunction = \"quantile\"\n\
         quantile = 1.5\ncritical = 1.0\n",
        "quantile",
        "between 0 and 1",
    );
    rejected(
        "[[rule]]\nname = \"r\"\nselector = 'm_bucket'\nfunction = \"quantile\"\n\
         quantile = 0.5\ndivide_by = 'n'\ncritical = 1.0\n",
        "divide_by",
        "quantile",
    );
    rejected(
        "[[rule]]\nname = \"r\"\nselector = 'm_bucket'\nfunction = \"quantile\"\n\
         quantile = 0.5\nsum_by = [\"le\"]\ncritical = 1.0\n",
        "sum_by",
        "le",
    );
    rejected(
        &format!("{base}quantile = 0.5\ncritical = 1.0\n"),
        "quantile",
        "only with",
    );
    rejected(
        &format!("{base}sum_by = [\"9x\"]\ncritical = 1.0\n"),
        "sum_by",
        "invalid label name",
    );
    rejected(
        &format!("{base}min_denominator = 20.0\ncritical = 1.0\n"),
        "min_denominator",
        "without `divide_by`",
    );
    rejected(
        &format!("{base}divide_by = 'n'\nmin_denominator = -1.0\ncritical = 1.0\n"),
        "min_denominator",
        "0 or more",
    );
    rejected(
        &format!("{base}absent_for = \"30s\"\nsum_by = [\"server\"]\n"),
        "sum_by",
        "absent_for",
    );
    // Unknown keys are caught by serde, with the key named.
    let e = parse_rules(
        Path::new("rules.toml"),
        "[[rule]]\nname = \"r\"\ncriticall = 1.0\n",
    )
    .expect_err("unknown key");
    assert!(e.to_string().contains("criticall"), "{e}");
    // Duplicates.
    let raw = parse_rules(
        Path::new("rules.toml"),
        "[[rule]]\nname = \"r\"\n[[rule]]\nname = \"r\"\n",
    )
    .expect("parses");
    assert!(validate_rules(raw, false).is_err());
    // As a config error, the dotted key names the rule.
    let e = load_rules(
        Path::new("rules.toml"),
        &format!("{base}op = \"~\"\ncritical = 1.0\n"),
    )
    .expect_err("rejected");
    assert!(e.to_string().contains("rule.r.op"), "{e}");
}

#[test]
fn alert_rule_aggregation_keys() {
    let r = one(
        "[[rule]]\nname = \"r\"\nselector = 'lat_bucket{server=\"a\"}'\n\
         function = \"quantile\"\nquantile = 0.99\nsum_by = [\"tool\", \"host\", \"tool\"]\n\
         warning = 1.0\n",
    )
    .expect("valid");
    assert_eq!(r.function, WindowFn::Increase);
    assert_eq!(r.quantile, Some(0.99));
    assert_eq!(r.sum_by, Some(vec!["host".to_owned(), "tool".to_owned()]));
    let r = one(
        "[[rule]]\nname = \"r\"\nselector = 'e'\ndivide_by = 'c'\nfunction = \"increase\"\n\
         min_denominator = 20.0\nwarning = 0.1\n",
    )
    .expect("valid");
    assert_eq!(r.function, WindowFn::Increase);
    assert_eq!((r.quantile, r.min_denominator), (None, Some(20.0)));
    assert_eq!(r.sum_by, None);
}
