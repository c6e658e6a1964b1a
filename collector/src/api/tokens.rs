//! API tokens: a user lists, creates and revokes its own (never with a permission it does
//! not hold); `users:admin` manages all. A new token's secret appears once, in the answer
//! that creates it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::scope::{require_access, Access};
use super::users::{is_admin, parse_permissions};
use super::ApiState;
use crate::auth::credential::{self, Kind};
use crate::auth::{from_names, permission_names, Permission};
use crate::now_ms;
use crate::store::query::tokens::{NewToken, TokenRow};

/// Longest token name.
const TOKEN_NAME_MAX: usize = 128;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
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
pub(super) fn list_owner(
    caller: &Caller,
    wanted: Option<i64>,
) -> Result<Option<Option<i64>>, ApiError> {
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
        (Some(_), Some(_)) => Err(ApiError::unprocessable(
            "give expires_in or expires_ms, not both",
        )),
        (Some(text), None) => {
            let d: mcpwatch_common::config::Duration = text
                .parse()
                .map_err(|e| ApiError::unprocessable(format!("expires_in: {e}")))?;
            let ms = d.as_millis_i64();
            if ms <= 0 {
                return Err(ApiError::unprocessable("expires_in must be positive"));
            }
            Ok(Some(now.saturating_add(ms)))
        }
        (None, Some(at)) if at <= now => Err(ApiError::unprocessable("expires_ms is in the past")),
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
        return Err(ApiError::unprocessable(format!(
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
    // A single sign-on account's rights come from its groups at its last sign-in: its
    // tokens last no longer than one of its sessions, so leaving a group at the provider
    // takes their rights away within `[oidc] session_lifetime` too.
    let mut expires = expires;
    if let (Some(uid), Some(rp)) = (owner, state.oidc.as_ref()) {
        if state.store.user(uid).await?.is_some_and(|u| u.sso) {
            let lifetime =
                i64::try_from(rp.settings.session_lifetime.as_millis()).unwrap_or(i64::MAX);
            let cap = now.saturating_add(lifetime);
            expires = Some(expires.map_or(cap, |e| e.min(cap)));
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
                permissions: requested.as_deref().map(permission_names),
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
            permissions: permissions.as_deref().map(from_names),
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
