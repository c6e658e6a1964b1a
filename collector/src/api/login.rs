//! Login, logout and the caller's own identity: username + password (argon2id) opens a
//! session with idle and absolute timeouts; failures are rate limited per source address
//! and lock the account after repeated attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AuditSlot, Caller, ClientAddr};

use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::auth::credential::{self, Kind};
use crate::auth::password;
use crate::now_ms;
use crate::store::query::users::LoginRow;

/// Argon2 runs at once, for every route that checks or sets a password (each holds ~19 MiB
/// for tens of milliseconds).
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Checks `password` for the account `row` the way every route that takes a password does:
/// the per-address rate limit (429), at most four argon2 runs at once (503 beyond), and the
/// attempt counted against the account *before* the hash is checked, so parallel guesses
/// cannot slip past the lockout. Unknown, disabled and locked accounts take the same path
/// (a write, then a hash) and never match. The caller resets the count on success.
pub(super) async fn verify_guarded(
    state: &ApiState,
    source: Option<IpAddr>,
    row: Option<&LoginRow>,
    password: String,
) -> Result<bool, ApiError> {
    if let Some(ip) = source {
        if !state.limiter.allow(ip, state.settings.login_per_minute) {
            return Err(ApiError::TooManyRequests);
        }
    }
    if password.len() > password::MAX_LEN * 4 {
        return Ok(false);
    }
    let Ok(_permit) = ARGON2_SLOTS.try_acquire() else {
        return Err(ApiError::Unavailable(
            "too many password checks in progress; retry".into(),
        ));
    };
    let s = &state.settings;
    let target = row.filter(|r| !r.disabled).map(|r| r.id);
    let reserved = state
        .store
        .reserve_login(target, now_ms(), s.lockout_after, s.lockout_ms)
        .await?;
    let hash = match (row, reserved) {
        (Some(r), true) => r.password_hash.clone(),
        _ => password::dummy_hash().to_owned(),
    };
    let ok = tokio::task::spawn_blocking(move || password::verify(&password, &hash))
        .await
        .unwrap_or(false);
    Ok(reserved && ok)
}

/// An argon2id hash of a new password, computed off the async runtime and within the same
/// bound on concurrent argon2 runs as checks (waiting for a slot: only authorised callers
/// get here).
pub(super) async fn hash_password(pw: String) -> Result<String, ApiError> {
    let _permit = ARGON2_SLOTS
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|e| ApiError::Internal(format!("hash task failed: {e}")))?
        .map_err(ApiError::Internal)
}

/// Per-source-address login attempts within the current minute.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    /// Counts an attempt; `false` when the address is over `per_minute`.
    pub fn allow(&self, ip: IpAddr, per_minute: u32) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if seen.len() > 10_000 {
            seen.retain(|_, (t, _)| now.duration_since(*t).as_secs() < 60);
        }
        let e = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0).as_secs() >= 60 {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= per_minute
    }
}

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(whoami))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// Bearer credential for later requests; shown only here.
    pub token: String,
    pub expires_ms: i64,
    pub idle_timeout_ms: i64,
}

/// Opens a session.
#[utoipa::path(post, path = "/sessions", request_body = LoginRequest, security(()),
    responses((status = 201, body = LoginResponse), (status = 401, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), tag = "sessions")]
async fn login(
    State(state): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    slot: Option<Extension<AuditSlot>>,
    Json(req): Json<LoginRequest>,
) -> Result<(StatusCode, Json<LoginResponse>), ApiError> {
    let source = addr.map(|Extension(a)| a.0.ip());
    if req.username.len() > 256 {
        return Err(ApiError::Unauthenticated);
    }
    if let Some(Extension(slot)) = &slot {
        // Attempts are audited under the name tried (bounded), successes under the user.
        let tried: String = req.username.chars().take(64).collect();
        slot.set_actor(format!("login:{tried}"), None);
    }
    let now = now_ms();
    let row = state.store.login_row(req.username.clone()).await?;
    let ok = verify_guarded(&state, source, row.as_ref(), req.password.clone()).await?;
    let Some(row) = row.filter(|_| ok) else {
        return Err(ApiError::Unauthenticated);
    };
    let s = &state.settings;
    let secret = credential::secret().map_err(|e| ApiError::Internal(e.to_string()))?;
    let hash = credential::hash(&secret);
    let expires = now.saturating_add(s.session_absolute_ms);
    let src = source.map(|i| i.to_string()).unwrap_or_default();
    let uid = row.id;
    let id = state
        .store
        .start_session(uid, hash, now, expires, src)
        .await?;
    if let Some(Extension(slot)) = &slot {
        slot.set_actor(format!("user:{}", req.username), Some(id));
    }
    Ok((
        StatusCode::CREATED,
        Json(LoginResponse {
            token: credential::format(Kind::Session, id, &secret),
            expires_ms: expires,
            idle_timeout_ms: s.session_idle_ms,
        }),
    ))
}

/// Ends the caller's own session (or does nothing for an API token).
#[utoipa::path(delete, path = "/sessions/current",
    responses((status = 204), (status = 401, body = ErrorBody)), tag = "sessions")]
async fn logout(State(state): State<ApiState>, caller: Caller) -> Result<StatusCode, ApiError> {
    if let Some(id) = caller.principal.session_id {
        state.store.delete_session(id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub actor: String,
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub session_id: Option<i64>,
    /// `permission` or `permission@{selector}` for host-scoped grants.
    pub grants: Vec<String>,
}

/// Who the caller is and what it may do.
#[utoipa::path(get, path = "/me", responses((status = 200, body = Me), (status = 401, body = ErrorBody)),
    tag = "sessions")]
async fn whoami(caller: Caller) -> Json<Me> {
    let p = &caller.principal;
    Json(Me {
        actor: p.actor.clone(),
        user_id: p.user_id,
        token_id: p.token_id,
        session_id: p.session_id,
        grants: p
            .grants
            .iter()
            .map(|g| match &g.scope {
                crate::auth::Scope::AllHosts => g.permission.to_string(),
                crate::auth::Scope::Hosts { selector, .. } => {
                    format!("{}@{selector}", g.permission)
                }
            })
            .collect(),
    })
}
