//! Bearer credentials: `mcpw_<id>_<secret>` for API tokens and `mcps_<id>_<secret>` for
//! login sessions; `mcpe_<id>_<secret>` for enrollment tokens (never accepted as a bearer).
//! The secret is 256 bits from the OS; the database keeps only its SHA-256, found by id and
//! compared in constant time, so neither a database reader nor a timing attacker learns a
//! usable credential.

use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Token,
    Session,
    /// A bootstrap token for agent enrollment: never a bearer credential.
    Enroll,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Token => "mcpw_",
            Kind::Session => "mcps_",
            Kind::Enroll => "mcpe_",
        }
    }
}

/// A fresh secret: 64 hex digits.
pub fn secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("OS random source failed"))?;
    Ok(mcpwatch_common::hex::encode(&bytes))
}

/// The string handed to the user once.
pub fn format(kind: Kind, id: i64, secret: &str) -> String {
    format!("{}{id}_{secret}", kind.prefix())
}

/// Splits a presented credential; `None` for anything malformed.
pub fn parse(text: &str) -> Option<(Kind, i64, &str)> {
    let (kind, rest) = if let Some(r) = text.strip_prefix(Kind::Token.prefix()) {
        (Kind::Token, r)
    } else if let Some(r) = text.strip_prefix(Kind::Session.prefix()) {
        (Kind::Session, r)
    } else if let Some(r) = text.strip_prefix(Kind::Enroll.prefix()) {
        (Kind::Enroll, r)
    } else {
        return None;
    };
    let (id, secret) = rest.split_once('_')?;
    let id: i64 = id.parse().ok().filter(|i| *i > 0)?;
    (secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((kind, id, secret))
}

/// Hex SHA-256 of a secret: what the database stores.
pub fn hash(secret: &str) -> String {
    mcpwatch_common::hex::encode(
        ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref(),
    )
}

/// The CSRF token of a browser session: hex SHA-256 of a fixed label and the session's
/// secret. Derived, not stored: only the holder of the (HttpOnly) session cookie's secret
/// can know it, so a token planted by another site never matches.
pub fn csrf_token(secret: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"mcpwatch-csrf\0");
    ctx.update(secret.as_bytes());
    mcpwatch_common::hex::encode(ctx.finish().as_ref())
}

pub use mcpwatch_common::secret::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_credentials_parse_and_compare() {
        let s = secret().unwrap();
        assert_eq!(s.len(), 64);
        let t = format(Kind::Token, 42, &s);
        assert_eq!(parse(&t), Some((Kind::Token, 42, s.as_str())));
        assert_eq!(
            parse(&format(Kind::Session, 7, &s)).unwrap().0,
            Kind::Session
        );
        for bad in [
            "",
            "mcpw_",
            "mcpw_x_ab",
            "mcpw_0_",
            "bearer",
            "mcpw_1_zz",
            "mcps_-1_00",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(constant_time_eq(&hash(&s), &hash(&s)));
        assert!(!constant_time_eq(&hash(&s), &hash("other")));
        assert!(!constant_time_eq("a", "ab"));
        let csrf = csrf_token(&s);
        assert_eq!(csrf.len(), 64);
        assert_eq!(csrf, csrf_token(&s));
        assert_ne!(csrf, hash(&s), "the CSRF token is not the stored hash");
        assert_ne!(csrf, csrf_token(&secret().unwrap()));
    }
}
