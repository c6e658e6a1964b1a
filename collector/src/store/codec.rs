//! Compact, lossless encoding of one committed batch's samples into a single BLOB.
//!
//! Why a BLOB per batch: the measured facts (DESIGN.md) put one BLOB per frame at ≈ 3.2M
//! samples/s while a row per sample keyed `(series, ts)` manages 60k/s. Reads select blobs by
//! host and time range and decode them; a blob of 1000 samples decodes in microseconds.
//!
//! Layout (all integers LEB128 varints, signed ones zigzag-encoded):
//!
//! ```text
//! u8 version (= 1) | varint n | zigzag base_ts | n × sample
//! sample = u8 head | [varint series delta] | [zigzag ts] | value bytes
//! head   = bits 0-3 value tag | bits 4-5 series mode | bit 6 explicit ts | bit 7 zero
//! ```
//!
//! Samples are sorted by (series, ts). Series mode: 0 same series as the previous sample,
//! 1 the next id (+1), 2 an explicit delta follows. The first sample of a series has the
//! implicit timestamp `base_ts` (a host batch is mostly one scrape, so nearly every sample
//! costs no timestamp bytes); later samples of a series are delta-of-delta coded. Values are
//! tagged so common metric shapes are short, and every choice is verified bit-exactly before
//! use, so NaN payloads, -0.0 and infinities round-trip unchanged. All arithmetic wraps: the
//! encoder and decoder agree modulo 2^64 for any i64 input, and corrupt input can only
//! produce an error or garbage values, never a panic or an unbounded allocation.

/// Format version written in the first byte.
const VERSION: u8 = 1;

const TAG_ZERO: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_INT_DELTA: u8 = 2;
const TAG_REPEAT: u8 = 3;
const TAG_F32: u8 = 4;
const TAG_F64: u8 = 5;
/// Tags `TAG_DEC_BASE + k` for k in 1..=MAX_DEC_DIGITS: mantissa / 10^k.
const TAG_DEC_BASE: u8 = 5;
const MAX_DEC_DIGITS: u8 = 10;

const SERIES_SAME: u8 = 0;
const SERIES_NEXT: u8 = 1;
const SERIES_EXPLICIT: u8 = 2;

const HEAD_TS_EXPLICIT: u8 = 0x40;

/// Powers of ten, all exactly representable as f64 (10^22 is the largest that is).
const POW10: [f64; 11] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// One decoded sample: (database series id, timestamp ms, value).
pub(crate) type Row = (i64, i64, f64);

/// Why a blob could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("unsupported blob version {0}")]
    Version(u8),
    #[error("blob truncated at byte {0}")]
    Truncated(usize),
    #[error("bad varint at byte {0}")]
    Varint(usize),
    #[error("invalid sample header {head:#04x} at byte {at}")]
    Head { head: u8, at: usize },
    #[error("sample count {0} exceeds blob size")]
    Count(u64),
    #[error("{0} trailing bytes after the last sample")]
    Trailing(usize),
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits, at least one byte.
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// The value as an exact i64, when it is one (excludes -0.0, NaN, inf, fractions).
fn exact_int(v: f64) -> Option<i64> {
    // The range check keeps the cast from saturating; the bit check rejects -0.0.
    if v.is_finite() && v.trunc() == v && v.abs() < 9.2e18 {
        let i = v as i64;
        if (i as f64).to_bits() == v.to_bits() {
            return Some(i);
        }
    }
    None
}

/// Smallest k in 1..=MAX_DEC_DIGITS with v == m / 10^k bit-exactly, and that m.
fn exact_decimal(v: f64) -> Option<(u8, i64)> {
    if !v.is_finite() {
        return None;
    }
    for k in 1..=MAX_DEC_DIGITS {
        let scaled = (v * POW10[k as usize]).round();
        // |m| <= 2^53 keeps m exact as an f64, so the decoder's m as f64 is the same number.
        if scaled.abs() > 9_007_199_254_740_992.0 {
            return None;
        }
        let m = scaled as i64;
        if decimal_value(m, k).to_bits() == v.to_bits() {
            return Some((k, m));
        }
    }
    None
}

