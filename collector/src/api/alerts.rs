//! Alerts over the API: active alerts, one alert by fingerprint, their history and
//! acknowledgement; and the scope rules alerts and silences share.
//!
//! Scope: alerts and silences belong to hosts. An alert is visible to a caller holding
//! `alerts:read` for the host in its `host` label (matched against that host's labels plus
//! `host`); alerts without a host need an unscoped grant. Objects out of scope answer 404.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::scope::{all_host_labels, covers_object, require_access, Access, HostLabels};
use super::silences::muting_now;
use super::ApiState;
use crate::alert::policy::AlertRecord;
use crate::alert::route::matches_all;
use crate::alert::Matcher;
use crate::auth::Permission;
use crate::now_ms;
use crate::store::query::alerts::HistoryFilter;

/// Longest acknowledgement or silence comment (characters).
pub(super) const MAX_COMMENT: usize = 1024;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(alert_history))
        .routes(routes!(get_alert))
        .routes(routes!(ack_alert))
}

// ---- alerts -----------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct AckView {
    /// The actor who acknowledged (`user:NAME` or `token:NAME`).
    pub by: String,
    pub at_ms: i64,
    pub comment: String,
    /// Level acknowledged; an escalation above it clears the acknowledgement.
    pub level: Option<String>,
}

/// An alert (one per rule and series).
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    /// Stable identity of the alert (rule + series labels).
    pub fingerprint: String,
    pub rule: String,
    /// Series labels + rule labels + the host's operator labels (`team`, `env`...) +
    /// `alertname` + `severity`.
    pub labels: BTreeMap<String, String>,
    /// Rendered `summary`, `description`, `runbook_url`.
    pub annotations: BTreeMap<String, String>,
    /// `firing`, `flapping` or `resolved`.
    pub status: String,
    /// `warning` or `critical`.
    pub level: Option<String>,
    /// `critical`, `high`, `medium` or `low`.
    pub severity: String,
    pub value: Option<f64>,
    pub started_ms: i64,
    pub updated_ms: i64,
    pub resolved_ms: Option<i64>,
    pub ack: Option<AckView>,
    /// Ids of the silences muting this alert now (those the caller may see), ascending.
    pub silenced_by: Vec<i64>,
    /// Where it is in the escalation policy of the route that takes it, if any.
    pub escalation: Option<EscalationView>,
}

/// An active alert's escalation.
#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationView {
    pub policy: String,
    /// The last step reached (0-based); `None` before the first.
    pub step: Option<usize>,
    /// When the next step is reached; `None` once acknowledged or when none is left.
    pub next_ms: Option<i64>,
}

impl AlertView {
    /// Fills `silenced_by` from the silences muting now.
    fn muted_by(mut self, silences: &[(i64, Vec<Matcher>)]) -> AlertView {
        self.silenced_by = silences
            .iter()
            .filter(|(_, m)| matches_all(m, &self.labels))
            .map(|(id, _)| *id)
            .collect();
        self.silenced_by.sort_unstable();
        self
    }
}

