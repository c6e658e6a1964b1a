//! What the alerting runtime knows of each host's operator labels (`team`, `env`, ...):
//! they join the labels of every alert about the host, and they decide which hosts an owner
//! scope (a team's rule, receiver or route) covers. Learned from the `hosts` table at start
//! and after a rollback, for a host met for the first time, and from every relabel (which
//! runs through the runtime, in the transaction that stores it).

use std::collections::{BTreeSet, HashMap};

use rusqlite::{params, Connection};

use super::evaluation::save_alert;
use super::runtime::Runtime;
use super::sample_window::SampleWindow;
use crate::alert::policy::AlertRecord;
use crate::alert::{Labels, OwnerScope, Series, SeriesSource, Transition};
use crate::notify::ReceiverConfigRaw;
use crate::store::hook::each_host_labels;
use crate::store::StoreError;

/// Labels that identify an alert and its host: operator labels never replace them.
pub(crate) const ALERT_IDENTITY: [&str; 5] = ["host", "alertname", "severity", "level", "flapping"];

#[derive(Debug, Default)]
pub(crate) struct HostScopes {
    /// Agent id → operator labels; `None` when the stored labels cannot be read (then no
    /// owner scope covers the host and its alerts carry no operator labels: fail closed).
    hosts: HashMap<String, Option<Labels>>,
    /// Hosts met in a declaration whose labels are not loaded yet.
    unknown: BTreeSet<String>,
}

fn parse(json: &str) -> Option<Labels> {
    serde_json::from_str(json).ok()
}

impl HostScopes {
    /// Every host's labels as stored.
    pub(crate) fn load(c: &Connection) -> Result<HostScopes, StoreError> {
        let mut hosts = HashMap::new();
        each_host_labels(c, None, |agent, json| {
            hosts.insert(agent.to_owned(), parse(json));
        })?;
        Ok(HostScopes {
            hosts,
            unknown: BTreeSet::new(),
        })
    }

    /// A host whose series were just declared: its labels are read before the next
    /// evaluation if they are not known.
    pub(crate) fn note(&mut self, host: &str) {
        if !self.hosts.contains_key(host) && !self.unknown.contains(host) {
            self.unknown.insert(host.to_owned());
        }
    }

    /// Reads the labels of the hosts noted since the last call.
    pub(crate) fn learn_unknown(&mut self, c: &Connection) -> Result<(), StoreError> {
        for host in std::mem::take(&mut self.unknown) {
            let mut found = None;
            each_host_labels(c, Some(&host), |_, json| found = Some(parse(json)))?;
            // A host not stored yet has no labels; a later relabel tells us.
            self.hosts
                .insert(host, found.unwrap_or_else(|| Some(Labels::new())));
        }
        Ok(())
    }

    /// The host's labels changed (a relabel, committed with this change).
    pub(crate) fn set(&mut self, host: &str, labels_json: &str) {
        self.unknown.remove(host);
        self.hosts.insert(host.to_owned(), parse(labels_json));
    }

    /// The host's operator labels, if known and readable.
    pub(crate) fn operator(&self, host: &str) -> Option<&Labels> {
        self.hosts.get(host).and_then(Option::as_ref)
    }

    /// What an owner scope is matched against: the operator labels plus `host`. `None` for
    /// an alert or series without a host, or a host whose labels are unknown or unreadable.
    pub(crate) fn scope_labels(&self, host: Option<&str>) -> Option<Labels> {
        let host = host?;
        let mut l = self.operator(host)?.clone();
        l.insert("host".to_owned(), host.to_owned());
        Some(l)
    }
}

/// The window as the engine reads it: the samples, and the hosts' labels that owned rules
/// are scoped by.
pub(crate) struct ScopedWindow<'a> {
    window: &'a SampleWindow,
    hosts: &'a HostScopes,
}

impl<'a> ScopedWindow<'a> {
    pub(crate) fn new(window: &'a SampleWindow, hosts: &'a HostScopes) -> Self {
        ScopedWindow { window, hosts }
    }
}

impl SeriesSource for ScopedWindow<'_> {
    fn series(&self, metric: &str, since_ms: i64) -> Vec<Series> {
        self.window.series(metric, since_ms)
    }

    fn host_scope(&self, host: &str) -> Option<Labels> {
        self.hosts.scope_labels(Some(host))
    }

    fn metrics(&self) -> Vec<String> {
        self.window.metrics()
    }
}

/// Adds a host's operator labels to an alert's labels: they replace series and rule labels
/// of the same name (a rule cannot file a host's alert under another team), never the
/// labels that identify the alert.
pub(crate) fn apply_host_labels(labels: &mut Labels, operator: &Labels) {
    for (k, v) in operator {
        if !ALERT_IDENTITY.contains(&k.as_str()) && !k.starts_with("__") {
            labels.insert(k.clone(), v.clone());
        }
    }
}

impl Runtime {
    /// Whether receiver `name` may get an alert about a host with `scope` labels: a
    /// fleet-wide receiver always, a team's only inside its owner scope, one whose stored
    /// owner cannot be read never.
    pub(super) fn receiver_reaches(&self, name: &str, scope: Option<&Labels>) -> bool {
        match self.setup.receiver_owners.get(name) {
            Some(owner) => owner.covers(scope),
            None => match self.api_receiver_owners.get(name) {
                Some(Some(owner)) => owner.covers(scope),
                Some(None) => false,
                None => true,
            },
        }
    }

