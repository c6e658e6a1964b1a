//! Byte layout of one spool record and the scanner that walks a segment file, skipping and
//! measuring corrupt bytes until the next record whose header and checksum validate.
//!
//! Record: `MAGIC (u32 LE) | len (u32 LE) | crc32 (u32 LE, over seq bytes + payload) |
//! seq (u64 LE) | payload (len bytes)`. The checksum covers the seq so a record copied to the
//! wrong place or a header with a stale seq is rejected, and the magic lets the scanner find
//! the next record after garbage without trusting any length field.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use postcard::ser_flavors::Size;
use serde::Serialize;

use super::error::SpoolError;

/// "MWSP" in ASCII, readable in a hex dump of a segment.
const MAGIC_BYTES: [u8; 4] = *b"MWSP";
/// magic + len + crc + seq.
pub(crate) const HEADER_LEN: u64 = 20;
/// Largest payload a record may carry. A corrupt length field can therefore never make the
/// scanner allocate more than this; a real batch is a few KiB (the wire frame limit is 1 MiB).
pub(crate) const MAX_PAYLOAD_LEN: u32 = 64 * 1024 * 1024;
/// How much of a segment the scanner reads at once; bounds memory while scanning any file.
const WINDOW_LEN: usize = 1024 * 1024;

/// A header whose magic and length are plausible; the checksum is not verified yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
}

/// Checksum stored in the header: crc32 over the seq (LE) followed by the payload.
pub(crate) fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The payload length as stored in a header, or `None` when it cannot be a record (empty:
/// a postcard batch is never empty, so a zeroed length field is always detected as corrupt).
pub(crate) fn payload_len(payload: &[u8]) -> Option<u32> {
    u32::try_from(payload.len())
        .ok()
        .filter(|len| (1..=MAX_PAYLOAD_LEN).contains(len))
}

/// The full record bytes; `len` must come from [`payload_len`] of the same payload (tests
/// build records from chosen payload bytes with it; the spool itself uses [`seal`]).
#[cfg(test)]
pub(crate) fn encode(seq: u64, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN as usize + payload.len());
    out.extend_from_slice(&header(seq, len, payload));
    out.extend_from_slice(payload);
    out
}

/// One whole record, header included, ready to be written.
pub(crate) struct Sealed {
    pub seq: u64,
    pub len: u32,
    pub bytes: Vec<u8>,
}

/// `value` encoded as one whole record under `seq`. The payload is serialized once into a
/// buffer sized by a counting pass, behind room left for the header: a batch of thousands
/// of keys is neither copied nor over-allocated by doubling.
pub(crate) fn seal<T: Serialize>(seq: u64, value: &T) -> Result<Sealed, SpoolError> {
    let size = postcard::serialize_with_flavor::<T, _, usize>(value, Size::default())
        .map_err(SpoolError::Encode)?;
    let mut bytes = Vec::with_capacity((HEADER_LEN as usize).saturating_add(size));
    bytes.resize(HEADER_LEN as usize, 0);
    let mut bytes = postcard::to_extend(value, bytes).map_err(SpoolError::Encode)?;
    let (head, payload) = bytes.split_at_mut(HEADER_LEN as usize);
    let len = payload_len(payload).ok_or(SpoolError::RecordSize {
        bytes: payload.len(),
        max: MAX_PAYLOAD_LEN,
    })?;
    head.copy_from_slice(&header(seq, len, payload));
    Ok(Sealed { seq, len, bytes })
}

