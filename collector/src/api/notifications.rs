//! What happened to notifications: the delivery log ("was I paged?") and the dead-letter
//! list, with retry (one, or all of a receiver's once it works again) and discard. Rows are
//! about alerts, so they are seen through `alerts:read` on the alert's host (an alert
//! without a host needs an unscoped grant); retrying or discarding one needs `alerts:ack`
//! there; a receiver's bulk retry needs `receivers:write` over the receiver.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::paging::Page;
use super::receivers::{receiver_owner, Receivers};
use super::scope::{all_host_labels, covers_named, covers_object, require_access, Access};
use super::ApiState;
use crate::alerting::dead_letters::{DeadLetter, DeadLetterChange, Delivery, DeliveryFilter};
use crate::auth::Permission;
use crate::now_ms;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_deliveries))
        .routes(routes!(list_dead_letters))
        .routes(routes!(retry_receiver))
        .routes(routes!(discard_dead_letter))
        .routes(routes!(retry_dead_letter))
}

fn page_size(state: &ApiState, limit: Option<usize>) -> Result<usize, ApiError> {
    super::paging::PageQuery {
        limit,
        cursor: None,
    }
    .limit(state.settings.max_page)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Exact receiver name.
    pub receiver: Option<String>,
    /// One alert's fingerprint.
    pub fingerprint: Option<String>,
    /// `delivered`, `retry`, `dead`, `requeued` or `discarded`.
    pub result: Option<String>,
    /// Only lines at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
}

/// The delivery log, newest first: every send attempt with its result (and error), and
/// every dead letter requeued or discarded, with who did it. Kept for `[alerting]
/// delivery_log_keep` (default 30 days).
#[utoipa::path(get, path = "/notifications", params(DeliveryQuery),
    responses((status = 200, body = Page<Delivery>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "notifications")]
async fn list_deliveries(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let limit = page_size(&state, q.limit)?;
    let hosts = all_host_labels(&state).await?;
    let principal = caller.principal.clone();
    let keep = move |d: &Delivery| match &d.host {
        _ if principal.has_global(Permission::AlertsRead) => true,
        Some(h) => covers_named(&principal, Permission::AlertsRead, &hosts, h),
        None => false,
    };
    let filter = DeliveryFilter {
        receiver: q.receiver,
        fingerprint: q.fingerprint,
        result: q.result,
        since_ms: q.since_ms,
    };
    let items = state
        .alerting
        .deliveries(filter, q.cursor, limit, keep)
        .await?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Exact receiver name.
    pub receiver: Option<String>,
}

/// Notifications given up (a permanent error such as a 400, or older than `[alerting]
/// max_age`), newest first, with the reason and the attempts made.
#[utoipa::path(get, path = "/notifications/dead", params(DeadLetterQuery),
    responses((status = 200, body = Page<DeadLetter>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "notifications")]
async fn list_dead_letters(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<Page<DeadLetter>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let limit = page_size(&state, q.limit)?;
    let hosts = all_host_labels(&state).await?;
    let principal = caller.principal.clone();
    let keep =
        move |d: &DeadLetter| covers_object(&principal, Permission::AlertsRead, &hosts, &d.labels);
    let items = state
        .alerting
        .dead_letters(q.receiver, q.cursor, limit, keep)
        .await?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    /// Dead letters put back in the outbox (sent at once, retried as any notification).
    pub requeued: u64,
}

/// The dead letter, when the caller may act on it (`alerts:ack` on its alert's host).
async fn actionable(state: &ApiState, caller: &Caller, id: i64) -> Result<DeadLetter, ApiError> {
    caller.require(Permission::AlertsAck)?;
    let d = state
        .alerting
        .dead_letter(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let hosts = all_host_labels(state).await?;
    let p = &caller.principal;
    let visible = covers_object(p, Permission::AlertsRead, &hosts, &d.labels);
    let allowed = covers_object(p, Permission::AlertsAck, &hosts, &d.labels);
    require_access(caller, Access::of(Permission::AlertsAck, allowed, visible))?;
    caller.note(format!(
        "dead letter {id} (receiver {}, alert {})",
        d.receiver, d.fingerprint
    ));
    Ok(d)
}

fn changed(change: DeadLetterChange) -> Result<Json<Requeued>, ApiError> {
    match change {
        DeadLetterChange::Missing => Err(ApiError::NotFound),
        DeadLetterChange::NoReceiver(r) => Err(ApiError::Conflict(format!(
            "receiver {r:?} no longer exists: this notification cannot be sent"
        ))),
        DeadLetterChange::NotReached(r) => Err(ApiError::Conflict(format!(
            "receiver {r:?} does not cover this alert's host (any more): it is not sent there"
        ))),
        DeadLetterChange::Done(requeued) => Ok(Json(Requeued { requeued })),
    }
}

/// Puts one dead letter back in the outbox: it is sent at once through its receiver (with
/// the usual retries), as it was written. Audited.
#[utoipa::path(post, path = "/notifications/dead/{id}/retry",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, body = Requeued), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Its receiver no longer exists, or does not cover the alert's host")),
    tag = "notifications")]
async fn retry_dead_letter(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Requeued>, ApiError> {
    let letter = actionable(&state, &caller, id).await?;
    let actor = caller.principal.actor.clone();
    changed(
        state
            .alerting
            .requeue_dead_letter(id, letter.key(), actor, now_ms())
            .await?,
    )
}

/// Drops one dead letter for good (the delivery log keeps a line saying who did). Audited.
#[utoipa::path(delete, path = "/notifications/dead/{id}",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, body = Requeued, description = "`requeued` is 0"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    tag = "notifications")]
async fn discard_dead_letter(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Requeued>, ApiError> {
    let letter = actionable(&state, &caller, id).await?;
    let actor = caller.principal.actor.clone();
    changed(
        state
            .alerting
            .discard_dead_letter(id, letter.key(), actor, now_ms())
            .await?,
    )
    .map(|_| Json(Requeued { requeued: 0 }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryReceiver {
    /// Every dead letter of this receiver is put back in the outbox, oldest first.
    pub receiver: String,
}

/// After a receiver's outage is fixed: puts all its dead letters back in the outbox, oldest
/// first. Needs `receivers:write` over the receiver (unscoped for a fleet-wide one). Letters
/// about hosts the receiver does not reach now stay (a team's receiver of a reused name
/// gets none of another team's). Audited.
#[utoipa::path(post, path = "/notifications/dead/retry", request_body = RetryReceiver,
    responses((status = 200, body = Requeued), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "notifications")]
async fn retry_receiver(
    State(state): State<ApiState>,
    caller: Caller,
    receivers: Receivers,
    Json(body): Json<RetryReceiver>,
) -> Result<Json<Requeued>, ApiError> {
    caller.require(Permission::ReceiversWrite)?;
    caller.note(format!("receiver {}", body.receiver));
    let owner = receiver_owner(&state, receivers, &body.receiver)
        .await?
        .ok_or(ApiError::NotFound)?;
    let visible = caller
        .principal
        .covers_owner(Permission::ReceiversWrite, owner.as_ref());
    require_access(&caller, Access::of_owned(true, visible))?;
    let actor = caller.principal.actor.clone();
    let done = state
        .alerting
        .requeue_receiver(body.receiver, actor, now_ms())
        .await?;
    if let DeadLetterChange::Done(n) = &done {
        caller.note(format!("{n} dead letters requeued"));
    }
    changed(done)
}
