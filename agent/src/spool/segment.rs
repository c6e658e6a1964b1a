//! Index of one segment file: what each valid record holds (seq, place, sample count and
//! time span, carried gap descriptions), how a segment is scanned on open and how one record
//! is read back and verified.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mcpwatch_common::wire::Event;

use super::batch::SpoolBatch;
use super::record::{self, Item, Scanner, HEADER_LEN};
use super::stored::StoredRecord;

pub(super) const SEGMENT_SUFFIX: &str = ".seg";
/// 20 digits (u64::MAX has 20) + ".seg".
pub(super) const SEGMENT_NAME_LEN: usize = 24;

/// One `Event::Gap`, kept in the index of the record that carries it so that dropping that
/// record later carries the description forward instead of losing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GapInfo {
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    pub(super) samples: u64,
    pub(super) from_ts_ms: i64,
    pub(super) to_ts_ms: i64,
}

impl GapInfo {
    pub(super) fn event(self) -> Event {
        Event::Gap {
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            samples: self.samples,
            from_ts_ms: self.from_ts_ms,
            to_ts_ms: self.to_ts_ms,
        }
    }
}

/// The contiguous range of unacked records being dropped by one overflow.
#[derive(Debug, Clone, Copy)]
pub(super) struct GapAcc {
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    pub(super) samples: u64,
    pub(super) ts: Option<(i64, i64)>,
}

impl GapAcc {
    pub(super) fn add(acc: &mut Option<GapAcc>, r: &RecordMeta) {
        let a = acc.get_or_insert(GapAcc {
            first_seq: r.seq,
            last_seq: r.seq,
            samples: 0,
            ts: None,
        });
        a.first_seq = a.first_seq.min(r.seq);
        a.last_seq = a.last_seq.max(r.seq);
        a.samples = a.samples.saturating_add(r.samples);
        a.ts = merge_ts(a.ts, r.ts);
    }

    /// With no samples in the range there is no time span; 0..0 says so.
    pub(super) fn info(self) -> GapInfo {
        let (from_ts_ms, to_ts_ms) = self.ts.unwrap_or((0, 0));
        GapInfo {
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            samples: self.samples,
            from_ts_ms,
            to_ts_ms,
        }
    }
}

pub(super) fn merge_ts(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (x, None) | (None, x) => x,
    }
}

/// Index entry of one valid record.
#[derive(Debug, Clone)]
pub(super) struct RecordMeta {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) samples: u64,
    /// Min and max sample timestamp; `None` without samples.
    pub(super) ts: Option<(i64, i64)>,
    pub(super) gaps: Vec<GapInfo>,
}

impl RecordMeta {
    pub(super) fn new(seq: u64, offset: u64, len: u32, batch: &SpoolBatch) -> Self {
        let ts = batch
            .samples
            .iter()
            .fold(None, |acc, s| merge_ts(acc, Some((s.ts_ms, s.ts_ms))));
        let gaps = batch
            .events
            .iter()
            .filter_map(|e| match *e {
                Event::Gap {
                    first_seq,
                    last_seq,
                    samples,
                    from_ts_ms,
                    to_ts_ms,
                } => Some(GapInfo {
                    first_seq,
                    last_seq,
                    samples,
                    from_ts_ms,
                    to_ts_ms,
                }),
                _ => None,
            })
            .collect();
        RecordMeta {
            seq,
            offset,
            len,
            samples: batch.samples.len() as u64,
            ts,
            gaps,
        }
    }

    pub(super) fn total_len(&self) -> u64 {
        HEADER_LEN + u64::from(self.len)
    }
}

#[derive(Debug)]
pub(super) struct Segment {
    pub(super) path: PathBuf,
    /// File size, including any corrupt bytes in it.
    pub(super) size: u64,
    /// Valid records in seq order (seqs strictly increase across all segments).
    pub(super) records: Vec<RecordMeta>,
}

impl Segment {
    pub(super) fn last_seq(&self) -> Option<u64> {
        self.records.last().map(|r| r.seq)
    }

    /// Whether this segment is still within the retention of acknowledged records: its
    /// newest sample is at or after `keep_from_ms`. A segment without samples (events and
    /// gap markers only) is not kept for their sake.
    pub(super) fn retained(&self, keep_from_ms: Option<i64>) -> bool {
        let Some(from) = keep_from_ms else {
            return false;
        };
        self.records
            .iter()
            .filter_map(|r| r.ts.map(|(_, max)| max))
            .max()
            .is_some_and(|newest| newest >= from)
    }
}

