//! How a spool is shaped: its directory, its byte cap, its segment size and whether it
//! fsyncs; and the bounds those values are clamped to.

use std::path::PathBuf;

use mcpwatch_common::wire::DEFAULT_MAX_FRAME_LEN;

/// Smallest segment size accepted. Below this, per-segment file overhead and directory
/// fsyncs dominate; it also keeps a segment able to hold several typical batches.
pub const MIN_SEGMENT_BYTES: u64 = 4 * 1024;
/// Default cap on segment bytes on disk.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Largest segment size [`SpoolConfig::new`] picks.
pub const MAX_DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Cap on segment bytes on disk (see the module docs for the one exception).
    pub max_bytes: u64,
    /// A segment is closed once the next record would take it past this size.
    pub segment_bytes: u64,
    /// `sync_data` after every append, fsync of the directory after creating or removing files.
    pub fsync: bool,
    /// Largest wire frame a stored record may need: bigger batches are stored as several
    /// records. The agent's own frame limit until a collector announces a smaller one
    /// ([`Spool::set_max_frame_len`](super::Spool::set_max_frame_len)).
    pub max_frame_len: usize,
    /// Acknowledged records are kept this long (by their newest sample's time) so that a
    /// collector restored from a backup can be sent them again (`Spool::rewind`); they are
    /// the first to go when the spool needs room. Zero deletes them once acknowledged.
    pub keep_acked: std::time::Duration,
}

/// Default of [`SpoolConfig::keep_acked`]: the default backup interval of the collector.
pub const DEFAULT_KEEP_ACKED: std::time::Duration = std::time::Duration::from_secs(86_400);

impl SpoolConfig {
    /// The recommended shape: `segment_bytes = min(8 MiB, max_bytes / 16)` so an overflow
    /// drops at most a sixteenth of the spool at a time, fsync on, and records sized for the
    /// default frame limit.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        SpoolConfig {
            dir: dir.into(),
            max_bytes,
            segment_bytes: (max_bytes / 16).min(MAX_DEFAULT_SEGMENT_BYTES),
            fsync: true,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            keep_acked: DEFAULT_KEEP_ACKED,
        }
    }
}
