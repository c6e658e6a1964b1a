//! Alert rules: TOML `[[rule]]` tables parsed into `RawRule` (serde, `deny_unknown_fields`,
//! every field optional so a user table can override part of a built-in rule by name), then
//! validated into `Rule`. Errors name the rule and the key, and say why.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use mcpwatch_common::config::{self, ConfigError, Duration};
use serde::{Deserialize, Serialize};

use super::builtin::builtin_rules_raw;
use super::selector::{Labels, Selector};
use super::window::WindowFn;

/// A rules file: any number of `[[rule]]` tables. Serializable too, so rules can be stored
/// (SQLite, API) in the same form they are written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRulesFile {
    #[serde(default)]
    pub rule: Vec<RawRule>,
}

/// One `[[rule]]` as written. Defaults (applied in `Rule::validate`) are documented per field.
/// A table whose `name` is a built-in rule's overrides only the fields it sets. Durations are
/// written `<number><unit>` with unit ms, s, m, h or d (`"30s"`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Required, unique: letters, digits, `_`, `-`, `.`.
    pub name: String,
    /// Default true. `false` disables the rule (the way to turn a built-in rule off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Required: `metric{label="v", label!="v", label=~"re", label!~"re"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Optional second selector: the value is `f(selector) / f(divide_by)`, joined on
    /// identical label sets (e.g. used bytes / total bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divide_by: Option<String>,
    /// `last | avg | min | max | rate`. Default `last`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Window the function looks back over. Default `1m`; for `last` it is how stale the
    /// newest sample may be.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    #[schema(value_type = Option<String>)]
    pub window: Option<Duration>,
    /// `> | >= | < | <= | == | !=`. Default `>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// Warning threshold. At least one of `warning` / `critical` (or `absent_for`) is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    /// Critical threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    /// Hysteresis: once firing at warning, the level holds while the comparison still holds
    /// against this value. Default = `warning`. Must be on the non-firing side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning_clear: Option<f64>,
    /// Hysteresis for the critical level. Default = `critical`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical_clear: Option<f64>,
    /// Pending time before firing. Default `0s` (fire at once).
    #[serde(rename = "for")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    #[schema(value_type = Option<String>)]
    pub for_: Option<Duration>,
    /// Keep firing this long after the condition clears. Default `0s`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    #[schema(value_type = Option<String>)]
    pub keep_firing_for: Option<Duration>,
    /// Absence rule: fire when a series has had no sample for this long. Excludes
    /// thresholds, `op`, `function`, `divide_by` and `for`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    #[schema(value_type = Option<String>)]
    pub absent_for: Option<Duration>,
    /// `critical | high | medium | low`. Default `medium`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Extra labels on the alert (override series labels of the same name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotation templates: `{{ $labels.NAME }}`, `{{ $value }}`, `{{ $level }}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
}

/// `Duration` only implements `Deserialize`; write it back in the same `"30s"` form.
fn ser_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.to_string()),
        None => s.serialize_none(),
    }
}

