//! Admin API token creation for quickstart and the admin CLI: 256 random bits from the OS,
//! shown once, stored only as a SHA-256 hash.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

/// A new token: `mcpw_` + 64 hex digits (256 bits).
pub fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("OS random source failed"))?;
    let mut out = String::from("mcpw_");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// Hex SHA-256 of a token: what the database keeps.
pub fn hash(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a new admin token to `path` (mode 0600) and records its hash in the database.
pub fn write_admin_token(path: &Path, db: &Path) -> std::io::Result<()> {
    let token = generate()?;
    crate::store::admin::insert_token_hash(db, "admin", &hash(&token))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