impl From<&AlertRecord> for AlertView {
    fn from(r: &AlertRecord) -> AlertView {
        AlertView {
            fingerprint: r.fingerprint.clone(),
            rule: r.rule.clone(),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
            status: r.status.as_str().to_owned(),
            level: r.level.map(|l| l.as_str().to_owned()),
            severity: r.severity.as_str().to_owned(),
            value: r.value.filter(|v| v.is_finite()),
            started_ms: r.started_ms,
            updated_ms: r.updated_ms,
            resolved_ms: r.resolved_ms,
            ack: r.ack.as_ref().map(|a| AckView {
                by: a.by.clone(),
                at_ms: a.at_ms,
                comment: a.comment.clone(),
                level: a.level.map(|l| l.as_str().to_owned()),
            }),
            silenced_by: Vec::new(),
            escalation: r.escalation.as_ref().map(|e| EscalationView {
                policy: e.policy.clone(),
                step: e.step,
                next_ms: e.next_ms,
            }),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Only alerts of this rule.
    pub rule: Option<String>,
    /// Only alerts of this host (agent id).
    pub host: Option<String>,
}

/// Active (firing or flapping) alerts the caller may see.
#[utoipa::path(get, path = "/alerts", params(AlertsQuery),
    responses((status = 200, body = Page<AlertView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "alerts")]
async fn list_alerts(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<Page<AlertView>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let limit = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .limit(state.settings.max_page)?;
    let principal = caller.principal.clone();
    let hosts = all_host_labels(&state).await?;
    let hosts_for_silences = hosts.clone();
    let only_host = q.host;
    let page = state
        .store
        .active_alerts_page(q.cursor, q.rule, limit, move |rec: &AlertRecord| {
            only_host
                .as_ref()
                .is_none_or(|h| rec.labels.get("host") == Some(h))
                && covers_object(&principal, Permission::AlertsRead, &hosts, &rec.labels)
        })
        .await?;
    let silences = muting_now(&state, &caller.principal, &hosts_for_silences).await?;
    Ok(Json(Page {
        items: page
            .items
            .iter()
            .map(|a| AlertView::from(a).muted_by(&silences))
            .collect(),
        next_cursor: page.next,
    }))
}

/// An alert and the scope labels of its host.
async fn read_alert(
    state: &ApiState,
    fingerprint: String,
) -> Result<Option<(AlertRecord, HostLabels)>, ApiError> {
    let Some(rec) = state.store.alert::<AlertRecord>(fingerprint).await? else {
        return Ok(None);
    };
    let named: Vec<String> = rec.labels.get("host").cloned().into_iter().collect();
    let hosts = state.store.labels_of_hosts(named).await?;
    Ok(Some((rec, hosts)))
}

/// One alert (active or resolved) by fingerprint.
#[utoipa::path(get, path = "/alerts/{fingerprint}",
    params(("fingerprint" = String, Path, description = "The alert's fingerprint")),
    responses((status = 200, body = AlertView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "alerts")]
async fn get_alert(
    State(state): State<ApiState>,
    caller: Caller,
    Path(fingerprint): Path<String>,
) -> Result<Json<AlertView>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let Some((rec, hosts)) = read_alert(&state, fingerprint).await? else {
        return Err(ApiError::NotFound);
    };
    let visible = covers_object(
        &caller.principal,
        Permission::AlertsRead,
        &hosts,
        &rec.labels,
    );
    require_access(&caller, Access::of(Permission::AlertsRead, visible, false))?;
    let all_hosts = all_host_labels(&state).await?;
    let silences = muting_now(&state, &caller.principal, &all_hosts).await?;
    Ok(Json(AlertView::from(&rec).muted_by(&silences)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Why, or who is on it (at most 1024 characters).
    #[serde(default)]
    pub comment: String,
}

/// Acknowledges an active alert: repeats stop, and receivers that were told it fired are
/// told it is acknowledged. The acknowledgement is recorded under the caller's identity.
#[utoipa::path(post, path = "/alerts/{fingerprint}/ack",
    params(("fingerprint" = String, Path, description = "The alert's fingerprint")),
    request_body = AckRequest,
    responses((status = 200, body = AlertView, description = "The acknowledged alert"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "No such active alert in scope")),
    tag = "alerts")]
async fn ack_alert(
    State(state): State<ApiState>,
    caller: Caller,
    Path(fingerprint): Path<String>,
    Json(req): Json<AckRequest>,
) -> Result<Json<AlertView>, ApiError> {
    caller.require(Permission::AlertsAck)?;
    if req.comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::unprocessable(format!(
            "comment: at most {MAX_COMMENT} characters"
        )));
    }
    caller.note(format!("alert {fingerprint}"));
    let Some((rec, hosts)) = read_alert(&state, fingerprint.clone()).await? else {
        return Err(ApiError::NotFound);
    };
    let p = &caller.principal;
    let allowed = covers_object(p, Permission::AlertsAck, &hosts, &rec.labels);
    let visible = covers_object(p, Permission::AlertsRead, &hosts, &rec.labels);
    require_access(&caller, Access::of(Permission::AlertsAck, allowed, visible))?;
    if !rec.is_active() {
        return Err(ApiError::NotFound);
    }
    let acked = state
        .alerting
        .acknowledge(&fingerprint, &p.actor, &req.comment, now_ms())
        .await?;
    if !acked {
        // Resolved between the read and the acknowledgement.
        return Err(ApiError::NotFound);
    }
    let Some((rec, _)) = read_alert(&state, fingerprint).await? else {
        return Err(ApiError::NotFound);
    };
    Ok(Json(AlertView::from(&rec)))
}

