//! A record read back for sending: its series keys stay the encoded bytes they are in the
//! payload (no key is rebuilt), its samples and events are decoded. The uplink looks keys
//! up by those bytes, so a cycle's thousands of keys cost no allocation on the way out.
//!
//! A payload is a postcard `SpoolBatch`: the series as `varint(n)` then each `SeriesKey`
//! (`str name`, `varint(labels)`, then each label as two `str`, a `str` being `varint(len)`
//! and UTF-8), then the samples and the events. [`StoredRecord::parse`] walks exactly that
//! layout and accepts exactly the payloads `segment::decode` accepts (tested below), so a
//! record the spool validated this way also decodes in full when a split needs it.

use std::ops::Range;

use mcpwatch_common::wire::{Event, Sample};
use serde::Deserialize;

use super::batch::{SpoolBatch, SpoolRecord};
use super::segment;

/// One validated record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub seq: u64,
    payload: Vec<u8>,
    /// Where each series key lies in `payload`, in table order.
    keys: Vec<Range<usize>>,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
}

/// What follows the series table in a payload.
#[derive(Deserialize)]
struct Tail {
    samples: Vec<Sample>,
    events: Vec<Event>,
}

impl StoredRecord {
    /// Validates `payload` as one batch with nothing after it; `None` when it is not.
    pub(crate) fn parse(seq: u64, payload: Vec<u8>) -> Option<StoredRecord> {
        let (count, mut rest) = postcard::take_from_bytes::<u64>(&payload).ok()?;
        // A key takes at least two bytes: a corrupt count cannot size a huge table.
        let mut keys = Vec::with_capacity((count as usize).min(rest.len() / 2));
        for _ in 0..count {
            let start = payload.len() - rest.len();
            rest = skip_key(rest)?;
            keys.push(start..payload.len() - rest.len());
        }
        let tail = match postcard::take_from_bytes::<Tail>(rest) {
            Ok((tail, [])) => tail,
            _ => return None,
        };
        Some(StoredRecord {
            seq,
            payload,
            keys,
            samples: tail.samples,
            events: tail.events,
        })
    }

    /// `batch` as the spool would read it back under `seq` (tests of the spool's readers).
    #[cfg(test)]
    pub(crate) fn of(seq: u64, batch: &SpoolBatch) -> StoredRecord {
        let payload = postcard::to_stdvec(batch).expect("a batch encodes");
        StoredRecord::parse(seq, payload).expect("an encoded batch parses")
    }

    /// The encoded series keys, in table order (a sample's `series` indexes them).
    pub fn series(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.keys
            .iter()
            .map(|r| self.payload.get(r.clone()).unwrap_or_default())
    }

    /// The whole batch, keys rebuilt; `None` only if `parse` and postcard ever disagreed.
    pub fn decode(&self) -> Option<SpoolRecord> {
        segment::decode(&self.payload).map(|batch: SpoolBatch| SpoolRecord {
            seq: self.seq,
            batch,
        })
    }
}

