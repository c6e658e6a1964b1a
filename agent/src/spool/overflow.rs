//! Staying within `max_bytes`: dropping the oldest segments, counting what was lost and
//! describing it in the gap record the next append stores first.

use super::error::SpoolError;
use super::record::HEADER_LEN;
use super::segment::{gap_batch, GapAcc, GapInfo};
use super::store::{remove_if_exists, Spool};
use super::SpoolBatch;

impl Spool {
    /// Rotates and drops oldest segments until `record_bytes` plus the gap record it implies
    /// fit under `max_bytes`, or nothing but the segment being written is left.
    pub(super) fn make_room(&mut self, record_bytes: u64) -> Result<(), SpoolError> {
        let mut range: Option<GapAcc> = None;
        let mut carried: Vec<GapInfo> = Vec::new();
        let mut removed = false;
        let result = loop {
            let gap_bytes = self.gap_record_bytes(&carried, range);
            let needed = record_bytes.saturating_add(gap_bytes);
            if self.active.as_ref().is_some_and(|a| {
                a.seg.size > 0 && a.seg.size.saturating_add(needed) > self.segment_bytes
            }) {
                self.close_active();
            }
            if self.bytes_on_disk().saturating_add(needed) <= self.max_bytes {
                break Ok(());
            }
            let Some(seg) = self.closed.pop_front() else {
                break Ok(());
            };
            if let Err(e) = remove_if_exists(&seg.path) {
                self.closed.push_front(seg);
                break Err(e);
            }
            removed = true;
            let mut dropped = 0u64;
            for r in seg.records.iter().filter(|r| r.seq > self.last_acked) {
                // Its content lives on in its replacement, which is newer and still stored.
                if self.superseded.remove(&r.seq) {
                    continue;
                }
                dropped += 1;
                self.dropped_records_total += 1;
                self.dropped_samples_total += r.samples;
                GapAcc::add(&mut range, r);
                carried.extend_from_slice(&r.gaps);
            }
            if dropped > 0 {
                tracing::warn!(path = %seg.path.display(), unacked_records = dropped,
                    "spool: full, dropped oldest segment");
            } else {
                tracing::debug!(path = %seg.path.display(),
                    "spool: full, dropped the oldest acknowledged segment");
            }
        };
        self.pending_gaps.extend(carried);
        self.pending_gaps.extend(range.map(GapAcc::info));
        if removed {
            self.sync_dir()?;
        }
        result
    }

    pub(super) fn pending_gap_batch(&self) -> Option<SpoolBatch> {
        gap_batch(self.pending_gaps.iter().copied())
    }

    /// Exact on-disk size of the gap record the current drops would produce (0 if none).
    fn gap_record_bytes(&self, carried: &[GapInfo], range: Option<GapAcc>) -> u64 {
        let gaps = self
            .pending_gaps
            .iter()
            .chain(carried)
            .copied()
            .chain(range.map(GapAcc::info));
        match gap_batch(gaps) {
            // A few dozen bytes per event; the fallback only matters if encoding failed,
            // which for plain integers it cannot.
            Some(b) => postcard::to_stdvec(&b).map_or(1024, |p| p.len() as u64) + HEADER_LEN,
            None => 0,
        }
    }
}