fn decimal_value(m: i64, k: u8) -> f64 {
    // k is bounded by the tag range, so the index is always in POW10.
    (m as f64) / POW10[k as usize]
}

/// Appends the encoding of `samples` to `out`, sorting them by (series, ts) first (stable,
/// so equal keys keep their order). Returns nothing: encoding cannot fail.
pub(crate) fn encode(samples: &mut [Row], out: &mut Vec<u8>) {
    samples.sort_by_key(|&(series, ts, _)| (series, ts));
    let base_ts = samples.iter().map(|s| s.1).min().unwrap_or(0);
    out.reserve(samples.len() * 5 + 16);
    out.push(VERSION);
    put_varint(out, samples.len() as u64);
    put_varint(out, zigzag(base_ts));

    let mut prev_series = 0i64;
    let mut prev_ts = 0i64;
    let mut prev_delta = 0i64;
    let mut prev_value: Option<f64> = None;
    for (i, &(series, ts, value)) in samples.iter().enumerate() {
        let start = i == 0 || series != prev_series;
        let series_delta = series.wrapping_sub(prev_series) as u64;
        let series_mode = if !start || (i == 0 && series == 0) {
            SERIES_SAME
        } else if series_delta == 1 {
            SERIES_NEXT
        } else {
            SERIES_EXPLICIT
        };
        let ts_code = if start {
            prev_delta = 0;
            prev_value = None;
            ts.wrapping_sub(base_ts)
        } else {
            let delta = ts.wrapping_sub(prev_ts);
            let dod = delta.wrapping_sub(prev_delta);
            prev_delta = delta;
            dod
        };
        let (tag, payload) = choose_value(value, prev_value);
        let mut head = tag | (series_mode << 4);
        if ts_code != 0 {
            head |= HEAD_TS_EXPLICIT;
        }
        out.push(head);
        if series_mode == SERIES_EXPLICIT {
            put_varint(out, series_delta);
        }
        if ts_code != 0 {
            put_varint(out, zigzag(ts_code));
        }
        match payload {
            Payload::None => {}
            Payload::Varint(u) => put_varint(out, u),
            Payload::F32(f) => out.extend_from_slice(&f.to_le_bytes()),
            Payload::F64(f) => out.extend_from_slice(&f.to_le_bytes()),
        }
        prev_series = series;
        prev_ts = ts;
        prev_value = Some(value);
    }
}

enum Payload {
    None,
    Varint(u64),
    F32(f32),
    F64(f64),
}

/// Picks the shortest verified representation of `v`.
fn choose_value(v: f64, prev: Option<f64>) -> (u8, Payload) {
    if v.to_bits() == 0 {
        return (TAG_ZERO, Payload::None);
    }
    if prev.is_some_and(|p| p.to_bits() == v.to_bits()) {
        return (TAG_REPEAT, Payload::None);
    }
    let mut best = (TAG_F64, Payload::F64(v), 8usize);
    let mut consider = |tag: u8, payload: Payload, len: usize| {
        if len < best.2 {
            best = (tag, payload, len);
        }
    };
    if let Some(i) = exact_int(v) {
        let z = zigzag(i);
        consider(TAG_INT, Payload::Varint(z), varint_len(z));
        if let Some(p) = prev.and_then(exact_int) {
            let d = zigzag(i.wrapping_sub(p));
            consider(TAG_INT_DELTA, Payload::Varint(d), varint_len(d));
        }
    } else {
        if let Some((k, m)) = exact_decimal(v) {
            let z = zigzag(m);
            consider(TAG_DEC_BASE + k, Payload::Varint(z), varint_len(z));
        }
        let f = v as f32;
        if (f as f64).to_bits() == v.to_bits() {
            consider(TAG_F32, Payload::F32(f), 4);
        }
    }
    (best.0, best.1)
}

