//! Login, logout and the caller's own identity: username + password (argon2id) opens a
//! session with idle and absolute timeouts; failures are rate limited per source address
//! and lock the account after repeated attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AuditSlot, Caller, ClientAddr};
use super::browser_session;

use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::auth::credential::{self, Kind};
use crate::auth::password;
use crate::now_ms;
use crate::store::query::login_attempts::Attempt;
use crate::store::query::tokens::NewSession;
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
        .reserve_attempt(
            Attempt::Password,
            target,
            now_ms(),
            s.lockout_after,
            s.lockout_ms,
        )
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

/// Checks the current password a signed-in user gives to change its own account (its
/// password, its second factor), throttled and counted exactly like a login ([`verify_guarded`]);
/// a right one clears the password's failed count. 422 when wrong (audited as a refusal).
pub(super) async fn check_current_password(
    state: &ApiState,
    caller: &Caller,
    source: Option<IpAddr>,
    user_id: i64,
    password: String,
) -> Result<(), ApiError> {
    let row = state
        .store
        .login_row_by_id(user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !verify_guarded(state, source, Some(&row), password).await? {
        caller.deny();
        caller.note("current password wrong");
        return Err(ApiError::unprocessable("current_password is wrong"));
    }
    state
        .store
        .password_verified(user_id, state.settings.lockout_after)
        .await?;
    Ok(())
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

/// Whether `password` is one of `hashes` (a user's latest passwords), checked off the
/// runtime within the bound on concurrent argon2 runs.
pub(super) async fn reused(password: String, hashes: Vec<String>) -> Result<bool, ApiError> {
    if hashes.is_empty() {
        return Ok(false);
    }
    let _permit = ARGON2_SLOTS
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    tokio::task::spawn_blocking(move || hashes.iter().any(|h| password::verify(&password, h)))
        .await
        .map_err(|e| ApiError::Internal(format!("hash task failed: {e}")))
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// The second factor, for an account that has one: a code from its authenticator app
    /// or one of its recovery codes. Without it such an account gets 401 `mfa_required`.
    #[serde(default)]
    pub totp: Option<String>,
    /// Answer with browser cookies (the web console) instead of a bearer credential in the
    /// body. Only a page of this origin may ask (`Sec-Fetch-Site: same-origin`).
    #[serde(default)]
    pub cookie: bool,
}

/// Never printed with its password.
impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("cookie", &self.cookie)
            .field("totp", &self.totp.as_ref().map(|_| "<given>"))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// Bearer credential for later requests; shown only here. Absent for a cookie login,
    /// whose credential only the `HttpOnly` cookie holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// For a cookie login: the token every mutating request repeats in `X-CSRF-Token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    pub expires_ms: i64,
    pub idle_timeout_ms: i64,
}

/// Opens a session.
#[utoipa::path(post, path = "/sessions", request_body = LoginRequest, security(()),
    responses((status = 201, body = LoginResponse,
               headers(("set-cookie" = String, description = "With `cookie: true`: the HttpOnly \
               session cookie and the CSRF cookie"))),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "`cookie: true` from anything but a \
               same-origin page (code `csrf`)"),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), tag = "sessions")]
async fn login(
    State(state): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    slot: Option<Extension<AuditSlot>>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let source = addr.map(|Extension(a)| a.0.ip());
    if req.username.len() > 256 {
        return Err(ApiError::Unauthenticated);
    }
    if req.cookie && !browser_session::same_origin_browser(&headers) {
        // Login CSRF: another site must not sign a visitor's browser into its account.
        return Err(ApiError::Csrf(
            "cookie sessions are opened only by the console's own page (Sec-Fetch-Site: same-origin)",
        ));
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
    if row.sso
        && !state
            .oidc
            .as_ref()
            .is_some_and(|o| o.settings.password_login)
    {
        // Its provider decides who it is (`[oidc] password_login` lets a password an admin
        // set count too).
        if let Some(Extension(slot)) = &slot {
            slot.note("password sign-in is off for single sign-on accounts");
        }
        return Err(ApiError::Unauthenticated);
    }
    let mfa_ms = match super::mfa::second_factor(&state, row.id, req.totp.as_deref()).await {
        Ok(m) => m,
        Err(e) => {
            if let Some(Extension(slot)) = &slot {
                slot.note(match e {
                    ApiError::SecondFactorRequired => "second factor missing",
                    _ => "second factor wrong or already used",
                });
            }
            return Err(e);
        }
    };
    let s = &state.settings;
    let secret = credential::secret().map_err(|e| ApiError::Internal(e.to_string()))?;
    let hash = credential::hash(&secret);
    let expires = now.saturating_add(s.session_absolute_ms);
    let src = source.map(|i| i.to_string()).unwrap_or_default();
    let uid = row.id;
    let id = state
        .store
        .start_session(NewSession {
            user_id: uid,
            hash,
            now_ms: now,
            expires_ms: expires,
            source: src,
            mfa_ms,
            sso: false,
        })
        .await?;
    if let Some(Extension(slot)) = &slot {
        slot.set_actor(format!("user:{}", req.username), Some(id));
    }
    let token = credential::format(Kind::Session, id, &secret);
    let mut body = LoginResponse {
        token: None,
        csrf_token: None,
        expires_ms: expires,
        idle_timeout_ms: s.session_idle_ms,
    };
    if !req.cookie {
        body.token = Some(token);
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    let csrf = credential::csrf_token(&secret);
    let max_age_s = s.session_absolute_ms / 1000;
    let cookies = browser_session::set_cookies(&token, &csrf, max_age_s, s.cookie_secure);
    body.csrf_token = Some(csrf);
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    for c in cookies {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// Ends the caller's own session (or does nothing for an API token); a browser's session
/// cookies are cleared.
#[utoipa::path(delete, path = "/sessions/current",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "sessions")]
async fn logout(State(state): State<ApiState>, caller: Caller) -> Result<Response, ApiError> {
    if let Some(id) = caller.principal.session_id {
        state.store.delete_session(id).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if caller.via_cookie {
        for c in browser_session::clear_cookies(state.settings.cookie_secure) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    Ok(resp)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    pub actor: String,
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub session_id: Option<i64>,
    /// `permission` or `permission@{selector}` for host-scoped grants.
    pub grants: Vec<String>,
    /// For a browser (cookie) session: its CSRF token, so a reloaded console recovers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    /// What this session must do before anything else: `password_expired` or
    /// `mfa_enrollment_required`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restriction: Option<String>,
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
        csrf_token: caller.csrf_token(),
        restriction: p.restriction.map(|r| r.code().to_owned()),
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
