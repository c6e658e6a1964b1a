//! Annotation templates: `{{ $labels.NAME }}`, `{{ $value }}`, `{{ $level }}`. Deliberately
//! tiny — no logic, no functions — so rendering cannot fail or panic: an unknown
//! placeholder renders empty and an unclosed `{{` is kept as text.

use super::selector::Labels;

/// Renders `tmpl` with the alert's labels, value (`None` when there is no data, rendered
/// empty) and level name.
pub fn render(tmpl: &str, labels: &Labels, value: Option<f64>, level: &str) -> String {
    let mut out = String::with_capacity(tmpl.len());
    let mut rest = tmpl;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let key = after[..close].trim();
        if key == "$value" {
            if let Some(v) = value {
                out.push_str(&format_value(v));
            }
        } else if key == "$level" {
            out.push_str(level);
        } else if let Some(name) = key.strip_prefix("$labels.") {
            if let Some(v) = labels.get(name.trim()) {
                out.push_str(v);
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// Human-friendly number: integers without a fraction, others with at most 4 decimals.
pub fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_finite() {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_template_rendering() {
        let mut l = Labels::new();
        l.insert("host".into(), "web-1".into());
        assert_eq!(
            render(
                "{{ $labels.host }} at {{$value}} ({{ $level }})",
                &l,
                Some(0.951234),
                "critical"
            ),
            "web-1 at 0.9512 (critical)"
        );
        assert_eq!(
            render("x{{ $labels.nope }}y{{ $junk }}z", &l, None, "w"),
            "xyz"
        );
        assert_eq!(
            render("open {{ $value", &l, Some(3.0), "w"),
            "open {{ $value"
        );
        assert_eq!(render("{{}}{{ $value }}}}", &l, Some(42.0), "w"), "42}}");
        assert_eq!(
            render("ünï {{ $labels.host }}", &l, Some(1.0), "w"),
            "ünï web-1"
        );
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(95.0), "95");
    }
}
