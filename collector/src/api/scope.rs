//! Authorization by scope, in one place for every route: which hosts a caller's grants
//! cover (matched against a host's operator labels plus `host` = agent id, failing closed
//! when stored labels cannot be read), which objects belong to which hosts (alerts through
//! their `host` label), and the one answer for an object the caller may not act on
//! (403 if it may see it, else 404 as if it did not exist; denials audited).

use std::collections::HashMap;

use super::auth::Caller;
use super::error::ApiError;
use super::ApiState;
use crate::alert::{Labels, OwnerScope};
use crate::alerting::OwnerCheck;
use crate::auth::{Permission, Principal};
use crate::store::query::hosts::HostRecord;

/// What the caller may do with one object it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// It may.
    Allowed,
    /// No such object: 404, nothing to audit.
    Missing,
    /// The object exists but is out of the caller's sight: 404, audited as a denial.
    Hidden,
    /// The caller sees the object but lacks this permission on it: 403, audited.
    Refused(Permission),
}

impl Access {
    /// `act` allowed, else refused when the object is `visible`, else hidden.
    pub(crate) fn of(act: Permission, allowed: bool, visible: bool) -> Access {
        match (allowed, visible) {
            (true, _) => Access::Allowed,
            (false, true) => Access::Refused(act),
            (false, false) => Access::Hidden,
        }
    }

    /// For an object only its owner (or an administrator) sees: allowed when `visible`,
    /// else hidden when it `exists`, else missing.
    pub(crate) fn of_owned(exists: bool, visible: bool) -> Access {
        match (visible, exists) {
            (true, _) => Access::Allowed,
            (false, true) => Access::Hidden,
            (false, false) => Access::Missing,
        }
    }
}

/// The one answer for an object the caller may or may not act on.
pub(crate) fn require_access(caller: &Caller, access: Access) -> Result<(), ApiError> {
    match access {
        Access::Allowed => Ok(()),
        Access::Missing => Err(ApiError::NotFound),
        Access::Hidden => {
            caller.deny();
            Err(ApiError::NotFound)
        }
        Access::Refused(p) => {
            caller.deny();
            Err(ApiError::Forbidden(p.to_string()))
        }
    }
}

// ---- hosts ----------------------------------------------------------------------------------

/// A host's operator labels from their stored JSON; `None` if unreadable.
pub(crate) fn operator_labels(json: &str) -> Option<Labels> {
    serde_json::from_str(json).ok()
}

/// The labels a host scope is matched against: the operator labels plus `host` = agent id.
/// `None` when the stored labels cannot be read (then only unscoped grants cover the host:
/// an unreadable label set must not slip through a negative matcher).
pub(crate) fn scope_labels(agent_id: &str, labels_json: &str) -> Option<Labels> {
    let mut l = operator_labels(labels_json)?;
    l.insert("host".to_owned(), agent_id.to_owned());
    Some(l)
}

/// The scope labels of a host the collector never saw: just `host`.
pub(crate) fn host_only(host: &str) -> Labels {
    [("host".to_owned(), host.to_owned())].into_iter().collect()
}

/// Whether `p` covers the host (by its stored labels JSON).
pub(crate) fn covers(principal: &Principal, p: Permission, agent_id: &str, labels: &str) -> bool {
    match scope_labels(agent_id, labels) {
        Some(l) => principal.has_for_host(p, &l),
        None => principal.has_global(p),
    }
}

/// The host-scoped permissions the principal holds on the host, by name: what the console
/// shows enabled for it (the routes still check each request).
pub(crate) fn host_permissions(principal: &Principal, agent_id: &str, labels: &str) -> Vec<String> {
    Permission::ALL
        .into_iter()
        .filter(|p| !p.is_global() && !p.is_ownable() && covers(principal, *p, agent_id, labels))
        .map(|p| p.as_str().to_owned())
        .collect()
}

/// Stored labels (JSON) of hosts by agent id, as the store returns them; `None` for a
/// host the collector never saw.
pub(crate) type HostLabels = HashMap<String, Option<String>>;

/// Whether `p` covers the host named `host`, given the stored labels of the hosts.
pub(crate) fn covers_named(
    principal: &Principal,
    p: Permission,
    hosts: &HostLabels,
    host: &str,
) -> bool {
    match hosts.get(host) {
        Some(Some(json)) => covers(principal, p, host, json),
        Some(None) | None => principal.has_for_host(p, &host_only(host)),
    }
}

