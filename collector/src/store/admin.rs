//! Administrative writes that happen outside the collector process (quickstart, the admin
//! CLI): they open their own connection, bring the schema up to date and write directly.

use std::path::Path;

use rusqlite::Connection;

use super::{schema, StoreError};

/// Opens (creating and migrating if needed) the database for an administrative command.
/// Waits up to 10 s for a running collector's writer to let go of the lock.
pub fn open(db: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut conn = Connection::open(db)?;
    // Before anything else: even the journal-mode pragma may wait for the collector.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    schema::configure_writer(&conn)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Runs `f` in one transaction on a freshly opened database connection.
pub fn with_db<T>(
    db: &Path,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut conn = open(db)?;
    // IMMEDIATE takes the write lock up front: a deferred transaction that reads first
    // fails with "database is locked" (no busy wait) if the running collector commits
    // between its read and its write.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// Records an API token without a user (every permission) by the hash of its secret; the
/// secret itself is never stored. Returns the token id.
pub fn insert_token_hash(db: &Path, name: &str, hash: &str) -> Result<i64, StoreError> {
    with_db(db, |c| {
        super::query::tokens::create_token(
            c,
            name,
            None,
            None,
            None,
            hash,
            mcpwatch_common::time::now_ms(),
        )
    })
}
