//! The database's process locks, advisory (`flock`) on files beside it:
//! - `<db>.lock`, exclusive: held by a running collector for its whole life and by
//!   `restore` while it swaps the file. SQLite's own locks cannot say "a collector runs
//!   here" (between transactions it holds none), and a restore under a live collector would
//!   hand it a file whose WAL belongs to another.
//! - `<db>.admin.lock`: shared by every administrative command (the admin CLI, quickstart),
//!   which may run beside a collector, and exclusive for `restore`, so no command writes
//!   into the file being moved aside or creates a fresh one (with a WAL) under the restore.
//!
//! Both are [`LockFile`]s: released by the kernel when the process dies, opened without
//! following symlinks, 0600, naming their holder.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mcpwatch_common::lock_file::{LockError, LockFile, LockMode};

use super::StoreError;

/// Held until dropped.
#[derive(Debug)]
pub struct DbLock {
    _file: LockFile,
}

/// Where the lock of database `db` lives.
pub fn lock_path(db: &Path) -> PathBuf {
    beside(db, ".lock")
}

/// Where the administrative commands' lock of database `db` lives.
pub fn admin_lock_path(db: &Path) -> PathBuf {
    beside(db, ".admin.lock")
}

pub(super) fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    db.with_file_name(name)
}

impl DbLock {
    /// Takes the lock of `db` for `holder` (e.g. "collector"), or says who has it.
    pub fn acquire(db: &Path, holder: &str) -> Result<DbLock, StoreError> {
        let lock = take(db, &lock_path(db), LockMode::Exclusive)?;
        let mut file = lock._file;
        file.write_holder(holder).map_err(|source| StoreError::Io {
            path: lock_path(db),
            source,
        })?;
        Ok(DbLock { _file: file })
    }

    /// Takes the administrative lock of `db` exclusively (restore), or says it is in use.
    pub fn acquire_admin_exclusive(db: &Path) -> Result<DbLock, StoreError> {
        take(db, &admin_lock_path(db), LockMode::Exclusive)
    }

    /// Takes the administrative lock of `db` shared (one administrative command), or says
    /// a restore holds it.
    pub fn acquire_admin_shared(db: &Path) -> Result<DbLock, StoreError> {
        take(db, &admin_lock_path(db), LockMode::Shared)
    }
}

fn take(db: &Path, path: &Path, mode: LockMode) -> Result<DbLock, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let reference = owner_reference(db);
    match LockFile::acquire(path, mode, |file| adopt_owner(file, &reference)) {
        Ok(file) => Ok(DbLock { _file: file }),
        Err(LockError::Held { holder }) => Err(StoreError::Locked {
            db: db.to_owned(),
            holder: if path == admin_lock_path(db) {
                match mode {
                    LockMode::Exclusive => "an administrative command".to_owned(),
                    LockMode::Shared => "a restore".to_owned(),
                }
            } else {
                holder
            },
        }),
        Err(LockError::Replaced) => Err(StoreError::Locked {
            db: db.to_owned(),
            holder: format!("a process replacing {}", path.display()),
        }),
        Err(LockError::NotAPlainFile) => Err(io(std::io::Error::other(
            "not a regular file with a single name; remove it",
        ))),
        Err(LockError::Io(e)) => Err(io(e)),
    }
}

/// What a file created beside database `db` takes its owner from: the database, or its
/// directory when there is no database yet. A restore or an admin command run as root must
/// not leave files the collector's own user cannot open.
pub(super) fn owner_reference(db: &Path) -> PathBuf {
    if db.exists() {
        return db.to_owned();
    }
    db.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned()
}

/// Gives `file` the owner and group of `reference` if they differ. Only root can change an
/// owner, and only a process of another user (root) can create a file that needs it.
pub(super) fn adopt_owner(file: &File, reference: &Path) -> std::io::Result<()> {
    let owner = std::fs::metadata(reference)?;
    let mine = file.metadata()?;
    if (mine.uid(), mine.gid()) == (owner.uid(), owner.gid()) {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid()))
}

