//! Alerting over the API: active alerts, their history and acknowledgement; silences;
//! rules (the effective set with its origin, changes through the API applied live, dry
//! runs); receivers (the configured ones read-only, others created, changed and deleted
//! through the API and applied live; secrets as references only; test-sends).
//!
//! Scope: alerts and silences belong to hosts. An alert is visible to a caller holding
//! `alerts:read` for the host in its `host` label (matched against that host's labels plus
//! `host`); alerts without a host need an unscoped grant. A silence belongs to the hosts its
//! `host="..."` equality matchers name, so a team can silence (and see silences of) only its
//! own hosts. Rules and receivers are fleet-wide: changing them needs an unscoped
//! `rules:write` / `receivers:write`. Objects out of scope answer 404.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{self, ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::ApiState;
use crate::alert::dry_run::{dry_run, DryRun};
use crate::alert::policy::AlertRecord;
use crate::alert::route::{parse_matchers, SilenceSpec};
use crate::alert::{Labels, MatchOp, RawRule, Rule};
use crate::auth::{Permission, Principal};
use crate::dispatch::Dispatcher;
use crate::notify::{self, ApiSecrets, Notification, Receiver, ReceiverConfigRaw, SecretRef};
use crate::now_ms;
use crate::store::alerting::{
    validate_api_rule, DryRunReply, ReceiverDeleted, ReceiverPut, RuleDeleted, DRY_RUN_LIMIT,
};
use crate::store::api_alerts as sa;
use crate::store::receivers::{self as stored_receivers, StoredReceiver};

/// Longest acknowledgement or silence comment (characters).
const MAX_COMMENT: usize = 1024;
/// Longest silence matcher text (bytes).
const MAX_MATCHERS: usize = 4096;
/// Longest silence.
const MAX_SILENCE_MS: i64 = 366 * 86_400_000;
/// Longest look-back a dry run may read from the stored samples.
const MAX_DRY_RUN_SPAN_MS: i64 = 86_400_000;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(alert_history))
        .routes(routes!(get_alert))
        .routes(routes!(ack_alert))
        .routes(routes!(list_silences, create_silence))
        .routes(routes!(get_silence, expire_silence))
        .routes(routes!(list_rules))
        .routes(routes!(dry_run_rule))
        .routes(routes!(get_rule, put_rule, delete_rule))
        .routes(routes!(list_receivers, create_receiver))
        .routes(routes!(get_receiver, put_receiver, delete_receiver))
        .routes(routes!(test_receiver))
}

// ---- scope ------------------------------------------------------------------------------

fn host_only(host: &str) -> Labels {
    [("host".to_owned(), host.to_owned())].into_iter().collect()
}

/// Whether `p` covers an object with `labels`: through the host in its `host` label (that
/// host's labels from `hosts`, or just `host` for a host never seen); an object without a
/// host needs an unscoped grant.
fn covers(
    principal: &Principal,
    p: Permission,
    hosts: &HashMap<String, Labels>,
    labels: &Labels,
) -> bool {
    if principal.has_global(p) {
        return true;
    }
    match labels.get("host") {
        Some(h) => match hosts.get(h) {
            Some(hl) => principal.has_for_host(p, hl),
            None => principal.has_for_host(p, &host_only(h)),
        },
        None => false,
    }
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

/// Whether `p` covers a silence: unscoped, or for a host one of its `host="..."` matchers
/// names (such a silence can only ever mute that host's alerts).
fn covers_silence(
    principal: &Principal,
    p: Permission,
    hosts: &HashMap<String, Labels>,
    matchers: &str,
) -> bool {
    principal.has_global(p)
        || silence_hosts(matchers).iter().any(|h| match hosts.get(h) {
            Some(hl) => principal.has_for_host(p, hl),
            None => principal.has_for_host(p, &host_only(h)),
        })
}

/// Checks `act` on an object the caller may or may not see: visible but not allowed is a
/// 403, invisible is a 404 (as if it did not exist); both are audited as denials.
fn require_on(
    caller: &Caller,
    act: Permission,
    allowed: bool,
    visible: bool,
) -> Result<(), ApiError> {
    if allowed {
        return Ok(());
    }
    caller.deny();
    if visible {
        Err(ApiError::Forbidden(act.to_string()))
    } else {
        Err(ApiError::NotFound)
    }
}

// ---- alerts -----------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct AckView {
    /// The actor who acknowledged (`user:NAME` or `token:NAME`).
    pub by: String,
    pub at_ms: i64,
    pub comment: String,
    /// Level acknowledged; an escalation above it clears the acknowledgement.
    pub level: Option<String>,
}

