//! `/federate`: the latest value of every series of every host, in the Prometheus text
//! exposition format (0.0.4), for an existing Prometheus to scrape the fleet through the
//! collector. Each sample carries the series' labels plus `host` (the agent id; a series'
//! own `host` label becomes `exported_host`) and its own timestamp. Only samples from the
//! last five minutes count, so a host that stopped reporting drops out (its samples carry
//! their own timestamps, so Prometheus stops returning them after its 5-minute lookback
//! rather than through staleness markers). Optional bearer auth (`[api] federation_token`),
//! no user involved; not under `/api/v1` and not audited.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error;
use super::error::ApiError;
use super::metrics_api::output_labels;
use super::ApiState;
use crate::auth::credential::constant_time_eq;
use crate::notify::Secret;
use crate::store::query::series::SeriesRecord;
use mcpwatch_common::exposition::{valid_label_name, valid_metric_name};
use mcpwatch_common::http_server::bearer_token;

/// A series' newest sample must be at most this old to be exported.
pub const FRESH_MS: i64 = 5 * 60_000;
/// Samples stamped further ahead of the collector's clock than this are left out.
const FUTURE_MS: i64 = 60_000;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn routes() -> Router<ApiState> {
    Router::new().route("/federate", get(federate))
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    bearer_token(headers).is_some_and(|presented| constant_time_eq(presented, token))
}

/// The scrape-token rule of `/federate` and `/metrics`: with `[api] federation_token` set,
/// a request without that bearer token gets this 401; without one, `None` (allowed).
pub fn require_scrape_token(headers: &HeaderMap, token: Option<&Secret>) -> Option<Response> {
    let token = token?;
    if authorized(headers, token.expose()) {
        return None;
    }
    let mut resp = error::plain(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "a valid bearer token is required",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mcpwatch federation\""),
    );
    Some(resp)
}

async fn federate(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(denied) = require_scrape_token(&headers, state.settings.federation_token.as_ref()) {
        return denied;
    }
    let now = crate::now_ms();
    let read = state
        .store
        .fresh_series(now.saturating_sub(FRESH_MS), now.saturating_add(FUTURE_MS))
        .await;
    match read {
        Ok((series, latest)) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            render(&series, &latest),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A label value in the text format: backslash, double quote and newline escaped.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as Prometheus parses it (`NaN`, `+Inf`, `-Inf`, Go-compatible floats).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Debug keeps the shortest round-trip digits and switches to exponent notation for
        // very large and small magnitudes (`1e300`), which Go's ParseFloat reads.
        format!("{v:?}")
    }
}

/// The type a family is announced with: `_total` names are counters; names and labels the
/// format reserves for histograms and summaries stay untyped; everything else is a gauge.
fn family_type(name: &str, samples: &[(String, f64, i64)]) -> &'static str {
    if name.ends_with("_total") {
        "counter"
    } else if name.ends_with("_bucket")
        || name.ends_with("_count")
        || name.ends_with("_sum")
        || samples
            .iter()
            .any(|(l, _, _)| l.contains("le=\"") || l.contains("quantile=\""))
    {
        "untyped"
    } else {
        "gauge"
    }
}

/// The exposition of the latest samples of `series`; series with invalid metric or label
/// names are left out.
pub fn render(series: &[SeriesRecord], latest: &HashMap<i64, (i64, f64)>) -> String {
    // name → [(rendered label set, value, ts)]
    let mut families: BTreeMap<&str, Vec<(String, f64, i64)>> = BTreeMap::new();
    for s in series {
        let Some(&(ts, v)) = latest.get(&s.id) else {
            continue;
        };
        if !valid_metric_name(&s.name) {
            continue;
        }
        if !s.labels.is_empty()
            && crate::alert::route::parse_matchers(&format!("{{{}}}", s.labels)).is_err()
        {
            continue;
        }
        let labels = output_labels(&s.agent_id, &s.labels);
        if !labels.keys().all(|k| valid_label_name(k)) {
            continue;
        }
        let mut set = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                set.push(',');
            }
            set.push_str(k);
            set.push_str("=\"");
            escape_label_value(v, &mut set);
            set.push('"');
        }
        families.entry(&s.name).or_default().push((set, v, ts));
    }
    let mut out = String::new();
    for (name, mut samples) in families {
        samples.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str(&format!(
            "# HELP {name} Latest value per host, federated by the mcpwatch collector.\n\
             # TYPE {name} {}\n",
            family_type(name, &samples)
        ));
        for (set, v, ts) in samples {
            out.push_str(&format!("{name}{{{set}}} {} {ts}\n", format_value(v)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mcpwatch_common::wire::SeriesKey;

    use super::*;

    fn rec(id: i64, agent: &str, name: &str, labels: &[(&str, &str)]) -> SeriesRecord {
        SeriesRecord {
            id,
            host_id: 1,
            agent_id: agent.into(),
            name: name.into(),
            labels: SeriesKey::new(name, labels).labels_text(),
        }
    }

    #[test]
    fn api_federation_renders_families_with_host_and_escaping() {
        let series = vec![
            rec(1, "web-1", "mcpwatch_host_load1", &[]),
            rec(2, "web-2", "mcpwatch_host_load1", &[]),
            rec(3, "web-1", "x_total", &[("path", "a\"b\\c\nd")]),
            rec(4, "web-1", "bad-name", &[]),
            rec(5, "web-1", "not_recent", &[]),
            rec(6, "web-1", "weird", &[]),
        ];
        let latest: HashMap<i64, (i64, f64)> = [
            (1, (1000, 0.5)),
            (2, (1001, 1e300)),
            (3, (1002, 7.0)),
            (4, (1003, 1.0)),
            (6, (1004, f64::NEG_INFINITY)),
        ]
        .into_iter()
        .collect();
        let text = render(&series, &latest);
        let expected = "# HELP mcpwatch_host_load1 Latest value per host, federated by the mcpwatch collector.\n\
# TYPE mcpwatch_host_load1 gauge\n\
mcpwatch_host_load1{host=\"web-1\"} 0.5 1000\n\
mcpwatch_host_load1{host=\"web-2\"} 1e300 1001\n\
# HELP weird Latest value per host, federated by the mcpwatch collector.\n\
# TYPE weird gauge\n\
weird{host=\"web-1\"} -Inf 1004\n\
# HELP x_total Latest value per host, federated by the mcpwatch collector.\n\
# TYPE x_total counter\n\
x_total{host=\"web-1\",path=\"a\\\"b\\\\c\\nd\"} 7.0 1002\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn api_federation_names_and_values() {
        assert!(valid_metric_name("a:b_c9"));
        assert!(!valid_metric_name("9a"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("_a"));
        assert!(!valid_label_name("__a"));
        assert!(!valid_label_name("a:b"));
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(3.0), "3.0");
        assert_eq!(format_value(1e-7), "1e-7");
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "t"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert!(authorized(&h, "t"));
        assert!(!authorized(&h, "u"));
    }
}
