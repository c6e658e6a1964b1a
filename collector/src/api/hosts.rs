//! Hosts: list and detail (only the hosts the caller's scope covers; others answer 404),
//! operator labels, and revoking an agent's identity.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::scope::{
    authorized_host, covers, host_permissions, load_host, operator_labels, require_access, Access,
};
use super::ApiState;
use crate::auth::{Permission, Principal};
use crate::store::query::hosts::{HostRecord, Relabel};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_hosts))
        .routes(routes!(get_host))
        .routes(routes!(put_labels))
        .routes(routes!(revoke))
        .routes(routes!(unrevoke))
}

/// One host.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HostView {
    /// The agent's identity (its certificate's DNS SAN).
    pub agent_id: String,
    pub hostname: String,
    /// Connected to the collector now.
    pub online: bool,
    pub last_seen_ms: i64,
    pub first_seen_ms: i64,
    pub agent_version: String,
    /// Operator-assigned labels (host scopes match these plus `host` = agent id).
    pub labels: BTreeMap<String, String>,
    /// Revoked identities are refused at connect and their batches at ingest.
    pub revoked: bool,
    /// The last batch seq committed for this agent.
    pub last_seq: i64,
    /// The host-scoped permissions the caller holds on this host (`hosts:read`,
    /// `servers:control`, ...), for showing only what it may do.
    pub permissions: Vec<String>,
}

pub(super) fn host_view(h: HostRecord, principal: &Principal) -> HostView {
    let labels = operator_labels(&h.labels).unwrap_or_default();
    let permissions = host_permissions(principal, &h.agent_id, &h.labels);
    HostView {
        permissions,
        agent_id: h.agent_id,
        hostname: h.hostname,
        online: h.online,
        last_seen_ms: h.last_seen_ms,
        first_seen_ms: h.first_seen_ms,
        agent_version: h.agent_version,
        labels,
        revoked: h.revoked,
        last_seq: h.last_seq,
    }
}

// ---- hosts ------------------------------------------------------------------------------------

/// Lists the hosts the caller may read, in id order.
#[utoipa::path(get, path = "/hosts", params(PageQuery),
    responses((status = 200, body = Page<HostView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "hosts")]
async fn list_hosts(
    State(state): State<ApiState>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<HostView>>, ApiError> {
    caller.require(Permission::HostsRead)?;
    let limit = page.limit(state.settings.max_page)?;
    let after = page.cursor.unwrap_or(0);
    let principal = caller.principal.clone();
    let mut rows = state
        .store
        .hosts_page(after, limit, move |h| {
            covers(&principal, Permission::HostsRead, &h.agent_id, &h.labels)
        })
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|h| h.id)
    } else {
        None
    };
    Ok(Json(Page {
        items: rows
            .into_iter()
            .map(|h| host_view(h, &caller.principal))
            .collect(),
        next_cursor,
    }))
}

/// One host.
#[utoipa::path(get, path = "/hosts/{agent_id}",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = HostView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn get_host(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    let host = authorized_host(&state, &caller, Permission::HostsRead, &agent_id).await?;
    Ok(Json(host_view(host, &caller.principal)))
}

/// The new operator labels of a host (replacing all of them).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsBody {
    /// Names `[a-zA-Z_][a-zA-Z0-9_]*` (not `host`, not starting with `__`), at most 64,
    /// values 1 to 256 characters.
    pub labels: BTreeMap<String, String>,
}

pub use crate::host_labels::validate_labels;

/// Why a labels write was refused.
enum Refusal {
    Hidden,
    OutOfScope,
}

