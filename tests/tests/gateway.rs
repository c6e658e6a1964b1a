//! The MCP gateway end to end: the real agent supervising the fixture as a stdio container
//! (real dockerd), MCP clients (rmcp's Streamable HTTP client, and raw HTTP for hostile
//! requests) on the agent's gateway listener, the collector receiving the traffic series.

use std::sync::Arc;

use mcpwatch_tests::db;
use mcpwatch_tests::rig::{self, Rig, LONG};
use mcpwatch_tests::{metric, wait_for};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Map, Value};

type Client = RunningService<RoleClient, ClientConfig>;

/// A stdio fixture server named `name`, probed every second.
fn stdio_server(name: &str, fixture_args: &[&str], extra: &str) -> String {
    rig::stdio_server(name, fixture_args, "1s", extra)
}

fn url(rig: &Rig, server: &str) -> String {
    format!("http://{}/mcp/{server}", rig.agent.gateway_addr)
}

async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .expect("client session through the gateway")
}

async fn try_connect(url: &str) -> Result<Client, String> {
    // reqwest is built without a default TLS provider in this workspace; an Err only means
    // one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("gateway-test", "0"),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    info.serve(StreamableHttpClientTransport::from_uri(url))
        .await
        .map_err(|e| format!("{e:?}"))
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn text_of(result: &rmcp::model::CallToolResult) -> String {
    let v = serde_json::to_value(&result.content).unwrap_or_default();
    v[0]["text"].as_str().unwrap_or_default().to_owned()
}

/// The agent's exposition value of a traffic series with these labels, in this order.
fn traffic(rig: &Rig, name: &str, labels: &str) -> Option<f64> {
    metric(&rig.agent.metrics(), &format!("{name}{{{labels}}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_uses_a_stdio_server_through_the_gateway_and_every_call_is_counted() {
    let rig = Rig::start(&stdio_server("tools", &[], ""));
    rig.wait_attached("tools");
    let client = connect(&url(&rig, "tools")).await;
    let info = client.peer_info().expect("initialize answered");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("mcpwatch-mcp-fixture")
    );
    let tools = client.list_tools(None).await.expect("tools/list");
    let names: Vec<&str> = tools.tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["echo", "add", "time"]);

    let echo = CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "hi"})));
    let ok = client.call_tool(echo).await.expect("echo answered");
    assert_eq!(text_of(&ok), "hi");
    assert_ne!(ok.is_error, Some(true));
    // Missing arguments: the tool runs and reports a failure (isError).
    let failing = client
        .call_tool(CallToolRequestParams::new("add").with_arguments(Map::new()))
        .await
        .expect("add answered");
    assert_eq!(failing.is_error, Some(true));
    // An unknown tool: a JSON-RPC error, counted under `_other`.
    let unknown = client.call_tool(CallToolRequestParams::new("nope")).await;
    assert!(unknown.is_err(), "{unknown:?}");

    let calls = "mcpwatch_mcp_tool_calls_total";
    wait_for("traffic counted", LONG, || {
        let ok = traffic(&rig, calls, r#"server="tools",tool="echo",outcome="ok""#);
        (ok == Some(1.0)).then_some(())
    });
    assert_eq!(
        traffic(
            &rig,
            calls,
            r#"server="tools",tool="add",outcome="tool_error""#
        ),
        Some(1.0)
    );
    assert_eq!(
        traffic(
            &rig,
            calls,
            r#"server="tools",tool="_other",outcome="jsonrpc_error""#
        ),
        Some(1.0)
    );
    assert_eq!(
        traffic(
            &rig,
            "mcpwatch_mcp_tool_call_duration_seconds_count",
            r#"server="tools",tool="echo""#
        ),
        Some(1.0)
    );
    mcpwatch_tests::promtool_check("agent with gateway traffic", &rig.agent.metrics());
    // The same figures reach the collector as series of this host.
    wait_for("traffic series stored", LONG, || {
        let names = db::series_names(&rig.collector.db, &rig.id);
        (names.iter().any(|n| n == calls)
            && names
                .iter()
                .any(|n| n == "mcpwatch_mcp_tool_call_duration_seconds_bucket"))
        .then_some(())
    });
    client.cancel().await.expect("session closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_interleaved_on_one_stdio_server_never_cross_answers() {
    const SESSIONS: usize = 20;
    const CALLS: usize = 1000;
    let rig = Rig::start(&stdio_server("shared", &[], ""));
    rig.wait_attached("shared");
    let url = Arc::new(url(&rig, "shared"));
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let url = Arc::clone(&url);
        tasks.push(tokio::spawn(async move {
            let client = try_connect(&url).await?;
            for i in 0..CALLS {
                let text = format!("session {s} call {i}");
                let params = CallToolRequestParams::new("echo")
                    .with_arguments(args(json!({ "text": text })));
                let answer = client.call_tool(params).await.expect("echo answered");
                assert_eq!(text_of(&answer), text, "an answer reached the wrong caller");
            }
            client.cancel().await.expect("session closed");
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        if let Err(e) = t.await.expect("session task") {
            // Why the gateway said no is in its refusal counts and its log.
            let refused: Vec<String> = rig
                .agent
                .metrics()
                .lines()
                .filter(|l| {
                    l.starts_with("mcpwatch_mcp_gateway_requests_refused")
                        || l.starts_with("mcpwatch_mcp_gateway_connections_closed")
                })
                .map(str::to_owned)
                .collect();
            panic!(
                "a session could not start: {e}\nrefusals: {refused:#?}\nagent log:\n{}",
                rig.agent.logs()
            );
        }
    }
    let expected = (SESSIONS * CALLS) as f64;
    wait_for("every call counted", LONG, || {
        let n = traffic(
            &rig,
            "mcpwatch_mcp_tool_calls_total",
            r#"server="shared",tool="echo",outcome="ok""#,
        );
        (n == Some(expected)).then_some(())
    });
    // Sampled each interval: nothing stays in flight once every client has its answers.
    wait_for("nothing in flight", LONG, || {
        (rig.agent_metric("mcpwatch_mcp_gateway_in_flight", "shared") == Some(0.0)).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_call_cancels_it_and_others_are_unaffected() {
    // One probe only (at start): afterwards every request in flight is a client's.
    let rig = Rig::start(&rig::stdio_server(
        "slow",
        &["--tools-variant", "b"],
        "5m",
        "",
    ));
    rig.wait_attached("slow");
    let url = url(&rig, "slow");
    // The leaving client speaks raw HTTP, so its DELETE is certain to be sent.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value, session: Option<&str>| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r.send()
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "leaving", "version": "0"}}});
    let r = post(init, None).await.expect("initialize");
    let session = r.headers()["mcp-session-id"]
        .to_str()
        .expect("session id")
        .to_owned();
    let staying = connect(&url).await;
    let long_call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 60000}}});
    let call = tokio::spawn(post(long_call, Some(&session)));
    wait_for("the long call in flight", LONG, || {
        let n = rig.agent_metric("mcpwatch_mcp_gateway_in_flight", "slow");
        (n >= Some(1.0)).then_some(())
    });
    // Ending the session (DELETE) cancels the call upstream with notifications/cancelled;
    // the waiting POST is answered "connection closed" and the call counted as cancelled.
    let r = http
        .delete(&url)
        .header("mcp-session-id", &session)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 204);
    let answer: serde_json::Value = call
        .await
        .expect("task")
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["error"]["code"], -32000, "{answer}");
    wait_for("the call counted as cancelled", LONG, || {
        let n = traffic(
            &rig,
            "mcpwatch_mcp_tool_calls_total",
            r#"server="slow",tool="sleep",outcome="cancelled""#,
        );
        (n == Some(1.0)).then_some(())
    });
    let echo =
        CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "still here"})));
    let answer = staying
        .call_tool(echo)
        .await
        .expect("other session unaffected");
    assert_eq!(text_of(&answer), "still here");
    // The server is not stuck in the cancelled sleep: a short one answers at once.
    let short = CallToolRequestParams::new("sleep").with_arguments(args(json!({"ms": 1})));
    staying.call_tool(short).await.expect("short sleep");
    staying.cancel().await.expect("closed");
}

