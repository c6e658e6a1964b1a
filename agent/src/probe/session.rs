//! One MCP client session over any rmcp transport: the handshake → `tools/list` (every page)
//! → `ping`, each stage under the same timeout, timed, and its failure classified.
//!
//! The revision is negotiated per server with rmcp's `Auto` client startup: `server/discover`
//! at 2026-07-28 first, then, when the server answers it as a server that predates it (any
//! JSON-RPC error other than a modern rejection; over HTTP also a 4xx), `initialize` at
//! 2025-11-25 on the same connection. The stage named `initialize` (`ProbeStage::Initialize`,
//! label `stage="initialize"`) is that whole handshake: its latency is the discover round
//! trip for a 2026-07-28 server, discover plus `initialize` for an older one. 2026-07-28 has
//! no `ping` (rmcp's server answers it -32601 there), so for that revision the ping stage is
//! skipped: the probe succeeds with `stage_latency.ping` left `None`.
//!
//! rmcp's `Auto` startup waits 10 s for an ignored `server/discover` before falling back; the
//! probe's stage timeout bounds the whole handshake, so a server that never answers unknown
//! methods fails the probe when that timeout is shorter.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientJsonRpcMessage, ClientRequest, ErrorCode, ErrorData,
    Implementation, PaginatedRequestParams, PingRequest, ProtocolVersion, RequestId,
    ServerJsonRpcMessage, ServerResult, Tool,
};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService, ServiceError};
use rmcp::transport::{IntoTransport, Transport};
use rmcp::{ClientLifecycleMode, ClientServiceExt};

use super::tools::fingerprint_tool;
use super::{FailureKind, ProbeFailure, ProbeReport, ProbeStage};
use crate::gateway::jsonrpc;

/// A server that keeps returning cursors is cut off here rather than listed forever.
const MAX_PAGES: usize = 100;

/// Longest wait for a session to close (an HTTP session sends a DELETE) after the stages.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Longest failure message kept: rmcp errors can embed whole JSON-RPC messages.
const MAX_MESSAGE: usize = 512;

/// A failed handshake. rmcp's message for a failed fallback names neither answer, so both
/// are spelled out.
fn init_failure(e: &ClientInitializeError) -> ProbeFailure {
    let kind = init_kind(e);
    match e {
        ClientInitializeError::LegacyFallbackFailed { discover, fallback } => failure(
            ProbeStage::Initialize,
            kind,
            &format!("initialize: {fallback} (after server/discover: {discover})"),
        ),
        _ => failure(ProbeStage::Initialize, kind, e),
    }
}

/// How the session is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handshake {
    /// `server/discover`, falling back to `initialize` (see the module comment).
    Auto,
    /// `initialize` only: a stdio server behind the gateway's shared session, kept in the
    /// lifecycle its legacy clients need (the probe's inline requests would commit a
    /// dual-revision server to 2026-07-28).
    Initialize,
    /// `server/discover` only: a shared stdio server that is discover-only (the gateway knows
    /// it, or it refused `initialize`).
    Discover,
}

/// Runs the stages over `transport`, filling `report`. Returns when the session is closed.
pub(super) async fn run<T, E, A>(transport: T, timeout: Duration, report: &mut ProbeReport)
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    run_with(transport, Handshake::Auto, timeout, report).await
}

/// As [`run`], opening the session as `handshake` says.
pub(super) async fn run_with<T, E, A>(
    transport: T,
    handshake: Handshake,
    timeout: Duration,
    report: &mut ProbeReport,
) where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let serve = start(transport, handshake);
    let mut client = match tokio::time::timeout(timeout, serve).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            report.failure = Some(init_failure(&e));
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

/// The client's startup over `transport` (see the module comment). Not an `async fn`: the
/// returned future is `Send` by its signature, so the transport type `into_transport` yields
/// stays inside it and callers' futures need not prove that type `Send` for every lifetime
/// (rustc fails to for the probe's transports: "`Send` is not general enough").
fn start<T, E, A>(
    transport: T,
    handshake: Handshake,
) -> impl Future<Output = Result<RunningService<RoleClient, ClientConfig>, ClientInitializeError>>
       + Send
       + 'static
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let client_info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mcpwatch-agent", env!("CARGO_PKG_VERSION")),
    )
    // What `initialize` asks for when the server turns out to predate `server/discover`.
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    // Newest first: every revision rmcp knows that negotiates through `server/discover`.
    let preferred_versions: Vec<ProtocolVersion> = ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .rev()
        .filter(|v| !v.has_initialize())
        .cloned()
        .collect();
    let lifecycle = match handshake {
        Handshake::Auto => ClientLifecycleMode::Auto {
            preferred_versions,
            legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
        },
        Handshake::Initialize => ClientLifecycleMode::Initialize,
        Handshake::Discover => ClientLifecycleMode::Discover { preferred_versions },
    };
    client_info.serve_with_lifecycle(LegacyDiscover::new(transport.into_transport()), lifecycle)
}

