//! Events (gaps, spool corruption, server state changes and probe results) of the hosts the
//! caller may read.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::scope::{authorized_host, visible_host_ids};
use super::ApiState;
use crate::auth::Permission;
use crate::store::query::events::{EventFilter, EventRecord};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

/// One stored event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: i64,
    /// Agent id of the host.
    pub host: String,
    pub ts_ms: i64,
    /// `gap`, `spool_corruption`, `series_limit` (the agent reached `[ingest]
    /// max_series_per_agent`; once per connection), or a server event kind (`started`,
    /// `exited`, `probe_failed`...).
    pub kind: String,
    /// The MCP server, for server events (empty for agent-wide ones).
    pub server: Option<String>,
    /// Event details (JSON object).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

pub(crate) fn event_view(e: EventRecord) -> EventView {
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this host (agent id).
    pub host: Option<String>,
    /// Only this MCP server.
    pub server: Option<String>,
    /// Only these kinds, comma-separated (`started,exited`; at most 16, each of letters,
    /// digits and underscores).
    #[param(pattern = "^[A-Za-z0-9_]{1,64}(,[A-Za-z0-9_]{1,64}){0,15}$")]
    pub kind: Option<String>,
    /// Only events at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

/// Most kinds one request may name.
const MAX_KINDS: usize = 16;

/// The kinds of a `kind` parameter: comma-separated names of 1 to 64 letters, digits and
/// underscores (what every event kind is made of; `a, b` is refused, not read as " b").
fn kinds(list: &str) -> Result<Vec<String>, ApiError> {
    let name = |k: &&str| {
        (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let kinds: Vec<&str> = list.split(',').collect();
    if kinds.len() > MAX_KINDS || !kinds.iter().all(name) {
        return Err(ApiError::bad(format!(
            "kind: at most {MAX_KINDS} comma-separated event kinds, each 1 to 64 letters, \
             digits or underscores"
        )));
    }
    Ok(kinds.into_iter().map(str::to_owned).collect())
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
        kinds: query.kind.as_deref().map(kinds).transpose()?,
        since_ms: query.since_ms,
        before_id: query.cursor,
    };
    let mut rows = state
        .store
        .events_page(filter, limit.saturating_add(1))
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
