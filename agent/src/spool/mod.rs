//! Crash-safe on-disk spool of the agent: every batch is stored under a per-agent sequence
//! number before it is sent, and stays until the collector acknowledges a durable commit.
//!
//! # Layout of `dir`
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segment files named by their first seq, zero-padded to 20
//!   digits, holding records back to back (format in `record.rs`: `MAGIC | len | crc32 | seq |
//!   postcard(SpoolBatch)`, integers little-endian, crc over seq + payload).
//! - `acked`: the acknowledged watermark, 8-byte LE seq followed by the crc32 of those 8 bytes,
//!   overwritten in place and never flushed on its own (`watermark.rs` says why).
//! - `*.seg.corrupt`: segment files that could not be read at all, moved aside for a human.
//! - `NNNN.replaces-MMMM.seg`: a replacement segment (`replace.rs`): record `MMMM`, too large
//!   for the collector's frame limit, cut into records that fit, stored from seq `NNNN` on.
//!   Its presence means `MMMM` is never read again.
//! - `rejected/NNNN.rec`: what exceeded the frame limit even alone (record layout), kept for
//!   a human up to a quarter of `max_bytes`, and reported to the collector as a gap.
//! - `lock`: an exclusive `flock` held by the process that has the spool open, naming it
//!   (`mcpwatch-agent (pid N on HOST)`); a second process is refused (`SpoolError::Locked`).
//!
//! # Guarantees
//! - A new process never appends to a segment left by an earlier one, so a torn tail is never
//!   extended and corruption stays confined to bytes that were being written at the crash.
//! - `open` succeeds on any file content: unreadable bytes are skipped, counted (records and
//!   bytes, see [`Spool::take_corruption_event`]) and the scan resynchronises on the next
//!   record whose header and checksum validate. Only failing to create or list `dir` is fatal.
//! - Seqs never go backwards: on open `next_seq = max(highest seq found, acked watermark) + 1`.
//! - Segment bytes on disk stay within `max_bytes`. When an append would exceed it, whole
//!   segments are deleted oldest first (never the one being written); unacked records lost that
//!   way are counted and described by an [`Event::Gap`](mcpwatch_common::wire::Event::Gap)
//!   record appended before the caller's batch. Drops are therefore segment-grained: `segment_bytes` is clamped to
//!   `[MIN_SEGMENT_BYTES, max_bytes]` and callers should pass about `max_bytes / 16`
//!   ([`SpoolConfig::new`]). The bound is exceeded only by a single record (plus its gap
//!   marker) that alone is larger than `max_bytes`: it is still written, in its own segment.
//! - With `fsync`, `append` returns only after the record is on stable storage (one
//!   `fdatasync` per record, the only flush of a normal cycle; a new segment file also flushes
//!   the directory once). Without it, a power loss can lose the tail that was already sent;
//!   the collector's `resume_from_seq` fed to [`Spool::ack`] then moves `next_seq` past it so
//!   new batches are not taken for replays.
//! - Acknowledgement is not flushed: a process crash (kill -9) loses nothing, an OS crash or
//!   power loss can bring back an older watermark or segments whose deletion was not yet on
//!   disk, so acknowledged records are sent again and dropped by the collector by seq. What
//!   an OS crash can lose is therefore: without `fsync`, records not yet written back by the
//!   kernel; with it, nothing that `append` returned for.
//! - The segment being written stays open and is written on until full, acknowledged or not:
//!   a cycle neither creates nor deletes a file. Reads of it go through the open handle.
//! - No record needs a wire frame above the frame limit: `append` stores a bigger batch as
//!   several records, and a record stored under a larger limit than the collector's is
//!   replaced ([`Spool::replace_oversized`]). Only a sample or event that is too large alone
//!   is set aside, counted and reported as an [`Event::Gap`](mcpwatch_common::wire::Event::Gap).

mod batch;
mod config;
mod dir_lock;
mod error;
mod handle;
mod overflow;
mod record;
mod replace;
#[cfg(test)]
mod replace_tests;
#[cfg(test)]
mod retention_tests;
mod segment;
mod split;
mod store;
mod stored;
#[cfg(test)]
mod tests;
mod watermark;

pub use batch::{SpoolBatch, SpoolRecord};
pub use config::{
    SpoolConfig, DEFAULT_KEEP_ACKED, DEFAULT_MAX_BYTES, MAX_DEFAULT_SEGMENT_BYTES,
    MIN_SEGMENT_BYTES,
};
pub use dir_lock::{lock, lock_waiting, SpoolLock, LOCK_WAIT};
pub use error::SpoolError;
pub use handle::SpoolHandle;
pub use replace::{Replaced, REJECTED_DIR};
pub(crate) use split::stored_wire_len_bound;
pub use store::{Spool, SpoolStats};
pub use stored::StoredRecord;
