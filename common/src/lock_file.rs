//! Advisory lock files (`flock`) that say who holds them: the one way a process claims a
//! directory or database for itself (the collector's database locks, the agent's spool).
//!
//! The kernel drops a lock when its process dies, so a crash never leaves one stale; the
//! file's content (who holds it, on which host) is only for the message of whoever is
//! refused. Lock files are opened without following symlinks and created 0600; anything but
//! a regular file with one name is refused before it is touched (a hard link planted in the
//! directory could name any file of the machine, a FIFO could block the holder's read); and
//! the file is re-checked after locking: one unlinked and recreated by someone else in
//! between would be a second, separate lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

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
    /// The path names something other than a regular file with one name.
    #[error("the lock file is not a regular file with a single name")]
    NotAPlainFile,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A held lock, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LockFile {
    file: File,
}

/// How long [`LockFile::acquire`] keeps trying a held lock: a child process forked by some
/// thread holds a copy of every descriptor, the lock's too, until its `exec` closes them
/// (std opens everything close-on-exec), so a lock just let go can look held for a moment.
/// Short enough for a person waiting on a refusal.
const FORK_GRACE: Duration = Duration::from_millis(500);

impl LockFile {
    /// [`LockFile::try_acquire`], trying again for a moment while the lock is held (see
    /// `FORK_GRACE`): what callers use; a holder that stays is refused. Blocks up to 500 ms:
    /// for start-up and blocking code.
    pub fn acquire(
        path: &Path,
        mode: LockMode,
        prepare: impl Fn(&File) -> io::Result<()>,
    ) -> Result<LockFile, LockError> {
        let deadline = Instant::now() + FORK_GRACE;
        loop {
            match LockFile::try_acquire(path, mode, &prepare) {
                Err(LockError::Held { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    /// Opens (creating it 0600) and locks `path` without waiting. `prepare` runs on the open
    /// file before it is locked (to give a file made by root the owner of what it guards).
    pub fn try_acquire(
        path: &Path,
        mode: LockMode,
        prepare: impl Fn(&File) -> io::Result<()>,
    ) -> Result<LockFile, LockError> {
        // Twice at most: once more only if the file was replaced between open and lock.
        for _ in 0..2 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(
                    (rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::NONBLOCK
                        | rustix::fs::OFlags::NOCTTY)
                        .bits() as i32,
                )
                .open(path)?;
            let opened = file.metadata()?;
            if !opened.file_type().is_file() || opened.nlink() > 1 {
                return Err(LockError::NotAPlainFile);
            }
            prepare(&file)?;
            let locked = match mode {
                LockMode::Exclusive => file.try_lock(),
                LockMode::Shared => file.try_lock_shared(),
            };
            match locked {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut who = String::new();
                    // Unreadable or not text: the holder stays unnamed. Bounded, and without
                    // control characters: it goes into logs and onto terminals.
                    let _ = (&file).take(4096).read_to_string(&mut who);
                    let who: String = who
                        .trim()
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(100)
                        .collect();
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

    /// Records who holds the lock — `role (pid N on HOST)` — for the message of whoever is
    /// refused it. The host matters in a container, where every process may be pid 1.
    pub fn write_holder(&mut self, role: &str) -> io::Result<()> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = match host.trim() {
            "" => "an unnamed host",
            name => name,
        };
        let who = format!("{role} (pid {} on {host})\n", std::process::id());
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
        first.write_holder("agent").unwrap();
        let me = format!("agent (pid {} on ", std::process::id());
        match LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())) {
            Err(LockError::Held { holder }) => assert!(holder.starts_with(&me), "{holder}"),
            other => panic!("expected Held, got {other:?}"),
        }
        match LockFile::try_acquire(&path, LockMode::Shared, |_| Ok(())) {
            Err(e @ LockError::Held { .. }) => {
                assert!(e.to_string().starts_with(&format!("held by {me}")), "{e}")
            }
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

    #[test]
    fn hard_links_and_fifos_are_refused_untouched_and_a_planted_holder_is_tamed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let hard = dir.path().join("hard.lock");
        std::fs::hard_link(&victim, &hard).unwrap();
        let prepared = std::cell::Cell::new(false);
        assert!(matches!(
            LockFile::try_acquire(&hard, LockMode::Exclusive, |_| {
                prepared.set(true);
                Ok(())
            }),
            Err(LockError::NotAPlainFile)
        ));
        assert!(!prepared.get(), "nothing done to a refused file");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let fifo = dir.path().join("fifo.lock");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(
            LockFile::try_acquire(&fifo, LockMode::Exclusive, |_| Ok(())),
            Err(LockError::NotAPlainFile)
        ));
        // A holder text with terminal escapes and no end: read bounded, printed clean.
        let path = dir.path().join("lock");
        let _held = LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())).unwrap();
        std::fs::write(&path, format!("evil\x1b[2J{}", "x".repeat(1 << 20))).unwrap();
        match LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())) {
            Err(LockError::Held { holder }) => {
                assert!(holder.starts_with("evil[2Jxxx"), "{holder}");
                assert_eq!(holder.chars().count(), 100);
            }
            other => panic!("expected Held, got {other:?}"),
        }
    }
}
