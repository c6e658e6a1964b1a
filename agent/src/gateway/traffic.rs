//! The gateway's traffic metrics: every settled client request ([`CallEvent`]) counted and
//! timed per server, method and tool, with bounded labels. One [`TrafficMetrics`] serves
//! every server; it is the mux's [`CallSink`], renders itself on the agent's /metrics (a
//! prometheus-client collector, so histograms are real histograms) and turns itself into
//! samples for the spool each interval.
//!
//! **Bounded labels.** `method` is one of the MCP methods a client may send
//! ([`KNOWN_METHODS`]) or `_other`. `tool` is a name from the server's current tool list (as
//! the last successful probe saw it, at most [`MAX_TOOLS`] names) or `_other`, so a hostile
//! client sending 10,000 made-up tool names adds one series, not 10,000. Series of a tool
//! that leaves the list keep their counts (counters never go back) but get no new calls.
//! The call counters of every known tool (and `_other`) exist from 0 for every outcome, so
//! an alert rule's `increase` sees a tool's first call and first failure.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mcpwatch_common::wire::SeriesKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::call_event::{CallEvent, CallOutcome, CallSink};

/// The label for a method or tool outside the known set.
pub const OTHER: &str = "_other";

/// Tool names per server that get their own series; the rest fold into `_other`.
pub const MAX_TOOLS: usize = 256;

/// Client→server methods of MCP 2025-11-25 and 2026-07-28; anything else is `_other`.
pub const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

/// Upper bounds (seconds) of the duration histograms, with their label text; +Inf follows.
/// Around 5 s they are close enough for the `p95 > 5 s` rule to be read off the buckets.
pub const BUCKETS: &[(f64, &str)] = &[
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (5.0, "5"),
    (10.0, "10"),
    (30.0, "30"),
    (60.0, "60"),
];

const REQUESTS: &str = "mcpwatch_mcp_requests_total";
const REQUEST_DURATION: &str = "mcpwatch_mcp_request_duration_seconds";
const TOOL_CALLS: &str = "mcpwatch_mcp_tool_calls_total";
const TOOL_CALL_DURATION: &str = "mcpwatch_mcp_tool_call_duration_seconds";

/// A duration histogram: per-bucket counts (the last one is +Inf), sum and count.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|(bound, _)| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += secs;
        self.count += 1;
    }

    /// `(upper bound, count in this bucket)` as prometheus-client wants them.
    fn per_bucket(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .map(|(b, _)| *b)
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().copied())
            .collect()
    }

    /// Cumulative `_bucket` samples, then `_sum` and `_count`.
    fn samples(&self, name: &str, labels: &[(&str, &str)], out: &mut Vec<(SeriesKey, f64)>) {
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        let les = BUCKETS.iter().map(|(_, l)| *l).chain(["+Inf"]);
        for (le, n) in les.zip(self.buckets.iter()) {
            cumulative += n;
            let mut with_le = labels.to_vec();
            with_le.push(("le", le));
            out.push((SeriesKey::new(bucket.as_str(), &with_le), cumulative as f64));
        }
        out.push((SeriesKey::new(format!("{name}_sum"), labels), self.sum));
        out.push((
            SeriesKey::new(format!("{name}_count"), labels),
            self.count as f64,
        ));
    }
}

/// One server's figures. BTreeMaps keep the output in a stable order.
#[derive(Debug, Default)]
struct ServerTraffic {
    tools: HashSet<String>,
    requests: BTreeMap<(&'static str, &'static str), u64>,
    request_durations: BTreeMap<&'static str, Histogram>,
    tool_calls: BTreeMap<(String, &'static str), u64>,
    tool_durations: BTreeMap<String, Histogram>,
}

/// Every server's traffic figures. Cheap to share (`Arc`); all methods take `&self`.
#[derive(Debug, Default)]
pub struct TrafficMetrics {
    servers: Mutex<BTreeMap<Arc<str>, ServerTraffic>>,
}

impl TrafficMetrics {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, ServerTraffic>> {
        // Every update is a few map writes; a panic mid-update leaves counts usable.
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server's current tool names (from a successful probe); later calls to other
    /// names count as `_other`. Only the first [`MAX_TOOLS`] names (sorted) are kept.
    pub fn set_tools<'a>(&self, server: &str, names: impl IntoIterator<Item = &'a str>) {
        let mut names: Vec<&str> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(MAX_TOOLS);
        let mut servers = self.lock();
        let entry = servers.entry(Arc::from(server)).or_default();
        entry.tools = names.into_iter().map(str::to_owned).collect();
        // Every known tool's counters exist from 0, so a rule's `increase` over a window sees
        // the first call too (a series appearing at 1 would give it no baseline).
        for tool in entry.tools.iter().map(String::as_str).chain([OTHER]) {
            for outcome in CallOutcome::ALL {
                entry
                    .tool_calls
                    .entry((tool.to_owned(), outcome.as_str()))
                    .or_insert(0);
            }
        }
    }

