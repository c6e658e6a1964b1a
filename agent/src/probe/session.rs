//! One MCP client session over any rmcp transport: `initialize` → `tools/list` (every page) →
//! `ping`, each stage under the same timeout, timed, and its failure classified.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientRequest, ErrorCode, Implementation,
    PaginatedRequestParams, PingRequest, ProtocolVersion, ServerResult, Tool,
};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService, ServiceError};
use rmcp::transport::IntoTransport;
use rmcp::ServiceExt;

use super::tools::fingerprint_tool;
use super::{FailureKind, ProbeFailure, ProbeReport, ProbeStage};
use crate::gateway::jsonrpc;

/// A server that keeps returning cursors is cut off here rather than listed forever.
const MAX_PAGES: usize = 100;

/// Longest wait for a session to close (an HTTP session sends a DELETE) after the stages.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Longest failure message kept: rmcp errors can embed whole JSON-RPC messages.
const MAX_MESSAGE: usize = 512;

/// Runs the stages over `transport`, filling `report`. Returns when the session is closed.
pub(super) async fn run<T, E, A>(transport: T, timeout: Duration, report: &mut ProbeReport)
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let client_info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mcpwatch-agent", env!("CARGO_PKG_VERSION")),
    )
    // The newest revision with an `initialize` handshake: later ones dropped it and `ping`.
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);

    let started = Instant::now();
    let mut client = match tokio::time::timeout(timeout, client_info.serve(transport)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            report.failure = Some(failure(ProbeStage::Initialize, init_kind(&e), &e));
            return;
        }
        Err(_) => {
            report.failure = Some(timed_out(ProbeStage::Initialize, timeout));
            return;
        }
    };
    report.stage_latency.initialize = Some(started.elapsed());

    if let Err(f) = stages(&client, timeout, report).await {
        report.failure = Some(f);
    }
    // Closing is best effort: the result is already known, and a server that hangs must not
    // hold the probe beyond the grace period.
    let _ = client.close_with_timeout(CLOSE_GRACE.min(timeout)).await;
}

/// Everything after `initialize`: version check, tools, ping.
async fn stages(
    client: &RunningService<RoleClient, ClientConfig>,
    timeout: Duration,
    report: &mut ProbeReport,
) -> Result<(), ProbeFailure> {
    if let Some(info) = client.peer_info() {
        report.protocol_version = Some(info.protocol_version.to_string());
        if let Some(server) = &info.server_info {
            report.server_name = Some(server.name.clone());
            report.server_version = Some(server.version.clone());
        }
        // rmcp accepts whatever version the server answers; the probe insists on one it and
        // this SDK both know, over the handshake it just used.
        let v = &info.protocol_version;
        if !(v.has_initialize() && ProtocolVersion::KNOWN_VERSIONS.contains(v)) {
            return Err(ProbeFailure {
                stage: ProbeStage::Initialize,
                kind: FailureKind::ProtocolVersion,
                message: format!("server answered with unsupported protocol version {v}"),
            });
        }
    }

    let started = Instant::now();
    let tools = match tokio::time::timeout(timeout, list_all_tools(client)).await {
        Ok(Ok(tools)) => tools,
        Ok(Err(f)) => return Err(f),
        Err(_) => return Err(timed_out(ProbeStage::ToolsList, timeout)),
    };
    report.stage_latency.tools_list = Some(started.elapsed());
    report.tools = tools.iter().map(fingerprint_tool).collect();

    let started = Instant::now();
    let ping = client.send_request(ClientRequest::PingRequest(PingRequest::default()));
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(ServerResult::EmptyResult(_))) => {}
        Ok(Ok(_)) => {
            return Err(ProbeFailure {
                stage: ProbeStage::Ping,
                kind: FailureKind::JsonRpc,
                message: "ping answered with a non-empty result".into(),
            })
        }
        Ok(Err(e)) => return Err(failure(ProbeStage::Ping, service_kind(&e), &e)),
        Err(_) => return Err(timed_out(ProbeStage::Ping, timeout)),
    }
    report.stage_latency.ping = Some(started.elapsed());
    Ok(())
}

