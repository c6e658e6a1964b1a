//! `[auth]`: the password policy and who needs a second factor, as written (raw, with its
//! defaults) and validated into [`AuthSettings`].

use std::path::Path;

use mcpwatch_common::config::{ConfigError, Duration as CfgDuration};
use serde::Deserialize;

use super::password::{PasswordPolicy, MAX_LEN, MIN_LEN_FLOOR};

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Shortest password accepted, in characters (8..=1024). Default 12.
    pub min_password_length: Option<usize>,
    /// Refuse the ~43,000 most common passwords (also with digits or symbols around them).
    /// Default true.
    pub refuse_common_passwords: Option<bool>,
    /// A new password must differ from this many of the user's latest ones, the current one
    /// included (0..=24; 0 or 1: from the current one only). Default 5.
    pub password_history: Option<usize>,
    /// A password older than this must be changed before its account can do anything else
    /// (1d..=3650d). Default: passwords do not expire.
    pub password_max_age: Option<CfgDuration>,
    /// Which local accounts must sign in with a second factor (TOTP): "none", "admins"
    /// (accounts holding `users:admin` or `admin:backup`) or "all". An account that must and has none can
    /// only enrol one after signing in. Default "none".
    pub require_mfa: Option<String>,
}

/// Which accounts need a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MfaRequirement {
    #[default]
    None,
    /// Accounts holding `users:admin` or `admin:backup` (on any scope): those that can
    /// grant themselves anything, or take every hash and sealed secret in a backup.
    Admins,
    All,
}

/// Validated `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthSettings {
    pub password: PasswordPolicy,
    pub require_mfa: MfaRequirement,
}

impl AuthSettings {
    pub fn validate(path: &Path, raw: &RawAuth) -> Result<AuthSettings, ConfigError> {
        let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
        let dflt = PasswordPolicy::default();
        let min_length = raw.min_password_length.unwrap_or(dflt.min_length);
        if !(MIN_LEN_FLOOR..=MAX_LEN).contains(&min_length) {
            return Err(bad("auth.min_password_length", "must be 8..=1024"));
        }
        let history = raw.password_history.unwrap_or(dflt.history);
        if history > 24 {
            return Err(bad("auth.password_history", "must be 0..=24"));
        }
        let max_age_ms = match raw.password_max_age {
            None => None,
            Some(d) => {
                let days = d.get().as_secs() / 86_400;
                if !(1..=3650).contains(&days) {
                    return Err(bad("auth.password_max_age", "must be 1d..=3650d"));
                }
                Some(d.as_millis_i64())
            }
        };
        let require_mfa = match raw.require_mfa.as_deref().unwrap_or("none") {
            "none" => MfaRequirement::None,
            "admins" => MfaRequirement::Admins,
            "all" => MfaRequirement::All,
            _ => {
                return Err(bad(
                    "auth.require_mfa",
                    "must be \"none\", \"admins\" or \"all\"",
                ))
            }
        };
        Ok(AuthSettings {
            password: PasswordPolicy {
                min_length,
                refuse_common: raw.refuse_common_passwords.unwrap_or(dflt.refuse_common),
                history,
                max_age_ms,
            },
            require_mfa,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_settings_defaults_and_bounds() {
        let p = Path::new("/etc/mcpwatch/collector.toml");
        let d = AuthSettings::validate(p, &RawAuth::default()).unwrap();
        assert_eq!(d, AuthSettings::default());
        assert_eq!(d.password.min_length, 12);
        let raw: RawAuth = toml::from_str(
            "min_password_length = 16\npassword_history = 0\npassword_max_age = \"90d\"\nrequire_mfa = \"admins\"\nrefuse_common_passwords = false",
        )
        .unwrap();
        let s = AuthSettings::validate(p, &raw).unwrap();
        assert_eq!(s.password.min_length, 16);
        assert_eq!(s.password.history, 0);
        assert_eq!(s.password.max_age_ms, Some(90 * 86_400_000));
        assert!(!s.password.refuse_common);
        assert_eq!(s.require_mfa, MfaRequirement::Admins);
        for (text, key) in [
            ("min_password_length = 6", "auth.min_password_length"),
            ("password_history = 25", "auth.password_history"),
            ("password_max_age = \"1h\"", "auth.password_max_age"),
            ("require_mfa = \"some\"", "auth.require_mfa"),
        ] {
            let raw: RawAuth = toml::from_str(text).unwrap();
            let err = AuthSettings::validate(p, &raw).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        assert!(toml::from_str::<RawAuth>("min_length = 3").is_err());
    }
}
