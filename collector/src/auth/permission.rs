//! Permissions, the built-in roles, and what a principal may do: grants of permissions,
//! each for every host or for the hosts whose labels match a selector (a team's hosts).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::alert::route::{matches_all, parse_matchers};
use crate::alert::{Labels, Matcher, OwnerScope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "hosts:read")]
    HostsRead,
    /// Host labels and agent revocation.
    #[serde(rename = "hosts:write")]
    HostsWrite,
    /// Bootstrap tokens for agent enrollment, for hosts that land in the grant's scope.
    #[serde(rename = "hosts:enroll")]
    HostsEnroll,
    #[serde(rename = "metrics:read")]
    MetricsRead,
    #[serde(rename = "alerts:read")]
    AlertsRead,
    #[serde(rename = "alerts:ack")]
    AlertsAck,
    #[serde(rename = "silences:write")]
    SilencesWrite,
    #[serde(rename = "rules:write")]
    RulesWrite,
    #[serde(rename = "receivers:write")]
    ReceiversWrite,
    #[serde(rename = "servers:control")]
    ServersControl,
    #[serde(rename = "users:admin")]
    UsersAdmin,
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Taking backups of the whole database (every host's data, hashes, sealed secrets).
    #[serde(rename = "admin:backup")]
    AdminBackup,
}

impl Permission {
    pub const ALL: [Permission; 13] = [
        Permission::HostsRead,
        Permission::HostsWrite,
        Permission::HostsEnroll,
        Permission::MetricsRead,
        Permission::AlertsRead,
        Permission::AlertsAck,
        Permission::SilencesWrite,
        Permission::RulesWrite,
        Permission::ReceiversWrite,
        Permission::ServersControl,
        Permission::UsersAdmin,
        Permission::AuditRead,
        Permission::AdminBackup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::HostsRead => "hosts:read",
            Permission::HostsWrite => "hosts:write",
            Permission::HostsEnroll => "hosts:enroll",
            Permission::MetricsRead => "metrics:read",
            Permission::AlertsRead => "alerts:read",
            Permission::AlertsAck => "alerts:ack",
            Permission::SilencesWrite => "silences:write",
            Permission::RulesWrite => "rules:write",
            Permission::ReceiversWrite => "receivers:write",
            Permission::ServersControl => "servers:control",
            Permission::UsersAdmin => "users:admin",
            Permission::AuditRead => "audit:read",
            Permission::AdminBackup => "admin:backup",
        }
    }

    /// Permissions about fleet-wide configuration: only an unscoped grant gives them, so a
    /// team role can never reach them through its host selector.
    pub fn is_global(self) -> bool {
        matches!(
            self,
            Permission::UsersAdmin | Permission::AuditRead | Permission::AdminBackup
        )
    }

    /// Permissions over objects that carry an owner scope (rules, receivers): a scoped
    /// grant gives them for objects owned inside its selector (see
    /// [`Principal::covers_owner`]), never for fleet-wide ones, and never over hosts.
    pub fn is_ownable(self) -> bool {
        matches!(self, Permission::RulesWrite | Permission::ReceiversWrite)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown permission {s:?}"))
    }
}

/// The built-in roles: (name, permissions).
pub fn builtin_roles() -> Vec<(&'static str, Vec<Permission>)> {
    use Permission::*;
    vec![
        ("admin", Permission::ALL.to_vec()),
        (
            "operator",
            vec![
                HostsRead,
                MetricsRead,
                AlertsRead,
                AlertsAck,
                SilencesWrite,
                ServersControl,
            ],
        ),
        ("viewer", vec![HostsRead, MetricsRead, AlertsRead]),
    ]
}

/// Which hosts a grant covers.
#[derive(Debug, Clone)]
pub enum Scope {
    AllHosts,
    /// Hosts whose labels (plus `host` = the agent id) match every matcher.
    Hosts {
        selector: String,
        matchers: Vec<Matcher>,
    },
}

impl Scope {
    /// The selector as it is stored: checked, trimmed, `""` for every host.
    pub fn normalize(selector: &str) -> Result<String, String> {
        Ok(
            match Scope::parse(selector).map_err(|e| format!("host selector: {e}"))? {
                Scope::AllHosts => String::new(),
                Scope::Hosts { selector, .. } => selector,
            },
        )
    }

    /// `""` = every host; otherwise `{label="value", ...}`.
    pub fn parse(selector: &str) -> Result<Scope, String> {
        let t = selector.trim();
        if t.is_empty() {
            return Ok(Scope::AllHosts);
        }
        let matchers = parse_matchers(t)?;
        if matchers.is_empty() {
            return Ok(Scope::AllHosts);
        }
        Ok(Scope::Hosts {
            selector: t.to_owned(),
            matchers,
        })
    }