/// An alert (one per rule and series).
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    /// Stable identity of the alert (rule + series labels).
    pub fingerprint: String,
    pub rule: String,
    /// Series labels + rule labels + `alertname` + `severity`.
    pub labels: BTreeMap<String, String>,
    /// Rendered `summary`, `description`, `runbook_url`.
    pub annotations: BTreeMap<String, String>,
    /// `firing`, `flapping` or `resolved`.
    pub status: String,
    /// `warning` or `critical`.
    pub level: Option<String>,
    /// `critical`, `high`, `medium` or `low`.
    pub severity: String,
    pub value: Option<f64>,
    pub started_ms: i64,
    pub updated_ms: i64,
    pub resolved_ms: Option<i64>,
    pub ack: Option<AckView>,
}

impl From<&AlertRecord> for AlertView {
    fn from(r: &AlertRecord) -> AlertView {
        AlertView {
            fingerprint: r.fingerprint.clone(),
            rule: r.rule.clone(),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
            status: r.status.as_str().to_owned(),
            level: r.level.map(|l| l.as_str().to_owned()),
            severity: r.severity.as_str().to_owned(),
            value: r.value.filter(|v| v.is_finite()),
            started_ms: r.started_ms,
            updated_ms: r.updated_ms,
            resolved_ms: r.resolved_ms,
            ack: r.ack.as_ref().map(|a| AckView {
                by: a.by.clone(),
                at_ms: a.at_ms,
                comment: a.comment.clone(),
                level: a.level.map(|l| l.as_str().to_owned()),
            }),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Only alerts of this rule.
    pub rule: Option<String>,
    /// Only alerts of this host (agent id).
    pub host: Option<String>,
}

/// Active (firing or flapping) alerts the caller may see.
#[utoipa::path(get, path = "/alerts", params(AlertsQuery),
    responses((status = 200, body = Page<AlertView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "alerts")]
async fn list_alerts(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<Page<AlertView>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let limit = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .limit(state.settings.max_page)?;
    let principal = caller.principal.clone();
    let page = state
        .db
        .read(move |r| {
            r.run(|c| {
                let hosts = sa::host_labels(c)?;
                sa::active_alerts(c, q.cursor, q.rule.as_deref(), limit, |rec| {
                    q.host
                        .as_ref()
                        .is_none_or(|h| rec.labels.get("host") == Some(h))
                        && covers(&principal, Permission::AlertsRead, &hosts, &rec.labels)
                })
            })
        })
        .await?;
    Ok(Json(Page {
        items: page.items.iter().map(AlertView::from).collect(),
        next_cursor: page.next,
    }))
}

/// An alert and the scope labels of its host.
async fn read_alert(
    state: &ApiState,
    fingerprint: String,
) -> Result<Option<(AlertRecord, HashMap<String, Labels>)>, ApiError> {
    state
        .db
        .read(move |r| {
            r.run(|c| {
                let Some(rec) = sa::alert(c, &fingerprint)? else {
                    return Ok(None);
                };
                let mut hosts = HashMap::new();
                if let Some(h) = rec.labels.get("host") {
                    hosts.insert(h.clone(), sa::labels_of_host(c, h)?);
                }
                Ok(Some((rec, hosts)))
            })
        })
        .await
}

/// One alert (active or resolved) by fingerprint.
#[utoipa::path(get, path = "/alerts/{fingerprint}",
    params(("fingerprint" = String, Path, description = "The alert's fingerprint")),
    responses((status = 200, body = AlertView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "alerts")]
async fn get_alert(
    State(state): State<ApiState>,
    caller: Caller,
    Path(fingerprint): Path<String>,
) -> Result<Json<AlertView>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let Some((rec, hosts)) = read_alert(&state, fingerprint).await? else {
        return Err(ApiError::NotFound);
    };
    let visible = covers(
        &caller.principal,
        Permission::AlertsRead,
        &hosts,
        &rec.labels,
    );
    require_on(&caller, Permission::AlertsRead, visible, false)?;
    Ok(Json(AlertView::from(&rec)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Why, or who is on it (at most 1024 characters).
    #[serde(default)]
    pub comment: String,
}

/// Acknowledges an active alert: repeats stop, and receivers that were told it fired are
/// told it is acknowledged. The acknowledgement is recorded under the caller's identity.
#[utoipa::path(post, path = "/alerts/{fingerprint}/ack",
    params(("fingerprint" = String, Path, description = "The alert's fingerprint")),
    request_body = AckRequest,
    responses((status = 200, body = AlertView, description = "The acknowledged alert"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "No such active alert in scope")),
    tag = "alerts")]
async fn ack_alert(
    State(state): State<ApiState>,
    caller: Caller,
    Path(fingerprint): Path<String>,
    Json(req): Json<AckRequest>,
) -> Result<Json<AlertView>, ApiError> {
    caller.require(Permission::AlertsAck)?;
    if req.comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::bad(format!(
            "comment: at most {MAX_COMMENT} characters"
        )));
    }
    caller.note(format!("alert {fingerprint}"));
    let Some((rec, hosts)) = read_alert(&state, fingerprint.clone()).await? else {
        return Err(ApiError::NotFound);
    };
    let p = &caller.principal;
    let allowed = covers(p, Permission::AlertsAck, &hosts, &rec.labels);
    let visible = covers(p, Permission::AlertsRead, &hosts, &rec.labels);
    require_on(&caller, Permission::AlertsAck, allowed, visible)?;
    if !rec.is_active() {
        return Err(ApiError::NotFound);
    }
    let acked = state
        .db
        .store
        .acknowledge(&fingerprint, &p.actor, &req.comment, now_ms())
        .await?;
    if !acked {
        // Resolved between the read and the acknowledgement.
        return Err(ApiError::NotFound);
    }
    let Some((rec, _)) = read_alert(&state, fingerprint).await? else {
        return Err(ApiError::NotFound);
    };
    Ok(Json(AlertView::from(&rec)))
}

