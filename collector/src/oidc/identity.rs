//! Who a verified ID token says signed in: the account name from the configured claim
//! (lowercased, held to the rules of local user names), the groups from the configured
//! claim, and the subject, namespaced by the issuer so two providers never share one.

use super::error::OidcError;
use super::relying_party::Claims;
use super::settings::OidcSettings;
use crate::store::query::users::check_name;

/// Groups read from a token at most (beyond: refused, not cut, so no binding depends on
/// which ones happened to come first).
const MAX_GROUPS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `<issuer>\n<sub>`: what the account is found by.
    pub subject: String,
    pub username: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn from_claims(settings: &OidcSettings, claims: &Claims) -> Result<Identity, OidcError> {
        let all = serde_json::to_value(claims).map_err(|e| OidcError::BadAnswer(e.to_string()))?;
        Identity::from_json(settings, claims.subject().as_str(), &all)
    }

    fn from_json(
        settings: &OidcSettings,
        sub: &str,
        all: &serde_json::Value,
    ) -> Result<Identity, OidcError> {
        let claim_error = |claim: &str, why: &str| OidcError::Claim {
            claim: claim.to_owned(),
            why: why.to_owned(),
        };
        let name_claim = &settings.username_claim;
        let username = all
            .get(name_claim)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| claim_error(name_claim, "missing or not a string"))?
            .to_lowercase();
        check_name("username", &username).map_err(|e| claim_error(name_claim, &e.to_string()))?;
        let groups_claim = &settings.groups_claim;
        let groups: Vec<String> = match all.get(groups_claim) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(items)) => {
                if items.len() > MAX_GROUPS {
                    return Err(claim_error(groups_claim, "more than 512 groups"));
                }
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| claim_error(groups_claim, "not a list of strings"))?
            }
            Some(_) => return Err(claim_error(groups_claim, "not a list of strings")),
        };
        Ok(Identity {
            subject: format!("{}\n{sub}", settings.issuer),
            username,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> OidcSettings {
        OidcSettings {
            issuer: "https://idp.test".into(),
            client_id: "c".into(),
            client_secret: crate::notify::Secret::new("s"),
            scopes: vec!["openid".into()],
            redirect_url: "https://w.test/api/v1/oidc/callback".into(),
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            display_name: "IdP".into(),
            password_login: false,
            session_lifetime: std::time::Duration::from_secs(3600),
            clock_skew: std::time::Duration::from_secs(60),
            group_bindings: vec![],
        }
    }

    #[test]
    fn oidc_identity_takes_name_and_groups_from_the_configured_claims() {
        let s = settings();
        let id = Identity::from_json(
            &s,
            "sub-1",
            &json!({"preferred_username": "Alice", "groups": ["sre", "staff"]}),
        )
        .unwrap();
        assert_eq!(id.subject, "https://idp.test\nsub-1");
        assert_eq!(id.username, "alice");
        assert_eq!(id.groups, ["sre", "staff"]);
        let one = Identity::from_json(
            &s,
            "x",
            &json!({"preferred_username": "bob", "groups": "sre"}),
        );
        assert_eq!(one.unwrap().groups, ["sre"]);
        let none = Identity::from_json(&s, "x", &json!({"preferred_username": "bob"}));
        assert!(none.unwrap().groups.is_empty());
        for bad in [
            json!({"groups": []}),
            json!({"preferred_username": "not a name!"}),
            json!({"preferred_username": "bob", "groups": [1, 2]}),
            json!({"preferred_username": "bob", "groups": {"a": 1}}),
        ] {
            let e = Identity::from_json(&s, "x", &bad).unwrap_err();
            assert_eq!(e.code(), "claims", "{bad}");
        }
    }
}
