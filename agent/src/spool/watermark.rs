//! The acknowledged watermark file `acked`: 8-byte LE seq followed by the crc32 of those
//! 8 bytes, replaced atomically.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::error::{io_err, SpoolError};

const WATERMARK_FILE: &str = "acked";
pub(super) const WATERMARK_TMP: &str = "acked.tmp";

/// Replaces the watermark atomically (write the temporary file, fsync, rename); the caller
/// fsyncs the directory.
pub(super) fn write(dir: &Path, seq: u64, fsync: bool) -> Result<(), SpoolError> {
    let tmp = dir.join(WATERMARK_TMP);
    let path = dir.join(WATERMARK_FILE);
    let mut buf = [0u8; 12];
    let (seq_part, crc_part) = buf.split_at_mut(8);
    seq_part.copy_from_slice(&seq.to_le_bytes());
    crc_part.copy_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&buf).map_err(io_err("write", &tmp))?;
    if fsync {
        f.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))
}

/// The acked watermark, 0 when absent, with the corruption to count (records, bytes) if the
/// file was unreadable; a damaged file counts as corruption and reads as 0
/// (seqs stay monotonic through the segments, and the collector's resume point re-acks).
pub(super) fn read(dir: &Path) -> (u64, Option<(u64, u64)>) {
    let path = dir.join(WATERMARK_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (0, None),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "spool: cannot read watermark");
            return (0, Some((1, 0)));
        }
    };
    if let Ok([s0, s1, s2, s3, s4, s5, s6, s7, c0, c1, c2, c3]) =
        <[u8; 12]>::try_from(bytes.as_slice())
    {
        let seq = [s0, s1, s2, s3, s4, s5, s6, s7];
        if crc32fast::hash(&seq) == u32::from_le_bytes([c0, c1, c2, c3]) {
            return (u64::from_le_bytes(seq), None);
        }
    }
    tracing::warn!(path = %path.display(), "spool: damaged watermark ignored");
    (0, Some((1, bytes.len() as u64)))
}
