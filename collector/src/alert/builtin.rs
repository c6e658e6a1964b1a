//! Built-in rules, on by default. Written as TOML so they go through exactly the parser and
//! validation user rules do; a user `[[rule]]` with the same name overrides the fields it
//! sets (e.g. `warning = 0.7`), and `enabled = false` turns one off.
//!
//! Memory and disk use `divide_by` (used / total, joined on identical labels) instead of a
//! derived ratio series, so the agent and store need nothing extra. The gateway's tool rules
//! read its counters and histogram as the agent sends them (cumulative): `increase` and
//! `quantile` over the window, summed per host, server and tool. A `tool_error` (the tool
//! answered `isError: true`) counts as a failure; a cancelled call does not.

use std::path::Path;

use super::rule::{parse_rules, RawRule};

pub const BUILTIN_RULES_TOML: &str = r#"
[[rule]]
name = "host_down"
selector = "mcpwatch_host_uptime_seconds"
absent_for = "30s"
severity = "critical"
summary = "Host {{ $labels.host }} is down"
description = "No data from host {{ $labels.host }} for {{ $value }} s."

[[rule]]
name = "mcp_server_down"
selector = "mcpwatch_server_up"
op = "=="
critical = 0.0
window = "1m"
for = "15s"
severity = "high"
summary = "MCP server {{ $labels.server }} on {{ $labels.host }} is down"

[[rule]]
name = "mcp_server_unhealthy"
selector = "mcpwatch_server_healthy"
op = "=="
warning = 0.0
window = "1m"
for = "30s"
severity = "medium"
summary = "MCP server {{ $labels.server }} on {{ $labels.host }} fails its health probe"

[[rule]]
name = "mcp_server_crashlooping"
selector = "mcpwatch_server_crashloop_attempt"
op = ">"
warning = 0.0
critical = 3.0
window = "1m"
severity = "high"
summary = "MCP server {{ $labels.server }} on {{ $labels.host }} is crash-looping (attempt {{ $value }})"

[[rule]]
name = "mcp_server_gave_up"
selector = "mcpwatch_server_gave_up"
op = "=="
critical = 1.0
window = "1m"
severity = "critical"
summary = "Gave up restarting MCP server {{ $labels.server }} on {{ $labels.host }}"

[[rule]]
name = "mcp_tool_drift"
selector = "mcpwatch_server_tool_drift"
op = "=="
warning = 1.0
window = "1m"
severity = "medium"
summary = "Tools of MCP server {{ $labels.server }} on {{ $labels.host }} changed; approve or investigate"

[[rule]]
name = "mcp_tool_error_ratio_high"
selector = 'mcpwatch_mcp_tool_calls_total{outcome!~"ok|cancelled"}'
divide_by = "mcpwatch_mcp_tool_calls_total"
function = "increase"
sum_by = ["server", "tool"]
min_denominator = 20.0
window = "5m"
op = ">"
warning = 0.05
critical = 0.20
severity = "high"
summary = "Tool {{ $labels.tool }} of MCP server {{ $labels.server }} on {{ $labels.host }} fails {{ $value }} of its calls ({{ $level }})"
description = "Calls that ended in a tool error, a JSON-RPC error, a timeout or a transport error, over the calls of the last 5 minutes (at least 20)."

[[rule]]
name = "mcp_tool_latency_high"
selector = "mcpwatch_mcp_tool_call_duration_seconds_bucket"
function = "quantile"
quantile = 0.95
sum_by = ["server", "tool"]
window = "5m"
op = ">"
warning = 5.0
severity = "medium"
summary = "Tool {{ $labels.tool }} of MCP server {{ $labels.server }} on {{ $labels.host }} is slow: p95 {{ $value }} s"

[[rule]]
name = "tls_certificate_expiring"
selector = "mcpwatch_tls_certificate_expiry_timestamp_seconds"
function = "time_until"
window = "10m"
op = "<"
warning = 1209600.0
critical = 259200.0
severity = "high"
summary = "The {{ $labels.role }} certificate {{ $labels.identity }} seen by {{ $labels.host }} expires in {{ $value }} s ({{ $level }})"
description = "Certificate serial {{ $labels.serial }}: warning 14 days, critical 3 days before its notAfter. Agents renew theirs after two thirds of its lifetime; one still expiring did not renew."

