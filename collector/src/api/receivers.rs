//! Alert receivers over the API: the configured ones read-only, others created, changed
//! and deleted through the API and applied live; their secrets sealed in the collector's
//! secret store and never shown; test-sends.
//! A receiver without an owner scope is fleet-wide: seeing and changing it needs an
//! unscoped `receivers:write`. A team's receiver (`owner = '{team="a"}'`) is seen and changed
//! by whoever holds `receivers:write` on a selector the owner scope is within; it only ever
//! gets alerts about hosts inside its scope.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{self, ApiError, ErrorBody};
use super::receiver_view::{api_view, config_view, ReceiverView};
use super::scope::{self, require_access, Access};
use super::ApiState;
use crate::alert::OwnerScope;
use crate::alerting::dispatcher::Dispatcher;
use crate::alerting::stored_receivers::StoredReceiver;
use crate::alerting::{ReceiverDeleted, ReceiverPut};
use crate::auth::Permission;
use crate::notify::{self, ApiSecrets, Notification, Receiver, ReceiverConfigRaw};
use crate::now_ms;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_receivers, create_receiver))
        .routes(routes!(get_receiver, put_receiver, delete_receiver))
        .routes(routes!(test_receiver))
}

/// The receivers for the API: the configured ones (read-only here) and what receivers
/// defined through the API need. The collector provides it as a request extension
/// (`Extension(Arc<ReceiverConfigs>)` on the API router).
#[derive(Debug, Clone, Default)]
pub struct ReceiverConfigs {
    /// The receivers of the configuration file.
    pub list: Vec<ReceiverConfigRaw>,
    /// The config file's directory: their secret files are resolved against it.
    pub base_dir: PathBuf,
    /// What receivers defined through the API need (the key sealing their secrets, where
    /// they may send). `None` (with `dispatcher`): receivers cannot be changed through the
    /// API (503).
    pub api_secrets: Option<ApiSecrets>,
    /// The notification workers, which follow receiver changes.
    pub dispatcher: Option<Dispatcher>,
}

pub(super) type Receivers = Option<Extension<Arc<ReceiverConfigs>>>;

fn receiver_configs(ext: Receivers) -> Result<Arc<ReceiverConfigs>, ApiError> {
    ext.map(|Extension(r)| r)
        .ok_or_else(|| ApiError::Unavailable("receivers are not available to the API".into()))
}

/// What changing receivers needs; 503 without it.
fn changeable(set: &ReceiverConfigs) -> Result<(ApiSecrets, Dispatcher), ApiError> {
    match (&set.api_secrets, &set.dispatcher) {
        (Some(s), Some(d)) => Ok((s.clone(), d.clone())),
        _ => Err(ApiError::Unavailable(
            "receivers cannot be changed through the API on this collector".into(),
        )),
    }
}

fn from_config_conflict(name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "receiver {name:?} is defined in the configuration file ([[receiver]]); change it there"
    ))
}

/// The owner scope a receiver definition names (`None`: fleet-wide). One that does not
/// parse counts as fleet-wide, which only unscoped grants reach.
fn owner_of(raw: &ReceiverConfigRaw) -> Option<OwnerScope> {
    scope::stored_owner(raw.owner())
}

fn stored_owner(s: &StoredReceiver) -> Option<OwnerScope> {
    s.raw().ok().as_ref().and_then(owner_of)
}

/// Whether the caller sees and may change a receiver with this owner.
pub(super) fn may_manage(caller: &Caller, owner: Option<&OwnerScope>) -> bool {
    caller
        .principal
        .covers_owner(Permission::ReceiversWrite, owner)
}

/// The owner scope of receiver `name` (`Some(None)`: fleet-wide); `None` when no receiver
/// has that name.
pub(super) async fn receiver_owner(
    state: &ApiState,
    receivers: Receivers,
    name: &str,
) -> Result<Option<Option<OwnerScope>>, ApiError> {
    let set = receiver_configs(receivers)?;
    if let Some(raw) = set.list.iter().find(|r| r.name() == name) {
        return Ok(Some(owner_of(raw)));
    }
    Ok(read_api_receiver(state, name.to_owned())
        .await?
        .map(|s| stored_owner(&s)))
}

