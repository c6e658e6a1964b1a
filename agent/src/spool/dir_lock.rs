//! The spool directory's lock (`dir/lock`): one process at a time has a spool open, and a
//! starting agent waits a while for the one it replaces.

use std::path::Path;
use std::time::Duration;

use mcpwatch_common::lock_file::{LockError, LockFile, LockMode};
use tokio_util::sync::CancellationToken;

use super::config::SpoolConfig;
use super::error::{io_err, SpoolError};
use super::store::Spool;

/// The lock file's name in the spool directory.
const LOCK_FILE: &str = "lock";
/// How often a waiting open tries again.
const RETRY: Duration = Duration::from_millis(250);

/// Takes the lock of spool directory `dir` and writes this process into it, or says who has
/// it.
pub(super) fn lock(dir: &Path) -> Result<LockFile, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let refused = |holder: String| SpoolError::Locked {
        dir: dir.to_path_buf(),
        holder,
    };
    let mut lock = match LockFile::try_acquire(&path, LockMode::Exclusive, |_| Ok(())) {
        Ok(lock) => lock,
        Err(LockError::Held { holder }) => return Err(refused(holder)),
        Err(LockError::Replaced) => return Err(refused("a process replacing its lock".into())),
        Err(LockError::Io(e)) => return Err(io_err("lock", &path)(e)),
    };
    lock.write_holder(&format!("mcpwatch-agent (pid {})\n", std::process::id()))
        .map_err(io_err("lock", &path))?;
    Ok(lock)
}

/// [`Spool::open`] on a blocking thread, waiting up to `wait` while another process has the
/// directory (the agent a rollout replaces finishes its drain within its grace period), or
/// until `shutdown`. Logs once when it starts waiting.
pub async fn open_when_free(
    cfg: SpoolConfig,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<Spool, SpoolError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut waiting = false;
    loop {
        let attempt = cfg.clone();
        let opened = tokio::task::spawn_blocking(move || Spool::open(attempt))
            .await
            .map_err(|e| SpoolError::Io {
                op: "open",
                path: cfg.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        match opened {
            Err(SpoolError::Locked { dir, holder }) if tokio::time::Instant::now() < deadline => {
                if !waiting {
                    tracing::warn!(dir = %dir.display(), holder = %holder, wait = ?wait,
                        "spool directory in use; waiting for it");
                    waiting = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(SpoolError::Locked { dir, holder }),
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_second_open_waits_for_the_first_to_close_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig::new(dir.path(), 1 << 20);
        let first = Spool::open(cfg.clone()).unwrap();
        let never = CancellationToken::new();
        // Held for good: refused after the wait, naming this process.
        match open_when_free(cfg.clone(), Duration::from_secs(5), &never).await {
            Err(e @ SpoolError::Locked { .. }) => assert!(
                e.to_string()
                    .contains(&format!("mcpwatch-agent (pid {})", std::process::id())),
                "{e}"
            ),
            other => panic!("expected Locked, got {other:?}"),
        }
        // Released while waiting: opened.
        let waiter = tokio::spawn({
            let cfg = cfg.clone();
            async move { open_when_free(cfg, Duration::from_secs(30), &never).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished());
        drop(first);
        let second = waiter.await.unwrap().unwrap();
        // And a shutdown ends a wait at once.
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(matches!(
            open_when_free(cfg, Duration::from_secs(30), &stop).await,
            Err(SpoolError::Locked { .. })
        ));
        drop(second);
    }
}
