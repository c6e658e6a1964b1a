//! Series selectors: a metric name plus label matchers (`=`, `!=`, `=~`, `!~`), written as
//! `name{label="value", other=~"re.*"}`. `host` and `server` are ordinary labels.

use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};

/// Matchers come from API users (queries, silences, bindings): bound what one can cost.
const MAX_VALUE_LEN: usize = 1024;
const MAX_MATCHERS: usize = 32;
/// Compiled program and lazy-DFA cache per regex matcher.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Label set of one series (metric name excluded). Sorted so hashing and display are stable.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// One label matcher. Regexes are anchored (`^(?:re)$`), as in Prometheus, so `web-.*`
/// cannot match `old-web-1` by accident.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        if value.len() > MAX_VALUE_LEN {
            return Err(format!(
                "label `{label}`: value longer than {MAX_VALUE_LEN} bytes"
            ));
        }
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                RegexBuilder::new(&format!("^(?:{value})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("label `{label}`: invalid regex {value:?}: {e}"))?,
            ),
            MatchOp::Eq | MatchOp::Ne => None,
        };
        Ok(Matcher {
            label: label.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// A missing label matches as the empty string (Prometheus semantics), so `foo!="x"`
    /// selects series without `foo`.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.label).map(String::as_str).unwrap_or("");
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            // Unreachable by construction (`new` compiles a regex for both regex ops); failing
            // closed is the safe answer if it ever were.
            (MatchOp::Re | MatchOp::NotRe, None) => false,
        }
    }
}

/// Whether some label set can satisfy every matcher. Exact where it matters: a label pinned
/// by `=` must satisfy that label's other matchers, so `{host="a", host="b"}` or
/// `{host="a", host!~"a|b"}` can never match. Labels constrained only by `!=` and regexes
/// are assumed satisfiable (regex intersection is not decided here).
pub fn satisfiable(matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .filter(|pin| pin.op == MatchOp::Eq)
        .all(|pin| {
            let labels = Labels::from([(pin.label.clone(), pin.value.clone())]);
            matchers
                .iter()
                .filter(|m| m.label == pin.label)
                .all(|m| m.matches(&labels))
        })
}

/// The label a selector without a metric name names its metrics by, as in Prometheus.
pub const NAME_LABEL: &str = "__name__";

/// Metric name + matchers.
#[derive(Debug, Clone)]
pub struct Selector {
    /// The one metric read; empty when `name` picks the metrics instead.
    pub metric: String,
    pub matchers: Vec<Matcher>,
    /// `{__name__=~"re", ...}` (or `!~`, `!=`): every metric whose name matches. The series
    /// then carry their metric's name as label `__name__`, so series of different metrics
    /// with the same labels stay apart.
    pub name: Option<Matcher>,
}

impl Matcher {
    /// Whether a single value (not a label set) satisfies the matcher.
    pub fn matches_value(&self, v: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            (MatchOp::Re | MatchOp::NotRe, None) => false,
        }
    }
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Whether the selector reads metric `name`.
    pub fn reads(&self, name: &str) -> bool {
        match &self.name {
            Some(m) => m.matches_value(name),
            None => self.metric == name,
        }
    }

    /// Parses `name`, `name{l="v", l2!="v", l3=~"re", l4!~"re"}`, or `{__name__=~"re", ...}`
    /// (every metric whose name matches).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (metric, rest) = match text.find('{') {
            Some(i) => (text[..i].trim(), Some(&text[i + 1..])),
            None => (text, None),
        };
        if metric.is_empty() && rest.is_some() {
            return Self::parse_named(text);
        }
        if !is_ident(metric, true) {
            return Err(format!(
                "invalid metric name {metric:?} (letters, digits, `_`, `:`)"
            ));
        }
        let mut matchers = Vec::new();
        if let Some(rest) = rest {
            let body = rest
                .trim_end()
                .strip_suffix('}')
                .ok_or_else(|| "selector: missing closing `}`".to_owned())?;
            let mut s = body.trim_start();
            while !s.is_empty() {
                let end = s
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                let label = &s[..end];
                if !is_ident(label, false) {
                    return Err(format!("selector: invalid label name near {s:?}"));
                }
                s = s[end..].trim_start();
                let (op, len) = if s.starts_with("=~") {
                    (MatchOp::Re, 2)
                } else if s.starts_with("!~") {
                    (MatchOp::NotRe, 2)
                } else if s.starts_with("!=") {
                    (MatchOp::Ne, 2)
                } else if s.starts_with('=') {
                    (MatchOp::Eq, 1)
                } else {
                    return Err(format!(
                        "selector: expected `=`, `!=`, `=~` or `!~` after `{label}`"
                    ));
                };
                s = s[len..].trim_start();
                let (value, after) = parse_quoted(s).ok_or_else(|| {
                    format!("selector: label `{label}`: expected a \"quoted\" value")
                })?;
                if matchers.len() == MAX_MATCHERS {
                    return Err(format!("selector: more than {MAX_MATCHERS} matchers"));
                }
                matchers.push(Matcher::new(label, op, &value)?);
                s = after.trim_start();
                if let Some(r) = s.strip_prefix(',') {
                    s = r.trim_start();
                } else if !s.is_empty() {
                    return Err(format!("selector: expected `,` or `}}` near {s:?}"));
                }
            }
        }
        Ok(Selector {
            metric: metric.to_owned(),
            matchers,
            name: None,
        })
    }

    /// `{__name__ OP "value", ...}`: exactly one `__name__` matcher picks the metrics (`=`
    /// is an ordinary one-metric selector).
    fn parse_named(text: &str) -> Result<Self, String> {
        let mut parsed = Selector::parse(&format!("m{text}"))?;
        let mut names: Vec<Matcher> = Vec::new();
        parsed.matchers.retain(|m| {
            let is_name = m.label == NAME_LABEL;
            if is_name {
                names.push(m.clone());
            }
            !is_name
        });
        let [name] = names.as_slice() else {
            return Err(
                "a selector without a metric name needs exactly one `__name__` matcher".into(),
            );
        };
        if name.op == MatchOp::Eq {
            if !is_ident(&name.value, true) {
                return Err(format!("invalid metric name {:?}", name.value));
            }
            parsed.metric = name.value.clone();
            return Ok(parsed);
        }
        parsed.metric = String::new();
        parsed.name = Some(name.clone());
        Ok(parsed)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if self.matchers.is_empty() && self.name.is_none() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, m) in self.name.iter().chain(self.matchers.iter()).enumerate() {
            let op = match m.op {
                MatchOp::Eq => "=",
                MatchOp::Ne => "!=",
                MatchOp::Re => "=~",
                MatchOp::NotRe => "!~",
            };
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}{op}{:?}", m.label, m.value)?;
        }
        f.write_str("}")
    }
}