/// The bytes after one encoded `SeriesKey` at the start of `bytes`.
fn skip_key(bytes: &[u8]) -> Option<&[u8]> {
    let (_name, rest) = postcard::take_from_bytes::<&str>(bytes).ok()?;
    let (labels, mut rest) = postcard::take_from_bytes::<u64>(rest).ok()?;
    for _ in 0..labels {
        let (_key, r) = postcard::take_from_bytes::<&str>(rest).ok()?;
        let (_value, r) = postcard::take_from_bytes::<&str>(r).ok()?;
        rest = r;
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpwatch_common::wire::SeriesKey;
    use proptest::prelude::*;

    fn batch(keys: &[(&str, &[(&str, &str)])], events: usize) -> SpoolBatch {
        let values = keys
            .iter()
            .enumerate()
            .map(|(i, (name, labels))| (SeriesKey::new(*name, labels), i as f64))
            .collect();
        let mut b = SpoolBatch::at(1_700_000_000_000, values);
        b.events = (0..events)
            .map(|i| Event::Server {
                ts_ms: i as i64,
                server: "s".into(),
                kind: "probe_ok".into(),
                detail: format!("event {i}"),
            })
            .collect();
        b
    }

    fn check(b: &SpoolBatch) -> StoredRecord {
        let payload = postcard::to_stdvec(b).expect("encodes");
        let stored = StoredRecord::parse(7, payload).expect("parses");
        let keys: Vec<SeriesKey> = stored
            .series()
            .map(|k| postcard::from_bytes(k).expect("a key's bytes decode alone"))
            .collect();
        assert_eq!(keys, b.series);
        assert_eq!((&stored.samples, &stored.events), (&b.samples, &b.events));
        let whole = stored.decode().expect("decodes in full");
        assert_eq!((whole.seq, &whole.batch), (7, b));
        stored
    }

    #[test]
    fn keys_are_the_encoded_bytes_of_each_series() {
        let b = batch(
            &[
                ("cpu", &[]),
                (
                    "tool_calls_total",
                    &[("server", "é"), ("tool", "x"), ("outcome", "ok")],
                ),
            ],
            2,
        );
        let stored = check(&b);
        let first: Vec<u8> = postcard::to_stdvec(&b.series[1]).expect("encodes");
        assert_eq!(stored.series().nth(1), Some(first.as_slice()));
        check(&batch(&[], 0));
        check(&batch(&[], 3));
    }

    #[test]
    fn a_sealed_record_is_the_header_then_the_postcard_payload() {
        use crate::spool::record;
        let b = batch(&[("a", &[("k", "v")]), ("b", &[])], 1);
        let payload = postcard::to_stdvec(&b).expect("encodes");
        let sealed = record::seal(9, &b).expect("seals");
        let len = record::payload_len(&payload).expect("fits");
        assert_eq!((sealed.seq, sealed.len), (9, len));
        assert_eq!(sealed.bytes, record::encode(9, len, &payload));
        assert_eq!(
            sealed.bytes.capacity(),
            sealed.bytes.len(),
            "sized by the counting pass"
        );
    }

    #[test]
    fn refuses_what_decode_refuses() {
        let b = batch(&[("a", &[("k", "v")]), ("b", &[])], 1);
        let payload = postcard::to_stdvec(&b).expect("encodes");
        for cut in 0..payload.len() {
            let short = payload[..cut].to_vec();
            assert_eq!(
                segment::decode(&short).is_some(),
                StoredRecord::parse(1, short).is_some()
            );
        }
        let mut long = payload.clone();
        long.push(0);
        assert!(StoredRecord::parse(1, long).is_none(), "trailing bytes");
        // A label value that is not UTF-8.
        let at = payload.iter().position(|&c| c == b'v').expect("value byte");
        let mut bad = payload;
        bad[at] = 0xff;
        assert!(segment::decode(&bad).is_none());
        assert!(StoredRecord::parse(1, bad).is_none());
        // A huge key count in a few bytes sizes nothing.
        assert!(StoredRecord::parse(1, vec![0xff, 0xff, 0xff, 0xff, 0x0f]).is_none());
    }

    proptest! {
        #[test]
        fn parse_agrees_with_decode(
            keys in proptest::collection::vec(
                ("[a-z_]{0,12}", proptest::collection::vec(("[a-z]{1,4}", "\\PC{0,6}"), 0..5)),
                0..20,
            ),
            events in 0usize..3,
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let owned: Vec<(String, Vec<(&str, &str)>)> = keys
                .iter()
                .map(|(n, l)| (n.clone(), l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()))
                .collect();
            let refs: Vec<(&str, &[(&str, &str)])> =
                owned.iter().map(|(n, l)| (n.as_str(), l.as_slice())).collect();
            check(&batch(&refs, events));
            // Arbitrary bytes: parse accepts exactly what decode accepts.
            let decoded = segment::decode(&noise);
            let parsed = StoredRecord::parse(3, noise).and_then(|s| s.decode());
            prop_assert_eq!(decoded, parsed.map(|r| r.batch));
        }
    }
}
