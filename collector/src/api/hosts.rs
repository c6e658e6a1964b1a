//! Hosts, their MCP servers and events: list and detail (only the hosts the caller's scope
//! covers; others answer 404), operator labels, revoking an agent's identity, the state of
//! each supervised server derived from its latest samples and events, and server control
//! (restart / stop / start / approve drift) through the agent's command channel.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcpwatch_common::wire::CommandAction;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{self, ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::ApiState;
use crate::alert::Labels;
use crate::auth::{Permission, Principal};
use crate::command::CommandError;
use crate::store::api_hosts::{self as q, EventFilter, EventRecord, HostRecord, SeriesRecord};
use crate::store::StoreError;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_hosts))
        .routes(routes!(get_host))
        .routes(routes!(put_labels))
        .routes(routes!(revoke))
        .routes(routes!(unrevoke))
        .routes(routes!(list_servers))
        .routes(routes!(control_server))
        .routes(routes!(list_events))
}

// ---- scoping helpers (shared with the metrics routes) --------------------------------------

/// A host's operator labels from their stored JSON; `None` if unreadable.
pub(crate) fn operator_labels(json: &str) -> Option<Labels> {
    serde_json::from_str(json).ok()
}

/// The labels a host scope is matched against: the operator labels plus `host` = agent id.
/// `None` when the stored labels cannot be read (then only unscoped grants cover the host:
/// an unreadable label set must not slip through a negative matcher).
pub(crate) fn scope_labels(agent_id: &str, labels_json: &str) -> Option<Labels> {
    let mut l = operator_labels(labels_json)?;
    l.insert("host".to_owned(), agent_id.to_owned());
    Some(l)
}

/// Whether `p` covers the host.
pub(crate) fn covers(principal: &Principal, p: Permission, agent_id: &str, labels: &str) -> bool {
    match scope_labels(agent_id, labels) {
        Some(l) => principal.has_for_host(p, &l),
        None => principal.has_global(p),
    }
}

/// `p` on some host first (403 without it), then on this one (404 if not covered, as if the
/// host did not exist; audited as a denial).
pub(crate) fn authorize(caller: &Caller, p: Permission, host: &HostRecord) -> Result<(), ApiError> {
    caller.require(p)?;
    match scope_labels(&host.agent_id, &host.labels) {
        Some(l) => caller.require_for_host(p, &l),
        None if caller.principal.has_global(p) => Ok(()),
        None => {
            caller.deny();
            Err(ApiError::NotFound)
        }
    }
}

/// The host of `agent_id`, or 404.
pub(crate) async fn load_host(state: &ApiState, agent_id: &str) -> Result<HostRecord, ApiError> {
    let id = agent_id.to_owned();
    state
        .db
        .read(move |r| r.run(|c| q::host(c, &id)))
        .await?
        .ok_or(ApiError::NotFound)
}

/// Requires `p` for the caller, loads the host and checks `p` covers it.
pub(crate) async fn authorized_host(
    state: &ApiState,
    caller: &Caller,
    p: Permission,
    agent_id: &str,
) -> Result<HostRecord, ApiError> {
    caller.require(p)?;
    let host = load_host(state, agent_id).await?;
    authorize(caller, p, &host)?;
    Ok(host)
}

/// Ids of the hosts `p` covers for the caller; `None` when it covers every host.
pub(crate) async fn visible_host_ids(
    state: &ApiState,
    caller: &Caller,
    p: Permission,
) -> Result<Option<Vec<i64>>, ApiError> {
    if caller.principal.has_global(p) {
        return Ok(None);
    }
    let hosts = state.db.read(|r| r.run(q::host_scopes)).await?;
    Ok(Some(
        hosts
            .into_iter()
            .filter(|(_, agent, labels)| covers(&caller.principal, p, agent, labels))
            .map(|(id, _, _)| id)
            .collect(),
    ))
}

