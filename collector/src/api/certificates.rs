//! A host's certificates (issued here or seen at a handshake) and their revocation by
//! serial: refused at the TLS handshake from then on, and the live session using it closed
//! at once. Revoking one serial leaves the host's other certificates (a renewed one) alone.

use axum::extract::{Path, State};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::scope::authorized_host;
use super::ApiState;
use crate::auth::Permission;
use crate::now_ms;
use crate::store::query::certificates::{CertificateRow, Revocation};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_certificates))
        .routes(routes!(revoke_certificate))
}

/// The host's certificates, newest expiry first.
#[utoipa::path(get, path = "/hosts/{agent_id}/certificates",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = Vec<CertificateRow>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn list_certificates(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<Vec<CertificateRow>>, ApiError> {
    let host = authorized_host(&state, &caller, Permission::HostsRead, &agent_id).await?;
    Ok(Json(state.store.certificates_of(&host.agent_id).await?))
}

/// Revokes one certificate of the host by serial (hex, `:` allowed, any case).
#[utoipa::path(post, path = "/hosts/{agent_id}/certificates/{serial}/revoke",
    params(("agent_id" = String, Path, description = "The agent's id"),
           ("serial" = String, Path, description = "The certificate's serial, hex")),
    responses((status = 200, body = CertificateRow), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    tag = "hosts")]
async fn revoke_certificate(
    State(state): State<ApiState>,
    caller: Caller,
    Path((agent_id, serial)): Path<(String, String)>,
) -> Result<Json<CertificateRow>, ApiError> {
    let host = authorized_host(&state, &caller, Permission::HostsWrite, &agent_id).await?;
    // What is not a serial names no certificate.
    let serial = mcpwatch_common::cert_info::canonical_serial(&serial).ok_or(ApiError::NotFound)?;
    let outcome = state
        .store
        .revoke_certificate(
            serial.clone(),
            host.agent_id.clone(),
            caller.principal.actor.clone(),
            now_ms(),
        )
        .await?;
    match outcome {
        Revocation::Missing => Err(ApiError::NotFound),
        Revocation::Already(_) => Err(ApiError::Conflict(
            "the certificate is revoked already".into(),
        )),
        Revocation::Revoked(row, line) => {
            // Live before the answer: the handshake refuses it and its session closes; so
            // do the certificates renewed from it, revoked with it.
            state.pki.revoked().extend(line);
            state.pki.refresh_agents(&state.store).await;
            caller.note(format!("revoked certificate {serial} of {}", host.agent_id));
            tracing::warn!(agent_id = %host.agent_id, serial, by = %caller.principal.actor, "certificate revoked");
            Ok(Json(row))
        }
    }
}
