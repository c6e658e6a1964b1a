//! `Spool`: the segment files, the watermark and the counters of one spool directory (the
//! guarantees are in the module documentation of `spool`).

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use mcpwatch_common::wire::Event;

use super::batch::SpoolBatch;
use super::config::{SpoolConfig, MIN_SEGMENT_BYTES};
use super::dir_lock::SpoolLock;
use super::error::{io_err, SpoolError};
use super::record::{self, Sealed, HEADER_LEN};
use super::segment::{
    parse_segment_name, read_record, scan_segment, segment_name, GapInfo, RecordMeta, Segment,
};
use super::split;
use super::stored::StoredRecord;
use super::watermark::{self, Watermark};

const CORRUPT_SUFFIX: &str = ".corrupt";
/// A replacement segment being written (`replace.rs`), renamed into place once complete.
pub(super) const TMP_SEGMENT_SUFFIX: &str = ".seg.tmp";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of segment files (the quantity bounded by `max_bytes`).
    pub bytes_on_disk: u64,
    pub segments: u64,
    /// Unacknowledged records still stored (minus those found unreadable by `read_from`).
    pub records_pending: u64,
    pub dropped_samples_total: u64,
    pub dropped_records_total: u64,
    pub corrupt_records_total: u64,
    pub corrupt_bytes_total: u64,
    /// Batches stored, or records replaced, as several records to fit the frame limit.
    pub split_records_total: u64,
    /// Records (or the parts of them) that exceed the frame limit even alone: kept in
    /// `rejected/` and reported to the collector as a gap.
    pub oversized_records_total: u64,
}

/// The segment being appended to in this process. Kept apart from the closed ones so the
/// "never delete the segment being written" rule is structural.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) seg: Segment,
    file: File,
}

/// Corruption counters; atomics because `read_from` (taking `&self`) also finds corruption.
#[derive(Debug, Default)]
struct Corruption {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Corruption {
    fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Spool {
    pub(super) dir: PathBuf,
    watermark: Watermark,
    pub(super) max_bytes: u64,
    pub(super) segment_bytes: u64,
    /// [`SpoolConfig::keep_acked`] in ms.
    keep_acked_ms: i64,
    pub(super) fsync: bool,
    /// Largest wire frame a record may need (see `SpoolConfig::max_frame_len`).
    pub(super) max_frame_len: usize,
    /// Closed segments, oldest first; all of them may be deleted by an overflow.
    pub(super) closed: VecDeque<Segment>,
    pub(super) active: Option<Active>,
    pub(super) last_acked: u64,
    pub(super) next_seq: u64,
    /// Gap descriptions not yet written because the append that produced them failed.
    pub(super) pending_gaps: Vec<GapInfo>,
    pub(super) dropped_samples_total: u64,
    pub(super) dropped_records_total: u64,
    corruption: Corruption,
    /// Corruption totals already handed out by `take_corruption_event`.
    reported: (u64, u64),
    /// Seqs `read_from` found unreadable, so each is counted once however often it is read.
    unreadable: Mutex<BTreeSet<u64>>,
    /// Unacknowledged records a replacement segment stands for (`replace.rs`): never read,
    /// never counted as pending or dropped.
    pub(super) superseded: BTreeSet<u64>,
    pub(super) split_records_total: u64,
    pub(super) oversized_records_total: u64,
    /// `dir/lock`, held for the spool's life (and let go last): a second process appending
    /// to the same files would break every guarantee above.
    _lock: SpoolLock,
}

impl Spool {
    /// Opens and indexes the spool of `cfg.dir`, whose `lock` the caller took. Fails only
    /// when the lock is of another directory or the directory cannot be listed; any file
    /// content is accepted and corruption is counted.
    // Over 80 lines on purpose: the recovery scan (watermark, segments, corrupt files, next
    // seq) is one ordered procedure whose steps feed each other.
    pub fn open_locked(cfg: SpoolConfig, lock: SpoolLock) -> Result<Spool, SpoolError> {
        let max_bytes = cfg.max_bytes.max(MIN_SEGMENT_BYTES);
        let segment_bytes = cfg.segment_bytes.clamp(MIN_SEGMENT_BYTES, max_bytes);
        let dir = cfg.dir;
        let keep_acked_ms = i64::try_from(cfg.keep_acked.as_millis()).unwrap_or(i64::MAX);
        if lock.dir != dir {
            return Err(io_err("lock", &dir)(io::Error::other(format!(
                "the lock held is of {}",
                lock.dir.display()
            ))));
        }
        let corruption = Corruption::default();
        let (last_acked, damage) = watermark::read(&dir);
        let watermark = Watermark::new(&dir);
        if let Some((records, bytes)) = damage {
            corruption.add(records, bytes);
        }
        // A leftover temp file is an interrupted watermark update; the old watermark stands.
        let _ = fs::remove_file(dir.join(watermark::WATERMARK_TMP));

        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list directory", &dir))? {
            let entry = entry.map_err(io_err("list directory", &dir))?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or_default();
            if let Some((first, replaces)) = parse_segment_name(name) {
                names.push((first, entry.path(), replaces));
            } else if name.ends_with(TMP_SEGMENT_SUFFIX) {
                // A replacement that was never renamed into place: the record it was
                // for is still here and will be replaced again.
                let _ = fs::remove_file(entry.path());
            }
        }
        names.sort();

