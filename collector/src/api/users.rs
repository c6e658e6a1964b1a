//! Users, roles, role bindings, API tokens, sessions and the audit log.
//!
//! Everything here is `users:admin` (held for every host) except what a user may do about
//! itself: change its own password (with the current one), list, create and revoke its own
//! tokens (never with a permission it does not hold), list and end its own sessions.
//! Reading the audit log takes `audit:read`. No response carries a password, a token
//! secret or a hash; a new token's string appears once, in the answer that creates it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::scope::{require_access, Access};
use super::ApiState;
use crate::auth::credential::{self, Kind};
use crate::auth::{password, Permission, Scope};
use crate::now_ms;
use crate::store::query::audit::{AuditFilter, AuditRow};
use crate::store::query::tokens::{NewToken, SessionRow, TokenRow};
use crate::store::query::users::{check_name, BindingRow, RoleRow, UserRow};

/// Longest token name.
const TOKEN_NAME_MAX: usize = 128;
/// Most roles one request may bind.
const ROLES_MAX: usize = 64;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user))
        .routes(routes!(change_password))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(list_bindings, add_binding))
        .routes(routes!(delete_binding))
        .routes(routes!(list_roles))
        .routes(routes!(put_role, delete_role))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
        .routes(routes!(list_audit))
}

// ---- helpers ----

/// An argon2id hash computed off the async runtime (it takes tens of milliseconds).
async fn hash_password(pw: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|e| ApiError::Internal(format!("hash task failed: {e}")))?
        .map_err(ApiError::Internal)
}

async fn verify_password(pw: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || password::verify(&pw, &phc))
        .await
        .unwrap_or(false)
}