/// Follows `nextCursor` to the end. Unlike rmcp's `list_all_tools`, it stops on a repeated
/// cursor or after `MAX_PAGES`, so a broken server cannot keep the probe paging.
async fn list_all_tools(
    client: &RunningService<RoleClient, ClientConfig>,
) -> Result<Vec<Tool>, ProbeFailure> {
    let mut tools = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        let page = client
            .list_tools(Some(params))
            .await
            .map_err(|e| failure(ProbeStage::ToolsList, service_kind(&e), &e))?;
        tools.extend(page.tools);
        match page.next_cursor {
            None => return Ok(tools),
            Some(next) if !seen.insert(next.clone()) => {
                return Err(ProbeFailure {
                    stage: ProbeStage::ToolsList,
                    kind: FailureKind::JsonRpc,
                    message: format!("tools/list returned cursor {next:?} twice"),
                })
            }
            Some(next) => cursor = Some(next),
        }
    }
    Err(ProbeFailure {
        stage: ProbeStage::ToolsList,
        kind: FailureKind::JsonRpc,
        message: format!("tools/list still paging after {MAX_PAGES} pages"),
    })
}

fn timed_out(stage: ProbeStage, timeout: Duration) -> ProbeFailure {
    ProbeFailure {
        stage,
        kind: FailureKind::Timeout,
        message: format!("no answer within {} ms", timeout.as_millis()),
    }
}

pub(super) fn failure(
    stage: ProbeStage,
    kind: FailureKind,
    err: &dyn std::fmt::Display,
) -> ProbeFailure {
    let mut message = err.to_string();
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    ProbeFailure {
        stage,
        kind,
        message,
    }
}

/// A JSON-RPC error object is a JSON-RPC failure, unless it is the protocol's own
/// "unsupported protocol version" code, or one of the gateway's own answers for a server
/// that went away (-32000, "connection closed") or did not answer in time (-32001): a probe
/// through the gateway's session meets those instead of a broken pipe or its own timeout.
fn code_kind(code: ErrorCode) -> FailureKind {
    if code == ErrorCode::UNSUPPORTED_PROTOCOL_VERSION {
        FailureKind::ProtocolVersion
    } else if code == jsonrpc::CONNECTION_CLOSED {
        FailureKind::Transport
    } else if code == jsonrpc::REQUEST_TIMEOUT {
        FailureKind::Timeout
    } else if code == jsonrpc::OVER_LIMIT {
        FailureKind::Saturated
    } else {
        FailureKind::JsonRpc
    }
}

fn init_kind(e: &ClientInitializeError) -> FailureKind {
    match e {
        ClientInitializeError::JsonRpcError(data) => code_kind(data.code),
        ClientInitializeError::NoCompatibleProtocolVersion { .. }
        | ClientInitializeError::NoPreferredProtocolVersion => FailureKind::ProtocolVersion,
        // The server answered, but not with a well-formed answer to our request.
        ClientInitializeError::ExpectedInitResponse(_)
        | ClientInitializeError::ExpectedInitResult(_)
        | ClientInitializeError::ConflictInitResponseId(..)
        | ClientInitializeError::UncorrelatedErrorResponse { .. } => FailureKind::JsonRpc,
        ClientInitializeError::LegacyFallbackFailed { fallback, .. } => init_kind(fallback),
        // Transport errors, a closed connection, cancellation, and variants added later.
        _ => FailureKind::Transport,
    }
}

fn service_kind(e: &ServiceError) -> FailureKind {
    match e {
        ServiceError::McpError(data) => code_kind(data.code),
        ServiceError::Timeout { .. } => FailureKind::Timeout,
        ServiceError::TransportSend(_)
        | ServiceError::TransportClosed
        | ServiceError::Cancelled { .. } => FailureKind::Transport,
        // Unexpected response types and variants added later: the peer broke the protocol.
        _ => FailureKind::JsonRpc,
    }
}
