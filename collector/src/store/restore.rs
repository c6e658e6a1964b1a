//! Putting a backup in place of the database: only while no collector holds it (the
//! database lock), only an intact mcpwatch file no newer than this build, migrated up to
//! this build's schema before it replaces anything, and installed by one rename over the
//! live database, which is kept under a second name with its WAL (whose pages belong to it
//! and must never be applied to the restored file), never deleted.
//!
//! What the restored file means for the rest of the system is decided here too: browser
//! sessions are ended (they were live at backup time and may have been revoked since),
//! and the restore is appended to the audit chain so the history shows the jump back.

use std::path::{Path, PathBuf};

use mcpwatch_common::durable_file;
use rusqlite::{params, Connection};

use super::lock::{self, DbLock};
use super::query::audit::{insert_audit, AuditEntry};
use super::{backup, schema, StoreError};

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Schema version of the backup file, and after migration.
    pub schema_from: i64,
    pub schema_to: i64,
    /// Where the database that was in place went (absent when there was none).
    pub previous: Option<PathBuf>,
    /// Per agent, the last batch seq the restored database holds: each agent's resume point.
    pub agents: Vec<(String, i64)>,
    /// Browser sessions ended.
    pub sessions_ended: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Restores `from` into `db` at `now_ms`, by `actor` (for the audit record).
