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

/// Password verifications running at once (each holds ~19 MiB for tens of milliseconds).
static VERIFY_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::auth::credential::{self, Kind};
use crate::auth::password;
use crate::now_ms;

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
    if let Some(ip) = source {
        if !state.limiter.allow(ip, state.settings.login_per_minute) {
            return Err(ApiError::TooManyRequests);
        }
    }
    if req.username.len() > 256 || req.password.len() > password::MAX_LEN * 4 {
        return Err(ApiError::Unauthenticated);
    }
    if let Some(Extension(slot)) = &slot {
        // Attempts are audited under the name tried (bounded), successes under the user.
        let tried: String = req.username.chars().take(64).collect();
        slot.set_actor(format!("login:{tried}"), None);
    }
    // Argon2 costs ~19 MiB and tens of ms: bound how many run at once.
    let Ok(_permit) = VERIFY_SLOTS.try_acquire() else {
        return Err(ApiError::Unavailable(
            "too many logins in progress; retry".into(),
        ));
    };
    let now = now_ms();
    let name = req.username.clone();
    let row = state.store.login_row(name).await?;
    let s = &state.settings;
    let (after, lock) = (s.lockout_after, s.lockout_ms);
    // Every attempt on an existing, unlocked account is counted before the password is
    // checked, so parallel guesses cannot slip past the lockout; a success resets it. Unknown,
    // disabled and locked accounts take the same path (a write, then a hash) so timing does
    // not tell them apart.
    let target = row.as_ref().filter(|r| !r.disabled).map(|r| r.id);
    let reserved = state.store.reserve_login(target, now, after, lock).await?;
    let hash = match (&row, reserved) {
        (Some(r), true) => r.password_hash.clone(),
        _ => password::dummy_hash().to_owned(),
    };
    let pw = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
        .await
        .unwrap_or(false);
    let Some(row) = row.filter(|_| reserved && ok) else {
        return Err(ApiError::Unauthenticated);
    };
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
