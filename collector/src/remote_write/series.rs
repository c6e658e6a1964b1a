//! The labels a series carries to a remote-write endpoint, as the spec wants them: its own
//! labels, `host` (the agent id) and the host's operator labels (`team`, `env`...), where a
//! series' own label of the same name is kept as `exported_<name>` (as `/federate` does
//! with `host`); `__name__`; sorted by name; no empty values. A series whose metric or label
//! names Prometheus would refuse is not sent (one bad series would fail the whole request).

use std::collections::BTreeMap;

use mcpwatch_common::exposition::{valid_label_name, valid_metric_name};
use mcpwatch_common::wire::SeriesKey;

use crate::store::query::remote_write::SeriesMeta;

/// Why a series is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its stored labels cannot be read back.
    Unreadable,
    /// A metric or label name outside Prometheus's syntax.
    InvalidName,
}

/// The sorted label pairs of `meta`, `__name__` first by sort order.
pub fn labels(meta: &SeriesMeta) -> Result<Vec<(String, String)>, Refused> {
    if !valid_metric_name(&meta.name) {
        return Err(Refused::InvalidName);
    }
    let own = SeriesKey::parse_labels_text(&meta.labels).ok_or(Refused::Unreadable)?;
    let host: BTreeMap<String, String> =
        serde_json::from_str(&meta.host_labels).unwrap_or_default();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in own {
        let k = if k == "host" || host.contains_key(&k) {
            format!("exported_{k}")
        } else {
            k
        };
        out.insert(k, v);
    }
    for (k, v) in host {
        out.insert(k, v);
    }
    out.insert("host".to_owned(), meta.agent_id.clone());
    out.insert("__name__".to_owned(), meta.name.clone());
    out.retain(|_, v| !v.is_empty());
    if out.keys().any(|k| k != "__name__" && !valid_label_name(k)) {
        return Err(Refused::InvalidName);
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, labels: &str, host_labels: &str) -> SeriesMeta {
        SeriesMeta {
            id: 1,
            agent_id: "web-1".into(),
            name: name.into(),
            labels: labels.into(),
            host_labels: host_labels.into(),
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn remote_write_series_labels_are_sorted_with_host_and_operator_labels() {
        let m = meta(
            "mcpwatch_mcp_tool_calls_total",
            r#"host="inner",outcome="ok",team="x",tool="",server="files""#,
            r#"{"team":"a","env":"prod"}"#,
        );
        assert_eq!(
            labels(&m).unwrap(),
            pairs(&[
                ("__name__", "mcpwatch_mcp_tool_calls_total"),
                ("env", "prod"),
                ("exported_host", "inner"),
                ("exported_team", "x"),
                ("host", "web-1"),
                ("outcome", "ok"),
                ("server", "files"),
                ("team", "a"),
            ])
        );
        assert_eq!(
            labels(&meta("bad-name", "", "{}")),
            Err(Refused::InvalidName)
        );
        assert_eq!(
            labels(&meta("m", r#"bad-label="1""#, "{}")),
            Err(Refused::InvalidName)
        );
        assert_eq!(
            labels(&meta("m", "garbage", "{}")),
            Err(Refused::Unreadable)
        );
    }
}
