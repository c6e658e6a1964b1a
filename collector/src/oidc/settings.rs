//! `[oidc]`: single sign-on through an OpenID Connect provider (authorization code flow with
//! PKCE), and `[[oidc.group_binding]]`, which turns the provider's groups into role bindings.
//! Raw serde structs with their documented defaults, validated into [`OidcSettings`].

use std::path::Path;
use std::time::Duration;

use mcpwatch_common::config::{ConfigError, Duration as CfgDuration};
use serde::Deserialize;

use crate::auth::Scope;
use crate::notify::{Secret, SecretRef};
use crate::store::query::oidc::GroupGrant;

/// The callback route: `redirect_url` must point at it.
pub const CALLBACK_PATH: &str = "/api/v1/oidc/callback";

/// `[oidc]` as written. Setting `issuer` turns single sign-on on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// The provider's issuer URL, exactly as its discovery document states it (`iss` of its
    /// tokens, compared as a string): `https://`, or `http://` on a loopback address only.
    pub issuer: Option<String>,
    /// This collector's client id at the provider.
    pub client_id: Option<String>,
    /// Its client secret: `{ file = "..." }` or `{ env = "..." }` (sent as HTTP Basic).
    pub client_secret: Option<SecretRef>,
    /// Scopes asked for; "openid" is always added. Default ["openid", "profile", "email",
    /// "groups"].
    pub scopes: Option<Vec<String>>,
    /// Where the provider sends the browser back: this collector's public base URL followed
    /// by `/api/v1/oidc/callback`, as registered at the provider.
    pub redirect_url: Option<String>,
    /// The ID-token claim naming the account (lowercased; it must then be 1 to 64 of
    /// `a-z 0-9 . _ -`). Default "preferred_username".
    pub username_claim: Option<String>,
    /// The ID-token claim listing the user's groups (a list of strings, or one string).
    /// Default "groups".
    pub groups_claim: Option<String>,
    /// The provider's name on the console's button ("Sign in with ..."). Default "single
    /// sign-on".
    pub display_name: Option<String>,
    /// Whether accounts made by single sign-on may also sign in with a password an admin set
    /// for them. Default false.
    pub password_login: Option<bool>,
    /// The longest a single sign-on session lasts (at most `[api] session_absolute_timeout`
    /// applies too): removing a user from a group at the provider takes effect within it.
    /// 5m..=7d, default 8h.
    pub session_lifetime: Option<CfgDuration>,
    /// The clock difference with the provider tolerated on `exp` and `iat`. 0s..=5m,
    /// default 60s.
    pub clock_skew: Option<CfgDuration>,
    /// Group → role bindings, recomputed at every sign-in.
    #[serde(default)]
    pub group_binding: Vec<RawGroupBinding>,
}

/// `[[oidc.group_binding]]`: members of `group` get `role` on the hosts `scope` selects.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroupBinding {
    pub group: String,
    pub role: String,
    /// A host selector as bindings take it (`team="a"` or `{team="a"}`); empty or absent:
    /// every host.
    #[serde(default)]
    pub scope: String,
}

/// A validated group binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBinding {
    pub group: String,
    pub grant: GroupGrant,
}

/// Validated `[oidc]`.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Always holds "openid".
    pub scopes: Vec<String>,
    pub redirect_url: String,
    pub username_claim: String,
    pub groups_claim: String,
    pub display_name: String,
    pub password_login: bool,
    pub session_lifetime: Duration,
    pub clock_skew: Duration,
    pub group_bindings: Vec<GroupBinding>,
}

