//! Quickstart's admin credentials, each written once to a 0600 file: an API token without a
//! user (every permission; 256 random bits, stored only as a SHA-256 hash) for scripts, and
//! the console's `admin` user with a generated password (stored only as an argon2id hash).

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

/// The console's administrator account.
pub const ADMIN_USER: &str = "admin";

/// What [`write_admin_password`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminPassword {
    /// User `admin` was created; its password is in the file.
    Created,
    /// User `admin` and the file exist from an earlier run.
    Kept,
    /// User `admin` exists but the file is gone: the password must be reset by hand.
    FileMissing,
}

/// Creates user `admin` (role admin on every host) with a generated password written to
/// `path` (mode 0600), unless the user exists. The file is written first, so a password
/// that reached the database is never lost; it is removed again if the database refuses.
pub fn write_admin_password(path: &Path, db: &Path) -> std::io::Result<AdminPassword> {
    use crate::auth::{credential, password};
    use crate::store::admin::with_db;
    use crate::store::query::{roles, users};
    let io = |e: crate::store::StoreError| std::io::Error::other(e.to_string());
    if with_db(db, |c| users::user_id(c, ADMIN_USER))
        .map_err(io)?
        .is_some()
    {
        return Ok(if path.exists() {
            AdminPassword::Kept
        } else {
            AdminPassword::FileMissing
        });
    }
    // 96 random bits as 24 hex digits; a draw the policy refuses (fewer than five distinct
    // digits) is drawn again.
    let secret = loop {
        let candidate = credential::secret()?[..24].to_owned();
        if password::PasswordPolicy::default()
            .check(ADMIN_USER, &candidate)
            .is_ok()
        {
            break candidate;
        }
    };
    let hash = password::hash(&secret).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    let now = crate::now_ms();
    let created = with_db(db, |c| {
        let id = users::create_user(c, ADMIN_USER, &hash, now)?;
        roles::bind(c, id, "admin", "", now)
    });
    if let Err(e) = created {
        let _ = std::fs::remove_file(path);
        return Err(io(e));
    }
    Ok(AdminPassword::Created)
}
