//! Passwords: argon2id hashes (PHC strings with their own salt and parameters) and the
//! password policy (length, the bundled common-password list, the username, expiry; reuse
//! is checked against stored hashes by the API).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

/// The shortest minimum length a policy may set, and the default.
pub const MIN_LEN_FLOOR: usize = 8;
pub const DEFAULT_MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 1024;

/// The most common passwords of 6 characters or more, lowercased, most common first: the
/// `passwords` list of zxcvbn-ts (`@zxcvbn-ts/language-common` 4.1.3, MIT), itself drawn
/// from leaked-password frequency counts.
const COMMON: &str = include_str!("common_passwords.txt");

fn common() -> &'static std::collections::HashSet<&'static str> {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    SET.get_or_init(|| COMMON.lines().filter(|l| !l.is_empty()).collect())
}

/// Whether `password` is a common one, or a common one with digits and symbols around it
/// ("Password2024!", "!!dragon123456"), or a common word padded with fewer than four other
/// letters ("Password1ab"): compared lowercased, as attackers' rule-based guessing tries
/// them. A passphrase holding a common word among others ("Sunshine-Granite-42") passes.
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let set = common();
    if set.contains(lower.as_str()) {
        return true;
    }
    let filler = |c: char| c.is_ascii_digit() || c.is_ascii_punctuation() || c == ' ';
    let core = lower.trim_matches(filler);
    if core.len() >= 6 && set.contains(core) {
        return true;
    }
    let letters = lower.chars().filter(|c| c.is_alphabetic()).count();
    lower
        .split(|c: char| !c.is_alphabetic())
        .filter(|run| run.chars().count() >= 6 && set.contains(run))
        .any(|run| letters - run.chars().count() < 4)
}

/// The password policy (`[auth]`): what every route that sets a password checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// In characters, at least [`MIN_LEN_FLOOR`].
    pub min_length: usize,
    /// Refuse the bundled list of common passwords ([`is_common`]).
    pub refuse_common: bool,
    /// A new password must differ from this many of the user's latest ones, the current one
    /// included (0: no check).
    pub history: usize,
    /// A password older than this must be changed before the account can do anything else.
    pub max_age_ms: Option<i64>,
}

impl Default for PasswordPolicy {
    fn default() -> PasswordPolicy {
        PasswordPolicy {
            min_length: DEFAULT_MIN_LEN,
            refuse_common: true,
            history: 5,
            max_age_ms: None,
        }
    }
}

impl PasswordPolicy {
    /// Why `password` is refused for `username`, before any history check. Never contains
    /// the password.
    pub fn check(&self, username: &str, password: &str) -> Result<(), String> {
        let n = password.chars().count();
        if n < self.min_length {
            return Err(format!(
                "password must have at least {} characters",
                self.min_length
            ));
        }
        if n > MAX_LEN {
            return Err(format!("password must have at most {MAX_LEN} characters"));
        }
        if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
            return Err("password must not contain the username".into());
        }
        let distinct: std::collections::HashSet<char> = password.chars().collect();
        if distinct.len() < 5 {
            return Err("password must use at least 5 different characters".into());
        }
        if self.refuse_common && is_common(password) {
            return Err(
                "password is one of the most common passwords (or one with a few characters added); choose another"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether a password set at `changed_ms` must be changed at `now_ms`.
    pub fn expired(&self, changed_ms: i64, now_ms: i64) -> bool {
        self.max_age_ms
            .is_some_and(|max| now_ms.saturating_sub(changed_ms) >= max)
    }
}

/// An argon2id PHC string for `password`.
pub fn hash(password: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "OS random source failed".to_owned())?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Whether `password` matches the stored PHC string (constant time inside argon2).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so a login for an unknown name
/// takes as long as one with a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("dummy-password-for-timing").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_password_hash_verify_and_policy() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterx", &h));
        assert!(!verify("x", "not a phc string"));
        let policy = PasswordPolicy::default();
        assert!(policy.check("alice", "short").is_err());
        assert!(policy.check("alice", "aaaaaaaaaaaaaaaa").is_err());
        assert!(policy.check("alice", "my-alice-password-1").is_err());
        assert!(policy.check("alice", "correct horse battery").is_ok());
        let longer = PasswordPolicy {
            min_length: 24,
            ..PasswordPolicy::default()
        };
        let err = longer.check("alice", "correct horse battery").unwrap_err();
        assert_eq!(err, "password must have at least 24 characters");
    }

    #[test]
    fn auth_password_common_ones_are_refused_with_digits_and_case_around_them() {
        for weak in [
            "qwerty123456",
            "1qaz2wsx3edc",
            "Password2024!",
            "!!Dragon123456",
            "iloveyou12345",
            "Password1ab!",
            "xy-sunshine-2024",
        ] {
            assert!(is_common(weak), "{weak}");
            let err = PasswordPolicy::default().check("alice", weak).unwrap_err();
            assert!(err.contains("most common"), "{weak}: {err}");
        }
        for fine in [
            "correct horse battery",
            "tundra-kettle-fig-42",
            "Monkey business tree",
            "Sunshine-Granite-42",
        ] {
            assert!(!is_common(fine), "{fine}");
        }
        let lenient = PasswordPolicy {
            refuse_common: false,
            ..PasswordPolicy::default()
        };
        assert!(lenient.check("alice", "qwerty123456").is_ok());
        assert!(common().len() > 40_000);
    }

    #[test]
    fn auth_password_expiry_follows_max_age() {
        let policy = PasswordPolicy {
            max_age_ms: Some(1_000),
            ..PasswordPolicy::default()
        };
        assert!(!policy.expired(10_000, 10_999));
        assert!(policy.expired(10_000, 11_000));
        assert!(!PasswordPolicy::default().expired(0, i64::MAX));
    }
}
