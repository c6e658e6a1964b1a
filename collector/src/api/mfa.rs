//! Second factors of local accounts: a user enrols TOTP for itself (`/me/mfa/totp`, then
//! `/confirm` with a first code, which returns ten recovery codes once), login checks the
//! factor ([`second_factor`]), and an admin resets a user's (`DELETE /users/{id}/mfa`).
//! The secret is sealed with the collector's secrets key, bound to the user; codes are good
//! once (the step is accepted by a single `UPDATE`); recovery codes are stored as SHA-256
//! hashes of 60 random bits each.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, ClientAddr};
use super::error::{ApiError, ErrorBody};
use super::login::check_current_password;
use super::users::load_user;
use super::ApiState;
use crate::auth::restriction::needs_mfa;
use crate::auth::{credential, totp, Permission};
use crate::notify::{Binding, Secret};
use crate::now_ms;
use crate::store::query::login_attempts::Attempt;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(mfa_status))
        .routes(routes!(totp_enroll))
        .routes(routes!(totp_confirm))
        .routes(routes!(mfa_reset))
}

/// What a user's sealed secret is bound to: it opens for that user only (a receiver name
/// cannot hold ':', so no receiver's secret collides with it).
fn owner(user_id: i64) -> String {
    format!("user:{user_id}")
}

fn binding(owner: &str) -> Binding<'_> {
    Binding {
        receiver: owner,
        field: "totp",
        destination: "",
    }
}

