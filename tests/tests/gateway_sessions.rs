//! Gateway sessions beyond the shared stdio session: `per_client` gives each client its own
//! container (separate state, a session limit, containers removed with their sessions and
//! after an agent kill -9), and the built-in tool rules fire and resolve from real traffic
//! through the gateway, end to end through the collector.

use mcpwatch_tests::api::{admin_token, Api};
use mcpwatch_tests::db;
use mcpwatch_tests::docker::{docker, fixture_image};
use mcpwatch_tests::rig::{Rig, LONG};
use mcpwatch_tests::wait_for;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Map, Value};

type Client = RunningService<RoleClient, ClientConfig>;

async fn try_connect(url: &str) -> Result<Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("gateway-sessions-test", "0"),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    info.serve(StreamableHttpClientTransport::from_uri(url))
        .await
        .map_err(|e| e.to_string())
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn call(client: &Client, tool: &'static str, arguments: Value) -> (String, bool) {
    let params = CallToolRequestParams::new(tool).with_arguments(args(arguments));
    let r = client.call_tool(params).await.expect("tool answered");
    let content = serde_json::to_value(&r.content).unwrap_or_default();
    (
        content[0]["text"].as_str().unwrap_or_default().to_owned(),
        r.is_error == Some(true),
    )
}

/// Client containers of this test's agent (any state).
fn client_containers(rig: &Rig) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=mcpwatch.managed=client-session",
        "--filter",
        &format!("label=mcpwatch.agent={}", rig.id),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_sessions_get_their_own_containers_and_leave_none_behind() {
    let servers = format!(
        "\n[[mcp_server]]\nname = \"state\"\nimage = \"{}\"\n\
         args = [\"--transport\", \"stdio\", \"--tools-variant\", \"stateful\"]\n\
         transport = \"stdio\"\n[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n\
         [mcp_server.gateway]\nsessions = \"per_client\"\nmax_sessions = 2\nwarm_pool = 1\n",
        fixture_image()
    );
    let mut rig = Rig::start(&servers);
    rig.wait_events("state", "probe_ok", 1);
    let url = format!("http://{}/mcp/state", rig.agent.gateway_addr);
    // The warm container is started ahead of any client.
    wait_for("warm container", LONG, || {
        (client_containers(&rig).len() == 1).then_some(())
    });
    let a = try_connect(&url).await.expect("first client");
    let b = try_connect(&url).await.expect("second client");
    assert_eq!(
        call(&a, "remember", json!({"value": "alpha"})).await.0,
        "alpha"
    );
    assert_eq!(
        call(&b, "remember", json!({"value": "beta"})).await.0,
        "beta"
    );
    // Each client reaches its own process: neither sees the other's value.
    assert_eq!(call(&a, "recall", json!({})).await.0, "alpha");
    assert_eq!(call(&b, "recall", json!({})).await.0, "beta");
    wait_for("two client containers in use", LONG, || {
        let n = rig.agent_metric("mcpwatch_mcp_gateway_client_containers", "state");
        (n == Some(2.0)).then_some(())
    });
    // A third client is over max_sessions.
    let third = try_connect(&url).await;
    assert!(third.is_err(), "a third session was let in");
    // Sessions end: their containers go; the warm one stays.
    a.cancel().await.expect("closed");
    b.cancel().await.expect("closed");
    wait_for("session containers removed", LONG, || {
        (client_containers(&rig).len() == 1).then_some(())
    });
    let warm_before = client_containers(&rig);
    // A client still open when the agent is killed leaves its container behind; the next
    // agent removes it (and the old warm one) at start.
    let c = try_connect(&url).await.expect("client before the kill");
    assert_eq!(call(&c, "recall", json!({})).await.0, "");
    // c took the warm container; its refill starts in the background.
    let before_kill = wait_for("c's container and a new warm one", LONG, || {
        let now = client_containers(&rig);
        (now.len() == 2).then_some(now)
    });
    rig.agent.kill9();
    rig.agent.restart();
    wait_for("orphans removed and a new warm container", LONG, || {
        let now = client_containers(&rig);
        let orphans_gone = before_kill.iter().all(|id| !now.contains(id));
        (orphans_gone && now.len() == 1).then_some(())
    });
    assert!(warm_before
        .iter()
        .all(|id| !client_containers(&rig).contains(id)));
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_while_its_container_starts_leaves_no_container() {
    let servers = format!(
        "\n[[mcp_server]]\nname = \"lone\"\nimage = \"{}\"\nargs = [\"--transport\", \"stdio\"]\n\
         transport = \"stdio\"\n[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n\
         [mcp_server.gateway]\nsessions = \"per_client\"\nmax_sessions = 4\n",
        fixture_image()
    );
    // hyper may not notice a client that hung up while its `initialize` waits; such a
    // session is never used and idles out, and its container goes with it.
    let rig = Rig::start_with(&servers, &[], "session_idle_timeout = \"2s\"", &[]);
    rig.wait_events("lone", "probe_ok", 1);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("http://{}/mcp/lone", rig.agent.gateway_addr);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "impatient", "version": "0"}}});
    // Each client gives up long before a container can start (no warm pool).
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(50))
        .build()
        .expect("client");
    for _ in 0..5 {
        let r = impatient
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init.to_string())
            .send()
            .await;
        assert!(r.is_err(), "answered before a container could start: {r:?}");
    }
    // The starts finish in the background and, with nobody to take them and no warm pool,
    // their containers are removed (at once, or when the unused session idles out).
    wait_for("no client container left", LONG, || {
        let left = client_containers(&rig);
        let starts = rig.agent_metric("mcpwatch_mcp_gateway_client_container_starts_total", "lone");
        (left.is_empty() && starts >= Some(5.0)).then_some(())
    });
}

