//! Alert rules over the API: the effective set with its origin, changes through the API
//! applied live, and dry runs. A rule without an owner scope is fleet-wide: reading it
//! needs an unscoped `alerts:read` (or `rules:write`), changing it an unscoped
//! `rules:write`. A team's rule (`owner = '{team="a"}'`) is read and changed by whoever
//! holds those permissions on a selector the owner scope is within.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::scope::{definition_owner, owner_check, require_access, Access};
use super::ApiState;
use crate::alert::dry_run::{dry_run, DryRun};
use crate::alert::{MemorySource, OwnerScope, RawRule, Rule, Series};
use crate::alerting::{validate_api_rule, DryRunReply, RuleDeleted, DRY_RUN_LIMIT};
use crate::auth::Permission;
use crate::now_ms;
use crate::store::query::recent::RecentSeries;
use crate::store::query::rules::RuleRow;

/// Longest look-back a dry run may read from the stored samples.
const MAX_DRY_RUN_SPAN_MS: i64 = 86_400_000;
/// Most metrics a dry run of a `__name__` selector reads from the stored samples.
const MAX_DRY_RUN_METRICS: usize = 200;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_rules))
        .routes(routes!(dry_run_rule))
        .routes(routes!(get_rule, put_rule, delete_rule))
}

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

/// Whether the caller may read a rule with this owner.
fn may_read(caller: &Caller, owner: Option<&OwnerScope>) -> bool {
    caller.principal.covers_owner(Permission::AlertsRead, owner)
        || caller.principal.covers_owner(Permission::RulesWrite, owner)
}

/// `alerts:read` or `rules:write` for some scope: enough to list (the list is filtered).
fn require_some_read(caller: &Caller) -> Result<(), ApiError> {
    if caller.principal.has(Permission::RulesWrite) {
        return Ok(());
    }
    caller.require(Permission::AlertsRead)
}

fn stored_rule_refused(caller: &Caller) -> ApiError {
    caller.deny();
    caller.note("the stored rule's owner scope is outside the caller's rules:write");
    ApiError::Forbidden("rules:write for the stored rule's owner scope".into())
}

fn rule_view(r: RuleRow) -> RuleView {
    let enabled = r.definition.get("enabled").and_then(Value::as_bool) != Some(false);
    RuleView {
        name: r.name,
        origin: r.origin,
        enabled,
        definition: r.definition,
        updated_ms: r.updated_ms,
    }
}

/// The rules in effect, with their origin: every rule for an unscoped `alerts:read`; for a
/// team's grants, the rules owned inside their selectors (a fleet-wide rule's selectors
/// and thresholds describe every team's hosts).
#[utoipa::path(get, path = "/rules",
    responses((status = 200, body = Vec<RuleView>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)),
    tag = "rules")]
async fn list_rules(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<RuleView>>, ApiError> {
    require_some_read(&caller)?;
    let rows = state.store.rules().await?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| may_read(&caller, definition_owner(&r.definition).as_ref()))
            .map(rule_view)
            .collect(),
    ))
}

async fn read_rule(state: &ApiState, name: String) -> Result<Option<RuleRow>, ApiError> {
    Ok(state.store.rule(name).await?)
}

/// One rule (read as in the list; one out of the caller's sight is 404).
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
    require_some_read(&caller)?;
    let row = read_rule(&state, name).await?.ok_or(ApiError::NotFound)?;
    let visible = may_read(&caller, definition_owner(&row.definition).as_ref());
    require_access(&caller, Access::of_owned(true, visible))?;
    Ok(Json(rule_view(row)))
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
                return Err(ApiError::unprocessable(format!(
                    "name: the body's name must be the path's ({name:?})"
                )))
            }
        }
    } else if !obj.contains_key("name") {
        obj.insert("name".into(), Value::String("dry_run".into()));
    }
    serde_json::from_value(body).map_err(|e| ApiError::unprocessable(format!("invalid rule: {e}")))
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
    caller.require(Permission::RulesWrite)?;
    caller.note(format!("rule {name}"));
    let raw = parse_rule_body(body, Some(&name))?;
    validate_api_rule(&raw).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let owner = OwnerScope::parse(raw.owner.as_deref().unwrap_or_default())
        .map_err(ApiError::unprocessable)?;
    caller.require_owner(Permission::RulesWrite, owner.as_ref())?;
    if !state
        .alerting
        .put_rule(raw, owner_check(&caller, Permission::RulesWrite), now_ms())
        .await?
    {
        return Err(stored_rule_refused(&caller));
    }
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
    caller.require(Permission::RulesWrite)?;
    caller.note(format!("rule {name}"));
    match state
        .alerting
        .delete_rule(&name, owner_check(&caller, Permission::RulesWrite), now_ms())
        .await?
    {
        RuleDeleted::Missing => Err(ApiError::NotFound),
        RuleDeleted::Refused => Err(stored_rule_refused(&caller)),
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
    /// Series the rule selected (groups of series, with `sum_by` or `quantile`).
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
    caller.require(Permission::RulesWrite)?;
    let raw = parse_rule_body(body, None)?;
    let rule = Rule::validate(raw).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    caller.require_owner(Permission::RulesWrite, rule.owner.as_ref())?;
    let now = now_ms();
    let opts = match state.alerting.dry_run_rule(rule.clone(), now).await? {
        DryRunReply::Done(d) => return Ok(Json(dry_run_view(d, "window"))),
        DryRunReply::NotInWindow(opts) => opts,
    };
    // No running rule reads these metrics (for that long): read the stored samples.
    let span = rule
        .window_ms
        .max(rule.absent_for_ms.unwrap_or(0))
        .saturating_add(opts.grace_ms);
    if span > MAX_DRY_RUN_SPAN_MS {
        return Err(ApiError::unprocessable(
            "a dry run over stored samples looks back at most 1d (window or absent_for plus grace)",
        ));
    }
    let metrics = match &rule.selector.name {
        Some(pattern) => {
            let names: Vec<String> = state
                .store
                .metric_names(100_000)
                .await?
                .into_iter()
                .filter(|m| pattern.matches_value(m))
                .collect();
            if names.len() > MAX_DRY_RUN_METRICS {
                return Err(ApiError::unprocessable(format!(
                    "the selector matches {} metrics; a dry run over stored samples reads at \
                     most {MAX_DRY_RUN_METRICS}",
                    names.len()
                )));
            }
            names
        }
        None => std::iter::once(&rule.selector)
            .chain(rule.divide_by.iter())
            .map(|s| s.metric.clone())
            .collect(),
    };
    let rows = state
        .store
        .recent_samples(metrics, now.saturating_sub(span), now)
        .await?;
    let mut src = memory_source(rows);
    if rule.owner.is_some() {
        // An owned rule reads only its hosts' series: the source needs their labels.
        for (host, labels) in state.store.host_labels().await? {
            if let Ok(l) = serde_json::from_str(&labels) {
                src.set_host_labels(&host, l);
            }
        }
    }
    // Evaluating a day of samples is CPU work: off the async runtime.
    let d = tokio::task::spawn_blocking(move || dry_run(rule, opts, &src, now, DRY_RUN_LIMIT))
        .await
        .map_err(|e| ApiError::Internal(format!("dry run failed: {e}")))?;
    Ok(Json(dry_run_view(d, "store")))
}

/// The stored samples read for a dry run, as a source for the alert engine.
fn memory_source(rows: Vec<RecentSeries>) -> MemorySource {
    let mut out = MemorySource::new();
    for r in rows {
        out.push_series(
            &r.metric,
            Series {
                labels: r.labels,
                samples: r.samples,
            },
        );
    }
    out
}
