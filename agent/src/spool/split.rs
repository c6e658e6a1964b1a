//! Cutting a spool batch into pieces whose wire frames fit a frame limit: what the spool
//! does to a batch before storing it, and to a stored record the collector's (smaller) limit
//! refuses. Bounds come from `wire::batch_frame_len_bound`, so a piece fits whatever series
//! ids the connection has interned by the time it is sent.

use std::collections::HashMap;

use mcpwatch_common::wire::{self, Event, Sample, SeriesKey};

use super::batch::SpoolBatch;
use super::stored::StoredRecord;

/// The pieces of one batch.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Split {
    /// Batches each within the limit, samples and events in their original order.
    pub fits: Vec<SpoolBatch>,
    /// Samples (with their series) and events that exceed the limit even alone.
    pub too_large: Option<SpoolBatch>,
}

/// The most bytes `batch` can take as a `Frame::Batch`.
pub(crate) fn wire_len_bound(batch: &SpoolBatch) -> usize {
    let keys: usize = batch.series.iter().map(encoded).sum();
    let ts: usize = batch.samples.iter().map(|s| encoded(&s.ts_ms)).sum();
    let events: usize = batch.events.iter().map(encoded).sum();
    wire::batch_frame_len_bound(batch.series.len(), keys, batch.samples.len(), ts, events)
}

/// [`wire_len_bound`] of a record read back: a key's encoded size is its stored bytes.
pub(crate) fn stored_wire_len_bound(record: &StoredRecord) -> usize {
    let keys: usize = record.series().map(<[u8]>::len).sum();
    let ts: usize = record.samples.iter().map(|s| encoded(&s.ts_ms)).sum();
    let events: usize = record.events.iter().map(encoded).sum();
    wire::batch_frame_len_bound(
        record.series().len(),
        keys,
        record.samples.len(),
        ts,
        events,
    )
}

/// Splits `batch` into pieces whose [`wire_len_bound`] is at most `max` (a batch that fits
/// comes back whole). A piece repeats the series keys its samples use; samples whose series
/// index is outside the table (only a corrupt record has them) are dropped, as the uplink
/// drops them.
pub(crate) fn split(batch: SpoolBatch, max: usize) -> Split {
    if wire_len_bound(&batch) <= max {
        return Split {
            fits: vec![batch],
            too_large: None,
        };
    }
    let key_bytes: Vec<usize> = batch.series.iter().map(encoded).collect();
    let mut out = Split::default();
    let mut piece = Piece::default();
    let mut alone = Piece::default();
    for sample in batch.samples {
        let idx = sample.series as usize;
        let (Some(key), Some(&kb)) = (batch.series.get(idx), key_bytes.get(idx)) else {
            continue;
        };
        if !Piece::default().fits_sample(&sample, idx, kb, max) {
            alone.push_sample(sample, idx, key, kb);
            continue;
        }
        if !piece.fits_sample(&sample, idx, kb, max) {
            out.fits.extend(piece.take());
        }
        piece.push_sample(sample, idx, key, kb);
    }
    for event in batch.events {
        let eb = encoded(&event);
        if !Piece::default().fits_event(eb, max) {
            alone.push_event(event, eb);
            continue;
        }
        if !piece.fits_event(eb, max) {
            out.fits.extend(piece.take());
        }
        piece.push_event(event, eb);
    }
    out.fits.extend(piece.take());
    out.too_large = alone.take();
    if out.fits.is_empty() && out.too_large.is_none() {
        // Only out-of-table samples: still one (empty) record, so a caller always stores one.
        out.fits.push(empty());
    }
    out
}

fn encoded<T: serde::Serialize>(value: &T) -> usize {
    // Encoding into a size counter cannot fail for these plain types; count it as huge
    // if it ever did, so the item is set aside rather than sent over the limit.
    wire::postcard_len(value).unwrap_or(usize::MAX)
}

/// A piece being filled, with the bound's inputs kept up to date.
#[derive(Default)]
struct Piece {
    batch: Option<SpoolBatch>,
    /// Original series index → index in this piece.
    local: HashMap<usize, u32>,
    keys_bytes: usize,
    ts_bytes: usize,
    events_bytes: usize,
}

impl Piece {
    fn bound_with(
        &self,
        series: usize,
        keys: usize,
        samples: usize,
        ts: usize,
        ev: usize,
    ) -> usize {
        let b = self.batch.as_ref();
        wire::batch_frame_len_bound(
            b.map_or(0, |b| b.series.len()) + series,
            self.keys_bytes.saturating_add(keys),
            b.map_or(0, |b| b.samples.len()) + samples,
            self.ts_bytes.saturating_add(ts),
            self.events_bytes.saturating_add(ev),
        )
    }

    fn fits_sample(&self, s: &Sample, idx: usize, key_bytes: usize, max: usize) -> bool {
        let (series, keys) = match self.local.contains_key(&idx) {
            true => (0, 0),
            false => (1, key_bytes),
        };
        self.bound_with(series, keys, 1, encoded(&s.ts_ms), 0) <= max
    }

    fn fits_event(&self, event_bytes: usize, max: usize) -> bool {
        self.bound_with(0, 0, 0, 0, event_bytes) <= max
    }

    fn push_sample(&mut self, s: Sample, idx: usize, key: &SeriesKey, key_bytes: usize) {
        let batch = self.batch.get_or_insert_with(empty);
        let local = *self.local.entry(idx).or_insert_with(|| {
            batch.series.push(key.clone());
            self.keys_bytes = self.keys_bytes.saturating_add(key_bytes);
            (batch.series.len() - 1) as u32
        });
        self.ts_bytes = self.ts_bytes.saturating_add(encoded(&s.ts_ms));
        batch.samples.push(Sample { series: local, ..s });
    }

