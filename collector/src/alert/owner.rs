//! Owner scopes: a rule, receiver or route a team owns carries a host selector in the
//! syntax of role bindings (`{team="a"}`). It only ever sees hosts inside it: a rule
//! evaluates only their series, a receiver and a route get only their alerts. What an owner
//! scope is matched against is a host's scope labels (its operator labels plus `host`), never
//! an alert's own labels, which a rule could choose.

use super::route::{matches_all, parse_matchers};
use super::selector::{Labels, Matcher};

#[derive(Debug, Clone)]
pub struct OwnerScope {
    selector: String,
    matchers: Vec<Matcher>,
}

impl PartialEq for OwnerScope {
    fn eq(&self, other: &Self) -> bool {
        self.selector == other.selector
    }
}

impl OwnerScope {
    /// `None` for an empty text or `{}` (fleet-wide: no owner); otherwise the selector,
    /// checked.
    pub fn parse(text: &str) -> Result<Option<OwnerScope>, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(None);
        }
        let matchers = parse_matchers(t).map_err(|e| format!("owner scope: {e}"))?;
        if matchers.is_empty() {
            return Ok(None);
        }
        Ok(Some(OwnerScope {
            selector: t.to_owned(),
            matchers,
        }))
    }

    /// The selector as written (trimmed).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// Whether the host with these scope labels is inside. A host whose labels are unknown
    /// (`None`) is inside no owner scope.
    pub fn covers(&self, scope_labels: Option<&Labels>) -> bool {
        scope_labels.is_some_and(|l| matches_all(&self.matchers, l))
    }

    /// Whether every host this scope covers is surely covered by a grant with `outer`'s
    /// matchers: each of those matchers appears in this scope as well (same label,
    /// operator and value). Deliberately syntactic, so it never says yes wrongly:
    /// `{team="a", env="prod"}` is within `{team="a"}`; `{team=~"a"}` is not within
    /// `{team="a"}` although it covers the same hosts.
    pub fn within(&self, outer: &[Matcher]) -> bool {
        outer.iter().all(|o| {
            self.matchers
                .iter()
                .any(|m| m.label == o.label && m.op == o.op && m.value == o.value)
        })
    }
}

/// Whether an object with this owner (`None`: fleet-wide) reaches the host with these scope
/// labels (`None`: no host, or its labels unknown). Fleet-wide objects reach everything.
pub fn reaches(owner: Option<&OwnerScope>, scope_labels: Option<&Labels>) -> bool {
    owner.is_none_or(|o| o.covers(scope_labels))
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
    fn alert_owner_scope_covers_and_nests() {
        assert!(OwnerScope::parse("").unwrap().is_none());
        assert!(OwnerScope::parse(" {} ").unwrap().is_none());
        assert!(OwnerScope::parse("team=a").is_err());
        let a = OwnerScope::parse(r#"{team="a"}"#).unwrap().unwrap();
        let a_prod = OwnerScope::parse(r#"{team="a", env="prod"}"#)
            .unwrap()
            .unwrap();
        let b = OwnerScope::parse(r#"{team="b"}"#).unwrap().unwrap();
        assert!(a.covers(Some(&labels(&[("host", "h"), ("team", "a")]))));
        assert!(!a.covers(Some(&labels(&[("host", "h"), ("team", "b")]))));
        assert!(!a.covers(None), "unknown hosts are outside");
        let a_matchers = parse_matchers(r#"{team="a"}"#).unwrap();
        assert!(a.within(&a_matchers));
        assert!(a_prod.within(&a_matchers));
        assert!(!b.within(&a_matchers));
        let re = OwnerScope::parse(r#"{team=~"a"}"#).unwrap().unwrap();
        assert!(!re.within(&a_matchers), "syntactic: never a false yes");
        assert!(reaches(None, None));
        assert!(!reaches(Some(&a), None));
    }
}
