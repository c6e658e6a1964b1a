//! Built-in rules, on by default. Written as TOML so they go through exactly the parser and
//! validation user rules do; a user `[[rule]]` with the same name overrides the fields it
//! sets (e.g. `warning = 0.7`), and `enabled = false` turns one off.
//!
//! Memory and disk use `divide_by` (used / total, joined on identical labels) instead of a
//! derived ratio series, so the agent and store need nothing extra.

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
    use super::super::rule::{load_rules, validate_rules, Comparator};
    use super::*;

    #[test]
    fn alert_builtin_rules_valid() {
        let rules = validate_rules(Vec::new(), true).expect("built-ins validate");
        assert_eq!(rules.len(), 11);
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
        assert_eq!(rules.len(), 10);
        let cpu = rules
            .iter()
            .find(|r| r.name == "host_cpu_high")
            .expect("present");
        assert_eq!(cpu.thresholds.warning.map(|t| t.fire), Some(0.7));
        assert_eq!(cpu.thresholds.critical.map(|t| t.fire), Some(0.95));
        assert_eq!(cpu.comparator, Comparator::Gt);
        assert!(!rules.iter().any(|r| r.name == "mcp_tool_drift"));
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
