//! Alert rules as written: the `[[rule]]` table (`RawRule`, serde with `deny_unknown_fields`,
//! every field optional so a user table can override part of a built-in rule by name), the
//! rules file, and the overlay of one table on another. `rule.rs` validates them.

use std::collections::BTreeMap;
use std::path::Path;

use mcpwatch_common::config::{self, ConfigError, Duration};
use serde::{Deserialize, Serialize};

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
    /// `last | avg | min | max | rate | increase | time_until | quantile`. Default `last`.
    /// `time_until` reads a series holding a Unix time (a certificate's notAfter) as the
    /// seconds left from its last sample. `increase` is
    /// a counter's growth over the window (a drop is a reset to zero, as in Prometheus; no
    /// extrapolation); `rate` is that per second. `quantile` reads a histogram: `selector`
    /// names its `_bucket` series, each bucket's increase over the window is taken, and the
    /// `quantile` is interpolated within its bucket as Prometheus's `histogram_quantile`
    /// does (one in the `+Inf` bucket reports the highest finite bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// With `function = "quantile"` (and only then): which quantile, from 0 to 1 (`0.95`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// Aggregation: the function's values of the series that share `host` and these
    /// labels are summed into one value per group, and the alert carries just those labels
    /// (`host` is always kept: an alert belongs to one host). E.g. `["server", "tool"]`.
    /// Without it every series is its own group (for `quantile`: every series but `le`).
    /// `divide_by` is summed the same way and joined on the group's labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum_by: Option<Vec<String>>,
    /// With `divide_by` (and only then): a group is compared only when the denominator is at
    /// least this (e.g. 20 calls in the window), so a handful of calls cannot make a ratio
    /// alert; below it the condition counts as not met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_denominator: Option<f64>,
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
    /// Owner scope, a host selector as in role bindings (`{team="a"}`): the rule evaluates
    /// only series of hosts inside it, and users whose `rules:write` covers it may change
    /// it. Default: none (fleet-wide; only an unscoped `rules:write` changes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
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
            quantile: over.quantile.or(self.quantile),
            sum_by: over.sum_by.or(self.sum_by),
            min_denominator: over.min_denominator.or(self.min_denominator),
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
            owner: over.owner.or(self.owner),
        }
    }
}

/// Parses a rules file; `path` is for error messages only.
pub fn parse_rules(path: &Path, text: &str) -> Result<Vec<RawRule>, ConfigError> {
    config::parse::<RawRulesFile>(path, text).map(|f| f.rule)
}
