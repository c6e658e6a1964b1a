//! Metrics of what keeps the data safe beyond this process: backups, and the heartbeat
//! that tells an outside service the collector is alive. Registered into the collector's
//! registry by [`crate::metrics::CollectorMetrics`]; kept apart so that list stays short.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub struct DurabilityMetrics {
    /// Unix seconds of the last backup that was written and verified; 0 before one.
    pub backup_last_success: Gauge,
    /// How long the last successful backup took (snapshot, verification, rename), in ms.
    pub backup_duration_ms: Gauge,
    /// Size of the last successful backup, bytes.
    pub backup_size: Gauge,
    /// Backups that failed (snapshot, verification or write).
    pub backup_failures: Counter,
    /// Heartbeat pings delivered, and those that failed or were withheld.
    pub heartbeat_sent: Counter,
    pub heartbeat_failures: Counter,
    pub heartbeat_withheld: Counter,
}

impl DurabilityMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "mcpwatch_collector_backup_last_success_timestamp_seconds",
            "Unix time of the last backup written and verified (0: none since start).",
            self.backup_last_success.clone(),
        );
        r.register(
            "mcpwatch_collector_backup_duration_milliseconds",
            "Duration of the last successful backup: snapshot, integrity check and rename.",
            self.backup_duration_ms.clone(),
        );
        r.register(
            "mcpwatch_collector_backup_size_bytes",
            "Size of the last successful backup file.",
            self.backup_size.clone(),
        );
        r.register(
            "mcpwatch_collector_backup_failures",
            "Backups that failed (snapshot, verification or write).",
            self.backup_failures.clone(),
        );
        r.register(
            "mcpwatch_collector_heartbeat_sent",
            "Heartbeat pings the heartbeat URL accepted.",
            self.heartbeat_sent.clone(),
        );
        r.register(
            "mcpwatch_collector_heartbeat_failures",
            "Heartbeat pings that failed (no answer, or not 2xx).",
            self.heartbeat_failures.clone(),
        );
        r.register(
            "mcpwatch_collector_heartbeat_withheld",
            "Heartbeat pings not sent because ingest, the store writer or the alert dispatcher was unhealthy.",
            self.heartbeat_withheld.clone(),
        );
    }
}