    /// Forgets servers no longer configured (their series stop being reported).
    pub fn retain_servers(&self, keep: &HashSet<&str>) {
        self.lock().retain(|s, _| keep.contains(&**s));
    }

    /// Every series, for the spool.
    pub fn samples(&self) -> Vec<(SeriesKey, f64)> {
        let servers = self.lock();
        let mut out = Vec::new();
        for (server, t) in servers.iter() {
            let s = &**server;
            for ((method, outcome), n) in &t.requests {
                let labels = [("server", s), ("method", *method), ("outcome", *outcome)];
                out.push((SeriesKey::new(REQUESTS, &labels), *n as f64));
            }
            for (method, h) in &t.request_durations {
                h.samples(
                    REQUEST_DURATION,
                    &[("server", s), ("method", method)],
                    &mut out,
                );
            }
            for ((tool, outcome), n) in &t.tool_calls {
                let labels = [
                    ("server", s),
                    ("tool", tool.as_str()),
                    ("outcome", *outcome),
                ];
                out.push((SeriesKey::new(TOOL_CALLS, &labels), *n as f64));
            }
            for (tool, h) in &t.tool_durations {
                h.samples(
                    TOOL_CALL_DURATION,
                    &[("server", s), ("tool", tool.as_str())],
                    &mut out,
                );
            }
        }
        out
    }
}

fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or(OTHER)
}

impl CallSink for TrafficMetrics {
    fn record(&self, event: CallEvent) {
        let method = method_label(&event.method);
        let outcome = event.outcome.as_str();
        let mut servers = self.lock();
        let t = servers.entry(event.server).or_default();
        *t.requests.entry((method, outcome)).or_default() += 1;
        t.request_durations
            .entry(method)
            .or_default()
            .observe(event.duration);
        if method != "tools/call" {
            return;
        }
        let tool = match event.tool {
            Some(name) if t.tools.contains(&name) => name,
            _ => OTHER.to_owned(),
        };
        *t.tool_calls.entry((tool.clone(), outcome)).or_default() += 1;
        t.tool_durations
            .entry(tool)
            .or_default()
            .observe(event.duration);
    }
}

