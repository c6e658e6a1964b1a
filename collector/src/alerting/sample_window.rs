//! The alert engine's view of recent data: the last few minutes of every series some rule
//! reads, kept in memory by the writer thread as batches commit. Series a rule does not
//! read cost one map entry; samples older than the longest window of the rules reading
//! their metric (plus grace) are dropped.

use std::collections::{HashMap, VecDeque};

use crate::alert::{Labels, MatchOp, Matcher, Rule, Series};

struct Entry {
    metric: String,
    labels: Labels,
    samples: VecDeque<(i64, f64)>,
}

/// Series id → entry index. Called for every committed sample, so the common case (dense
/// SQLite rowids) is an array index rather than a hash lookup.
#[derive(Default)]
struct IdMap {
    /// Index `id` holds entry index + 1; 0 = not read by any rule.
    dense: Vec<u32>,
    sparse: HashMap<i64, usize>,
}

/// How far ahead of the collector's clock a sample may be.
const FUTURE_MS: i64 = 60_000;

/// Ids below this live in `dense` (4 bytes each).
const DENSE_IDS: i64 = 1 << 24;

impl IdMap {
    fn get(&self, id: i64) -> Option<usize> {
        if (0..DENSE_IDS).contains(&id) {
            let v = *self.dense.get(id as usize)?;
            (v > 0).then(|| v as usize - 1)
        } else {
            self.sparse.get(&id).copied()
        }
    }

    fn insert(&mut self, id: i64, idx: usize) {
        match u32::try_from(idx + 1) {
            Ok(v) if (0..DENSE_IDS).contains(&id) => {
                let i = id as usize;
                if self.dense.len() <= i {
                    self.dense.resize(i + 1, 0);
                }
                self.dense[i] = v;
            }
            _ => {
                self.sparse.insert(id, idx);
            }
        }
    }

    /// Renumbers entries; ids whose entry is gone are forgotten.
    fn remap(&mut self, f: impl Fn(usize) -> Option<usize>) {
        for v in self.dense.iter_mut().filter(|v| **v > 0) {
            *v = f(*v as usize - 1).map_or(0, |i| u32::try_from(i + 1).unwrap_or(0));
        }
        self.sparse.retain(|_, i| match f(*i) {
            Some(n) => {
                *i = n;
                true
            }
            None => false,
        });
    }
}

#[derive(Default)]
pub(crate) struct SampleWindow {
    /// Database series id → entry index, for series some rule reads.
    by_id: IdMap,
    /// Series that do not come from agents (the collector's own figures), by name + labels.
    by_key: HashMap<(String, Labels), usize>,
    entries: Vec<Entry>,
    by_metric: HashMap<String, Vec<usize>>,
    /// Metric → how long its samples are kept (ms): those the rules name, and those a
    /// `__name__` pattern of theirs was found to match.
    keep_ms: HashMap<String, i64>,
    /// What the rules name, to tell whether a rule reload changed anything.
    configured: HashMap<String, i64>,
    /// Metric-name patterns of `__name__` selectors, with their span.
    patterns: Vec<(Matcher, i64)>,
    pattern_keys: Vec<(String, MatchOp, i64)>,
}

impl SampleWindow {
    /// Sets which metrics are kept and for how long, from the rules. Forgets everything
    /// else (a rule reload starts the window afresh for new metrics).
    pub(crate) fn set_rules(&mut self, rules: &[Rule], grace_ms: i64) {
        let mut keep: HashMap<String, i64> = HashMap::new();
        let mut patterns: Vec<(Matcher, i64)> = Vec::new();
        for r in rules {
            let span = r
                .window_ms
                .max(r.absent_for_ms.unwrap_or(0))
                .saturating_add(grace_ms);
            for sel in std::iter::once(&r.selector).chain(r.divide_by.iter()) {
                match &sel.name {
                    Some(m) => patterns.push((m.clone(), span)),
                    None => {
                        let e = keep.entry(sel.metric.clone()).or_default();
                        *e = (*e).max(span);
                    }
                }
            }
        }
        let keys: Vec<(String, MatchOp, i64)> = patterns
            .iter()
            .map(|(m, span)| (m.value.clone(), m.op, *span))
            .collect();
        if keep != self.configured || keys != self.pattern_keys {
            self.configured = keep.clone();
            self.keep_ms = keep;
            self.patterns = patterns;
            self.pattern_keys = keys;
            // Keep the entries of metrics still read, renumbered; ids of series not read
            // before are learned again from their next declaration (a new connection).
            let old = std::mem::take(&mut self.entries);
            let mut remap: HashMap<usize, usize> = HashMap::new();
            self.by_key.clear();
            self.by_metric.clear();
            for (i, e) in old.into_iter().enumerate() {
                if self.wanted(&e.metric) {
                    let idx = self.entries.len();
                    remap.insert(i, idx);
                    self.by_metric
                        .entry(e.metric.clone())
                        .or_default()
                        .push(idx);
                    self.by_key
                        .insert((e.metric.clone(), e.labels.clone()), idx);
                    self.entries.push(e);
                }
            }
            self.by_id.remap(|i| remap.get(&i).copied());
        }
    }

    /// Whether some rule reads metric `name` (learning its span when a `__name__` pattern
    /// matches it).
    fn wanted(&mut self, name: &str) -> bool {
        if self.keep_ms.contains_key(name) {
            return true;
        }
        let span = self
            .patterns
            .iter()
            .filter(|(m, _)| m.matches_value(name))
            .map(|(_, span)| *span)
            .max();
        match span {
            Some(span) => {
                self.keep_ms.insert(name.to_owned(), span);
                true
            }
            None => false,
        }
    }

    /// Every metric held.
    pub(crate) fn metrics(&self) -> Vec<String> {
        self.by_metric.keys().cloned().collect()
    }

