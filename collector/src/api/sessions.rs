//! Live login sessions: a user lists and ends its own; `users:admin` all of them. (Login
//! and logout are in `login`.)

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::scope::{require_access, Access};
use super::tokens::{list_owner, OwnerQuery};
use super::users::is_admin;
use super::ApiState;
use crate::now_ms;
use crate::store::query::tokens::SessionRow;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
}

/// Live login sessions: the caller's own; `users:admin` sees all (or one user's).
#[utoipa::path(get, path = "/sessions", params(OwnerQuery),
    responses((status = 200, body = Vec<SessionRow>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)), tag = "sessions")]
async fn list_sessions(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<OwnerQuery>,
) -> Result<Json<Vec<SessionRow>>, ApiError> {
    let filter = match list_owner(&caller, q.user_id)? {
        Some(None) => return Ok(Json(Vec::new())),
        Some(Some(uid)) => Some(uid),
        None => None,
    };
    let rows = state.store.sessions(filter).await?;
    let now = now_ms();
    let idle = state.settings.session_idle_ms;
    Ok(Json(
        rows.into_iter()
            .filter(|s| now < s.expires_ms && now.saturating_sub(s.last_seen_ms) < idle)
            .collect(),
    ))
}

/// Ends a session (the caller's own, or any with `users:admin`); effective at once.
#[utoipa::path(delete, path = "/sessions/{id}", params(("id" = i64, Path, description = "Session id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "sessions")]
async fn end_session(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let session = state.store.session(id).await?;
    let visible = session
        .as_ref()
        .is_some_and(|s| is_admin(&caller) || caller.principal.user_id == Some(s.user_id));
    require_access(&caller, Access::of_owned(session.is_some(), visible))?;
    state.store.delete_session(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
