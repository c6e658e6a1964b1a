//! Replacing a stored record whose wire frame the collector would refuse: its batch is cut
//! into records that fit, stored under new seqs in one new segment, and what exceeds the
//! limit even alone is kept in `rejected/` and described by a gap record in that segment.
//!
//! The segment is written whole to a temporary file, fsynced and renamed into place under a
//! name that says which record it replaces (`segment::replacement_name`). That rename is the
//! commit: after a crash either the old record is still the one to send (and is replaced
//! again) or the replacement is, and the old record is never read again. Seqs stay
//! exactly-once: the collector never sees the replaced seq, and any later ack covers it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::batch::SpoolBatch;
use super::error::{io_err, SpoolError};
use super::record;
use super::segment::{merge_ts, replacement_name, GapInfo, RecordMeta, Segment};
use super::split;
use super::store::{Spool, TMP_SEGMENT_SUFFIX};
use super::stored::StoredRecord;

/// Where records that exceed the frame limit even alone are kept for a human.
pub const REJECTED_DIR: &str = "rejected";

/// What [`Spool::replace_oversized`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replaced {
    /// Records now standing for the replaced one (0 when there was nothing to replace).
    pub records: usize,
    /// Samples that exceed the limit even alone, reported as a gap.
    pub set_aside_samples: u64,
    /// Events that exceed the limit even alone (a gap record cannot describe them).
    pub set_aside_events: u64,
    /// Whether what was set aside is kept in `rejected/` (it is not when that is full).
    pub kept: bool,
}

impl Spool {
    /// The frame limit records are stored for.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Stores later batches for frames of at most `max` bytes (the uplink passes the smaller
    /// of its own limit and the collector's).
    pub fn set_max_frame_len(&mut self, max: usize) {
        self.max_frame_len = max;
    }

    /// Replaces the unacknowledged `record` (as `read_from` returned it), whose frame
    /// exceeds `max_frame_len`, by records that fit (module docs). Nothing happens when the
    /// record is acknowledged, already replaced or gone. The spool may first drop its oldest
    /// segments to make room, as an append does; when that drops the record itself it is
    /// reported as dropped, not replaced.
    pub fn replace_oversized(
        &mut self,
        record: StoredRecord,
        max_frame_len: usize,
    ) -> Result<Replaced, SpoolError> {
        let seq = record.seq;
        if !self.holds_pending(seq) {
            return Ok(Replaced::default());
        }
        let batch = record
            .decode()
            .ok_or(SpoolError::Undecodable { seq })?
            .batch;
        let split = split::split(batch, max_frame_len);
        let mut batches = split.fits;
        let fitting = batches.len();
        let mut outcome = Replaced::default();
        if let Some(big) = split.too_large {
            outcome.set_aside_samples = big.samples.len() as u64;
            outcome.set_aside_events = big.events.len() as u64;
            outcome.kept = self.keep_rejected(seq, &big);
            batches.push(SpoolBatch::of_events(vec![gap_for(seq, &big).event()]));
        }

        // Encode first so the room needed is known before anything is dropped.
        let first = self.next_seq;
        let (bytes, records) = encode_records(&batches, first)?;
        self.make_room(bytes.len() as u64)?;
        if !self.holds_pending(seq) {
            return Ok(Replaced::default());
        }
        // The replacement must be newer than every segment, and nothing may be appended to
        // the segment it would otherwise follow in the same file.
        self.close_active();
        let path = self.write_replacement(first, seq, &bytes)?;

        outcome.records = records.len();
        self.next_seq = first + records.len() as u64;
        self.closed.push_back(Segment {
            path,
            size: bytes.len() as u64,
            records,
        });
        self.superseded.insert(seq);
        if fitting > 0 {
            self.split_records_total += 1;
        }
        if fitting < outcome.records {
            self.oversized_records_total += 1;
        }
        Ok(outcome)
    }

