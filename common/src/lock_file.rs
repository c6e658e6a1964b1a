//! Advisory lock files (`flock`) that say who holds them: the one way a process claims a
//! directory or database for itself (the collector's database locks, the agent's spool).
//!
//! The kernel drops a lock when its process dies, so a crash never leaves one stale; the
//! file's content (who holds it) is only for the message of whoever is refused. Lock files
//! are opened without following symlinks, created 0600, and re-checked after locking: a file
//! unlinked and recreated by someone else in between would be a second, separate lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Whether a lock is taken alone or beside others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Exclusive,
    Shared,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another holder has it; `holder` is what it wrote (at most 100 characters, trimmed),
    /// or "another process" if it wrote nothing.
    #[error("held by {holder}")]
    Held { holder: String },
    /// The lock file kept being replaced while it was being locked.
    #[error("the lock file was replaced while it was being locked")]
    Replaced,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A held lock, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LockFile {
    file: File,
}

impl LockFile {
    /// Opens (creating it 0600) and locks `path` without waiting. `prepare` runs on the open
    /// file before it is locked (to give a file made by root the owner of what it guards).
    pub fn try_acquire(
        path: &Path,
        mode: LockMode,
        prepare: impl Fn(&File) -> io::Result<()>,
    ) -> Result<LockFile, LockError> {
        // Twice at most: once more only if the file was replaced between open and lock.
        for _ in 0..2 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)?;
            prepare(&file)?;
            let locked = match mode {
                LockMode::Exclusive => file.try_lock(),
                LockMode::Shared => file.try_lock_shared(),
            };
            match locked {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut who = String::new();
                    // Unreadable or not text: the holder stays unnamed.
                    let _ = file.read_to_string(&mut who);
                    let who: String = who.trim().chars().take(100).collect();
                    return Err(LockError::Held {
                        holder: if who.is_empty() {
                            "another process".to_owned()
                        } else {
                            who
                        },
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
            }
            let held = file.metadata()?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(LockFile { file })
                }
                // Replaced or removed under us: this lock guards nothing; take the new one.
                _ => continue,
            }
        }
        Err(LockError::Replaced)
    }

    /// Records who holds the lock, for the message of whoever is refused it.
    pub fn write_holder(&mut self, who: &str) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(who.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_lock_is_refused_with_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let mut first = LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())).unwrap();
        first.write_holder("agent (pid 7)").unwrap();
        match LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())) {
            Err(LockError::Held { holder }) => assert_eq!(holder, "agent (pid 7)"),
            other => panic!("expected Held, got {other:?}"),
        }
        match LockFile::try_acquire(&path, LockMode::Shared, |_| Ok(())) {
            Err(e @ LockError::Held { .. }) => assert_eq!(e.to_string(), "held by agent (pid 7)"),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let _again = LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn shared_locks_coexist_and_an_unnamed_holder_reads_as_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let a = LockFile::try_acquire(&path, LockMode::Shared, |_| Ok(())).unwrap();
        let b = LockFile::try_acquire(&path, LockMode::Shared, |_| Ok(())).unwrap();
        match LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())) {
            Err(e @ LockError::Held { .. }) => {
                assert_eq!(e.to_string(), "held by another process")
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop((a, b));
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.path().join("lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(
            LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())),
            Err(LockError::Io(_))
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
