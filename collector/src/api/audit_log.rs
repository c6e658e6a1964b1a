//! Reading the audit log (`audit:read`): every change and every denial, newest first.
//! (Records are written by the audit middleware in `auth`.)

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::ApiState;
use crate::auth::Permission;
use crate::store::query::audit::{AuditFilter, AuditRow};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Exact actor, e.g. `user:alice` or `anonymous`.
    pub actor: Option<String>,
    /// Exact action, e.g. `POST /api/v1/users`.
    pub action: Option<String>,
    /// Only records at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only records before this time (ms since the Unix epoch).
    pub until_ms: Option<i64>,
    /// Exact request id: the `X-Request-Id` the request was answered with.
    pub request_id: Option<String>,
    /// Exact object, e.g. `/api/v1/users/3`.
    pub object: Option<String>,
    /// Exact result: the HTTP status the request was answered with, e.g. 403.
    pub result: Option<i64>,
}

/// The audit log, newest first: every change and every refused request.
#[utoipa::path(get, path = "/audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditRow>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), tag = "audit")]
async fn list_audit(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Page<AuditRow>>, ApiError> {
    caller.require_global(Permission::AuditRead)?;
    let limit = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .limit(state.settings.max_page)?;
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        request_id: q.request_id,
        object: q.object,
        result: q.result,
    };
    let before = q.cursor;
    let items = state.store.audit_page(filter, before, limit).await?;
    let next_cursor = if items.len() == limit {
        items.last().map(|a| a.id)
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
