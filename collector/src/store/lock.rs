//! The database's process lock: an exclusive advisory lock (`flock`) on `<db>.lock`, held by
//! a running collector for its whole life and by `restore` while it swaps the file. SQLite's
//! own locks cannot say "a collector runs here" (between transactions it holds none), and a
//! restore under a live collector would hand it a file whose WAL belongs to another.
//! The kernel drops the lock when the process dies, so a crash never leaves it stale; the
//! file's content (who holds it) is only for the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// Held until dropped.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
}

/// Where the lock of database `db` lives.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

impl DbLock {
    /// Takes the lock of `db` for `holder` (e.g. "collector"), or says who has it.
    pub fn acquire(db: &Path, holder: &str) -> Result<DbLock, StoreError> {
        let path = lock_path(db);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut who = String::new();
                let _ = file.read_to_string(&mut who);
                let who = who.trim();
                return Err(StoreError::Locked {
                    db: db.to_owned(),
                    holder: if who.is_empty() {
                        "another process".to_owned()
                    } else {
                        who.chars().take(100).collect()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let who = format!("{holder} (pid {})\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(who.as_bytes()))
            .map_err(io)?;
        Ok(DbLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
