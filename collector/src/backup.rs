//! Backups of the collector's database while it runs: `[backup]` (raw and validated), the
//! [`Backups`] handle that takes one at a time (scheduled, or on demand through
//! `POST /api/v1/backups`), keeps the newest `keep` files, and reports on `/metrics` and
//! to the alert rules (`mcpwatch_collector_backup_failing`, read by the built-in rule
//! `backup_failing`). The snapshot itself is the store's (`store::backup`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_common::config::{self as cfg, ConfigError, Duration as CfgDuration};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::OwnSeries;
use crate::metrics::CollectorMetrics;
use crate::store::backup::{self, Snapshot};
use crate::store::StoreError;

/// The series the rules read: 1 while backups fail, 0 once one succeeds.
pub const FAILING_METRIC: &str = "mcpwatch_collector_backup_failing";
/// Backup files are named `mcpwatch-<UTC time>.db`; nothing else in `dir` is touched.
const PREFIX: &str = "mcpwatch-";
const SUFFIX: &str = ".db";

/// `[backup]`: where backups go and how often they are taken.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    /// Directory for backup files (created 0700 if missing). Required by the schedule and
    /// by `POST /api/v1/backups`. Put it on another disk than the database.
    pub dir: Option<PathBuf>,
    /// Time between scheduled backups, 1m..=7d; "0s" takes none (API and CLI only).
    /// Default 24h.
    pub interval: Option<CfgDuration>,
    /// Newest backups kept in `dir` (1..=1000); older ones are deleted after each
    /// success. Default 7.
    pub keep: Option<usize>,
}

/// Validated `[backup]`; `None` in the collector's config when `dir` is unset.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub dir: PathBuf,
    /// Zero: no schedule.
    pub interval: Duration,
    pub keep: usize,
}

