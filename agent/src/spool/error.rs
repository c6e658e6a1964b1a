//! Why a spool operation failed.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("spool: cannot encode batch: {0}")]
    Encode(#[source] postcard::Error),
    #[error("spool: encoded batch of {bytes} bytes is empty or above the {max}-byte record limit")]
    RecordSize { bytes: usize, max: u32 },
    /// A record validated when read back did not decode in full: `StoredRecord::parse` and
    /// postcard disagree, which the spool's tests rule out.
    #[error("spool: record {seq} validated but does not decode")]
    Undecodable { seq: u64 },
    #[error("spool: sequence numbers exhausted")]
    SeqExhausted,
    /// Another process has the spool directory (`dir/lock`).
    #[error("spool: {} is in use by {holder}", dir.display())]
    Locked { dir: PathBuf, holder: String },
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