        let mut closed = VecDeque::new();
        let mut superseded = BTreeSet::new();
        let mut max_seq = 0u64;
        let mut changed_dir = false;
        for (_, path, replaces) in names {
            let scanned = match scan_segment(&path, max_seq) {
                Ok(s) => s,
                Err(e) => {
                    let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    corruption.add(1, bytes);
                    let mut aside = path.clone().into_os_string();
                    aside.push(CORRUPT_SUFFIX);
                    let moved = fs::rename(&path, &aside);
                    tracing::warn!(path = %path.display(), error = %e, moved_aside = moved.is_ok(),
                        "spool: unreadable segment skipped");
                    changed_dir = true;
                    continue;
                }
            };
            corruption.add(scanned.corrupt_records, scanned.corrupt_bytes);
            if scanned.corrupt_records > 0 {
                tracing::warn!(path = %path.display(), records = scanned.corrupt_records,
                    bytes = scanned.corrupt_bytes, "spool: skipped corrupt data in segment");
            }
            max_seq = max_seq.max(scanned.max_seq);
            let seg = Segment {
                path,
                size: scanned.size,
                records: scanned.records,
            };
            // No valid record (an empty file from a crash right after creation, or garbage),
            // or everything in it acknowledged before a crash interrupted the deletion.
            if seg.last_seq().is_none_or(|last| last <= last_acked)
                && !seg.retained(keep_from(keep_acked_ms))
            {
                if let Err(e) = fs::remove_file(&seg.path) {
                    tracing::warn!(path = %seg.path.display(), error = %e,
                        "spool: cannot remove dead segment");
                }
                changed_dir = true;
                continue;
            }
            superseded.extend(replaces);
            closed.push_back(seg);
        }
        // Only records still stored count as superseded (an acknowledged one too: a rewind
        // may read it again).
        superseded.retain(|&seq| {
            closed
                .iter()
                .any(|s: &Segment| s.records.binary_search_by_key(&seq, |r| r.seq).is_ok())
        });

