//! `write_relabel`: which series an endpoint receives, as Prometheus's `keep` and `drop`
//! relabel actions: the values of `source_labels` joined by `separator` must (keep) or
//! must not (drop) match `regex`, anchored at both ends. Rules apply in order; a series
//! is sent when every rule lets it through.

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Drop,
}

/// One `[[remote_write.write_relabel]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelabel {
    pub action: Action,
    /// Labels whose values are joined; `__name__` is the metric name. Default
    /// `["__name__"]`.
    pub source_labels: Option<Vec<String>>,
    /// Default ";".
    pub separator: Option<String>,
    /// Anchored at both ends, RE2 syntax (the `regex` crate's). Default "(.*)".
    pub regex: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Relabel {
    action: Action,
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
}

impl Relabel {
    pub fn new(raw: RawRelabel) -> Result<Relabel, String> {
        let source_labels = raw
            .source_labels
            .unwrap_or_else(|| vec!["__name__".to_owned()]);
        if source_labels.is_empty() {
            return Err("source_labels must name at least one label".into());
        }
        let pattern = raw.regex.unwrap_or_else(|| "(.*)".to_owned());
        if pattern.len() > 4096 {
            return Err("regex is longer than 4096 bytes".into());
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("regex: {e}"))?;
        Ok(Relabel {
            action: raw.action,
            source_labels,
            separator: raw.separator.unwrap_or_else(|| ";".to_owned()),
            regex,
        })
    }

    /// Whether a series with `labels` (sorted, `__name__` included) passes this rule.
    pub fn passes(&self, labels: &[(String, String)]) -> bool {
        let mut joined = String::new();
        for (i, name) in self.source_labels.iter().enumerate() {
            if i > 0 {
                joined.push_str(&self.separator);
            }
            if let Some((_, v)) = labels.iter().find(|(n, _)| n == name) {
                joined.push_str(v);
            }
        }
        let matched = self.regex.is_match(&joined);
        match self.action {
            Action::Keep => matched,
            Action::Drop => !matched,
        }
    }
}

/// Whether every rule lets the series through.
pub fn passes_all(rules: &[Relabel], labels: &[(String, String)]) -> bool {
    rules.iter().all(|r| r.passes(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str, host: &str) -> Vec<(String, String)> {
        vec![
            ("__name__".to_owned(), name.to_owned()),
            ("host".to_owned(), host.to_owned()),
        ]
    }

    fn rule(action: Action, source: Option<&[&str]>, regex: &str) -> Relabel {
        Relabel::new(RawRelabel {
            action,
            source_labels: source.map(|s| s.iter().map(|x| (*x).to_owned()).collect()),
            separator: None,
            regex: Some(regex.to_owned()),
        })
        .unwrap()
    }

    #[test]
    fn remote_write_relabel_keeps_and_drops_by_anchored_regex() {
        let keep_host = rule(Action::Keep, None, "mcpwatch_host_.*");
        assert!(keep_host.passes(&labels("mcpwatch_host_load1", "a")));
        assert!(
            !keep_host.passes(&labels("xmcpwatch_host_load1", "a")),
            "anchored"
        );
        let drop_b = rule(Action::Drop, Some(&["__name__", "host"]), ".*;web-b");
        assert!(drop_b.passes(&labels("m", "web-a")));
        assert!(!drop_b.passes(&labels("m", "web-b")));
        assert!(passes_all(
            &[keep_host.clone(), drop_b.clone()],
            &labels("mcpwatch_host_x", "web-a")
        ));
        assert!(!passes_all(
            &[keep_host, drop_b],
            &labels("mcpwatch_host_x", "web-b")
        ));
        // A missing label is the empty string, as in Prometheus.
        let keep_team = rule(Action::Keep, Some(&["team"]), "");
        assert!(keep_team.passes(&labels("m", "a")));
        assert!(Relabel::new(RawRelabel {
            action: Action::Keep,
            source_labels: Some(vec![]),
            separator: None,
            regex: None
        })
        .is_err());
        assert!(Relabel::new(RawRelabel {
            action: Action::Keep,
            source_labels: None,
            separator: None,
            regex: Some("(".into())
        })
        .is_err());
    }
}
