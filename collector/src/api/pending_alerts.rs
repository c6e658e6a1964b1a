//! `GET /alerts/pending`: series whose rule condition holds but whose `for` has not yet
//! passed, read from the alert engine's persisted state, so the console shows what is
//! about to fire next to what fires.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::scope::{all_host_labels, covers_object};
use super::ApiState;
use crate::alert::{Phase, SeriesState};
use crate::auth::Permission;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(pending_alerts))
}

/// One pending series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingView {
    pub rule: String,
    /// What the alert's fingerprint will be when it fires.
    pub fingerprint: String,
    /// The series labels plus `alertname`.
    pub labels: BTreeMap<String, String>,
    /// `warning` or `critical`.
    pub level: Option<String>,
    /// When the condition began to hold.
    pub since_ms: i64,
    /// The last value the rule saw.
    pub value: Option<f64>,
}

/// Pending alerts the caller may see, by rule (at most 10,000 are read).
#[utoipa::path(get, path = "/alerts/pending",
    responses((status = 200, body = Vec<PendingView>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)),
    tag = "alerts")]
async fn pending_alerts(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<PendingView>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let rows = state.store.pending_states().await?;
    let hosts = all_host_labels(&state).await?;
    let items = rows
        .into_iter()
        .filter_map(|(rule, fingerprint, text)| {
            // A row a newer or older build wrote differently is skipped, as the engine does.
            let st: SeriesState = serde_json::from_str(&text).ok()?;
            if st.phase != Phase::Pending
                || !covers_object(
                    &caller.principal,
                    Permission::AlertsRead,
                    &hosts,
                    &st.labels,
                )
            {
                return None;
            }
            let mut labels: BTreeMap<String, String> = st.labels.into_iter().collect();
            labels.insert("alertname".into(), rule.clone());
            Some(PendingView {
                rule,
                fingerprint,
                labels,
                level: st.level.map(|l| l.as_str().to_owned()),
                since_ms: st.since_ms,
                value: st.value,
            })
        })
        .collect();
    Ok(Json(items))
}