/// Counters are rendered under their family name: prometheus-client appends `_total`.
fn family(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Collector for TrafficMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let servers = self.lock();
        if servers.values().all(|t| t.requests.is_empty()) {
            return Ok(());
        }
        let mut m = encoder.encode_descriptor(
            family(REQUESTS),
            "MCP requests through the gateway by server, method and outcome",
            None,
            MetricType::Counter,
        )?;
        for (server, t) in servers.iter() {
            for ((method, outcome), n) in &t.requests {
                let labels = [
                    ("server", &**server),
                    ("method", method),
                    ("outcome", outcome),
                ];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, f64, f64>(&(*n as f64), None)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            REQUEST_DURATION,
            "Time from the gateway receiving an MCP request to its answer, by server and method",
            None,
            MetricType::Histogram,
        )?;
        for (server, t) in servers.iter() {
            for (method, h) in &t.request_durations {
                let labels = [("server", &**server), ("method", method)];
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    h.sum,
                    h.count,
                    &h.per_bucket(),
                    None,
                )?;
            }
        }
        if servers.values().all(|t| t.tool_calls.is_empty()) {
            return Ok(());
        }
        let mut m = encoder.encode_descriptor(
            family(TOOL_CALLS),
            "MCP tool calls through the gateway by server, tool and outcome (unknown tools as _other)",
            None,
            MetricType::Counter,
        )?;
        for (server, t) in servers.iter() {
            for ((tool, outcome), n) in &t.tool_calls {
                let labels = [("server", &**server), ("tool", tool), ("outcome", outcome)];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, f64, f64>(&(*n as f64), None)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            TOOL_CALL_DURATION,
            "Duration of MCP tool calls through the gateway by server and tool",
            None,
            MetricType::Histogram,
        )?;
        for (server, t) in servers.iter() {
            for (tool, h) in &t.tool_durations {
                let labels = [("server", &**server), ("tool", tool.as_str())];
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    h.sum,
                    h.count,
                    &h.per_bucket(),
                    None,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tool: Option<&str>, outcome: CallOutcome, ms: u64) -> CallEvent {
        CallEvent {
            server: "files".into(),
            method: "tools/call".into(),
            tool: tool.map(str::to_owned),
            outcome,
            duration: Duration::from_millis(ms),
        }
    }

    fn value(samples: &[(SeriesKey, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let key = SeriesKey::new(name, labels);
        samples.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    #[test]
    fn tool_calls_are_counted_per_tool_and_outcome_and_timed() {
        let m = TrafficMetrics::default();
        m.set_tools("files", ["read", "write"]);
        m.record(call(Some("read"), CallOutcome::Ok, 3));
        m.record(call(Some("read"), CallOutcome::ToolError, 700));
        m.record(call(Some("write"), CallOutcome::Timeout, 60_000));
        let s = m.samples();
        let calls = |tool, outcome| {
            value(
                &s,
                TOOL_CALLS,
                &[("server", "files"), ("tool", tool), ("outcome", outcome)],
            )
        };
        assert_eq!(calls("read", "ok"), Some(1.0));
        assert_eq!(calls("read", "tool_error"), Some(1.0));
        assert_eq!(calls("write", "timeout"), Some(1.0));
        let bucket = |tool, le| {
            value(
                &s,
                "mcpwatch_mcp_tool_call_duration_seconds_bucket",
                &[("server", "files"), ("tool", tool), ("le", le)],
            )
        };
        assert_eq!(bucket("read", "0.005"), Some(1.0));
        assert_eq!(bucket("read", "0.5"), Some(1.0));
        assert_eq!(bucket("read", "1"), Some(2.0));
        assert_eq!(bucket("read", "+Inf"), Some(2.0));
        assert_eq!(bucket("write", "30"), Some(0.0));
        assert_eq!(bucket("write", "60"), Some(1.0));
        let requests = value(
            &s,
            REQUESTS,
            &[
                ("server", "files"),
                ("method", "tools/call"),
                ("outcome", "ok"),
            ],
        );
        assert_eq!(requests, Some(1.0));
    }

    #[test]
    fn unknown_tools_and_methods_fold_into_other() {
        let m = TrafficMetrics::default();
        m.set_tools("files", ["read"]);
        for i in 0..10_000 {
            m.record(call(
                Some(&format!("bogus-{i}")),
                CallOutcome::JsonRpcError,
                1,
            ));
        }
        m.record(call(None, CallOutcome::JsonRpcError, 1));
        m.record(CallEvent {
            method: "x/made-up".into(),
            ..call(None, CallOutcome::JsonRpcError, 1)
        });
        let s = m.samples();
        let tool_series: HashSet<_> = s
            .iter()
            .filter(|(k, _)| k.name == TOOL_CALLS)
            .map(|(k, _)| k.clone())
            .collect();
        // `read` and `_other`, each outcome from 0: no series per made-up name.
        assert_eq!(
            tool_series.len(),
            2 * CallOutcome::ALL.len(),
            "{tool_series:?}"
        );
        let other = [
            ("server", "files"),
            ("tool", OTHER),
            ("outcome", "jsonrpc_error"),
        ];
        assert_eq!(value(&s, TOOL_CALLS, &other), Some(10_001.0));
        let other_method = [
            ("server", "files"),
            ("method", OTHER),
            ("outcome", "jsonrpc_error"),
        ];
        assert_eq!(value(&s, REQUESTS, &other_method), Some(1.0));
    }

    #[test]
    fn tool_list_is_capped_and_replaced() {
        let m = TrafficMetrics::default();
        let many: Vec<String> = (0..MAX_TOOLS + 10).map(|i| format!("t{i:04}")).collect();
        m.set_tools("files", many.iter().map(String::as_str));
        m.record(call(Some("t0000"), CallOutcome::Ok, 1));
        m.record(call(
            Some(&format!("t{:04}", MAX_TOOLS + 5)),
            CallOutcome::Ok,
            1,
        ));
        m.set_tools("files", ["other"]);
        m.record(call(Some("t0000"), CallOutcome::Ok, 1));
        let s = m.samples();
        let ok = |tool| {
            value(
                &s,
                TOOL_CALLS,
                &[("server", "files"), ("tool", tool), ("outcome", "ok")],
            )
        };
        assert_eq!(ok("t0000"), Some(1.0));
        assert_eq!(ok(OTHER), Some(2.0));
    }

    #[test]
    fn metrics_text_has_histograms_and_counters() {
        let m = Arc::new(TrafficMetrics::default());
        m.set_tools("files", ["read"]);
        m.record(call(Some("read"), CallOutcome::Ok, 3));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Arc::clone(&m)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE mcpwatch_mcp_tool_call_duration_seconds histogram"));
        assert!(text.contains(
            "mcpwatch_mcp_tool_calls_total{server=\"files\",tool=\"read\",outcome=\"ok\"} 1.0"
        ));
        assert!(
            text.contains("le=\"+Inf\",server=\"files\",tool=\"read\"} 1"),
            "{text}"
        );
    }
}