/// Rules file shortening the two tool rules' windows (overrides by name).
const SHORT_WINDOWS: &str = r#"
[[rule]]
name = "mcp_tool_error_ratio_high"
window = "20s"
"#;

fn active(api: &Api, rule: &str) -> Vec<Value> {
    let r = api.get(&format!("/api/v1/alerts?rule={rule}"));
    assert_eq!(r.status, 200);
    r.json()["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_error_ratio_alert_fires_and_resolves_from_real_gateway_traffic() {
    let servers = format!(
        "\n[[mcp_server]]\nname = \"calc\"\nimage = \"{}\"\nargs = [\"--transport\", \"stdio\"]\n\
         transport = \"stdio\"\n[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
        fixture_image()
    );
    let rig = Rig::start_with(
        &servers,
        &[],
        "",
        &[
            ("rules.toml", SHORT_WINDOWS),
            (
                "collector.toml",
                "[alerting]\nrule_files = [\"rules.toml\"]\n",
            ),
        ],
    );
    rig.wait_events("calc", "probe_ok", 1);
    let api = Api::new(
        rig.collector.http,
        Some(&admin_token(&rig.collector.db, "admin", None)),
    );
    // The probe made the tool list known, so its counters reach the collector at 0 before
    // the first call: the rule's increase then sees every call.
    wait_for("tool counters stored from zero", LONG, || {
        db::series_names(&rig.collector.db, &rig.id)
            .iter()
            .any(|n| n == "mcpwatch_mcp_tool_calls_total")
            .then_some(())
    });
    let url = format!("http://{}/mcp/calc", rig.agent.gateway_addr);
    let client = try_connect(&url).await.expect("client");
    // 25 calls, 10 failing (40 %: critical).
    for i in 0..25 {
        let arguments = if i % 5 < 2 {
            json!({})
        } else {
            json!({"a": 1, "b": 2})
        };
        let (_, failed) = call(&client, "add", arguments).await;
        assert_eq!(failed, i % 5 < 2);
    }
    let fired = wait_for("error ratio alert firing", LONG, || {
        active(&api, "mcp_tool_error_ratio_high")
            .into_iter()
            .find(|a| a["labels"]["tool"] == "add")
    });
    assert_eq!(fired["labels"]["server"], "calc");
    assert_eq!(fired["labels"]["host"], rig.id.as_str());
    assert_eq!(fired["level"], "critical", "{fired}");
    // Only successes from now on: once the failures leave the 20 s window it resolves.
    for _ in 0..25 {
        call(&client, "add", json!({"a": 1, "b": 2})).await;
    }
    wait_for("error ratio alert resolved", LONG * 2, || {
        active(&api, "mcp_tool_error_ratio_high")
            .iter()
            .all(|a| a["labels"]["tool"] != "add")
            .then_some(())
    });
    client.cancel().await.expect("closed");
}