/// One state change of an alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    pub id: i64,
    pub at_ms: i64,
    pub rule: String,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    /// `inactive`, `pending`, `firing`, `resolved` or `flapping`.
    pub from: String,
    pub to: String,
    pub level: Option<String>,
    pub value: Option<f64>,
    /// Whether the change was one receivers hear about.
    pub notify: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (pages go from newest to oldest).
    pub cursor: Option<i64>,
    /// Only changes of this rule.
    pub rule: Option<String>,
    /// Only changes of this alert.
    pub fingerprint: Option<String>,
    /// Only changes at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only changes before this time (ms since the epoch).
    pub until_ms: Option<i64>,
}

/// Alert state changes the caller may see, newest first.
#[utoipa::path(get, path = "/alerts/history", params(HistoryQuery),
    responses((status = 200, body = Page<HistoryItem>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "alerts")]
async fn alert_history(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Page<HistoryItem>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let limit = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .limit(state.settings.max_page)?;
    let filter = HistoryFilter {
        rule: q.rule,
        fingerprint: q.fingerprint,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    };
    let principal = caller.principal.clone();
    let cursor = q.cursor;
    let hosts = all_host_labels(&state).await?;
    let page = state
        .store
        .alert_history(filter, cursor, limit, move |labels| {
            covers_object(&principal, Permission::AlertsRead, &hosts, labels)
        })
        .await?;
    Ok(Json(Page {
        items: page
            .items
            .into_iter()
            .map(|h| HistoryItem {
                id: h.id,
                at_ms: h.at_ms,
                rule: h.rule,
                fingerprint: h.fingerprint,
                labels: h.labels,
                from: h.from_state,
                to: h.to_state,
                level: h.level,
                value: h.value.filter(|v| v.is_finite()),
                notify: h.notify,
            })
            .collect(),
        next_cursor: page.next,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn api_alerts_openapi_paths_and_schemas() {
        let (_, doc) = OpenApiRouter::<ApiState>::new()
            .merge(routes())
            .merge(super::super::silences::routes())
            .merge(super::super::rules::routes())
            .merge(super::super::receivers::routes())
            .split_for_parts();
        let v = serde_json::to_value(&doc).expect("document serializes");
        let paths = v["paths"].as_object().expect("paths");
        for (path, methods) in [
            ("/alerts", &["get"][..]),
            ("/alerts/history", &["get"]),
            ("/alerts/{fingerprint}", &["get"]),
            ("/alerts/{fingerprint}/ack", &["post"]),
            ("/silences", &["get", "post"]),
            ("/silences/{id}", &["get", "delete"]),
            ("/rules", &["get"]),
            ("/rules/dry-run", &["post"]),
            ("/rules/{name}", &["get", "put", "delete"]),
            ("/receivers", &["get", "post"]),
            ("/receivers/{name}", &["get", "put", "delete"]),
            ("/receivers/{name}/test", &["post"]),
        ] {
            for m in methods {
                let op = &paths[path][*m];
                assert!(op.is_object(), "{m} {path} missing");
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
            }
        }
        assert_eq!(paths.len(), 12, "{:?}", paths.keys().collect::<Vec<_>>());
        // Every schema referenced is defined (ErrorBody comes from the API's base document).
        let mut found = Vec::new();
        refs(&v, &mut found);
        let schemas = &v["components"]["schemas"];
        for r in found {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                schemas.get(name).is_some() || matches!(name, "ErrorBody" | "ErrorDetail"),
                "unresolved {r}"
            );
        }
        let rule = &schemas["RawRule"]["properties"];
        assert_eq!(rule["for"]["type"][0], "string", "{rule}");
    }
}
