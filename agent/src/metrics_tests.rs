//! Tests of the agent's metrics: exposition formats, the snapshots, promtool.

use super::*;
use crate::sampler::{MEMORY_USED_BYTES, NETWORK_RECEIVE_BYTES_TOTAL, PROCESSES};

fn host_sample() -> Vec<(SeriesKey, f64)> {
    series_help()
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| (SeriesKey::new(*name, &[("x", "y")]), i as f64))
        .collect()
}

const AGENT_FAMILIES: &[(&str, &str)] = &[
    ("mcpwatch_agent_spool_bytes", "gauge"),
    ("mcpwatch_agent_spool_pending_records", "gauge"),
    ("mcpwatch_agent_dropped_samples", "counter"),
    ("mcpwatch_agent_spool_corrupt_records", "counter"),
    ("mcpwatch_agent_spool_records_split", "counter"),
    ("mcpwatch_agent_spool_records_oversized", "counter"),
    ("mcpwatch_agent_reconnects", "counter"),
    ("mcpwatch_agent_uplink_connected", "gauge"),
    ("mcpwatch_agent_last_ack_age_seconds", "gauge"),
    ("mcpwatch_agent_batches_sent", "counter"),
    ("mcpwatch_agent_batches_acked", "counter"),
    ("mcpwatch_agent_samples_collected", "counter"),
    ("mcpwatch_agent_sample_errors", "counter"),
    ("mcpwatch_agent_sample_duration_seconds", "histogram"),
    ("mcpwatch_agent_uplink_errors", "counter"),
];

#[test]
fn metrics_encode_has_help_and_type_for_every_family_and_eof() {
    let m = AgentMetrics::new();
    m.set_host_samples(&host_sample());
    let text = m.encode();
    let described = |family: &str, ty: &str| {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "HELP {family}\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} {ty}\n")),
            "TYPE {family}\n{text}"
        );
    };
    for (name, _, kind) in series_help() {
        match kind {
            MetricKind::Gauge => described(name, "gauge"),
            MetricKind::Counter => {
                described(name.strip_suffix("_total").expect("_total"), "counter")
            }
        }
    }
    for (family, ty) in AGENT_FAMILIES {
        described(family, ty);
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
}

#[test]
fn metrics_counters_render_with_total_suffix() {
    let m = AgentMetrics::new();
    m.reconnects_total.inc();
    m.reconnects_total.inc();
    m.inc_uplink_error(UplinkErrorKind::Tls);
    m.set_host_samples(&[(
        SeriesKey::new(NETWORK_RECEIVE_BYTES_TOTAL, &[("interface", "lo")]),
        12345.0,
    )]);
    let text = m.encode();
    assert!(
        text.contains("\nmcpwatch_agent_reconnects_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("\nmcpwatch_host_network_receive_bytes_total{interface=\"lo\"} 12345.0\n"),
        "{text}"
    );
    assert!(
        text.contains("mcpwatch_agent_uplink_errors_total{kind=\"tls\"} 1\n"),
        "{text}"
    );
    // Every kind exists from the start, at 0.
    for kind in ["io", "protocol", "rejected"] {
        assert!(
            text.contains(&format!(
                "mcpwatch_agent_uplink_errors_total{{kind=\"{kind}\"}} 0\n"
            )),
            "{kind}: {text}"
        );
    }
}

#[test]
fn metrics_host_snapshot_is_replaced_not_merged() {
    let m = AgentMetrics::new();
    m.set_host_samples(&[(SeriesKey::new(PROCESSES, &[]), 7.0)]);
    assert!(m.encode().contains("\nmcpwatch_host_processes 7.0\n"));
    m.set_host_samples(&[]);
    let text = m.encode();
    assert!(!text.contains("mcpwatch_host_processes"), "{text}");
}

#[test]
fn metrics_snapshot_with_the_same_series_takes_the_new_values() {
    let m = AgentMetrics::new();
    let key = |m: &str| SeriesKey::new(MEMORY_USED_BYTES, &[("kind", m)]);
    m.set_host_samples(&[(key("used"), 1.0), (key("total"), 2.0)]);
    m.set_host_samples(&[(key("used"), 3.0), (key("total"), 4.0)]);
    let text = m.encode();
    assert!(text.contains("{kind=\"used\"} 3.0\n"), "{text}");
    assert!(text.contains("{kind=\"total\"} 4.0\n"), "{text}");
    // Same length, one key changed: that key replaces the old one.
    m.set_host_samples(&[(key("used"), 5.0), (key("free"), 6.0)]);
    let text = m.encode();
    assert!(text.contains("{kind=\"free\"} 6.0\n"), "{text}");
    assert!(!text.contains("kind=\"total\""), "{text}");
}

#[test]
fn metrics_unknown_host_series_are_not_exposed() {
    let m = AgentMetrics::new();
    m.set_host_samples(&[(SeriesKey::new("not_a_host_metric", &[]), 1.0)]);
    assert!(!m.encode().contains("not_a_host_metric"));
}

#[test]
fn metrics_label_values_are_escaped() {
    let m = AgentMetrics::new();
    m.set_host_samples(&[(
        SeriesKey::new(
            crate::sampler::DISK_TOTAL_BYTES,
            &[("mountpoint", "/a\"b\\c")],
        ),
        1.0,
    )]);
    let text = m.encode();
    assert!(text.contains(r#"{mountpoint="/a\"b\\c"} 1.0"#), "{text}");
}

#[test]
fn metrics_last_ack_age_counts_from_the_last_ack() {
    let ack = LastAck::new();
    let base = ack.base;
    // Never acked: age counts from start.
    assert_eq!(
        ack.age(base + Duration::from_secs(3)),
        Duration::from_secs(3)
    );
    ack.record(base + Duration::from_secs(10));
    assert_eq!(
        ack.age(base + Duration::from_secs(15)),
        Duration::from_secs(5)
    );
    // An older ack arriving late does not move the time back.
    ack.record(base + Duration::from_secs(4));
    assert_eq!(
        ack.age(base + Duration::from_secs(15)),
        Duration::from_secs(5)
    );

    let m = AgentMetrics::new();
    m.record_ack();
    let text = m.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("mcpwatch_agent_last_ack_age_seconds "))
        .expect("age line");
    let age: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!((0.0..5.0).contains(&age), "{line}");
}

#[test]
fn metrics_histogram_counts_observations() {
    let m = AgentMetrics::new();
    m.sample_duration_seconds.observe(0.0003);
    let text = m.encode();
    assert!(
        text.contains("mcpwatch_agent_sample_duration_seconds_count 1\n"),
        "{text}"
    );
    assert!(
        text.contains("mcpwatch_agent_sample_duration_seconds_bucket{le=\"0.0004\"} 1\n"),
        "{text}"
    );
}

#[test]
fn metrics_prometheus_text_names_counter_families_with_total() {
    let m = AgentMetrics::new();
    m.set_host_samples(&host_sample());
    let text = m.encode_prometheus_text();
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE mcpwatch_agent_reconnects_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# HELP mcpwatch_agent_reconnects_total Uplink"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE mcpwatch_host_network_receive_bytes_total counter\n"),
        "{text}"
    );
    // Gauges and histograms keep their names.
    assert!(text.contains("# TYPE mcpwatch_agent_spool_bytes gauge\n"));
    assert!(text.contains("# TYPE mcpwatch_agent_sample_duration_seconds histogram\n"));
    assert!(!text.contains("# TYPE mcpwatch_agent_reconnects counter"));
}
