//! Users (and the rules shared by the account routes in `roles`, `tokens` and `sessions`).
//!
//! Everything here is `users:admin` (held for every host) except what a user may do about
//! itself: change its own password (with the current one), list, create and revoke its own
//! tokens (never with a permission it does not hold), list and end its own sessions.
//! Reading the audit log takes `audit:read`. No response carries a password, a token
//! secret or a hash; a new token's string appears once, in the answer that creates it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, ClientAddr};
use super::error::{ApiError, ErrorBody};
use super::login::{check_current_password, hash_password, reused};
use super::ApiState;
use crate::auth::{Permission, Scope};
use crate::now_ms;
use crate::store::query::users::{check_name, UserRow};

/// Most roles one request may bind.
const ROLES_MAX: usize = 64;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user))
        .routes(routes!(change_password))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
}

// ---- helpers ----

/// Permission names to permissions (400 naming the unknown one), sorted, without repeats.
pub(super) fn parse_permissions(names: &[String]) -> Result<Vec<Permission>, ApiError> {
    let mut out = names
        .iter()
        .map(|n| n.parse::<Permission>().map_err(ApiError::Unprocessable))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// A binding's host selector checked and in its stored form (trimmed, `""` for every host).
pub(super) fn normalized_selector(selector: &str) -> Result<String, ApiError> {
    Scope::normalize(selector).map_err(ApiError::unprocessable)
}

pub(super) async fn load_user(state: &ApiState, id: i64) -> Result<UserRow, ApiError> {
    state.store.user(id).await?.ok_or(ApiError::NotFound)
}

pub(super) fn is_admin(caller: &Caller) -> bool {
    caller.principal.has_global(Permission::UsersAdmin)
}

// ---- users ----

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1 to 64 of `a-z 0-9 . _ -`.
    pub username: String,
    /// Checked against the password policy.
    pub password: String,
    /// Roles to bind at once.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Host selector for those bindings (`{team="a"}`); empty = every host.
    #[serde(default)]
    pub host_selector: String,
}

/// Never printed with its password.
impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("host_selector", &self.host_selector)
            .finish_non_exhaustive()
    }
}

/// Every user with its role bindings.
#[utoipa::path(get, path = "/users",
    responses((status = 200, body = Vec<UserRow>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)), tag = "users")]
async fn list_users(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<UserRow>>, ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    let users = state.store.users().await?;
    Ok(Json(users))
}

/// Creates a user (and binds its initial roles).
#[utoipa::path(post, path = "/users", request_body = CreateUser,
    responses((status = 201, body = UserRow), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)), tag = "users")]
async fn create_user(
    State(state): State<ApiState>,
    caller: Caller,
    Json(req): Json<CreateUser>,
) -> Result<(StatusCode, Json<UserRow>), ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    check_name("username", &req.username)?;
    let policy = &state.settings.auth.password;
    policy
        .check(&req.username, &req.password)
        .map_err(ApiError::Unprocessable)?;
    let host_selector = normalized_selector(&req.host_selector)?;
    if req.roles.len() > ROLES_MAX {
        return Err(ApiError::unprocessable(format!(
            "at most {ROLES_MAX} roles"
        )));
    }
    caller.note(format!("username {}", req.username));
    let hash = hash_password(req.password).await?;
    let now = now_ms();
    let CreateUser {
        username, roles, ..
    } = req;
    let user = state
        .store
        .create_user_with_roles(username, hash, roles, host_selector, now)
        .await?;
    caller.note(format!("user id {}", user.id));
    Ok((StatusCode::CREATED, Json(user)))
}

/// One user with its role bindings.
#[utoipa::path(get, path = "/users/{id}", params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = UserRow), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), tag = "users")]
async fn get_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<UserRow>, ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    Ok(Json(load_user(&state, id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The new password (checked against the policy).
    pub password: String,
    /// Required when users change their own password (admins too).
    pub current_password: Option<String>,
}

/// Never printed with its passwords.
impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange(<passwords>)")
    }
}

/// Sets a user's password: `users:admin` for someone else's, the current password for one's
/// own (which must differ from the latest `[auth] password_history`). Ends the user's other
/// sessions.
#[utoipa::path(put, path = "/users/{id}/password", request_body = PasswordChange,
    params(("id" = i64, Path, description = "User id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "Too many password attempts from this address"),
              (status = 503, body = ErrorBody, description = "Too many password checks at once; retry")),
    tag = "users")]
async fn change_password(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
    addr: Option<Extension<ClientAddr>>,
    Json(req): Json<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let admin = is_admin(&caller);
    let own = caller.principal.user_id == Some(id);
    if !admin && !own {
        caller.require_global(Permission::UsersAdmin)?;
    }
    let user = load_user(&state, id).await?;
    let policy = &state.settings.auth.password;
    policy
        .check(&user.username, &req.password)
        .map_err(ApiError::Unprocessable)?;
    let now = now_ms();
    if own {
        // Even an admin gives its current password for its own: a stolen session alone
        // cannot take the account over.
        let Some(current) = req.current_password else {
            return Err(ApiError::unprocessable(
                "current_password is required to change your own password",
            ));
        };
        // Guessing through this endpoint is throttled and counted exactly like guessing at
        // login (rate limit, bounded argon2, the attempt counted before the check).
        let source = addr.map(|Extension(a)| a.0.ip());
        check_current_password(&state, &caller, source, id, current).await?;
        // The current password always counts as used. Not checked when an admin sets
        // someone else's: the answer would tell the admin that user's old passwords.
        let recent = state
            .store
            .recent_password_hashes(id, policy.history.max(1))
            .await?;
        if reused(req.password.clone(), recent).await? {
            return Err(ApiError::Unprocessable(if policy.history > 1 {
                format!(
                    "password must differ from the last {} passwords of this account",
                    policy.history
                )
            } else {
                "password must differ from the current one".to_owned()
            }));
        }
    }
    let hash = hash_password(req.password).await?;
    let keep = if own {
        caller.principal.session_id
    } else {
        None
    };
    let found = state.store.set_password(id, hash, now, keep).await?;
    if !found {
        return Err(ApiError::NotFound);
    }
    caller.note(format!("password of {} changed", user.username));
    Ok(StatusCode::NO_CONTENT)
}

async fn set_disabled(
    state: &ApiState,
    caller: &Caller,
    id: i64,
    disabled: bool,
) -> Result<Json<UserRow>, ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    if disabled && caller.principal.user_id == Some(id) {
        return Err(ApiError::Conflict(
            "you cannot disable your own account".into(),
        ));
    }
    let user = state
        .store
        .set_disabled(id, disabled)
        .await?
        .ok_or(ApiError::NotFound)?;
    caller.note(format!("user {}", user.username));
    Ok(Json(user))
}

/// Disables a user: its sessions end at once and its tokens stop working.
#[utoipa::path(post, path = "/users/{id}/disable", params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = UserRow), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)), tag = "users")]
async fn disable_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<UserRow>, ApiError> {
    set_disabled(&state, &caller, id, true).await
}

/// Enables a disabled user again.
#[utoipa::path(post, path = "/users/{id}/enable", params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = UserRow), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), tag = "users")]
async fn enable_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<UserRow>, ApiError> {
    set_disabled(&state, &caller, id, false).await
}