fn header(seq: u64, len: u32, payload: &[u8]) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    let fields = [
        &MAGIC_BYTES[..],
        &len.to_le_bytes(),
        &checksum(seq, payload).to_le_bytes(),
        &seq.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        out[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    out
}

/// Parses the first [`HEADER_LEN`] bytes of `buf`; `None` when the magic is wrong, the
/// length is outside `1..=MAX_PAYLOAD_LEN`, or `buf` is too short.
pub(crate) fn parse_header(buf: &[u8]) -> Option<Header> {
    let head: &[u8; 20] = buf.get(..20)?.try_into().ok()?;
    let [m0, m1, m2, m3, l0, l1, l2, l3, c0, c1, c2, c3, s0, s1, s2, s3, s4, s5, s6, s7] = *head;
    if [m0, m1, m2, m3] != MAGIC_BYTES {
        return None;
    }
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    if !(1..=MAX_PAYLOAD_LEN).contains(&len) {
        return None;
    }
    Some(Header {
        len,
        crc: u32::from_le_bytes([c0, c1, c2, c3]),
        seq: u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
    })
}

/// What the scanner found at the current position of a segment.
#[derive(Debug)]
pub(crate) enum Item {
    /// Header and checksum are valid; the payload has not been decoded yet.
    Record {
        seq: u64,
        offset: u64,
        len: u32,
        payload: Vec<u8>,
    },
    /// `bytes` bytes at the current position belong to no valid record (one contiguous run).
    Corrupt { bytes: u64 },
}

/// Walks a segment file front to back through a bounded read window.
pub(crate) struct Scanner {
    file: File,
    file_len: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl Scanner {
    pub(crate) fn new(file: File, file_len: u64) -> Self {
        Scanner {
            file,
            file_len,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// Bytes `at..at + len` of the file; callers guarantee `at + len <= file_len`.
    fn window(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let end = at.saturating_add(len as u64);
        let buf_end = self.buf_start + self.buf.len() as u64;
        if at < self.buf_start || end > buf_end {
            let want = (len.max(WINDOW_LEN) as u64).min(self.file_len.saturating_sub(at));
            self.buf.resize(want as usize, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.buf_start = at;
        }
        let from = (at - self.buf_start) as usize;
        self.buf
            .get(from..from + len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "segment shrank"))
    }

    /// The header at `at` if a whole record starts there and its checksum matches.
    fn valid_header_at(&mut self, at: u64) -> io::Result<Option<Header>> {
        if self.file_len.saturating_sub(at) < HEADER_LEN {
            return Ok(None);
        }
        let Some(h) = parse_header(self.window(at, HEADER_LEN as usize)?) else {
            return Ok(None);
        };
        if at + HEADER_LEN + u64::from(h.len) > self.file_len {
            return Ok(None);
        }
        let payload = self.window(at + HEADER_LEN, h.len as usize)?;
        Ok((checksum(h.seq, payload) == h.crc).then_some(h))
    }

    /// Offset of the first valid record at or after `from`, or the file length.
    fn resync(&mut self, from: u64) -> io::Result<u64> {
        let mut at = from;
        while self.file_len.saturating_sub(at) >= HEADER_LEN {
            let n = (self.file_len - at).min(WINDOW_LEN as u64) as usize;
            let found = self
                .window(at, n)?
                .windows(MAGIC_BYTES.len())
                .position(|w| w == MAGIC_BYTES);
            match found {
                Some(i) => {
                    let candidate = at + i as u64;
                    if self.valid_header_at(candidate)?.is_some() {
                        return Ok(candidate);
                    }
                    at = candidate + 1;
                }
                // n >= HEADER_LEN here; keep 3 bytes of overlap so a magic straddling two
                // windows is still seen.
                None => at += (n - (MAGIC_BYTES.len() - 1)) as u64,
            }
        }
        Ok(self.file_len)
    }

    /// The next record or corrupt run, `None` at the end of the file.
    pub(crate) fn next_item(&mut self) -> io::Result<Option<Item>> {
        let at = self.pos;
        if at >= self.file_len {
            return Ok(None);
        }
        if let Some(h) = self.valid_header_at(at)? {
            let payload = self.window(at + HEADER_LEN, h.len as usize)?.to_vec();
            self.pos = at + HEADER_LEN + u64::from(h.len);
            return Ok(Some(Item::Record {
                seq: h.seq,
                offset: at,
                len: h.len,
                payload,
            }));
        }
        let next = self.resync(at + 1)?;
        self.pos = next;
        Ok(Some(Item::Corrupt { bytes: next - at }))
    }
}