/// One state change of an alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    pub id: i64,
    pub at_ms: i64,
    pub rule: String,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    /// `inactive`, `pending`, `firing`, `resolved` or `flapping`.
    pub from: String,
    pub to: String,
    pub level: Option<String>,
    pub value: Option<f64>,
    /// Whether the change was one receivers hear about.
    pub notify: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (pages go from newest to oldest).
    pub cursor: Option<i64>,
    /// Only changes of this rule.
    pub rule: Option<String>,
    /// Only changes of this alert.
    pub fingerprint: Option<String>,
    /// Only changes at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only changes before this time (ms since the epoch).
    pub until_ms: Option<i64>,
}

/// Alert state changes the caller may see, newest first.
#[utoipa::path(get, path = "/alerts/history", params(HistoryQuery),
    responses((status = 200, body = Page<HistoryItem>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "alerts")]
async fn alert_history(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Page<HistoryItem>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let limit = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .limit(state.settings.max_page)?;
    let filter = sa::HistoryFilter {
        rule: q.rule,
        fingerprint: q.fingerprint,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    };
    let principal = caller.principal.clone();
    let cursor = q.cursor;
    let page = state
        .db
        .read(move |r| {
            r.run(|c| {
                let hosts = sa::host_labels(c)?;
                sa::alert_history(c, &filter, cursor, limit, |labels| {
                    covers(&principal, Permission::AlertsRead, &hosts, labels)
                })
            })
        })
        .await?;
    Ok(Json(Page {
        items: page
            .items
            .into_iter()
            .map(|h| HistoryItem {
                id: h.id,
                at_ms: h.at_ms,
                rule: h.rule,
                fingerprint: h.fingerprint,
                labels: h.labels,
                from: h.from_state,
                to: h.to_state,
                level: h.level,
                value: h.value.filter(|v| v.is_finite()),
                notify: h.notify,
            })
            .collect(),
        next_cursor: page.next,
    }))
}

// ---- silences ---------------------------------------------------------------------------

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