/// Reads a blob sequentially; every read is bounds-checked.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(CodecError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let end = self
            .pos
            .checked_add(N)
            .ok_or(CodecError::Truncated(self.pos))?;
        let slice = self
            .data
            .get(self.pos..end)
            .ok_or(CodecError::Truncated(self.pos))?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        self.pos = end;
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            // The tenth byte may only carry the one remaining bit.
            if shift == 63 && b > 1 {
                return Err(CodecError::Varint(start));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Varint(start))
    }
}

/// Decodes a whole blob, calling `f(series, ts, value)` for each sample in stored order.
/// Returns the sample count. On error, `f` may have seen a prefix of the samples.
pub(crate) fn decode_each(
    data: &[u8],
    mut f: impl FnMut(i64, i64, f64),
) -> Result<usize, CodecError> {
    let mut c = Cursor { data, pos: 0 };
    let version = c.byte()?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let n = c.varint()?;
    // Every sample takes at least its head byte: this bounds allocations by the blob size.
    if n > data.len() as u64 {
        return Err(CodecError::Count(n));
    }
    let base_ts = unzigzag(c.varint()?);
    let mut prev_series = 0i64;
    let mut prev_ts = 0i64;
    let mut prev_delta = 0i64;
    let mut prev_value: Option<f64> = None;
    for i in 0..n {
        let at = c.pos;
        let head = c.byte()?;
        let series_mode = (head >> 4) & 0x3;
        if head & 0x80 != 0 || series_mode > SERIES_EXPLICIT {
            return Err(CodecError::Head { head, at });
        }
        let series = match series_mode {
            SERIES_SAME => prev_series,
            SERIES_NEXT => prev_series.wrapping_add(1),
            _ => prev_series.wrapping_add(c.varint()? as i64),
        };
        let start = i == 0 || series_mode != SERIES_SAME;
        let ts_code = if head & HEAD_TS_EXPLICIT != 0 {
            unzigzag(c.varint()?)
        } else {
            0
        };
        let ts = if start {
            prev_delta = 0;
            prev_value = None;
            base_ts.wrapping_add(ts_code)
        } else {
            let delta = prev_delta.wrapping_add(ts_code);
            prev_delta = delta;
            prev_ts.wrapping_add(delta)
        };
        let tag = head & 0x0f;
        let value = match tag {
            TAG_ZERO => 0.0,
            TAG_INT => unzigzag(c.varint()?) as f64,
            TAG_INT_DELTA => {
                let p = prev_value.ok_or(CodecError::Head { head, at })?;
                // Saturating cast: the encoder only uses this tag when p is an exact int.
                (p as i64).wrapping_add(unzigzag(c.varint()?)) as f64
            }
            TAG_REPEAT => prev_value.ok_or(CodecError::Head { head, at })?,
            TAG_F32 => f64::from(f32::from_le_bytes(c.bytes::<4>()?)),
            TAG_F64 => f64::from_le_bytes(c.bytes::<8>()?),
            k => decimal_value(unzigzag(c.varint()?), k - TAG_DEC_BASE),
        };
        f(series, ts, value);
        prev_series = series;
        prev_ts = ts;
        prev_value = Some(value);
    }
    if c.pos != data.len() {
        return Err(CodecError::Trailing(data.len() - c.pos));
    }
    // n <= data.len() was checked above, so it fits in usize.
    Ok(n as usize)
}