    pub fn covers(&self, host_labels: &Labels) -> bool {
        match self {
            Scope::AllHosts => true,
            Scope::Hosts { matchers, .. } => matches_all(matchers, host_labels),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub permission: Permission,
    pub scope: Scope,
}

/// Who is calling and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `user:NAME` or `token:NAME` (a token without a user, e.g. the bootstrap token).
    pub actor: String,
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub session_id: Option<i64>,
    pub grants: Vec<Grant>,
    /// A login session that must first change its password or enrol a second factor.
    pub restriction: Option<super::restriction::Restriction>,
}

impl Principal {
    /// Holds `p` for at least some hosts (or globally).
    pub fn has(&self, p: Permission) -> bool {
        self.grants.iter().any(|g| g.permission == p)
    }

    /// Holds `p` for every host.
    pub fn has_global(&self, p: Permission) -> bool {
        self.grants
            .iter()
            .any(|g| g.permission == p && matches!(g.scope, Scope::AllHosts))
    }

    /// Holds `p` for an object owned by `owner` (`None`: fleet-wide, which needs an
    /// unscoped grant): some grant of `p` whose selector the owner scope is within.
    pub fn covers_owner(&self, p: Permission, owner: Option<&OwnerScope>) -> bool {
        self.has_global(p)
            || owner.is_some_and(|o| {
                self.grants.iter().any(|g| {
                    g.permission == p
                        && match &g.scope {
                            Scope::AllHosts => true,
                            Scope::Hosts { matchers, .. } => o.within(matchers),
                        }
                })
            })
    }

    /// Holds `p` for the host with these labels (`host` included).
    pub fn has_for_host(&self, p: Permission, host_labels: &Labels) -> bool {
        !p.is_global()
            && !p.is_ownable()
            && self
                .grants
                .iter()
                .any(|g| g.permission == p && g.scope.covers(host_labels))
            || self.has_global(p)
    }
}

/// Permission names as the store keeps them: each once, in this module's order.
pub fn permission_names(perms: &[Permission]) -> Vec<String> {
    let mut perms = perms.to_vec();
    perms.sort();
    perms.dedup();
    perms.iter().map(|p| p.as_str().to_owned()).collect()
}

/// The permissions stored names stand for. Unknown names (from a newer build) stand for
/// nothing: they grant nothing and show nothing.
pub fn from_names(names: &[String]) -> Vec<Permission> {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

/// Grants from role bindings `(role permission names, host selector)` as stored, narrowed to
/// a token's permission subset when there is one. Global permissions survive only unscoped.
pub fn grants(bindings: &[(Vec<String>, String)], subset: Option<&[String]>) -> Vec<Grant> {
    let subset = subset.map(from_names);
    let mut out = Vec::new();
    for (names, selector) in bindings {
        let Ok(scope) = Scope::parse(selector) else {
            // A binding whose selector no longer parses grants nothing (fail closed).
            continue;
        };
        for p in from_names(names) {
            if subset.as_ref().is_some_and(|s| !s.contains(&p)) {
                continue;
            }
            if p.is_global() && !matches!(scope, Scope::AllHosts) {
                continue;
            }
            out.push(Grant {
                permission: p,
                scope: scope.clone(),
            });
        }
    }
    out
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
    fn auth_permissions_round_trip_and_roles() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!("hosts:delete".parse::<Permission>().is_err());
        let roles = builtin_roles();
        assert_eq!(roles[0].1.len(), Permission::ALL.len());
        assert!(!roles[2].1.contains(&Permission::AlertsAck));
    }

    #[test]
    fn auth_scoped_grants_cover_only_their_hosts() {
        let operator = permission_names(&builtin_roles()[1].1);
        let admin = permission_names(&builtin_roles()[0].1);
        let p = Principal {
            actor: "user:team-a".into(),
            user_id: Some(1),
            token_id: None,
            session_id: None,
            restriction: None,
            grants: grants(
                &[
                    (operator, r#"{team="a"}"#.into()),
                    (admin, r#"{team="a"}"#.into()),
                ],
                None,
            ),
        };
        let a = labels(&[("host", "web-1"), ("team", "a")]);
        let b = labels(&[("host", "db-1"), ("team", "b")]);
        assert!(p.has_for_host(Permission::ServersControl, &a));
        assert!(!p.has_for_host(Permission::ServersControl, &b));
        assert!(
            !p.has(Permission::UsersAdmin),
            "global permissions need an unscoped grant"
        );
        assert!(!p.has_global(Permission::HostsRead));
        // rules:write from the scoped admin binding: team a's rules only.
        let own = |t: &str| OwnerScope::parse(t).unwrap();
        assert!(p.covers_owner(Permission::RulesWrite, own(r#"{team="a"}"#).as_ref()));
        assert!(p.covers_owner(
            Permission::RulesWrite,
            own(r#"{team="a", env="prod"}"#).as_ref()
        ));
        assert!(!p.covers_owner(Permission::RulesWrite, own(r#"{team="b"}"#).as_ref()));
        assert!(
            !p.covers_owner(Permission::RulesWrite, None),
            "fleet-wide needs unscoped"
        );
        assert!(!p.has_for_host(Permission::RulesWrite, &a));
        let t = grants(
            &[(permission_names(&builtin_roles()[0].1), String::new())],
            Some(&permission_names(&[Permission::HostsRead])),
        );
        assert_eq!(t.len(), 1, "a token keeps only its subset");
    }
}
