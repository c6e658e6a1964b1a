//! The series the probe scheduler produces: their HELP texts, and one server's figures as
//! samples, with `mcpwatch_server_info` naming the revision its last handshake negotiated.

use mcpwatch_common::wire::SeriesKey;

use super::State;
use crate::probe::ProbeReport;
use crate::sampler::MetricKind;

/// HELP and TYPE of the series [`super::ProbeScheduler::samples`] produces, for the agent's /metrics.
pub fn series_help() -> &'static [(&'static str, &'static str, MetricKind)] {
    use MetricKind::{Counter, Gauge};
    &[
        (
            "mcpwatch_server_probe_up",
            "1 when the last MCP probe (handshake, tools/list, ping before 2026-07-28) succeeded.",
            Gauge,
        ),
        (
            "mcpwatch_server_probe_latency_seconds",
            "Latency of each stage of the last successful-so-far MCP probe (stage initialize \
             is the handshake: server/discover, or initialize after it).",
            Gauge,
        ),
        (
            "mcpwatch_server_info",
            "1; the labels name the protocol revision the last completed probe handshake \
             negotiated and the server's own name and version.",
            Gauge,
        ),
        (
            "mcpwatch_server_probes_total",
            "MCP probes run against the server.",
            Counter,
        ),
        (
            "mcpwatch_server_probe_failures_total",
            "Failed MCP probes by kind (transport, timeout, jsonrpc, protocol_version, saturated).",
            Counter,
        ),
        (
            "mcpwatch_server_tools",
            "Tools the server listed in its last successful probe.",
            Gauge,
        ),
        (
            "mcpwatch_server_tool_drift",
            "1 while the tool surface differs from the approved one.",
            Gauge,
        ),
    ]
}

/// Longest `server_name` / `server_version` label kept: the server chooses them.
const MAX_INFO_LABEL: usize = 128;

/// The labels of `mcpwatch_server_info`, from the last probe whose handshake completed with a
/// revision this agent knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerInfo {
    protocol_version: String,
    server_name: Option<String>,
    server_version: Option<String>,
}

impl ServerInfo {
    pub(super) fn of(report: &ProbeReport) -> Option<ServerInfo> {
        let version = report.protocol_version.as_deref()?;
        // Only a known revision: the label set stays small whatever a server answers.
        let known = rmcp::model::ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .any(|v| v.as_str() == version);
        known.then(|| ServerInfo {
            protocol_version: version.to_owned(),
            server_name: report.server_name.as_deref().map(bounded),
            server_version: report.server_version.as_deref().map(bounded),
        })
    }
}

fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_INFO_LABEL);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// One server's probe series.
pub(super) fn server_samples(s: &str, st: &State, out: &mut Vec<(SeriesKey, f64)>) {
    let Some(last) = &st.last else { return };
    out.push((
        SeriesKey::new("mcpwatch_server_probe_up", &[("server", s)]),
        if last.ok { 1.0 } else { 0.0 },
    ));
    let stages = [
        ("initialize", last.stage_latency.initialize),
        ("tools_list", last.stage_latency.tools_list),
        ("ping", last.stage_latency.ping),
    ];
    for (stage, latency) in stages {
        if let Some(d) = latency {
            out.push((
                SeriesKey::new(
                    "mcpwatch_server_probe_latency_seconds",
                    &[("server", s), ("stage", stage)],
                ),
                d.as_secs_f64(),
            ));
        }
    }
    out.push((
        SeriesKey::new("mcpwatch_server_probes_total", &[("server", s)]),
        st.probes_total as f64,
    ));
    for kind in [
        "transport",
        "timeout",
        "jsonrpc",
        "protocol_version",
        "saturated",
    ] {
        out.push((
            SeriesKey::new(
                "mcpwatch_server_probe_failures_total",
                &[("server", s), ("kind", kind)],
            ),
            st.failures_by_kind.get(kind).copied().unwrap_or(0) as f64,
        ));
    }
    if last.ok {
        out.push((
            SeriesKey::new("mcpwatch_server_tools", &[("server", s)]),
            last.tools.len() as f64,
        ));
    }
    out.push((
        SeriesKey::new("mcpwatch_server_tool_drift", &[("server", s)]),
        if st.drift.is_some() { 1.0 } else { 0.0 },
    ));
    if let Some(info) = &st.info {
        let mut labels = vec![
            ("server", s),
            ("protocol_version", info.protocol_version.as_str()),
        ];
        if let Some(name) = &info.server_name {
            labels.push(("server_name", name));
        }
        if let Some(version) = &info.server_version {
            labels.push(("server_version", version));
        }
        out.push((SeriesKey::new("mcpwatch_server_info", &labels), 1.0));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{lock, record, Shared};
    use super::*;

    fn info_series(state: &State) -> Vec<SeriesKey> {
        let mut out = Vec::new();
        server_samples("srv", state, &mut out);
        out.into_iter()
            .filter(|(k, v)| k.name == "mcpwatch_server_info" && *v == 1.0)
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn info_series_carries_the_negotiated_revision_of_the_last_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::default();
        let report = |version: &str, name: &str| ProbeReport {
            ok: true,
            protocol_version: Some(version.into()),
            server_name: Some(name.into()),
            server_version: Some("1.2".into()),
            ..ProbeReport::default()
        };
        record(&shared, dir.path(), "srv", &report("2026-07-28", "files"));
        let want = SeriesKey::new(
            "mcpwatch_server_info",
            &[
                ("server", "srv"),
                ("protocol_version", "2026-07-28"),
                ("server_name", "files"),
                ("server_version", "1.2"),
            ],
        );
        assert_eq!(
            info_series(&lock(&shared)["srv"]),
            std::slice::from_ref(&want)
        );

        // A revision this agent does not know (the probe fails on it) leaves the last one.
        let unknown = ProbeReport {
            ok: false,
            ..report("2099-01-01", "files")
        };
        record(&shared, dir.path(), "srv", &unknown);
        assert_eq!(info_series(&lock(&shared)["srv"]), [want]);

        // The server chooses its name: long ones are cut, on a character boundary.
        let long = "é".repeat(100);
        record(&shared, dir.path(), "srv", &report("2025-11-25", &long));
        let got = info_series(&lock(&shared)["srv"]);
        let labels: std::collections::HashMap<_, _> = got[0].labels.iter().cloned().collect();
        assert_eq!(labels["protocol_version"], "2025-11-25");
        assert_eq!(labels["server_name"], "é".repeat(64));
    }
}