fn silence_view(s: sa::SilenceRow, now: i64) -> SilenceView {
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
    let page = state
        .db
        .read(move |r| {
            r.run(|c| {
                let hosts = sa::host_labels(c)?;
                sa::silences(c, all, now, cursor, limit, |s| {
                    covers_silence(&principal, Permission::AlertsRead, &hosts, &s.matchers)
                })
            })
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
) -> Result<Option<(sa::SilenceRow, HashMap<String, Labels>)>, ApiError> {
    state
        .db
        .read(move |r| {
            r.run(|c| {
                let Some(s) = sa::silence(c, id)? else {
                    return Ok(None);
                };
                let mut hosts = HashMap::new();
                for h in silence_hosts(&s.matchers) {
                    let l = sa::labels_of_host(c, &h)?;
                    hosts.insert(h, l);
                }
                Ok(Some((s, hosts)))
            })
        })
        .await
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
    require_on(&caller, Permission::AlertsRead, visible, false)?;
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

/// Creates a silence under the caller's identity.
#[utoipa::path(post, path = "/silences", request_body = SilenceRequest,
    responses((status = 201, body = SilenceView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "No silences:write, or the silence is not limited to a host in the caller's scope")),
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
        return Err(ApiError::bad(format!(
            "matchers: at most {MAX_MATCHERS} bytes"
        )));
    }
    let matchers =
        parse_matchers(&matchers_text).map_err(|m| ApiError::bad(format!("matchers: {m}")))?;
    if matchers.is_empty() {
        return Err(ApiError::bad(
            "matchers: a silence needs at least one matcher",
        ));
    }
    if matchers.iter().all(|m| m.matches(&Labels::new())) {
        return Err(ApiError::bad(
            "matchers: at least one matcher must not match an empty label set (a silence must not mute every alert)",
        ));
    }
    let comment = req.comment.trim().to_owned();
    if comment.is_empty() {
        return Err(ApiError::bad("comment: say why the alerts are silenced"));
    }
    if comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::bad(format!(
            "comment: at most {MAX_COMMENT} characters"
        )));
    }
    let starts = req.starts_ms.unwrap_or(now);
    let ends = match (req.ends_ms, req.duration.as_deref()) {
        (Some(e), None) => e,
        (None, Some(d)) => {
            let d: mcpwatch_common::config::Duration = d
                .parse()
                .map_err(|m| ApiError::bad(format!("duration: {m}")))?;
            starts.saturating_add(d.as_millis_i64())
        }
        _ => return Err(ApiError::bad("give exactly one of ends_ms and duration")),
    };
    if ends <= now {
        return Err(ApiError::bad(
            "the silence would already be over (ends_ms is in the past)",
        ));
    }
    if ends <= starts {
        return Err(ApiError::bad("the silence must end after it starts"));
    }
    if ends.saturating_sub(starts) > MAX_SILENCE_MS {
        return Err(ApiError::bad("a silence lasts at most 366 days"));
    }
    // Scope: an unscoped grant may silence anything; a scoped one only its own hosts.
    let p = caller.principal.clone();
    if !p.has_global(Permission::SilencesWrite) {
        let named = silence_hosts(&matchers_text);
        let names = named.clone();
        let hosts = state
            .db
            .read(move |r| {
                r.run(|c| {
                    let mut m = HashMap::new();
                    for h in names {
                        let l = sa::labels_of_host(c, &h)?;
                        m.insert(h, l);
                    }
                    Ok(m)
                })
            })
            .await?;
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
    let id = state.db.store.add_silence(spec, now).await?;
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
    require_on(&caller, Permission::SilencesWrite, allowed, visible)?;
    if !state.db.store.expire_silence(id, now_ms()).await? {
        return Err(ApiError::Conflict(format!(
            "silence {id} has already ended"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- rules ------------------------------------------------------------------------------

/// A rule as it is in effect.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub name: String,
    /// `config` (rules files and built-ins) or `api` (set through this API; replaces a
    /// configured rule of the same name as a whole).
    pub origin: String,
    /// Whether the rule runs (`enabled` is not `false`).
    pub enabled: bool,
    /// The definition, in the form of a rules file's `[[rule]]` table.
    #[schema(value_type = RawRule)]
    pub definition: Value,
    pub updated_ms: i64,
}

fn rule_view(r: sa::RuleRow) -> RuleView {
    let enabled = r.definition.get("enabled").and_then(Value::as_bool) != Some(false);
    RuleView {
        name: r.name,
        origin: r.origin,
        enabled,
        definition: r.definition,
        updated_ms: r.updated_ms,
    }
}

/// The rules in effect, with their origin.
#[utoipa::path(get, path = "/rules",
    responses((status = 200, body = Vec<RuleView>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)),
    tag = "rules")]
async fn list_rules(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<RuleView>>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    let rows = state.db.read(|r| r.run(sa::rules)).await?;
    Ok(Json(rows.into_iter().map(rule_view).collect()))
}

async fn read_rule(state: &ApiState, name: String) -> Result<Option<sa::RuleRow>, ApiError> {
    state.db.read(move |r| r.run(|c| sa::rule(c, &name))).await
}

/// One rule.
#[utoipa::path(get, path = "/rules/{name}",
    params(("name" = String, Path, description = "The rule's name")),
    responses((status = 200, body = RuleView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    tag = "rules")]
async fn get_rule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RuleView>, ApiError> {
    caller.require(Permission::AlertsRead)?;
    read_rule(&state, name)
        .await?
        .map(|r| Json(rule_view(r)))
        .ok_or(ApiError::NotFound)
}

/// A rule definition from a JSON body: an object in the form of a `[[rule]]` table; its
/// `name`, when given, must be `name` (the path's).
fn parse_rule_body(mut body: Value, name: Option<&str>) -> Result<RawRule, ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::bad("the rule must be a JSON object"));
    };
    if let Some(name) = name {
        match obj.get("name") {
            None => {
                obj.insert("name".into(), Value::String(name.to_owned()));
            }
            Some(Value::String(n)) if n == name => {}
            Some(_) => {
                return Err(ApiError::bad(format!(
                    "name: the body's name must be the path's ({name:?})"
                )))
            }
        }
    } else if !obj.contains_key("name") {
        obj.insert("name".into(), Value::String("dry_run".into()));
    }
    serde_json::from_value(body).map_err(|e| ApiError::bad(format!("invalid rule: {e}")))
}