/// Whether `p` covers an object with `labels` (an alert): through the host in its `host`
/// label; an object without a host needs an unscoped grant.
pub(crate) fn covers_object(
    principal: &Principal,
    p: Permission,
    hosts: &HostLabels,
    labels: &Labels,
) -> bool {
    if principal.has_global(p) {
        return true;
    }
    match labels.get("host") {
        Some(h) => covers_named(principal, p, hosts, h),
        None => false,
    }
}

/// The stored labels of every host, for filtering lists of objects by host.
pub(crate) async fn all_host_labels(state: &ApiState) -> Result<HostLabels, ApiError> {
    let hosts = state.store.host_labels().await?;
    Ok(hosts.into_iter().map(|(h, l)| (h, Some(l))).collect())
}

/// `p` on some host first (403 without it), then on this one (404 if not covered, as if the
/// host did not exist; audited as a denial).
pub(crate) fn authorize(caller: &Caller, p: Permission, host: &HostRecord) -> Result<(), ApiError> {
    caller.require(p)?;
    let allowed = covers(&caller.principal, p, &host.agent_id, &host.labels);
    require_access(caller, Access::of(p, allowed, false))
}

/// The host of `agent_id`, or 404.
pub(crate) async fn load_host(state: &ApiState, agent_id: &str) -> Result<HostRecord, ApiError> {
    state.store.host(agent_id).await?.ok_or(ApiError::NotFound)
}

/// Requires `p` for the caller, loads the host and checks `p` covers it.
pub(crate) async fn authorized_host(
    state: &ApiState,
    caller: &Caller,
    p: Permission,
    agent_id: &str,
) -> Result<HostRecord, ApiError> {
    caller.require(p)?;
    let host = load_host(state, agent_id).await?;
    authorize(caller, p, &host)?;
    Ok(host)
}

/// Ids of the hosts `p` covers for the caller; `None` when it covers every host.
pub(crate) async fn visible_host_ids(
    state: &ApiState,
    caller: &Caller,
    p: Permission,
) -> Result<Option<Vec<i64>>, ApiError> {
    if caller.principal.has_global(p) {
        return Ok(None);
    }
    let hosts = state.store.host_scopes().await?;
    Ok(Some(
        hosts
            .into_iter()
            .filter(|(_, agent, labels)| covers(&caller.principal, p, agent, labels))
            .map(|(id, _, _)| id)
            .collect(),
    ))
}

// ---- owner scopes ----------------------------------------------------------------------------

/// The owner scope a stored object names (`None`: fleet-wide). One that does not parse
/// counts as fleet-wide, which only unscoped grants reach (fail closed).
pub(crate) fn stored_owner(text: Option<&str>) -> Option<OwnerScope> {
    text.and_then(|t| OwnerScope::parse(t).ok().flatten())
}

/// The same for a JSON definition's `owner` (rules and routes as stored).
pub(crate) fn definition_owner(definition: &serde_json::Value) -> Option<OwnerScope> {
    stored_owner(definition.get("owner").and_then(serde_json::Value::as_str))
}

/// The check run on the writer against the owner of the object already stored under a
/// name: the caller's `p` must cover it.
pub(crate) fn owner_check(caller: &Caller, p: Permission) -> OwnerCheck {
    let principal = caller.principal.clone();
    Box::new(move |stored: Option<&str>| principal.covers_owner(p, stored_owner(stored).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_hosts_scope_labels_fail_closed() {
        let l = scope_labels("web-1", r#"{"team":"a"}"#).unwrap();
        assert_eq!(l.get("host").map(String::as_str), Some("web-1"));
        assert_eq!(l.get("team").map(String::as_str), Some("a"));
        assert!(scope_labels("web-1", "not json").is_none());
        let p = Principal {
            actor: "user:x".into(),
            user_id: Some(1),
            token_id: None,
            session_id: None,
            restriction: None,
            grants: crate::auth::grants(
                &[(
                    vec![Permission::HostsRead.to_string()],
                    r#"{team!="b"}"#.into(),
                )],
                None,
            ),
        };
        assert!(covers(&p, Permission::HostsRead, "h", r#"{"team":"a"}"#));
        assert!(!covers(&p, Permission::HostsRead, "h", r#"{"team":"b"}"#));
        assert!(!covers(&p, Permission::HostsRead, "h", "garbage"));
    }
}