/// Parses stored series label text (`k="v",...`) into a map.
pub(crate) fn series_labels(text: &str) -> Labels {
    if text.is_empty() {
        return Labels::new();
    }
    match mcpwatch_common::wire::SeriesKey::parse_labels_text(text) {
        Some(pairs) => pairs.into_iter().collect(),
        None => {
            tracing::warn!(labels = %text, "unreadable stored series labels");
            Labels::new()
        }
    }
}

// ---- views ----------------------------------------------------------------------------------

/// One host.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HostView {
    /// The agent's identity (its certificate's DNS SAN).
    pub agent_id: String,
    pub hostname: String,
    /// Connected to the collector now.
    pub online: bool,
    pub last_seen_ms: i64,
    pub first_seen_ms: i64,
    pub agent_version: String,
    /// Operator-assigned labels (host scopes match these plus `host` = agent id).
    pub labels: BTreeMap<String, String>,
    /// Revoked identities are refused at connect and their batches at ingest.
    pub revoked: bool,
    /// The last batch seq committed for this agent.
    pub last_seq: i64,
}

fn host_view(h: HostRecord) -> HostView {
    let labels = operator_labels(&h.labels).unwrap_or_default();
    HostView {
        agent_id: h.agent_id,
        hostname: h.hostname,
        online: h.online,
        last_seen_ms: h.last_seen_ms,
        first_seen_ms: h.first_seen_ms,
        agent_version: h.agent_version,
        labels,
        revoked: h.revoked,
        last_seq: h.last_seq,
    }
}

/// One stored event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: i64,
    /// Agent id of the host.
    pub host: String,
    pub ts_ms: i64,
    /// `gap`, `spool_corruption`, or a server event kind (`started`, `exited`, `probe_failed`...).
    pub kind: String,
    /// The MCP server, for server events (empty for agent-wide ones).
    pub server: Option<String>,
    /// Event details (JSON object).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

fn event_view(e: EventRecord) -> EventView {
    let detail = match serde_json::from_str(&e.detail) {
        Ok(v) => v,
        Err(_) => serde_json::Value::String(e.detail),
    };
    EventView {
        id: e.id,
        host: e.agent_id,
        ts_ms: e.ts_ms,
        kind: e.kind,
        server: e.server,
        detail,
    }
}

// ---- hosts ------------------------------------------------------------------------------------

/// Lists the hosts the caller may read, in id order.
#[utoipa::path(get, path = "/hosts", params(PageQuery),
    responses((status = 200, body = Page<HostView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "hosts")]
async fn list_hosts(
    State(state): State<ApiState>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<HostView>>, ApiError> {
    caller.require(Permission::HostsRead)?;
    let limit = page.limit(state.settings.max_page)?;
    let after = page.cursor.unwrap_or(0);
    let principal = caller.principal.clone();
    let mut rows = state
        .db
        .read(move |r| {
            r.run(|c| {
                q::hosts_scan(c, after, limit, |h| {
                    covers(&principal, Permission::HostsRead, &h.agent_id, &h.labels)
                })
            })
        })
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|h| h.id)
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.into_iter().map(host_view).collect(),
        next_cursor,
    }))
}

/// One host.
#[utoipa::path(get, path = "/hosts/{agent_id}",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = HostView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn get_host(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    let host = authorized_host(&state, &caller, Permission::HostsRead, &agent_id).await?;
    Ok(Json(host_view(host)))
}

/// The new operator labels of a host (replacing all of them).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsBody {
    /// Names `[a-zA-Z_][a-zA-Z0-9_]*` (not `host`, not starting with `__`), at most 64,
    /// values 1 to 256 characters.
    pub labels: BTreeMap<String, String>,
}

pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_VALUE: usize = 256;
const MAX_LABEL_NAME: usize = 128;