/// Creates or replaces a rule (origin `api`) and applies it at once. It replaces a
/// configured rule of the same name as a whole; `{"enabled": false}` alone switches a
/// configured rule off. Validated like the rules files (400 with the reason).
#[utoipa::path(put, path = "/rules/{name}",
    params(("name" = String, Path, description = "The rule's name")),
    request_body = RawRule,
    responses((status = 200, body = RuleView, description = "The stored rule, now in effect"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)),
    tag = "rules")]
async fn put_rule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<RuleView>, ApiError> {
    caller.require_global(Permission::RulesWrite)?;
    caller.note(format!("rule {name}"));
    let raw = parse_rule_body(body, Some(&name))?;
    validate_api_rule(&raw).map_err(|e| ApiError::bad(e.to_string()))?;
    state.db.store.put_rule(raw, now_ms()).await?;
    read_rule(&state, name)
        .await?
        .map(|r| Json(rule_view(r)))
        .ok_or_else(|| ApiError::Internal("rule vanished after it was stored".into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleDeletedView {
    pub name: String,
    /// A configured rule of the same name is in effect again.
    pub config_restored: bool,
}

/// Deletes a rule set through the API (a configured rule of the same name applies again).
/// Configured rules cannot be deleted: switch them off with `PUT {"enabled": false}`.
#[utoipa::path(delete, path = "/rules/{name}",
    params(("name" = String, Path, description = "The rule's name")),
    responses((status = 200, body = RuleDeletedView), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "A configured rule")),
    tag = "rules")]
async fn delete_rule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RuleDeletedView>, ApiError> {
    caller.require_global(Permission::RulesWrite)?;
    caller.note(format!("rule {name}"));
    match state.db.store.delete_rule(&name, now_ms()).await? {
        RuleDeleted::Missing => Err(ApiError::NotFound),
        RuleDeleted::FromConfig => Err(ApiError::Conflict(format!(
            "rule {name:?} comes from the configuration; switch it off with PUT {{\"enabled\": false}}"
        ))),
        RuleDeleted::Deleted { config_restored } => Ok(Json(RuleDeletedView {
            name,
            config_restored,
        })),
    }
}

/// One series a dry run selected.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunSeriesView {
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    /// `firing`, `pending` (the condition holds; `for` has not passed yet) or `inactive`.
    pub state: String,
    pub level: Option<String>,
    pub value: Option<f64>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunView {
    pub rule: String,
    pub at_ms: i64,
    /// `window` (the alert engine's in-memory data) or `store` (stored raw samples, for
    /// metrics no running rule reads).
    pub source: String,
    /// Series the rule selected.
    pub evaluated: usize,
    pub firing: usize,
    pub pending: usize,
    /// Firing first, then pending, then inactive; at most 1000.
    pub series: Vec<DryRunSeriesView>,
    pub truncated: bool,
}

fn dry_run_view(d: DryRun, source: &str) -> DryRunView {
    DryRunView {
        rule: d.rule,
        at_ms: d.at_ms,
        source: source.to_owned(),
        evaluated: d.evaluated,
        firing: d.firing,
        pending: d.pending,
        truncated: d.truncated,
        series: d
            .series
            .into_iter()
            .map(|s| DryRunSeriesView {
                fingerprint: s.fingerprint,
                labels: s.labels,
                state: s.state.to_owned(),
                level: s.level.map(str::to_owned),
                value: s.value.filter(|v| v.is_finite()),
                annotations: s.annotations,
            })
            .collect(),
    }
}

/// Evaluates a rule against recent data now, as a fresh rule would be evaluated: which
/// series would be pending or firing, with their values. Nothing is stored or sent.
#[utoipa::path(post, path = "/rules/dry-run", request_body = RawRule,
    responses((status = 200, body = DryRunView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    tag = "rules")]
