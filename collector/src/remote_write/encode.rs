//! Prometheus remote-write 1.0 bytes: the protobuf `WriteRequest` (written by hand: four
//! small messages, no code generation) compressed with snappy's block format. What the
//! spec requires of the content — labels sorted by name, `__name__` present, no empty
//! values, samples of a series in time order — is the caller's (`batch.rs`) to give.
//!
//! ```text
//! WriteRequest { repeated TimeSeries timeseries = 1; }
//! TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//! Label        { string name = 1; string value = 2; }
//! Sample       { double value = 1; int64 timestamp = 2; }
//! ```

/// The headers every request carries (the spec's).
pub const CONTENT_TYPE: &str = "application/x-protobuf";
pub const CONTENT_ENCODING: &str = "snappy";
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
pub const VERSION: &str = "0.1.0";

/// One series of a request: labels sorted by name (with `__name__`), samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Field `field` as a length-delimited value of `len` bytes: tag and length.
fn delimited(field: u32, len: usize, out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | 2), out);
    varint(len as u64, out);
}

fn label_len(name: &str, value: &str) -> usize {
    1 + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(value.len() as u64)
        + value.len()
}

fn sample_len(ts: i64) -> usize {
    // value: tag + 8 bytes; timestamp: tag + varint of the two's complement.
    1 + 8 + 1 + varint_len(ts as u64)
}

fn series_len(s: &TimeSeries) -> usize {
    let labels: usize = s
        .labels
        .iter()
        .map(|(n, v)| {
            let l = label_len(n, v);
            1 + varint_len(l as u64) + l
        })
        .sum();
    let samples: usize = s
        .samples
        .iter()
        .map(|(ts, _)| {
            let l = sample_len(*ts);
            1 + varint_len(l as u64) + l
        })
        .sum();
    labels + samples
}

/// The protobuf encoding of `WriteRequest { timeseries }`, sized exactly up front.
pub fn write_request(series: &[TimeSeries]) -> Vec<u8> {
    let sizes: Vec<usize> = series.iter().map(series_len).collect();
    let total: usize = sizes.iter().map(|&l| 1 + varint_len(l as u64) + l).sum();
    let mut out = Vec::with_capacity(total);
    for (s, &len) in series.iter().zip(&sizes) {
        delimited(1, len, &mut out);
        for (name, value) in &s.labels {
            delimited(1, label_len(name, value), &mut out);
            delimited(1, name.len(), &mut out);
            out.extend_from_slice(name.as_bytes());
            delimited(2, value.len(), &mut out);
            out.extend_from_slice(value.as_bytes());
        }
        for &(ts, value) in &s.samples {
            delimited(2, sample_len(ts), &mut out);
            out.push(1 << 3 | 1);
            out.extend_from_slice(&value.to_le_bytes());
            out.push(2 << 3);
            varint(ts as u64, &mut out);
        }
    }
    debug_assert_eq!(out.len(), total);
    out
}

/// The request body: `write_request` compressed with snappy's block format.
pub fn body(series: &[TimeSeries]) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&write_request(series))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_write_encodes_the_protobuf_layout_byte_for_byte() {
        let s = TimeSeries {
            labels: vec![("__name__".into(), "m".into())],
            samples: vec![(1, 0.5)],
        };
        let mut expected = vec![0x0a, 0x1c, 0x0a, 0x0d, 0x0a, 0x08];
        expected.extend_from_slice(b"__name__");
        expected.extend_from_slice(&[0x12, 0x01, b'm', 0x12, 0x0b, 0x09]);
        expected.extend_from_slice(&0.5f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 0x01]);
        assert_eq!(write_request(std::slice::from_ref(&s)), expected);
        let compressed = body(&[s]).unwrap();
        assert_eq!(
            snap::raw::Decoder::new()
                .decompress_vec(&compressed)
                .unwrap(),
            expected
        );
    }

    #[test]
    fn remote_write_sizes_hold_for_long_values_and_negative_timestamps() {
        let series: Vec<TimeSeries> = (0..50)
            .map(|i| TimeSeries {
                labels: vec![
                    ("__name__".into(), "x".repeat(i * 7)),
                    ("host".into(), "h".repeat(300)),
                ],
                samples: vec![(-1, f64::NAN), (i64::MAX, 1.0), (1_700_000_000_000, -2.5)],
            })
            .collect();
        // write_request checks its precomputed size against what it wrote.
        let bytes = write_request(&series);
        assert!(bytes.len() > 50 * 300);
    }
}
