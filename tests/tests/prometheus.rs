//! Both Prometheus endpoints pass `promtool check metrics` (DESIGN.md) while carrying real
//! traffic: the agent's host and health series, the collector's ingest series.

use std::io::Write;
use std::process::{Command, Stdio};

use mcpwatch_tests::http_get;
use mcpwatch_tests::process::Pair;

fn promtool_check(what: &str, exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): run ./scripts/test.sh, which installs it")
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed for {what}:\n{}{}\n---\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn agent_and_collector_metrics_pass_promtool() {
    let Pair {
        agent, collector, ..
    } = Pair::start();
    let (status, body) = http_get(collector.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("mcpwatch_collector_samples_ingested_total"));
    promtool_check("collector", &body);
    let (status, body) = http_get(agent.metrics_addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("mcpwatch_host_cpu_usage_ratio"));
    promtool_check("agent", &body);
}
