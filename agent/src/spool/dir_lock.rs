//! The spool directory's lock (`dir/lock`): one process at a time has a spool open. The
//! agent's `run` command takes it before it touches any state (before even finishing an
//! interrupted certificate renewal), waiting a while for the agent it replaces.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcpwatch_common::lock_file::{LockError, LockFile, LockMode};
use tokio_util::sync::CancellationToken;

use super::config::SpoolConfig;
use super::error::{io_err, SpoolError};
use super::store::Spool;

/// The lock file's name in the spool directory.
const LOCK_FILE: &str = "lock";
/// How often a waiting start tries again (each try also waits out a forked child's copy of
/// the descriptor, up to 500 ms: `LockFile::acquire`).
const RETRY: Duration = Duration::from_millis(250);
/// How long a starting agent waits for another process to let go of its spool: an agent
/// being replaced (a DaemonSet rollout with surge, the docker-socket overlay's relabel swap)
/// lets go within its grace period; a second agent configured on the same directory is
/// refused after it.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The held lock of one spool directory; [`Spool::open_locked`] takes it over.
#[derive(Debug)]
pub struct SpoolLock {
    pub(super) dir: PathBuf,
    _file: LockFile,
}

/// Takes the lock of spool directory `dir` (creating the directory), writing this process
/// into it, or says who has it.
pub fn lock(dir: &Path) -> Result<SpoolLock, SpoolError> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let path = dir.join(LOCK_FILE);
    let refused = |holder: String| SpoolError::Locked {
        dir: dir.to_path_buf(),
        holder,
    };
    let mut file = match LockFile::acquire(&path, LockMode::Exclusive, |_| Ok(())) {
        Ok(file) => file,
        Err(LockError::Held { holder }) => return Err(refused(holder)),
        Err(LockError::Replaced) => return Err(refused("a process replacing its lock".into())),
        Err(e @ LockError::NotAPlainFile) => {
            return Err(io_err("lock", &path)(std::io::Error::other(e.to_string())))
        }
        Err(LockError::Io(e)) => return Err(io_err("lock", &path)(e)),
    };
    file.write_holder("mcpwatch-agent")
        .map_err(io_err("lock", &path))?;
    Ok(SpoolLock {
        dir: dir.to_path_buf(),
        _file: file,
    })
}

/// [`lock`] (on a blocking thread), trying again every 250 ms for up to `wait` while
/// another process has it; `on_wait(holder)` runs once, when the wait begins (to say so:
/// the caller may not have logging yet). `Ok(None)` when `stop` is cancelled first.
pub async fn lock_waiting(
    dir: &Path,
    wait: Duration,
    stop: &CancellationToken,
    on_wait: impl FnOnce(&str),
) -> Result<Option<SpoolLock>, SpoolError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut on_wait = Some(on_wait);
    loop {
        let attempt = dir.to_path_buf();
        let taken = tokio::task::spawn_blocking(move || lock(&attempt))
            .await
            .map_err(|e| io_err("lock", dir)(std::io::Error::other(e.to_string())))?;
        match taken {
            Err(SpoolError::Locked { dir, holder }) => {
                if let Some(say) = on_wait.take() {
                    say(&holder);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(SpoolError::Locked { dir, holder });
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
            other => return other.map(Some),
        }
    }
}

impl Spool {
    /// Locks `cfg.dir` ([`lock`], without waiting), then opens the spool there
    /// ([`Spool::open_locked`]).
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        let lock = lock(&cfg.dir)?;
        Spool::open_locked(cfg, lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_lock_is_taken_once_released_refused_after_the_wait_or_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig::new(dir.path(), 1 << 20);
        let first = Spool::open(cfg.clone()).unwrap();
        let me = format!("mcpwatch-agent (pid {} on ", std::process::id());
        let running = CancellationToken::new();
        // Held for good: refused after the wait, naming this process.
        let mut told = String::new();
        let short = Duration::from_millis(300);
        match lock_waiting(dir.path(), short, &running, |h| told = h.into()).await {
            Err(e @ SpoolError::Locked { .. }) => assert!(e.to_string().contains(&me), "{e}"),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert!(told.starts_with(&me), "{told}");
        // Stopped while waiting: no lock, no error.
        let stopped = CancellationToken::new();
        let long = Duration::from_secs(60);
        let stopper = stopped.clone();
        let waited = lock_waiting(dir.path(), long, &stopped, move |_| stopper.cancel()).await;
        assert!(matches!(waited, Ok(None)), "{waited:?}");
        // Released while waiting: taken. The holder lets go once told someone waits.
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            waiting_rx.recv().unwrap();
            drop(first);
        });
        let lock = lock_waiting(dir.path(), long, &running, |_| waiting_tx.send(()).unwrap())
            .await
            .unwrap()
            .expect("taken");
        holder.join().unwrap();
        // The lock is for its own directory only.
        let other = tempfile::tempdir().unwrap();
        assert!(Spool::open_locked(SpoolConfig::new(other.path(), 1 << 20), lock).is_err());
        // ...and a spool open refuses a second open.
        let _open = Spool::open(cfg.clone()).unwrap();
        assert!(matches!(Spool::open(cfg), Err(SpoolError::Locked { .. })));
    }
}