/// Everything after the handshake: version check, tools, ping (before 2026-07-28).
async fn stages(
    client: &RunningService<RoleClient, ClientConfig>,
    timeout: Duration,
    report: &mut ProbeReport,
) -> Result<(), ProbeFailure> {
    // rmcp's client sets the peer's information in both startups before it returns.
    let mut has_ping = true;
    if let Some(info) = client.peer_info() {
        report.protocol_version = Some(info.protocol_version.to_string());
        if let Some(server) = &info.server_info {
            report.server_name = Some(server.name.clone());
            report.server_version = Some(server.version.clone());
        }
        // rmcp accepts whatever version a server answers to `initialize`; the probe insists
        // on one it and this SDK both know.
        let v = &info.protocol_version;
        if !ProtocolVersion::KNOWN_VERSIONS.contains(v) {
            return Err(ProbeFailure {
                stage: ProbeStage::Initialize,
                kind: FailureKind::ProtocolVersion,
                message: format!("server answered with unsupported protocol version {v}"),
            });
        }
        has_ping = v.has_initialize();
    }

    let started = Instant::now();
    let tools = match tokio::time::timeout(timeout, list_all_tools(client)).await {
        Ok(Ok(tools)) => tools,
        Ok(Err(f)) => return Err(f),
        Err(_) => return Err(timed_out(ProbeStage::ToolsList, timeout)),
    };
    report.stage_latency.tools_list = Some(started.elapsed());
    report.tools = tools.iter().map(fingerprint_tool).collect();

    if !has_ping {
        return Ok(());
    }
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

/// The probe's client transport: `T` with one rewrite. A server built on an SDK that knows
/// `server/discover` but is pinned to revisions before 2026-07-28 (rmcp's own, narrowed with
/// `supported_protocol_versions`) answers discover -32022 "unsupported protocol version" with
/// only `initialize` revisions in `data.supported`. rmcp's `Auto` startup then gives up (it
/// only retries discover at a listed version it prefers), although the server would answer
/// `initialize`; this turns that one answer into -32601, which makes `Auto` fall back.
struct LegacyDiscover<T> {
    inner: T,
    /// The id of the `server/discover` request not yet answered.
    discover: Option<RequestId>,
}

impl<T> LegacyDiscover<T> {
    fn new(inner: T) -> LegacyDiscover<T> {
        LegacyDiscover {
            inner,
            discover: None,
        }
    }

    /// `message` as the client sees it: the discover refusal rewritten, if it is one.
    fn answered(&mut self, mut message: ServerJsonRpcMessage) -> ServerJsonRpcMessage {
        let (Some(sent), ServerJsonRpcMessage::Error(e)) = (&self.discover, &mut message) else {
            return message;
        };
        // As rmcp does, an error without an id answers the request in flight.
        let answers_discover = match &e.id {
            None => true,
            Some(got) => same_id(sent, got),
        };
        if answers_discover {
            self.discover = None;
            if let Some(rewritten) = Self::rewrite(&e.error) {
                e.error = rewritten;
            }
        }
        message
    }

    /// The replacement for a discover answer, if it lists only `initialize` revisions.
    fn rewrite(error: &ErrorData) -> Option<ErrorData> {
        if error.code != ErrorCode::UNSUPPORTED_PROTOCOL_VERSION {
            return None;
        }
        let supported = error.data.as_ref()?.get("supported")?.clone();
        let supported: Vec<ProtocolVersion> = serde_json::from_value(supported).ok()?;
        if supported.is_empty() || !supported.iter().all(ProtocolVersion::has_initialize) {
            return None;
        }
        let listed: Vec<&str> = supported.iter().map(ProtocolVersion::as_str).collect();
        Some(ErrorData::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!(
                "server/discover: the server speaks only {} (over initialize)",
                listed.join(", ")
            ),
            None,
        ))
    }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for LegacyDiscover<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let ClientJsonRpcMessage::Request(r) = &item {
            if matches!(r.request, ClientRequest::DiscoverRequest(_)) {
                self.discover = Some(r.id.clone());
            }
        }
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        let message = self.inner.receive().await?;
        Some(self.answered(message))
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// rmcp's correlation rule: a numeric id may come back as its decimal string.
fn same_id(sent: &RequestId, got: &RequestId) -> bool {
    sent == got
        || matches!((sent, got), (RequestId::Number(n), RequestId::String(s))
            if s.parse::<i64>().ok() == Some(*n))
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

#[cfg(test)]
#[path = "revision_tests.rs"]
mod revision_tests;
