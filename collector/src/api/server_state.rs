//! The state of each supervised MCP server, derived from its latest samples and its events:
//! the newest `mcpwatch_server_state` sample or state-changing event wins.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::events::{event_view, EventView};
use crate::alert::Labels;
use crate::store::query::servers::ServerRows;

/// Parses stored series label text (`k="v",...`) into a map.
pub(crate) fn series_labels(text: &str) -> Labels {
    if text.is_empty() {
        return Labels::new();
    }
    match mcpwatch_common::wire::SeriesKey::parse_labels_text(text) {
        Some(pairs) => pairs.into_iter().collect(),
        None => {
            tracing::warn!(labels = %text, "unreadable stored series labels");
            Labels::new()
        }
    }
}

/// Server figures are read from samples at most this long before the host's newest one.
pub(super) const SERVER_LOOKBACK_MS: i64 = 10 * 60_000;
/// Events listed per server.
pub(super) const SERVER_EVENTS: usize = 10;

/// Event kinds that change a server's state, and the state each leads to.
pub(super) const STATE_EVENTS: &[(&str, &str)] = &[
    ("created", "pending"),
    ("started", "running"),
    ("adopted", "running"),
    ("restarted", "running"),
    ("exited", "exited"),
    ("restart_scheduled", "backing_off"),
    ("gave_up", "gave_up"),
    ("stopped", "stopped"),
    ("removed", "removed"),
];

/// One supervised MCP server of a host, from its latest samples (within 10 minutes of the
/// host's newest sample) and its events. Fields are null when no sample says.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    pub name: String,
    /// pending, running, backing_off, stopped, exited, gave_up (or removed, from events).
    pub state: Option<String>,
    /// Where `state` came from: `metric` (mcpwatch_server_state) or `event`.
    pub state_source: Option<String>,
    pub up: Option<bool>,
    pub healthy: Option<bool>,
    pub restarts: Option<u64>,
    pub uptime_seconds: Option<f64>,
    pub last_exit_code: Option<i64>,
    pub oom_killed: Option<bool>,
    pub memory_bytes: Option<f64>,
    pub cpu_seconds_total: Option<f64>,
    pub crashloop_attempt: Option<u64>,
    pub gave_up: Option<bool>,
    pub probe_up: Option<bool>,
    /// Latency of the last probe per stage (initialize, tools_list, ping). `initialize` is the
    /// handshake (`server/discover`, or `initialize` after it); 2026-07-28 has no ping.
    pub probe_latency_seconds: BTreeMap<String, f64>,
    /// The MCP protocol revision the agent's last completed probe handshake negotiated
    /// (e.g. `2025-11-25`, `2026-07-28`), from `mcpwatch_server_info`.
    pub protocol_version: Option<String>,
    /// The name the server gives itself in that handshake.
    pub server_name: Option<String>,
    /// The version the server gives itself in that handshake.
    pub server_version: Option<String>,
    pub probes_total: Option<u64>,
    /// Probe failures so far per kind.
    pub probe_failures: BTreeMap<String, u64>,
    /// Tools the server lists.
    pub tools: Option<u64>,
    /// The tool surface changed since it was last approved.
    pub drift: Option<bool>,
    /// Time of the newest sample of this server.
    pub last_sample_ms: Option<i64>,
    /// The newest events of this server, newest first.
    pub events: Vec<EventView>,
}