    /// Writes the replacement segment under its temporary name, fsyncs it and renames it
    /// into place: the commit of a replacement.
    fn write_replacement(
        &self,
        first: u64,
        replaces: u64,
        bytes: &[u8],
    ) -> Result<PathBuf, SpoolError> {
        let name = replacement_name(first, replaces);
        let path = self.dir.join(&name);
        // `name` ends in ".seg": the temporary name ends in TMP_SEGMENT_SUFFIX, which `open`
        // removes.
        let tmp = self
            .dir
            .join(format!("{name}{}", &TMP_SEGMENT_SUFFIX[".seg".len()..]));
        if let Err(e) = write_synced(&tmp, bytes, self.fsync) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        self.sync_dir()?;
        Ok(path)
    }

    /// Whether `seq` is stored, unacknowledged and not replaced yet.
    fn holds_pending(&self, seq: u64) -> bool {
        seq > self.last_acked
            && !self.superseded.contains(&seq)
            && self
                .segments()
                .any(|s| s.records.binary_search_by_key(&seq, |r| r.seq).is_ok())
    }

    /// Writes `batch` to `rejected/<seq>.rec` in the record layout, unless that directory
    /// would then hold more than a quarter of `max_bytes`. Failing to keep it is logged, not
    /// fatal: the gap is reported either way and the uplink must move on.
    fn keep_rejected(&self, seq: u64, batch: &SpoolBatch) -> bool {
        let dir = self.dir.join(REJECTED_DIR);
        let kept = (|| {
            let bytes = record::seal(seq, batch)?.bytes;
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
            let held: u64 = fs::read_dir(&dir)
                .map_err(io_err("list directory", &dir))?
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum();
            if held.saturating_add(bytes.len() as u64) > self.max_bytes / 4 {
                return Ok(false);
            }
            let path = dir.join(format!("{seq:020}.rec"));
            write_synced(&path, &bytes, self.fsync)?;
            if self.fsync {
                File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err("fsync directory", &dir))?;
            }
            Ok::<bool, SpoolError>(true)
        })();
        match kept {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(seq, dir = %dir.display(),
                    "spool: rejected/ is full; oversized record not kept");
                false
            }
            Err(e) => {
                tracing::warn!(seq, error = %e, "spool: cannot keep oversized record");
                false
            }
        }
    }
}

/// The gap describing the samples of record `seq` that were set aside.
fn gap_for(seq: u64, set_aside: &SpoolBatch) -> GapInfo {
    let ts = set_aside
        .samples
        .iter()
        .fold(None, |acc, s| merge_ts(acc, Some((s.ts_ms, s.ts_ms))));
    let (from_ts_ms, to_ts_ms) = ts.unwrap_or((0, 0));
    GapInfo {
        first_seq: seq,
        last_seq: seq,
        samples: set_aside.samples.len() as u64,
        from_ts_ms,
        to_ts_ms,
    }
}

/// `batches` as records with seqs from `first` on, back to back, and their index entries.
fn encode_records(
    batches: &[SpoolBatch],
    first: u64,
) -> Result<(Vec<u8>, Vec<RecordMeta>), SpoolError> {
    let mut bytes = Vec::new();
    let mut records = Vec::with_capacity(batches.len());
    for (i, batch) in batches.iter().enumerate() {
        // The seq after the last must exist too: `next_seq` moves past it.
        let at = first
            .checked_add(i as u64)
            .filter(|s| *s < u64::MAX)
            .ok_or(SpoolError::SeqExhausted)?;
        let sealed = record::seal(at, batch)?;
        records.push(RecordMeta::new(at, bytes.len() as u64, sealed.len, batch));
        bytes.extend_from_slice(&sealed.bytes);
    }
    Ok((bytes, records))
}

fn write_synced(path: &Path, bytes: &[u8], fsync: bool) -> Result<(), SpoolError> {
    let mut f = File::create(path).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    if fsync {
        f.sync_all().map_err(io_err("fsync", path))?;
    }
    Ok(())
}