/// Checks operator labels; the reason when they are refused.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels, got {}", labels.len()));
    }
    for (k, v) in labels {
        let mut chars = k.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || k.len() > MAX_LABEL_NAME {
            return Err(format!(
                "invalid label name {k:?}: [a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_LABEL_NAME} characters"
            ));
        }
        if k == "host" {
            return Err("label `host` is reserved: it is always the agent id".into());
        }
        if k.starts_with("__") {
            return Err(format!(
                "label {k:?}: names starting with `__` are reserved"
            ));
        }
        if v.is_empty() {
            return Err(format!(
                "label {k:?}: empty value (leave the label out instead)"
            ));
        }
        if v.chars().count() > MAX_LABEL_VALUE {
            return Err(format!(
                "label {k:?}: value longer than {MAX_LABEL_VALUE} characters"
            ));
        }
    }
    Ok(())
}

/// What the labels write found on the writer.
enum Relabel {
    Missing,
    Hidden,
    OutOfScope,
    Done(HostRecord),
}

/// Replaces a host's operator labels. The caller needs hosts:write on the host both with its
/// current labels and with the new ones (a team cannot hand its host to another team).
#[utoipa::path(put, path = "/hosts/{agent_id}/labels", request_body = LabelsBody,
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = HostView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn put_labels(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
    Json(body): Json<LabelsBody>,
) -> Result<Json<HostView>, ApiError> {
    caller.require(Permission::HostsWrite)?;
    validate_labels(&body.labels).map_err(ApiError::BadRequest)?;
    let json =
        serde_json::to_string(&body.labels).map_err(|e| ApiError::Internal(e.to_string()))?;
    let principal = caller.principal.clone();
    let (id, new_json) = (agent_id.clone(), json.clone());
    // Check and write in one step on the writer, so the check sees the labels it replaces.
    let outcome = state
        .db
        .store
        .exec(move |c| {
            let Some(host) = q::host(c, &id)? else {
                return Ok(Relabel::Missing);
            };
            let p = Permission::HostsWrite;
            if !covers(&principal, p, &host.agent_id, &host.labels) {
                return Ok(Relabel::Hidden);
            }
            if !covers(&principal, p, &host.agent_id, &new_json) {
                return Ok(Relabel::OutOfScope);
            }
            // New labels must not bring the host under any grant of the caller's that did not
            // cover it before (e.g. servers:control for env="staging" hosts).
            let widened = crate::auth::Permission::ALL.into_iter().any(|perm| {
                covers(&principal, perm, &host.agent_id, &new_json)
                    && !covers(&principal, perm, &host.agent_id, &host.labels)
            });
            if widened {
                return Ok(Relabel::OutOfScope);
            }
            q::set_labels(c, &id, &new_json)?;
            Ok(q::host(c, &id)?.map_or(Relabel::Missing, Relabel::Done))
        })
        .await?;
    match outcome {
        Relabel::Missing => Err(ApiError::NotFound),
        Relabel::Hidden => {
            caller.deny();
            Err(ApiError::NotFound)
        }
        Relabel::OutOfScope => {
            caller.deny();
            caller.note("new labels outside the caller's hosts:write scope");
            Err(ApiError::Forbidden(
                "hosts:write on the host's new labels".into(),
            ))
        }
        Relabel::Done(host) => {
            caller.note(format!("labels = {json}"));
            Ok(Json(host_view(host)))
        }
    }
}

async fn set_revoked(
    state: ApiState,
    caller: Caller,
    agent_id: String,
    revoked: bool,
) -> Result<Json<HostView>, ApiError> {
    let host = authorized_host(&state, &caller, Permission::HostsWrite, &agent_id).await?;
    // Lifting a revocation (often a security decision) takes fleet-wide hosts:write; a team
    // may revoke its own hosts but not readmit one.
    if !revoked {
        caller.require_global(Permission::HostsWrite)?;
    }
    if !state.db.store.set_revoked(&host.agent_id, revoked).await? {
        return Err(ApiError::NotFound);
    }
    caller.note(if revoked { "revoked" } else { "unrevoked" });
    if revoked && state.commands.is_connected(&host.agent_id) {
        // The session is refused at its next batch (ingest checks `revoked` per batch).
        caller.note("live session ends at its next batch");
    }
    Ok(Json(host_view(load_host(&state, &agent_id).await?)))
}