    /// Learns what database series `id` is (from an agent's declaration).
    pub(crate) fn declare(&mut self, id: i64, host: &str, name: &str, labels: &[(String, String)]) {
        if self.by_id.get(id).is_some() || !self.wanted(name) {
            return;
        }
        let mut l: Labels = labels.iter().cloned().collect();
        l.insert("host".into(), host.into());
        let idx = self.entry(name, l);
        self.by_id.insert(id, idx);
    }

    fn entry(&mut self, name: &str, labels: Labels) -> usize {
        let key = (name.to_owned(), labels);
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        let idx = self.entries.len();
        self.entries.push(Entry {
            metric: key.0.clone(),
            labels: key.1.clone(),
            samples: VecDeque::new(),
        });
        self.by_metric.entry(key.0.clone()).or_default().push(idx);
        self.by_key.insert(key, idx);
        idx
    }

    /// Adds a committed sample; returns the metric name when a rule reads it.
    pub(crate) fn push(&mut self, id: i64, ts_ms: i64, value: f64, now_ms: i64) -> Option<&str> {
        let idx = self.by_id.get(id)?;
        self.insert(idx, ts_ms, value, now_ms);
        self.entries.get(idx).map(|e| e.metric.as_str())
    }

    /// Adds a sample of a series the collector produces itself.
    pub(crate) fn push_own(&mut self, name: &str, labels: Labels, ts_ms: i64, value: f64) {
        if !self.wanted(name) {
            return;
        }
        let idx = self.entry(name, labels);
        self.insert(idx, ts_ms, value, ts_ms);
    }

    fn insert(&mut self, idx: usize, ts_ms: i64, value: f64, now_ms: i64) {
        let Some(e) = self.entries.get_mut(idx) else {
            return;
        };
        let keep = self.keep_ms.get(&e.metric).copied().unwrap_or(0);
        let horizon = now_ms.saturating_sub(keep);
        // A timestamp from the future (a wrong agent clock) would pin `last` and absence
        // values until that time comes; one minute covers honest clock skew.
        if ts_ms < horizon || ts_ms > now_ms.saturating_add(FUTURE_MS) {
            return;
        }
        // Agents send in time order, so this is almost always a push at the back; a replay
        // of the same timestamp replaces (one sample per series and millisecond).
        let at = e.samples.partition_point(|x| x.0 < ts_ms);
        match e.samples.get_mut(at) {
            Some(x) if x.0 == ts_ms => x.1 = value,
            _ => e.samples.insert(at, (ts_ms, value)),
        }
        while e.samples.front().is_some_and(|x| x.0 < horizon) {
            e.samples.pop_front();
        }
    }

    /// Drops expired samples everywhere (the 1 s tick), so idle series shrink too.
    pub(crate) fn prune(&mut self, now_ms: i64) {
        for e in &mut self.entries {
            let keep = self.keep_ms.get(&e.metric).copied().unwrap_or(0);
            let horizon = now_ms.saturating_sub(keep);
            while e.samples.front().is_some_and(|x| x.0 < horizon) {
                e.samples.pop_front();
            }
        }
    }

    /// Forgets id mappings (after an aborted transaction, ids may be handed out again);
    /// agents re-declare their series on their next connection.
    pub(crate) fn forget_ids(&mut self) {
        self.by_id = IdMap::default();
    }

    #[cfg(test)]
    pub(crate) fn samples_held(&self) -> usize {
        self.entries.iter().map(|e| e.samples.len()).sum()
    }
}

impl SampleWindow {
    /// What [`SeriesSource::series`] answers; the engine reads the window through
    /// `host_scopes::ScopedWindow`, which adds the hosts' labels for owned rules.
    pub(crate) fn series(&self, metric: &str, since_ms: i64) -> Vec<Series> {
        let Some(list) = self.by_metric.get(metric) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|&i| self.entries.get(i))
            .filter_map(|e| {
                let from = e.samples.partition_point(|x| x.0 < since_ms);
                (from < e.samples.len()).then(|| Series {
                    labels: e.labels.clone(),
                    samples: e.samples.range(from..).copied().collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{parse_rules, validate_rules};

    fn rule(selector: &str, window: &str) -> Vec<Rule> {
        let text = format!(
            "[[rule]]\nname = \"r\"\nselector = '{selector}'\nwindow = \"{window}\"\nop = \">\"\nwarning = 1.0\n"
        );
        let raw = parse_rules(std::path::Path::new("t.toml"), &text).unwrap();
        validate_rules(raw, false).unwrap()
    }

    #[test]
    fn store_window_keeps_only_read_metrics_for_their_span() {
        let mut w = SampleWindow::default();
        w.set_rules(&rule("cpu", "10s"), 1_000);
        w.declare(1, "h1", "cpu", &[("core".into(), "0".into())]);
        w.declare(2, "h1", "unread", &[]);
        assert_eq!(w.push(1, 100_000, 1.0, 100_000), Some("cpu"));
        assert_eq!(w.push(2, 100_000, 1.0, 100_000), None);
        assert_eq!(w.push(9, 100_000, 1.0, 100_000), None, "undeclared");
        w.push(1, 100_000, 2.0, 100_000);
        w.push(1, 95_000, 3.0, 100_000);
        let s = w.series("cpu", 0);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels.get("host").unwrap(), "h1");
        assert_eq!(s[0].samples, vec![(95_000, 3.0), (100_000, 2.0)]);
        // Too old for the 11 s span: ignored.
        w.push(1, 80_000, 9.0, 100_000);
        assert_eq!(w.samples_held(), 2);
        w.prune(107_000);
        assert_eq!(w.series("cpu", 0)[0].samples, vec![(100_000, 2.0)]);
    }
}