impl RawRule {
    /// `over`'s set fields replace `self`'s; labels merge key by key.
    pub fn overlay(self, over: RawRule) -> RawRule {
        let labels = match (self.labels, over.labels) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            (a, b) => b.or(a),
        };
        RawRule {
            name: over.name,
            enabled: over.enabled.or(self.enabled),
            selector: over.selector.or(self.selector),
            divide_by: over.divide_by.or(self.divide_by),
            function: over.function.or(self.function),
            window: over.window.or(self.window),
            op: over.op.or(self.op),
            warning: over.warning.or(self.warning),
            critical: over.critical.or(self.critical),
            warning_clear: over.warning_clear.or(self.warning_clear),
            critical_clear: over.critical_clear.or(self.critical_clear),
            for_: over.for_.or(self.for_),
            keep_firing_for: over.keep_firing_for.or(self.keep_firing_for),
            absent_for: over.absent_for.or(self.absent_for),
            severity: over.severity.or(self.severity),
            labels,
            summary: over.summary.or(self.summary),
            description: over.description.or(self.description),
            runbook_url: over.runbook_url.or(self.runbook_url),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Comparator {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            ">" => Comparator::Gt,
            ">=" => Comparator::Ge,
            "<" => Comparator::Lt,
            "<=" => Comparator::Le,
            "==" => Comparator::Eq,
            "!=" => Comparator::Ne,
            _ => return None,
        })
    }

    /// `value OP threshold`; NaN never holds (not even for `!=`): no data is not a breach.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        match self {
            Comparator::Gt => value > threshold,
            Comparator::Ge => value >= threshold,
            Comparator::Lt => value < threshold,
            Comparator::Le => value <= threshold,
            Comparator::Eq => value == threshold,
            Comparator::Ne => value != threshold,
        }
    }

    /// +1 when larger values are worse, -1 when smaller are, 0 for `==` / `!=`.
    fn direction(self) -> i8 {
        match self {
            Comparator::Gt | Comparator::Ge => 1,
            Comparator::Lt | Comparator::Le => -1,
            Comparator::Eq | Comparator::Ne => 0,
        }
    }
}

/// Fire at `fire`; once at this level, stay while `OP clear` holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelThreshold {
    pub fire: f64,
    pub clear: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Thresholds {
    pub warning: Option<LevelThreshold>,
    pub critical: Option<LevelThreshold>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub selector: Selector,
    pub divide_by: Option<Selector>,
    pub function: WindowFn,
    pub window_ms: i64,
    pub comparator: Comparator,
    pub thresholds: Thresholds,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    /// `Some` for absence rules (which ignore function, comparator and thresholds).
    pub absent_for_ms: Option<i64>,
    pub severity: Severity,
    pub labels: Labels,
    pub summary: String,
    pub description: String,
    pub runbook_url: String,
}

/// Why a rule was rejected: the rule, the key, the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule}`: key `{key}`: {message}")]
pub struct RuleError {
    pub rule: String,
    pub key: String,
    pub message: String,
}

