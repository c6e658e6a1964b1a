//! Online backups of the database and their verification: `VACUUM INTO` on a read-only
//! connection of its own, so the snapshot is one consistent read transaction while the
//! writer keeps committing beside it (WAL), and the copy is compact (no free pages) and a
//! single self-contained file. The copy is written to a 0600 temp file, checked
//! (`PRAGMA integrity_check`, schema version), then renamed into place with fsyncs
//! (`durable_file`), so a backup file either is whole and verified or does not exist.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcpwatch_common::durable_file;
use rusqlite::{Connection, OpenFlags};

use super::{schema, StoreError};

/// What a finished backup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub path: PathBuf,
    pub bytes: u64,
    pub schema_version: i64,
    /// From the start of the read transaction to the rename (verification included).
    pub duration: Duration,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::BadBackup {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Copies the database at `db` to `dest` while it stays in use, verifies the copy and
/// installs it atomically with mode 0600. `dest` must not exist: a backup never overwrites
/// one taken earlier.
pub fn snapshot(db: &Path, dest: &Path) -> Result<Snapshot, StoreError> {
    snapshot_interruptible(db, dest, |_| {})
}

/// [`snapshot`], handing `on_start` the handle that aborts the copy (a collector stopping
/// does not wait for a long backup; the partial temp file is removed).
pub fn snapshot_interruptible(
    db: &Path,
    dest: &Path,
    on_start: impl FnOnce(rusqlite::InterruptHandle),
) -> Result<Snapshot, StoreError> {
    let started = Instant::now();
    if dest.exists() {
        return Err(bad(
            dest,
            "already exists; a backup never overwrites another",
        ));
    }
    let source = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The writer's checkpoint never blocks this reader (PASSIVE), but an admin command's
    // write lock can delay the start of the read transaction for a moment.
    source.busy_timeout(Duration::from_secs(10))?;
    on_start(source.get_interrupt_handle());
    let tmp = durable_file::temp_path(dest);
    // 0600 from creation: the file holds password hashes, token hashes and sealed secrets.
    drop(durable_file::create_new(&tmp, 0o600).map_err(io(&tmp))?);
    let result = (|| {
        let target = tmp
            .to_str()
            .ok_or_else(|| bad(dest, "path is not valid UTF-8"))?;
        source.execute("VACUUM INTO ?1", [target])?;
        drop(source);
        let schema_version = verify(&tmp)?;
        durable_file::commit_new(&tmp, dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                bad(dest, "already exists; a backup never overwrites another")
            } else {
                io(dest)(e)
            }
        })?;
        let bytes = std::fs::metadata(dest).map_err(io(dest))?.len();
        Ok(Snapshot {
            path: dest.to_owned(),
            bytes,
            schema_version,
            duration: started.elapsed(),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Checks that `path` is an intact mcpwatch database this build can open: SQLite's full
/// `integrity_check` passes and its schema version is not newer than this build's.
/// Returns the schema version.
pub fn verify(path: &Path) -> Result<i64, StoreError> {
    if !path.is_file() {
        return Err(bad(path, "no such file"));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // Functions in the file's own views or triggers never run with side effects here.
    conn.execute_batch("PRAGMA trusted_schema = OFF")?;
    let problems: Vec<String> = {
        let mut stmt = conn
            .prepare("PRAGMA integrity_check(20)")
            .map_err(|e| bad(path, format!("not a readable SQLite database: {e}")))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| bad(path, format!("not a readable SQLite database: {e}")))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| bad(path, format!("integrity check failed: {e}")))?
    };
    if problems != ["ok"] {
        return Err(bad(
            path,
            format!("integrity check failed: {}", problems.join("; ")),
        ));
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = schema::version();
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    let has_hosts: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'agent_seq')",
        [],
        |r| r.get(0),
    )?;
    if version < 1 || !has_hosts {
        return Err(bad(path, "not an mcpwatch collector database"));
    }
    let differences = schema::differences(&conn, version)?;
    if !differences.is_empty() {
        let shown: Vec<&str> = differences.iter().take(5).map(String::as_str).collect();
        return Err(bad(
            path,
            format!(
                "its schema is not mcpwatch's at version {version} ({}{})",
                shown.join(", "),
                if differences.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn make_db(path: &Path) {
        let mut conn = Connection::open(path).unwrap();
        schema::configure_writer(&conn).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO hosts (agent_id, hostname, agent_version, boot_id, first_seen_ms, last_seen_ms)
             VALUES ('a', 'a', '1', 'b', 0, 0)",
            [],
        )
        .unwrap();
    }

    #[test]
    fn backup_snapshot_is_private_verified_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        make_db(&db);
        // A writer holds an open transaction with uncommitted rows: the snapshot sees only
        // what was committed, and does not wait for it.
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO hosts (agent_id, hostname, agent_version, boot_id, first_seen_ms, last_seen_ms) VALUES ('b', 'b', '1', 'b', 0, 0);")
            .unwrap();
        let dest = dir.path().join("backup.db");
        let snap = snapshot(&db, &dest).unwrap();
        writer.execute_batch("COMMIT").unwrap();
        assert_eq!(snap.schema_version, schema::version());
        assert!(snap.bytes > 0);
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let copy = Connection::open(&dest).unwrap();
        let hosts: i64 = copy
            .query_row("SELECT count(*) FROM hosts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hosts, 1, "the uncommitted host is not in the snapshot");
        let err = snapshot(&db, &dest).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn backup_verify_refuses_garbage_foreign_and_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"this is not a database, only text long enough").unwrap();
        assert!(matches!(verify(&junk), Err(StoreError::BadBackup { .. })));
        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE x (y); PRAGMA user_version = 3;")
            .unwrap();
        let err = verify(&foreign).unwrap_err();
        assert!(err.to_string().contains("not an mcpwatch"), "{err}");
        let newer = dir.path().join("newer.db");
        make_db(&newer);
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", schema::version() + 1)
            .unwrap();
        assert!(matches!(
            verify(&newer),
            Err(StoreError::SchemaTooNew { .. })
        ));
        assert!(verify(&dir.path().join("missing.db")).is_err());
        // A trigger of its own (here one that would erase the audit log on every insert)
        // keeps a file out.
        let tampered = dir.path().join("tampered.db");
        make_db(&tampered);
        Connection::open(&tampered)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER wipe AFTER INSERT ON audit_log BEGIN DELETE FROM audit_log; END;",
            )
            .unwrap();
        let err = verify(&tampered).unwrap_err();
        assert!(
            err.to_string().contains("unexpected trigger \"wipe\""),
            "{err}"
        );
    }
}
