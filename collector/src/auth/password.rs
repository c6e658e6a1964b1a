//! Passwords: argon2id hashes (PHC strings with their own salt and parameters) and the
//! password policy.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 1024;

/// Why a password is refused. Never contains the password.
pub fn check_policy(username: &str, password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(format!("password must have at least {MIN_LEN} characters"));
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
    Ok(())
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
        assert!(check_policy("alice", "short").is_err());
        assert!(check_policy("alice", "aaaaaaaaaaaaaaaa").is_err());
        assert!(check_policy("alice", "my-alice-password-1").is_err());
        assert!(check_policy("alice", "correct horse battery").is_ok());
    }
}