impl BackupConfig {
    pub fn validate(path: &Path, raw: RawBackup) -> Result<Option<BackupConfig>, ConfigError> {
        let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
        let Some(dir) = raw.dir else {
            if raw.interval.is_some() || raw.keep.is_some() {
                return Err(bad("backup.dir", "required when [backup] is set"));
            }
            return Ok(None);
        };
        let interval = raw
            .interval
            .map_or(Duration::from_secs(86_400), CfgDuration::get);
        if !interval.is_zero()
            && !(Duration::from_secs(60)..=Duration::from_secs(7 * 86_400)).contains(&interval)
        {
            return Err(bad("backup.interval", "must be 0s or 1m..=7d"));
        }
        let keep = raw.keep.unwrap_or(7);
        if !(1..=1000).contains(&keep) {
            return Err(bad("backup.keep", "must be 1..=1000"));
        }
        Ok(Some(BackupConfig {
            dir: cfg::resolve_path(path, dir),
            interval,
            keep,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no [backup] dir is configured")]
    NotConfigured,
    #[error("a backup is already running")]
    Busy,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("backup task failed: {0}")]
    Task(String),
}

struct Inner {
    db: PathBuf,
    config: Option<BackupConfig>,
    metrics: Arc<CollectorMetrics>,
    own: OwnSeries,
    running: Arc<tokio::sync::Mutex<()>>,
    /// Cancelled when the collector stops: a backup in progress is interrupted rather
    /// than waited for.
    stop: CancellationToken,
}

/// Takes backups one at a time; cheap to clone.
#[derive(Clone)]
pub struct Backups(Arc<Inner>);

/// The file name of a backup taken at `now_ms` (UTC, sortable, millisecond precision so
/// two on-demand backups in one second do not collide).
pub fn file_name(now_ms: i64) -> String {
    format!(
        "{PREFIX}{}{SUFFIX}",
        mcpwatch_common::time::compact_utc(now_ms)
    )
}

impl Backups {
    pub fn new(
        db: PathBuf,
        config: Option<BackupConfig>,
        metrics: Arc<CollectorMetrics>,
        own: OwnSeries,
        stop: CancellationToken,
    ) -> Backups {
        if config.is_some() {
            own.set(FAILING_METRIC, &[], 0.0);
        }
        Backups(Arc::new(Inner {
            db,
            config,
            metrics,
            own,
            running: Arc::new(tokio::sync::Mutex::new(())),
            stop,
        }))
    }

    /// Takes one backup now into `[backup] dir`, then deletes the oldest beyond `keep`.
    ///
    /// The backup runs in a task of its own holding the one-at-a-time guard: a caller that
    /// goes away (an API request timing out on a large database) does not cancel it, free
    /// the guard while the copy goes on, or skip its metrics.
    pub async fn run_once(&self) -> Result<Snapshot, BackupError> {
        let config = self.0.config.clone().ok_or(BackupError::NotConfigured)?;
        let guard = self
            .0
            .running
            .clone()
            .try_lock_owned()
            .map_err(|_| BackupError::Busy)?;
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _one = guard;
            let db = this.0.db.clone();
            let stop = this.0.stop.clone();
            let runtime = tokio::runtime::Handle::current();
            let result = tokio::task::spawn_blocking(move || {
                create_private_dir(&config.dir)?;
                let dest = config.dir.join(file_name(crate::now_ms()));
                let mut watcher = None;
                let snap = backup::snapshot_interruptible(&db, &dest, |handle| {
                    watcher = Some(runtime.spawn(async move {
                        stop.cancelled().await;
                        handle.interrupt();
                    }));
                });
                if let Some(w) = watcher {
                    w.abort();
                }
                let snap = snap?;
                prune(&config.dir, config.keep);
                Ok::<_, BackupError>(snap)
            })
            .await
            .map_err(|e| BackupError::Task(e.to_string()))
            .and_then(|r| r);
            this.record(&result);
            result
        });
        task.await
            .map_err(|e| BackupError::Task(e.to_string()))
            .and_then(|r| r)
    }

    fn record(&self, result: &Result<Snapshot, BackupError>) {
        let m = &self.0.metrics.durability;
        match result {
            Ok(snap) => {
                m.backup_last_success.set(crate::now_ms() / 1000);
                m.backup_duration_seconds.set(snap.duration.as_secs_f64());
                m.backup_size.set(snap.bytes as i64);
                self.0.own.set(FAILING_METRIC, &[], 0.0);
                tracing::info!(path = %snap.path.display(), bytes = snap.bytes,
                    duration_ms = snap.duration.as_millis() as u64, "backup written");
            }
            Err(BackupError::Busy) => {}
            Err(e) => {
                m.backup_failures.inc();
                self.0.own.set(FAILING_METRIC, &[], 1.0);
                tracing::error!(error = %e, "backup failed");
            }
        }
    }

    /// The backup files in `[backup] dir`, newest first.
    pub async fn list(&self) -> Result<Vec<BackupEntry>, BackupError> {
        let dir = self
            .0
            .config
            .as_ref()
            .map(|c| c.dir.clone())
            .ok_or(BackupError::NotConfigured)?;
        tokio::task::spawn_blocking(move || list_dir(&dir))
            .await
            .map_err(|e| BackupError::Task(e.to_string()))?
    }

    /// Runs the schedule until `stop`. The first backup is due one interval after the newest
    /// one in the directory, so a collector restarted more often than `interval` still backs
    /// up; an overdue one (or the first ever) comes at most `FIRST_DELAY` after start.
    pub fn spawn_schedule(&self, tracker: &TaskTracker, stop: CancellationToken) {
        let Some(config) = self.0.config.clone() else {
            return;
        };
        let interval = config.interval;
        if interval.is_zero() {
            return;
        }
        let this = self.clone();
        tracker.spawn(async move {
            let dir = config.dir.clone();
            let newest = tokio::task::spawn_blocking(move || list_dir(&dir))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|entries| entries.first().map(|e| e.modified_ms));
            if let Some(ms) = newest {
                // The gauge reads the last backup, not 0, across restarts.
                this.0.metrics.durability.backup_last_success.set(ms / 1000);
            }
            let first = first_delay(newest, crate::now_ms(), interval);
            tracing::info!(in_s = first.as_secs(), "next scheduled backup");
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                let _ = this.run_once().await;
            }
        });
    }
}

/// Longest wait after start for a backup that is overdue or the first ever.
const FIRST_DELAY: Duration = Duration::from_secs(300);
/// Shortest wait after start for an overdue backup.
const OVERDUE_DELAY: Duration = Duration::from_secs(60);

/// How long after start the first scheduled backup comes, given the newest backup's time.
fn first_delay(newest_ms: Option<i64>, now_ms: i64, interval: Duration) -> Duration {
    let soon = interval.min(FIRST_DELAY);
    match newest_ms {
        None => soon,
        Some(ms) => {
            let due = ms.saturating_add(i64::try_from(interval.as_millis()).unwrap_or(i64::MAX));
            let left = Duration::from_millis(u64::try_from(due - now_ms).unwrap_or(0));
            // Not at once: a collector in a crash loop (or one whose backup crashes it) would
            // back up at every start.
            left.max(OVERDUE_DELAY.min(soon)).min(interval)
        }
    }
}

/// A backup file in `[backup] dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    pub name: String,
    pub bytes: u64,
    pub modified_ms: i64,
}

/// Whether `name` is one of ours: `mcpwatch-YYYYMMDDTHHMMSS.mmmZ.db` exactly, so listing
/// and pruning never touch another file, whatever else shares the directory.
fn is_backup_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
    else {
        return false;
    };
    let bytes = stamp.as_bytes();
    bytes.len() == 20
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 => *b == b'T',
            15 => *b == b'.',
            19 => *b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

/// Whether `name` is the temp file of a backup of ours (`<backup name>.tmp-<pid>`).
fn is_backup_temp(name: &str) -> bool {
    name.split_once(".tmp-").is_some_and(|(backup, pid)| {
        is_backup_name(backup) && pid.bytes().all(|b| b.is_ascii_digit())
    })
}