pub(super) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// Between the two seqs of a replacement segment's name.
const REPLACES: &str = ".replaces-";

/// A segment written whole to replace record `replaces` (see `replace.rs`): the name says
/// which record it supersedes, so the file's atomic rename is the only commit needed.
pub(super) fn replacement_name(first_seq: u64, replaces: u64) -> String {
    format!("{first_seq:020}{REPLACES}{replaces:020}{SEGMENT_SUFFIX}")
}

/// First seq of a segment file, and the record it replaces if it is a replacement.
pub(super) fn parse_segment_name(name: &str) -> Option<(u64, Option<u64>)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (first, replaces) = match stem.split_once(REPLACES) {
        Some((first, replaces)) => (first, Some(parse_seq(replaces)?)),
        None => (stem, None),
    };
    Some((parse_seq(first)?, replaces))
}

/// Exactly 20 digits, as the names are written.
fn parse_seq(digits: &str) -> Option<u64> {
    if digits.len() != SEGMENT_NAME_LEN - SEGMENT_SUFFIX.len()
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

pub(super) struct Scanned {
    pub(super) size: u64,
    pub(super) records: Vec<RecordMeta>,
    /// Highest seq of a checksum-valid record, even one whose payload did not decode: it may
    /// have been sent, so it must not be reused.
    pub(super) max_seq: u64,
    pub(super) corrupt_records: u64,
    pub(super) corrupt_bytes: u64,
}

/// Indexes one segment. Records must have seqs above `after` and increasing; others count
/// as corrupt (a duplicate would otherwise be replayed twice).
pub(super) fn scan_segment(path: &Path, after: u64) -> io::Result<Scanned> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut scanner = Scanner::new(file, size);
    let mut out = Scanned {
        size,
        records: Vec::new(),
        max_seq: 0,
        corrupt_records: 0,
        corrupt_bytes: 0,
    };
    let mut prev = after;
    while let Some(item) = scanner.next_item()? {
        match item {
            Item::Record {
                seq,
                offset,
                len,
                payload,
            } => {
                let decoded = (seq > prev).then(|| decode(&payload)).flatten();
                match decoded {
                    Some(batch) => out.records.push(RecordMeta::new(seq, offset, len, &batch)),
                    None => {
                        out.corrupt_records += 1;
                        out.corrupt_bytes += HEADER_LEN + u64::from(len);
                    }
                }
                if seq > prev {
                    prev = seq;
                    out.max_seq = seq;
                }
            }
            Item::Corrupt { bytes } => {
                out.corrupt_records += 1;
                out.corrupt_bytes += bytes;
            }
        }
    }
    Ok(out)
}

/// Decodes a payload, refusing trailing bytes (a valid record is exactly one batch).
pub(super) fn decode(payload: &[u8]) -> Option<SpoolBatch> {
    match postcard::take_from_bytes::<SpoolBatch>(payload) {
        Ok((batch, [])) => Some(batch),
        _ => None,
    }
}

/// Reads back and verifies one indexed record.
pub(super) fn read_record(file: &File, meta: &RecordMeta) -> Result<StoredRecord, String> {
    let mut buf = vec![0u8; meta.total_len() as usize];
    file.read_exact_at(&mut buf, meta.offset)
        .map_err(|e| format!("read failed: {e}"))?;
    let header = record::parse_header(&buf).ok_or("bad header")?;
    if header.seq != meta.seq || header.len != meta.len {
        return Err("header does not match the index".into());
    }
    // The payload keeps the buffer (its keys are read in place): the header moves out.
    buf.drain(..HEADER_LEN as usize);
    if record::checksum(header.seq, &buf) != header.crc {
        return Err("checksum mismatch".into());
    }
    StoredRecord::parse(header.seq, buf).ok_or_else(|| "payload does not decode".into())
}

/// One batch describing `gaps` in seq order; `None` when there are none.
pub(super) fn gap_batch(gaps: impl Iterator<Item = GapInfo>) -> Option<SpoolBatch> {
    let mut gaps: Vec<GapInfo> = gaps.collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_by_key(|g| g.first_seq);
    Some(SpoolBatch::of_events(
        gaps.into_iter().map(GapInfo::event).collect(),
    ))
}