fn is_ident(s: &str, allow_colon: bool) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || (allow_colon && c == ':') => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':'))
}

/// `"..."` with `\"`, `\\`, `\n` escapes; returns the value and the text after the quote.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let rest = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &rest[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn selector_satisfiability_of_pinned_labels() {
        let sat = |text: &str| satisfiable(&Selector::parse(text).expect("parse").matchers);
        assert!(sat(r#"m{host="a"}"#));
        assert!(sat(r#"m{host="a", team="x", host=~"a|b", host!="b"}"#));
        assert!(
            sat(r#"m{host=~"a.*", host!~"ab"}"#),
            "regex-only: assumed satisfiable"
        );
        assert!(!sat(r#"m{host="local", host="hidden-1"}"#));
        assert!(!sat(r#"m{host="a", host!="a"}"#));
        assert!(!sat(r#"m{host="a", host=~"b.*"}"#));
        assert!(!sat(r#"m{host="a", host!~"a|b"}"#));
        assert!(
            !sat(r#"m{host="", host=~".+"}"#),
            "absent label pinned, then required"
        );
    }

    use super::*;
    use crate::alert::tests::labels;

    #[test]
    fn alert_selector_parses_all_ops_and_anchors_regex() {
        let s = Selector::parse(r#"m{host=~"web-.*", server!="x", cpu="total", dc!~"eu|us"}"#)
            .expect("valid");
        assert_eq!(s.metric, "m");
        assert_eq!(s.matchers.len(), 4);
        assert!(s.matches(&labels(&[
            ("host", "web-1"),
            ("cpu", "total"),
            ("dc", "ap")
        ])));
        // Anchored: a prefix does not match.
        assert!(!s.matches(&labels(&[("host", "old-web-1"), ("cpu", "total")])));
        assert!(!s.matches(&labels(&[
            ("host", "web-1"),
            ("cpu", "total"),
            ("server", "x")
        ])));
        assert!(!s.matches(&labels(&[
            ("host", "web-1"),
            ("cpu", "total"),
            ("dc", "eu")
        ])));
        let again = Selector::parse(&s.to_string()).expect("display round-trips");
        assert_eq!(again.matchers.len(), 4);
    }

    #[test]
    fn alert_selector_by_name_pattern() {
        let s = Selector::parse(r#"{__name__=~"mcp_.+", host="h"}"#).expect("parse");
        assert_eq!(s.metric, "");
        assert!(s.reads("mcp_requests_total"));
        assert!(!s.reads("host_cpu"));
        assert_eq!(s.matchers.len(), 1, "`__name__` is not a label matcher");
        assert_eq!(s.to_string(), r#"{__name__=~"mcp_.+", host="h"}"#);
        let eq = Selector::parse(r#"{__name__="up", job="x"}"#).expect("parse");
        assert_eq!((eq.metric.as_str(), eq.name.is_none()), ("up", true));
        assert!(
            Selector::parse(r#"{host="h"}"#).is_err(),
            "no metric at all"
        );
        assert!(Selector::parse(r#"{__name__=~"a", __name__=~"b"}"#).is_err());
        assert!(Selector::parse(r#"{__name__="not a name"}"#).is_err());
    }

    #[test]
    fn alert_selector_rejects_bad_input() {
        for bad in [
            "",
            "1abc",
            "m{",
            "m{a=}",
            "m{a=\"x\" b=\"y\"}",
            "m{a~\"x\"}",
            "m{a=~\"(\"}",
            "m{a=\"unterminated}",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        // Costs are bounded: regex size, value length, matcher count.
        let huge = format!("m{{a=~\"{}\"}}", "\\w{300}".repeat(40));
        assert!(Selector::parse(&huge).is_err(), "oversized regex");
        let long = format!("m{{a=\"{}\"}}", "x".repeat(2000));
        assert!(Selector::parse(&long).is_err(), "value too long");
        let many: Vec<String> = (0..40).map(|i| format!("l{i}=\"v\"")).collect();
        assert!(Selector::parse(&format!("m{{{}}}", many.join(","))).is_err());
    }
}