    /// The transition with its host's operator labels added.
    pub(super) fn with_host_labels(&self, t: &Transition) -> Transition {
        let mut t = t.clone();
        if let Some(op) = t.labels.get("host").and_then(|h| self.hosts.operator(h)) {
            apply_host_labels(&mut t.labels, op);
        }
        t
    }

    /// A host's labels changed: its active alerts take the new ones (same fingerprint, a
    /// history row recording the change) and are routed again, so a receiver that now
    /// covers them is told and one already told is not told twice.
    pub(super) fn host_relabelled(
        &mut self,
        c: &Connection,
        host: &str,
        labels_json: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let old = self.hosts.operator(host).cloned().unwrap_or_default();
        self.hosts.set(host, labels_json);
        let new = self.hosts.operator(host).cloned().unwrap_or_default();
        let affected: Vec<AlertRecord> = self
            .active
            .values()
            .filter(|a| a.labels.get("host").map(String::as_str) == Some(host))
            .cloned()
            .collect();
        for mut rec in affected {
            let mut labels = self.base_labels(&rec).unwrap_or_else(|| {
                // No engine state (an orphan about to resolve): drop what the old labels
                // added.
                let mut l = rec.labels.clone();
                l.retain(|k, _| ALERT_IDENTITY.contains(&k.as_str()) || !old.contains_key(k));
                l
            });
            apply_host_labels(&mut labels, &new);
            if labels == rec.labels {
                continue;
            }
            rec.labels = labels;
            rec.updated_ms = now_ms;
            record_relabel(c, &rec, now_ms)?;
            save_alert(c, &rec)?;
            self.active.insert(rec.fingerprint.clone(), rec.clone());
            self.reconcile(c, &rec, now_ms)?;
        }
        Ok(())
    }

    /// An alert's labels before host labels: its series' labels, its rule's, `alertname`
    /// and `severity`, as the engine gives them.
    fn base_labels(&self, rec: &AlertRecord) -> Option<Labels> {
        let st = self
            .engine
            .state()
            .rules
            .get(&rec.rule)?
            .get(&rec.fingerprint)?;
        let rule = self.setup.rules.iter().find(|r| r.name == rec.rule)?;
        let mut labels = st.labels.clone();
        labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert("alertname".to_owned(), rule.name.clone());
        labels.insert("severity".to_owned(), rule.severity.as_str().to_owned());
        Some(labels)
    }
}

/// The owner scopes of the receivers defined through the API, from their stored
/// definitions: absent = fleet-wide, `None` = unreadable (reaches nothing: fail closed).
pub(super) fn load_api_receiver_owners(
    c: &Connection,
) -> Result<HashMap<String, Option<OwnerScope>>, StoreError> {
    let mut out = HashMap::new();
    let mut stmt = c.prepare("SELECT name, definition FROM receivers")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (name, definition) = row?;
        let owner = serde_json::from_str::<ReceiverConfigRaw>(&definition)
            .map_err(|e| e.to_string())
            .and_then(|raw| OwnerScope::parse(raw.owner().unwrap_or_default()));
        match owner {
            Ok(Some(o)) => {
                out.insert(name, Some(o));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(receiver = %name, error = %e,
                    "unreadable owner scope: the receiver gets no alert until it is fixed");
                out.insert(name, None);
            }
        }
    }
    Ok(out)
}

/// The history row of a relabel: the state does not change, the labels do.
fn record_relabel(c: &Connection, rec: &AlertRecord, now_ms: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO alert_history (at_ms, rule, fingerprint, labels, from_state, to_state,
             level, value, notify) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, 0)",
    )?
    .execute(params![
        now_ms,
        rec.rule,
        rec.fingerprint,
        serde_json::to_string(&rec.labels)?,
        rec.status.as_str(),
        rec.level.map(|l| l.as_str()),
        rec.value.filter(|v| v.is_finite()),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn alerting_host_labels_override_rule_labels_but_not_identity() {
        let mut l = labels(&[("alertname", "cpu"), ("host", "h1"), ("team", "rule")]);
        apply_host_labels(
            &mut l,
            &labels(&[("team", "a"), ("alertname", "x"), ("env", "prod")]),
        );
        assert_eq!(
            l,
            labels(&[
                ("alertname", "cpu"),
                ("env", "prod"),
                ("host", "h1"),
                ("team", "a")
            ])
        );
    }

    #[test]
    fn alerting_host_scopes_fail_closed() {
        let mut s = HostScopes::default();
        s.set("h1", r#"{"team":"a"}"#);
        s.set("h2", "not json");
        assert_eq!(
            s.scope_labels(Some("h1")),
            Some(labels(&[("host", "h1"), ("team", "a")]))
        );
        assert_eq!(s.scope_labels(Some("h2")), None);
        assert_eq!(s.scope_labels(Some("h3")), None);
        assert_eq!(s.scope_labels(None), None);
    }
}
