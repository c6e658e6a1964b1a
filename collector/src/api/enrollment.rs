//! Agent enrollment: bootstrap tokens (`hosts:enroll`, for hosts that land in the caller's
//! scope), the CA bundle an enrolling agent pins, and `POST /enroll`, where an agent with a
//! token trades a CSR for a certificate. Refusals of a token say only "token refused" to the
//! agent; which check failed is in the audit row.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateSigningRequestDer;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AuditSlot, Caller, ClientAddr};
use super::error::{ApiError, ErrorBody};
use super::scope::{require_access, Access};
use super::ApiState;
use crate::auth::Permission;
use crate::enroll_token::{self, TokenRequest};
use crate::now_ms;
use crate::pki::name_allowed;
use crate::store::query::enroll_tokens::{EnrollAttempt, EnrollRefusal, EnrollTokenRow};

/// Enrollment attempts per source address and minute (a token is 256 bits: this only keeps
/// CSR checks from being a CPU sink).
const ENROLL_PER_MINUTE: u32 = 30;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(routes!(enroll_ca))
        .routes(routes!(list_enroll_tokens, create_enroll_token))
        .routes(routes!(revoke_enroll_token))
}

/// The labels a token's hosts are matched against for the caller's scope: its labels, and
/// `host` when it pins one name. `None` for a pattern (only an unscoped grant covers it).
fn token_scope(
    name: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Option<crate::alert::Labels> {
    let mut l: crate::alert::Labels = labels.clone().into_iter().collect();
    match name {
        Some(n) if !n.contains('*') => {
            l.insert("host".into(), n.to_owned());
            Some(l)
        }
        Some(_) | None => None,
    }
}

fn may_manage(caller: &Caller, row_name: Option<&str>, labels: &BTreeMap<String, String>) -> bool {
    let p = &caller.principal;
    p.has_global(Permission::HostsEnroll)
        || token_scope(row_name, labels)
            .is_some_and(|l| p.has_for_host(Permission::HostsEnroll, &l))
}

/// Bootstrap tokens the caller may manage (all of them with an unscoped grant).
#[utoipa::path(get, path = "/enroll-tokens",
    responses((status = 200, body = Vec<EnrollTokenRow>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)), tag = "enrollment")]
async fn list_enroll_tokens(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<EnrollTokenRow>>, ApiError> {
    caller.require(Permission::HostsEnroll)?;
    let rows = state.store.enroll_tokens().await?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| may_manage(&caller, r.name.as_deref(), &r.labels))
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollToken {
    #[serde(default)]
    pub description: String,
    /// The one agent name it enrolls, or a pattern with `*` (`web-*`). Omitted: any name
    /// (needs an unscoped grant, like a pattern).
    pub name: Option<String>,
    /// Operator labels every host it enrolls gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How many enrollments it allows. Default 1.
    pub uses: Option<i64>,
    /// Lifetime, e.g. `24h` (default), at most `365d`.
    pub expires_in: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedEnrollToken {
    #[serde(flatten)]
    pub row: EnrollTokenRow,
    /// The token. Shown only in this answer; the server keeps its hash.
    pub token: String,
}

/// Creates a bootstrap token. A scoped caller may create only tokens that pin one name and
/// whose hosts land in its scope.
#[utoipa::path(post, path = "/enroll-tokens", request_body = CreateEnrollToken,
    responses((status = 201, body = CreatedEnrollToken), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "enrollment")]
async fn create_enroll_token(
    State(state): State<ApiState>,
    caller: Caller,
    Json(req): Json<CreateEnrollToken>,
) -> Result<(StatusCode, Json<CreatedEnrollToken>), ApiError> {
    caller.require(Permission::HostsEnroll)?;
    let lifetime_ms = match &req.expires_in {
        None => None,
        Some(t) => Some(
            t.parse::<mcpwatch_common::config::Duration>()
                .map_err(|e| ApiError::unprocessable(format!("expires_in: {e}")))?
                .as_millis_i64(),
        ),
    };
    if !may_manage(&caller, req.name.as_deref(), &req.labels) {
        // Scoped grants need a token for one name whose labels put it inside the scope.
        caller.deny();
        caller.note("the token's hosts would fall outside the caller's scope");
        return Err(ApiError::Forbidden(Permission::HostsEnroll.to_string()));
    }
    // A token for a host that exists re-enrolls that host: the caller must cover it as it
    // is now, or a team could mint itself a certificate for another team's host.
    if let Some(name) = req.name.as_deref().filter(|n| !n.contains('*')) {
        if let Some(host) = state.store.host(name).await? {
            if let Err(denied) = super::scope::authorize(&caller, Permission::HostsEnroll, &host) {
                caller.note("the host exists outside the caller's scope");
                return Err(denied);
            }
        }
    }
    let now = now_ms();
    let minted = enroll_token::mint(
        TokenRequest {
            description: req.description,
            name: req.name,
            labels: req.labels,
            uses: req.uses,
            lifetime_ms,
        },
        &caller.principal.actor,
        now,
    )
    .map_err(ApiError::unprocessable)?;
    let row = state.store.create_enroll_token(minted.row, now).await?;
    caller.note(format!("enroll token {}", row.id));
    let token = enroll_token::format(row.id, &minted.secret);
    Ok((StatusCode::CREATED, Json(CreatedEnrollToken { row, token })))
}

/// Revokes a bootstrap token; enrollments already made keep their certificates.
#[utoipa::path(post, path = "/enroll-tokens/{id}/revoke", params(("id" = i64, Path,)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    tag = "enrollment")]
async fn revoke_enroll_token(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::HostsEnroll)?;
    let row = state.store.enroll_token(id).await?;
    let access = match &row {
        None => Access::Missing,
        Some(r) => Access::of_owned(true, may_manage(&caller, r.name.as_deref(), &r.labels)),
    };
    require_access(&caller, access)?;
    if !state.store.revoke_enroll_token(id, now_ms()).await? {
        return Err(ApiError::Conflict("the token is revoked already".into()));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaBundle {
    /// The CA certificate(s), PEM: what agents verify the collector with.
    pub ca_pem: String,
}

/// The CA bundle, for an enrolling agent to check against its pinned fingerprint before it
/// sends its token. Public: 404 when this collector does not enroll.
#[utoipa::path(get, path = "/enroll/ca", security(()),
    responses((status = 200, body = CaBundle), (status = 404, body = ErrorBody)), tag = "enrollment")]
