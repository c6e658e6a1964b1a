//! Metrics history: series search (by host, name and a label selector) and `query_range`,
//! which picks the storage tier itself — raw samples for short ranges while raw data still
//! covers them, 1-minute rollups up to a week, 1-hour rollups beyond — and aggregates to the
//! requested step, with a cap on the points one answer may hold.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::paging::{Page, PageQuery};
use super::scope::{authorized_host, visible_host_ids};
use super::server_state::series_labels;
use super::ApiState;
use crate::alert::counter::CounterIncrease;
use crate::alert::route::{matches_all, parse_matchers};
use crate::alert::{Labels, Matcher};
use crate::auth::Permission;
use crate::store::query::series::{RangeSpec, RangeTier, SeriesRecord, StepAgg, TierFloors};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_series))
        .routes(routes!(query_range))
        .layer(super::gzip())
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// Ranges up to this long are read raw (while raw data still covers their start).
pub const RAW_MAX_SPAN_MS: i64 = 6 * HOUR_MS;
/// Ranges up to this long are read from the 1-minute rollups (while they cover the start).
pub const MINUTE_MAX_SPAN_MS: i64 = 7 * 24 * HOUR_MS;
/// One answer holds at most this many times `max_points` points over all its series.
pub const TOTAL_POINTS_FACTOR: usize = 10;
const MAX_NAME: usize = 256;
const MAX_MATCH: usize = 4096;

/// The labels a series is shown and matched with: its own plus `host` (a series label
/// `host` of its own becomes `exported_host`, as Prometheus does on a scrape).
pub(crate) fn output_labels(agent_id: &str, labels_text: &str) -> Labels {
    let mut l = series_labels(labels_text);
    if let Some(own) = l.remove("host") {
        l.insert("exported_host".to_owned(), own);
    }
    l.insert("host".to_owned(), agent_id.to_owned());
    l
}

fn parse_match(text: Option<&str>) -> Result<Vec<Matcher>, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(Vec::new()),
        Some(t) if t.len() > MAX_MATCH => Err(ApiError::unprocessable("match is too long")),
        Some(t) => parse_matchers(t).map_err(|e| ApiError::unprocessable(format!("match: {e}"))),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::unprocessable("name must be 1 to 256 characters"));
    }
    Ok(())
}

/// Start of the bucket of width `w` holding `ts`.
fn bucket(ts: i64, w: i64) -> i64 {
    ts.saturating_sub(ts.rem_euclid(w))
}

/// Whether a finer tier still covers a range from `start`. Retention deletes the finer tiers
/// first, and every coarser bucket is folded from the same samples as the finer ones: once
/// the coarser tier holds data older than the finer tier's oldest (in coarse buckets), the
/// finer tier has been pruned, and it covers only ranges starting where it is complete.
fn covers_start(
    start: i64,
    oldest: Option<i64>,
    complete: Option<i64>,
    coarser: Option<i64>,
    w: i64,
) -> bool {
    match (oldest, coarser) {
        (Some(o), Some(c)) if c < bucket(o, w) => complete.is_some_and(|f| start >= f),
        _ => true,
    }
}

/// Whether the raw samples of a host reach back to `start` complete (not cut by
/// retention), by the floors of some of its series.
pub(crate) fn raw_covers(start: i64, f: TierFloors) -> bool {
    covers_start(start, f.raw_oldest, f.raw_complete, f.minute, MINUTE_MS)
}

/// The tier a range is read from: raw up to 6 h, 1 m up to 7 d, 1 h beyond, each only
/// while its data still reaches back to the range's start.
pub fn choose_tier(start_ms: i64, end_ms: i64, f: TierFloors) -> RangeTier {
    let span = end_ms.saturating_sub(start_ms);
    if span <= RAW_MAX_SPAN_MS && raw_covers(start_ms, f) {
        RangeTier::Raw
    } else if span <= MINUTE_MAX_SPAN_MS
        && covers_start(start_ms, f.minute, f.minute, f.hour, HOUR_MS)
    {
        RangeTier::Minute
    } else {
        RangeTier::Hour
    }
}

/// One series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    pub id: i64,
    /// Agent id of the host.
    pub host: String,
    pub name: String,
    /// The series' labels plus `host`.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Only this host (agent id).
    pub host: Option<String>,
    /// Only this metric name.
    pub name: Option<String>,
    /// Label selector, e.g. `{cpu="total"}` (`=`, `!=`, `=~`, `!~`; `host` matches the agent).
    #[serde(rename = "match")]
    #[param(rename = "match")]
    pub matchers: Option<String>,
    /// Items per page (default 100, at most the server's `max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

