//! Roles and role bindings: listing roles, creating and deleting custom ones, and binding
//! users to roles on host selectors. All `users:admin` (held for every host).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::users::{load_user, normalized_selector, parse_permissions};
use super::ApiState;
use crate::auth::{permission_names, Permission};
use crate::now_ms;
use crate::store::query::roles::{BindingRow, RoleRow};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_bindings, add_binding))
        .routes(routes!(delete_binding))
        .routes(routes!(list_roles))
        .routes(routes!(put_role, delete_role))
}

// ---- role bindings ----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    pub role: String,
    /// `{label="value", ...}` over host labels (and `host`); empty = every host. Global
    /// permissions (`users:admin`, `audit:read`, `rules:write`, `receivers:write`) are
    /// granted only by a binding for every host.
    #[serde(default)]
    pub host_selector: String,
}

/// A user's role bindings.
#[utoipa::path(get, path = "/users/{id}/bindings", params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = Vec<BindingRow>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), tag = "users")]
async fn list_bindings(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Vec<BindingRow>>, ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    Ok(Json(load_user(&state, id).await?.bindings))
}

/// Binds a role to a user, for every host or the hosts a selector matches.
#[utoipa::path(post, path = "/users/{id}/bindings", request_body = BindRequest,
    params(("id" = i64, Path, description = "User id")),
    responses((status = 201, body = BindingRow), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)), tag = "users")]
async fn add_binding(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(req): Json<BindRequest>,
) -> Result<(StatusCode, Json<BindingRow>), ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    let host_selector = normalized_selector(&req.host_selector)?;
    caller.note(format!("role {} hosts {:?}", req.role, req.host_selector));
    let now = now_ms();
    let row = state
        .store
        .bind(id, req.role, host_selector, now)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// Removes one of a user's role bindings.
#[utoipa::path(delete, path = "/users/{id}/bindings/{binding_id}",
    params(("id" = i64, Path, description = "User id"),
           ("binding_id" = i64, Path, description = "Binding id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)), tag = "users")]
async fn delete_binding(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, binding_id)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    let removed = state.store.unbind(id, binding_id).await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

// ---- roles ----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// Permission names, e.g. `["hosts:read", "alerts:ack"]`.
    pub permissions: Vec<String>,
}

/// Every role, built-in and custom.
#[utoipa::path(get, path = "/roles",
    responses((status = 200, body = Vec<RoleRow>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)), tag = "users")]
async fn list_roles(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<RoleRow>>, ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    Ok(Json(state.store.roles().await?))
}

/// Creates (201) or replaces (200) a custom role; built-in roles answer 409.
#[utoipa::path(put, path = "/roles/{name}", request_body = RoleRequest,
    params(("name" = String, Path, description = "Role name")),
    responses((status = 200, body = RoleRow), (status = 201, body = RoleRow),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)), tag = "users")]
async fn put_role(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<RoleRequest>,
) -> Result<(StatusCode, Json<RoleRow>), ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    let perms = parse_permissions(&req.permissions)?;
    caller.note(format!(
        "permissions {}",
        perms
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(",")
    ));
    let now = now_ms();
    let (created, row) = state
        .store
        .put_role(name, permission_names(&perms), now)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row)))
}

/// Deletes a custom role nobody is bound to (409 for built-in or bound roles).
#[utoipa::path(delete, path = "/roles/{name}",
    params(("name" = String, Path, description = "Role name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), tag = "users")]
async fn delete_role(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    if state.store.delete_role(name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
