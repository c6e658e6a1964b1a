//! What a threshold rule compares: one value per group of series. The rule's function is
//! applied to each selected series over the window; the values of a group (the series
//! sharing `host` and the `sum_by` labels, or each series alone) are summed, or for a
//! quantile rule merged bucket by bucket and turned into the quantile; `divide_by` is
//! grouped the same way and joined on the group's labels, with `min_denominator` as a floor.

use std::collections::BTreeMap;

use super::histogram::{histogram_quantile, parse_le};
use super::rule::Rule;
use super::selector::{Labels, Selector};
use super::source::{select, SeriesSource};

/// The labels of the group a series belongs to: `host` and the `sum_by` labels it has; or
/// its own labels (without `le` for a quantile rule).
fn group_key(rule: &Rule, labels: &Labels) -> Labels {
    match &rule.sum_by {
        Some(by) => by
            .iter()
            .filter_map(|k| labels.get_key_value(k))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None if rule.quantile.is_some() => {
            let mut l = labels.clone();
            l.remove("le");
            l
        }
        None => labels.clone(),
    }
}

/// Whether the rule may read a series with these labels: always for a fleet-wide rule; for
/// an owned one, only when the series' host is inside the owner scope (a series without a
/// host, or of a host whose labels are unknown, is outside).
pub(super) fn readable(rule: &Rule, source: &dyn SeriesSource, labels: &Labels) -> bool {
    match &rule.owner {
        None => true,
        Some(owner) => {
            let scope = labels.get("host").and_then(|h| source.host_scope(h));
            owner.covers(scope.as_ref())
        }
    }
}

/// The window function over samples at or after `since`.
fn window_value(rule: &Rule, samples: &[(i64, f64)], since: i64) -> Option<f64> {
    let from = samples.partition_point(|x| x.0 < since);
    samples.get(from..).and_then(|s| rule.function.apply(s))
}

/// Per group, the sum of the values of its series that have one (`None`: none has).
fn sums(
    rule: &Rule,
    selector: &Selector,
    source: &dyn SeriesSource,
    since: i64,
) -> BTreeMap<Labels, Option<f64>> {
    let mut out: BTreeMap<Labels, Option<f64>> = BTreeMap::new();
    for s in select(source, selector, since) {
        if !selector.matches(&s.labels) || !readable(rule, source, &s.labels) {
            continue;
        }
        let v = window_value(rule, &s.samples, since);
        let slot = out.entry(group_key(rule, &s.labels)).or_insert(None);
        if let Some(v) = v {
            *slot = Some(slot.unwrap_or(0.0) + v);
        }
    }
    out
}

/// Per group, the quantile of its buckets' increases.
fn quantiles(
    rule: &Rule,
    q: f64,
    source: &dyn SeriesSource,
    since: i64,
) -> BTreeMap<Labels, Option<f64>> {
    let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for s in select(source, &rule.selector, since) {
        if !rule.selector.matches(&s.labels) || !readable(rule, source, &s.labels) {
            continue;
        }
        let slot = buckets.entry(group_key(rule, &s.labels)).or_default();
        let le = s.labels.get("le").and_then(|t| parse_le(t));
        if let (Some(le), Some(n)) = (le, window_value(rule, &s.samples, since)) {
            slot.push((le, n));
        }
    }
    buckets
        .into_iter()
        .map(|(k, b)| (k, histogram_quantile(q, &b)))
        .collect()
}