async fn dry_run_rule(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<Value>,
) -> Result<Json<DryRunView>, ApiError> {
    caller.require_global(Permission::RulesWrite)?;
    let raw = parse_rule_body(body, None)?;
    let rule = Rule::validate(raw).map_err(|e| ApiError::bad(e.to_string()))?;
    let now = now_ms();
    let opts = match state.db.store.dry_run_rule(rule.clone(), now).await? {
        DryRunReply::Done(d) => return Ok(Json(dry_run_view(d, "window"))),
        DryRunReply::NotInWindow(opts) => opts,
    };
    // No running rule reads these metrics (for that long): read the stored samples.
    let span = rule
        .window_ms
        .max(rule.absent_for_ms.unwrap_or(0))
        .saturating_add(opts.grace_ms);
    if span > MAX_DRY_RUN_SPAN_MS {
        return Err(ApiError::bad(
            "a dry run over stored samples looks back at most 1d (window or absent_for plus grace)",
        ));
    }
    let d = state
        .db
        .read(move |r| {
            r.run(|c| {
                let mut metrics = vec![rule.selector.metric.as_str()];
                if let Some(d) = &rule.divide_by {
                    metrics.push(d.metric.as_str());
                }
                let src = sa::recent_samples(c, &metrics, now.saturating_sub(span), now)?;
                Ok(dry_run(rule.clone(), opts, &src, now, DRY_RUN_LIMIT))
            })
        })
        .await?;
    Ok(Json(dry_run_view(d, "store")))
}

// ---- receivers --------------------------------------------------------------------------

/// The receivers for the API: the configured ones (read-only here) and what receivers
/// defined through the API need. The collector provides it as a request extension
/// (`Extension(Arc<ReceiverConfigs>)` on the API router).
#[derive(Debug, Clone, Default)]
pub struct ReceiverConfigs {
    /// The receivers of the configuration file.
    pub list: Vec<ReceiverConfigRaw>,
    /// The config file's directory: their secret files are resolved against it.
    pub base_dir: PathBuf,
    /// Where receivers defined through the API may read secrets. `None` (with
    /// `dispatcher`): receivers cannot be changed through the API (503).
    pub api_secrets: Option<ApiSecrets>,
    /// The notification workers, which follow receiver changes.
    pub dispatcher: Option<Dispatcher>,
}

type Receivers = Option<Extension<Arc<ReceiverConfigs>>>;

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

/// A receiver with its settings; secrets appear only as where they are read from.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiverView {
    pub name: String,
    /// `email`, `slack`, `pagerduty`, `discord` or `webhook`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The non-secret settings; each secret as `{"file": PATH}` or `{"env": VAR}`, never
    /// its value.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// `config` (the configuration file; read-only here) or `api` (defined through this
    /// API).
    pub origin: String,
    /// Whether notifications are being sent through it. An API receiver that could not be
    /// loaded at startup (say, its secret file is gone) is not, until it is changed.
    pub active: bool,
    /// When an API receiver was last changed.
    pub updated_ms: Option<i64>,
}

/// Where a secret is read from (never the secret itself).
fn secret_ref(s: &SecretRef) -> Value {
    match (&s.file, &s.env) {
        (Some(f), None) => json!({ "file": f }),
        (None, Some(e)) => json!({ "env": e }),
        _ => json!("redacted"),
    }
}

