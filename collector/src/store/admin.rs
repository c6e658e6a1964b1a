//! Administrative writes that happen outside the collector process (quickstart, the admin
//! CLI): they open their own connection, bring the schema up to date and write directly.

use std::path::Path;

use rusqlite::Connection;

use super::{schema, StoreError};

/// Records an API token by the hash of its secret; the secret itself is never stored.
pub fn insert_token_hash(db: &Path, name: &str, hash: &str) -> Result<(), StoreError> {
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut conn = Connection::open(db)?;
    schema::configure_writer(&conn)?;
    schema::migrate(&mut conn)?;
    conn.execute(
        "INSERT INTO api_tokens (name, hash, created_ms) VALUES (?1, ?2, ?3)",
        rusqlite::params![name, hash, super::wall_clock_ms()],
    )?;
    Ok(())
}