async fn read_api_receiver(
    state: &ApiState,
    name: String,
) -> Result<Option<StoredReceiver>, ApiError> {
    Ok(state.alerting.stored_receiver(name).await?)
}

/// Every receiver: the configured ones, then those defined through the API.
#[utoipa::path(get, path = "/receivers",
    responses((status = 200, body = Vec<ReceiverView>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    tag = "receivers")]
async fn list_receivers(
    State(state): State<ApiState>,
    caller: Caller,
    receivers: Receivers,
) -> Result<Json<Vec<ReceiverView>>, ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    let set = receiver_configs(receivers)?;
    let stored = state.alerting.stored_receivers().await?;
    let mut out: Vec<ReceiverView> = set
        .list
        .iter()
        .filter(|r| may_manage(&caller, owner_of(r).as_ref()))
        .map(|r| config_view(&set, r))
        .collect();
    out.extend(
        stored
            .iter()
            .filter(|s| !set.list.iter().any(|r| r.name() == s.name))
            .filter(|s| may_manage(&caller, stored_owner(s).as_ref()))
            .map(|s| api_view(&set, s)),
    );
    Ok(Json(out))
}

/// One receiver.
#[utoipa::path(get, path = "/receivers/{name}",
    params(("name" = String, Path, description = "The receiver's name")),
    responses((status = 200, body = ReceiverView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    tag = "receivers")]
async fn get_receiver(
    State(state): State<ApiState>,
    caller: Caller,
    receivers: Receivers,
    Path(name): Path<String>,
) -> Result<Json<ReceiverView>, ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    let set = receiver_configs(receivers)?;
    if let Some(raw) = set.list.iter().find(|r| r.name() == name) {
        let visible = may_manage(&caller, owner_of(raw).as_ref());
        require_access(&caller, Access::of_owned(true, visible))?;
        return Ok(Json(config_view(&set, raw)));
    }
    let stored = read_api_receiver(&state, name)
        .await?
        .ok_or(ApiError::NotFound)?;
    let visible = may_manage(&caller, stored_owner(&stored).as_ref());
    require_access(&caller, Access::of_owned(true, visible))?;
    Ok(Json(api_view(&set, &stored)))
}

/// Longest receiver name defined through the API.
const RECEIVER_NAME_MAX: usize = 64;

pub(super) fn check_receiver_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= RECEIVER_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "name: 1 to {RECEIVER_NAME_MAX} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
        )))
    }
}

/// A receiver definition from a JSON body: an object in the form of a `[[receiver]]`
/// table, with `type`. Its `name`, when given, must be `name` (the path's). Each secret
/// is an object (`{"value": SECRET}` or `{"stored": true}`); anything else is refused
/// without being repeated in the answer.
fn parse_receiver_body(mut body: Value, name: Option<&str>) -> Result<ReceiverConfigRaw, ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::bad("the receiver must be a JSON object"));
    };
    match (name, obj.get("name")) {
        (Some(name), None) => {
            obj.insert("name".into(), Value::String(name.to_owned()));
        }
        (Some(name), Some(Value::String(n))) if n == name => {}
        (Some(name), Some(_)) => {
            return Err(ApiError::unprocessable(format!(
                "name: the body's name must be the path's ({name:?})"
            )))
        }
        (None, Some(Value::String(_))) => {}
        (None, _) => return Err(ApiError::unprocessable("name: required (a string)")),
    }
    if let Some(Value::String(n)) = obj.get("name") {
        check_receiver_name(n)?;
    }
    const KINDS: &[&str] = &["email", "slack", "pagerduty", "discord", "webhook", "teams"];
    let kind = match obj.get("type") {
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => k.clone(),
        _ => {
            return Err(ApiError::unprocessable(format!(
                "type: one of {}",
                KINDS.join(", ")
            )))
        }
    };
    for field in ReceiverConfigRaw::secret_fields(&kind) {
        match obj.get(*field) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(ApiError::unprocessable(format!(
                    "{field}: a secret is given as {{\"value\": SECRET}} (sealed in the \
                     collector's secret store) or {{\"stored\": true}} (keep the stored one)"
                )))
            }
        }
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable(format!("invalid receiver: {e}")))
}