async fn enroll_ca(State(state): State<ApiState>) -> Result<Json<CaBundle>, ApiError> {
    let signer = state.pki.signer().ok_or(ApiError::NotFound)?;
    Ok(Json(CaBundle {
        ca_pem: signer.ca_pem().to_owned(),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The bootstrap token (`mcpe_...`).
    pub token: String,
    /// PKCS#10 request, PEM, naming only the agent's identity.
    pub csr_pem: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnrollResponse {
    pub identity: String,
    pub serial: String,
    pub not_after_ms: i64,
    pub certificate_pem: String,
    pub ca_pem: String,
}

/// Trades a bootstrap token and a CSR for a client certificate.
#[utoipa::path(post, path = "/enroll", request_body = EnrollRequest, security(()),
    responses((status = 201, body = EnrollResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)), tag = "enrollment")]
async fn enroll(
    State(state): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    slot: Option<Extension<AuditSlot>>,
    Json(req): Json<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let pki = state.pki.clone();
    let note = |actor: Option<String>, detail: String| {
        if let Some(Extension(s)) = &slot {
            if let Some(a) = actor {
                s.set_actor(a, None);
            }
            s.note(detail);
        }
    };
    if let Some(Extension(ClientAddr(a))) = &addr {
        if !state.enroll_limiter.allow(a.ip(), ENROLL_PER_MINUTE) {
            pki.refused("rate");
            return Err(ApiError::TooManyRequests);
        }
    }
    if state.pki.signer().is_none() {
        return Err(ApiError::NotFound);
    }
    let Some((token_id, secret)) = enroll_token::parse(&req.token) else {
        pki.refused("token");
        note(None, "malformed token".into());
        return Err(ApiError::Unauthenticated);
    };
    note(Some(format!("enroll-token:{token_id}")), String::new());
    let csr = CertificateSigningRequestDer::from_pem_slice(req.csr_pem.as_bytes())
        .map_err(|e| ApiError::unprocessable(format!("csr_pem: {e}")))?
        .as_ref()
        .to_vec();
    let lifetime = pki.lifetime();
    let signing = pki.clone();
    let attempt = EnrollAttempt {
        token_id,
        secret_hash: crate::auth::credential::hash(secret),
        now_ms: now_ms(),
        sign: move |token: &EnrollTokenRow| {
            let rule = token.name.clone();
            let signer = signing
                .signer()
                .ok_or_else(|| mcpwatch_common::csr::CsrError::Signing("no signer".into()))?;
            signer.sign(
                &csr,
                |name| name_allowed(rule.as_deref(), name),
                lifetime,
                now_ms() / 1000,
            )
        },
    };
    let enrolled = match state.store.enroll(attempt).await? {
        Ok(e) => e,
        Err(refusal) => {
            let (reason, err) = refusal_answer(&refusal);
            pki.refused(reason);
            note(None, format!("refused: {reason}"));
            return Err(err);
        }
    };
    let info = &enrolled.issued.info;
    note(
        None,
        format!(
            "enrolled {} serial {} host {}",
            info.identity, info.serial, enrolled.host_id
        ),
    );
    tracing::info!(identity = %info.identity, serial = %info.serial, token_id, "agent enrolled");
    pki.refresh_agents(&state.store).await;
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            identity: info.identity.clone(),
            serial: info.serial.clone(),
            not_after_ms: info.not_after_s.saturating_mul(1000),
            certificate_pem: enrolled.issued.pem.clone(),
            ca_pem: pki
                .signer()
                .map(|s| s.ca_pem().to_owned())
                .unwrap_or_default(),
        }),
    ))
}

/// The metric reason and the agent's answer for a refusal.
fn refusal_answer(r: &EnrollRefusal) -> (&'static str, ApiError) {
    match r {
        EnrollRefusal::UnknownToken => ("token_unknown", ApiError::Unauthenticated),
        EnrollRefusal::TokenRevoked => ("token_revoked", ApiError::Unauthenticated),
        EnrollRefusal::TokenExpired => ("token_expired", ApiError::Unauthenticated),
        EnrollRefusal::TokenUsedUp => ("token_used_up", ApiError::Unauthenticated),
        EnrollRefusal::HostRevoked => (
            "host_revoked",
            ApiError::Conflict("this agent identity is revoked".into()),
        ),
        EnrollRefusal::NameTaken(n) => (
            "name_taken",
            ApiError::Conflict(format!(
                "{n:?} is a known host: re-enrolling it needs a token for exactly that name"
            )),
        ),
        EnrollRefusal::Csr(e @ mcpwatch_common::csr::CsrError::NotAllowed(_)) => {
            ("name_not_allowed", ApiError::unprocessable(e.to_string()))
        }
        EnrollRefusal::Csr(e) => ("csr", ApiError::unprocessable(e.to_string())),
    }
}