/// Revokes the agent's identity: new connections are refused, and its open session is
/// closed when it sends its next batch.
#[utoipa::path(post, path = "/hosts/{agent_id}/revoke",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = HostView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn revoke(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    set_revoked(state, caller, agent_id, true).await
}

/// Lifts a revocation: the agent may connect again.
#[utoipa::path(post, path = "/hosts/{agent_id}/unrevoke",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = HostView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn unrevoke(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    set_revoked(state, caller, agent_id, false).await
}

// ---- servers ----------------------------------------------------------------------------------

/// Server figures are read from samples at most this long before the host's newest one.
const SERVER_LOOKBACK_MS: i64 = 10 * 60_000;
/// Events listed per server.
const SERVER_EVENTS: usize = 10;

/// Event kinds that change a server's state, and the state each leads to.
const STATE_EVENTS: &[(&str, &str)] = &[
    ("created", "pending"),
    ("started", "running"),
    ("adopted", "running"),
    ("restarted", "running"),
    ("exited", "exited"),
    ("restart_scheduled", "backing_off"),
    ("gave_up", "gave_up"),
    ("stopped", "stopped"),
    ("removed", "removed"),
];

/// One supervised MCP server of a host, from its latest samples (within 10 minutes of the
/// host's newest sample) and its events. Fields are null when no sample says.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    pub name: String,
    /// pending, running, backing_off, stopped, exited, gave_up (or removed, from events).
    pub state: Option<String>,
    /// Where `state` came from: `metric` (mcpwatch_server_state) or `event`.
    pub state_source: Option<String>,
    pub up: Option<bool>,
    pub healthy: Option<bool>,
    pub restarts: Option<u64>,
    pub uptime_seconds: Option<f64>,
    pub last_exit_code: Option<i64>,
    pub oom_killed: Option<bool>,
    pub memory_bytes: Option<f64>,
    pub cpu_seconds_total: Option<f64>,
    pub crashloop_attempt: Option<u64>,
    pub gave_up: Option<bool>,
    pub probe_up: Option<bool>,
    /// Latency of the last probe per stage (initialize, tools_list, ping).
    pub probe_latency_seconds: BTreeMap<String, f64>,
    pub probes_total: Option<u64>,
    /// Probe failures so far per kind.
    pub probe_failures: BTreeMap<String, u64>,
    /// Tools the server lists.
    pub tools: Option<u64>,
    /// The tool surface changed since it was last approved.
    pub drift: Option<bool>,
    /// Time of the newest sample of this server.
    pub last_sample_ms: Option<i64>,
    /// The newest events of this server, newest first.
    pub events: Vec<EventView>,
}

/// What the servers read gathers in one read.
struct ServerData {
    series: Vec<SeriesRecord>,
    latest: HashMap<i64, (i64, f64)>,
    names: BTreeSet<String>,
    state_events: HashMap<String, (i64, String)>,
    events: HashMap<String, Vec<EventRecord>>,
}