/// Decodes a whole blob into rows sorted by (series, ts).
pub(crate) fn decode(data: &[u8]) -> Result<Vec<Row>, CodecError> {
    let mut out = Vec::new();
    decode_each(data, |s, t, v| out.push((s, t, v)))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(rows: &[Row]) -> Vec<(i64, i64, u64)> {
        rows.iter().map(|&(s, t, v)| (s, t, v.to_bits())).collect()
    }

    fn round_trip(mut rows: Vec<Row>) -> (Vec<Row>, Vec<u8>) {
        let mut blob = Vec::new();
        encode(&mut rows, &mut blob);
        let back = decode(&blob).expect("own encoding decodes");
        assert_eq!(bits(&rows), bits(&back));
        (back, blob)
    }

    fn arb_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            any::<f64>(),
            (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
            (-100_000i64..100_000, 0u32..6).prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
            any::<f32>().prop_map(f64::from),
            Just(f64::NAN),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
        ]
    }

    fn arb_rows() -> impl Strategy<Value = Vec<Row>> {
        let series = prop_oneof![0i64..20, any::<i64>()];
        let ts = prop_oneof![
            (0i64..10).prop_map(|k| 1_700_000_000_000 + k * 1000),
            any::<i64>()
        ];
        prop::collection::vec((series, ts, arb_value()), 0..300)
    }

    proptest! {
        #[test]
        fn encode_decode_is_bit_exact(rows in arb_rows()) {
            round_trip(rows);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_blobs_never_panic(rows in arb_rows(), pos in any::<usize>(), byte in any::<u8>()) {
            let (_, mut blob) = round_trip(rows);
            let i = pos % blob.len();
            blob[i] = byte;
            let _ = decode(&blob);
        }
    }

    #[test]
    fn special_floats_survive_bit_exactly() {
        let signalling_nan = f64::from_bits(0x7ff0_0000_0000_0001);
        let payload_nan = f64::from_bits(0xfff8_dead_beef_0001);
        let rows = vec![
            (1, 5, f64::NAN),
            (1, 6, signalling_nan),
            (1, 7, payload_nan),
            (1, 8, -0.0),
            (1, 9, f64::INFINITY),
            (1, 10, f64::NEG_INFINITY),
            (1, 11, f64::MIN_POSITIVE / 2.0),
            (1, 12, f64::MAX),
            (1, 13, i64::MAX as f64),
            (1, 14, -(2f64.powi(63))),
        ];
        round_trip(rows);
    }

    #[test]
    fn extreme_ids_and_timestamps_wrap_consistently() {
        let rows = vec![
            (i64::MIN, i64::MAX, 1.0),
            (i64::MIN, i64::MIN, 2.0),
            (i64::MAX, 0, 3.0),
            (-5, -1, 4.0),
        ];
        round_trip(rows);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let rows: Vec<Row> = (0..50)
            .map(|i| (i % 7, 1_700_000_000_000 + i * 1000, i as f64 * 0.37))
            .collect();
        let (_, blob) = round_trip(rows);
        for len in 0..blob.len() {
            assert!(
                decode(&blob[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
        let mut long = blob.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(CodecError::Trailing(1)));
        let mut bad_version = blob;
        bad_version[0] = 9;
        assert_eq!(decode(&bad_version), Err(CodecError::Version(9)));
    }

    #[test]
    fn huge_claimed_count_is_refused_before_allocating() {
        let mut blob = vec![VERSION];
        put_varint(&mut blob, u64::MAX);
        blob.push(0);
        assert_eq!(decode(&blob), Err(CodecError::Count(u64::MAX)));
    }

    #[test]
    fn one_scrape_of_common_shapes_is_compact() {
        // 1000 series, one timestamp: ints, 2-decimal gauges, f32 percentages.
        let rows: Vec<Row> = (0..1000)
            .map(|i| {
                let v = match i % 3 {
                    0 => (i * 1_048_576) as f64,
                    1 => (i as f64) / 100.0,
                    _ => f64::from(i as f32 * 0.731),
                };
                (1000 + i, 1_700_000_000_000, v)
            })
            .collect();
        let (_, blob) = round_trip(rows);
        assert!(blob.len() < 1000 * 5, "{} bytes", blob.len());
    }
}
