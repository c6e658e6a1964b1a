//! Prometheus exposition formats: OpenMetrics for scrapers that ask for it (Prometheus does),
//! the Prometheus text format 0.0.4 for everyone else (curl, `promtool check metrics`, which
//! rejects OpenMetrics counter families). Both endpoints (agent, collector) negotiate here.

/// Content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Picks the format from the request's `Accept` values: returns the content type and body
/// for an exposition encoded as OpenMetrics.
pub fn negotiate<'a>(
    accept: impl IntoIterator<Item = &'a str>,
    openmetrics: String,
) -> (&'static str, String) {
    if accept
        .into_iter()
        .any(|v| v.contains("application/openmetrics-text"))
    {
        (OPENMETRICS_CONTENT_TYPE, openmetrics)
    } else {
        (
            PROMETHEUS_TEXT_CONTENT_TYPE,
            openmetrics_to_prometheus_text(&openmetrics),
        )
    }
}

/// The same exposition in the Prometheus text format. For what prometheus-client emits, the
/// formats differ only in counter families (OpenMetrics names them without `_total` in
/// HELP/TYPE) and in the closing `# EOF`.
pub fn openmetrics_to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + counters.len() * 16);
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_in_help_and_type_and_eof_goes() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 3\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = openmetrics_to_prometheus_text(om);
        assert!(text.contains("# HELP x_requests_total Requests."));
        assert!(text.contains("# TYPE x_requests_total counter"));
        assert!(text.contains("# TYPE g gauge"));
        assert!(!text.contains("# EOF"));
        let (ct, _) = negotiate(["application/openmetrics-text;version=1.0.0"], om.into());
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        let (ct, body) = negotiate(["*/*"], om.into());
        assert_eq!(ct, PROMETHEUS_TEXT_CONTENT_TYPE);
        assert!(!body.contains("# EOF"));
    }
}
