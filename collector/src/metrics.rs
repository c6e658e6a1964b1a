//! The collector's own Prometheus metrics: ingest connections, handshakes, batches, samples,
//! receive→commit latency and the store queue.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Every metric the collector exposes; handles are shared atomics, cheap to clone.
#[derive(Debug)]
pub struct CollectorMetrics {
    registry: Registry,
    pub connections_active: Gauge,
    pub agents_connected: Gauge,
    /// Connections turned away before TLS: the connection limit.
    pub connections_refused_total: Counter,
    /// Failed TLS handshakes and refused Hellos, by reason.
    pub handshake_failures: Family<ReasonLabel, Counter>,
    /// Batches by outcome: committed, duplicate, failed.
    pub batches: Family<OutcomeLabel, Counter>,
    pub samples_ingested_total: Counter,
    pub events_ingested_total: Counter,
    /// Frame received → transaction committed.
    pub commit_latency_seconds: Histogram,
    pub store_queue_depth: Gauge,
    pub sessions_closed: Family<ReasonLabel, Counter>,
}

impl CollectorMetrics {
    pub fn new() -> Arc<CollectorMetrics> {
        let mut m = CollectorMetrics {
            registry: Registry::default(),
            connections_active: Gauge::default(),
            agents_connected: Gauge::default(),
            connections_refused_total: Counter::default(),
            handshake_failures: Family::default(),
            batches: Family::default(),
            samples_ingested_total: Counter::default(),
            events_ingested_total: Counter::default(),
            // 1 ms .. ~16 s.
            commit_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            store_queue_depth: Gauge::default(),
            sessions_closed: Family::default(),
        };
        for outcome in ["committed", "duplicate", "failed"] {
            let _ = m.batches.get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            });
        }
        let r = &mut m.registry;
        r.register(
            "mcpwatch_collector_connections_active",
            "Agent connections currently open (TLS or not yet).",
            m.connections_active.clone(),
        );
        r.register(
            "mcpwatch_collector_agents_connected",
            "Agents with an accepted session.",
            m.agents_connected.clone(),
        );
        r.register(
            "mcpwatch_collector_connections_refused",
            "Connections refused because the connection limit was reached.",
            m.connections_refused_total.clone(),
        );
        r.register(
            "mcpwatch_collector_handshake_failures",
            "TLS handshakes and Hellos refused, by reason.",
            m.handshake_failures.clone(),
        );
        r.register(
            "mcpwatch_collector_batches",
            "Agent batches by outcome (committed, duplicate, failed).",
            m.batches.clone(),
        );
        r.register(
            "mcpwatch_collector_samples_ingested",
            "Samples durably committed.",
            m.samples_ingested_total.clone(),
        );
        r.register(
            "mcpwatch_collector_events_ingested",
            "Events durably committed.",
            m.events_ingested_total.clone(),
        );
        r.register(
            "mcpwatch_collector_commit_latency_seconds",
            "Time from receiving a batch to its durable commit.",
            m.commit_latency_seconds.clone(),
        );
        r.register(
            "mcpwatch_collector_store_queue_depth",
            "Requests waiting for the store writer.",
            m.store_queue_depth.clone(),
        );
        r.register(
            "mcpwatch_collector_sessions_closed",
            "Agent sessions ended, by reason.",
            m.sessions_closed.clone(),
        );
        Arc::new(m)
    }

    pub fn handshake_failure(&self, reason: &str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn batch(&self, outcome: &str) {
        self.batches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn session_closed(&self, reason: &str) {
        self.sessions_closed
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// OpenMetrics text ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; an error would be a prometheus-client bug.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}
