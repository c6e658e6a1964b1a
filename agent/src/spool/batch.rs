//! What goes into the spool and comes back out: a batch of samples and events, and a
//! batch read back with its seq. Producers build batches here ([`SpoolBatch::at`]).

use mcpwatch_common::wire::{Event, Sample, SeriesKey};
use serde::{Deserialize, Serialize};

/// What the sampler hands to the spool: samples whose `series` field indexes into `series`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolBatch {
    pub series: Vec<SeriesKey>,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
}

/// A batch read back from the spool with the seq it was stored under.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolRecord {
    pub seq: u64,
    pub batch: SpoolBatch,
}

impl SpoolBatch {
    /// One batch from one sampling cycle: every value shares the cycle's timestamp.
    pub fn at(ts_ms: i64, values: Vec<(SeriesKey, f64)>) -> SpoolBatch {
        let mut series = Vec::with_capacity(values.len());
        let mut samples = Vec::with_capacity(values.len());
        for (i, (key, value)) in values.into_iter().enumerate() {
            series.push(key);
            samples.push(Sample {
                series: i as u32,
                ts_ms,
                value,
            });
        }
        SpoolBatch {
            series,
            samples,
            events: Vec::new(),
        }
    }

    /// A batch of events only.
    pub fn of_events(events: Vec<Event>) -> SpoolBatch {
        SpoolBatch {
            series: Vec::new(),
            samples: Vec::new(),
            events,
        }
    }
}