fn count(v: f64) -> Option<u64> {
    // `as` saturates; negative and NaN are not counts.
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

fn flag(v: f64) -> Option<bool> {
    (!v.is_nan()).then_some(v != 0.0)
}

/// Puts one latest sample of a server's series (other than its state) into its view.
fn record_sample(view: &mut ServerView, name: &str, labels: &Labels, v: f64) {
    match name {
        "mcpwatch_server_up" => view.up = flag(v),
        "mcpwatch_server_healthy" => view.healthy = flag(v),
        "mcpwatch_server_restarts_total" => view.restarts = count(v),
        "mcpwatch_server_uptime_seconds" => view.uptime_seconds = Some(v),
        "mcpwatch_server_last_exit_code" => view.last_exit_code = v.is_finite().then_some(v as i64),
        "mcpwatch_server_oom_killed" => view.oom_killed = flag(v),
        "mcpwatch_server_memory_bytes" => view.memory_bytes = Some(v),
        "mcpwatch_server_cpu_seconds_total" => view.cpu_seconds_total = Some(v),
        "mcpwatch_server_crashloop_attempt" => view.crashloop_attempt = count(v),
        "mcpwatch_server_gave_up" => view.gave_up = flag(v),
        "mcpwatch_server_probe_up" => view.probe_up = flag(v),
        "mcpwatch_server_probes_total" => view.probes_total = count(v),
        "mcpwatch_server_tools" => view.tools = count(v),
        "mcpwatch_server_tool_drift" => view.drift = flag(v),
        "mcpwatch_server_probe_latency_seconds" => {
            if let Some(stage) = labels.get("stage") {
                view.probe_latency_seconds.insert(stage.clone(), v);
            }
        }
        "mcpwatch_server_probe_failures_total" => {
            if let (Some(kind), Some(n)) = (labels.get("kind"), count(v)) {
                view.probe_failures.insert(kind.clone(), n);
            }
        }
        _ => {}
    }
}

/// Builds the per-server views from the samples and events read.
pub(super) fn assemble_servers(d: ServerRows) -> Vec<ServerView> {
    let mut views: BTreeMap<String, ServerView> = d
        .names
        .iter()
        .map(|n| {
            (
                n.clone(),
                ServerView {
                    name: n.clone(),
                    ..ServerView::default()
                },
            )
        })
        .collect();
    // Newest `mcpwatch_server_state{state=S} == 1` per server.
    let mut metric_state: HashMap<String, (i64, String)> = HashMap::new();
    // Newest `mcpwatch_server_info == 1` per server: a server that changed revision has an
    // older info series too, within the lookback.
    let mut newest_info: HashMap<String, i64> = HashMap::new();
    for s in &d.series {
        let Some(&(ts, v)) = d.latest.get(&s.id) else {
            continue;
        };
        let labels = series_labels(&s.labels);
        let Some(server) = labels.get("server") else {
            continue;
        };
        let Some(view) = views.get_mut(server) else {
            continue;
        };
        view.last_sample_ms = Some(view.last_sample_ms.map_or(ts, |t| t.max(ts)));
        if s.name == "mcpwatch_server_state" {
            if let Some(st) = labels.get("state").filter(|_| v == 1.0) {
                let newer = metric_state.get(server).is_none_or(|(t, _)| ts > *t);
                if newer {
                    metric_state.insert(server.clone(), (ts, st.clone()));
                }
            }
        } else if s.name == "mcpwatch_server_info" {
            let newer = newest_info.get(server).is_none_or(|t| ts > *t);
            if v == 1.0 && newer {
                newest_info.insert(server.clone(), ts);
                view.protocol_version = labels.get("protocol_version").cloned();
                view.server_name = labels.get("server_name").cloned();
                view.server_version = labels.get("server_version").cloned();
            }
        } else {
            record_sample(view, &s.name, &labels, v);
        }
    }
    for (name, view) in views.iter_mut() {
        let from_metric = metric_state.get(name);
        let from_event = d.state_events.get(name).and_then(|(ts, kind)| {
            STATE_EVENTS
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, st)| (*ts, (*st).to_owned()))
        });
        let (state, source) = match (from_metric, from_event) {
            (Some((mt, _)), Some((et, es))) if et > *mt => (Some(es), "event"),
            (Some((_, ms)), _) => (Some(ms.clone()), "metric"),
            (None, Some((_, es))) => (Some(es), "event"),
            (None, None) => (None, ""),
        };
        view.state = state;
        view.state_source = (!source.is_empty()).then(|| source.to_owned());
        view.events = d
            .events
            .get(name)
            .map(|es| es.iter().cloned().map(event_view).collect())
            .unwrap_or_default();
    }
    views.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::series::SeriesRecord;

    #[test]
    fn api_hosts_series_labels_round_trip() {
        let key =
            mcpwatch_common::wire::SeriesKey::new("m", &[("a", "x\"y\\z\nw"), ("server", "s")]);
        let l = series_labels(&key.labels_text());
        assert_eq!(l.get("a").map(String::as_str), Some("x\"y\\z\nw"));
        assert_eq!(l.get("server").map(String::as_str), Some("s"));
        assert!(series_labels("").is_empty());
    }

    fn series(id: i64, name: &str, labels: &[(&str, &str)]) -> SeriesRecord {
        SeriesRecord {
            id,
            host_id: 1,
            agent_id: "h".into(),
            name: name.into(),
            labels: mcpwatch_common::wire::SeriesKey::new(name, labels).labels_text(),
        }
    }

    #[test]
    fn api_hosts_servers_from_samples_and_events() {
        let s = |id, name, l: &[(&str, &str)]| series(id, name, l);
        let d = ServerRows {
            series: vec![
                s(1, "mcpwatch_server_up", &[("server", "a")]),
                s(
                    2,
                    "mcpwatch_server_state",
                    &[("server", "a"), ("state", "running")],
                ),
                s(
                    3,
                    "mcpwatch_server_state",
                    &[("server", "a"), ("state", "exited")],
                ),
                s(
                    4,
                    "mcpwatch_server_probe_latency_seconds",
                    &[("server", "a"), ("stage", "ping")],
                ),
                s(5, "mcpwatch_server_tools", &[("server", "a")]),
                s(6, "mcpwatch_server_tool_drift", &[("server", "a")]),
                s(7, "mcpwatch_server_restarts_total", &[("server", "a")]),
                s(
                    8,
                    "mcpwatch_server_info",
                    &[
                        ("server", "a"),
                        ("protocol_version", "2026-07-28"),
                        ("server_name", "files"),
                        ("server_version", "2.0"),
                    ],
                ),
                // The revision the server spoke before an upgrade: older, so not shown.
                s(
                    9,
                    "mcpwatch_server_info",
                    &[("server", "a"), ("protocol_version", "2025-11-25")],
                ),
            ],
            latest: [
                (1, (100, 1.0)),
                (2, (100, 1.0)),
                (3, (100, 0.0)),
                (4, (90, 0.25)),
                (5, (90, 3.0)),
                (6, (90, 0.0)),
                (7, (100, 2.0)),
                (8, (100, 1.0)),
                (9, (60, 1.0)),
            ]
            .into_iter()
            .collect(),
            names: ["a".to_owned(), "b".to_owned()].into_iter().collect(),
            state_events: [
                ("a".to_owned(), (50, "exited".to_owned())),
                ("b".to_owned(), (70, "restart_scheduled".to_owned())),
            ]
            .into_iter()
            .collect(),
            events: HashMap::new(),
        };
        let v = assemble_servers(d);
        assert_eq!(v.len(), 2);
        let a = &v[0];
        assert_eq!(a.state.as_deref(), Some("running"));
        assert_eq!(a.state_source.as_deref(), Some("metric"));
        assert_eq!(a.up, Some(true));
        assert_eq!(a.tools, Some(3));
        assert_eq!(a.drift, Some(false));
        assert_eq!(a.restarts, Some(2));
        assert_eq!(a.probe_latency_seconds.get("ping"), Some(&0.25));
        assert_eq!(a.last_sample_ms, Some(100));
        assert_eq!(a.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(a.server_name.as_deref(), Some("files"));
        assert_eq!(a.server_version.as_deref(), Some("2.0"));
        let b = &v[1];
        assert_eq!(b.state.as_deref(), Some("backing_off"));
        assert_eq!(b.state_source.as_deref(), Some("event"));
        assert_eq!(b.up, None);
        assert_eq!(b.protocol_version, None);
    }
}