    fn push_event(&mut self, event: Event, event_bytes: usize) {
        self.batch.get_or_insert_with(empty).events.push(event);
        self.events_bytes = self.events_bytes.saturating_add(event_bytes);
    }

    fn take(&mut self) -> Option<SpoolBatch> {
        let batch = self.batch.take();
        *self = Piece::default();
        batch
    }
}

fn empty() -> SpoolBatch {
    SpoolBatch::of_events(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: usize, pad: usize) -> SeriesKey {
        SeriesKey::new(
            "mcpwatch_test_metric",
            &[("i", &format!("{i:05}")), ("pad", &"x".repeat(pad))],
        )
    }

    fn server_event(detail: usize) -> Event {
        Event::Server {
            ts_ms: 7,
            server: "s".into(),
            kind: "drift".into(),
            detail: "d".repeat(detail),
        }
    }

    /// (series key, ts, value) of every sample, and the events, in order.
    fn flat(batches: &[SpoolBatch]) -> (Vec<(SeriesKey, i64, u64)>, Vec<Event>) {
        let mut samples = Vec::new();
        let mut events = Vec::new();
        for b in batches {
            for s in &b.samples {
                let k = b.series[s.series as usize].clone();
                samples.push((k, s.ts_ms, s.value.to_bits()));
            }
            events.extend(b.events.iter().cloned());
        }
        (samples, events)
    }

    #[test]
    fn a_batch_within_the_limit_stays_whole() {
        let b = SpoolBatch::at(1, vec![(key(1, 0), 1.0), (key(2, 0), 2.0)]);
        let s = split(b.clone(), 1024);
        assert_eq!(s.fits, vec![b]);
        assert_eq!(s.too_large, None);
    }

    #[test]
    fn many_samples_split_into_pieces_under_the_limit_losing_nothing() {
        let values = (0..2000).map(|i| (key(i, 10), i as f64)).collect();
        let mut b = SpoolBatch::at(1_700_000_000_000, values);
        b.events = vec![server_event(100), server_event(200)];
        let max = 16 * 1024;
        assert!(wire_len_bound(&b) > 4 * max);
        let s = split(b.clone(), max);
        assert_eq!(s.too_large, None);
        assert!(s.fits.len() >= 5, "{} pieces", s.fits.len());
        for piece in &s.fits {
            assert!(wire_len_bound(piece) <= max);
            // Each piece carries only the keys its samples use.
            assert!(piece.series.len() <= piece.samples.len());
        }
        assert_eq!(flat(&s.fits), flat(&[b]));
    }

    #[test]
    fn what_cannot_fit_alone_is_set_apart_and_the_rest_still_goes() {
        let mut b = SpoolBatch::at(
            5,
            vec![(key(1, 0), 1.0), (key(2, 5000), 2.0), (key(3, 0), 3.0)],
        );
        // Sample 3 repeats the huge series 2: it must follow it into `too_large`.
        b.samples.push(Sample {
            series: 1,
            ts_ms: 6,
            value: 4.0,
        });
        b.events = vec![server_event(10), server_event(5000)];
        let s = split(b, 2048);
        let (fit_samples, fit_events) = flat(&s.fits);
        assert_eq!(fit_samples.len(), 2);
        assert_eq!(fit_events, vec![server_event(10)]);
        let too_large = s.too_large.expect("set apart");
        let (big_samples, big_events) = flat(std::slice::from_ref(&too_large));
        assert_eq!(big_samples.len(), 2);
        assert!(big_samples.iter().all(|(k, _, _)| *k == key(2, 5000)));
        assert_eq!(too_large.series.len(), 1, "the key is stored once");
        assert_eq!(big_events, vec![server_event(5000)]);
    }

    proptest! {
        #[test]
        fn splitting_keeps_every_sample_and_event_in_order(
            pads in prop::collection::vec(0usize..3000, 1..40),
            refs in prop::collection::vec((0usize..40, any::<i64>()), 0..200),
            details in prop::collection::vec(0usize..3000, 0..6),
            max in 256usize..8192,
        ) {
            let series: Vec<SeriesKey> = pads.iter().enumerate().map(|(i, p)| key(i, *p)).collect();
            let samples = refs
                .iter()
                .enumerate()
                .map(|(i, (r, ts))| Sample { series: (r % series.len()) as u32, ts_ms: *ts, value: i as f64 })
                .collect();
            let batch = SpoolBatch {
                series,
                samples,
                events: details.iter().map(|d| server_event(*d)).collect(),
            };
            let s = split(batch.clone(), max);
            for piece in &s.fits {
                prop_assert!(wire_len_bound(piece) <= max);
            }
            let mut all = s.fits.clone();
            all.extend(s.too_large.clone());
            let (mut got_s, mut got_e) = flat(&all);
            let (mut want_s, mut want_e) = flat(&[batch]);
            // Set-apart items leave the order; the multiset must be the same.
            got_s.sort();
            want_s.sort();
            prop_assert_eq!(got_s, want_s);
            let key_of = |e: &Event| format!("{e:?}");
            got_e.sort_by_key(key_of);
            want_e.sort_by_key(key_of);
            prop_assert_eq!(got_e, want_e);
            // What fits stays in its original order.
            let (fit_s, _) = flat(&s.fits);
            let values: Vec<u64> = fit_s.iter().map(|(_, _, v)| *v).collect();
            let mut sorted = values.clone();
            sorted.sort_by(|a, b| f64::from_bits(*a).total_cmp(&f64::from_bits(*b)));
            prop_assert_eq!(values, sorted);
        }
    }
}