[[rule]]
name = "backup_failing"
selector = "mcpwatch_collector_backup_failing"
op = "=="
warning = 1.0
window = "1m"
severity = "high"
summary = "Backups of the collector's database are failing"
description = "The last backup attempt failed (snapshot, integrity check or write); see mcpwatch_collector_backup_failures_total and the collector's log. It resolves when a backup succeeds."

[[rule]]
name = "remote_write_lagging"
selector = "mcpwatch_collector_remote_write_lag_seconds"
function = "min"
window = "2m"
op = ">"
warning = 60.0
critical = 300.0
severity = "high"
summary = "Remote write to {{ $labels.endpoint }} is {{ $value }} s behind ({{ $level }})"
description = "The oldest batch not yet delivered has been waiting this long for two minutes: the receiver is down, refusing with 5xx/429, or slower than ingest. Nothing is lost while the raw samples are kept ([store] retention_raw)."

[[rule]]
name = "agent_dropping_samples"
selector = "mcpwatch_agent_dropped_samples_total"
function = "rate"
window = "5m"
op = ">"
warning = 0.0
severity = "medium"
summary = "Agent on {{ $labels.host }} drops samples ({{ $value }}/s): spool full"

[[rule]]
name = "host_cpu_high"
selector = 'mcpwatch_host_cpu_usage_ratio{cpu="total"}'
function = "avg"
window = "5m"
op = ">"
warning = 0.8
warning_clear = 0.75
critical = 0.95
critical_clear = 0.9
severity = "high"
summary = "CPU on {{ $labels.host }} at {{ $value }} ({{ $level }})"

[[rule]]
name = "host_memory_high"
selector = "mcpwatch_host_memory_used_bytes"
divide_by = "mcpwatch_host_memory_total_bytes"
function = "avg"
window = "5m"
op = ">"
warning = 0.8
warning_clear = 0.75
critical = 0.95
critical_clear = 0.9
severity = "high"
summary = "Memory on {{ $labels.host }} at {{ $value }} of total ({{ $level }})"

[[rule]]
name = "host_disk_full"
selector = 'mcpwatch_host_disk_used_bytes{fstype!~"tmpfs|devtmpfs|overlay|squashfs"}'
divide_by = "mcpwatch_host_disk_total_bytes"
function = "last"
window = "5m"
op = ">"
warning = 0.8
warning_clear = 0.78
critical = 0.95
critical_clear = 0.93
severity = "high"
summary = "Disk {{ $labels.mountpoint }} on {{ $labels.host }} at {{ $value }} full ({{ $level }})"

[[rule]]
name = "notification_receiver_failing"
selector = "mcpwatch_collector_notifications_failed_total"
function = "rate"
window = "5m"
op = ">"
warning = 0.0
severity = "high"
labels = { route = "fallback" }
summary = "Notifications to receiver {{ $labels.receiver }} are failing"

[[rule]]
name = "notification_dead_letters"
selector = "mcpwatch_collector_notification_dead_letters"
window = "1m"
op = ">"
warning = 0.0
severity = "high"
labels = { route = "fallback" }
summary = "{{ $value }} notifications to receiver {{ $labels.receiver }} are in the dead-letter list"
description = "They were given up. Fix the receiver, then retry them (POST /api/v1/notifications/dead/retry) or discard them."
"#;

/// The built-in rules as raw tables, ready to be overlaid by user rules.
pub fn builtin_rules_raw() -> Vec<RawRule> {
    // Invariant: BUILTIN_RULES_TOML is a constant checked by `alert_builtin_rules_valid`; a
    // failure here is a build-time bug, not an input error.
    parse_rules(Path::new("<builtin rules>"), BUILTIN_RULES_TOML)
        .expect("built-in rules parse (tested)")
}

#[cfg(test)]
mod tests {
    use super::super::rule::{load_rules, validate_rules, Comparator, Level, Rule};
    use super::*;
    use crate::alert::{Engine, EngineOptions, Labels, MemorySource};