pub fn restore(from: &Path, db: &Path, actor: &str, now_ms: i64) -> Result<Restored, StoreError> {
    let _lock = DbLock::acquire(db, "restore")?;
    let _commands = DbLock::acquire_admin_exclusive(db)?;
    // Checked before anything is created, for a clear message; checked again on the copy,
    // which is what gets installed (the file at `from` could change in between).
    backup::verify(from)?;
    let tmp = durable_file::temp_path(db);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let result = (|| {
        {
            let mut src = std::fs::File::open(from).map_err(io(from))?;
            let mut dst = durable_file::create_new(&tmp, 0o600).map_err(io(&tmp))?;
            lock::adopt_owner(&dst, &lock::owner_reference(db)).map_err(io(&tmp))?;
            std::io::copy(&mut src, &mut dst).map_err(io(&tmp))?;
        }
        let schema_from = backup::verify(&tmp)?;
        let sessions_ended = prepare(&tmp, schema_from, actor, now_ms)?;
        let schema_to = backup::verify(&tmp)?;
        let agents = resume_points(&tmp)?;
        let previous = move_aside(db, now_ms)?;
        durable_file::commit(&tmp, db).map_err(io(db))?;
        Ok(Restored {
            schema_from,
            schema_to,
            previous,
            agents,
            sessions_ended,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Migrates the copy, ends its sessions and records the restore, in rollback-journal mode
/// so the copy stays one file until it is renamed into place.
fn prepare(tmp: &Path, schema_from: i64, actor: &str, now_ms: i64) -> Result<usize, StoreError> {
    let mut conn = Connection::open(tmp)?;
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE; PRAGMA foreign_keys = ON; PRAGMA trusted_schema = OFF;",
    )?;
    schema::migrate(&mut conn)?;
    let tx = conn.transaction()?;
    let ended = tx.execute("DELETE FROM sessions", [])?;
    insert_audit(
        &tx,
        &AuditEntry {
            at_ms: now_ms,
            actor: actor.to_owned(),
            token_id: None,
            session_id: None,
            source: "cli".to_owned(),
            action: "store.restore".to_owned(),
            object: "database".to_owned(),
            result: 200,
            detail: format!(
                "restored from a backup at schema {schema_from}; {ended} browser sessions ended"
            ),
            request_id: None,
        },
    )?;
    tx.commit()?;
    Ok(ended)
}

fn resume_points(db: &Path) -> Result<Vec<(String, i64)>, StoreError> {
    let conn = Connection::open(db)?;
    let mut stmt = conn.prepare(
        "SELECT h.agent_id, s.last_seq FROM agent_seq s JOIN hosts h ON h.id = s.host_id
         ORDER BY h.agent_id",
    )?;
    let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Keeps `db` as `<db>.before-restore-<now_ms>` (a hard link) and moves its `-wal`/`-shm`
/// files to that name.
fn move_aside(db: &Path, now_ms: i64) -> Result<Option<PathBuf>, StoreError> {
    if !db.exists() {
        // A WAL without its database is nobody's: applying it to the restored file would
        // corrupt it.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(db, suffix));
        }
        return Ok(None);
    }
    // Fold the WAL into the database first (no collector holds it: the lock says so), so a
    // crash between the renames below cannot part the database from committed pages.
    {
        let live = Connection::open(db)?;
        let busy: i64 = live.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::Locked {
                db: db.to_owned(),
                holder: "another process reading or writing it".into(),
            });
        }
    }
    let aside = with_suffix(db, &format!(".before-restore-{now_ms}"));
    // The WAL first: once the database has moved, a WAL left behind would be applied to
    // the restored file by the next opener.
    for suffix in ["-wal", "-shm"] {
        let from = with_suffix(db, suffix);
        if from.exists() {
            std::fs::rename(&from, with_suffix(&aside, suffix)).map_err(io(&from))?;
        }
    }
    // A second name, not a move: the database stays at its path until the restored file
    // replaces it in one rename, so a crash at any point leaves a database there (never
    // none, which the next start would take for a new, empty one).
    if let Err(e) = std::fs::hard_link(db, &aside) {
        // A filesystem without hard links (some network and FUSE ones): moved aside as
        // before, leaving a moment without a database at the path.
        tracing::warn!(error = %e, "restore: cannot link the database aside; moving it");
        std::fs::rename(db, &aside).map_err(io(db))?;
    }
    durable_file::sync_dir(db).map_err(io(db))?;
    Ok(Some(aside))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_db(path: &Path, agent: &str, seq: i64) {
        let mut conn = Connection::open(path).unwrap();
        schema::configure_writer(&conn).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO hosts (agent_id, hostname, agent_version, boot_id, first_seen_ms, last_seen_ms)
             VALUES (?1, ?1, '1', 'b', 0, 0)",
            [agent],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO agent_seq (host_id, last_seq) VALUES (last_insert_rowid(), ?1)",
            [seq],
        )
        .unwrap();
    }

    #[test]
    fn restore_replaces_the_database_keeps_the_old_one_and_refuses_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        make_db(&db, "web-1", 10);
        let backup_file = dir.path().join("b.db");
        backup::snapshot(&db, &backup_file).unwrap();
        // The live database moves on after the backup (its WAL holds the newer pages).
        let live = Connection::open(&db).unwrap();
        live.execute("UPDATE agent_seq SET last_seq = 99", [])
            .unwrap();

        let held = DbLock::acquire(&db, "collector").unwrap();
        let err = restore(&backup_file, &db, "cli:root", 1_000).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        drop(held);
        // An admin command in progress (it could be writing into the file about to move
        // aside) keeps a restore out too.
        let command = crate::store::admin::open(&db).unwrap();
        let err = restore(&backup_file, &db, "cli:root", 1_000).unwrap_err();
        assert!(
            err.to_string().contains("an administrative command"),
            "{err}"
        );
        drop(command);

        let done = restore(&backup_file, &db, "cli:root", 1_000).unwrap();
        assert_eq!(done.agents, vec![("web-1".to_owned(), 10)]);
        assert_eq!(done.schema_to, schema::version());
        let previous = done.previous.clone().unwrap();
        drop(live);
        let old = Connection::open(&previous).unwrap();
        let old_seq: i64 = old
            .query_row("SELECT last_seq FROM agent_seq", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            old_seq, 99,
            "the moved-aside database kept its WAL's commits"
        );
        let now = Connection::open(&db).unwrap();
        let seq: i64 = now
            .query_row("SELECT last_seq FROM agent_seq", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seq, 10);
        let action: String = now
            .query_row(
                "SELECT action FROM audit_log ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(action, "store.restore");
    }

    #[test]
    fn restore_migrates_an_older_backup_and_refuses_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let newer = dir.path().join("newer.db");
        make_db(&newer, "a", 1);
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", schema::version() + 1)
            .unwrap();
        let err = restore(&newer, &db, "cli:root", 1).unwrap_err();
        assert!(
            err.to_string().contains("newer than this build supports"),
            "{err}"
        );
        assert!(!db.exists(), "nothing was put in place");

        // Version 9 (before the admin role gained hosts:enroll) comes up to date.
        let older = dir.path().join("older.db");
        {
            let mut conn = Connection::open(&older).unwrap();
            schema::migrate_to(&mut conn, 9).unwrap();
        }
        let done = restore(&older, &db, "cli:root", 1).unwrap();
        assert_eq!((done.schema_from, done.schema_to), (9, schema::version()));
        assert_eq!(done.previous, None);
    }
}
