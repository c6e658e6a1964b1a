//! Alert rules: `RawRule` tables (see `raw_rule.rs`) validated into `Rule`, and the merge of
//! user rules over the built-in ones. Errors name the rule and the key, and say why.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use mcpwatch_common::config::{ConfigError, Duration};
use serde::{Deserialize, Serialize};

use super::builtin::builtin_rules_raw;
use super::owner::OwnerScope;
pub use super::raw_rule::{parse_rules, RawRule, RawRulesFile};
use super::selector::{Labels, Selector};
use super::window::WindowFn;

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
    /// The function applied to each series (`Increase` for quantile rules).
    pub function: WindowFn,
    /// `Some(q)`: the series are histogram buckets and the value is their q-quantile.
    pub quantile: Option<f64>,
    /// `Some`: values summed per `host` + these labels (sorted, deduplicated, `host` included).
    pub sum_by: Option<Vec<String>>,
    /// With `divide_by`: groups whose denominator is below this are not compared.
    pub min_denominator: Option<f64>,
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
    /// `Some`: the rule only reads series of hosts inside this scope.
    pub owner: Option<OwnerScope>,
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
        if divide_by.is_some()
            && (selector.name.is_some() || divide_by.as_ref().is_some_and(|d| d.name.is_some()))
        {
            return Err(err(
                "divide_by",
                "a ratio needs one metric on each side, not a `__name__` pattern".into(),
            ));
        }
        let severity = severity_of(raw.severity.as_deref()).map_err(|m| err("severity", m))?;
        let labels = raw.labels.unwrap_or_default();
        check_label_names(&labels).map_err(|m| err("labels", m))?;
        let keep_firing_for_ms = raw.keep_firing_for.map_or(0, Duration::as_millis_i64);
        let owner = OwnerScope::parse(raw.owner.as_deref().unwrap_or_default())
            .map_err(|m| err("owner", m))?;
        let mut rule = Rule {
            name: name.clone(),
            selector,
            divide_by,
            function: WindowFn::Last,
            quantile: None,
            sum_by: None,
            min_denominator: None,
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
            owner,
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

        let shape = Shape {
            function: raw.function.as_deref(),
            quantile: raw.quantile,
            sum_by: raw.sum_by,
            min_denominator: raw.min_denominator,
        };
        set_function(&mut rule, shape).map_err(|(k, m)| err(k, m))?;
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

/// Prometheus-style label name: a letter or `_`, then letters, digits and `_`.
fn is_label_name(k: &str) -> bool {
    k.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Rule label names: Prometheus-style, and none of the names that identify an alert.
fn check_label_names(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for k in labels.keys() {
        if !is_label_name(k) {
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

/// The keys of a `RawRule` that say what value a rule computes.
struct Shape<'a> {
    function: Option<&'a str>,
    quantile: Option<f64>,
    sum_by: Option<Vec<String>>,
    min_denominator: Option<f64>,
}

/// `function`, `quantile`, `sum_by` and `min_denominator` into `rule` (its selector and
/// `divide_by` already set); errors name the key at fault.
fn set_function(rule: &mut Rule, raw: Shape<'_>) -> Result<(), (&'static str, String)> {
    let text = raw.function.unwrap_or("last");
    (rule.function, rule.quantile) = function_of(text, raw.quantile, &rule.selector)?;
    if rule.quantile.is_some() && rule.divide_by.is_some() {
        return Err((
            "divide_by",
            "cannot be combined with `function = \"quantile\"`".into(),
        ));
    }
    rule.sum_by = match raw.sum_by {
        None => None,
        Some(l) => Some(sum_by_of(l, rule.quantile.is_some()).map_err(|m| ("sum_by", m))?),
    };
    rule.min_denominator = match (raw.min_denominator, &rule.divide_by) {
        (None, _) => None,
        (Some(_), None) => return Err(("min_denominator", "set without `divide_by`".into())),
        (Some(m), Some(_)) if !m.is_finite() || m < 0.0 => {
            return Err((
                "min_denominator",
                "must be a finite number, 0 or more".into(),
            ))
        }
        (Some(m), Some(_)) => Some(m),
    };
    Ok(())
}

/// `function` (and `quantile`) as the per-series function and the quantile, if any; errors
/// name the key at fault.
fn function_of(
    text: &str,
    quantile: Option<f64>,
    selector: &Selector,
) -> Result<(WindowFn, Option<f64>), (&'static str, String)> {
    if text != "quantile" {
        if quantile.is_some() {
            return Err(("quantile", "only with `function = \"quantile\"`".into()));
        }
        let f = WindowFn::parse(text).ok_or_else(|| {
            (
                "function",
                format!(
                    "unknown function {text:?} (last, avg, min, max, rate, increase, time_until, quantile)"
                ),
            )
        })?;
        return Ok((f, None));
    }
    let q = quantile.ok_or(("quantile", "required with `function = \"quantile\"`".into()))?;
    if !(0.0..=1.0).contains(&q) {
        return Err(("quantile", format!("{q} is not between 0 and 1")));
    }
    if !selector.metric.ends_with("_bucket") {
        return Err((
            "selector",
            format!(
                "`function = \"quantile\"` reads a histogram's `_bucket` series; `{}` is not one",
                selector.metric
            ),
        ));
    }
    Ok((WindowFn::Increase, Some(q)))
}

/// Most labels `sum_by` may name.
const MAX_SUM_BY: usize = 16;

/// `sum_by`: valid label names (not `le` for a quantile, whose buckets are summed by it),
/// returned sorted, deduplicated, with `host`.
fn sum_by_of(mut labels: Vec<String>, quantile: bool) -> Result<Vec<String>, String> {
    if labels.len() > MAX_SUM_BY {
        return Err(format!("at most {MAX_SUM_BY} labels"));
    }
    if let Some(bad) = labels.iter().find(|l| !is_label_name(l)) {
        return Err(format!("invalid label name {bad:?}"));
    }
    if quantile && labels.iter().any(|l| l == "le") {
        return Err("`le` is the bucket bound a quantile sums by; leave it out".into());
    }
    labels.push("host".to_owned());
    labels.sort();
    labels.dedup();
    Ok(labels)
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
        ("quantile", raw.quantile.is_some()),
        ("sum_by", raw.sum_by.is_some()),
        ("min_denominator", raw.min_denominator.is_some()),
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
#[path = "rule_tests.rs"]
mod tests;
