//! Who is calling: the `Caller` extractor turns `Authorization: Bearer <credential>` (or a
//! browser's session cookie, with its CSRF check: `browser_session.rs`) into a `Principal`
//! (API token or login session, checked against the database on every request, so
//! revocation and logout take effect at once), and the audit middleware records every
//! mutating request and every denied one.

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::browser_session::{self, CsrfRefusal};
use super::error::ApiError;
use super::ApiState;
use crate::auth::credential::{self, Kind};
use crate::auth::restriction::{Account, Restriction};
use crate::auth::settings::AuthSettings;
use crate::auth::{grants, permission_names, Permission, Principal};
use crate::notify::Secret;
use crate::now_ms;
use crate::store::query::audit::AuditEntry;
use crate::store::query::tokens::{Bearer, BearerKind, BearerRow};

pub use mcpwatch_common::http_server::ClientAddr;

/// What the handler learned about the request, for the audit row.
#[derive(Debug, Default)]
struct AuditInfo {
    actor: Option<String>,
    token_id: Option<i64>,
    session_id: Option<i64>,
    denied: bool,
    detail: String,
    /// The outcome to record when the status says little (a redirect), which also makes
    /// the request recorded whatever its method.
    outcome: Option<u16>,
}

/// Shared between the audit middleware and the request's handler.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditInfo>>);

impl AuditSlot {
    /// Who acted, for requests that authenticate themselves (login).
    pub fn set_actor(&self, actor: String, session_id: Option<i64>) {
        self.with(|i| {
            i.actor = Some(actor);
            i.session_id = session_id;
        });
    }

    /// Records the request with `outcome` as its result (a sign-in answered by a redirect:
    /// 201 opened a session, 401 refused one).
    pub fn outcome(&self, outcome: u16) {
        self.with(|i| i.outcome = Some(outcome));
    }

