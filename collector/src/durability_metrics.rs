//! Metrics of what keeps the data safe beyond this process: backups, remote write, and
//! the heartbeat that tells an outside service the collector is alive. Registered into the collector's
//! registry by [`crate::metrics::CollectorMetrics`]; kept apart so that list stays short.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointReasonLabel {
    pub endpoint: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct DurabilityMetrics {
    /// Unix seconds of the last backup that was written and verified; 0 before one.
    pub backup_last_success: Gauge,
    /// How long the last successful backup took (snapshot, verification, rename).
    pub backup_duration_seconds: Gauge<f64, AtomicU64>,
    /// Size of the last successful backup, bytes.
    pub backup_size: Gauge,
    /// Backups that failed (snapshot, verification or write).
    pub backup_failures: Counter,
    /// Heartbeat pings delivered, and those that failed or were withheld.
    pub heartbeat_sent: Counter,
    pub heartbeat_failures: Counter,
    pub heartbeat_withheld: Counter,
    /// Per remote-write endpoint: samples accepted, in failed attempts, in retries, dropped
    /// by reason; lag of the oldest unsent batch; requests per batch; store calls retried.
    pub remote_write_samples_sent: Family<EndpointLabel, Counter>,
    pub remote_write_samples_failed: Family<EndpointLabel, Counter>,
    pub remote_write_samples_retried: Family<EndpointLabel, Counter>,
    pub remote_write_samples_dropped: Family<EndpointReasonLabel, Counter>,
    pub remote_write_lag_seconds: Family<EndpointLabel, Gauge<f64, AtomicU64>>,
    pub remote_write_shards: Family<EndpointLabel, Gauge>,
    pub remote_write_store_errors: Counter,
}

fn endpoint(name: &str) -> EndpointLabel {
    EndpointLabel {
        endpoint: name.to_owned(),
    }
}

impl DurabilityMetrics {
    /// Shows an endpoint's series from the start (at zero).
    pub fn remote_write_endpoint(&self, name: &str) {
        let l = endpoint(name);
        let _ = self.remote_write_samples_sent.get_or_create(&l);
        let _ = self.remote_write_samples_failed.get_or_create(&l);
        let _ = self.remote_write_samples_retried.get_or_create(&l);
        let _ = self.remote_write_lag_seconds.get_or_create(&l);
        let _ = self.remote_write_shards.get_or_create(&l);
    }

    pub fn remote_write_sent(&self, name: &str, n: u64) {
        self.remote_write_samples_sent
            .get_or_create(&endpoint(name))
            .inc_by(n);
    }

    pub fn remote_write_failed(&self, name: &str, n: u64) {
        self.remote_write_samples_failed
            .get_or_create(&endpoint(name))
            .inc_by(n);
    }

    pub fn remote_write_retried(&self, name: &str, n: u64) {
        self.remote_write_samples_retried
            .get_or_create(&endpoint(name))
            .inc_by(n);
    }

    pub fn remote_write_dropped(&self, name: &str, reason: &str, n: u64) {
        self.remote_write_samples_dropped
            .get_or_create(&EndpointReasonLabel {
                endpoint: name.to_owned(),
                reason: reason.to_owned(),
            })
            .inc_by(n);
    }

    pub fn remote_write_lag(&self, name: &str, seconds: f64) {
        self.remote_write_lag_seconds
            .get_or_create(&endpoint(name))
            .set(seconds);
    }

    pub fn remote_write_shards(&self, name: &str, shards: usize) {
        self.remote_write_shards
            .get_or_create(&endpoint(name))
            .set(i64::try_from(shards).unwrap_or(i64::MAX));
    }
}

impl DurabilityMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "mcpwatch_collector_backup_last_success_timestamp_seconds",
            "Unix time of the last backup written and verified (0: none since start).",
            self.backup_last_success.clone(),
        );
        r.register(
            "mcpwatch_collector_backup_duration_seconds",
            "Duration of the last successful backup: snapshot, integrity check and rename.",
            self.backup_duration_seconds.clone(),
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
        r.register(
            "mcpwatch_collector_remote_write_samples_sent",
            "Samples a remote-write endpoint accepted (2xx).",
            self.remote_write_samples_sent.clone(),
        );
        r.register(
            "mcpwatch_collector_remote_write_samples_failed",
            "Samples in remote-write requests that failed (each attempt counts).",
            self.remote_write_samples_failed.clone(),
        );
        r.register(
            "mcpwatch_collector_remote_write_samples_retried",
            "Samples in remote-write requests sent again after a 5xx, 429 or transport error.",
            self.remote_write_samples_retried.clone(),
        );
        r.register(
            "mcpwatch_collector_remote_write_samples_dropped",
            "Samples not delivered to a remote-write endpoint, by reason (http_<status>: refused \
             for good; not_sent: dropped by write_relabel or a name Prometheus refuses; \
             unreadable: a stored batch that cannot be decoded).",
            self.remote_write_samples_dropped.clone(),
        );
        r.register(
            "mcpwatch_collector_remote_write_lag_seconds",
            "Age of the newest sample of the oldest batch not yet delivered (0: caught up).",
            self.remote_write_lag_seconds.clone(),
        );
        r.register(
            "mcpwatch_collector_remote_write_shards",
            "Requests the last remote-write batch was split into, sent at once.",
            self.remote_write_shards.clone(),
        );
        r.register(
            "mcpwatch_collector_remote_write_store_errors",
            "Store reads or cursor writes of remote write that failed and were retried.",
            self.remote_write_store_errors.clone(),
        );
    }
}
