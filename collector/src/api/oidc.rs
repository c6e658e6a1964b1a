//! Single sign-on routes, driven by the browser: `GET /oidc` (whether the console shows the
//! "Sign in with …" button), `GET /oidc/login` (sends the browser to the provider, bound to
//! it by a cookie) and `GET /oidc/callback` (verifies the provider's answer, finds or makes
//! the account, recomputes its group bindings, opens a console session, and sends the browser
//! back). Every sign-in and every refusal is audited with its reason; the browser only gets a
//! short code (`/?sso_error=CODE`) the console explains.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AuditSlot, ClientAddr};
use super::browser_session;
use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::auth::credential::{self, Kind};
use crate::now_ms;
use crate::oidc::{pending, Callback, Identity, RelyingParty};
use crate::store::query::oidc::Provisioned;
use crate::store::query::tokens::NewSession;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(sso_info))
        .routes(routes!(sso_login))
        .routes(routes!(sso_callback))
}

fn provider(state: &ApiState) -> Result<Arc<RelyingParty>, ApiError> {
    state.oidc.clone().ok_or(ApiError::NotFound)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SsoInfo {
    /// The provider's name for the button: "Sign in with {display_name}".
    pub display_name: String,
    /// Where the button leads (a browser navigation, not a fetch).
    pub login_url: String,
}

/// Whether single sign-on is configured (404 when it is not).
#[utoipa::path(get, path = "/oidc", security(()),
    responses((status = 200, body = SsoInfo), (status = 404, body = ErrorBody)), tag = "sessions")]