/// Series of the hosts the caller may read metrics of, in id order.
#[utoipa::path(get, path = "/series", params(SeriesQuery),
    responses((status = 200, body = Page<SeriesView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    tag = "metrics")]
async fn list_series(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<SeriesQuery>,
) -> Result<Json<Page<SeriesView>>, ApiError> {
    caller.require(Permission::MetricsRead)?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = page.limit(state.settings.max_page)?;
    if let Some(n) = &query.name {
        check_name(n)?;
    }
    let matchers = parse_match(query.matchers.as_deref())?;
    let hosts = match &query.host {
        Some(agent) => Some(vec![
            authorized_host(&state, &caller, Permission::MetricsRead, agent)
                .await?
                .id,
        ]),
        None => visible_host_ids(&state, &caller, Permission::MetricsRead).await?,
    };
    let after = query.cursor.unwrap_or(0);
    let name = query.name;
    let mut rows = state
        .store
        .series_page(hosts, name, after, limit, move |s| {
            matchers.is_empty() || matches_all(&matchers, &output_labels(&s.agent_id, &s.labels))
        })
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|s| s.id)
    } else {
        None
    };
    Ok(Json(Page {
        items: rows
            .into_iter()
            .map(|s| SeriesView {
                labels: output_labels(&s.agent_id, &s.labels),
                id: s.id,
                host: s.agent_id,
                name: s.name,
            })
            .collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// The host (agent id).
    pub host: String,
    /// The metric name.
    pub name: String,
    /// Label selector narrowing the series, e.g. `{cpu="total"}`.
    #[serde(rename = "match")]
    #[param(rename = "match")]
    pub matchers: Option<String>,
    /// Range start, ms since the epoch (inclusive).
    pub start_ms: i64,
    /// Range end, ms since the epoch (inclusive); after `start_ms`.
    pub end_ms: i64,
    /// Width of each point's bucket in ms; `(end - start) / step + 1` may not exceed the
    /// server's `max_points`.
    pub step_ms: i64,
    /// `avg` (default), `min`, `max`, `sum` or `count` of the samples in each step, or
    /// `rate`: a counter's (`_total`) growth per second between the ends of consecutive
    /// steps, a drop counted as a reset (as Prometheus's `rate`).
    #[param(inline)]
    pub agg: Option<Agg>,
}

/// One series over the range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RangeSeries {
    pub name: String,
    /// The series' labels plus `host`.
    pub labels: BTreeMap<String, String>,
    /// `[bucket start ms, value]` for every step holding data (empty steps are left out;
    /// a value is null when undefined).
    #[schema(value_type = Vec<Vec<f64>>)]
    pub points: Vec<(i64, Option<f64>)>,
}

/// A `query_range` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RangeResponse {
    /// Where the data came from: `raw`, `1m` or `1h`.
    pub tier: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    pub agg: String,
    pub series: Vec<RangeSeries>,
}

/// How the samples of one step are combined.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Rate,
}

impl Agg {
    fn as_str(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::Rate => "rate",
        }
    }

    fn value(self, a: &StepAgg) -> Option<f64> {
        let v = match self {
            Agg::Avg => a.avg(),
            Agg::Min => a.min,
            Agg::Max => a.max,
            Agg::Sum => a.sum,
            Agg::Count => a.count as f64,
            // Across steps, not within one: see `rate_points`.
            Agg::Rate => f64::NAN,
        };
        v.is_finite().then_some(v)
    }
}

/// Checks a range and returns its number of steps.
pub fn range_steps(start: i64, end: i64, step: i64, max_points: usize) -> Result<usize, String> {
    if start < 0 {
        return Err("start_ms must not be negative".into());
    }
    if end <= start {
        return Err("end_ms must be after start_ms".into());
    }
    if step <= 0 {
        return Err("step_ms must be positive".into());
    }
    let steps = ((end - start) / step).saturating_add(1);
    match usize::try_from(steps) {
        Ok(n) if n <= max_points => Ok(n),
        _ => Err(format!(
            "{steps} points exceed the limit of {max_points}: raise step_ms or shorten the range"
        )),
    }
}

