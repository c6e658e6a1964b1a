//! Second factors of local accounts: TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step
//! of skew either way, as every authenticator app expects) through `totp-rs`, the
//! `otpauth://` URI and its QR code drawn as SVG, and one-time recovery codes. Which step a
//! code matched is returned so the store can accept each step once (the library leaves
//! replay to its caller).

use std::fmt::Write as _;

use qrcodegen::{QrCode, QrCodeEcc};
use ring::rand::{SecureRandom, SystemRandom};
use totp_rs::{Builder, Totp};

/// The issuer authenticator apps show beside the account.
pub const ISSUER: &str = "mcpwatch";
/// Secret length: 160 bits, RFC 4226's recommendation.
const SECRET_LEN: usize = 20;
/// Recovery codes handed out at confirmation.
pub const RECOVERY_CODES: usize = 10;

/// What a user needs to add the factor to an app.
#[derive(Clone)]
pub struct Enrollment {
    /// The secret in base32, for typing in by hand.
    pub secret_base32: String,
    pub uri: String,
    /// The URI as a QR code, a standalone SVG document.
    pub qr_svg: String,
}

/// Never printed: every field holds the secret.
impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrollment(<secret>)")
    }
}

/// A fresh random secret.
pub fn new_secret() -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; SECRET_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "OS random source failed".to_owned())?;
    Ok(bytes)
}

fn totp(secret: &[u8], account: &str) -> Result<Totp, String> {
    Builder::new()
        .with_secret(secret.to_vec())
        .with_account_name(account)
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| format!("TOTP: {e}"))
}

/// `secret` in base32 (how it is sealed and stored), and back.
pub fn to_base32(secret: &[u8]) -> String {
    totp_rs::Secret::from(secret.to_vec()).to_base32()
}

pub fn from_base32(text: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::try_from_base32(text)
        .ok()
        .map(|s| s.as_ref().to_vec())
}

/// The enrollment of `secret` for `account` (a username: never holds ':').
pub fn enrollment(secret: &[u8], account: &str) -> Result<Enrollment, String> {
    let t = totp(secret, account)?;
    let uri = t.to_url().map_err(|e| format!("TOTP: {e}"))?;
    let qr_svg = qr_svg(&uri)?;
    Ok(Enrollment {
        secret_base32: t.secret().to_base32(),
        uri,
        qr_svg,
    })
}

/// The time step `code` is valid for at `now_s` (the current step or one either side), if
/// any. Codes are compared whole, in constant time by the library.
pub fn matching_step(secret: &[u8], code: &str, now_s: u64) -> Option<i64> {
    let code = digits(code)?;
    let t = totp(secret, "x").ok()?;
    t.check(&code, now_s).and_then(|s| i64::try_from(s).ok())
}

/// A TOTP code as typed ("123 456" as apps show it) as its six digits, if it is one.
fn digits(code: &str) -> Option<String> {
    let bare: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (bare.len() == 6 && bare.bytes().all(|b| b.is_ascii_digit())).then_some(bare)
}

/// The code for `at_s` (tests play the authenticator app with it).
pub fn code_at(secret: &[u8], at_s: u64) -> Result<String, String> {
    Ok(totp(secret, "x")?.generate(at_s).to_string())
}

/// Whether `code` has the shape of a TOTP code (else it is taken for a recovery code).
pub fn looks_like_totp(code: &str) -> bool {
    digits(code).is_some()
}

/// Ten fresh recovery codes, `xxxx-xxxx-xxxx-xxxx` of lowercase base32 (80 random bits
/// each, enough that hashing them with SHA-256 alone resists an offline search of a stolen
/// database).
pub fn recovery_codes() -> Result<Vec<String>, String> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let rng = SystemRandom::new();
    let mut out = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes)
            .map_err(|_| "OS random source failed".to_owned())?;
        let mut code = String::with_capacity(19);
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                code.push('-');
            }
            code.push(char::from(ALPHABET[usize::from(b % 32)]));
        }
        out.push(code);
    }
    Ok(out)
}

/// A recovery code as typed (any case, spaces or dashes anywhere) in its stored form.
pub fn normalize_recovery(code: &str) -> String {
    let bare: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut out = String::with_capacity(19);
    for (i, c) in bare.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// `text` as a QR code in SVG: dark modules as one path, a 4-module quiet zone, scalable.
fn qr_svg(text: &str) -> Result<String, String> {
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium)
        .map_err(|_| "the TOTP URI is too long for a QR code".to_owned())?;
    let size = qr.size();
    let full = size + 8;
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                let _ = write!(path, "M{},{}h1v1h-1z", x + 4, y + 4);
            }
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {full} {full}\" shape-rendering=\"crispEdges\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_codes_match_their_step_and_nothing_else() {
        // RFC 6238 appendix B, SHA-1: "12345678901234567890" at 59 s gives 94287082 (8
        // digits); the 6-digit code is its last six.
        let rfc = b"12345678901234567890";
        assert_eq!(code_at(rfc, 59).unwrap(), "287082");
        assert_eq!(matching_step(rfc, "287082", 59), Some(1));
        // One step of skew either way, no more.
        assert_eq!(matching_step(rfc, "287082", 89), Some(1));
        assert_eq!(matching_step(rfc, "287082", 150), None);
        assert_eq!(matching_step(rfc, "28708", 59), None);
        assert_eq!(matching_step(rfc, "28708a", 59), None);
        assert!(looks_like_totp(" 287082 "));
        assert!(looks_like_totp("287 082"));
        assert_eq!(matching_step(rfc, "287 082", 59), Some(1));
        assert!(!looks_like_totp("abcd-efgh-ijkl"));
    }

    #[test]
    fn totp_enrollment_gives_uri_qr_and_base32() {
        let secret = new_secret().unwrap();
        assert_eq!(secret.len(), 20);
        let e = enrollment(&secret, "alice").unwrap();
        assert!(
            e.uri.starts_with("otpauth://totp/mcpwatch:alice?"),
            "{}",
            e.uri
        );
        assert!(e.uri.contains(&format!("secret={}", e.secret_base32)));
        assert!(e.qr_svg.starts_with("<svg") && e.qr_svg.contains("<path d=\"M"));
        assert_eq!(e.secret_base32.len(), 32);
        assert_eq!(from_base32(&to_base32(&secret)).unwrap(), secret);
    }

    #[test]
    fn totp_recovery_codes_are_distinct_and_normalize() {
        let codes = recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        for c in &codes {
            assert_eq!(c.len(), 19);
            assert_eq!(&normalize_recovery(&c.to_uppercase().replace('-', " ")), c);
        }
    }
}