fn seal(state: &ApiState, user_id: i64, secret: &[u8]) -> Result<Vec<u8>, ApiError> {
    let text = Secret::new(totp::to_base32(secret));
    state
        .secret_key
        .seal(binding(&owner(user_id)), &text)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn open(state: &ApiState, user_id: i64, sealed: &[u8]) -> Result<Vec<u8>, ApiError> {
    let text = state
        .secret_key
        .open(binding(&owner(user_id)), sealed)
        .map_err(|e| ApiError::Internal(format!("second factor of user {user_id}: {e}")))?;
    totp::from_base32(text.expose())
        .ok_or_else(|| ApiError::Internal(format!("second factor of user {user_id} is damaged")))
}

/// Whether `key` opens `sealed`, the secret of `user_id` (checked at start-up: a wrong key
/// file would otherwise fail every sign-in of accounts with a factor).
pub fn key_opens(key: &crate::notify::SecretKey, user_id: i64, sealed: &[u8]) -> bool {
    key.open(binding(&owner(user_id)), sealed).is_ok()
}

fn now_s() -> u64 {
    u64::try_from(now_ms() / 1000).unwrap_or(0)
}

/// Checks the second factor of `user_id` at login, after its password matched: `Ok(None)`
/// when the account has none, `Ok(Some(now))` when `code` (a TOTP code, or a recovery code)
/// passed, `SecondFactorRequired` when none was sent, `Unauthenticated` when it is wrong or
/// already used, or the account is locked. Codes have their own failure count, counted
/// before the check (parallel guesses cannot slip past it) and cleared only by a full
/// sign-in, so guessing codes locks the account as guessing passwords does, while the
/// console's first step (the password alone, answered `mfa_required`) counts as nothing.
pub(super) async fn second_factor(
    state: &ApiState,
    user_id: i64,
    code: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    let row = state.store.totp(user_id).await?.unwrap_or_default();
    let (Some(sealed), Some(_)) = (row.secret, row.enabled_ms) else {
        return Ok(None);
    };
    let s = &state.settings;
    state
        .store
        .password_verified(user_id, s.lockout_after)
        .await?;
    let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
        return Err(ApiError::SecondFactorRequired);
    };
    let now = now_ms();
    if !state
        .store
        .reserve_attempt(
            Attempt::SecondFactor,
            Some(user_id),
            now,
            s.lockout_after,
            s.lockout_ms,
        )
        .await?
        || code.len() > 64
    {
        return Err(ApiError::Unauthenticated);
    }
    let passed = if totp::looks_like_totp(code) {
        let secret = open(state, user_id, &sealed)?;
        match totp::matching_step(&secret, code, now_s()) {
            Some(step) => state.store.accept_totp_step(user_id, step).await?,
            None => false,
        }
    } else {
        let hash = credential::hash(&totp::normalize_recovery(code));
        state.store.use_recovery_code(user_id, hash, now).await?
    };
    if passed {
        Ok(Some(now))
    } else {
        Err(ApiError::Unauthenticated)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MfaStatus {
    /// A second factor is active: login needs a code.
    pub enabled: bool,
    /// An enrollment waits for its first code.
    pub pending: bool,
    /// Recovery codes not used yet.
    pub recovery_codes_left: i64,
    /// The policy (`[auth] require_mfa`) requires one of this account.
    pub required: bool,
}

fn own_user(caller: &Caller) -> Result<i64, ApiError> {
    // API tokens without a user have no account to protect.
    caller
        .principal
        .user_id
        .filter(|_| caller.principal.session_id.is_some())
        .ok_or_else(|| ApiError::Forbidden("a signed-in user (a login session)".into()))
}

/// The caller's second factor.
#[utoipa::path(get, path = "/me/mfa", responses((status = 200, body = MfaStatus),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), tag = "sessions")]
async fn mfa_status(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<MfaStatus>, ApiError> {
    let id = own_user(&caller)?;
    let row = state.store.totp(id).await?.unwrap_or_default();
    Ok(Json(MfaStatus {
        enabled: row.enabled_ms.is_some(),
        pending: row.pending.is_some(),
        recovery_codes_left: row.recovery_left,
        required: needs_mfa(state.settings.auth.require_mfa, &caller.principal.grants),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrollment {
    /// The secret in base32, to type into an app by hand.
    pub secret: String,
    /// `otpauth://totp/...`, what the QR code holds.
    pub otpauth_uri: String,
    /// The URI as a QR code (an SVG document).
    pub qr_svg: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpStart {
    /// The account's password: a session alone (a stolen cookie) cannot bind a factor the
    /// thief controls.
    pub current_password: String,
}

/// Never printed with its password.
impl std::fmt::Debug for TotpStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpStart(<password>)")
    }
}

const ACTIVE: &str = "a second factor is already active; an admin can reset it";

/// Starts enrolling TOTP, with the account's password: a new secret, shown once; it becomes
/// active only when a code from it is confirmed. Refused while a factor is active (an admin
/// resets it first). The password is checked, throttled and counted as at login.
#[utoipa::path(post, path = "/me/mfa/totp", request_body = TotpStart,
    responses((status = 201, body = TotpEnrollment),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    tag = "sessions")]
async fn totp_enroll(
    State(state): State<ApiState>,
    caller: Caller,
    addr: Option<Extension<ClientAddr>>,
    Json(req): Json<TotpStart>,
) -> Result<(StatusCode, Json<TotpEnrollment>), ApiError> {
    let id = own_user(&caller)?;
    let user = load_user(&state, id).await?;
    let row = state.store.totp(id).await?.unwrap_or_default();
    if row.enabled_ms.is_some() {
        return Err(ApiError::Conflict(ACTIVE.into()));
    }
    let source = addr.map(|Extension(a)| a.0.ip());
    check_current_password(&state, &caller, source, id, req.current_password).await?;
    let secret = totp::new_secret().map_err(ApiError::Internal)?;
    let e = totp::enrollment(&secret, &user.username).map_err(ApiError::Internal)?;
    if !state
        .store
        .set_totp_pending(id, seal(&state, id, &secret)?)
        .await?
    {
        return Err(ApiError::Conflict(ACTIVE.into()));
    }
    caller.note("TOTP enrollment started");
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrollment {
            secret: e.secret_base32,
            otpauth_uri: e.uri,
            qr_svg: e.qr_svg,
        }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    /// A current code from the authenticator app.
    pub code: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Ten one-time codes for when the app is lost; shown only here.
    pub recovery_codes: Vec<String>,
}

/// Activates the enrolled TOTP with a first code from it; answers the recovery codes. The
/// calling session counts as having passed the factor.
#[utoipa::path(post, path = "/me/mfa/totp/confirm", request_body = TotpConfirm,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    (status = 429, body = ErrorBody)), tag = "sessions")]
async fn totp_confirm(
    State(state): State<ApiState>,
    caller: Caller,
    addr: Option<Extension<ClientAddr>>,
    Json(req): Json<TotpConfirm>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let id = own_user(&caller)?;
    if let Some(Extension(a)) = addr {
        // Guesses here are throttled like logins (one code space, 10^6).
        if !state
            .limiter
            .allow(a.0.ip(), state.settings.login_per_minute)
        {
            return Err(ApiError::TooManyRequests);
        }
    }
    let row = state.store.totp(id).await?.unwrap_or_default();
    let Some(sealed) = row.pending else {
        return Err(ApiError::Conflict(
            "no TOTP enrollment is waiting; start one".into(),
        ));
    };
    let secret = open(&state, id, &sealed)?;
    let Some(step) = totp::matching_step(&secret, &req.code, now_s()) else {
        caller.deny();
        caller.note("TOTP confirmation code wrong");
        return Err(ApiError::unprocessable(
            "the code does not match; check the app's clock",
        ));
    };
    let codes = totp::recovery_codes().map_err(ApiError::Internal)?;
    let hashes = codes.iter().map(|c| credential::hash(c)).collect();
    let confirmed = state
        .store
        .confirm_totp(
            id,
            sealed,
            step,
            hashes,
            caller.principal.session_id,
            now_ms(),
        )
        .await?;
    if !confirmed {
        return Err(ApiError::Conflict(
            "the enrollment changed meanwhile; start again".into(),
        ));
    }
    caller.note("TOTP second factor enabled");
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// Removes a user's second factor and ends their sessions (a lost or stolen device). They
/// enrol again after signing in (at once, when the policy requires one). Not for one's own
/// account.
#[utoipa::path(delete, path = "/users/{id}/mfa", params(("id" = i64, Path, description = "User id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)), tag = "users")]
async fn mfa_reset(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require_global(Permission::UsersAdmin)?;
    let user = load_user(&state, id).await?;
    if caller.principal.user_id == Some(id) {
        // A stolen admin session must not strip its own account's factor; another admin,
        // or `mcpwatch-collector user mfa-reset` on the collector's host, can.
        caller.deny();
        return Err(ApiError::unprocessable(
            "your own second factor is reset by another admin, or by \
             `mcpwatch-collector user mfa-reset` on the collector's host",
        ));
    }
    if !state.store.reset_mfa(id).await? {
        return Err(ApiError::NotFound);
    }
    caller.note(format!("second factor of {} reset", user.username));
    Ok(StatusCode::NO_CONTENT)
}
