//! Operator labels of a host (`team`, `env`, ...): the one check of what they may be, used
//! by the API's relabel route and by enrollment tokens, whose labels land on the hosts they
//! enroll.

use std::collections::BTreeMap;

pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_VALUE: usize = 256;
const MAX_LABEL_NAME: usize = 128;

/// Checks operator labels; the reason when they are refused.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels, got {}", labels.len()));
    }
    for (k, v) in labels {
        let mut chars = k.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || k.len() > MAX_LABEL_NAME {
            return Err(format!(
                "invalid label name {k:?}: [a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_LABEL_NAME} characters"
            ));
        }
        if k == "host" {
            return Err("label `host` is reserved: it is always the agent id".into());
        }
        if ["alertname", "severity", "level", "flapping"].contains(&k.as_str()) {
            return Err(format!(
                "label {k:?} is reserved: host labels join the labels of the host's alerts"
            ));
        }
        if k.starts_with("__") {
            return Err(format!(
                "label {k:?}: names starting with `__` are reserved"
            ));
        }
        if v.is_empty() {
            return Err(format!(
                "label {k:?}: empty value (leave the label out instead)"
            ));
        }
        if v.chars().count() > MAX_LABEL_VALUE {
            return Err(format!(
                "label {k:?}: value longer than {MAX_LABEL_VALUE} characters"
            ));
        }
    }
    Ok(())
}
