//! Probes negotiating the protocol revision per server: fixtures speaking only 2026-07-28,
//! only 2025-11-25, or both, over Streamable HTTP and over an in-memory pipe (as the stdio
//! probe talks to a container), and scripted servers for the answers the fixture does not give.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpwatch_mcp_fixture::{HttpServer, Switches};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::run;
use crate::probe::{run_once, FailureKind, ProbeReport, ProbeStage, ProbeTarget};

const TIMEOUT: Duration = Duration::from_secs(3);

fn speaking(revision: Option<&str>) -> Switches {
    Switches {
        protocol_version: revision.map(str::to_owned),
        ..Switches::default()
    }
}

async fn over_http(switches: Switches) -> ProbeReport {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = HttpServer::bind(any_port, switches).await.unwrap();
    let target = ProbeTarget::Http {
        url: server.url(),
        headers: vec![],
    };
    run_once(&target, TIMEOUT).await
}

/// Probes `serve`'s end of a pipe with `session::run`, as the stdio probe does; returns the
/// report once the session is closed and the server has ended.
async fn over_pipe<F>(serve: impl FnOnce(DuplexStream) -> F) -> ProbeReport
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(serve(server));
    let (cr, cw) = tokio::io::split(client);
    let mut report = ProbeReport::default();
    run((cr, cw), TIMEOUT, &mut report).await;
    // Closing the session closes the pipe, which ends the server.
    tokio::time::timeout(TIMEOUT, served)
        .await
        .expect("server still running after the probe closed")
        .expect("server task");
    report
}

async fn fixture_over_pipe(switches: Switches) -> ProbeReport {
    over_pipe(|pipe| async move {
        let (r, w) = tokio::io::split(pipe);
        // The fixture's end result does not matter: the probe's report says what happened.
        let _ = mcpwatch_mcp_fixture::serve_io(r, w, switches).await;
    })
    .await
}

/// Every stage ran and succeeded at `revision`; `ping` only where the revision has it.
fn assert_ok_at(r: &ProbeReport, revision: &str) {
    assert_eq!(r.failure, None, "{r:?}");
    assert_eq!(r.protocol_version.as_deref(), Some(revision), "{r:?}");
    assert_eq!(r.server_name.as_deref(), Some("mcpwatch-mcp-fixture"));
    let names: Vec<&str> = r.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["echo", "add", "time"]);
    let l = r.stage_latency;
    assert!(l.initialize.is_some() && l.tools_list.is_some(), "{l:?}");
    // 2026-07-28 has no ping: skipped, not failed.
    let has_ping = revision < "2026-07-28";
    assert_eq!(l.ping.is_some(), has_ping, "{l:?}");
}

#[tokio::test]
async fn a_2026_07_28_only_server_is_probed_over_http() {
    let r = over_http(speaking(Some("2026-07-28"))).await;
    assert!(r.ok);
    assert_ok_at(&r, "2026-07-28");
}

#[tokio::test]
async fn a_2026_07_28_only_server_is_probed_over_a_pipe() {
    assert_ok_at(
        &fixture_over_pipe(speaking(Some("2026-07-28"))).await,
        "2026-07-28",
    );
}

#[tokio::test]
async fn a_2025_11_25_only_server_is_probed_over_http() {
    let r = over_http(speaking(Some("2025-11-25"))).await;
    assert!(r.ok);
    assert_ok_at(&r, "2025-11-25");
}

#[tokio::test]
async fn a_2025_11_25_only_server_is_probed_over_a_pipe() {
    assert_ok_at(
        &fixture_over_pipe(speaking(Some("2025-11-25"))).await,
        "2025-11-25",
    );
}

#[tokio::test]
async fn a_server_speaking_both_is_probed_at_the_newest() {
    assert_ok_at(&over_http(speaking(None)).await, "2026-07-28");
    assert_ok_at(&fixture_over_pipe(speaking(None)).await, "2026-07-28");
}