impl RuleError {
    fn new(rule: &str, key: &str, message: impl Into<String>) -> Self {
        RuleError {
            rule: rule.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// As a config error of the file the rule came from (key `rule.NAME.KEY`).
    pub fn into_config_error(self, path: &Path) -> ConfigError {
        ConfigError::invalid(
            path,
            &format!("rule.{}.{}", self.rule, self.key),
            self.message,
        )
    }
}

impl Rule {
    // Over 80 lines on purpose: one check per key, in the order of the table, each naming its
    // key; the involved checks are the helpers below.
    pub fn validate(raw: RawRule) -> Result<Rule, RuleError> {
        let name = raw.name.clone();
        let err = |key: &str, msg: String| RuleError::new(&name, key, msg);
        // Before any field moves out of `raw`.
        let absence_conflict = absence_conflict(&raw);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(err(
                "name",
                format!("invalid name {name:?} (letters, digits, `_`, `-`, `.`)"),
            ));
        }
        let selector_text = raw
            .selector
            .as_deref()
            .ok_or_else(|| err("selector", "missing".into()))?;
        let selector = Selector::parse(selector_text).map_err(|m| err("selector", m))?;
        let divide_by = raw
            .divide_by
            .as_deref()
            .map(Selector::parse)
            .transpose()
            .map_err(|m| err("divide_by", m))?;
        let severity = severity_of(raw.severity.as_deref()).map_err(|m| err("severity", m))?;
        let labels = raw.labels.unwrap_or_default();
        check_label_names(&labels).map_err(|m| err("labels", m))?;
        let keep_firing_for_ms = raw.keep_firing_for.map_or(0, Duration::as_millis_i64);
        let mut rule = Rule {
            name: name.clone(),
            selector,
            divide_by,
            function: WindowFn::Last,
            window_ms: 60_000,
            comparator: Comparator::Gt,
            thresholds: Thresholds::default(),
            for_ms: 0,
            keep_firing_for_ms,
            absent_for_ms: None,
            severity,
            labels,
            summary: raw.summary.unwrap_or_default(),
            description: raw.description.unwrap_or_default(),
            runbook_url: raw.runbook_url.unwrap_or_default(),
        };

        if let Some(absent) = raw.absent_for {
            if let Some(key) = absence_conflict {
                return Err(err(
                    key,
                    "cannot be combined with `absent_for` (an absence rule fires on missing data)"
                        .into(),
                ));
            }
            let ms = absent.as_millis_i64();
            if ms <= 0 {
                return Err(err("absent_for", "must be positive".into()));
            }
            rule.absent_for_ms = Some(ms);
            return Ok(rule);
        }

        let function_text = raw.function.as_deref().unwrap_or("last");
        rule.function = WindowFn::parse(function_text).ok_or_else(|| {
            err(
                "function",
                format!("unknown function {function_text:?} (last, avg, min, max, rate)"),
            )
        })?;
        rule.window_ms = raw.window.map_or(60_000, Duration::as_millis_i64);
        if rule.window_ms <= 0 {
            return Err(err("window", "must be positive".into()));
        }
        let op_text = raw.op.as_deref().unwrap_or(">");
        rule.comparator = Comparator::parse(op_text).ok_or_else(|| {
            err(
                "op",
                format!("unknown comparator {op_text:?} (>, >=, <, <=, ==, !=)"),
            )
        })?;
        rule.for_ms = raw.for_.map_or(0, Duration::as_millis_i64);

        let dir = rule.comparator.direction();
        let level = |key: &'static str, clear_key: &'static str, fire, clear| {
            level_threshold(key, clear_key, fire, clear, dir, op_text).map_err(|(k, m)| err(k, m))
        };
        rule.thresholds = Thresholds {
            warning: level("warning", "warning_clear", raw.warning, raw.warning_clear)?,
            critical: level(
                "critical",
                "critical_clear",
                raw.critical,
                raw.critical_clear,
            )?,
        };
        check_threshold_order(&rule.thresholds, dir, op_text).map_err(|(k, m)| err(k, m))?;
        Ok(rule)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.selector)
    }
}

/// Parses a rules file; `path` is for error messages only.
pub fn parse_rules(path: &Path, text: &str) -> Result<Vec<RawRule>, ConfigError> {
    config::parse::<RawRulesFile>(path, text).map(|f| f.rule)
}

/// `severity`: critical, high, medium (default) or low.
fn severity_of(text: Option<&str>) -> Result<Severity, String> {
    match text.unwrap_or("medium") {
        "critical" => Ok(Severity::Critical),
        "high" => Ok(Severity::High),
        "medium" => Ok(Severity::Medium),
        "low" => Ok(Severity::Low),
        other => Err(format!(
            "unknown severity {other:?} (critical, high, medium, low)"
        )),
    }
}

/// Rule label names: Prometheus-style, and none of the names that identify an alert.
fn check_label_names(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for k in labels.keys() {
        let ok = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!("invalid label name {k:?}"));
        }
        // These identify the alert and its host (the API's access scope): a rule must not be
        // able to file one host's alert under another.
        if ["host", "alertname", "severity", "level", "flapping"].contains(&k.as_str()) {
            return Err(format!("label {k:?} is reserved"));
        }
    }
    Ok(())
}

/// The first key set beside `absent_for` that an absence rule cannot use.
fn absence_conflict(raw: &RawRule) -> Option<&'static str> {
    let conflicts = [
        ("warning", raw.warning.is_some()),
        ("critical", raw.critical.is_some()),
        ("warning_clear", raw.warning_clear.is_some()),
        ("critical_clear", raw.critical_clear.is_some()),
        ("op", raw.op.is_some()),
        ("function", raw.function.is_some()),
        ("window", raw.window.is_some()),
        ("divide_by", raw.divide_by.is_some()),
        ("for", raw.for_.is_some()),
    ];
    conflicts.iter().find(|(_, set)| *set).map(|(key, _)| *key)
}

