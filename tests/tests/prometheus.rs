//! Both Prometheus endpoints pass `promtool check metrics` (DESIGN.md) while carrying real
//! traffic: the agent's host and health series, the collector's ingest series.

use mcpwatch_tests::http_get;
use mcpwatch_tests::process::Pair;

#[test]
fn agent_and_collector_metrics_pass_promtool() {
    let Pair {
        agent, collector, ..
    } = Pair::start();
    let (status, body) = http_get(collector.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("mcpwatch_collector_samples_ingested_total"));
    mcpwatch_tests::promtool_check("collector", &body);
    let (status, body) = http_get(agent.metrics_addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("mcpwatch_host_cpu_usage_ratio"));
    mcpwatch_tests::promtool_check("agent", &body);
}