/// A metric of one host over time: the series of `name` on `host` that `match` selects,
/// aggregated per step from the tier the range calls for.
#[utoipa::path(get, path = "/query_range", params(RangeQuery),
    responses((status = 200, body = RangeResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    tag = "metrics")]
async fn query_range(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<RangeQuery>,
) -> Result<Json<RangeResponse>, ApiError> {
    caller.require(Permission::MetricsRead)?;
    let max_points = state.settings.max_points;
    let steps = range_steps(query.start_ms, query.end_ms, query.step_ms, max_points)
        .map_err(ApiError::Unprocessable)?;
    check_name(&query.name)?;
    let agg = query.agg.unwrap_or(Agg::Avg);
    let matchers = parse_match(query.matchers.as_deref())?;
    let host = authorized_host(&state, &caller, Permission::MetricsRead, &query.host).await?;
    let (host_id, agent_id) = (host.id, host.agent_id.clone());
    let (start_ms, end_ms, step_ms) = (query.start_ms, query.end_ms, query.step_ms);
    let name = query.name.clone();
    let total_cap = max_points.saturating_mul(TOTAL_POINTS_FACTOR);
    let series: Vec<SeriesRecord> = state
        .store
        .host_series(host_id, name, false)
        .await?
        .into_iter()
        .filter(|s| matches_all(&matchers, &output_labels(&s.agent_id, &s.labels)))
        .collect();
    if series.len().saturating_mul(steps) > total_cap {
        return Err(ApiError::Unprocessable(format!(
            "{} series × {steps} points exceed the limit of {total_cap}: narrow \
             match, raise step_ms or shorten the range",
            series.len()
        )));
    }
    let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
    let floors = state.store.tier_floors(host_id, ids.clone()).await?;
    let tier = choose_tier(start_ms, end_ms, floors);
    let spec = RangeSpec {
        host_id,
        start_ms,
        end_ms,
        step_ms,
        tier,
    };
    let mut data = state.store.series_range(spec, ids).await?;
    let series = series
        .into_iter()
        .map(|s| {
            let buckets = data.remove(&s.id).unwrap_or_default();
            RangeSeries {
                labels: output_labels(&agent_id, &s.labels),
                name: s.name,
                points: match agg {
                    Agg::Rate => rate_points(
                        buckets.iter().map(|(k, a)| (start_ms + k * step_ms, a)),
                        step_ms,
                    ),
                    _ => buckets
                        .iter()
                        .map(|(k, a)| (start_ms + k * step_ms, agg.value(a)))
                        .collect(),
                },
            }
        })
        .collect();
    Ok(Json(RangeResponse {
        tier: tier.as_str().to_owned(),
        start_ms,
        end_ms,
        step_ms,
        agg: agg.as_str().to_owned(),
        series,
    }))
}

