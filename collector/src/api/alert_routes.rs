//! Routes defined through the API (`/routes/{name}`): a `[[route]]` table as JSON (without
//! `continue`), applied at once after the configured routes. Such a route only adds
//! receivers to the alerts it matches, so a team's route can never take an alert away from
//! the fleet's routing. Managed with `receivers:write`: a fleet-wide route needs it
//! unscoped; a team's route (`owner = '{team="a"}'`) needs it on a selector the owner scope is
//! within, and may name only receivers (and an escalation policy whose receivers) the caller
//! manages.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::receivers::{may_manage, receiver_owner, Receivers};
use super::scope::{definition_owner, owner_check, require_access, Access};
use super::ApiState;
use crate::alert::OwnerScope;
use crate::alerting::api_routes::{RouteChange, StoredRoute};
use crate::auth::Permission;
use crate::now_ms;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_routes))
        .routes(routes!(get_route, put_route, delete_route))
}

fn refused(caller: &Caller) -> ApiError {
    caller.deny();
    caller.note("the stored route's owner scope is outside the caller's receivers:write");
    ApiError::Forbidden("receivers:write for the stored route's owner scope".into())
}

/// The routes defined through the API that the caller manages, by name. (Configured routes
/// are in collector.toml.)
#[utoipa::path(get, path = "/routes",
    responses((status = 200, body = Vec<StoredRoute>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)),
    tag = "routes")]
async fn list_routes(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<StoredRoute>>, ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    let all = state.alerting.stored_routes().await?;
    Ok(Json(
        all.into_iter()
            .filter(|r| may_manage(&caller, definition_owner(&r.definition).as_ref()))
            .collect(),
    ))
}

/// One route defined through the API.
#[utoipa::path(get, path = "/routes/{name}",
    params(("name" = String, Path, description = "The route's name")),
    responses((status = 200, body = StoredRoute), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "routes")]
async fn get_route(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<StoredRoute>, ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    let route = state
        .alerting
        .stored_routes()
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or(ApiError::NotFound)?;
    let visible = may_manage(&caller, definition_owner(&route.definition).as_ref());
    require_access(&caller, Access::of_owned(true, visible))?;
    Ok(Json(route))
}

/// Every receiver a route definition names (directly or through its escalation policy)
/// must exist and be managed by the caller.
async fn check_receivers(
    state: &ApiState,
    caller: &Caller,
    receivers: Receivers,
    definition: &Value,
) -> Result<(), ApiError> {
    let mut names: Vec<String> = definition
        .get("receivers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(policy) = definition.get("escalation").and_then(Value::as_str) {
        let setup = state.alerting.escalation(policy).ok_or_else(|| {
            ApiError::unprocessable(format!("escalation: no [[escalation]] named {policy:?}"))
        })?;
        names.extend(setup.steps.iter().flat_map(|s| s.receivers.iter().cloned()));
    }
    for name in names {
        // Unknown and not the caller's answer alike, so names cannot be probed; the second
        // is audited as a refusal.
        let owner = receiver_owner(state, receivers.clone(), &name).await?;
        let manageable = owner
            .as_ref()
            .is_some_and(|o| may_manage(caller, o.as_ref()));
        if !manageable {
            if owner.is_some() {
                caller.deny();
                caller.note(format!(
                    "receiver {name} is outside the caller's receivers:write"
                ));
            }
            return Err(ApiError::unprocessable(format!(
                "receivers: no receiver {name:?} that you manage"
            )));
        }
    }
    Ok(())
}

/// Creates or replaces a route, in effect at once: `{"owner": "{team=\"a\"}", "matchers":
/// "{severity=\"critical\"}", "receivers": ["team-a-teams"], "escalation": "team-a"}` plus the
/// timing keys of `[[route]]`. Validated as the configuration is (422 with the reason).
#[utoipa::path(put, path = "/routes/{name}",
    params(("name" = String, Path, description = "The route's name")),
    request_body(content = Object, description = "A `[[route]]` table as JSON, without `continue`"),
    responses((status = 200, body = StoredRoute, description = "Replaced"),
              (status = 201, body = StoredRoute, description = "Created"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "500 routes exist already")),
    tag = "routes")]
async fn put_route(
    State(state): State<ApiState>,
    caller: Caller,
    receivers: Receivers,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<StoredRoute>), ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    caller.note(format!("route {name}"));
    super::receivers::check_receiver_name(&name)?;
    if !body.is_object() {
        return Err(ApiError::unprocessable("the route must be a JSON object"));
    }
    let owner = OwnerScope::parse(
        body.get("owner")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::unprocessable)?;
    if body.get("owner").is_some_and(|o| !o.is_string()) {
        return Err(ApiError::unprocessable("owner: a selector string"));
    }
    caller.require_owner(Permission::ReceiversWrite, owner.as_ref())?;
    check_receivers(&state, &caller, receivers, &body).await?;
    let change = state
        .alerting
        .put_route(
            name.clone(),
            body,
            owner_check(&caller, Permission::ReceiversWrite),
            now_ms(),
        )
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Invalid(m) => ApiError::unprocessable(m),
            other => other.into(),
        })?;
    let status = match change {
        RouteChange::Created => StatusCode::CREATED,
        RouteChange::Refused => return Err(refused(&caller)),
        _ => StatusCode::OK,
    };
    let stored = state
        .alerting
        .stored_routes()
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::Internal("route vanished after it was stored".into()))?;
    Ok((status, Json(stored)))
}

/// Deletes a route defined through the API.
#[utoipa::path(delete, path = "/routes/{name}",
    params(("name" = String, Path, description = "The route's name")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "routes")]
async fn delete_route(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    caller.note(format!("route {name}"));
    match state
        .alerting
        .delete_route(name, owner_check(&caller, Permission::ReceiversWrite))
        .await?
    {
        RouteChange::Missing => Err(ApiError::NotFound),
        // The caller manages what it sees: a route it may not delete is one it cannot see.
        RouteChange::Refused => {
            require_access(&caller, Access::Hidden).map(|()| StatusCode::NOT_FOUND)
        }
        _ => Ok(StatusCode::NO_CONTENT),
    }
}