    #[test]
    fn alert_builtin_rules_valid() {
        let rules = validate_rules(Vec::new(), true).expect("built-ins validate");
        assert_eq!(rules.len(), 17);
        let names: Vec<_> = rules.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"host_down"));
        let fallback = rules
            .iter()
            .find(|r| r.name == "notification_receiver_failing")
            .expect("present");
        assert_eq!(
            fallback.labels.get("route").map(String::as_str),
            Some("fallback")
        );
    }

    #[test]
    fn alert_builtin_rules_overridable_by_name() {
        let rules = load_rules(
            Path::new("rules.toml"),
            r#"
[[rule]]
name = "host_cpu_high"
warning = 0.7
warning_clear = 0.6
[[rule]]
name = "mcp_tool_drift"
enabled = false
"#,
        )
        .expect("valid");
        assert_eq!(rules.len(), 16);
        let cpu = rules
            .iter()
            .find(|r| r.name == "host_cpu_high")
            .expect("present");
        assert_eq!(cpu.thresholds.warning.map(|t| t.fire), Some(0.7));
        assert_eq!(cpu.thresholds.critical.map(|t| t.fire), Some(0.95));
        assert_eq!(cpu.comparator, Comparator::Gt);
        assert!(!rules.iter().any(|r| r.name == "mcp_tool_drift"));
    }

    /// The built-in rule `name` alone, in an engine.
    fn engine_with(name: &str) -> Engine {
        let rules: Vec<Rule> = validate_rules(Vec::new(), true)
            .expect("built-ins validate")
            .into_iter()
            .filter(|r| r.name == name)
            .collect();
        assert_eq!(rules.len(), 1);
        Engine::new(rules, EngineOptions::default())
    }

    fn tool_labels(tool: &str, extra: (&str, &str)) -> Labels {
        [("host", "h1"), ("server", "files"), ("tool", tool), extra]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Calls of `tool` from 0 (at 0 s) to `ok` and `failed` (at 60 s), evaluated at 60 s.
    fn error_ratio(ok: f64, failed: f64) -> Vec<crate::alert::Transition> {
        let mut e = engine_with("mcp_tool_error_ratio_high");
        let mut src = MemorySource::new();
        let m = "mcpwatch_mcp_tool_calls_total";
        for (outcome, n) in [("ok", ok), ("tool_error", failed), ("cancelled", 5.0)] {
            let l = tool_labels("read", ("outcome", outcome));
            src.push(m, &l, 0, 0.0);
            src.push(m, &l, 60_000, n);
        }
        e.evaluate(&src, 60_000)
    }

    #[test]
    fn alert_builtin_tool_error_ratio_levels_and_guard() {
        // 95 ok, 5 failing, 5 cancelled: 5/105 is under 5 %.
        assert!(error_ratio(95.0, 5.0).is_empty());
        // 10 failing of 110: warning; 30 of 110: critical.
        let t = error_ratio(100.0, 10.0);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].level, Some(Level::Warning));
        let t = error_ratio(80.0, 30.0);
        assert_eq!(t[0].level, Some(Level::Critical));
        // The alert is the tool's: host, server and tool, not the outcome.
        let l = &t[0].labels;
        assert_eq!(l["host"], "h1");
        assert_eq!(l["server"], "files");
        assert_eq!(l["tool"], "read");
        assert!(!l.contains_key("outcome"));
        assert!(t[0].annotations["summary"].contains("Tool read of MCP server files on h1"));
        // 14 failing + 5 cancelled = 19 calls: under the 20-call floor, nothing fires.
        assert!(error_ratio(0.0, 14.0).is_empty());
        assert_eq!(error_ratio(0.0, 15.0)[0].level, Some(Level::Critical));
    }

    /// The certificate rule's level for a certificate expiring `days` after the sample.
    fn certificate_level(days: f64) -> Option<Level> {
        let mut e = engine_with("tls_certificate_expiring");
        let mut src = MemorySource::new();
        let now_ms = 1_800_000_000_000;
        let l: Labels = [
            ("host", "h1"),
            ("role", "agent"),
            ("identity", "h1"),
            ("serial", "ab"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let not_after = now_ms as f64 / 1000.0 + days * 86_400.0;
        src.push(
            "mcpwatch_tls_certificate_expiry_timestamp_seconds",
            &l,
            now_ms,
            not_after,
        );
        e.evaluate(&src, now_ms).first().and_then(|t| t.level)
    }

    #[test]
    fn alert_builtin_certificate_expiring_warns_at_14_days_and_pages_at_3() {
        assert_eq!(certificate_level(30.0), None);
        assert_eq!(certificate_level(13.0), Some(Level::Warning));
        assert_eq!(certificate_level(2.0), Some(Level::Critical));
        assert_eq!(certificate_level(-1.0), Some(Level::Critical), "expired");
    }

    /// The level of `remote_write_lagging` after two minutes of `lags` (one every 10 s).
    fn lagging_level(lags: &[f64]) -> Option<Option<Level>> {
        let mut e = engine_with("remote_write_lagging");
        let mut src = MemorySource::new();
        let l: Labels = [("endpoint".to_owned(), "vm".to_owned())]
            .into_iter()
            .collect();
        let start = 1_800_000_000_000;
        let mut at = start;
        for (i, lag) in lags.iter().enumerate() {
            at = start + i as i64 * 10_000;
            src.push("mcpwatch_collector_remote_write_lag_seconds", &l, at, *lag);
        }
        let fired = e.evaluate(&src, at);
        fired.first().map(|t| {
            assert_eq!(t.labels["endpoint"], "vm");
            t.level
        })
    }

    #[test]
    fn alert_builtin_remote_write_lagging_needs_two_minutes_behind() {
        // A minute and more behind for the whole window warns; five minutes pages.
        assert_eq!(lagging_level(&[70.0; 13]), Some(Some(Level::Warning)));
        assert_eq!(lagging_level(&[400.0; 13]), Some(Some(Level::Critical)));
        // One batch delivered in the window (lag back to 0) is not lagging: `min`.
        let mut dip = [400.0; 13];
        dip[6] = 0.0;
        assert_eq!(lagging_level(&dip), None);
        assert_eq!(lagging_level(&[0.0; 13]), None);
    }

    #[test]
    fn alert_builtin_backup_failing_fires_on_the_collector_series() {
        let mut e = engine_with("backup_failing");
        let mut src = MemorySource::new();
        let none = Labels::new();
        src.push("mcpwatch_collector_backup_failing", &none, 1_000, 0.0);
        assert!(e.evaluate(&src, 1_000).is_empty());
        src.push("mcpwatch_collector_backup_failing", &none, 2_000, 1.0);
        let t = e.evaluate(&src, 2_000);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].labels["alertname"], "backup_failing");
        assert!(t[0].annotations["summary"].contains("Backups"));
    }

    #[test]
    fn alert_builtin_tool_latency_p95() {
        let mut e = engine_with("mcp_tool_latency_high");
        let mut src = MemorySource::new();
        let m = "mcpwatch_mcp_tool_call_duration_seconds_bucket";
        // 20 calls: 18 within 2.5 s, 2 between 5 and 10 s. p95 = rank 19 → (5, 10]: 7.5 s.
        for (le, n) in [
            ("1", 10.0),
            ("2.5", 18.0),
            ("5", 18.0),
            ("10", 20.0),
            ("+Inf", 20.0),
        ] {
            let l = tool_labels("search", ("le", le));
            src.push(m, &l, 0, 0.0);
            src.push(m, &l, 60_000, n);
        }
        let t = e.evaluate(&src, 60_000);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].value, Some(7.5));
        assert_eq!(t[0].level, Some(Level::Warning));
        assert!(!t[0].labels.contains_key("le"));
        assert_eq!(t[0].labels["tool"], "search");
    }

    #[test]
    fn alert_raw_rules_round_trip_through_json() {
        let raw = builtin_rules_raw();
        let json = serde_json::to_string(&raw).expect("serializes");
        assert!(json.contains("\"absent_for\":\"30s\""), "{json}");
        let back: Vec<RawRule> = serde_json::from_str(&json).expect("deserializes");
        let a = validate_rules(raw, false).expect("valid");
        let b = validate_rules(back, false).expect("valid");
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}