/// A counter's rate per second for each step after the first with data: the growth from
/// the previous step's end to this one's (each step's largest value stands for its end, as
/// a counter only grows between resets), over the time between them. Resets count as in
/// Prometheus (`CounterIncrease`, the one counter arithmetic).
fn rate_points<'a>(
    steps: impl Iterator<Item = (i64, &'a StepAgg)>,
    step_ms: i64,
) -> Vec<(i64, Option<f64>)> {
    let mut counter = CounterIncrease::new(false);
    let mut out = Vec::new();
    let mut prev: Option<i64> = None;
    for (t, a) in steps {
        if a.count == 0 || !a.max.is_finite() {
            continue;
        }
        let before = counter.increase;
        // The step's end, so the time between two steps is a whole number of steps.
        counter.push(t + step_ms, a.max, true);
        if let Some(p) = prev {
            let seconds = (t - p) as f64 / 1000.0;
            out.push((
                t,
                (seconds > 0.0).then(|| (counter.increase - before) / seconds),
            ));
        }
        prev = Some(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_metrics_rate_is_growth_per_second_between_steps_with_resets() {
        let agg = |v: f64| StepAgg {
            min: v,
            max: v,
            sum: v,
            count: 1,
        };
        // 10 s steps: 100 → 150 (+5/s), gap of one step, → 250 (+100 over 20 s = 5/s),
        // reset to 30 (+30 over 10 s = 3/s).
        let steps = [
            (0, agg(100.0)),
            (10_000, agg(150.0)),
            (30_000, agg(250.0)),
            (40_000, agg(30.0)),
        ];
        let points = rate_points(steps.iter().map(|(t, a)| (*t, a)), 10_000);
        assert_eq!(
            points,
            vec![
                (10_000, Some(5.0)),
                (30_000, Some(5.0)),
                (40_000, Some(3.0))
            ]
        );
        assert!(rate_points(std::iter::empty(), 10_000).is_empty());
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn api_metrics_tier_follows_span_and_retention() {
        let month = NOW - 30 * 24 * HOUR_MS - (NOW - 30 * 24 * HOUR_MS).rem_euclid(HOUR_MS);
        let all = TierFloors {
            raw_oldest: Some(month + 5_000),
            raw_complete: Some(month + 15_000),
            minute: Some(month),
            hour: Some(month),
        };
        assert_eq!(choose_tier(NOW - HOUR_MS, NOW, all), RangeTier::Raw);
        assert_eq!(choose_tier(NOW - 6 * HOUR_MS, NOW, all), RangeTier::Raw);
        assert_eq!(choose_tier(NOW - 7 * HOUR_MS, NOW, all), RangeTier::Minute);
        assert_eq!(
            choose_tier(NOW - 7 * 24 * HOUR_MS, NOW, all),
            RangeTier::Minute
        );
        assert_eq!(
            choose_tier(NOW - 8 * 24 * HOUR_MS, NOW, all),
            RangeTier::Hour
        );
        // Raw pruned to the last 2 h (the rollups reach further back): a 3 h range that
        // starts before the raw floor comes from the 1 m tier.
        let pruned = TierFloors {
            raw_oldest: Some(NOW - 2 * HOUR_MS - 3_000),
            raw_complete: Some(NOW - 2 * HOUR_MS),
            ..all
        };
        assert_eq!(choose_tier(NOW - HOUR_MS, NOW, pruned), RangeTier::Raw);
        assert_eq!(
            choose_tier(NOW - 3 * HOUR_MS, NOW, pruned),
            RangeTier::Minute
        );
        // 1 m pruned to one day: a 2-day range needs the hour tier.
        let pruned = TierFloors {
            raw_oldest: Some(NOW - HOUR_MS),
            raw_complete: Some(NOW - HOUR_MS),
            minute: Some(NOW - 24 * HOUR_MS),
            ..all
        };
        assert_eq!(
            choose_tier(NOW - 48 * HOUR_MS, NOW, pruned),
            RangeTier::Hour
        );
        assert_eq!(
            choose_tier(NOW - 12 * HOUR_MS, NOW, pruned),
            RangeTier::Minute
        );
        // A young host whose first batch spans half an hour (nothing pruned anywhere): raw,
        // whatever the start.
        let young = TierFloors {
            raw_oldest: Some(NOW - 30 * 60_000),
            raw_complete: Some(NOW - 60_000),
            minute: Some(bucket(NOW - 30 * 60_000, MINUTE_MS)),
            hour: Some(bucket(NOW - 30 * 60_000, HOUR_MS)),
        };
        assert_eq!(choose_tier(NOW - 5 * HOUR_MS, NOW, young), RangeTier::Raw);
        assert_eq!(
            choose_tier(NOW - 2 * 24 * HOUR_MS, NOW, young),
            RangeTier::Minute
        );
        assert_eq!(
            choose_tier(NOW - HOUR_MS, NOW, TierFloors::default()),
            RangeTier::Raw
        );
    }

    #[test]
    fn api_metrics_range_validation_and_cap() {
        assert_eq!(range_steps(0, 10_000, 1_000, 11), Ok(11));
        assert!(range_steps(0, 10_000, 1_000, 10).is_err());
        assert!(range_steps(10, 10, 1, 100).is_err());
        assert!(range_steps(10, 5, 1, 100).is_err());
        assert!(range_steps(0, 5, 0, 100).is_err());
        assert!(range_steps(-5, 5, 1, 100).is_err());
        assert!(range_steps(0, i64::MAX, 1, usize::MAX).is_ok());
    }

    #[test]
    fn api_metrics_output_labels_add_host() {
        let key = mcpwatch_common::wire::SeriesKey::new("m", &[("host", "x"), ("cpu", "0")]);
        let l = output_labels("web-1", &key.labels_text());
        assert_eq!(l.get("host").map(String::as_str), Some("web-1"));
        assert_eq!(l.get("exported_host").map(String::as_str), Some("x"));
        assert_eq!(l.get("cpu").map(String::as_str), Some("0"));
    }
}
