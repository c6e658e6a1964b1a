//! The per-tool figures of one MCP server's gateway traffic over a range, from the series
//! the agent sends: `mcpwatch_mcp_tool_calls_total{server,tool,outcome}` and
//! `mcpwatch_mcp_tool_call_duration_seconds_bucket{server,tool,le}`, both cumulative since
//! the agent started. `Plan` picks the server's series (bounded), `Fold` takes their samples
//! one by one (the increase of each, with counter resets, see `alert::counter`), and
//! `figures` turns that into calls, errors, error ratio, p50 / p95 / p99 (`alert::histogram`)
//! and the last error's time.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::server_state::series_labels;
use crate::alert::counter::CounterIncrease;
use crate::alert::histogram::{histogram_quantile, parse_le};
use crate::store::query::series::SeriesRecord;

pub(crate) const CALLS_METRIC: &str = "mcpwatch_mcp_tool_calls_total";
pub(crate) const BUCKET_METRIC: &str = "mcpwatch_mcp_tool_call_duration_seconds_bucket";
/// Outcomes that are not failures: the call succeeded, or its client gave up on it. Every
/// other outcome is one: `tool_error` (the tool answered `isError: true`: the tool failed),
/// `jsonrpc_error`, `timeout`, `transport_error`, and any outcome a newer agent adds.
const NOT_ERRORS: [&str; 2] = ["ok", "cancelled"];
/// Tools listed at most (the agent folds unknown tool names into `_other`, so a server has
/// as many as it offers; this bounds what a misbehaving agent can make one answer cost).
pub(crate) const MAX_TOOLS: usize = 256;
/// Series read per tool at most (six outcomes and fourteen buckets are expected).
pub(crate) const MAX_SERIES_PER_TOOL: usize = 64;

/// One tool over the range.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ToolView {
    pub tool: String,
    /// Calls that ended in the range, whatever their outcome.
    pub calls: f64,
    /// Calls that failed: every outcome but `ok` and `cancelled`.
    pub errors: f64,
    /// `errors / calls`; null without calls.
    pub error_ratio: Option<f64>,
    /// Calls per outcome (`ok`, `tool_error`, `jsonrpc_error`, `timeout`,
    /// `transport_error`, `cancelled`).
    pub outcomes: BTreeMap<String, f64>,
    /// Latency quantiles in seconds, interpolated within the histogram's buckets; a
    /// quantile beyond the highest finite bucket reports that bound. Null without calls.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// Time (ms) of the newest sample at which a failure counter grew; null if none did.
    pub last_error_at: Option<i64>,
}

/// What a series is to its tool.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    Outcome(String),
    Bucket(f64),
}

/// The series of one server, by tool.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Tool names, sorted.
    tools: Vec<String>,
    /// Series id → (index into `tools`, role).
    series: HashMap<i64, (usize, Role)>,
    /// Tools or series were left out for the caps.
    pub truncated: bool,
}

impl Plan {
    /// Picks the series of `server` among `series` (the host's series of the two metrics).
    /// Series without a tool, with an unreadable `le` or without an outcome are ignored.
    pub(crate) fn new(series: &[SeriesRecord], server: &str) -> Plan {
        let mut by_tool: BTreeMap<String, Vec<(i64, Role)>> = BTreeMap::new();
        for s in series {
            let mut labels = series_labels(&s.labels);
            if labels.get("server").map(String::as_str) != Some(server) {
                continue;
            }
            let Some(tool) = labels.remove("tool") else {
                continue;
            };
            let role = if s.name == CALLS_METRIC {
                labels.remove("outcome").map(Role::Outcome)
            } else {
                labels.get("le").and_then(|t| parse_le(t)).map(Role::Bucket)
            };
            if let Some(role) = role {
                by_tool.entry(tool).or_default().push((s.id, role));
            }
        }
        let mut plan = Plan {
            truncated: by_tool.len() > MAX_TOOLS,
            ..Plan::default()
        };
        for (i, (tool, mut list)) in by_tool.into_iter().take(MAX_TOOLS).enumerate() {
            if list.len() > MAX_SERIES_PER_TOOL {
                list.sort_by_key(|(id, _)| *id);
                list.truncate(MAX_SERIES_PER_TOOL);
                plan.truncated = true;
            }
            plan.tools.push(tool);
            plan.series
                .extend(list.into_iter().map(|(id, role)| (id, (i, role))));
        }
        plan
    }