    /// Adds a line to the audit row's detail (never a secret).
    pub fn note(&self, detail: impl Into<String>) {
        let d = detail.into();
        self.with(|i| {
            if !i.detail.is_empty() {
                i.detail.push_str("; ");
            }
            i.detail.push_str(&d);
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut AuditInfo) -> T) -> T {
        // A poisoned slot only loses audit detail; keep going with what is there.
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    slot: AuditSlot,
    /// The credential as presented, for a long-lived request (the live stream) that checks
    /// it again later. Redacted in `Debug`.
    credential: Secret,
    /// The credential came in the browser's session cookie (not `Authorization`).
    pub via_cookie: bool,
}

impl Caller {
    /// Holds `p` for some hosts or all: enough to list (results are then filtered).
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.principal.has(p) {
            Ok(())
        } else {
            self.deny();
            Err(ApiError::Forbidden(p.to_string()))
        }
    }

    /// Holds `p` for every host (fleet-wide configuration).
    pub fn require_global(&self, p: Permission) -> Result<(), ApiError> {
        if self.principal.has_global(p) {
            Ok(())
        } else {
            self.deny();
            Err(ApiError::Forbidden(p.to_string()))
        }
    }

    /// Holds `p` over objects owned by `owner` (`None`: fleet-wide, which needs an unscoped
    /// grant); else 403, audited with the scope refused.
    pub fn require_owner(
        &self,
        p: Permission,
        owner: Option<&crate::alert::OwnerScope>,
    ) -> Result<(), ApiError> {
        if self.principal.covers_owner(p, owner) {
            return Ok(());
        }
        self.deny();
        let scope = owner.map_or("fleet-wide (no owner scope)", |o| o.selector());
        self.note(format!("{p} does not cover owner scope {scope}"));
        Err(ApiError::Forbidden(format!("{p} for owner scope {scope}")))
    }

    /// The credential this request presented (checked again by long-lived requests).
    pub fn credential(&self) -> &Secret {
        &self.credential
    }

    /// The CSRF token of the caller's browser session (cookie callers only).
    pub fn csrf_token(&self) -> Option<String> {
        let (_, _, secret) = credential::parse(self.credential.expose())?;
        self.via_cookie.then(|| credential::csrf_token(secret))
    }

    /// Marks the request as denied (audited).
    pub fn deny(&self) {
        self.slot.with(|i| i.denied = true);
    }

    /// Adds a line to the audit row's detail (never a secret).
    pub fn note(&self, detail: impl Into<String>) {
        self.slot.note(detail);
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let slot = parts
            .extensions
            .get::<AuditSlot>()
            .cloned()
            .unwrap_or_default();
        let (text, via_cookie) = match bearer(parts) {
            Some(t) => (t, false),
            None => {
                let secure = state.settings.cookie_secure;
                let cookie = browser_session::session_cookie(&parts.headers, secure);
                (cookie.ok_or(ApiError::Unauthenticated)?, true)
            }
        };
        // Only login sessions travel in cookies: an API token there is refused, so a token
        // never gains the browser's ambient authority.
        let parsed = credential::parse(text);
        if via_cookie && !matches!(parsed, Some((Kind::Session, _, _))) {
            return Err(ApiError::Unauthenticated);
        }
        // Before the credential is checked (and its session's idle clock moved).
        if via_cookie && browser_session::check_site(parts).is_err() {
            slot.with(|i| i.denied = true);
            state.metrics.csrf_refused();
            return Err(ApiError::Csrf("cross-site request refused"));
        }
        let principal = authenticate(state, text).await?;
        slot.with(|i| {
            i.actor = Some(principal.actor.clone());
            i.token_id = principal.token_id;
            i.session_id = principal.session_id;
        });
        if let (Some(r), Some(uid)) = (principal.restriction, principal.user_id) {
            // The full path: a nested router sees only its own part in `uri`.
            let path = parts
                .extensions
                .get::<OriginalUri>()
                .map_or_else(|| parts.uri.path().to_owned(), |u| u.0.path().to_owned());
            if !r.allows(&parts.method, &path, uid) {
                slot.with(|i| i.denied = true);
                return Err(ApiError::Restricted(r));
            }
        }
        if let (true, Some((_, _, secret))) = (via_cookie, parsed) {
            // Checked after authentication, so the refusal's audit row names the session.
            if let Err(refusal) = browser_session::check_csrf(parts, secret) {
                slot.with(|i| i.denied = true);
                state.metrics.csrf_refused();
                return Err(ApiError::Csrf(match refusal {
                    CsrfRefusal::Token => "missing or wrong X-CSRF-Token for this session",
                    CsrfRefusal::CrossSite => "cross-site request refused",
                }));
            }
        }
        Ok(Caller {
            principal,
            slot,
            credential: Secret::new(text),
            via_cookie,
        })
    }
}

/// The principal a valid bearer credential acts as, and when it was last used; `None` for
/// a disabled user.
fn principal_of(b: Bearer, auth: &AuthSettings, now_ms: i64) -> Option<(Principal, i64)> {
    // A session's second factor; `None` for a token (restrictions bind sessions only).
    let (user_id, subset, token_id, session_id, name, last, session_mfa) = match b.credential {
        BearerRow::Token(t) => {
            let last = t.last_used_ms.unwrap_or(0);
            (
                t.user_id,
                t.permissions,
                Some(t.id),
                None,
                t.name,
                last,
                None,
            )
        }
        BearerRow::Session(s) => {
            let last = s.last_seen_ms;
            // A session single sign-on opened answers to its provider for password and
            // second factor: no restriction (one the same account opened with a password
            // is held like any local one's).
            let mfa = (!s.sso).then_some(s.mfa_ms);
            (
                Some(s.user_id),
                None,
                None,
                Some(s.id),
                String::new(),
                last,
                mfa,
            )
        }
    };
    let mut account = None;
    let (actor, bindings) = match b.owner {
        Some((u, _)) if u.disabled => return None,
        Some((u, grants_of_user)) => {
            account = Some((u.id, u.password_changed_ms));
            (format!("user:{}", u.username), grants_of_user)
        }
        // A token without a user (quickstart's, or one made by the admin CLI for
        // automation) holds every permission, narrowed by its own subset.
        None => (
            format!("token:{name}"),
            vec![(permission_names(&Permission::ALL), String::new())],
        ),
    };
    let grants = grants(&bindings, subset.as_deref());
    let restriction = match (account, session_mfa) {
        (Some((user_id, password_changed_ms)), Some(session_mfa_ms)) => {
            let account = Account {
                user_id,
                password_changed_ms,
                session_mfa_ms,
                grants: &grants,
            };
            Restriction::of(auth, &account, now_ms)
        }
        _ => None,
    };
    Some((
        Principal {
            actor,
            user_id,
            token_id,
            session_id,
            grants,
            restriction,
        },
        last,
    ))
}

/// Checks a presented credential. Every failure is the same 401, whatever the reason.
pub async fn authenticate(state: &ApiState, text: &str) -> Result<Principal, ApiError> {
    check_credential(state, text, true).await
}

/// Checks a credential again for a long-lived request (the live stream's heartbeat) without
/// counting as use: an open console tab must not keep an idle session alive forever.
pub async fn recheck(state: &ApiState, text: &str) -> Result<Principal, ApiError> {
    check_credential(state, text, false).await
}

async fn check_credential(
    state: &ApiState,
    text: &str,
    touch: bool,
) -> Result<Principal, ApiError> {
    let Some((kind, id, secret)) = credential::parse(text) else {
        return Err(ApiError::Unauthenticated);
    };
    let presented = credential::hash(secret);
    let now = now_ms();
    let idle_ms = state.settings.session_idle_ms;
    let bearer_kind = match kind {
        Kind::Token => BearerKind::Token,
        Kind::Session => BearerKind::Session,
        Kind::Enroll => return Err(ApiError::Unauthenticated),
    };
    // Only a live credential whose hash matches is valid; its user is read with it.
    let accept = move |row: &BearerRow| match row {
        BearerRow::Token(t) => {
            let live = !t.revoked && t.expires_ms.is_none_or(|e| now < e);
            credential::constant_time_eq(&t.hash, &presented) && live
        }
        BearerRow::Session(s) => {
            let live = now < s.expires_ms && now.saturating_sub(s.last_seen_ms) < idle_ms;
            credential::constant_time_eq(&s.hash, &presented) && live
        }
    };
    let found = state
        .store
        .bearer(bearer_kind, id, accept)
        .await?
        .and_then(|b| principal_of(b, &state.settings.auth, now));
    let (principal, last) = found.ok_or(ApiError::Unauthenticated)?;
    // Bookkeeping off the request path: last use of a token, idle clock of a session —
    // written at most every quarter of the idle timeout (and minute), not on every request.
    let every = (idle_ms / 4).clamp(1, 60_000);
    if !touch || now.saturating_sub(last) < every {
        return Ok(principal);
    }
    let store = state.store.clone();
    match (principal.token_id, principal.session_id) {
        (Some(t), _) => {
            tokio::spawn(async move {
                let _ = store.token_used(t, now).await;
            });
        }
        (_, Some(s)) => {
            tokio::spawn(async move {
                let _ = store.touch_session(s, now).await;
            });
        }
        _ => {}
    }
    Ok(principal)
}

/// What an audit row says of a request: its path, bounded (a hostile path must not bloat
/// the audit table), and the client's address. Shared by the route audit and the refusal
/// audit before routing.
pub(crate) fn audit_target(req: &Request) -> (String, String) {
    let object: String = req.uri().path().chars().take(512).collect();
    let source = req
        .extensions()
        .get::<ClientAddr>()
        .map(|a| a.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    (object, source)
}

/// Audit middleware (route layer, so the matched route is known): one row for every
/// mutating request and every denied one (401, 403, or hidden as 404), written before the
/// response leaves.
pub async fn audit(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let (object, source) = audit_target(&req);
    let request = RequestFacts {
        method: req.method().clone(),
        route,
        object,
        source,
        request_id: super::request_id::of(&req),
    };
    // The handler and its audit row run in a task of their own: a client that disconnects
    // (or the request timeout) drops this future, not the work, so no change goes unrecorded.
    // The task keeps the request's span, so its log lines carry the request id.
    let task = tokio::spawn(
        async move {
            let mut resp = next.run(req).await;
            let recorded = record(&state, &slot, request, resp.status().as_u16()).await;
            if recorded {
                // The outer refusal audit must not write a second row for this request.
                resp.extensions_mut().insert(super::refusal_audit::Audited);
            }
            resp
        }
        .instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(resp) => resp,
        Err(e) => ApiError::Internal(format!("request task failed: {e}")).into_response(),
    }
}

/// What the audit row says about the request itself.
struct RequestFacts {
    method: Method,
    /// The matched route template.
    route: String,
    /// The path, bounded.
    object: String,
    source: String,
    request_id: Option<String>,
}

async fn record(state: &ApiState, slot: &AuditSlot, request: RequestFacts, status: u16) -> bool {
    let RequestFacts {
        method,
        route,
        object,
        source,
        request_id,
    } = request;
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let info = slot.with(std::mem::take);
    if mutating || info.denied || info.outcome.is_some() || status == 401 || status == 403 {
        let entry = AuditEntry {
            at_ms: now_ms(),
            actor: info.actor.unwrap_or_else(|| "anonymous".into()),
            token_id: info.token_id,
            session_id: info.session_id,
            source,
            action: format!("{method} {route}"),
            object,
            result: info.outcome.unwrap_or(status),
            detail: info.detail,
            request_id,
        };
        if let Err(e) = state.store.insert_audit(entry).await {
            tracing::error!(error = %e, "writing an audit record failed");
            state.metrics.audit_failed();
        }
        return true;
    }
    false
}