/// One level's fire threshold and its clear threshold (hysteresis), checked against the
/// comparator's direction `dir` (`op_text` for messages). Errors name the key at fault.
fn level_threshold(
    key: &'static str,
    clear_key: &'static str,
    fire: Option<f64>,
    clear: Option<f64>,
    dir: i8,
    op_text: &str,
) -> Result<Option<LevelThreshold>, (&'static str, String)> {
    let Some(fire) = fire else {
        if clear.is_some() {
            return Err((clear_key, format!("set without `{key}`")));
        }
        return Ok(None);
    };
    if !fire.is_finite() {
        return Err((key, "must be a finite number".into()));
    }
    let clear = match clear {
        None => fire,
        Some(c) if !c.is_finite() => return Err((clear_key, "must be a finite number".into())),
        Some(_) if dir == 0 => {
            return Err((
                clear_key,
                format!("no hysteresis with `{op_text}`: remove the clear threshold"),
            ))
        }
        Some(c) if (dir > 0 && c > fire) || (dir < 0 && c < fire) => {
            let side = if dir > 0 {
                "at or below"
            } else {
                "at or above"
            };
            return Err((
                clear_key,
                format!(
                    "{c} is on the wrong side: with `{op_text}` it must be {side} {key} = {fire}"
                ),
            ));
        }
        Some(c) => c,
    };
    Ok(Some(LevelThreshold { fire, clear }))
}

/// At least one level, and warning not beyond critical in the comparator's direction.
fn check_threshold_order(
    thresholds: &Thresholds,
    dir: i8,
    op_text: &str,
) -> Result<(), (&'static str, String)> {
    match thresholds {
        Thresholds {
            warning: None,
            critical: None,
        } => Err((
            "critical",
            "no threshold: set `warning` and/or `critical` (or `absent_for`)".into(),
        )),
        Thresholds {
            warning: Some(w),
            critical: Some(c),
        } if (dir > 0 && w.fire > c.fire) || (dir < 0 && w.fire < c.fire) => Err((
            "warning",
            format!(
                "warning = {} is beyond critical = {} for `{op_text}`",
                w.fire, c.fire
            ),
        )),
        _ => Ok(()),
    }
}

/// Validates user rules, overlaid on the built-in rules when `with_builtins` (a user rule
/// named like a built-in one overrides the fields it sets). Disabled rules are dropped.
pub fn validate_rules(user: Vec<RawRule>, with_builtins: bool) -> Result<Vec<Rule>, RuleError> {
    merge_rules(user, with_builtins)?
        .into_iter()
        .map(Rule::validate)
        .collect()
}

/// The effective rule definitions: user rules overlaid on the built-ins (when
/// `with_builtins`), disabled ones dropped, not yet validated.
pub fn merge_rules(user: Vec<RawRule>, with_builtins: bool) -> Result<Vec<RawRule>, RuleError> {
    let mut seen = HashSet::new();
    for r in &user {
        if !seen.insert(r.name.clone()) {
            return Err(RuleError::new(&r.name, "name", "defined twice"));
        }
    }
    let mut merged: Vec<RawRule> = if with_builtins {
        builtin_rules_raw()
    } else {
        Vec::new()
    };
    for r in user {
        match merged.iter().position(|b| b.name == r.name) {
            Some(i) => {
                let base = std::mem::take(&mut merged[i]);
                merged[i] = base.overlay(r);
            }
            None => merged.push(r),
        }
    }
    Ok(merged
        .into_iter()
        .filter(|r| r.enabled.unwrap_or(true))
        .collect())
}

/// Built-in rules overlaid with the rules of one TOML file, validated.
pub fn load_rules(path: &Path, text: &str) -> Result<Vec<Rule>, ConfigError> {
    let raw = parse_rules(path, text)?;
    validate_rules(raw, true).map_err(|e| e.into_config_error(path))
}

#[cfg(test)]
mod tests {
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
}