/// Every group the selector finds, with the value the rule compares (`None`: condition not
/// met, e.g. too few samples, a missing or zero denominator, one below `min_denominator`).
pub(super) fn group_values(
    rule: &Rule,
    source: &dyn SeriesSource,
    since: i64,
) -> BTreeMap<Labels, Option<f64>> {
    if let Some(q) = rule.quantile {
        return quantiles(rule, q, source, since);
    }
    let mut values = sums(rule, &rule.selector, source, since);
    let Some(den_selector) = &rule.divide_by else {
        return values;
    };
    let dens = sums(rule, den_selector, source, since);
    let floor = rule.min_denominator.unwrap_or(0.0);
    for (key, v) in &mut values {
        let den = dens.get(key).copied().flatten();
        *v = match (*v, den) {
            (Some(n), Some(d)) if d != 0.0 && d >= floor => Some(n / d),
            _ => None,
        };
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::{labels, rule};
    use crate::alert::MemorySource;

    /// `calls{host,server,tool,outcome}` going from `from` to `to` over the window.
    fn calls(src: &mut MemorySource, tool: &str, outcome: &str, from: f64, to: f64) {
        let l = labels(&[
            ("host", "h"),
            ("server", "s"),
            ("tool", tool),
            ("outcome", outcome),
        ]);
        src.push("calls", &l, 10_000, from);
        src.push("calls", &l, 50_000, to);
    }

    #[test]
    fn alert_sum_by_ratio_with_min_denominator() {
        let r = rule(
            "[[rule]]\nname = \"r\"\nselector = 'calls{outcome!~\"ok|cancelled\"}'\n\
             divide_by = 'calls'\nfunction = \"increase\"\nsum_by = [\"server\", \"tool\"]\n\
             min_denominator = 20.0\nwindow = \"1m\"\nwarning = 0.05\n",
        );
        assert_eq!(
            r.sum_by.as_deref(),
            Some(&["host".to_owned(), "server".into(), "tool".into()][..])
        );
        let mut src = MemorySource::new();
        // a: 30 calls, 6 errors of two kinds (one counter reset on the way), 2 cancelled.
        calls(&mut src, "a", "ok", 100.0, 122.0);
        calls(&mut src, "a", "tool_error", 3.0, 7.0);
        calls(&mut src, "a", "timeout", 50.0, 2.0);
        calls(&mut src, "a", "cancelled", 0.0, 2.0);
        // b: 19 calls, all failing: under the floor.
        calls(&mut src, "b", "tool_error", 0.0, 19.0);
        let got = group_values(&r, &src, 0);
        let key = |t: &str| labels(&[("host", "h"), ("server", "s"), ("tool", t)]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[&key("a")], Some(6.0 / 30.0));
        assert_eq!(got[&key("b")], None);
    }

    #[test]
    fn alert_quantile_rule_per_group() {
        let r = rule(
            "[[rule]]\nname = \"r\"\nselector = 'lat_bucket'\nfunction = \"quantile\"\n\
             quantile = 0.95\nsum_by = [\"tool\"]\nwarning = 5.0\n",
        );
        let mut src = MemorySource::new();
        // Two servers' buckets of tool t are summed; 20 observations, 1 ≤ 1 s, 10 ≤ 5 s.
        for (server, le, from, to) in [
            ("s1", "1", 0.0, 1.0),
            ("s1", "5", 0.0, 6.0),
            ("s1", "+Inf", 0.0, 12.0),
            ("s2", "1", 10.0, 10.0),
            ("s2", "5", 10.0, 14.0),
            ("s2", "+Inf", 10.0, 18.0),
        ] {
            let l = labels(&[("host", "h"), ("server", server), ("tool", "t"), ("le", le)]);
            src.push("lat_bucket", &l, 10_000, from);
            src.push("lat_bucket", &l, 20_000, to);
        }
        let got = group_values(&r, &src, 0);
        let key = labels(&[("host", "h"), ("tool", "t")]);
        // Rank 19 of 20 lands in +Inf: the highest finite bound.
        assert_eq!(got[&key], Some(5.0));
        // Without sum_by, each series but `le` is a group: s1 p50 = rank 6 → (1, 5], 5 of 5.
        let r = rule(
            "[[rule]]\nname = \"r\"\nselector = 'lat_bucket'\nfunction = \"quantile\"\n\
             quantile = 0.5\nwarning = 5.0\n",
        );
        let got = group_values(&r, &src, 0);
        let s1 = labels(&[("host", "h"), ("server", "s1"), ("tool", "t")]);
        assert_eq!(got[&s1], Some(5.0));
        assert_eq!(got.len(), 2);
    }
}
