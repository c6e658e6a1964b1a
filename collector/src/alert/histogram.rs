//! Quantiles of a Prometheus-style histogram (cumulative `_bucket` series with an `le`
//! label), shared by the alert engine (`function = "quantile"`) and the API's tool latency
//! figures. The math is Prometheus's `histogram_quantile`: find the bucket holding the
//! rank, interpolate linearly within it (the first bucket starts at 0), and report the
//! highest finite bound when the rank lands in the `+Inf` bucket.

/// The bucket bound an `le` label names: a number, or `+Inf`. `None` for anything else.
pub fn parse_le(text: &str) -> Option<f64> {
    let v: f64 = text.trim().parse().ok()?;
    (!v.is_nan()).then_some(v)
}

/// The `q`-quantile (0 ≤ q ≤ 1) of a histogram given as `(upper bound, cumulative count)`
/// pairs in any order (pairs with the same bound are added up). `None` when it cannot be
/// told: no `+Inf` bucket, fewer than two buckets, no observations, or `q` outside [0, 1].
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut b: Vec<(f64, f64)> = buckets
        .iter()
        .copied()
        .filter(|(le, n)| !le.is_nan() && n.is_finite())
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
    let &(last_le, total) = b.last()?;
    if b.len() < 2 || last_le != f64::INFINITY || total <= 0.0 {
        return None;
    }
    // Counts are cumulative; one that falls (buckets sampled at slightly different moments)
    // is raised to the one before, as Prometheus does.
    let mut max = 0.0f64;
    for x in &mut b {
        max = max.max(x.1);
        x.1 = max;
    }
    let rank = q * total;
    let i = b[..b.len() - 1]
        .iter()
        .position(|x| x.1 >= rank)
        .unwrap_or(b.len() - 1);
    if i == b.len() - 1 {
        // In the +Inf bucket: nothing is known above the highest finite bound.
        return Some(b[b.len() - 2].0);
    }
    let (end, count) = b[i];
    if i == 0 && end <= 0.0 {
        return Some(end);
    }
    let (start, below) = if i == 0 { (0.0, 0.0) } else { b[i - 1] };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        // Only for rank 0 (q = 0) over an empty first bucket.
        return Some(start);
    }
    Some(start + (end - start) * ((rank - below) / in_bucket))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("a value");
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn alert_quantile_interpolates_within_the_bucket() {
        // 100 observations: 50 ≤ 0.1, 40 in (0.1, 0.5], 10 in (0.5, 1].
        let h = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (INF, 100.0)];
        // p50: rank 50 → the first bucket, its end (0 + 0.1 × 50/50).
        close(histogram_quantile(0.5, &h), 0.1);
        // p70: rank 70 → (0.1, 0.5], 20 of 40 in → 0.3.
        close(histogram_quantile(0.7, &h), 0.3);
        // p95: rank 95 → (0.5, 1], 5 of 10 → 0.75.
        close(histogram_quantile(0.95, &h), 0.75);
        // p25: rank 25 in the first bucket, from 0: 0.05.
        close(histogram_quantile(0.25, &h), 0.05);
        close(histogram_quantile(1.0, &h), 1.0);
        // Order of the input and duplicate bounds do not matter.
        let shuffled = [
            (INF, 60.0),
            (1.0, 60.0),
            (0.5, 50.0),
            (0.1, 30.0),
            (INF, 40.0),
        ];
        let h2 = [(0.1, 30.0), (0.5, 50.0), (1.0, 60.0)];
        let mut all = h2.to_vec();
        all.push((INF, 100.0));
        assert_eq!(
            histogram_quantile(0.9, &shuffled),
            histogram_quantile(0.9, &all)
        );
    }

    #[test]
    fn alert_quantile_edges() {
        // Rank in +Inf: the highest finite bound.
        let slow = [(1.0, 1.0), (5.0, 2.0), (INF, 10.0)];
        close(histogram_quantile(0.95, &slow), 5.0);
        // No observations, no +Inf bucket, one bucket only, q out of range: no value.
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (INF, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 3.0), (2.0, 4.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(INF, 4.0)]), None);
        assert_eq!(histogram_quantile(1.5, &slow), None);
        assert_eq!(histogram_quantile(f64::NAN, &slow), None);
        // A falling cumulative count is raised to the one before.
        let bumpy = [(1.0, 10.0), (2.0, 8.0), (INF, 10.0)];
        close(histogram_quantile(0.5, &bumpy), 0.5);
        // q = 0 over an empty first bucket: its start (Prometheus would answer NaN).
        let h = [(1.0, 0.0), (2.0, 4.0), (INF, 4.0)];
        close(histogram_quantile(0.0, &h), 0.0);
        close(histogram_quantile(0.5, &h), 1.5);
        // A first bound at or below zero is returned as is.
        close(histogram_quantile(0.1, &[(0.0, 5.0), (INF, 10.0)]), 0.0);
        assert_eq!(parse_le("+Inf"), Some(INF));
        assert_eq!(parse_le("0.25"), Some(0.25));
        assert_eq!(parse_le("fast"), None);
        assert_eq!(parse_le("NaN"), None);
    }
}
