//! The agent's own Prometheus metrics: the latest host sample and the agent's health
//! (spool, uplink, sampling), encoded in OpenMetrics or Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mcpwatch_common::wire::SeriesKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::sampler::{series_help, MetricKind};
use crate::spool::SpoolStats;

use mcpwatch_common::exposition::openmetrics_to_prometheus_text;
pub use mcpwatch_common::exposition::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};

/// Why the uplink failed; the `kind` label of `mcpwatch_agent_uplink_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkErrorKind {
    /// TLS handshake or certificate failure.
    Tls,
    /// Connect, read or write failure.
    Io,
    /// The peer sent something the protocol does not allow.
    Protocol,
    /// The collector answered `Reject`.
    Rejected,
}

impl UplinkErrorKind {
    pub const ALL: [UplinkErrorKind; 4] = [
        UplinkErrorKind::Tls,
        UplinkErrorKind::Io,
        UplinkErrorKind::Protocol,
        UplinkErrorKind::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UplinkErrorKind::Tls => "tls",
            UplinkErrorKind::Io => "io",
            UplinkErrorKind::Protocol => "protocol",
            UplinkErrorKind::Rejected => "rejected",
        }
    }
}

type KindLabel = [(&'static str, &'static str); 1];
type ReasonLabel = [(&'static str, &'static str); 1];

/// Every metric the agent exposes. Handles are cheap clones of shared atomics, so tasks may
/// clone the ones they update; everything is safe to use from any thread.
#[derive(Debug)]
pub struct AgentMetrics {
    /// Written once in [`AgentMetrics::new`]; encoding only reads it, so it needs no lock.
    registry: Registry,
    host: Arc<Snapshot>,
    servers: Arc<Snapshot>,
    /// The gateway's per-method and per-tool counters and histograms; the gateway's muxes
    /// record into it.
    pub traffic: Arc<crate::gateway::TrafficMetrics>,
    last_ack: Arc<LastAck>,
    uplink_errors: Family<KindLabel, Counter>,
    /// Certificate renewals by outcome: renewed, refused (by the collector), failed (here).
    renewals: Family<KindLabel, Counter>,
    /// Gateway requests refused, by reason.
    gateway_refused: Family<ReasonLabel, Counter>,
    /// Gateway connections closed or refused by the server, by reason.
    gateway_connections_closed: Family<ReasonLabel, Counter>,
    /// Bytes the spool occupies on disk.
    pub spool_bytes: Gauge,
    /// Records in the spool not yet acknowledged by the collector.
    pub spool_pending_records: Gauge,
    /// Samples lost because the channel or the spool was full.
    pub dropped_samples_total: Counter,
    /// Spool records skipped because they could not be read back.
    pub spool_corrupt_records_total: Counter,
    /// Batches or records stored as several records to fit the frame limit.
    pub spool_split_records_total: Counter,
    /// Records (or parts) too large for the frame limit even alone: set aside, sent as gaps.
    pub spool_oversized_records_total: Counter,
    /// Uplink connections (re)established after the first.
    pub reconnects_total: Counter,
    /// 1 while the uplink has a welcomed session, 0 otherwise.
    pub uplink_connected: Gauge,
    pub batches_sent_total: Counter,
    pub batches_acked_total: Counter,
    pub samples_collected_total: Counter,
    pub sample_errors_total: Counter,
    /// Wall time of one host sampling cycle.
    pub sample_duration_seconds: Histogram,
}