        let spool = Spool {
            dir,
            _lock: lock,
            watermark,
            max_bytes,
            segment_bytes,
            fsync: cfg.fsync,
            keep_acked_ms,
            max_frame_len: cfg.max_frame_len,
            closed,
            active: None,
            last_acked,
            next_seq: max_seq.max(last_acked).saturating_add(1),
            pending_gaps: Vec::new(),
            dropped_samples_total: 0,
            dropped_records_total: 0,
            corruption,
            reported: (0, 0),
            unreadable: Mutex::new(BTreeSet::new()),
            superseded,
            split_records_total: 0,
            oversized_records_total: 0,
        };
        if changed_dir {
            // Only makes the clean-up durable; a crash would just redo it, so not fatal.
            if let Err(e) = spool.sync_dir() {
                tracing::warn!(error = %e, "spool: cannot fsync directory after clean-up");
            }
        }
        Ok(spool)
    }

    /// Stores `batch` durably and returns the seq of its last record: a batch whose wire
    /// frame could exceed the frame limit is stored as several records, each within it (what
    /// exceeds it even alone goes last, in its own record, set aside when it is sent). May
    /// first drop the oldest segments and store a gap record to stay within `max_bytes`.
    pub fn append(&mut self, batch: SpoolBatch) -> Result<u64, SpoolError> {
        let split = split::split(batch, self.max_frame_len);
        let pieces = split.fits.len() + usize::from(split.too_large.is_some());
        if pieces > 1 {
            self.split_records_total += 1;
            tracing::info!(
                records = pieces,
                max_frame_len = self.max_frame_len,
                "spool: batch above the frame limit stored as several records"
            );
        }
        let mut pieces = split.fits.into_iter().chain(split.too_large);
        // `split` always yields at least one piece; an empty batch stands in otherwise.
        let first = pieces
            .next()
            .unwrap_or_else(|| SpoolBatch::of_events(Vec::new()));
        let mut last = self.append_one(first)?;
        for piece in pieces {
            last = self.append_one(piece)?;
        }
        Ok(last)
    }

    fn append_one(&mut self, batch: SpoolBatch) -> Result<u64, SpoolError> {
        // Sealed under the seq it should get; `write_record` re-seals it if a gap goes first.
        let sealed = record::seal(self.next_seq, &batch)?;
        self.make_room(HEADER_LEN + u64::from(sealed.len))?;
        if let Some(gap) = self.pending_gap_batch() {
            self.write_batch(&gap)?;
            self.pending_gaps.clear();
        }
        self.write_record(sealed, &batch)
    }