fn receiver_settings(raw: &ReceiverConfigRaw) -> Value {
    use crate::notify::email::TlsMode;
    match raw {
        ReceiverConfigRaw::Email(c) => json!({
            "host": c.host,
            "port": c.port,
            "tls": c.tls.map(|t| match t {
                TlsMode::Starttls => "starttls",
                TlsMode::Tls => "tls",
                TlsMode::None => "none",
            }),
            "username": c.username,
            "password": c.password.as_ref().map(secret_ref),
            "from": c.from,
            "to": c.to,
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::Slack(c) => json!({
            "webhook_url": secret_ref(&c.webhook_url),
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::PagerDuty(c) => json!({
            "routing_key": secret_ref(&c.routing_key),
            "url": c.url,
            "source": c.source,
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::Discord(c) => json!({
            "webhook_url": secret_ref(&c.webhook_url),
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::Webhook(c) => json!({
            "url": c.url,
            "secret": secret_ref(&c.secret),
            "timeout_secs": c.timeout_secs,
        }),
    }
}

fn config_view(set: &ReceiverConfigs, raw: &ReceiverConfigRaw) -> ReceiverView {
    ReceiverView {
        name: raw.name().to_owned(),
        kind: raw.kind().to_owned(),
        settings: receiver_settings(raw),
        origin: "config".to_owned(),
        active: set
            .dispatcher
            .as_ref()
            .is_none_or(|d| d.is_running(raw.name())),
        updated_ms: None,
    }
}

fn api_view(set: &ReceiverConfigs, s: &StoredReceiver) -> ReceiverView {
    let (kind, settings) = match s.raw() {
        Ok(raw) => (raw.kind().to_owned(), receiver_settings(&raw)),
        Err(_) => ("unknown".to_owned(), Value::Null),
    };
    ReceiverView {
        name: s.name.clone(),
        kind,
        settings,
        origin: "api".to_owned(),
        active: set
            .dispatcher
            .as_ref()
            .is_some_and(|d| d.is_running(&s.name)),
        updated_ms: Some(s.updated_ms),
    }
}

async fn read_api_receiver(
    state: &ApiState,
    name: String,
) -> Result<Option<StoredReceiver>, ApiError> {
    state
        .db
        .read(move |r| r.run(|c| stored_receivers::get(c, &name)))
        .await
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
    caller.require_global(Permission::ReceiversWrite)?;
    let set = receiver_configs(receivers)?;
    let stored = state.db.read(|r| r.run(stored_receivers::list)).await?;
    let mut out: Vec<ReceiverView> = set.list.iter().map(|r| config_view(&set, r)).collect();
    out.extend(
        stored
            .iter()
            .filter(|s| !set.list.iter().any(|r| r.name() == s.name))
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
    caller.require_global(Permission::ReceiversWrite)?;
    let set = receiver_configs(receivers)?;
    if let Some(raw) = set.list.iter().find(|r| r.name() == name) {
        return Ok(Json(config_view(&set, raw)));
    }
    read_api_receiver(&state, name)
        .await?
        .map(|s| Json(api_view(&set, &s)))
        .ok_or(ApiError::NotFound)
}

/// Longest receiver name defined through the API.
const RECEIVER_NAME_MAX: usize = 64;

fn check_receiver_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= RECEIVER_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "name: 1 to {RECEIVER_NAME_MAX} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
        )))
    }
}

/// A receiver definition from a JSON body: an object in the form of a `[[receiver]]`
/// table, with `type`. Its `name`, when given, must be `name` (the path's). Each secret
/// must be a reference (`{"file": PATH}` or `{"env": VAR}`): a value is refused without
/// being repeated in the answer.
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
            return Err(ApiError::bad(format!(
                "name: the body's name must be the path's ({name:?})"
            )))
        }
        (None, Some(Value::String(_))) => {}
        (None, _) => return Err(ApiError::bad("name: required (a string)")),
    }
    if let Some(Value::String(n)) = obj.get("name") {
        check_receiver_name(n)?;
    }
    const KINDS: &[&str] = &["email", "slack", "pagerduty", "discord", "webhook"];
    let kind = match obj.get("type") {
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => k.clone(),
        _ => return Err(ApiError::bad(format!("type: one of {}", KINDS.join(", ")))),
    };
    for field in ReceiverConfigRaw::secret_fields(&kind) {
        match obj.get(*field) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(ApiError::bad(format!(
                    "{field}: a secret is given as {{\"file\": PATH}} (relative to the \
                     collector's api_secret_dir) or {{\"env\": VAR}}, never as a value"
                )))
            }
        }
    }
    serde_json::from_value(body).map_err(|e| ApiError::bad(format!("invalid receiver: {e}")))
}

