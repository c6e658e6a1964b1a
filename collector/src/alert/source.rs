//! Where the engine reads samples from. The store implements `SeriesSource` over its recent
//! in-memory window; `MemorySource` is a plain struct the caller (or a test) fills.

use std::collections::HashMap;

use super::selector::{Labels, Selector, NAME_LABEL};

/// One series: its labels (metric name excluded) and samples sorted by timestamp (ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

pub trait SeriesSource {
    /// Every series of `metric` with its samples at or after `since_ms`, sorted by time.
    /// Matchers are applied by the engine, so a source only needs an index by metric name.
    /// A series with no sample since `since_ms` may be omitted.
    fn series(&self, metric: &str, since_ms: i64) -> Vec<Series>;

    /// The scope labels of host `host` (its operator labels plus `host`), which owner
    /// scopes are matched against; `None` when unknown (then no owned rule reads it).
    fn host_scope(&self, host: &str) -> Option<Labels>;

    /// Every metric name the source holds (for selectors that pick metrics by `__name__`).
    fn metrics(&self) -> Vec<String>;
}

/// The series a selector reads at or after `since_ms`: its metric's, or for a `__name__`
/// selector those of every metric whose name matches, each labelled with its `__name__`.
pub fn select(source: &dyn SeriesSource, selector: &Selector, since_ms: i64) -> Vec<Series> {
    if selector.name.is_none() {
        return source.series(&selector.metric, since_ms);
    }
    let mut out = Vec::new();
    for metric in source.metrics() {
        if !selector.reads(&metric) {
            continue;
        }
        for mut s in source.series(&metric, since_ms) {
            s.labels.insert(NAME_LABEL.to_owned(), metric.clone());
            out.push(s);
        }
    }
    out
}

/// In-memory source: metric name → series. Samples may be pushed in any order.
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    metrics: HashMap<String, Vec<Series>>,
    /// Host → operator labels (see [`SeriesSource::host_scope`]).
    hosts: HashMap<String, Labels>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, metric: &str, labels: &Labels, ts_ms: i64, value: f64) {
        let list = self.metrics.entry(metric.to_owned()).or_default();
        let series = match list.iter().position(|s| &s.labels == labels) {
            Some(i) => &mut list[i],
            None => {
                list.push(Series {
                    labels: labels.clone(),
                    samples: Vec::new(),
                });
                let last = list.len() - 1;
                &mut list[last]
            }
        };
        let at = series.samples.partition_point(|s| s.0 <= ts_ms);
        series.samples.insert(at, (ts_ms, value));
    }

    /// Adds a whole series of `metric` (samples sorted by time; its labels not yet present).
    pub fn push_series(&mut self, metric: &str, series: Series) {
        self.metrics
            .entry(metric.to_owned())
            .or_default()
            .push(series);
    }

    /// Sets a host's operator labels.
    pub fn set_host_labels(&mut self, host: &str, labels: Labels) {
        self.hosts.insert(host.to_owned(), labels);
    }

    /// Drops samples older than `before_ms`, keeping memory bounded.
    pub fn prune(&mut self, before_ms: i64) {
        for list in self.metrics.values_mut() {
            for s in list.iter_mut() {
                s.samples.retain(|x| x.0 >= before_ms);
            }
            list.retain(|s| !s.samples.is_empty());
        }
    }
}

impl SeriesSource for MemorySource {
    fn metrics(&self) -> Vec<String> {
        self.metrics.keys().cloned().collect()
    }

    fn host_scope(&self, host: &str) -> Option<Labels> {
        let mut l = self.hosts.get(host)?.clone();
        l.insert("host".to_owned(), host.to_owned());
        Some(l)
    }

    fn series(&self, metric: &str, since_ms: i64) -> Vec<Series> {
        let Some(list) = self.metrics.get(metric) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|s| {
                let from = s.samples.partition_point(|x| x.0 < since_ms);
                (from < s.samples.len()).then(|| Series {
                    labels: s.labels.clone(),
                    samples: s.samples[from..].to_vec(),
                })
            })
            .collect()
    }
}
