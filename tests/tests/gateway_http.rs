//! Streamable HTTP servers through the gateway: a supervised `http` server and an external
//! (probe-only) one are proxied at `/mcp/{server}` with sessions and SSE answers passed
//! through, measured like stdio traffic; direct access keeps working; an external server's
//! header secret never reaches the agent's log.

use mcpwatch_tests::docker::{fixture_image, Container};
use mcpwatch_tests::rig::{http_server, Rig, LONG};
use mcpwatch_tests::{free_addr, metric, wait_for};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Map, Value};

async fn connect(url: &str) -> RunningService<RoleClient, ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("gateway-http-test", "0"),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    info.serve(StreamableHttpClientTransport::from_uri(url))
        .await
        .expect("client session")
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Lists tools and calls `echo` and a failing `add` through `url`.
async fn exercise(url: &str) {
    let client = connect(url).await;
    let tools = client.list_tools(None).await.expect("tools/list");
    assert_eq!(tools.tools.len(), 3);
    let echo = CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "via"})));
    let answer = client.call_tool(echo).await.expect("echo");
    let content = serde_json::to_value(&answer.content).unwrap_or_default();
    assert_eq!(content[0]["text"], "via");
    let failing = client
        .call_tool(CallToolRequestParams::new("add").with_arguments(Map::new()))
        .await
        .expect("add answered");
    assert_eq!(failing.is_error, Some(true));
    client.cancel().await.expect("closed");
}

fn counted(rig: &Rig, server: &str, tool: &str, outcome: &str) -> Option<f64> {
    metric(
        &rig.agent.metrics(),
        &format!(
            "mcpwatch_mcp_tool_calls_total{{server=\"{server}\",tool=\"{tool}\",outcome=\"{outcome}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_http_server_is_proxied_and_measured() {
    let rig = Rig::start(&http_server(
        "web",
        &[],
        "[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
    ));
    rig.wait_events("web", "probe_ok", 1);
    let through = format!("http://{}/mcp/web", rig.agent.gateway_addr);
    exercise(&through).await;
    wait_for("proxied calls counted", LONG, || {
        (counted(&rig, "web", "echo", "ok") == Some(1.0)).then_some(())
    });
    assert_eq!(counted(&rig, "web", "add", "tool_error"), Some(1.0));
    // The server answers in SSE; the gateway passes the stream and its session id through.
    let raw = reqwest::Client::new()
        .post(&through)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("initialize through the proxy");
    assert_eq!(raw.status(), 200);
    let content_type = raw.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert!(raw.headers().contains_key("mcp-session-id"));
    let body = raw.text().await.expect("SSE body");
    assert!(
        body.contains("data:") && body.contains("mcpwatch-mcp-fixture"),
        "{body}"
    );
    let initialize =
        r#"mcpwatch_mcp_requests_total{server="web",method="initialize",outcome="ok"}"#;
    wait_for("both initializes counted", LONG, || {
        (metric(&rig.agent.metrics(), initialize) == Some(2.0)).then_some(())
    });
    let m = rig.agent.metrics();
    mcpwatch_tests::promtool_check("agent proxying an http server", &m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_speaking_only_2026_07_28_is_probed_and_proxied_sessionless() {
    use rmcp::{ClientLifecycleMode, ClientServiceExt};
    let rig = Rig::start(&http_server(
        "modern",
        &["--protocol-version", "2026-07-28"],
        "[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
    ));
    let ok = rig.wait_events("modern", "probe_ok", 1);
    assert!(ok[0].detail.contains("protocol=2026-07-28"), "{ok:?}");
    rig.wait_revision("modern", "2026-07-28");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("modern-client", "0"),
    );
    let url = format!("http://{}/mcp/modern", rig.agent.gateway_addr);
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let client = info
        .serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), lifecycle)
        .await
        .expect("discover through the gateway");
    let tools = client.list_tools(None).await.expect("tools/list");
    assert_eq!(tools.tools.len(), 3);
    let echo = CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "new"})));
    let answer = client.call_tool(echo).await.expect("echo");
    let content = serde_json::to_value(&answer.content).unwrap_or_default();
    assert_eq!(content[0]["text"], "new");
    wait_for("sessionless calls counted", LONG, || {
        (counted(&rig, "modern", "echo", "ok") == Some(1.0)).then_some(())
    });
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_server_is_probed_and_proxied_and_its_header_secret_stays_out_of_logs() {
    // Started by the test, not the agent: the agent only knows its URL.
    let listen = free_addr();
    let _server = Container::run(
        "ext",
        &[
            "--network",
            "host",
            &fixture_image(),
            "--transport",
            "http",
            "--listen",
            &listen.to_string(),
        ],
    );
    let secrets = tempfile::tempdir().unwrap();
    let secret = "Bearer ext-s3cr3t-4711";
    let file = secrets.path().join("ext.auth");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let servers = format!(
        "\n[[mcp_server]]\nname = \"saas\"\nurl = \"http://{listen}/mcp\"\n\
         headers = {{ Authorization = {{ file = \"{}\" }} }}\n\
         [mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
        file.display()
    );
    let rig = Rig::start(&servers);
    rig.wait_events("saas", "probe_ok", 1);
    exercise(&format!("http://{}/mcp/saas", rig.agent.gateway_addr)).await;
    // Direct access keeps working.
    exercise(&format!("http://{listen}/mcp")).await;
    wait_for("external calls counted", LONG, || {
        (counted(&rig, "saas", "echo", "ok") == Some(1.0)).then_some(())
    });
    // Probe figures and byte counts are sampled each interval.
    wait_for("external server up and its traffic sampled", LONG, || {
        let up = rig.agent_metric("mcpwatch_server_probe_up", "saas") == Some(1.0);
        let m = rig.agent.metrics();
        let bytes = metric(
            &m,
            r#"mcpwatch_mcp_gateway_bytes_total{direction="out",server="saas"}"#,
        );
        (up && bytes > Some(0.0)).then_some(())
    });
    // Nothing of it runs under the agent.
    let mine = mcpwatch_tests::docker::docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=mcpwatch.agent={}", rig.id),
    ]);
    assert!(String::from_utf8_lossy(&mine.stdout).trim().is_empty());
    let logs = rig.agent.logs();
    assert!(!logs.contains("ext-s3cr3t-4711"), "{logs}");
}