    /// Acknowledges every seq `<= seq`: records the watermark (in place, not flushed: see
    /// `watermark.rs`), then deletes closed segments that hold only acknowledged records
    /// (without a directory flush: a deletion lost in an OS crash only brings back
    /// acknowledged records, which are replayed and dropped by the collector). The active
    /// segment is kept and written on until full, so a cycle does not create and delete a
    /// file. An ack at or beyond `next_seq` (the collector has seen seqs this spool no longer
    /// knows, e.g. after the spool was wiped) moves `next_seq` past it so new batches are not
    /// discarded as replays. The watermark stays recorded even when deleting a segment fails;
    /// the deletion is retried on the next ack.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.last_acked {
            return Ok(());
        }
        self.watermark.write(seq)?;
        self.last_acked = seq;
        if seq >= self.next_seq {
            self.next_seq = seq.saturating_add(1);
        }
        let mut result = Ok(());
        let keep = keep_from(self.keep_acked_ms);
        while let Some(seg) = self.closed.pop_front() {
            if seg.last_seq().is_some_and(|last| last > seq) || seg.retained(keep) {
                self.closed.push_front(seg);
                break;
            }
            if let Err(e) = remove_if_exists(&seg.path) {
                self.closed.push_front(seg);
                result = Err(e);
                break;
            }
        }
        // What a rewind could still read keeps its marks; the rest are forgotten.
        let floor = self.oldest_seq().unwrap_or(self.next_seq);
        self.unreadable
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner())
            .retain(|&s| s >= floor);
        self.superseded.retain(|&s| s >= floor);
        result
    }

    /// The collector holds only the batches below `seq` although this spool had later ones
    /// acknowledged: its database was restored from a backup (or replaced). The records
    /// from `seq` on that are still stored become unacknowledged again, so they are sent
    /// again; what was already deleted is gone (the collector sees the jump in seqs).
    /// Returns how many acknowledged seqs were reopened (0 when `seq` is past the
    /// watermark). The lowered watermark is not flushed, like every watermark write: after
    /// an OS crash the higher one may come back, and the collector's resume point, still
    /// behind it, asks for this rewind again at the next connection.
    pub fn rewind(&mut self, seq: u64) -> Result<u64, SpoolError> {
        let to = seq.saturating_sub(1);
        if to >= self.last_acked {
            return Ok(0);
        }
        self.watermark.write(to)?;
        let reopened = self.last_acked - to;
        self.last_acked = to;
        Ok(reopened)
    }

    /// Seq of the oldest record stored.
    fn oldest_seq(&self) -> Option<u64> {
        self.segments()
            .find_map(|s| s.records.first().map(|r| r.seq))
    }

    /// Unacknowledged records with seq `>= seq`, in order: at most `max_records`, and no more
    /// payload bytes than `max_bytes` except that the first record is always returned (a big
    /// record must not stall replay). Records that cannot be read back are skipped and
    /// counted once each.
    pub fn read_from(
        &self,
        seq: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, SpoolError> {
        let start = seq.max(self.last_acked.saturating_add(1));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for seg in self.segments() {
            if seg.last_seq().is_none_or(|last| last < start) {
                continue;
            }
            let first = seg.records.partition_point(|r| r.seq < start);
            // The segment being written is read through its open handle: no open per read.
            let active = self.active.as_ref().filter(|a| a.seg.path == seg.path);
            let mut file: Option<File> = None;
            for meta in seg.records.get(first..).unwrap_or_default() {
                let len = meta.len as usize;
                if out.len() >= max_records
                    || (!out.is_empty() && bytes.saturating_add(len) > max_bytes)
                {
                    return Ok(out);
                }
                if self.is_unreadable(meta.seq) || self.superseded.contains(&meta.seq) {
                    continue;
                }
                if file.is_none() && active.is_none() {
                    match File::open(&seg.path) {
                        Ok(f) => file = Some(f),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            self.mark_unreadable(meta, &seg.path, "segment file vanished");
                            continue;
                        }
                        Err(e) => return Err(io_err("open", &seg.path)(e)),
                    }
                }
                let Some(f) = active.map(|a| &a.file).or(file.as_ref()) else {
                    continue;
                };
                match read_record(f, meta) {
                    Ok(record) => {
                        bytes = bytes.saturating_add(len);
                        out.push(record);
                    }
                    Err(why) => self.mark_unreadable(meta, &seg.path, &why),
                }
            }
        }
        Ok(out)
    }

    pub fn last_acked(&self) -> u64 {
        self.last_acked
    }

    /// The seq the next stored record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn stats(&self) -> SpoolStats {
        let mut stats = SpoolStats {
            dropped_samples_total: self.dropped_samples_total,
            dropped_records_total: self.dropped_records_total,
            corrupt_records_total: self.corruption.records.load(Ordering::Relaxed),
            corrupt_bytes_total: self.corruption.bytes.load(Ordering::Relaxed),
            split_records_total: self.split_records_total,
            oversized_records_total: self.oversized_records_total,
            ..SpoolStats::default()
        };
        for seg in self.segments() {
            stats.bytes_on_disk += seg.size;
            stats.segments += 1;
            let acked = seg.records.partition_point(|r| r.seq <= self.last_acked);
            stats.records_pending += (seg.records.len() - acked) as u64;
        }
        let unreadable = self
            .unreadable
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .len() as u64;
        stats.records_pending = stats
            .records_pending
            .saturating_sub(unreadable)
            .saturating_sub(self.superseded.len() as u64);
        stats
    }

    /// Corruption found since the previous call, as the event the agent forwards upstream.
    pub fn take_corruption_event(&mut self) -> Option<Event> {
        let total = (
            self.corruption.records.load(Ordering::Relaxed),
            self.corruption.bytes.load(Ordering::Relaxed),
        );
        if total == self.reported {
            return None;
        }
        let event = Event::SpoolCorruption {
            records: total.0 - self.reported.0,
            bytes: total.1 - self.reported.1,
        };
        self.reported = total;
        Some(event)
    }

    pub(super) fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.closed
            .iter()
            .chain(self.active.as_ref().map(|a| &a.seg))
    }

    pub(super) fn bytes_on_disk(&self) -> u64 {
        self.segments().map(|s| s.size).sum()
    }

    fn write_batch(&mut self, batch: &SpoolBatch) -> Result<u64, SpoolError> {
        let sealed = record::seal(self.next_seq, batch)?;
        self.write_record(sealed, batch)
    }

    /// Writes `batch` (sealed) as one record under `next_seq` into the active segment
    /// (creating it if needed). On failure the seq is not consumed and the segment is
    /// truncated back.
    fn write_record(&mut self, sealed: Sealed, batch: &SpoolBatch) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        let Sealed { len, bytes, .. } = if sealed.seq == seq {
            sealed
        } else {
            record::seal(seq, batch)?
        };
        let after = seq.checked_add(1).ok_or(SpoolError::SeqExhausted)?;
        let mut active = match self.active.take() {
            Some(a) => a,
            None => self.create_segment(seq)?,
        };
        let offset = active.seg.size;
        let written = active.file.write_all(&bytes).and_then(|()| {
            if self.fsync {
                active.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                active.seg.size = offset + bytes.len() as u64;
                active
                    .seg
                    .records
                    .push(RecordMeta::new(seq, offset, len, batch));
                self.active = Some(active);
                self.next_seq = after;
                Ok(seq)
            }
            Err(e) => {
                // Never leave a partial record for a later append to follow; if truncating
                // fails too, stop writing to this file and account for its worst-case size.
                let truncated = active.file.set_len(offset).is_ok();
                let path = active.seg.path.clone();
                if active.seg.records.is_empty() {
                    drop(active.file);
                    let _ = fs::remove_file(&active.seg.path);
                } else if truncated {
                    self.active = Some(active);
                } else {
                    active.seg.size = offset + bytes.len() as u64;
                    self.closed.push_back(active.seg);
                }
                Err(io_err("write", &path)(e))
            }
        }
    }

    fn create_segment(&self, first_seq: u64) -> Result<Active, SpoolError> {
        let path = self.dir.join(segment_name(first_seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create segment", &path))?;
        if let Err(e) = self.sync_dir() {
            // Leaving the file would make the retry's create_new fail forever.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Active {
            seg: Segment {
                path,
                size: 0,
                records: Vec::new(),
            },
            file,
        })
    }

    pub(super) fn close_active(&mut self) {
        if let Some(active) = self.active.take() {
            self.closed.push_back(active.seg);
        }
    }

    pub(super) fn sync_dir(&self) -> Result<(), SpoolError> {
        if self.fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync directory", &self.dir))?;
        }
        Ok(())
    }

    fn is_unreadable(&self, seq: u64) -> bool {
        self.unreadable
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .contains(&seq)
    }

    fn mark_unreadable(&self, meta: &RecordMeta, path: &Path, why: &str) {
        let fresh = self
            .unreadable
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(meta.seq);
        if fresh {
            self.corruption.add(1, meta.total_len());
            tracing::warn!(path = %path.display(), seq = meta.seq, reason = why,
                "spool: record unreadable, skipped");
        }
    }
}

/// The oldest sample time an acknowledged segment must reach to be kept (`None`: keep
/// nothing).
fn keep_from(keep_acked_ms: i64) -> Option<i64> {
    (keep_acked_ms > 0).then(|| mcpwatch_common::time::now_ms().saturating_sub(keep_acked_ms))
}

pub(super) fn remove_if_exists(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}
