//! The acknowledged watermark file `acked`: 8-byte LE seq followed by the crc32 of those
//! 8 bytes, overwritten in place on a file kept open, never flushed on its own.
//!
//! Why no fsync and no rename: the watermark only saves replay work. A process crash loses
//! nothing (the write is in the page cache); an OS crash or power loss can leave an older
//! watermark, or a torn one that reads as 0, and the spool then sends acknowledged records
//! again, which the collector drops as duplicates by seq (its `resume_from_seq` re-acks
//! them). Flushing it cost two of the five disk flushes of every cycle.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{io_err, SpoolError};

const WATERMARK_FILE: &str = "acked";
/// Left by versions that replaced the watermark by rename; removed at open.
pub(super) const WATERMARK_TMP: &str = "acked.tmp";

/// The watermark file, opened at the first write and kept open.
#[derive(Debug)]
pub(super) struct Watermark {
    path: PathBuf,
    file: Option<File>,
}

impl Watermark {
    pub(super) fn new(dir: &Path) -> Watermark {
        Watermark {
            path: dir.join(WATERMARK_FILE),
            file: None,
        }
    }

    /// Overwrites the watermark with `seq` (12 bytes at offset 0, one `pwrite`).
    pub(super) fn write(&mut self, seq: u64) -> Result<(), SpoolError> {
        let mut buf = [0u8; 12];
        let (seq_part, crc_part) = buf.split_at_mut(8);
        seq_part.copy_from_slice(&seq.to_le_bytes());
        crc_part.copy_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
        let file = match &mut self.file {
            Some(file) => file,
            slot => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.path)
                    .map_err(io_err("open", &self.path))?;
                // A damaged file may be longer; the watermark is exactly 12 bytes.
                file.set_len(12).map_err(io_err("truncate", &self.path))?;
                slot.insert(file)
            }
        };
        if let Err(e) = file.write_all_at(&buf, 0) {
            // Reopened (and truncated) by the next write.
            self.file = None;
            return Err(io_err("write", &self.path)(e));
        }
        Ok(())
    }
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