impl OidcSettings {
    /// The bindings a member of `groups` gets, sorted and without repeats.
    pub fn grants_for(&self, groups: &[String]) -> Vec<GroupGrant> {
        let mut out: Vec<GroupGrant> = self
            .group_bindings
            .iter()
            .filter(|b| groups.contains(&b.group))
            .map(|b| b.grant.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `None` when `[oidc]` has no issuer (and no other key).
    pub fn validate(path: &Path, raw: RawOidc) -> Result<Option<OidcSettings>, ConfigError> {
        let bad = |key: &str, msg: &str| ConfigError::invalid(path, &format!("oidc.{key}"), msg);
        let Some(issuer) = raw.issuer else {
            let anything = raw.client_id.is_some()
                || raw.client_secret.is_some()
                || raw.redirect_url.is_some()
                || !raw.group_binding.is_empty();
            return if anything {
                Err(bad("issuer", "is required when [oidc] is configured"))
            } else {
                Ok(None)
            };
        };
        check_url(&issuer).map_err(|m| bad("issuer", &m))?;
        if issuer.contains(['?', '#']) {
            return Err(bad("issuer", "must not carry a query or fragment"));
        }
        let client_id = raw
            .client_id
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| bad("client_id", "is required"))?;
        let reference = raw
            .client_secret
            .filter(SecretRef::is_config_reference)
            .ok_or_else(|| {
                bad(
                    "client_secret",
                    "is required: { file = \"...\" } or { env = \"...\" }",
                )
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let client_secret = reference
            .load("oidc", "client_secret", base)
            .map_err(|e| bad("client_secret", &e.to_string()))?;
        let redirect_url = raw
            .redirect_url
            .ok_or_else(|| bad("redirect_url", "is required"))?;
        check_url(&redirect_url).map_err(|m| bad("redirect_url", &m))?;
        if reqwest::Url::parse(&redirect_url)
            .map(|u| u.path().to_owned())
            .ok()
            .as_deref()
            != Some(CALLBACK_PATH)
        {
            return Err(bad(
                "redirect_url",
                &format!("must be this collector's public URL with the path {CALLBACK_PATH}"),
            ));
        }
        let mut scopes = raw.scopes.unwrap_or_else(|| {
            ["openid", "profile", "email", "groups"]
                .map(str::to_owned)
                .to_vec()
        });
        if scopes.iter().any(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        }) {
            return Err(bad(
                "scopes",
                "each scope must be printable ASCII without spaces",
            ));
        }
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".to_owned());
        }
        let claim = |key: &str, value: Option<String>, default: &str| {
            let v = value.unwrap_or_else(|| default.to_owned());
            if v.is_empty() || v.len() > 128 {
                Err(bad(key, "must be 1 to 128 characters"))
            } else {
                Ok(v)
            }
        };
        let username_claim = claim("username_claim", raw.username_claim, "preferred_username")?;
        let groups_claim = claim("groups_claim", raw.groups_claim, "groups")?;
        let display_name = raw
            .display_name
            .unwrap_or_else(|| "single sign-on".to_owned());
        if display_name.trim().is_empty() || display_name.chars().count() > 64 {
            return Err(bad("display_name", "must be 1 to 64 characters"));
        }
        let session_lifetime = raw
            .session_lifetime
            .map_or(Duration::from_secs(8 * 3600), CfgDuration::get);
        if !(Duration::from_secs(300)..=Duration::from_secs(7 * 86_400)).contains(&session_lifetime)
        {
            return Err(bad("session_lifetime", "must be 5m..=7d"));
        }
        let clock_skew = raw
            .clock_skew
            .map_or(Duration::from_secs(60), CfgDuration::get);
        if clock_skew > Duration::from_secs(300) {
            return Err(bad("clock_skew", "must be at most 5m"));
        }
        let mut group_bindings = Vec::new();
        for (i, b) in raw.group_binding.into_iter().enumerate() {
            let key = format!("group_binding[{i}]");
            if b.group.is_empty() || b.group.len() > 256 {
                return Err(bad(&key, "group must be 1 to 256 characters"));
            }
            crate::store::query::users::check_name("role", &b.role)
                .map_err(|e| bad(&key, &e.to_string()))?;
            // `team="a"` as the issue writes it, or `{team="a"}` as bindings take it.
            let scope = b.scope.trim();
            let braced = if scope.is_empty() || scope.starts_with('{') {
                scope.to_owned()
            } else {
                format!("{{{scope}}}")
            };
            let selector = Scope::normalize(&braced).map_err(|e| bad(&key, &e))?;
            group_bindings.push(GroupBinding {
                group: b.group,
                grant: GroupGrant {
                    role: b.role,
                    selector,
                },
            });
        }
        Ok(Some(OidcSettings {
            issuer,
            client_id,
            client_secret,
            scopes,
            redirect_url,
            username_claim,
            groups_claim,
            display_name,
            password_login: raw.password_login.unwrap_or(false),
            session_lifetime,
            clock_skew,
            group_bindings,
        }))
    }
}

/// Whether the console's cookies are `Secure` (and `__Host-`): as `[api] cookie_secure`
/// says, else when the collector serves TLS itself or single sign-on sends browsers back to
/// an https URL (a proxy in front terminates TLS), so a sibling site cannot plant one. False
/// with such a URL is refused.
pub fn secure_cookies(
    oidc: Option<&OidcSettings>,
    configured: Option<bool>,
    serves_tls: bool,
) -> Result<bool, &'static str> {
    let browsers_on_https = oidc.is_some_and(|o| o.redirect_url.starts_with("https://"));
    match configured {
        Some(false) if browsers_on_https => {
            Err("must not be false with an https [oidc] redirect_url: browsers use https")
        }
        Some(v) => Ok(v),
        None => Ok(serves_tls || browsers_on_https),
    }
}