/// Validates, stores and starts an API receiver.
async fn store_receiver(
    state: &ApiState,
    set: &ReceiverConfigs,
    raw: ReceiverConfigRaw,
    create_only: bool,
) -> Result<(StatusCode, Json<ReceiverView>), ApiError> {
    let (secrets, dispatcher) = changeable(set)?;
    let name = raw.name().to_owned();
    if set.list.iter().any(|r| r.name() == name) {
        return Err(from_config_conflict(&name));
    }
    // Reads secret files and builds an HTTP client: blocking work. The reason of a
    // failure names the field and reference, never a secret.
    let to_build = raw.clone();
    let receiver = tokio::task::spawn_blocking(move || secrets.build(to_build))
        .await
        .map_err(|e| ApiError::Internal(format!("receiver setup task failed: {e}")))?
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let status = {
        let _changes = dispatcher.lock_changes().await;
        let status = match state
            .db
            .store
            .put_receiver(raw, create_only, now_ms())
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
/// joins the default route when `[alerting] default_receivers` is unset). Its secrets are
/// references only — `{"file": PATH}` inside the collector's `api_secret_dir` or
/// `{"env": "MCPWATCH_SECRET_..."}` — and must resolve (400 with the reason otherwise).
#[utoipa::path(post, path = "/receivers",
    request_body(content = Object, description = "A receiver definition with `type` and `name`, as a `[[receiver]]` table"),
    responses((status = 201, body = ReceiverView, description = "Created and in effect"),
              (status = 400, body = ErrorBody, description = "Invalid definition, a secret given as a value, or a secret reference that does not resolve"),
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
    caller.require_global(Permission::ReceiversWrite)?;
    let set = receiver_configs(receivers)?;
    let raw = parse_receiver_body(body, None)?;
    caller.note(format!("receiver {}", raw.name()));
    store_receiver(&state, &set, raw, true).await
}

/// Creates or replaces a receiver defined through the API, in effect at once (queued
/// notifications go out with the new definition; a send in progress finishes first).
/// Validated as for POST. Configured receivers cannot be changed here (409).
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
    caller.require_global(Permission::ReceiversWrite)?;
    caller.note(format!("receiver {name}"));
    let set = receiver_configs(receivers)?;
    if set.list.iter().any(|r| r.name() == name) {
        return Err(from_config_conflict(&name));
    }
    let raw = parse_receiver_body(body, Some(&name))?;
    store_receiver(&state, &set, raw, false).await
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
    caller.require_global(Permission::ReceiversWrite)?;
    caller.note(format!("receiver {name}"));
    let set = receiver_configs(receivers)?;
    if set.list.iter().any(|r| r.name() == name) {
        return Err(from_config_conflict(&name));
    }
    let (_, dispatcher) = changeable(&set)?;
    let _changes = dispatcher.lock_changes().await;
    match state.db.store.delete_receiver(&name, now_ms()).await? {
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
    caller.require_global(Permission::ReceiversWrite)?;
    caller.note(format!("receiver {name}"));
    let set = receiver_configs(receivers)?;
    let configured = set.list.iter().find(|r| r.name() == name).cloned();
    let build: Box<dyn FnOnce() -> Result<Receiver, notify::NotifyConfigError> + Send> =
        match configured {
            Some(raw) => {
                let base = set.base_dir.clone();
                Box::new(move || Receiver::from_raw(raw, &base))
            }
            None => {
                let stored = read_api_receiver(&state, name.clone())
                    .await?
                    .ok_or(ApiError::NotFound)?;
                let (secrets, _) = changeable(&set)?;
                Box::new(move || {
                    let raw = stored.raw().map_err(|reason| notify::NotifyConfigError {
                        receiver: stored.name.clone(),
                        reason,
                    })?;
                    secrets.build(raw)
                })
            }
        };
    // Reads secret files and builds an HTTP client: blocking work.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn api_alerts_openapi_paths_and_schemas() {
        let (_, doc) = OpenApiRouter::<ApiState>::new()
            .merge(routes())
            .split_for_parts();
        let v = serde_json::to_value(&doc).expect("document serializes");
        let paths = v["paths"].as_object().expect("paths");
        for (path, methods) in [
            ("/alerts", &["get"][..]),
            ("/alerts/history", &["get"]),
            ("/alerts/{fingerprint}", &["get"]),
            ("/alerts/{fingerprint}/ack", &["post"]),
            ("/silences", &["get", "post"]),
            ("/silences/{id}", &["get", "delete"]),
            ("/rules", &["get"]),
            ("/rules/dry-run", &["post"]),
            ("/rules/{name}", &["get", "put", "delete"]),
            ("/receivers", &["get", "post"]),
            ("/receivers/{name}", &["get", "put", "delete"]),
            ("/receivers/{name}/test", &["post"]),
        ] {
            for m in methods {
                let op = &paths[path][*m];
                assert!(op.is_object(), "{m} {path} missing");
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
            }
        }
        assert_eq!(paths.len(), 12, "{:?}", paths.keys().collect::<Vec<_>>());
        // Every schema referenced is defined (ErrorBody comes from the API's base document).
        let mut found = Vec::new();
        refs(&v, &mut found);
        let schemas = &v["components"]["schemas"];
        for r in found {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                schemas.get(name).is_some() || matches!(name, "ErrorBody" | "ErrorDetail"),
                "unresolved {r}"
            );
        }
        let rule = &schemas["RawRule"]["properties"];
        assert_eq!(rule["for"]["type"][0], "string", "{rule}");
    }
}