    pub(crate) fn ids(&self) -> HashSet<i64> {
        self.series.keys().copied().collect()
    }
}

/// The increase of every planned series from `start_ms` on, samples before it being
/// baselines.
#[derive(Debug)]
pub(crate) struct Fold {
    start_ms: i64,
    from_zero: bool,
    counters: HashMap<i64, CounterIncrease>,
}

impl Fold {
    /// `from_zero`: a series with no sample before `start_ms` (within the read) began at
    /// zero in the range — true when the raw data is known to reach back that far.
    pub(crate) fn new(start_ms: i64, from_zero: bool) -> Fold {
        Fold {
            start_ms,
            from_zero,
            counters: HashMap::new(),
        }
    }

    pub(crate) fn push(&mut self, series: i64, ts_ms: i64, value: f64) {
        let from_zero = self.from_zero;
        self.counters
            .entry(series)
            .or_insert_with(|| CounterIncrease::new(from_zero))
            .push(ts_ms, value, ts_ms >= self.start_ms);
    }
}

/// Per tool: outcome increases, bucket increases, the newest failure, whether any sample
/// was in the range.
#[derive(Default)]
struct Totals {
    outcomes: BTreeMap<String, f64>,
    buckets: Vec<(f64, f64)>,
    last_error_at: Option<i64>,
    seen: bool,
}

