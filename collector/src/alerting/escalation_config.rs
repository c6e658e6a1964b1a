//! The `[[escalation]]` sections of collector.toml, raw (serde, unknown keys rejected) and
//! validated into the policies routes name.
//!
//! ```toml
//! [[escalation]]
//! name = "team-a-oncall"
//! steps = [
//!   { after = "0s",  receivers = ["team-a-chat"] },
//!   { after = "15m", receivers = ["team-a-pager"] },
//!   { after = "45m", receivers = ["head-of-ops"] },
//! ]
//! repeat = "2h"   # optional: start again from the first step every 2h until acknowledged
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use mcpwatch_common::config::{ConfigError, Duration};
use serde::Deserialize;

use crate::alert::escalation::{EscalationPolicy, EscalationStep};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    /// Required, unique; what `[[route]] escalation` names.
    pub name: String,
    /// Required, at least one: each `{ after, receivers }`, `after` measured from the
    /// alert's start and increasing from step to step.
    pub steps: Vec<RawStep>,
    /// While unacknowledged, start again from the first step this long after the start of
    /// each round (longer than the last step's `after`). Default: no repeat.
    pub repeat: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub after: Duration,
    pub receivers: Vec<String>,
}

/// Validated policies by name; every receiver they name must be one of `receivers`.
pub(super) fn parse_escalations(
    path: &Path,
    raw: Vec<RawEscalation>,
    receivers: &HashSet<String>,
) -> Result<BTreeMap<String, Arc<EscalationPolicy>>, ConfigError> {
    let mut out = BTreeMap::new();
    for (i, e) in raw.into_iter().enumerate() {
        let key = format!("escalation[{i}]");
        let bad = |msg: &str| ConfigError::invalid(path, &key, msg);
        if e.name.trim().is_empty() {
            return Err(bad("name: must not be empty"));
        }
        if out.contains_key(&e.name) {
            return Err(bad(&format!("policy {:?} is defined twice", e.name)));
        }
        let mut steps = Vec::new();
        for (j, s) in e.steps.into_iter().enumerate() {
            if let Some(unknown) = s.receivers.iter().find(|r| !receivers.contains(*r)) {
                return Err(bad(&format!(
                    "steps[{j}].receivers: unknown receiver {unknown:?}"
                )));
            }
            steps.push(EscalationStep {
                after_ms: s.after.as_millis_i64(),
                receivers: s.receivers,
            });
        }
        let policy = EscalationPolicy::new(&e.name, steps, e.repeat.map(|r| r.as_millis_i64()))
            .map_err(|m| bad(&m))?;
        out.insert(e.name, Arc::new(policy));
    }
    Ok(out)
}
