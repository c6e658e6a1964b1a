//! Cumulative byte and error counters per network interface, from `/sys/class/net` via sysinfo.

use mcpwatch_common::wire::SeriesKey;
use sysinfo::Networks;

use super::{
    as_f64, NETWORK_RECEIVE_BYTES_TOTAL, NETWORK_RECEIVE_ERRORS_TOTAL,
    NETWORK_TRANSMIT_BYTES_TOTAL, NETWORK_TRANSMIT_ERRORS_TOTAL,
};

pub(super) struct NetworkSampler {
    networks: Option<Networks>,
}

impl NetworkSampler {
    pub(super) fn new() -> Self {
        let networks = Networks::new()
            .inspect_err(|e| tracing::warn!(error = %e, "network metrics unavailable"))
            .ok();
        NetworkSampler { networks }
    }

    pub(super) fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        let Some(networks) = self.networks.as_mut() else {
            return;
        };
        // `true` forgets interfaces that disappeared, so their series stop instead of
        // repeating a stale value.
        networks.refresh(true);
        // The kernel's own totals rather than sysinfo's per-refresh deltas: counters stay
        // correct across missed cycles and agent restarts, and Prometheus' rate() handles
        // the reset when an interface is recreated.
        // Sorted so the exposition and the wire list interfaces in a stable order.
        let mut interfaces: Vec<_> = networks.iter().collect();
        interfaces.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, data) in interfaces {
            let interface = name.to_string_lossy();
            let labels = [("interface", interface.as_ref())];
            for (metric, value) in [
                (NETWORK_RECEIVE_BYTES_TOTAL, data.total_received()),
                (NETWORK_TRANSMIT_BYTES_TOTAL, data.total_transmitted()),
                (
                    NETWORK_RECEIVE_ERRORS_TOTAL,
                    data.total_errors_on_received(),
                ),
                (
                    NETWORK_TRANSMIT_ERRORS_TOTAL,
                    data.total_errors_on_transmitted(),
                ),
            ] {
                out.push((SeriesKey::new(metric, &labels), as_f64(value)));
            }
        }
    }
}