/// Validates, stores and starts an API receiver: the caller's `receivers:write` must cover
/// its new owner scope and that of the receiver it replaces.
async fn store_receiver(
    state: &ApiState,
    caller: &Caller,
    set: &ReceiverConfigs,
    raw: ReceiverConfigRaw,
    create_only: bool,
) -> Result<(StatusCode, Json<ReceiverView>), ApiError> {
    let owner =
        OwnerScope::parse(raw.owner().unwrap_or_default()).map_err(ApiError::unprocessable)?;
    caller.require_owner(Permission::ReceiversWrite, owner.as_ref())?;
    let (secrets, dispatcher) = changeable(set)?;
    let name = raw.name().to_owned();
    if let Some(raw) = set.list.iter().find(|r| r.name() == name) {
        // A configured receiver the caller does not manage is not the caller's to know of.
        let visible = may_manage(caller, owner_of(raw).as_ref());
        require_access(caller, Access::of_owned(true, visible))?;
        return Err(from_config_conflict(&name));
    }
    let status = {
        // Held from reading the stored secrets to storing the new set: a `{"stored": true}`
        // overlapping a delete or a rotation cannot bring back the secret it replaced.
        let _changes = dispatcher.lock_changes().await;
        let stored = read_api_receiver(state, name.clone()).await?;
        if let Some(s) = &stored {
            if !may_manage(caller, stored_owner(s).as_ref()) {
                caller.deny();
                caller.note(
                    "the stored receiver's owner scope is outside the caller's receivers:write",
                );
                return Err(ApiError::Forbidden(
                    "receivers:write for the stored receiver's owner scope".into(),
                ));
            }
        }
        let stored = stored.map(|s| s.secrets).unwrap_or_default();
        // Seals or opens secrets and builds an HTTP client: blocking work. The reason of a
        // failure names the field and destination, never a secret.
        let prepared = tokio::task::spawn_blocking(move || secrets.prepare(raw, &stored))
            .await
            .map_err(|e| ApiError::Internal(format!("receiver setup task failed: {e}")))?
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        let receiver = prepared.receiver;
        let status = match state
            .alerting
            .put_receiver(prepared.definition, prepared.secrets, create_only, now_ms())
            .await?
        {
            ReceiverPut::FromConfig => return Err(from_config_conflict(&name)),
            ReceiverPut::Exists => {
                return Err(ApiError::Conflict(format!(
                    "receiver {name:?} exists; replace it with PUT /receivers/{name}"
                )))
            }
            ReceiverPut::Created => StatusCode::CREATED,
            ReceiverPut::Replaced => StatusCode::OK,
        };
        if !dispatcher.start(receiver) {
            return Err(ApiError::Internal(format!(
                "receiver {name} was stored but the outbox does not know it"
            )));
        }
        status
    };
    let stored = read_api_receiver(state, name)
        .await?
        .ok_or_else(|| ApiError::Internal("receiver vanished after it was stored".into()))?;
    Ok((status, Json(api_view(set, &stored))))
}

/// Creates a receiver, in effect at once: alerts routed to it are sent through it (it
/// joins the default route when `[alerting] default_receivers` is unset). Each secret is
/// given as `{"value": SECRET}`: the collector seals it into its secret store, bound to the
/// destination of this definition, and never shows it again. Files and environment
/// variables are the configuration file's (400).
#[utoipa::path(post, path = "/receivers",
    request_body(content = Object, description = "A receiver definition with `type` and `name`, as a `[[receiver]]` table"),
    responses((status = 201, body = ReceiverView, description = "Created and in effect"),
              (status = 400, body = ErrorBody, description = "Invalid definition, or a secret not given as `{\"value\": ...}`"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "A receiver of that name exists (configured or defined through the API)"),
              (status = 503, body = ErrorBody)),
    tag = "receivers")]
