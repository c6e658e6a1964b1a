//! `GET /fleet`: every host in the caller's scope in one answer, for the console's fleet
//! page: its state and labels, the caller's permissions on it, its MCP servers counted by
//! state, its firing alerts and CPU / memory / disk sparklines (from `crate::fleet`).

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::hosts::{host_view, HostView};
use super::scope::{all_host_labels, covers, covers_object};
use super::ApiState;
use crate::alert::policy::{AlertRecord, AlertStatus};
use crate::auth::Permission;
use crate::fleet::{ServerCounts, SPARK_MINUTES};
use crate::now_ms;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(fleet))
        .layer(super::gzip())
}

/// One host of the fleet.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetHost {
    #[serde(flatten)]
    pub host: HostView,
    /// Its MCP servers by state (null before the agent reported any server).
    pub servers: Option<ServerCounts>,
    /// Its firing (or flapping) alerts; null without `alerts:read` on the host.
    pub firing: Option<u32>,
    /// Mean CPU busy ratio (0–1) per minute, `spark_minutes` values ending with the current
    /// minute; empty without `metrics:read` on the host.
    pub cpu: Vec<Option<f64>>,
    /// Mean used / total memory (0–1) per minute, as `cpu`.
    pub memory: Vec<Option<f64>>,
    /// Used / total of the fullest filesystem (0–1) per minute, as `cpu`.
    pub disk: Vec<Option<f64>>,
}

/// The fleet as the caller may see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetView {
    pub generated_ms: i64,
    /// Start of the sparklines' first minute.
    pub spark_start_ms: i64,
    /// Values per sparkline (one per minute).
    pub spark_minutes: usize,
    /// False for the first moments after a collector start, before the summary read the
    /// store: server counts and sparklines are missing until then.
    pub complete: bool,
    /// In agent id order.
    pub hosts: Vec<FleetHost>,
}

/// Sparkline values keep four decimals: a 1,000-host answer stays small.
fn round(values: Vec<Option<f64>>) -> Vec<Option<f64>> {
    values
        .into_iter()
        .map(|v| v.map(|x| (x * 10_000.0).round() / 10_000.0))
        .collect()
}

/// Every host the caller may read, with its server counts, firing alerts (with
/// `alerts:read` on it) and sparklines (with `metrics:read` on it). Not paged: one answer
/// for the whole scope (about 0.6 KB per host).
#[utoipa::path(get, path = "/fleet",
    responses((status = 200, body = FleetView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)),
    tag = "hosts")]
async fn fleet(State(state): State<ApiState>, caller: Caller) -> Result<Json<FleetView>, ApiError> {
    caller.require(Permission::HostsRead)?;
    let principal = caller.principal.clone();
    let hosts = state
        .store
        .hosts_page(0, usize::MAX - 1, move |h| {
            covers(&principal, Permission::HostsRead, &h.agent_id, &h.labels)
        })
        .await?;
    let firing = if caller.principal.has(Permission::AlertsRead) {
        firing_by_host(&state, &caller).await?
    } else {
        HashMap::new()
    };
    let now = now_ms();
    let figures = state
        .fleet
        .figures(hosts.iter().map(|h| h.agent_id.as_str()), now);
    let minute = now - now.rem_euclid(60_000);
    let mut items = hosts
        .into_iter()
        .map(|h| {
            let p = &caller.principal;
            let metrics = covers(p, Permission::MetricsRead, &h.agent_id, &h.labels);
            let alerts = covers(p, Permission::AlertsRead, &h.agent_id, &h.labels);
            let f = figures.get(&h.agent_id);
            let spark = |pick: fn(&crate::fleet::HostFigures) -> &Vec<Option<f64>>| match f {
                Some(f) if metrics => round(pick(f).clone()),
                _ => Vec::new(),
            };
            FleetHost {
                servers: f.map(|f| f.servers).filter(|c| c.total > 0),
                firing: alerts.then(|| firing.get(&h.agent_id).copied().unwrap_or(0)),
                cpu: spark(|f| &f.cpu),
                memory: spark(|f| &f.memory),
                disk: spark(|f| &f.disk),
                host: host_view(h, p),
            }
        })
        .collect::<Vec<_>>();
    items.sort_by(|a, b| a.host.agent_id.cmp(&b.host.agent_id));
    Ok(Json(FleetView {
        generated_ms: now,
        spark_start_ms: minute - (SPARK_MINUTES as i64 - 1) * 60_000,
        spark_minutes: SPARK_MINUTES,
        complete: state.fleet.ready(),
        hosts: items,
    }))
}

/// Firing and flapping alerts per host the caller may see them on.
async fn firing_by_host(
    state: &ApiState,
    caller: &Caller,
) -> Result<HashMap<String, u32>, ApiError> {
    let labels = std::sync::Arc::new(all_host_labels(state).await?);
    let mut out: HashMap<String, u32> = HashMap::new();
    let mut cursor = None;
    loop {
        let principal = caller.principal.clone();
        let hosts = labels.clone();
        let page = state
            .store
            .active_alerts_page(cursor, None, 10_000, move |a: &AlertRecord| {
                a.status != AlertStatus::Resolved
                    && covers_object(&principal, Permission::AlertsRead, &hosts, &a.labels)
            })
            .await?;
        for a in &page.items {
            if let Some(h) = a.labels.get("host") {
                *out.entry(h.clone()).or_default() += 1;
            }
        }
        match page.next {
            Some(next) if next != cursor.unwrap_or(i64::MIN) => cursor = Some(next),
            _ => return Ok(out),
        }
    }
}
