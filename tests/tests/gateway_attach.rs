//! The gateway's stdio attach against a real Docker engine: a fixture container in stdio mode
//! (stdin held open, network none, as the supervisor runs it) is attached to a session mux;
//! MCP requests through a mux session get the server's answers, and stopping the container
//! fails the in-flight and next requests with "connection closed" instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use mcpwatch_agent::gateway::stdio_attach::{attach, AttachEnd};
use mcpwatch_agent::gateway::{
    ClientSession, MuxConfig, MuxError, NoCallSink, SessionMux, UpstreamLifecycle,
};
use mcpwatch_tests::docker::{docker, fixture_image, Container};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn next(session: &mut ClientSession) -> Option<Value> {
    let msg = tokio::time::timeout(WAIT, session.recv())
        .await
        .expect("mux answered in time")?;
    Some(serde_json::from_str(&msg.line).expect("mux sends JSON"))
}

async fn call(session: &mut ClientSession, id: u64, method: &str, params: Value) -> Value {
    let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    session.send(line.to_string()).await.expect("mux open");
    loop {
        let v = next(session).await.expect("session open");
        if v.get("id") == Some(&json!(id)) {
            return v;
        }
    }
}

#[tokio::test]
async fn stdio_container_serves_a_mux_session_and_its_stop_fails_requests() {
    let client = mcpwatch_tests::docker::bollard_client().await;
    let image = fixture_image();
    // `-i` without a terminal: stdin held open and unattached, tty false, as the supervisor's
    // container template does for stdio servers.
    let container = Container::run(
        "gw-attach",
        &[
            "-i",
            "--network",
            "none",
            &image,
            "--transport",
            "stdio",
            "--hang-on",
            "ping",
        ],
    );
    let attachment = attach(&client, &container.name, 16).await.expect("attach");
    let stats = Arc::clone(&attachment.stats);
    let mux = SessionMux::spawn(
        MuxConfig::new("fixture"),
        attachment.upstream,
        Arc::new(NoCallSink),
        UpstreamLifecycle::default(),
        CancellationToken::new(),
    )
    .expect("valid mux config");
    let mut session = mux.open_session().await.expect("session");

    let init = call(
        &mut session,
        1,
        "initialize",
        json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "gateway-attach-test", "version": "0"}
        }),
    )
    .await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "mcpwatch-mcp-fixture",
        "{init}"
    );
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    session
        .send(initialized.to_string())
        .await
        .expect("mux open");

    let list = call(&mut session, 2, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .expect("tools array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["echo", "add", "time"], "{list}");

    let echo = call(
        &mut session,
        3,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "through the gateway"}}),
    )
    .await;
    assert_eq!(
        echo["result"]["content"][0]["text"], "through the gateway",
        "{echo}"
    );

    // A request the fixture never answers is in flight when the container stops.
    let ping = json!({"jsonrpc": "2.0", "id": 4, "method": "ping"});
    session.send(ping.to_string()).await.expect("mux open");
    // Once the mux has taken the ping it is written upstream; wait until the attach wrote it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats
        .lines_to_server
        .load(std::sync::atomic::Ordering::Relaxed)
        < 5
    {
        assert!(tokio::time::Instant::now() < deadline, "ping never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = docker(&["stop", "-t", "1", &container.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let failed = next(&mut session).await.expect("an answer to the ping");
    assert_eq!(failed["id"], 4, "{failed}");
    assert_eq!(failed["error"]["code"], -32000, "{failed}");
    assert!(next(&mut session).await.is_none(), "session ends");
    let end = tokio::time::timeout(WAIT, attachment.ended.wait())
        .await
        .expect("attach ends");
    assert_eq!(end, AttachEnd::OutputClosed);
    // The next request finds the mux closed rather than waiting forever.
    assert_eq!(
        session
            .send(json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}).to_string())
            .await,
        Err(MuxError::Closed)
    );
    assert!(matches!(mux.open_session().await, Err(MuxError::Closed)));
    assert_eq!(
        stats
            .oversized_lines
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