/// A new client can list the server's tools through the gateway.
async fn usable(url: &str) {
    let client = connect(url).await;
    let tools = client.list_tools(None).await.expect("tools/list");
    assert_eq!(tools.tools.len(), 3);
    client.cancel().await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_fails_its_probe_is_restarted_and_the_gateway_reattaches() {
    let rig = Rig::start(&stdio_server(
        "frozen",
        &[],
        "failure_threshold = 2\nstartup_grace = \"0s\"\n",
    ));
    rig.wait_attached("frozen");
    let url = url(&rig, "frozen");
    let before = connect(&url).await;
    mcpwatch_tests::docker::docker(&["pause", &rig.container("frozen")]);
    // The probe goes through the attached session, so it sees the pause.
    let failed = rig.wait_events("frozen", "probe_failed", 2);
    assert!(failed[0].detail.contains("kind=timeout"), "{failed:?}");
    wait_for("restarted", LONG, || {
        (rig.agent_metric("mcpwatch_server_restarts_total", "frozen") >= Some(1.0)).then_some(())
    });
    wait_for("re-attached", LONG, || {
        let attached = rig.agent_metric("mcpwatch_mcp_gateway_attached", "frozen") == Some(1.0);
        let attaches = rig.agent_metric("mcpwatch_mcp_gateway_attaches_total", "frozen");
        (attached && attaches >= Some(2.0)).then_some(())
    });
    // The old session went with the old container: the gateway answers its id with 404 and
    // the client opens a new session on its own (as MCP asks), on the new container.
    let tools = before
        .list_tools(None)
        .await
        .expect("the client reconnects through the gateway");
    assert_eq!(tools.tools.len(), 3);
    usable(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_agent_kill_9_the_container_is_adopted_and_the_gateway_reattaches() {
    let mut rig = Rig::start(&stdio_server("kept", &[], ""));
    rig.wait_attached("kept");
    let url = url(&rig, "kept");
    usable(&url).await;
    let container = rig.container("kept");
    let started =
        mcpwatch_tests::docker::docker(&["inspect", "-f", "{{.State.StartedAt}}", &container]);
    rig.agent.kill9();
    rig.agent.restart();
    wait_for("re-attached after the restart", LONG, || {
        (rig.agent_metric("mcpwatch_mcp_gateway_attached", "kept") == Some(1.0)).then_some(())
    });
    usable(&url).await;
    // Adopted, not restarted: the same container, started once.
    let again =
        mcpwatch_tests::docker::docker(&["inspect", "-f", "{{.State.StartedAt}}", &container]);
    assert_eq!(started.stdout, again.stdout);
}