async fn create_receiver(
    State(state): State<ApiState>,
    caller: Caller,
    receivers: Receivers,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<ReceiverView>), ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    let set = receiver_configs(receivers)?;
    let raw = parse_receiver_body(body, None)?;
    caller.note(format!("receiver {}", raw.name()));
    store_receiver(&state, &caller, &set, raw, true).await
}

/// Creates or replaces a receiver defined through the API, in effect at once (queued
/// notifications go out with the new definition; a send in progress finishes first).
/// Validated as for POST; `{"stored": true}` keeps a stored secret, only while the
/// definition still sends to the destination it was given for (the whole URL, path and query
/// included; SMTP server, port and TLS mode), else 422. Configured receivers cannot be
/// changed here (409).
#[utoipa::path(put, path = "/receivers/{name}",
    params(("name" = String, Path, description = "The receiver's name")),
    request_body(content = Object, description = "A receiver definition with `type`, as a `[[receiver]]` table; `name` may be left out"),
    responses((status = 200, body = ReceiverView, description = "Replaced, in effect"),
              (status = 201, body = ReceiverView, description = "Created, in effect"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "A configured receiver"),
              (status = 503, body = ErrorBody)),
    tag = "receivers")]
async fn put_receiver(
    State(state): State<ApiState>,
    caller: Caller,
    receivers: Receivers,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<ReceiverView>), ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    caller.note(format!("receiver {name}"));
    let set = receiver_configs(receivers)?;
    if let Some(raw) = set.list.iter().find(|r| r.name() == name) {
        // A configured receiver the caller does not manage is not the caller's to know of.
        let visible = may_manage(&caller, owner_of(raw).as_ref());
        require_access(&caller, Access::of_owned(true, visible))?;
        return Err(from_config_conflict(&name));
    }
    let raw = parse_receiver_body(body, Some(&name))?;
    store_receiver(&state, &caller, &set, raw, false).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiverDeletedView {
    pub name: String,
    /// Notifications that were still queued for it, now in the dead-letter list (reason
    /// "receiver deleted").
    pub dead_lettered: u64,
}

/// Deletes a receiver defined through the API: nothing more is sent through it (a send in
/// progress finishes), and its queued notifications move to the dead-letter list.
#[utoipa::path(delete, path = "/receivers/{name}",
    params(("name" = String, Path, description = "The receiver's name")),
    responses((status = 200, body = ReceiverDeletedView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "A configured receiver"),
              (status = 503, body = ErrorBody)),
    tag = "receivers")]
async fn delete_receiver(
    State(state): State<ApiState>,
    caller: Caller,
    receivers: Receivers,
    Path(name): Path<String>,
) -> Result<Json<ReceiverDeletedView>, ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    caller.note(format!("receiver {name}"));
    let set = receiver_configs(receivers)?;
    if let Some(raw) = set.list.iter().find(|r| r.name() == name) {
        // A configured receiver the caller does not manage is not the caller's to know of.
        let visible = may_manage(&caller, owner_of(raw).as_ref());
        require_access(&caller, Access::of_owned(true, visible))?;
        return Err(from_config_conflict(&name));
    }
    let (_, dispatcher) = changeable(&set)?;
    let _changes = dispatcher.lock_changes().await;
    // Under the change lock: the owner checked is the one deleted.
    if let Some(s) = read_api_receiver(&state, name.clone()).await? {
        let visible = may_manage(&caller, stored_owner(&s).as_ref());
        require_access(&caller, Access::of_owned(true, visible))?;
    }
    match state.alerting.delete_receiver(&name, now_ms()).await? {
        ReceiverDeleted::Missing => Err(ApiError::NotFound),
        ReceiverDeleted::FromConfig => Err(from_config_conflict(&name)),
        ReceiverDeleted::Deleted { dead_lettered } => {
            dispatcher.stop(&name);
            if dead_lettered > 0 {
                caller.note(format!(
                    "{dead_lettered} queued notifications dead-lettered"
                ));
            }
            Ok(Json(ReceiverDeletedView {
                name,
                dead_lettered,
            }))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestSent {
    pub ok: bool,
    pub receiver: String,
    /// The test notification's fingerprint (PagerDuty's dedup key).
    pub fingerprint: String,
}

fn test_notification(receiver: &str, actor: &str, now: i64) -> Notification {
    let rule = "mcpwatch_test_notification";
    Notification {
        fingerprint: format!("mcpwatch-test-{now}"),
        status: notify::Status::Firing,
        severity: notify::Severity::Low,
        rule: rule.to_owned(),
        summary: format!("Test notification from mcpwatch for receiver {receiver}"),
        description: format!(
            "Sent by {actor} through the API to check that this receiver works. No action is needed."
        ),
        runbook_url: None,
        labels: BTreeMap::from([
            ("alertname".to_owned(), rule.to_owned()),
            ("receiver".to_owned(), receiver.to_owned()),
            ("severity".to_owned(), "low".to_owned()),
        ]),
        value: None,
        starts_at_ms: now,
        ends_at_ms: None,
        group_key: "mcpwatch-test".to_owned(),
    }
}

/// Sends a test notification through a receiver now, outside the outbox (no retries). A
/// PagerDuty receiver also gets the matching resolve, so no incident stays open.
#[utoipa::path(post, path = "/receivers/{name}/test",
    params(("name" = String, Path, description = "The receiver's name")),
    responses((status = 200, body = TestSent, description = "The receiver accepted it"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 502, body = ErrorBody, description = "The send failed; the message says why (never a secret)"),
              (status = 503, body = ErrorBody)),
    tag = "receivers")]