async fn sso_info(State(state): State<ApiState>) -> Result<Json<SsoInfo>, ApiError> {
    let rp = provider(&state)?;
    Ok(Json(SsoInfo {
        display_name: rp.settings.display_name.clone(),
        login_url: "/api/v1/oidc/login".into(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    /// Where to land after signing in: a path of this origin. Default `/`.
    pub return_to: Option<String>,
}

/// A console path of this origin only (never `//host` or `/\host`, which browsers take for
/// another site, nor a dot segment that normalises into one, nor the API): an open redirect
/// would hand the fresh session's first page to anyone.
fn local_path(wanted: Option<&str>) -> String {
    match wanted {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/api/")
                && !p.contains('\\')
                && !p.contains("/.")
                && p.len() <= 512
                && p.chars().all(|c| c.is_ascii_graphic()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A redirect to `location` (this origin's paths, or the provider's URL).
fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::try_from(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// Whether the client's address is over the per-minute sign-in attempts (shared with
/// password logins).
fn over_limit(state: &ApiState, addr: Option<&Extension<ClientAddr>>) -> bool {
    addr.is_some_and(|Extension(a)| {
        !state
            .limiter
            .allow(a.0.ip(), state.settings.login_per_minute)
    })
}

/// A refused sign-in: audited with its reason, counted, and the browser sent to the console
/// with a code it explains.
fn refuse(state: &ApiState, slot: Option<&AuditSlot>, code: &str, reason: &str) -> Response {
    tracing::warn!(code, reason, "single sign-on refused");
    state.metrics.sso_refused(code);
    if let Some(slot) = slot {
        slot.note(format!("single sign-on refused: {reason}"));
        slot.outcome(401);
    }
    let clear = browser_session::clear_oidc_binding(state.settings.cookie_secure);
    redirect(&format!("/?sso_error={code}"), vec![clear])
}

/// Sends the browser to the provider to sign in.
#[utoipa::path(get, path = "/oidc/login", params(LoginQuery), security(()),
    responses((status = 302, description = "To the provider (or back to the console with `sso_error`)"),
              (status = 404, body = ErrorBody)), tag = "sessions")]
async fn sso_login(
    State(state): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    slot: Option<Extension<AuditSlot>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let rp = provider(&state)?;
    let slot = slot.map(|Extension(s)| s);
    // Only the console's own page (or an address typed or bookmarked) starts a sign-in:
    // another site navigating a visitor here would sign them in behind their back.
    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if site.is_some_and(|v| v != b"same-origin" && v != b"none") {
        return Ok(refuse(
            &state,
            slot.as_ref(),
            "cross_site",
            "started from another site",
        ));
    }
    if over_limit(&state, addr.as_ref()) {
        let why = "too many sign-ins from this address";
        return Ok(refuse(&state, slot.as_ref(), "rate_limited", why));
    }
    let binding = credential::secret().map_err(|e| ApiError::Internal(e.to_string()))?;
    match rp.begin(&binding, local_path(q.return_to.as_deref())).await {
        Ok(url) => {
            let cookie = browser_session::set_oidc_binding(
                &binding,
                pending::TTL.as_secs(),
                state.settings.cookie_secure,
            );
            Ok(redirect(&url, vec![cookie]))
        }
        Err(e) => Ok(refuse(&state, slot.as_ref(), e.code(), &e.to_string())),
    }
}

/// Where the provider sends the browser back: opens a console session and redirects to the
/// page the sign-in started from, or to `/?sso_error=CODE`.
#[utoipa::path(get, path = "/oidc/callback", params(Callback), security(()),
    responses((status = 302, description = "Into the console with a session, or back with `sso_error`"),
              (status = 404, body = ErrorBody)), tag = "sessions")]
async fn sso_callback(
    State(state): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    slot: Option<Extension<AuditSlot>>,
    headers: HeaderMap,
    callback: Result<Query<Callback>, QueryRejection>,
) -> Result<Response, ApiError> {
    let rp = provider(&state)?;
    let slot = slot.map(|Extension(s)| s);
    if let Some(s) = &slot {
        s.set_actor("oidc".into(), None);
    }
    // Each arrival is checked and audited: a flood of made-up callbacks is limited per
    // address like logins (a real sign-in makes two requests: the start and this).
    if over_limit(&state, addr.as_ref()) {
        let why = "too many callbacks from this address";
        return Ok(refuse(&state, slot.as_ref(), "rate_limited", why));
    }
    let Ok(Query(callback)) = callback else {
        // Repeated or malformed parameters: no sign-in can be found from them.
        return Ok(refuse(
            &state,
            slot.as_ref(),
            "expired_or_tampered",
            "malformed callback query",
        ));
    };
    let binding = browser_session::oidc_binding(&headers, state.settings.cookie_secure);
    let (identity, return_to) = match rp.finish(callback, binding).await {
        Ok(found) => found,
        Err(e) => return Ok(refuse(&state, slot.as_ref(), e.code(), &e.to_string())),
    };
    if let Some(s) = &slot {
        s.set_actor(format!("oidc:{}", identity.username), None);
    }
    let source = addr
        .map(|Extension(a)| a.0.ip().to_string())
        .unwrap_or_default();
    match open_session(&state, &rp, &identity, source, slot.as_ref()).await {
        Ok(cookies) => Ok(redirect(&return_to, cookies)),
        Err((code, reason)) => Ok(refuse(&state, slot.as_ref(), code, &reason)),
    }
}

/// The groups for an audit row: the first 20, each cut to 64 characters (a token may carry
/// hundreds).
fn shown_groups(groups: &[String]) -> String {
    let mut out: Vec<String> = groups
        .iter()
        .take(20)
        .map(|g| crate::oidc::printable(g, 64))
        .collect();
    if groups.len() > 20 {
        out.push(format!("and {} more", groups.len() - 20));
    }
    out.join(", ")
}

/// Provisions the account of `identity` and opens its session: the cookies to set, or a
/// refusal (code, reason).
async fn open_session(
    state: &ApiState,
    rp: &RelyingParty,
    identity: &Identity,
    source: String,
    slot: Option<&AuditSlot>,
) -> Result<Vec<HeaderValue>, (&'static str, String)> {
    let internal = |e: &dyn std::fmt::Display| ("internal", e.to_string());
    let grants = rp.settings.grants_for(&identity.groups);
    let now = now_ms();
    let provisioned = state
        .store
        .provision_oidc_user(
            identity.subject.clone(),
            identity.username.clone(),
            grants,
            now,
        )
        .await
        .map_err(|e| internal(&e))?;
    let (user_id, username, detail) = match provisioned {
        Provisioned::NameTaken => {
            return Err((
                "name_taken",
                format!(
                    "a local account is named {:?}; an admin renames or removes it first",
                    identity.username
                ),
            ))
        }
        Provisioned::Disabled { username } => {
            return Err(("disabled", format!("the account {username} is disabled")))
        }
        Provisioned::NoAccess => {
            return Err((
                "no_access",
                format!(
                    "none of the groups of {} ({}) grants a role; no account made",
                    identity.username,
                    shown_groups(&identity.groups)
                ),
            ))
        }
        Provisioned::User {
            bindings: 0,
            username,
            ..
        } => {
            return Err((
                "no_access",
                format!(
                    "none of the groups of {username} ({}) grants a role",
                    shown_groups(&identity.groups)
                ),
            ))
        }
        Provisioned::User {
            user_id,
            username,
            created,
            added,
            removed,
            unknown_roles,
            ..
        } => {
            let show = |g: &[crate::store::query::oidc::GroupGrant]| {
                g.iter()
                    .map(|g| format!("{}@{}", g.role, g.selector))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut detail = format!(
                "single sign-on{}; groups [{}]; bindings added [{}] removed [{}]",
                if created { " (account created)" } else { "" },
                shown_groups(&identity.groups),
                show(&added),
                show(&removed)
            );
            if !unknown_roles.is_empty() {
                tracing::warn!(roles = ?unknown_roles, "[[oidc.group_binding]] names roles that do not exist");
                detail.push_str(&format!(
                    "; unknown roles skipped [{}]",
                    unknown_roles.join(" ")
                ));
            }
            (user_id, username, detail)
        }
    };
    let s = &state.settings;
    let secret = credential::secret().map_err(|e| internal(&e))?;
    let lifetime = i64::try_from(rp.settings.session_lifetime.as_millis()).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lifetime.min(s.session_absolute_ms));
    // The provider vouched for the second factor: the session counts as having passed one.
    let id = state
        .store
        .start_session(NewSession {
            user_id,
            hash: credential::hash(&secret),
            now_ms: now,
            expires_ms: expires,
            source,
            mfa_ms: Some(now),
            sso: true,
        })
        .await
        .map_err(|e| internal(&e))?;
    if let Some(slot) = slot {
        slot.set_actor(format!("user:{username}"), Some(id));
        slot.note(detail);
        slot.outcome(201);
    }
    let token = credential::format(Kind::Session, id, &secret);
    let csrf = credential::csrf_token(&secret);
    let max_age_s = (expires - now) / 1000;
    let mut cookies =
        browser_session::set_cookies(&token, &csrf, max_age_s, s.cookie_secure).to_vec();
    cookies.push(browser_session::clear_oidc_binding(s.cookie_secure));
    Ok(cookies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_return_to_stays_on_this_origin() {
        assert_eq!(
            local_path(Some("/hosts/node-1?range=1h")),
            "/hosts/node-1?range=1h"
        );
        for hostile in [
            "//evil.example/",
            "/.//evil.example/",
            "/api/v1/oidc/login",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/a b",
            "/\u{7f}",
        ] {
            assert_eq!(local_path(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(local_path(None), "/");
    }
}