/// Replaces a host's operator labels. The caller needs hosts:write on the host both with its
/// current labels and with the new ones (a team cannot hand its host to another team).
#[utoipa::path(put, path = "/hosts/{agent_id}/labels", request_body = LabelsBody,
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = HostView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn put_labels(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
    Json(body): Json<LabelsBody>,
) -> Result<Json<HostView>, ApiError> {
    caller.require(Permission::HostsWrite)?;
    validate_labels(&body.labels).map_err(ApiError::Unprocessable)?;
    let json =
        serde_json::to_string(&body.labels).map_err(|e| ApiError::Internal(e.to_string()))?;
    let principal = caller.principal.clone();
    let new_json = json.clone();
    let check = move |host: &HostRecord| {
        let p = Permission::HostsWrite;
        if !covers(&principal, p, &host.agent_id, &host.labels) {
            return Some(Refusal::Hidden);
        }
        if !covers(&principal, p, &host.agent_id, &new_json) {
            return Some(Refusal::OutOfScope);
        }
        // New labels must not bring the host under any grant of the caller's that did not
        // cover it before (e.g. servers:control for env="staging" hosts).
        let widened = Permission::ALL.into_iter().any(|perm| {
            covers(&principal, perm, &host.agent_id, &new_json)
                && !covers(&principal, perm, &host.agent_id, &host.labels)
        });
        widened.then_some(Refusal::OutOfScope)
    };
    let outcome = state
        .alerting
        .set_host_labels_checked(agent_id, json.clone(), check, crate::now_ms())
        .await?;
    match outcome {
        Relabel::Missing => Err(ApiError::NotFound),
        Relabel::Refused(Refusal::Hidden) => {
            require_access(&caller, Access::Hidden).and(Err(ApiError::NotFound))
        }
        Relabel::Refused(Refusal::OutOfScope) => {
            caller.deny();
            caller.note("new labels outside the caller's hosts:write scope");
            Err(ApiError::Forbidden(
                "hosts:write on the host's new labels".into(),
            ))
        }
        Relabel::Done(host) => {
            caller.note(format!("labels = {json}"));
            Ok(Json(host_view(host, &caller.principal)))
        }
    }
}

async fn set_revoked(
    state: ApiState,
    caller: Caller,
    agent_id: String,
    revoked: bool,
) -> Result<Json<HostView>, ApiError> {
    let host = authorized_host(&state, &caller, Permission::HostsWrite, &agent_id).await?;
    // Lifting a revocation (often a security decision) takes fleet-wide hosts:write; a team
    // may revoke its own hosts but not readmit one.
    if !revoked {
        caller.require_global(Permission::HostsWrite)?;
    }
    if !state.store.set_revoked(&host.agent_id, revoked).await? {
        return Err(ApiError::NotFound);
    }
    caller.note(if revoked { "revoked" } else { "unrevoked" });
    if revoked && state.commands.is_connected(&host.agent_id) {
        // The session is refused at its next batch (ingest checks `revoked` per batch).
        caller.note("live session ends at its next batch");
    }
    Ok(Json(host_view(
        load_host(&state, &agent_id).await?,
        &caller.principal,
    )))
}

/// Revokes the agent's identity: new connections are refused, and its open session is
/// closed when it sends its next batch.
#[utoipa::path(post, path = "/hosts/{agent_id}/revoke",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = HostView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn revoke(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    set_revoked(state, caller, agent_id, true).await
}

/// Lifts a revocation: the agent may connect again.
#[utoipa::path(post, path = "/hosts/{agent_id}/unrevoke",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = HostView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "hosts")]
async fn unrevoke(
    State(state): State<ApiState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    set_revoked(state, caller, agent_id, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn api_hosts_label_validation() {
        assert!(validate_labels(&labels(&[("team", "a"), ("_x1", "v")])).is_ok());
        for bad in [
            labels(&[("host", "x")]),
            labels(&[("1a", "x")]),
            labels(&[("a-b", "x")]),
            labels(&[("", "x")]),
            labels(&[("__x", "x")]),
            labels(&[("a", "")]),
            labels(&[("a", &"v".repeat(257))]),
        ] {
            assert!(validate_labels(&bad).is_err(), "{bad:?}");
        }
        assert!(validate_labels(&labels(&[("a", &"é".repeat(256))])).is_ok());
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("l{i}"), "v".to_owned())).collect();
        assert!(validate_labels(&many).is_err());
    }
}