impl AgentMetrics {
    // Over 80 lines on purpose: the registration list of every agent metric, one entry each.
    pub fn new() -> AgentMetrics {
        let uplink_errors = Family::<KindLabel, Counter>::default();
        // Create every kind up front so each series exists at 0 and rate() works from the
        // first scrape instead of after the first error.
        for kind in UplinkErrorKind::ALL {
            let _ = uplink_errors.get_or_create(&[("kind", kind.as_str())]);
        }
        let renewals = Family::<KindLabel, Counter>::default();
        for kind in ["renewed", "refused", "failed"] {
            let _ = renewals.get_or_create(&[("kind", kind)]);
        }
        let mut m = AgentMetrics {
            renewals,
            registry: Registry::default(),
            host: Arc::new(Snapshot::new(vec![
                series_help(),
                crate::sampler::certificates::series_help(),
            ])),
            servers: Arc::new(Snapshot::new(vec![
                crate::supervisor::container_stats::series_help(),
                crate::probe::scheduler::series_help(),
                crate::gateway::backends::series_help(),
            ])),
            traffic: Arc::default(),
            last_ack: Arc::new(LastAck::new()),
            uplink_errors,
            gateway_refused: Family::default(),
            gateway_connections_closed: Family::default(),
            spool_bytes: Gauge::default(),
            spool_pending_records: Gauge::default(),
            dropped_samples_total: Counter::default(),
            spool_corrupt_records_total: Counter::default(),
            spool_split_records_total: Counter::default(),
            spool_oversized_records_total: Counter::default(),
            reconnects_total: Counter::default(),
            uplink_connected: Gauge::default(),
            batches_sent_total: Counter::default(),
            batches_acked_total: Counter::default(),
            samples_collected_total: Counter::default(),
            sample_errors_total: Counter::default(),
            // 100 µs .. ~0.4 s: a cycle measures well under 1 ms; slow disks or a loaded
            // host push it up by orders of magnitude.
            sample_duration_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 13)),
        };

        // prometheus-client appends `_total` to counter samples itself, so counters are
        // registered under their family name; it also appends the final period to HELP.
        let r = &mut m.registry;
        r.register(
            "mcpwatch_agent_spool_bytes",
            "Bytes the agent's spool occupies on disk",
            m.spool_bytes.clone(),
        );
        r.register(
            "mcpwatch_agent_spool_pending_records",
            "Spool records not yet acknowledged by the collector",
            m.spool_pending_records.clone(),
        );
        r.register(
            "mcpwatch_agent_dropped_samples",
            "Samples dropped because the pipeline or the spool was full",
            m.dropped_samples_total.clone(),
        );
        r.register(
            "mcpwatch_agent_spool_corrupt_records",
            "Spool records skipped because they could not be read back",
            m.spool_corrupt_records_total.clone(),
        );
        r.register(
            "mcpwatch_agent_spool_records_split",
            "Spool batches or records stored as several records to fit the frame limit",
            m.spool_split_records_total.clone(),
        );
        r.register(
            "mcpwatch_agent_spool_records_oversized",
            "Spool records too large for the frame limit even alone, set aside and sent as gaps",
            m.spool_oversized_records_total.clone(),
        );
        r.register(
            "mcpwatch_agent_reconnects",
            "Uplink connections re-established after a disconnect",
            m.reconnects_total.clone(),
        );
        r.register(
            "mcpwatch_agent_uplink_connected",
            "1 while the uplink has a session accepted by the collector, 0 otherwise",
            m.uplink_connected.clone(),
        );
        r.register(
            "mcpwatch_agent_batches_sent",
            "Batches written to the uplink, including resends",
            m.batches_sent_total.clone(),
        );
        r.register(
            "mcpwatch_agent_batches_acked",
            "Batches acknowledged by the collector as durably committed",
            m.batches_acked_total.clone(),
        );
        r.register(
            "mcpwatch_agent_samples_collected",
            "Samples collected by the agent from all sources",
            m.samples_collected_total.clone(),
        );
        r.register(
            "mcpwatch_agent_sample_errors",
            "Sampling cycles or sources that failed",
            m.sample_errors_total.clone(),
        );
        r.register(
            "mcpwatch_agent_sample_duration_seconds",
            "Wall time of one host sampling cycle",
            m.sample_duration_seconds.clone(),
        );
        r.register(
            "mcpwatch_agent_certificate_renewals",
            "Certificate renewals over the uplink by outcome (renewed, refused, failed)",
            m.renewals.clone(),
        );
        r.register(
            "mcpwatch_agent_uplink_errors",
            "Uplink failures by kind (tls, io, protocol, rejected)",
            m.uplink_errors.clone(),
        );
        r.register(
            "mcpwatch_mcp_gateway_requests_refused",
            "Gateway HTTP requests refused by reason (origin, unauthorized, unknown_session, ...)",
            m.gateway_refused.clone(),
        );
        r.register(
            "mcpwatch_mcp_gateway_connections_closed",
            "Gateway connections closed or turned away by the server, by reason",
            m.gateway_connections_closed.clone(),
        );
        r.register_collector(Box::new(m.last_ack.clone()));
        r.register_collector(Box::new(m.host.clone()));
        r.register_collector(Box::new(m.servers.clone()));
        r.register_collector(Box::new(m.traffic.clone()));
        m
    }

    /// Replaces the exposed host values with this sample (the latest one wins).
    pub fn set_host_samples(&self, samples: &[(SeriesKey, f64)]) {
        self.host.replace(samples);
    }

    /// Replaces the exposed MCP server values (containers and probes).
    pub fn set_server_samples(&self, samples: &[(SeriesKey, f64)]) {
        self.servers.replace(samples);
    }

    /// Brings the spool figures up to `s`, under the spool lock so two updates never race.
    pub fn observe_spool(&self, s: &SpoolStats) {
        self.spool_bytes.set(s.bytes_on_disk as i64);
        self.spool_pending_records.set(s.records_pending as i64);
        for (counter, total) in [
            (&self.dropped_samples_total, s.dropped_samples_total),
            (&self.spool_corrupt_records_total, s.corrupt_records_total),
            (&self.spool_split_records_total, s.split_records_total),
            (
                &self.spool_oversized_records_total,
                s.oversized_records_total,
            ),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Counts one refused gateway request.
    pub fn inc_gateway_refused(&self, reason: &'static str) {
        self.gateway_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts one gateway connection closed or refused by the server.
    pub fn inc_gateway_connection_closed(&self, reason: &'static str) {
        self.gateway_connections_closed
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts one uplink failure of this kind.
    /// Counts a renewal outcome: `renewed`, `refused` or `failed`.
    pub fn inc_renewal(&self, kind: &'static str) {
        self.renewals.get_or_create(&[("kind", kind)]).inc();
    }

    pub fn inc_uplink_error(&self, kind: UplinkErrorKind) {
        self.uplink_errors
            .get_or_create(&[("kind", kind.as_str())])
            .inc();
    }

    /// Records that the collector acknowledged a batch now; `mcpwatch_agent_last_ack_age_seconds`
    /// counts from here at scrape time.
    pub fn record_ack(&self) {
        self.last_ack.record(Instant::now());
    }

    /// The whole exposition in OpenMetrics text, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail and no collector here returns an error of its own,
        // so an error would be a bug in prometheus-client; log it rather than panic.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// The same exposition in the Prometheus text format 0.0.4, for clients that do not ask
    /// for OpenMetrics (curl, `promtool check metrics`, older scrapers). The two formats
    /// differ, for what we emit, only in counter families: OpenMetrics names the family
    /// without `_total` in HELP/TYPE, the text format names it like its samples. And the
    /// text format has no `# EOF`.
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode())
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new()
    }
}

/// The latest values of a group of families (host, or MCP servers), encoded on scrape with
/// the HELP and TYPE of its tables. prometheus-client counters can only be incremented, while
/// these counters are read as absolute values (from the kernel, cgroups, the probe scheduler), so the
/// snapshot is encoded directly with the right TYPE per family.
#[derive(Debug)]
struct Snapshot {
    help: Vec<&'static [(&'static str, &'static str, MetricKind)]>,
    latest: RwLock<Vec<(SeriesKey, f64)>>,
}

impl Snapshot {
    fn new(help: Vec<&'static [(&'static str, &'static str, MetricKind)]>) -> Snapshot {
        Snapshot {
            help,
            latest: RwLock::default(),
        }
    }

    /// Series rarely change between cycles: when they are the same, in the same order, only
    /// the values are copied, so a cycle clones no key (hundreds with many servers).
    fn replace(&self, samples: &[(SeriesKey, f64)]) {
        let mut latest = self.write();
        let same = latest.len() == samples.len()
            && latest.iter().zip(samples).all(|((a, _), (b, _))| a == b);
        if same {
            for ((_, old), (_, new)) in latest.iter_mut().zip(samples) {
                *old = *new;
            }
        } else {
            latest.clear();
            latest.extend_from_slice(samples);
        }
    }

    /// A panic while holding the lock cannot leave the Vec half-valid for our use (it is
    /// replaced wholesale), so a poisoned lock is still safe to use.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<(SeriesKey, f64)>> {
        self.latest.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<(SeriesKey, f64)>> {
        self.latest.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let latest = self.read();
        for (name, help, kind) in self.help.iter().flat_map(|h| h.iter()) {
            let mut series = latest.iter().filter(|(k, _)| k.name == *name).peekable();
            if series.peek().is_none() {
                continue;
            }
            let (family, metric_type) = match kind {
                MetricKind::Gauge => (*name, MetricType::Gauge),
                // The encoder appends `_total` to counter samples.
                MetricKind::Counter => (
                    name.strip_suffix("_total").unwrap_or(name),
                    MetricType::Counter,
                ),
            };
            let mut metric = encoder.encode_descriptor(family, help, None, metric_type)?;
            for (key, value) in series {
                let labels: Vec<(&str, &str)> = key
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                match (kind, labels.is_empty()) {
                    (MetricKind::Gauge, true) => metric.encode_gauge(value)?,
                    (MetricKind::Gauge, false) => {
                        metric.encode_family(&labels)?.encode_gauge(value)?;
                    }
                    (MetricKind::Counter, true) => {
                        metric.encode_counter::<NoLabelSet, f64, f64>(value, None)?;
                    }
                    (MetricKind::Counter, false) => {
                        metric
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, f64, f64>(value, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// When the collector last acknowledged a batch, as nanoseconds since `base`. Lock-free so
/// the uplink never waits on a scrape.
#[derive(Debug)]
struct LastAck {
    base: Instant,
    /// 0 means "never acknowledged": the age then counts from agent start, so an agent that
    /// never gets an ack shows a growing age rather than no series at all.
    nanos: AtomicU64,
}

impl LastAck {
    fn new() -> Self {
        LastAck {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    fn record(&self, at: Instant) {
        let since = at.saturating_duration_since(self.base).as_nanos();
        // Saturates after 584 years of uptime; max(1) keeps 0 reserved for "never".
        let since = u64::try_from(since).unwrap_or(u64::MAX).max(1);
        self.nanos.fetch_max(since, Ordering::Relaxed);
    }

    fn age(&self, now: Instant) -> Duration {
        let since_base = Duration::from_nanos(self.nanos.load(Ordering::Relaxed));
        let at = self.base.checked_add(since_base).unwrap_or(self.base);
        now.saturating_duration_since(at)
    }
}

impl Collector for LastAck {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let age = ConstGauge::new(self.age(Instant::now()).as_secs_f64());
        let metric = encoder.encode_descriptor(
            "mcpwatch_agent_last_ack_age_seconds",
            "Seconds since the collector last acknowledged a batch (since agent start when none was).",
            None,
            age.metric_type(),
        )?;
        age.encode(metric)
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
