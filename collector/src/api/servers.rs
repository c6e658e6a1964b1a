//! The supervised MCP servers of a host: their state, health and newest events, server
//! control (restart / stop / start / approve drift) and the agent's config reload, through
//! the agent's command channel.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcpwatch_common::wire::CommandAction;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{self, ApiError, ErrorBody};
use super::scope::authorized_host;
use super::server_state::{
    assemble_servers, series_labels, ServerView, SERVER_EVENTS, SERVER_LOOKBACK_MS, STATE_EVENTS,
};
use super::ApiState;
use crate::auth::Permission;
use crate::command::CommandError;
use crate::store::query::hosts::HostRecord;
use crate::store::query::servers::ServersQuery;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_servers))
        .routes(routes!(control_server))
        .routes(routes!(reload_agent))
}

/// The host's supervised MCP servers: state, health, restarts, probe latency per stage,
/// tools, drift and the newest events of each.
#[utoipa::path(get, path = "/hosts/{agent_id}/servers",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = Vec<ServerView>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn list_servers(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<Vec<ServerView>>, ApiError> {
    let host = authorized_host(&state, &caller, Permission::HostsRead, &agent_id).await?;
    let query = ServersQuery {
        host_id: host.id,
        series_prefix: "mcpwatch_server_".to_owned(),
        lookback_ms: SERVER_LOOKBACK_MS,
        state_kinds: STATE_EVENTS.iter().map(|(k, _)| (*k).to_owned()).collect(),
        events_per_server: SERVER_EVENTS,
    };
    let data = state
        .store
        .server_rows(query, |s| series_labels(&s.labels).remove("server"))
        .await?;
    Ok(Json(assemble_servers(data)))
}

/// What a server control command answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommandReply {
    /// Whether the agent carried the command out.
    pub ok: bool,
    /// The agent's own account of what it did (or why not).
    pub message: String,
}

const MAX_SERVER_NAME: usize = 128;

/// A server name in a path: 1 to 128 characters, no control character (400 otherwise, as
/// the document's bounds say).
pub(super) fn check_server_name(server: &str) -> Result<(), ApiError> {
    if server.is_empty() || server.len() > MAX_SERVER_NAME || server.chars().any(char::is_control) {
        return Err(ApiError::bad("invalid server name"));
    }
    Ok(())
}

/// What can be done to one MCP server (the last path segment).
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServerAction {
    Restart,
    Stop,
    Start,
    ApproveDrift,
}

impl ServerAction {
    fn as_str(self) -> &'static str {
        match self {
            ServerAction::Restart => "restart",
            ServerAction::Stop => "stop",
            ServerAction::Start => "start",
            ServerAction::ApproveDrift => "approve-drift",
        }
    }
}

fn action_of(action: ServerAction, server: String) -> CommandAction {
    match action {
        ServerAction::Restart => CommandAction::RestartServer { server },
        ServerAction::Stop => CommandAction::StopServer { server },
        ServerAction::Start => CommandAction::StartServer { server },
        ServerAction::ApproveDrift => CommandAction::ApproveDrift { server },
    }
}

/// Sends restart / stop / start / approve-drift for one MCP server to the host's agent and
/// returns the agent's answer. 503 `agent_offline` when the agent is not connected, 504 when
/// it does not answer within the command timeout.
#[utoipa::path(post, path = "/hosts/{agent_id}/servers/{server}/{action}",
    params(("agent_id" = String, Path, description = "The agent's id"),
           ("server" = String, Path, description = "The MCP server's name",
            max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"),
           ("action" = inline(ServerAction), Path, description = "What to do")),
    responses((status = 200, body = CommandReply), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)),
    tag = "hosts")]
async fn control_server(
    State(state): State<ApiState>,
    caller: Caller,
    Path((agent_id, server, action)): Path<(String, String, ServerAction)>,
) -> Result<Json<CommandReply>, Response> {
    caller
        .require(Permission::ServersControl)
        .map_err(IntoResponse::into_response)?;
    let command = action_of(action, server.clone());
    check_server_name(&server).map_err(IntoResponse::into_response)?;
    let host = authorized_host(&state, &caller, Permission::ServersControl, &agent_id)
        .await
        .map_err(IntoResponse::into_response)?;
    caller.note(format!("{} {server}", action.as_str()));
    send_to_agent(&state, &caller, &host, command).await
}

/// Makes the host's agent re-read its configuration file, as SIGHUP does (TLS files, the MCP
/// server list), and returns its answer. Same permission and answers as server control.
#[utoipa::path(post, path = "/hosts/{agent_id}/reload",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = CommandReply), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody),
              (status = 504, body = ErrorBody)),
    tag = "hosts")]
async fn reload_agent(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<CommandReply>, Response> {
    caller
        .require(Permission::ServersControl)
        .map_err(IntoResponse::into_response)?;
    let host = authorized_host(&state, &caller, Permission::ServersControl, &agent_id)
        .await
        .map_err(IntoResponse::into_response)?;
    caller.note("reload");
    send_to_agent(&state, &caller, &host, CommandAction::Reload).await
}

/// Sends one command down the host's agent stream and maps the outcome: the agent's answer,
/// 409 for a revoked host, 503 offline or disconnected, 504 after the command timeout.
async fn send_to_agent(
    state: &ApiState,
    caller: &Caller,
    host: &HostRecord,
    command: CommandAction,
) -> Result<Json<CommandReply>, Response> {
    if host.revoked {
        return Err(ApiError::Conflict("the agent's identity is revoked".into()).into_response());
    }
    let timeout = state.settings.command_timeout;
    match state.commands.send(&host.agent_id, command, timeout).await {
        Ok(r) => {
            caller.note(format!("agent answered ok={} {:?}", r.ok, r.message));
            Ok(Json(CommandReply {
                ok: r.ok,
                message: r.message,
            }))
        }
        Err(e) => {
            caller.note(e.to_string());
            let (status, code) = match &e {
                CommandError::AgentOffline(_) => (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
                CommandError::Disconnected(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "agent_disconnected")
                }
                CommandError::Timeout(..) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            };
            Err(error::plain(status, code, &e.to_string()))
        }
    }
}