/// The figures of every tool with a sample in the range, by tool name.
pub(crate) fn figures(plan: &Plan, fold: &Fold) -> Vec<ToolView> {
    let mut totals: Vec<Totals> = plan.tools.iter().map(|_| Totals::default()).collect();
    for (id, c) in &fold.counters {
        let Some((tool, role)) = plan.series.get(id) else {
            continue;
        };
        let Some(t) = totals.get_mut(*tool) else {
            continue;
        };
        t.seen |= c.samples > 0;
        match role {
            Role::Outcome(o) => {
                *t.outcomes.entry(o.clone()).or_default() += c.increase;
                if !NOT_ERRORS.contains(&o.as_str()) {
                    t.last_error_at = t.last_error_at.max(c.last_increase_ms);
                }
            }
            Role::Bucket(le) => t.buckets.push((*le, c.increase)),
        }
    }
    plan.tools
        .iter()
        .zip(totals)
        .filter(|(_, t)| t.seen)
        .map(|(tool, t)| {
            let calls: f64 = t.outcomes.values().sum();
            let errors: f64 = t
                .outcomes
                .iter()
                .filter(|(o, _)| !NOT_ERRORS.contains(&o.as_str()))
                .map(|(_, n)| n)
                .sum();
            let q = |q| histogram_quantile(q, &t.buckets);
            ToolView {
                tool: tool.clone(),
                calls,
                errors,
                error_ratio: (calls > 0.0).then(|| errors / calls),
                p50: q(0.5),
                p95: q(0.95),
                p99: q(0.99),
                last_error_at: t.last_error_at,
                outcomes: t.outcomes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use mcpwatch_common::wire::SeriesKey;

    use super::*;

    fn rec(id: i64, name: &str, labels: &[(&str, &str)]) -> SeriesRecord {
        SeriesRecord {
            id,
            host_id: 1,
            agent_id: "h".into(),
            name: name.into(),
            labels: SeriesKey::new(name, labels).labels_text(),
        }
    }

    #[test]
    fn api_tool_figures_from_counters_and_buckets() {
        let mut series = vec![
            rec(
                1,
                CALLS_METRIC,
                &[("server", "s"), ("tool", "read"), ("outcome", "ok")],
            ),
            rec(
                2,
                CALLS_METRIC,
                &[("server", "s"), ("tool", "read"), ("outcome", "timeout")],
            ),
            rec(
                3,
                CALLS_METRIC,
                &[("server", "s"), ("tool", "read"), ("outcome", "cancelled")],
            ),
            rec(
                4,
                CALLS_METRIC,
                &[("server", "other"), ("tool", "read"), ("outcome", "ok")],
            ),
            rec(
                5,
                CALLS_METRIC,
                &[("server", "s"), ("tool", "idle"), ("outcome", "ok")],
            ),
            rec(6, CALLS_METRIC, &[("server", "s"), ("outcome", "ok")]),
        ];
        for (i, le) in ["0.1", "1", "+Inf", "soon"].iter().enumerate() {
            series.push(rec(
                10 + i as i64,
                BUCKET_METRIC,
                &[("server", "s"), ("tool", "read"), ("le", le)],
            ));
        }
        let plan = Plan::new(&series, "s");
        assert_eq!(plan.tools, vec!["idle".to_owned(), "read".to_owned()]);
        assert_eq!(plan.ids(), [1, 2, 3, 5, 10, 11, 12].into_iter().collect());
        assert!(!plan.truncated);
        let mut fold = Fold::new(1_000, true);
        // ok: baseline 10, then 14 and (agent restart) 3: 4 + 3 = 7.
        for (ts, v) in [(500, 10.0), (1_000, 14.0), (2_000, 3.0)] {
            fold.push(1, ts, v);
        }
        // timeout: new in the range, begins at 0: 2, grows at 1 500 and 2 500.
        fold.push(2, 1_500, 2.0);
        fold.push(2, 2_500, 3.0);
        fold.push(3, 1_200, 1.0);
        // idle: only a baseline, not in the range.
        fold.push(5, 900, 4.0);
        // Buckets: 11 calls, 6 ≤ 0.1 s, 9 ≤ 1 s.
        for (id, n) in [(10, 6.0), (11, 9.0), (12, 11.0)] {
            fold.push(id, 1_100, n);
        }
        let out = figures(&plan, &fold);
        assert_eq!(out.len(), 1, "idle has no sample in the range: {out:?}");
        let read = &out[0];
        assert_eq!(read.tool, "read");
        assert_eq!((read.calls, read.errors), (11.0, 3.0));
        assert_eq!(read.error_ratio, Some(3.0 / 11.0));
        assert_eq!(read.outcomes["ok"], 7.0);
        assert_eq!(read.outcomes["cancelled"], 1.0);
        assert_eq!(read.last_error_at, Some(2_500));
        // p50: rank 5.5 of 6 in (0, 0.1]; p95: rank 10.45 → +Inf → 1.
        let p50 = read.p50.expect("p50");
        assert!((p50 - 0.1 * 5.5 / 6.0).abs() < 1e-12, "{p50}");
        assert_eq!(read.p95, Some(1.0));
        // Without `from_zero` the new timeout series starts where it was first seen.
        let mut fold = Fold::new(1_000, false);
        fold.push(2, 1_500, 2.0);
        fold.push(2, 2_500, 3.0);
        let out = figures(&plan, &fold);
        assert_eq!((out[0].calls, out[0].errors), (1.0, 1.0));
        assert_eq!(out[0].p50, None);
    }

    #[test]
    fn api_tool_plan_caps_tools_and_series() {
        let mut series = Vec::new();
        for t in 0..(MAX_TOOLS + 5) {
            let tool = format!("t{t:04}");
            series.push(rec(
                t as i64,
                CALLS_METRIC,
                &[("server", "s"), ("tool", &tool), ("outcome", "ok")],
            ));
        }
        let plan = Plan::new(&series, "s");
        assert!(plan.truncated);
        assert_eq!(plan.tools.len(), MAX_TOOLS);
        assert_eq!(plan.tools[0], "t0000");
        let many: Vec<SeriesRecord> = (0..100)
            .map(|i| {
                rec(
                    i,
                    CALLS_METRIC,
                    &[
                        ("server", "s"),
                        ("tool", "x"),
                        ("outcome", &format!("o{i}")),
                    ],
                )
            })
            .collect();
        let plan = Plan::new(&many, "s");
        assert!(plan.truncated);
        assert_eq!(plan.ids().len(), MAX_SERIES_PER_TOOL);
    }
}
