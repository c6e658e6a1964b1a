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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabel {
    pub receiver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLabel {
    pub receiver: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverInfoLabel {
    pub receiver: String,
    pub kind: String,
}

/// One certificate: `role` is `collector`, `ca` or `agent`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    pub role: String,
    pub identity: String,
    pub serial: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    pub to: String,
}

/// The alert engine's figures, updated by the writer and exposed on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    /// Alert transitions by the state entered (pending, firing, resolved, flapping...).
    pub transitions: Family<TransitionLabel, Counter>,
    /// Alerts currently firing or flapping.
    pub active: Gauge,
    /// Evaluations (per commit or tick) that failed and were rolled back.
    pub evaluation_failures: Counter,
    /// Silences not yet ended (active or pending), as the writer holds them compiled.
    pub silences: Gauge,
    /// Silences refused at creation by a cap, by reason (`limit`, `user_limit`).
    pub silences_refused: Family<ReasonLabel, Counter>,
}

impl AlertMetrics {
    /// Counts a silence refused by a cap (`limit` or `user_limit`).
    pub fn silence_refused(&self, reason: &str) {
        self.silences_refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
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
    /// Series declarations refused (not stored), by reason (`agent_limit`).
    pub series_refused: Family<ReasonLabel, Counter>,
    /// Samples dropped because their series was refused, by reason (`agent_limit`).
    pub samples_refused: Family<ReasonLabel, Counter>,
    /// Frame received → transaction committed.
    pub commit_latency_seconds: Histogram,
    pub store_queue_depth: Gauge,
    pub sessions_closed: Family<ReasonLabel, Counter>,
    /// Audit records that could not be written.
    pub audit_failures: Counter,
    /// Cookie-authenticated mutations refused for a missing or wrong CSRF token.
    pub csrf_refusals: Counter,
    /// Live streams open now, refused over the limit, and reset after falling behind.
    pub stream_clients: Gauge,
    pub stream_refused: Counter,
    pub stream_resets: Counter,
    /// Reads of the live feed that failed.
    pub feed_failures: Counter,
    /// Failed reads of the fleet summary, and raw rows it could not decode.
    pub fleet_failures: Counter,
    /// notAfter of the collector's certificate, its CAs and every agent's current one.
    pub certificate_expiry: Family<CertificateLabel, Gauge>,
    /// Enrollments and renewals refused, by reason; revocations picked up by the poll.
    pub pki_refusals: Family<ReasonLabel, Counter>,
    /// 1 while every verification of the audit chain since start found it whole; 0 before
    /// the first one and once a break is found (until restart).
    pub audit_chain_ok: Gauge,
    /// Id of the newest audit row the chain verification has accepted.
    pub audit_chain_verified_id: Gauge,
    /// Breaks found in the audit chain (not again at or below a row already reported).
    pub audit_chain_breaks: Counter,
    /// Verifications of the audit chain that could not run (the store failed).
    pub audit_chain_verify_failures: Counter,
    /// HTTP connections the server turned away or closed, by reason.
    pub http_connections_closed: Family<ReasonLabel, Counter>,
    /// Single sign-ins refused, by reason (the code the console shows).
    pub sso_refused: Family<ReasonLabel, Counter>,
    /// The alert engine's figures (updated by the store writer).
    pub alerts: AlertMetrics,
    pub notify_info: Family<ReceiverInfoLabel, Gauge>,
    /// Alert notifications delivered, per receiver.
    pub notify_sent: Family<ReceiverLabel, Counter>,
    /// Failed send attempts (retryable or not), per receiver.
    pub notify_failed: Family<ReceiverLabel, Counter>,
    /// Failed sends scheduled for another attempt.
    pub notify_retried: Family<ReceiverLabel, Counter>,
    /// Notifications moved to the dead-letter list, by reason (permanent, expired).
    pub notify_dead: Family<DeadLabel, Counter>,
    pub outbox_depth: Family<ReceiverLabel, Gauge>,
    /// Queued → delivered, per receiver.
    pub notify_latency: Family<ReceiverLabel, Histogram>,
    /// Receivers defined through the API that could not be loaded at startup (a secret
    /// reference no longer resolves...) and do not run until changed or deleted.
    pub receivers_skipped: Gauge,
    /// Backups and the heartbeat.
    pub durability: crate::durability_metrics::DurabilityMetrics,
}

impl CollectorMetrics {
    // Over 80 lines on purpose: one registration per metric with its name and help text,
    // kept in one list so names cannot drift from the struct above or repeat.
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
            series_refused: Family::default(),
            samples_refused: Family::default(),
            // 1 ms .. ~16 s.
            commit_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            store_queue_depth: Gauge::default(),
            sessions_closed: Family::default(),
            audit_failures: Counter::default(),
            csrf_refusals: Counter::default(),
            stream_clients: Gauge::default(),
            stream_refused: Counter::default(),
            stream_resets: Counter::default(),
            feed_failures: Counter::default(),
            fleet_failures: Counter::default(),
            certificate_expiry: Family::default(),
            pki_refusals: Family::default(),
            audit_chain_ok: Gauge::default(),
            audit_chain_verified_id: Gauge::default(),
            audit_chain_breaks: Counter::default(),
            audit_chain_verify_failures: Counter::default(),
            http_connections_closed: Family::default(),
            sso_refused: Family::default(),
            alerts: Default::default(),
            notify_info: Family::default(),
            notify_sent: Family::default(),
            notify_failed: Family::default(),
            notify_retried: Family::default(),
            notify_dead: Family::default(),
            outbox_depth: Family::default(),
            // 1 ms .. ~9 h: a receiver may be down for hours.
            notify_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 4.0, 13))
            }),
            receivers_skipped: Gauge::default(),
            durability: Default::default(),
        };
        for outcome in ["committed", "duplicate", "failed"] {
            let _ = m.batches.get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            });
        }
        let agent_limit = ReasonLabel {
            reason: "agent_limit".into(),
        };
        let _ = m.series_refused.get_or_create(&agent_limit);
        let _ = m.samples_refused.get_or_create(&agent_limit);
        for reason in ["limit", "user_limit"] {
            let _ = m.alerts.silences_refused.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        let r = &mut m.registry;
        m.durability.register(r);
        r.register(
            "mcpwatch_tls_certificate_expiry_timestamp_seconds",
            "notAfter of a certificate (Unix seconds): the collector's, its CAs', every agent's current one.",
            m.certificate_expiry.clone(),
        );
        r.register(
            "mcpwatch_collector_pki_refusals",
            "Enrollments and certificate renewals refused, and PKI upkeep that failed (revocation poll, TLS reload, SIGHUP listener), by reason.",
            m.pki_refusals.clone(),
        );
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
            "mcpwatch_collector_http_connections_closed",
            "HTTP connections refused or closed by the server, by reason (address_limit, limit, \
             first_byte_timeout, header_read_timeout, idle_timeout, tls_handshake, accept_error).",
            m.http_connections_closed.clone(),
        );
        r.register(
            "mcpwatch_collector_sso_refused",
            "Single sign-ins (OpenID Connect) refused, by reason (provider_unavailable, \
             expired_or_tampered, other_browser, provider_refused, token_refused, claims, \
             name_taken, disabled, no_access, rate_limited, cross_site, misconfigured, internal).",
            m.sso_refused.clone(),
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
            "mcpwatch_collector_series_refused",
            "Series declarations refused and not stored, by reason (agent_limit: the agent \
             reached [ingest] max_series_per_agent).",
            m.series_refused.clone(),
        );
        r.register(
            "mcpwatch_collector_samples_refused",
            "Samples dropped because their series was refused, by reason (agent_limit).",
            m.samples_refused.clone(),
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
        r.register(
            "mcpwatch_collector_alert_transitions",
            "Alert state changes, by the state entered.",
            m.alerts.transitions.clone(),
        );
        r.register(
            "mcpwatch_collector_alerts_active",
            "Alerts currently firing or flapping.",
            m.alerts.active.clone(),
        );
        r.register(
            "mcpwatch_collector_alert_evaluation_failures",
            "Alert evaluations rolled back after an error.",
            m.alerts.evaluation_failures.clone(),
        );
        r.register(
            "mcpwatch_collector_silences",
            "Silences not yet ended (active or pending).",
            m.alerts.silences.clone(),
        );
        r.register(
            "mcpwatch_collector_silences_refused",
            "Silences refused at creation, by reason (limit: [alerting] max_silences; \
             user_limit: max_silences_per_user).",
            m.alerts.silences_refused.clone(),
        );
        r.register(
            "mcpwatch_collector_audit_write_failures",
            "API audit records that could not be written.",
            m.audit_failures.clone(),
        );
        r.register(
            "mcpwatch_collector_csrf_refusals",
            "Cookie-authenticated (console) mutations refused: missing or wrong X-CSRF-Token, \
             or marked cross-site by the browser.",
            m.csrf_refusals.clone(),
        );
        r.register(
            "mcpwatch_collector_stream_clients",
            "Live streams (GET /api/v1/stream) open now.",
            m.stream_clients.clone(),
        );
        r.register(
            "mcpwatch_collector_stream_refused",
            "Live streams refused at [api] stream_max_clients.",
            m.stream_refused.clone(),
        );
        r.register(
            "mcpwatch_collector_stream_resets",
            "Live streams told to reload everything: resumed from an unknown point or fell \
             behind the feed's buffer.",
            m.stream_resets.clone(),
        );
        r.register(
            "mcpwatch_collector_feed_read_failures",
            "Reads of committed changes by the live feed that failed (retried next poll).",
            m.feed_failures.clone(),
        );
        r.register(
            "mcpwatch_collector_fleet_read_failures",
            "Reads by the fleet summary (GET /api/v1/fleet) that failed (retried next poll), \
             and raw rows it could not decode (skipped).",
            m.fleet_failures.clone(),
        );
        r.register(
            "mcpwatch_collector_audit_chain_ok",
            "1 while every verification of the audit log's hash chain found it whole; 0 before \
             the first verification and after a break was found.",
            m.audit_chain_ok.clone(),
        );
        r.register(
            "mcpwatch_collector_audit_chain_verified_id",
            "Id of the newest audit record the hash chain verification has accepted.",
            m.audit_chain_verified_id.clone(),
        );
        r.register(
            "mcpwatch_collector_audit_chain_breaks",
            "Breaks found in the audit log's hash chain (a row changed or removed outside \
             retention); breaks at or below a row already reported are not counted again.",
            m.audit_chain_breaks.clone(),
        );
        r.register(
            "mcpwatch_collector_audit_chain_verify_failures",
            "Verifications of the audit log's hash chain that could not run.",
            m.audit_chain_verify_failures.clone(),
        );
        r.register(
            "mcpwatch_collector_notification_receiver_info",
            "Notification receivers running (value 1) and their kind.",
            m.notify_info.clone(),
        );
        r.register(
            "mcpwatch_collector_notifications_sent",
            "Alert notifications delivered, per receiver.",
            m.notify_sent.clone(),
        );
        r.register(
            "mcpwatch_collector_notifications_failed",
            "Failed notification send attempts, per receiver.",
            m.notify_failed.clone(),
        );
        r.register(
            "mcpwatch_collector_notifications_retried",
            "Failed notification sends scheduled for another attempt, per receiver.",
            m.notify_retried.clone(),
        );
        r.register(
            "mcpwatch_collector_notifications_dead_lettered",
            "Notifications moved to the dead-letter list, per receiver and reason.",
            m.notify_dead.clone(),
        );
        r.register(
            "mcpwatch_collector_outbox_queue_depth",
            "Notifications waiting in the outbox, per receiver.",
            m.outbox_depth.clone(),
        );
        r.register(
            "mcpwatch_collector_notification_delivery_latency_seconds",
            "Time from queueing a notification to its delivery, per receiver.",
            m.notify_latency.clone(),
        );
        r.register(
            "mcpwatch_collector_notification_receivers_skipped",
            "Receivers defined through the API that could not be loaded at startup and do not run.",
            m.receivers_skipped.clone(),
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

    pub fn sso_refused(&self, reason: &str) {
        self.sso_refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn http_connection_closed(&self, reason: &str) {
        self.http_connections_closed
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts series declarations and samples refused for `reason`.
    pub fn series_refused(&self, reason: &str, series: u64, samples: u64) {
        let l = ReasonLabel {
            reason: reason.into(),
        };
        self.series_refused.get_or_create(&l).inc_by(series);
        self.samples_refused.get_or_create(&l).inc_by(samples);
    }

    pub fn audit_failed(&self) {
        self.audit_failures.inc();
    }

    pub fn csrf_refused(&self) {
        self.csrf_refusals.inc();
    }

    /// Registers a receiver so its series exist (at zero) before its first send.
    pub fn notify_receiver(&self, receiver: &str, kind: &str) {
        self.notify_info
            .get_or_create(&ReceiverInfoLabel {
                receiver: receiver.into(),
                kind: kind.into(),
            })
            .set(1);
        let l = ReceiverLabel {
            receiver: receiver.into(),
        };
        let _ = self.notify_sent.get_or_create(&l);
        let _ = self.notify_failed.get_or_create(&l);
        let _ = self.notify_retried.get_or_create(&l);
        let _ = self.outbox_depth.get_or_create(&l);
        let _ = self.notify_latency.get_or_create(&l);
        for reason in ["permanent", "expired"] {
            let _ = self.notify_dead.get_or_create(&DeadLabel {
                receiver: receiver.into(),
                reason: reason.into(),
            });
        }
    }

    /// Drops the series that describe a receiver's current state (its kind, its queue)
    /// once it is deleted; its counters stay, as counters do.
    pub fn forget_receiver(&self, receiver: &str, kind: &str) {
        self.forget_receiver_kind(receiver, kind);
        self.outbox_depth.remove(&Self::rl(receiver));
    }

    /// Drops the info series of `receiver` as a `kind` (it changed kind, or is gone).
    pub fn forget_receiver_kind(&self, receiver: &str, kind: &str) {
        self.notify_info.remove(&ReceiverInfoLabel {
            receiver: receiver.into(),
            kind: kind.into(),
        });
    }

    fn rl(receiver: &str) -> ReceiverLabel {
        ReceiverLabel {
            receiver: receiver.into(),
        }
    }

    pub fn notify_sent(&self, receiver: &str, n: u64) {
        self.notify_sent
            .get_or_create(&Self::rl(receiver))
            .inc_by(n);
    }

    pub fn notify_failed(&self, receiver: &str) {
        self.notify_failed.get_or_create(&Self::rl(receiver)).inc();
    }

    pub fn notify_retried(&self, receiver: &str) {
        self.notify_retried.get_or_create(&Self::rl(receiver)).inc();
    }

    pub fn notify_dead(&self, receiver: &str, n: u64, reason: &str) {
        if n > 0 {
            self.notify_dead
                .get_or_create(&DeadLabel {
                    receiver: receiver.into(),
                    reason: reason.into(),
                })
                .inc_by(n);
        }
    }

    pub fn notify_latency(&self, receiver: &str, seconds: f64) {
        self.notify_latency
            .get_or_create(&Self::rl(receiver))
            .observe(seconds);
    }

    pub fn set_outbox_depth(&self, receiver: &str, depth: i64) {
        self.outbox_depth
            .get_or_create(&Self::rl(receiver))
            .set(depth);
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
