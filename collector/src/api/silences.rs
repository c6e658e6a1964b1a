//! Silences over the API: listing, reading, creating and expiring them.
//!
//! Caps: at most `[alerting] max_silences` silences not yet ended, and
//! `max_silences_per_user` per user; creating one more answers 429 (checked on the writer
//! with the insert, so parallel requests cannot overshoot).
//!
//! Scope: a silence belongs to the hosts its `host="..."` equality matchers name, so a
//! team can silence (and see silences of) only its own hosts. Objects out of scope answer
//! 404.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::alerts::MAX_COMMENT;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::scope::{all_host_labels, covers_named, require_access, Access, HostLabels};
use super::ApiState;
use crate::alert::route::{parse_matchers, SilenceSpec};
use crate::alert::selector::satisfiable;
use crate::alert::{Labels, MatchOp, Matcher};
use crate::auth::{Permission, Principal};
use crate::now_ms;
use crate::store::query::silences::SilenceRow;
use crate::store::StoreError;

/// Longest silence matcher text (bytes).
const MAX_MATCHERS: usize = 4096;
/// Longest silence.
const MAX_SILENCE_MS: i64 = 366 * 86_400_000;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_silences, create_silence))
        .routes(routes!(get_silence, expire_silence))
}

/// The hosts a silence is limited to: the values of its `host="..."` matchers.
fn silence_hosts(matchers: &str) -> Vec<String> {
    parse_matchers(matchers)
        .map(|ms| {
            ms.into_iter()
                .filter(|m| m.label == "host" && m.op == MatchOp::Eq)
                .map(|m| m.value)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `p` covers a silence: unscoped, or every host its `host="..."` matchers name is
/// in scope (such a silence can only ever mute those hosts' alerts). Every, not any: a
/// silence naming another team's host too (as a stored contradictory one could) is not the
/// caller's to see or change.
fn covers_silence(
    principal: &Principal,
    p: Permission,
    hosts: &HostLabels,
    matchers: &str,
) -> bool {
    let named = silence_hosts(matchers);
    principal.has_global(p)
        || (!named.is_empty() && named.iter().all(|h| covers_named(principal, p, hosts, h)))
}

/// The silences muting alerts now (started, not ended) that the caller may see, with their
/// matchers parsed: an alert's `silenced_by` names only silences the caller could list.
pub(super) async fn muting_now(
    state: &ApiState,
    principal: &Principal,
    hosts: &HostLabels,
) -> Result<Vec<(i64, Vec<Matcher>)>, ApiError> {
    let now = now_ms();
    let (principal, hosts) = (principal.clone(), hosts.clone());
    let page = state
        .store
        .silences(false, now, None, MUTING_SCAN, move |s| {
            s.starts_ms <= now
                && covers_silence(&principal, Permission::AlertsRead, &hosts, &s.matchers)
        })
        .await?;
    Ok(page
        .items
        .into_iter()
        .filter_map(|s| Some((s.id, parse_matchers(&s.matchers).ok()?)))
        .collect())
}

/// Silences read for `silenced_by` at most: well above `[alerting] max_silences`'s default.
const MUTING_SCAN: usize = 100_000;

/// A silence: alerts matching every matcher are not announced between start and end.
#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceView {
    pub id: i64,
    /// `{label="value", ...}`.
    pub matchers: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
    /// Who created it.
    pub author: String,
    pub comment: String,
    pub created_ms: i64,
    /// `pending` (not started), `active` or `expired`, as of the response.
    pub state: String,
}

fn silence_view(s: SilenceRow, now: i64) -> SilenceView {
    let state = if now < s.starts_ms {
        "pending"
    } else if now < s.ends_ms {
        "active"
    } else {
        "expired"
    };
    SilenceView {
        id: s.id,
        matchers: s.matchers,
        starts_ms: s.starts_ms,
        ends_ms: s.ends_ms,
        author: s.author,
        comment: s.comment,
        created_ms: s.created_ms,
        state: state.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SilenceFilter {
    /// Silences not yet ended (pending or active).
    #[default]
    Current,
    /// Every silence, expired ones included.
    All,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SilencesQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (pages go from newest to oldest).
    pub cursor: Option<i64>,
    /// `current` (default) or `all`.
    #[param(inline)]
    pub state: Option<SilenceFilter>,
}

/// Silences the caller may see: all of them with an unscoped `alerts:read`, else those
/// limited (by a `host="..."` matcher) to a host in the caller's scope.
#[utoipa::path(get, path = "/silences", params(SilencesQuery),
    responses((status = 200, body = Page<SilenceView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "silences")]
async fn list_silences(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<SilencesQuery>,
) -> Result<Json<Page<SilenceView>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let limit = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .limit(state.settings.max_page)?;
    let all = matches!(q.state.unwrap_or_default(), SilenceFilter::All);
    let principal = caller.principal.clone();
    let now = now_ms();
    let cursor = q.cursor;
    let hosts = all_host_labels(&state).await?;
    let page = state
        .store
        .silences(all, now, cursor, limit, move |s| {
            covers_silence(&principal, Permission::AlertsRead, &hosts, &s.matchers)
        })
        .await?;
    Ok(Json(Page {
        items: page
            .items
            .into_iter()
            .map(|s| silence_view(s, now))
            .collect(),
        next_cursor: page.next,
    }))
}

/// A silence and the scope labels of the hosts it names.
async fn read_silence(
    state: &ApiState,
    id: i64,
) -> Result<Option<(SilenceRow, HostLabels)>, ApiError> {
    let Some(s) = state.store.silence(id).await? else {
        return Ok(None);
    };
    let hosts = state
        .store
        .labels_of_hosts(silence_hosts(&s.matchers))
        .await?;
    Ok(Some((s, hosts)))
}

/// One silence.
#[utoipa::path(get, path = "/silences/{id}",
    params(("id" = i64, Path, description = "The silence's id")),
    responses((status = 200, body = SilenceView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "silences")]
async fn get_silence(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<SilenceView>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let Some((s, hosts)) = read_silence(&state, id).await? else {
        return Err(ApiError::NotFound);
    };
    let visible = covers_silence(
        &caller.principal,
        Permission::AlertsRead,
        &hosts,
        &s.matchers,
    );
    require_access(&caller, Access::of(Permission::AlertsRead, visible, false))?;
    Ok(Json(silence_view(s, now_ms())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// `{label="value", other=~"re", ...}`: at least one matcher that does not match an
    /// empty label set. A caller scoped to some hosts must include `host="NAME"` for one of
    /// them.
    pub matchers: String,
    /// Start (ms since the epoch); default now.
    pub starts_ms: Option<i64>,
    /// End (ms since the epoch). Give this or `duration`.
    pub ends_ms: Option<i64>,
    /// Length from the start, e.g. `"2h"` (units ms, s, m, h, d). Give this or `ends_ms`.
    pub duration: Option<String>,
    /// Why (required, at most 1024 characters).
    pub comment: String,
}

/// When a requested silence starts and ends (400 when it would be over already, end
/// before it starts or last more than 366 days).
fn silence_window(req: &SilenceRequest, now: i64) -> Result<(i64, i64), ApiError> {
    let starts = req.starts_ms.unwrap_or(now);
    let ends = match (req.ends_ms, req.duration.as_deref()) {
        (Some(e), None) => e,
        (None, Some(d)) => {
            let d: mcpwatch_common::config::Duration = d
                .parse()
                .map_err(|m| ApiError::unprocessable(format!("duration: {m}")))?;
            starts.saturating_add(d.as_millis_i64())
        }
        _ => {
            return Err(ApiError::unprocessable(
                "give exactly one of ends_ms and duration",
            ))
        }
    };
    if ends <= now {
        return Err(ApiError::unprocessable(
            "the silence would already be over (ends_ms is in the past)",
        ));
    }
    if ends <= starts {
        return Err(ApiError::unprocessable(
            "the silence must end after it starts",
        ));
    }
    if ends.saturating_sub(starts) > MAX_SILENCE_MS {
        return Err(ApiError::unprocessable("a silence lasts at most 366 days"));
    }
    Ok((starts, ends))
}

/// Creates a silence under the caller's identity.
#[utoipa::path(post, path = "/silences", request_body = SilenceRequest,
    responses((status = 201, body = SilenceView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "No silences:write, or the silence is not limited to a host in the caller's scope"),
              (status = 429, body = ErrorBody, description = "`limit_reached`: as many silences are active or pending as `[alerting] max_silences` allows, or the caller's user has `max_silences_per_user`; expire one first")),
    tag = "silences")]
async fn create_silence(
    State(state): State<ApiState>,
    caller: Caller,
    Json(req): Json<SilenceRequest>,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    caller.require(Permission::SilencesWrite)?;
    let now = now_ms();
    let matchers_text = req.matchers.trim().to_owned();
    if matchers_text.len() > MAX_MATCHERS {
        return Err(ApiError::unprocessable(format!(
            "matchers: at most {MAX_MATCHERS} bytes"
        )));
    }
    let matchers = parse_matchers(&matchers_text)
        .map_err(|m| ApiError::unprocessable(format!("matchers: {m}")))?;
    if matchers.is_empty() {
        return Err(ApiError::unprocessable(
            "matchers: a silence needs at least one matcher",
        ));
    }
    if !satisfiable(&matchers) {
        return Err(ApiError::unprocessable(
            "matchers: they contradict each other (a label pinned by = fails another of its matchers), so the silence could never match",
        ));
    }
    if matchers.iter().all(|m| m.matches(&Labels::new())) {
        return Err(ApiError::unprocessable(
            "matchers: at least one matcher must not match an empty label set (a silence must not mute every alert)",
        ));
    }
    let comment = req.comment.trim().to_owned();
    if comment.is_empty() {
        return Err(ApiError::unprocessable(
            "comment: say why the alerts are silenced",
        ));
    }
    if comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::unprocessable(format!(
            "comment: at most {MAX_COMMENT} characters"
        )));
    }
    let (starts, ends) = silence_window(&req, now)?;
    // Scope: an unscoped grant may silence anything; a scoped one only its own hosts.
    let p = caller.principal.clone();
    if !p.has_global(Permission::SilencesWrite) {
        let named = silence_hosts(&matchers_text);
        let hosts = state.store.labels_of_hosts(named.clone()).await?;
        if !covers_silence(&p, Permission::SilencesWrite, &hosts, &matchers_text) {
            caller.deny();
            return Err(ApiError::Forbidden(if named.is_empty() {
                "silences:write on every host (or a host=\"NAME\" matcher naming one of your hosts)"
                    .into()
            } else {
                format!("silences:write on host {}", named.join(" or "))
            }));
        }
    }
    let spec = SilenceSpec {
        matchers: matchers_text,
        starts_ms: starts,
        ends_ms: ends,
        author: p.actor.clone(),
        comment,
    };
    let id = match state.alerting.add_silence(spec, now).await {
        Ok(id) => id,
        Err(e @ StoreError::Limit(_)) => {
            caller.note(format!("refused: {e}"));
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    caller.note(format!("silence {id}"));
    let Some((s, _)) = read_silence(&state, id).await? else {
        return Err(ApiError::Internal(format!(
            "silence {id} vanished after insert"
        )));
    };
    Ok((StatusCode::CREATED, Json(silence_view(s, now_ms()))))
}

/// Ends a silence now (it stays listed with `state=all`).
#[utoipa::path(delete, path = "/silences/{id}",
    params(("id" = i64, Path, description = "The silence's id")),
    responses((status = 204, description = "Expired"), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Already ended")),
    tag = "silences")]
async fn expire_silence(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::SilencesWrite)?;
    caller.note(format!("silence {id}"));
    let Some((s, hosts)) = read_silence(&state, id).await? else {
        return Err(ApiError::NotFound);
    };
    let p = &caller.principal;
    let allowed = covers_silence(p, Permission::SilencesWrite, &hosts, &s.matchers);
    let visible = covers_silence(p, Permission::AlertsRead, &hosts, &s.matchers);
    require_access(
        &caller,
        Access::of(Permission::SilencesWrite, allowed, visible),
    )?;
    if !state.alerting.expire_silence(id, now_ms()).await? {
        return Err(ApiError::Conflict(format!(
            "silence {id} has already ended"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