/// [`adopt_owner`] for a file SQLite has open in this process, through an `O_PATH`
/// descriptor: closing an ordinary descriptor of a file drops every POSIX lock the process
/// holds on it — SQLite's too — and another process would then take the database for
/// unused (a reader truncating the `-shm` under this process's mapping: SIGBUS; a writer
/// committing beside ours). The kernel keeps the locks when an `O_PATH` descriptor closes.
/// What is checked is what is changed: a symlink is changed itself, a file with other names
/// (a hard link planted in the directory could name any file of the machine) is refused.
pub(super) fn adopt_owner_of_path(path: &Path, reference: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid, CWD};
    let owner = std::fs::metadata(reference)?;
    let handle = rustix::fs::openat(
        CWD,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mine = rustix::fs::fstat(&handle)?;
    if (mine.st_uid, mine.st_gid) == (owner.uid(), owner.gid()) {
        return Ok(());
    }
    if mine.st_nlink > 1 {
        return Err(std::io::Error::other(
            "refusing to change the owner of a file with several names (hard links)",
        ));
    }
    rustix::fs::chownat(
        &handle,
        "",
        Some(Uid::from_raw(owner.uid())),
        Some(Gid::from_raw(owner.gid())),
        AtFlags::EMPTY_PATH,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn db_lock_is_exclusive_names_its_holder_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let held = DbLock::acquire(&db, "collector").unwrap();
        let err = DbLock::acquire(&db, "restore").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("collector (pid") && text.contains("c.db"),
            "{text}"
        );
        drop(held);
        let _again = DbLock::acquire(&db, "restore").unwrap();
        assert!(lock_path(&db).ends_with("c.db.lock"));
        let mode = std::fs::metadata(lock_path(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn db_admin_lock_is_shared_by_commands_and_exclusive_for_restore() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let one = DbLock::acquire_admin_shared(&db).unwrap();
        let two = DbLock::acquire_admin_shared(&db).unwrap();
        let err = DbLock::acquire_admin_exclusive(&db).unwrap_err();
        assert!(
            err.to_string().contains("an administrative command"),
            "{err}"
        );
        drop((one, two));
        let restore = DbLock::acquire_admin_exclusive(&db).unwrap();
        let err = DbLock::acquire_admin_shared(&db).unwrap_err();
        assert!(err.to_string().contains("a restore"), "{err}");
        drop(restore);
        // The collector's lock is another file: a command runs beside a collector.
        let _collector = DbLock::acquire(&db, "collector").unwrap();
        let _command = DbLock::acquire_admin_shared(&db).unwrap();
    }

    #[test]
    fn adopting_an_owner_by_path_changes_links_not_targets_and_refuses_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("data");
        std::fs::create_dir(&reference).unwrap();
        let changed = std::os::unix::fs::chown(&reference, Some(65534), Some(65534));
        // What this process creates is its own: root's, or a user's.
        if std::fs::metadata(dir.path()).unwrap().uid() != 0 {
            // Only root changes owners; anyone else is refused by the kernel.
            assert!(changed.is_err());
            return;
        }
        changed.unwrap();
        let file = reference.join("c.db-shm");
        std::fs::write(&file, b"").unwrap();
        adopt_owner_of_path(&file, &reference).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        // A symlink is changed itself; its target keeps its owner.
        let target = dir.path().join("target");
        std::fs::write(&target, b"").unwrap();
        let link = reference.join("c.db-wal");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        adopt_owner_of_path(&link, &reference).unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().uid(), 0);
        assert_eq!(std::fs::symlink_metadata(&link).unwrap().uid(), 65534);
        // A hard link to a file elsewhere is refused, and the file keeps its owner.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"").unwrap();
        let hard = reference.join("c.db");
        std::fs::hard_link(&victim, &hard).unwrap();
        assert!(adopt_owner_of_path(&hard, &reference).is_err());
        assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
    }

    #[test]
    fn db_lock_refuses_a_symlinked_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let elsewhere = dir.path().join("victim");
        std::fs::write(&elsewhere, b"keep me").unwrap();
        std::os::unix::fs::symlink(&elsewhere, lock_path(&db)).unwrap();
        let err = DbLock::acquire(&db, "collector").unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep me");
    }
}
