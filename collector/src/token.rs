//! Quickstart's admin API token: a credential without a user (every permission), 256
//! random bits from the OS, written once to a 0600 file, stored only as a SHA-256 hash.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a new admin token (every permission, no user) to `path` (mode 0600) and records
/// the hash of its secret in the database.
pub fn write_admin_token(path: &Path, db: &Path) -> std::io::Result<()> {
    use crate::auth::credential;
    let secret = credential::secret()?;
    let id = crate::store::admin::insert_token_hash(db, "admin", &credential::hash(&secret))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = credential::format(credential::Kind::Token, id, &secret);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
