//! Series the collector produces about itself (backups failing, remote write lag...), set
//! by the task that knows the figure and read by the alert engine on every tick, so the
//! built-in rules watch the collector as they watch agents. Only the latest value of each
//! series is kept; the engine's window keeps their recent history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::alert::Labels;

/// Cheap to clone; every clone refers to the same set.
#[derive(Debug, Clone, Default)]
pub struct OwnSeries(Arc<Mutex<BTreeMap<(String, Labels), f64>>>);

impl OwnSeries {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, Labels), f64>> {
        // A panic while holding the lock cannot leave a half-written entry (one insert or
        // remove per call), so the map is still good.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the current value of series `name{labels}`.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.lock().insert((name.to_owned(), labels), value);
    }

    /// Stops reporting series `name{labels}` (its alert resolves as absent data would).
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.lock().remove(&(name.to_owned(), labels));
    }

    /// Every series and its current value.
    pub fn current(&self) -> Vec<(String, Labels, f64)> {
        self.lock()
            .iter()
            .map(|((name, labels), v)| (name.clone(), labels.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_series_keep_the_latest_value_per_label_set() {
        let own = OwnSeries::default();
        own.set("m", &[("endpoint", "a")], 1.0);
        own.clone().set("m", &[("endpoint", "a")], 2.0);
        own.set("m", &[("endpoint", "b")], 3.0);
        own.remove("m", &[("endpoint", "b")]);
        let now = own.current();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].2, 2.0);
        assert_eq!(now[0].1.get("endpoint").map(String::as_str), Some("a"));
    }
}
