//! Bootstrap tokens for agent enrollment, as the API and the CLI create them: the one set of
//! rules for what a token may say (name rule, labels, uses, lifetime) and the one place its
//! secret is made. The secret is shown once; the database keeps its SHA-256.

use std::collections::BTreeMap;

use crate::auth::credential::{self, Kind};
use crate::store::query::enroll_tokens::NewEnrollToken;

/// Default and longest lifetime of a token.
pub const DEFAULT_LIFETIME_MS: i64 = 24 * 3_600_000;
pub const MAX_LIFETIME_MS: i64 = 365 * 86_400_000;
/// Most uses one token may have (a DaemonSet's token enrolls every node).
pub const MAX_USES: i64 = 100_000;
const MAX_DESCRIPTION: usize = 256;

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub description: String,
    /// One name, or a pattern with `*`; `None`: any name.
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub uses: Option<i64>,
    pub lifetime_ms: Option<i64>,
}

/// A token ready to store, and its secret (shown once, after the row has its id).
pub struct Minted {
    pub row: NewEnrollToken,
    pub secret: String,
}

/// Checks `req` and makes the secret. The error says what to change.
pub fn mint(req: TokenRequest, created_by: &str, now_ms: i64) -> Result<Minted, String> {
    let description = req.description.trim().to_owned();
    if description.chars().count() > MAX_DESCRIPTION || description.chars().any(char::is_control) {
        return Err(format!(
            "description: at most {MAX_DESCRIPTION} printable characters"
        ));
    }
    if let Some(name) = &req.name {
        // A pattern is a name with `*` in it; what is not a star must be a name's characters.
        let plain = name.replace('*', "a");
        if mcpwatch_common::certs::validate_name(&plain).is_err() || name.len() > 253 {
            return Err(format!(
                "name {name:?}: an agent name (letters, digits, '.', '-') or a pattern with '*'"
            ));
        }
    }
    crate::host_labels::validate_labels(&req.labels).map_err(|e| format!("labels: {e}"))?;
    let uses = req.uses.unwrap_or(1);
    if !(1..=MAX_USES).contains(&uses) {
        return Err(format!("uses must be 1..={MAX_USES}"));
    }
    let lifetime = req.lifetime_ms.unwrap_or(DEFAULT_LIFETIME_MS);
    if !(1..=MAX_LIFETIME_MS).contains(&lifetime) {
        return Err("expires must be positive and at most 365d".into());
    }
    let secret = credential::secret().map_err(|e| e.to_string())?;
    Ok(Minted {
        row: NewEnrollToken {
            hash: credential::hash(&secret),
            description,
            name: req.name,
            labels: req.labels,
            max_uses: uses,
            expires_ms: now_ms.saturating_add(lifetime),
            created_by: created_by.to_owned(),
        },
        secret,
    })
}

/// The token string handed out once.
pub fn format(id: i64, secret: &str) -> String {
    credential::format(Kind::Enroll, id, secret)
}

/// `(id, secret)` of a presented token; `None` for anything that is not one.
pub fn parse(text: &str) -> Option<(i64, &str)> {
    match credential::parse(text.trim())? {
        (Kind::Enroll, id, secret) => Some((id, secret)),
        _ => None,
    }
}

/// `team=a,env=prod` as labels (the CLI's form).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected name=value"))?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_their_secret_is_only_hashed() {
        let req = TokenRequest {
            name: Some("web-*".into()),
            labels: parse_labels("team=a, env=prod").unwrap(),
            uses: Some(3),
            ..Default::default()
        };
        let m = mint(req, "user:admin", 1_000).unwrap();
        assert_eq!(m.row.max_uses, 3);
        assert_eq!(m.row.expires_ms, 1_000 + DEFAULT_LIFETIME_MS);
        assert_eq!(m.row.labels["team"], "a");
        assert_eq!(m.row.hash, credential::hash(&m.secret));
        let text = format(7, &m.secret);
        assert_eq!(parse(&text), Some((7, m.secret.as_str())));
        assert_eq!(parse(&credential::format(Kind::Token, 7, &m.secret)), None);
        for bad in [
            TokenRequest {
                name: Some("a b".into()),
                ..Default::default()
            },
            TokenRequest {
                uses: Some(0),
                ..Default::default()
            },
            TokenRequest {
                lifetime_ms: Some(0),
                ..Default::default()
            },
            TokenRequest {
                labels: parse_labels("host=x").unwrap(),
                ..Default::default()
            },
        ] {
            assert!(mint(bad, "cli", 0).is_err());
        }
        assert!(parse_labels("novalue").is_err());
    }
}