fn count(v: f64) -> Option<u64> {
    // `as` saturates; negative and NaN are not counts.
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

fn flag(v: f64) -> Option<bool> {
    (!v.is_nan()).then_some(v != 0.0)
}

/// Builds the per-server views from the samples and events read.
fn assemble_servers(d: ServerData) -> Vec<ServerView> {
    let mut views: BTreeMap<String, ServerView> = d
        .names
        .iter()
        .map(|n| {
            (
                n.clone(),
                ServerView {
                    name: n.clone(),
                    ..ServerView::default()
                },
            )
        })
        .collect();
    // Newest `mcpwatch_server_state{state=S} == 1` per server.
    let mut metric_state: HashMap<String, (i64, String)> = HashMap::new();
    for s in &d.series {
        let Some(&(ts, v)) = d.latest.get(&s.id) else {
            continue;
        };
        let labels = series_labels(&s.labels);
        let Some(server) = labels.get("server") else {
            continue;
        };
        let Some(view) = views.get_mut(server) else {
            continue;
        };
        view.last_sample_ms = Some(view.last_sample_ms.map_or(ts, |t| t.max(ts)));
        let name = s.name.as_str();
        match name {
            "mcpwatch_server_up" => view.up = flag(v),
            "mcpwatch_server_healthy" => view.healthy = flag(v),
            "mcpwatch_server_restarts_total" => view.restarts = count(v),
            "mcpwatch_server_uptime_seconds" => view.uptime_seconds = Some(v),
            "mcpwatch_server_last_exit_code" => {
                view.last_exit_code = v.is_finite().then_some(v as i64)
            }
            "mcpwatch_server_oom_killed" => view.oom_killed = flag(v),
            "mcpwatch_server_memory_bytes" => view.memory_bytes = Some(v),
            "mcpwatch_server_cpu_seconds_total" => view.cpu_seconds_total = Some(v),
            "mcpwatch_server_crashloop_attempt" => view.crashloop_attempt = count(v),
            "mcpwatch_server_gave_up" => view.gave_up = flag(v),
            "mcpwatch_server_probe_up" => view.probe_up = flag(v),
            "mcpwatch_server_probes_total" => view.probes_total = count(v),
            "mcpwatch_server_tools" => view.tools = count(v),
            "mcpwatch_server_tool_drift" => view.drift = flag(v),
            "mcpwatch_server_probe_latency_seconds" => {
                if let Some(stage) = labels.get("stage") {
                    view.probe_latency_seconds.insert(stage.clone(), v);
                }
            }
            "mcpwatch_server_probe_failures_total" => {
                if let (Some(kind), Some(n)) = (labels.get("kind"), count(v)) {
                    view.probe_failures.insert(kind.clone(), n);
                }
            }
            "mcpwatch_server_state" if v == 1.0 => {
                if let Some(st) = labels.get("state") {
                    let newer = metric_state.get(server).is_none_or(|(t, _)| ts > *t);
                    if newer {
                        metric_state.insert(server.clone(), (ts, st.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    for (name, view) in views.iter_mut() {
        let from_metric = metric_state.get(name);
        let from_event = d.state_events.get(name).and_then(|(ts, kind)| {
            STATE_EVENTS
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, st)| (*ts, (*st).to_owned()))
        });
        let (state, source) = match (from_metric, from_event) {
            (Some((mt, _)), Some((et, es))) if et > *mt => (Some(es), "event"),
            (Some((_, ms)), _) => (Some(ms.clone()), "metric"),
            (None, Some((_, es))) => (Some(es), "event"),
            (None, None) => (None, ""),
        };
        view.state = state;
        view.state_source = (!source.is_empty()).then(|| source.to_owned());
        view.events = d
            .events
            .get(name)
            .map(|es| es.iter().cloned().map(event_view).collect())
            .unwrap_or_default();
    }
    views.into_values().collect()
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
    let host_id = host.id;
    let data = state
        .db
        .read(move |r| {
            r.run(|c| -> Result<ServerData, StoreError> {
                let series = q::host_series(c, host_id, "mcpwatch_server_", true)?;
                let ids: std::collections::HashSet<i64> = series.iter().map(|s| s.id).collect();
                let latest = match q::newest_raw_ts(c, host_id)? {
                    Some(newest) => q::latest_samples(
                        c,
                        Some(host_id),
                        newest.saturating_sub(SERVER_LOOKBACK_MS),
                        newest,
                        |s| ids.contains(&s),
                    )?,
                    None => HashMap::new(),
                };
                let mut names: BTreeSet<String> = series
                    .iter()
                    .filter_map(|s| series_labels(&s.labels).remove("server"))
                    .filter(|n| !n.is_empty())
                    .collect();
                names.extend(q::event_servers(c, host_id)?);
                let kinds: Vec<&str> = STATE_EVENTS.iter().map(|(k, _)| *k).collect();
                let mut state_events = HashMap::new();
                let mut events = HashMap::new();
                for n in &names {
                    if let Some(e) = q::latest_event_of_kinds(c, host_id, n, &kinds)? {
                        state_events.insert(n.clone(), e);
                    }
                    events.insert(n.clone(), q::server_events(c, host_id, n, SERVER_EVENTS)?);
                }
                Ok(ServerData {
                    series,
                    latest,
                    names,
                    state_events,
                    events,
                })
            })
        })
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

fn action_of(action: &str, server: String) -> Option<CommandAction> {
    Some(match action {
        "restart" => CommandAction::RestartServer { server },
        "stop" => CommandAction::StopServer { server },
        "start" => CommandAction::StartServer { server },
        "approve-drift" => CommandAction::ApproveDrift { server },
        _ => return None,
    })
}

/// Sends restart / stop / start / approve-drift for one MCP server to the host's agent and
/// returns the agent's answer. 503 `agent_offline` when the agent is not connected, 504 when
/// it does not answer within the command timeout.
#[utoipa::path(post, path = "/hosts/{agent_id}/servers/{server}/{action}",
    params(("agent_id" = String, Path, description = "The agent's id"),
           ("server" = String, Path, description = "The MCP server's name"),
           ("action" = String, Path, description = "restart, stop, start or approve-drift")),
    responses((status = 200, body = CommandReply), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)),
    tag = "hosts")]
async fn control_server(
    State(state): State<ApiState>,
    caller: Caller,
    Path((agent_id, server, action)): Path<(String, String, String)>,
) -> Result<Json<CommandReply>, Response> {
    caller
        .require(Permission::ServersControl)
        .map_err(IntoResponse::into_response)?;
    let Some(command) = action_of(&action, server.clone()) else {
        return Err(
            ApiError::bad("action must be one of restart, stop, start, approve-drift")
                .into_response(),
        );
    };
    if server.is_empty() || server.len() > MAX_SERVER_NAME || server.chars().any(char::is_control) {
        return Err(ApiError::bad("invalid server name").into_response());
    }
    let host = authorized_host(&state, &caller, Permission::ServersControl, &agent_id)
        .await
        .map_err(IntoResponse::into_response)?;
    caller.note(format!("{action} {server}"));
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

// ---- events -------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this host (agent id).
    pub host: Option<String>,
    /// Only this MCP server.
    pub server: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only events at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

/// Events (gaps, spool corruption, server state changes and probe results) of the hosts the
/// caller may read, newest first.
#[utoipa::path(get, path = "/events", params(EventsQuery),
    responses((status = 200, body = Page<EventView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn list_events(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Page<EventView>>, ApiError> {
    caller.require(Permission::HostsRead)?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = page.limit(state.settings.max_page)?;
    let hosts = match &query.host {
        Some(agent) => Some(vec![
            authorized_host(&state, &caller, Permission::HostsRead, agent)
                .await?
                .id,
        ]),
        None => visible_host_ids(&state, &caller, Permission::HostsRead).await?,
    };
    let filter = EventFilter {
        hosts,
        server: query.server,
        kind: query.kind,
        since_ms: query.since_ms,
        before_id: query.cursor,
    };
    let mut rows = state
        .db
        .read(move |r| r.run(|c| q::events_page(c, &filter, limit.saturating_add(1))))
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.into_iter().map(event_view).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn api_hosts_label_validation() {
        assert!(validate_labels(&labels(&[("team", "a"), ("_x1", "v")])).is_ok());
        for bad in [
            labels(&[("host", "x")]),
            labels(&[("1a", "x")]),
            labels(&[("a-b", "x")]),
            labels(&[("", "x")]),
            labels(&[("__x", "x")]),
            labels(&[("a", "")]),
            labels(&[("a", &"v".repeat(257))]),
        ] {
            assert!(validate_labels(&bad).is_err(), "{bad:?}");
        }
        assert!(validate_labels(&labels(&[("a", &"é".repeat(256))])).is_ok());
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("l{i}"), "v".to_owned())).collect();
        assert!(validate_labels(&many).is_err());
    }

    #[test]
    fn api_hosts_scope_labels_fail_closed() {
        let l = scope_labels("web-1", r#"{"team":"a"}"#).unwrap();
        assert_eq!(l.get("host").map(String::as_str), Some("web-1"));
        assert_eq!(l.get("team").map(String::as_str), Some("a"));
        assert!(scope_labels("web-1", "not json").is_none());
        let p = Principal {
            actor: "user:x".into(),
            user_id: Some(1),
            token_id: None,
            session_id: None,
            grants: crate::auth::grants(
                &[(vec![Permission::HostsRead], r#"{team!="b"}"#.into())],
                None,
            ),
        };
        assert!(covers(&p, Permission::HostsRead, "h", r#"{"team":"a"}"#));
        assert!(!covers(&p, Permission::HostsRead, "h", r#"{"team":"b"}"#));
        assert!(!covers(&p, Permission::HostsRead, "h", "garbage"));
    }

    #[test]
    fn api_hosts_series_labels_round_trip() {
        let key =
            mcpwatch_common::wire::SeriesKey::new("m", &[("a", "x\"y\\z\nw"), ("server", "s")]);
        let l = series_labels(&key.labels_text());
        assert_eq!(l.get("a").map(String::as_str), Some("x\"y\\z\nw"));
        assert_eq!(l.get("server").map(String::as_str), Some("s"));
        assert!(series_labels("").is_empty());
    }

    fn series(id: i64, name: &str, labels: &[(&str, &str)]) -> SeriesRecord {
        SeriesRecord {
            id,
            host_id: 1,
            agent_id: "h".into(),
            name: name.into(),
            labels: mcpwatch_common::wire::SeriesKey::new(name, labels).labels_text(),
        }
    }

    #[test]
    fn api_hosts_servers_from_samples_and_events() {
        let s = |id, name, l: &[(&str, &str)]| series(id, name, l);
        let d = ServerData {
            series: vec![
                s(1, "mcpwatch_server_up", &[("server", "a")]),
                s(
                    2,
                    "mcpwatch_server_state",
                    &[("server", "a"), ("state", "running")],
                ),
                s(
                    3,
                    "mcpwatch_server_state",
                    &[("server", "a"), ("state", "exited")],
                ),
                s(
                    4,
                    "mcpwatch_server_probe_latency_seconds",
                    &[("server", "a"), ("stage", "ping")],
                ),
                s(5, "mcpwatch_server_tools", &[("server", "a")]),
                s(6, "mcpwatch_server_tool_drift", &[("server", "a")]),
                s(7, "mcpwatch_server_restarts_total", &[("server", "a")]),
            ],
            latest: [
                (1, (100, 1.0)),
                (2, (100, 1.0)),
                (3, (100, 0.0)),
                (4, (90, 0.25)),
                (5, (90, 3.0)),
                (6, (90, 0.0)),
                (7, (100, 2.0)),
            ]
            .into_iter()
            .collect(),
            names: ["a".to_owned(), "b".to_owned()].into_iter().collect(),
            state_events: [
                ("a".to_owned(), (50, "exited".to_owned())),
                ("b".to_owned(), (70, "restart_scheduled".to_owned())),
            ]
            .into_iter()
            .collect(),
            events: HashMap::new(),
        };
        let v = assemble_servers(d);
        assert_eq!(v.len(), 2);
        let a = &v[0];
        assert_eq!(a.state.as_deref(), Some("running"));
        assert_eq!(a.state_source.as_deref(), Some("metric"));
        assert_eq!(a.up, Some(true));
        assert_eq!(a.tools, Some(3));
        assert_eq!(a.drift, Some(false));
        assert_eq!(a.restarts, Some(2));
        assert_eq!(a.probe_latency_seconds.get("ping"), Some(&0.25));
        assert_eq!(a.last_sample_ms, Some(100));
        let b = &v[1];
        assert_eq!(b.state.as_deref(), Some("backing_off"));
        assert_eq!(b.state_source.as_deref(), Some("event"));
        assert_eq!(b.up, None);
    }
}
