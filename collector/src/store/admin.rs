//! Administrative writes that happen outside the collector process (quickstart, the admin
//! CLI): they open their own connection, bring the schema up to date and write directly,
//! holding the database's administrative lock shared so a restore never runs under them.

use std::path::Path;

use rusqlite::Connection;

use super::lock::DbLock;
use super::{schema, StoreError};

/// A connection for one administrative command, with the lock that keeps a restore out
/// until it is dropped.
#[derive(Debug)]
pub struct AdminDb {
    conn: Connection,
    _lock: DbLock,
}

impl std::ops::Deref for AdminDb {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for AdminDb {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Opens (creating and migrating if needed) the database for an administrative command.
/// Fails at once while a restore runs; waits up to 10 s for a running collector's writer to
/// let go of SQLite's lock.
pub fn open(db: &Path) -> Result<AdminDb, StoreError> {
    let lock = DbLock::acquire_admin_shared(db)?;
    let created = !db.exists();
    let directory = super::lock::owner_reference(db);
    let mut conn = Connection::open(db)?;
    // Before anything else: even the journal-mode pragma may wait for the collector.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    schema::configure_writer(&conn)?;
    schema::migrate(&mut conn)?;
    if created {
        // A first command run as root (quickstart under sudo) leaves the files to the
        // directory's owner, the collector's user.
        // Never through an ordinary descriptor: closing it would release SQLite's locks.
        for suffix in ["", "-wal", "-shm"] {
            let path = super::lock::beside(db, suffix);
            match super::lock::adopt_owner_of_path(&path, &directory) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                result => result.map_err(|source| StoreError::Io { path, source })?,
            }
        }
    }
    Ok(AdminDb { conn, _lock: lock })
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

/// Audits an admin command run on the collector's host, under the same action name as the
/// API route doing the same (`PUT /api/v1/users/{id}/password`), so one filter finds both;
/// actor and source are `cli`.
pub fn audit_cli(
    c: &Connection,
    now_ms: i64,
    action: &str,
    object: String,
    detail: String,
) -> Result<(), StoreError> {
    crate::store::query::audit::insert_audit(
        c,
        &crate::store::query::audit::AuditEntry {
            at_ms: now_ms,
            actor: "cli".to_owned(),
            token_id: None,
            session_id: None,
            source: "cli".to_owned(),
            action: action.to_owned(),
            object,
            result: 200,
            detail,
            request_id: None,
        },
    )
    .map(|_| ())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    /// Whether this process holds a POSIX lock on the file with inode `ino` (`/proc/locks`:
    /// `N: POSIX ADVISORY READ PID MAJ:MIN:INODE START END`).
    fn holds_lock_on(ino: u64) -> bool {
        let me = std::process::id().to_string();
        let inode = format!(":{ino}");
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.windows(2).any(|w| w[0] == me && w[1].ends_with(&inode))
            })
    }

    /// Creating a database must leave SQLite's locks in place: with them dropped, another
    /// process opening the database truncates the `-shm` this one has mapped (the quickstart
    /// died of SIGBUS that way while a test read its database).
    #[test]
    fn creating_a_database_keeps_sqlites_locks_on_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let conn = super::open(&db).unwrap();
        let shm = std::fs::metadata(super::super::lock::beside(&db, "-shm")).unwrap();
        assert!(holds_lock_on(shm.ino()), "the -shm's lock was dropped");
        drop(conn);
    }
}