/// Permission names to permissions (400 naming the unknown one), sorted, without repeats.
fn parse_permissions(names: &[String]) -> Result<Vec<Permission>, ApiError> {
    let mut out = names
        .iter()
        .map(|n| n.parse::<Permission>().map_err(ApiError::BadRequest))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_selector(selector: &str) -> Result<(), ApiError> {
    Scope::parse(selector)
        .map(|_| ())
        .map_err(|e| ApiError::bad(format!("host_selector: {e}")))
}

async fn load_user(state: &ApiState, id: i64) -> Result<UserRow, ApiError> {
    state.store.user(id).await?.ok_or(ApiError::NotFound)
}

fn is_admin(caller: &Caller) -> bool {
    caller.principal.has_global(Permission::UsersAdmin)
}

// ---- users ----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    password::check_policy(&req.username, &req.password).map_err(ApiError::BadRequest)?;
    check_selector(&req.host_selector)?;
    if req.roles.len() > ROLES_MAX {
        return Err(ApiError::bad(format!("at most {ROLES_MAX} roles")));
    }
    caller.note(format!("username {}", req.username));
    let hash = hash_password(req.password).await?;
    let now = now_ms();
    let CreateUser {
        username,
        roles,
        host_selector,
        ..
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The new password (checked against the policy).
    pub password: String,
    /// Required when users change their own password without `users:admin`.
    pub current_password: Option<String>,
}

/// Sets a user's password: `users:admin`, or the user itself with its current password.
/// Ends the user's other sessions.
#[utoipa::path(put, path = "/users/{id}/password", request_body = PasswordChange,
    params(("id" = i64, Path, description = "User id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), tag = "users")]
async fn change_password(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(req): Json<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let admin = is_admin(&caller);
    let own = caller.principal.user_id == Some(id);
    if !admin && !own {
        caller.require_global(Permission::UsersAdmin)?;
    }
    let user = load_user(&state, id).await?;
    password::check_policy(&user.username, &req.password).map_err(ApiError::BadRequest)?;
    let now = now_ms();
    if !admin || req.current_password.is_some() {
        let Some(current) = req.current_password else {
            return Err(ApiError::bad(
                "current_password is required to change your own password",
            ));
        };
        let row = state
            .store
            .login_row_by_id(id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let locked = row.locked_until_ms > now;
        let plausible = current.len() <= password::MAX_LEN * 4;
        if locked || !plausible || !verify_password(current, row.password_hash).await {
            // Guessing through this endpoint counts like guessing at login.
            if !locked {
                let (after, lock) = (state.settings.lockout_after, state.settings.lockout_ms);
                state.store.login_failed(id, now, after, lock).await?;
            }
            caller.deny();
            caller.note("current password wrong");
            return Err(ApiError::bad("current_password is wrong"));
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
    check_selector(&req.host_selector)?;
    caller.note(format!("role {} hosts {:?}", req.role, req.host_selector));
    let now = now_ms();
    let row = state
        .store
        .bind(id, req.role, req.host_selector, now)
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
    let (created, row) = state.store.put_role(name, perms, now).await?;
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

// ---- tokens ----

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OwnerQuery {
    /// Only this user's (`users:admin`); others always see only their own.
    pub user_id: Option<i64>,
}

/// The user whose objects a list shows: `Ok(None)` = everyone (admin without a filter),
/// `Ok(Some(None))` = nothing (a caller without a user), `Ok(Some(Some(id)))` = one user.
fn list_owner(caller: &Caller, wanted: Option<i64>) -> Result<Option<Option<i64>>, ApiError> {
    if is_admin(caller) {
        return Ok(wanted.map(Some));
    }
    let own = caller.principal.user_id;
    if wanted.is_some() && wanted != own {
        caller.require_global(Permission::UsersAdmin)?;
    }
    Ok(Some(own))
}

/// API tokens: all of them for `users:admin`, otherwise the caller's own.
#[utoipa::path(get, path = "/tokens", params(OwnerQuery),
    responses((status = 200, body = Vec<TokenRow>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)), tag = "tokens")]
async fn list_tokens(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<OwnerQuery>,
) -> Result<Json<Vec<TokenRow>>, ApiError> {
    let rows = match list_owner(&caller, q.user_id)? {
        Some(None) => Vec::new(),
        Some(Some(uid)) => state.store.tokens(Some(uid)).await?,
        None => state.store.tokens(None).await?,
    };
    Ok(Json(rows))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A label for people (1 to 128 characters).
    pub name: String,
    /// The owner; default the caller. Another user's token needs `users:admin`.
    pub user_id: Option<i64>,
    /// Lifetime, e.g. `30d`, `12h` (units ms, s, m, h, d).
    pub expires_in: Option<String>,
    /// Or an absolute expiry, milliseconds since the Unix epoch.
    pub expires_ms: Option<i64>,
    /// Limit the token to these permissions, each one the caller must hold. Omitted: what
    /// the owner may do (or, when a token creates it, that token's own limit).
    pub permissions: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    pub user_id: Option<i64>,
    #[schema(value_type = Option<Vec<String>>)]
    pub permissions: Option<Vec<Permission>>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    /// The bearer credential. Shown only in this response; the server keeps its hash.
    pub token: String,
}

fn token_expiry(req: &CreateToken, now: i64) -> Result<Option<i64>, ApiError> {
    match (&req.expires_in, req.expires_ms) {
        (Some(_), Some(_)) => Err(ApiError::bad("give expires_in or expires_ms, not both")),
        (Some(text), None) => {
            let d: mcpwatch_common::config::Duration = text
                .parse()
                .map_err(|e| ApiError::bad(format!("expires_in: {e}")))?;
            let ms = d.as_millis_i64();
            if ms <= 0 {
                return Err(ApiError::bad("expires_in must be positive"));
            }
            Ok(Some(now.saturating_add(ms)))
        }
        (None, Some(at)) if at <= now => Err(ApiError::bad("expires_ms is in the past")),
        (None, at) => Ok(at),
    }
}

/// Creates an API token. A user creates tokens for itself with permissions it holds;
/// `users:admin` may create them for another user. The token string is in the answer once.
#[utoipa::path(post, path = "/tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), tag = "tokens")]
async fn create_token(
    State(state): State<ApiState>,
    caller: Caller,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = req.name.trim().to_owned();
    if name.is_empty()
        || name.chars().count() > TOKEN_NAME_MAX
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad(format!(
            "name must be 1 to {TOKEN_NAME_MAX} printable characters"
        )));
    }
    let now = now_ms();
    let expires = token_expiry(&req, now)?;
    let requested = req
        .permissions
        .as_deref()
        .map(parse_permissions)
        .transpose()?;
    // Whose token: another user's (or a token without a user) needs users:admin.
    let own = caller.principal.user_id;
    let owner = req.user_id.or(own);
    if owner.is_none() || owner != own {
        caller.require_global(Permission::UsersAdmin)?;
    }
    // Never more than the caller holds.
    if let Some(perms) = &requested {
        if let Some(p) = perms.iter().find(|p| !caller.principal.has(**p)) {
            caller.deny();
            caller.note(format!("asked for {p} without holding it"));
            return Err(ApiError::Forbidden(p.to_string()));
        }
    }
    let calling_token = caller.principal.token_id;
    let secret = credential::secret().map_err(|e| ApiError::Internal(e.to_string()))?;
    let hash = credential::hash(&secret);
    let n = name.clone();
    let created = state
        .store
        .create_token(
            NewToken {
                name: n,
                owner,
                permissions: requested,
                expires_ms: expires,
                parent: calling_token,
                hash,
            },
            now,
        )
        .await?;
    let (id, permissions, expires) = created;
    caller.note(format!(
        "token {id} {name:?} for {}",
        owner.map_or("no user".to_owned(), |u| format!("user id {u}"))
    ));
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id,
            name,
            user_id: owner,
            permissions,
            created_ms: now,
            expires_ms: expires,
            token: credential::format(Kind::Token, id, &secret),
        }),
    ))
}

/// Revokes a token (the caller's own, or any with `users:admin`); effective at once.
#[utoipa::path(delete, path = "/tokens/{id}", params(("id" = i64, Path, description = "Token id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "tokens")]
async fn revoke_token(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let token = state.store.token(id).await?;
    let visible = token.as_ref().is_some_and(|t| {
        is_admin(&caller) || (t.user_id.is_some() && t.user_id == caller.principal.user_id)
    });
    require_access(&caller, Access::of_owned(token.is_some(), visible))?;
    state.store.revoke_token(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- sessions ----

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

// ---- audit ----

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
