//! Protocol revisions behind the gateway's shared stdio session (real dockerd, the fixture
//! pinned to one revision): a server speaking only 2026-07-28 and one speaking only
//! 2025-11-25 are both probed and proxied, each client gets the lifecycle the server speaks,
//! and a client of the other revision is refused without the server being restarted.

use mcpwatch_tests::rig::{self, Rig, LONG};
use mcpwatch_tests::{metric, wait_for};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Map, Value};

fn url(rig: &Rig, server: &str) -> String {
    format!("http://{}/mcp/{server}", rig.agent.gateway_addr)
}

/// An rmcp client through the gateway, opening its session as `lifecycle` says.
async fn connect(
    url: &str,
    lifecycle: ClientLifecycleMode,
) -> Result<RunningService<RoleClient, ClientConfig>, ClientInitializeError> {
    // reqwest is built without a default TLS provider in this workspace; an Err only means
    // one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("gateway-revisions-test", "0"),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    info.serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), lifecycle)
        .await
}

fn legacy() -> ClientLifecycleMode {
    ClientLifecycleMode::Initialize
}

fn modern() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

/// Lists the tools and calls `echo` with `text`; returns what came back.
async fn echo(client: &RunningService<RoleClient, ClientConfig>, text: &str) -> String {
    let tools = client.list_tools(None).await.expect("tools/list");
    assert_eq!(tools.tools.len(), 3);
    let mut arguments = Map::new();
    arguments.insert("text".into(), Value::String(text.into()));
    let call = CallToolRequestParams::new("echo").with_arguments(arguments);
    let answer = client.call_tool(call).await.expect("echo");
    let content = serde_json::to_value(&answer.content).unwrap_or_default();
    content[0]["text"].as_str().unwrap_or_default().to_owned()
}

fn echo_calls(rig: &Rig, server: &str) -> Option<f64> {
    let series =
        format!(r#"mcpwatch_mcp_tool_calls_total{{server="{server}",tool="echo",outcome="ok"}}"#);
    metric(&rig.agent.metrics(), &series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_speaking_only_2026_07_28_is_probed_and_proxied_and_never_initialized() {
    let only = ["--protocol-version", "2026-07-28"];
    let rig = Rig::start(&rig::stdio_server("modern", &only, "1s", ""));
    rig.wait_attached("modern");
    let ok = rig.wait_events("modern", "probe_ok", 2);
    assert!(ok[1].detail.contains("protocol=2026-07-28"), "{ok:?}");
    rig.wait_revision("modern", "2026-07-28");

    let client = connect(&url(&rig, "modern"), modern())
        .await
        .expect("discover through the gateway");
    assert_eq!(echo(&client, "new").await, "new");

    // A 2025-11-25 client is refused as the server itself would refuse it, by the gateway:
    // the server never sees an `initialize`, so it is not restarted under its other clients.
    let refused = connect(&url(&rig, "modern"), legacy()).await;
    let Err(error) = refused else {
        panic!("a legacy client of a 2026-07-28-only server must be refused");
    };
    assert!(format!("{error:?}").contains("-32022"), "{error:?}");
    assert_eq!(echo(&client, "still").await, "still");
    wait_for("calls counted", LONG, || {
        (echo_calls(&rig, "modern") >= Some(2.0)).then_some(())
    });
    // Probes keep succeeding on the same container.
    let before = rig.wait_events("modern", "probe_ok", 1).len();
    rig.wait_events("modern", "probe_ok", before + 2);
    assert_eq!(
        rig.agent_metric("mcpwatch_server_restarts_total", "modern"),
        Some(0.0)
    );
    assert!(
        rig.events().iter().all(|e| e.kind != "exited"),
        "{:?}",
        rig.events()
    );
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_speaking_only_2025_11_25_is_probed_and_proxied_to_both_kinds_of_client() {
    let only = ["--protocol-version", "2025-11-25"];
    let rig = Rig::start(&rig::stdio_server("classic", &only, "1s", ""));
    rig.wait_attached("classic");
    let ok = rig.wait_events("classic", "probe_ok", 1);
    assert!(ok[0].detail.contains("protocol=2025-11-25"), "{ok:?}");
    rig.wait_revision("classic", "2025-11-25");

    let client = connect(&url(&rig, "classic"), legacy())
        .await
        .expect("initialize through the gateway");
    assert_eq!(echo(&client, "old").await, "old");
    // A client that discovers first is told the server is legacy and falls back.
    let auto = ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
    };
    let fallback = connect(&url(&rig, "classic"), auto)
        .await
        .expect("discover, then initialize");
    assert_eq!(echo(&fallback, "both").await, "both");
    wait_for("calls counted", LONG, || {
        (echo_calls(&rig, "classic") == Some(2.0)).then_some(())
    });
    assert_eq!(
        rig.agent_metric("mcpwatch_server_restarts_total", "classic"),
        Some(0.0)
    );
    let _ = client.cancel().await;
    let _ = fallback.cancel().await;
}