/// `https://` anywhere, `http://` only to a loopback address (a test provider, or one on
/// the same host): tokens and codes must not cross a network in the clear.
pub(super) fn check_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    let Some(host) = url.host_str() else {
        return Err("must name a host".into());
    };
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be https:// (http:// only on a loopback address)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        oidc: RawOidc,
    }

    fn parse(dir: &Path, text: &str) -> Result<Option<OidcSettings>, String> {
        let raw: File = toml::from_str(text).map_err(|e| e.to_string())?;
        OidcSettings::validate(&dir.join("collector.toml"), raw.oidc).map_err(|e| e.to_string())
    }

    const BASE: &str = "[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"mcpwatch\"\n\
        client_secret = { file = \"oidc-secret\" }\n\
        redirect_url = \"https://watch.example/api/v1/oidc/callback\"\n";

    #[test]
    fn oidc_settings_defaults_group_bindings_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("oidc-secret"), "s3cret\n").unwrap();
        let text = format!(
            "{BASE}scopes = [\"groups\"]\n\
             [[oidc.group_binding]]\ngroup = \"sre\"\nrole = \"operator\"\nscope = 'team=\"a\"'\n\
             [[oidc.group_binding]]\ngroup = \"staff\"\nrole = \"viewer\"\n"
        );
        let s = parse(dir.path(), &text).unwrap().unwrap();
        assert_eq!(s.client_secret.expose(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(s.scopes, ["openid", "groups"]);
        assert_eq!(
            (s.username_claim.as_str(), s.groups_claim.as_str()),
            ("preferred_username", "groups")
        );
        assert_eq!(s.session_lifetime, Duration::from_secs(8 * 3600));
        assert!(!s.password_login);
        let both = s.grants_for(&["staff".into(), "sre".into(), "other".into()]);
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].role, "operator");
        assert_eq!(both[0].selector, Scope::normalize("{team=\"a\"}").unwrap());
        assert!(s.grants_for(&[]).is_empty());

        assert_eq!(
            parse(dir.path(), "[oidc]\n").unwrap().map(|s| s.issuer),
            None
        );
        for (text, want) in [
            (BASE.replace("https://idp", "http://idp"), "oidc.issuer"),
            (
                BASE.replace("/api/v1/oidc/callback", "/cb"),
                "oidc.redirect_url",
            ),
            (
                BASE.replace("{ file = \"oidc-secret\" }", "{ value = \"inline\" }"),
                "oidc.client_secret",
            ),
            ("[oidc]\nclient_id = \"x\"\n".to_owned(), "oidc.issuer"),
            (
                format!("{BASE}session_lifetime = \"1m\"\n"),
                "oidc.session_lifetime",
            ),
            (
                format!("{BASE}[[oidc.group_binding]]\ngroup = \"g\"\nrole = \"Bad Role\"\n"),
                "oidc.group_binding[0]",
            ),
            (format!("{BASE}surprise = 1\n"), "unknown field"),
        ] {
            let err = parse(dir.path(), &text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        // A loopback provider may speak plain HTTP (tests, a provider on the same host).
        let local = BASE
            .replace("https://idp.example", "http://127.0.0.1:9400")
            .replace("https://watch.example", "http://127.0.0.1:9465");
        assert!(parse(dir.path(), &local).unwrap().is_some());
    }
}