#[tokio::test]
async fn an_ignored_discover_is_a_handshake_timeout() {
    // A legacy server that never answers the unknown method: rmcp falls back only after
    // 10 s, so a shorter probe timeout ends the handshake first.
    let timeout = Duration::from_millis(400);
    let server = HttpServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Switches {
            hang_on: Some("server/discover".into()),
            ..speaking(Some("2025-11-25"))
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    let target = ProbeTarget::Http {
        url: server.url(),
        headers: vec![],
    };
    let r = run_once(&target, timeout).await;
    let f = r.failure.expect("probe should have failed");
    assert_eq!(
        (f.stage, f.kind),
        (ProbeStage::Initialize, FailureKind::Timeout)
    );
    assert!(started.elapsed() < timeout * 4, "{:?}", started.elapsed());
}

/// The methods a scripted server received, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A scripted stdio server: `answer(method)` gives each request's `result` or `error` member.
async fn scripted(pipe: DuplexStream, seen: Seen, answer: impl Fn(&str) -> Value) {
    let (r, mut w) = tokio::io::split(pipe);
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            break;
        };
        let method = msg["method"].as_str().unwrap_or_default().to_owned();
        seen.lock().unwrap().push(method.clone());
        let Some(id) = msg.get("id").cloned() else {
            continue; // notifications
        };
        let mut reply = answer(&method);
        reply["jsonrpc"] = json!("2.0");
        reply["id"] = id;
        if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            break;
        }
    }
}

/// As rmcp builds a server narrowed to revisions before 2026-07-28: it knows
/// `server/discover` and refuses it -32022 listing only `supported`, then serves `initialize`
/// at the first of them.
async fn narrowed_server(pipe: DuplexStream, supported: Vec<&'static str>, seen: Seen) {
    scripted(pipe, seen, |method| match method {
        "server/discover" => json!({"error": {"code": -32022,
            "message": "Unsupported protocol version",
            "data": {"requested": "2026-07-28", "supported": supported}}}),
        "initialize" => json!({"result": {"protocolVersion": supported[0],
            "capabilities": {"tools": {}}, "serverInfo": {"name": "narrowed", "version": "1"}}}),
        "tools/list" => json!({"result": {"tools": []}}),
        _ => json!({"result": {}}),
    })
    .await
}

#[tokio::test]
async fn a_failed_fallback_names_both_answers() {
    // rmcp's own message for it ("discover and legacy initialize both failed") names neither.
    let seen = Seen::default();
    let r = over_pipe(|pipe| {
        scripted(pipe, seen, |method| match method {
            "server/discover" => json!({"error": {"code": -32601, "message": "no such method"}}),
            _ => json!({"error": {"code": -32603, "message": "initialize is on fire"}}),
        })
    })
    .await;
    let f = r.failure.expect("probe should have failed");
    assert_eq!(
        (f.stage, f.kind),
        (ProbeStage::Initialize, FailureKind::JsonRpc)
    );
    assert!(
        f.message.contains("initialize is on fire") && f.message.contains("no such method"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn discover_refused_for_older_revisions_only_falls_back_to_initialize() {
    let seen = Seen::default();
    let log = seen.clone();
    let r = over_pipe(|pipe| narrowed_server(pipe, vec!["2025-06-18"], log)).await;
    assert_eq!(r.failure, None, "{r:?}");
    assert_eq!(r.protocol_version.as_deref(), Some("2025-06-18"));
    assert_eq!(r.server_name.as_deref(), Some("narrowed"));
    assert!(r.stage_latency.ping.is_some());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "server/discover",
            "initialize",
            "notifications/initialized",
            "tools/list",
            "ping"
        ]
    );
}

#[tokio::test]
async fn discover_refused_listing_only_unknown_newer_revisions_is_a_version_failure() {
    // Nothing to fall back to: the refusal is kept and the probe names the version problem.
    let seen = Seen::default();
    let log = seen.clone();
    let r = over_pipe(|pipe| narrowed_server(pipe, vec!["2099-01-01"], log)).await;
    let f = r.failure.expect("probe should have failed");
    assert_eq!(
        (f.stage, f.kind),
        (ProbeStage::Initialize, FailureKind::ProtocolVersion),
        "{f:?}"
    );
    assert_eq!(seen.lock().unwrap().as_slice(), ["server/discover"]);
}
