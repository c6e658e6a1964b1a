//! `GET /hosts/{agent_id}/servers/{server}/tools`: per tool of one MCP server, what the
//! agent's gateway measured over the last `range` — calls, failures and their ratio,
//! latency quantiles, the last failure. Read from the raw samples (see `tool_stats.rs`).

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::metrics_api::{raw_covers, RAW_MAX_SPAN_MS};
use super::scope::authorized_host;
use super::servers::check_server_name;
use super::tool_stats::{figures, Fold, Plan, ToolView, BUCKET_METRIC, CALLS_METRIC};
use super::ApiState;
use crate::auth::Permission;
use crate::now_ms;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(server_tools))
}

/// Default `range`.
const DEFAULT_RANGE_MS: i64 = 3_600_000;
/// Shortest `range`.
const MIN_RANGE_MS: i64 = 1_000;
/// How far before the range a counter's baseline is looked for. A series with no sample in
/// it is new in the range (a first call, or an agent restart: counters begin at zero),
/// which holds while agents send their counters more often than this.
const BASELINE_MS: i64 = 10 * 60_000;
/// Series whose rollups are checked to tell whether raw retention has cut into the
/// baseline window (any series of the host shows it).
const FLOOR_PROBES: usize = 8;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ToolsQuery {
    /// How far back from now: `<number><unit>` with unit ms, s, m, h or d, from 1s to 6h
    /// (raw samples only, like `query_range`'s raw tier). Default `1h`.
    #[param(pattern = "^[0-9]{1,12}(ms|s|m|h|d)$")]
    pub range: Option<String>,
}

/// The tools of one server over a range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolsView {
    pub server: String,
    /// The range, as `<number><unit>`.
    pub range: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Tools with data in the range, by name (at most 256).
    pub tools: Vec<ToolView>,
    /// Some tools or series were left out (more than the caps).
    pub truncated: bool,
}

/// Whether `text` has the documented form `^[0-9]{1,12}(ms|s|m|h|d)$`.
fn fits_pattern(text: &str) -> bool {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    (1..=12).contains(&digits) && ["ms", "s", "m", "h", "d"].contains(&&text[digits..])
}

/// The range in ms and as written back: 400 when it does not have the documented form, 422
/// when it has but is outside 1s to 6h.
fn parse_range(text: Option<&str>) -> Result<(i64, String), ApiError> {
    let Some(text) = text else {
        return Ok((DEFAULT_RANGE_MS, "1h".to_owned()));
    };
    if !fits_pattern(text) {
        return Err(ApiError::bad(format!(
            "range {text:?}: expected <number><unit>, e.g. 30m or 6h"
        )));
    }
    let outside = || ApiError::unprocessable(format!("range {text} is outside 1s to 6h"));
    let d: mcpwatch_common::config::Duration = text.parse().map_err(|_| outside())?;
    let ms = d.as_millis_i64();
    if !(MIN_RANGE_MS..=RAW_MAX_SPAN_MS).contains(&ms) {
        return Err(outside());
    }
    Ok((ms, d.to_string()))
}

/// Per tool of the server, over the last `range` (default 1 h): calls, failures (every
/// outcome but `ok` and `cancelled`; a `tool_error`, the tool answering `isError`, is one),
/// their ratio, p50 / p95 / p99 latency and the last failure's time, from the traffic the
/// host's gateway measured. Counter resets (agent restarts) are counted as Prometheus's
/// `increase` does. A server without gateway traffic has no tools here.
#[utoipa::path(get, path = "/hosts/{agent_id}/servers/{server}/tools",
    params(("agent_id" = String, Path, description = "The agent's id"),
           ("server" = String, Path, description = "The MCP server's name",
            max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"),
           ToolsQuery),
    responses((status = 200, body = ToolsView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    tag = "hosts")]
async fn server_tools(
    State(state): State<ApiState>,
    caller: Caller,
    Path((agent_id, server)): Path<(String, String)>,
    Query(query): Query<ToolsQuery>,
) -> Result<Json<ToolsView>, ApiError> {
    caller.require(Permission::HostsRead)?;
    check_server_name(&server)?;
    let (range_ms, range) = parse_range(query.range.as_deref())?;
    let host = authorized_host(&state, &caller, Permission::HostsRead, &agent_id).await?;
    let end_ms = now_ms();
    let start_ms = end_ms.saturating_sub(range_ms);
    let mut series = state
        .store
        .host_series(host.id, CALLS_METRIC.to_owned(), false)
        .await?;
    series.extend(
        state
            .store
            .host_series(host.id, BUCKET_METRIC.to_owned(), false)
            .await?,
    );
    let plan = Plan::new(&series, &server);
    let ids = plan.ids();
    let read_from = start_ms.saturating_sub(BASELINE_MS);
    let probes = ids.iter().copied().take(FLOOR_PROBES).collect();
    let floors = state.store.tier_floors(host.id, probes).await?;
    let fold = Fold::new(start_ms, raw_covers(read_from, floors));
    let fold = state
        .store
        .fold_samples(host.id, ids, read_from, end_ms, fold, |f, s, ts, v| {
            f.push(s, ts, v)
        })
        .await?;
    Ok(Json(ToolsView {
        tools: figures(&plan, &fold),
        truncated: plan.truncated,
        server,
        range,
        start_ms,
        end_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tools_range_parsing() {
        assert_eq!(parse_range(None).unwrap(), (3_600_000, "1h".into()));
        assert_eq!(parse_range(Some("90m")).unwrap(), (5_400_000, "90m".into()));
        assert_eq!(parse_range(Some("6h")).unwrap().0, RAW_MAX_SPAN_MS);
        let status = |t: &str| parse_range(Some(t)).unwrap_err().status().as_u16();
        assert_eq!(status("7h"), 422);
        assert_eq!(status("500ms"), 422);
        assert_eq!(status("0s"), 422);
        assert_eq!(status("1 h"), 400);
        assert_eq!(status(" 1h"), 400);
        assert_eq!(status("h"), 400);
        assert_eq!(status("1w"), 400);
        assert_eq!(status("999999999999d"), 422, "fits the pattern, too large");
        assert_eq!(status("9999999999999d"), 400);
        assert_eq!(status("1h\u{0}"), 400);
    }
}