async fn test_receiver(
    State(state): State<ApiState>,
    caller: Caller,
    receivers: Receivers,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    caller.note(format!("receiver {name}"));
    let set = receiver_configs(receivers)?;
    let configured = set.list.iter().find(|r| r.name() == name).cloned();
    let build: Box<dyn FnOnce() -> Result<Receiver, notify::NotifyConfigError> + Send> =
        match configured {
            Some(raw) => {
                let visible = may_manage(&caller, owner_of(&raw).as_ref());
                require_access(&caller, Access::of_owned(true, visible))?;
                let base = set.base_dir.clone();
                Box::new(move || Receiver::from_raw(raw, &base, &notify::Destinations::Any))
            }
            None => {
                let stored = read_api_receiver(&state, name.clone())
                    .await?
                    .ok_or(ApiError::NotFound)?;
                let visible = may_manage(&caller, stored_owner(&stored).as_ref());
                require_access(&caller, Access::of_owned(true, visible))?;
                let (secrets, _) = changeable(&set)?;
                Box::new(move || {
                    let raw = stored.raw().map_err(|reason| notify::NotifyConfigError {
                        receiver: stored.name.clone(),
                        reason,
                    })?;
                    secrets.build_stored(raw, &stored.secrets)
                })
            }
        };
    // Reads secret files or opens sealed secrets, and builds an HTTP client: blocking work.
    let built = tokio::task::spawn_blocking(build)
        .await
        .map_err(|e| ApiError::Internal(format!("receiver setup task failed: {e}")))?;
    let receiver = match built {
        Ok(r) => r,
        Err(e) => {
            return Ok(error::plain(
                StatusCode::BAD_GATEWAY,
                "send_failed",
                &e.to_string(),
            ))
        }
    };
    let now = now_ms();
    let n = test_notification(&name, &caller.principal.actor, now);
    let mut sent = receiver.send(std::slice::from_ref(&n)).await;
    if sent.is_ok() && receiver.kind() == "pagerduty" {
        let mut resolved = n.clone();
        resolved.status = notify::Status::Resolved;
        resolved.ends_at_ms = Some(now_ms());
        sent = receiver.send(&[resolved]).await;
    }
    match sent {
        Ok(()) => Ok(Json(TestSent {
            ok: true,
            receiver: name,
            fingerprint: n.fingerprint,
        })
        .into_response()),
        Err(e) => {
            caller.note(format!("send failed: {}", e.message));
            Ok(error::plain(
                StatusCode::BAD_GATEWAY,
                "send_failed",
                &e.message,
            ))
        }
    }
}