fn list_dir(dir: &Path) -> Result<Vec<BackupEntry>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // No backup taken yet: the directory is created by the first one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BackupError::Store(StoreError::Io {
                path: dir.to_owned(),
                source,
            }))
        }
    };
    let mut out: Vec<BackupEntry> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            if !is_backup_name(&name) {
                return None;
            }
            let meta = e.metadata().ok()?;
            let modified_ms = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Some(BackupEntry {
                name,
                bytes: meta.len(),
                modified_ms,
            })
        })
        .collect();
    out.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(out)
}

/// Creates `dir` 0700 if missing, and refuses one others may write to: they could replace
/// or plant backups there between two runs (a restore trusts what it is given).
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| StoreError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(StoreError::Invalid(format!(
            "backup dir {} is writable by group or others (mode {:o}); make it 0700",
            dir.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

/// Temp files older than this are left by a collector killed mid-backup: a live one is
/// written continuously.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Deletes backup files beyond the newest `keep` (by name, which sorts by time), and temp
/// files a killed backup left behind.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_backup_name(&name) {
            names.push(name);
        } else if is_backup_temp(&name) {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMP);
            if stale {
                let path = dir.join(&name);
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "stale backup temp file deleted")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot delete stale backup temp file")
                    }
                }
            }
        }
    }
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in names.into_iter().take(excess) {
        let path = dir.join(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "old backup deleted"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete old backup")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_sort_by_time_and_prune_keeps_the_newest() {
        assert_eq!(file_name(0), "mcpwatch-19700101T000000.000Z.db");
        assert!(file_name(1_700_000_000_001) < file_name(1_700_000_000_002));
        let dir = tempfile::tempdir().unwrap();
        for ms in [3, 1, 2, 5, 4] {
            std::fs::write(dir.path().join(file_name(ms)), b"x").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        // Near misses of the name are somebody else's files.
        std::fs::write(dir.path().join("mcpwatch-important.db"), b"mine").unwrap();
        // A temp file a killed backup left two hours ago goes; a fresh one (a backup
        // running now) stays.
        let stale = dir.path().join(format!("{}.tmp-42", file_name(0)));
        let fresh = dir.path().join(format!("{}.tmp-43", file_name(1)));
        std::fs::write(&stale, b"x").unwrap();
        std::fs::write(&fresh, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                format!("{}.tmp-43", file_name(1)),
                file_name(4),
                file_name(5),
                "mcpwatch-important.db".to_owned(),
                "notes.txt".to_owned()
            ]
        );
        assert!(is_backup_name(&file_name(1_700_000_000_000)));
        assert!(!is_backup_name("mcpwatch-2026.db"));
    }

    #[test]
    fn backup_dir_is_created_private_and_refused_when_others_may_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("a").join("backups");
        create_private_dir(&made).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = create_private_dir(&made).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
    }

    #[test]
    fn backup_schedule_counts_from_the_newest_backup_not_from_start() {
        let hour = Duration::from_secs(3600);
        // The first ever: soon after start, not an interval later.
        assert_eq!(first_delay(None, 0, hour), FIRST_DELAY);
        assert_eq!(
            first_delay(None, 0, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        // 40 minutes ago: due in 20.
        let now = 10_000_000;
        assert_eq!(
            first_delay(Some(now - 40 * 60_000), now, hour),
            Duration::from_secs(20 * 60)
        );
        // Overdue (a collector restarted every 30 minutes would never reach an hour).
        assert_eq!(
            first_delay(Some(now - 5 * 3_600_000), now, hour),
            OVERDUE_DELAY
        );
        // A clock that went back: never longer than one interval.
        assert_eq!(first_delay(Some(now + 9 * 3_600_000), now, hour), hour);
    }

    #[test]
    fn backup_config_needs_a_dir_and_checks_bounds() {
        let p = Path::new("/etc/mcpwatch/collector.toml");
        assert!(BackupConfig::validate(p, RawBackup::default())
            .unwrap()
            .is_none());
        let raw = |interval: &str, keep| RawBackup {
            dir: Some("backups".into()),
            interval: Some(interval.parse().unwrap()),
            keep: Some(keep),
        };
        let ok = BackupConfig::validate(p, raw("6h", 3)).unwrap().unwrap();
        assert_eq!(ok.dir, Path::new("/etc/mcpwatch/backups"));
        assert_eq!((ok.interval, ok.keep), (Duration::from_secs(21_600), 3));
        assert!(BackupConfig::validate(p, raw("0s", 3)).unwrap().is_some());
        assert!(BackupConfig::validate(p, raw("10s", 3)).is_err());
        assert!(BackupConfig::validate(p, raw("6h", 0)).is_err());
        let no_dir = RawBackup {
            keep: Some(3),
            ..RawBackup::default()
        };
        assert!(BackupConfig::validate(p, no_dir).is_err());
    }
}
