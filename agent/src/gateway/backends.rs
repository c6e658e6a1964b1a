//! The gateway's table of backends: for every server the gateway serves, what serves it now
//! (the session mux on a stdio container's attach, while attached; the URL of a Streamable
//! HTTP server) and its gateway figures.
//! [`Backends`] is the one handle on that shared state: the stdio bridges publish and
//! withdraw muxes, the HTTP front and the probes look them up, the sampling loop reads the
//! figures.
//!
//! Counters outlive a mux: when an attach ends, the figures of its mux and attach are folded
//! into the server's totals, so the exported counters never go back while the agent runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mcpwatch_common::wire::SeriesKey;

use super::client_pool::ClientPool;
use super::http_proxy::HttpBackend;
use super::session_mux::{MuxHandle, MuxStatsSnapshot};
use super::stdio_attach::AttachStats;
use crate::sampler::MetricKind;

/// Per server: the live mux (if attached) and the counters of every attach so far.
#[derive(Default)]
struct Entry {
    /// Set for a Streamable HTTP server: the gateway proxies to it.
    http: Option<Arc<HttpBackend>>,
    /// Set for a stdio server with `sessions = "per_client"`.
    pool: Option<Arc<ClientPool>>,
    mux: Option<MuxHandle>,
    attach: Option<Arc<AttachStats>>,
    /// Totals of ended muxes and attaches.
    ended_mux: MuxStatsSnapshot,
    ended_attach: AttachTotals,
    attaches_total: u64,
    attach_failures_total: u64,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct AttachTotals {
    oversized_lines: u64,
    invalid_lines: u64,
    stderr_bytes: u64,
}

impl AttachTotals {
    fn of(stats: &AttachStats) -> AttachTotals {
        AttachTotals {
            oversized_lines: stats.oversized_lines.load(Ordering::Relaxed),
            invalid_lines: stats.invalid_lines.load(Ordering::Relaxed),
            stderr_bytes: stats.stderr_bytes.load(Ordering::Relaxed),
        }
    }

    fn plus(self, o: AttachTotals) -> AttachTotals {
        AttachTotals {
            oversized_lines: self.oversized_lines + o.oversized_lines,
            invalid_lines: self.invalid_lines + o.invalid_lines,
            stderr_bytes: self.stderr_bytes + o.stderr_bytes,
        }
    }
}

/// Byte counters of one server's client traffic, updated by the HTTP front.
#[derive(Clone)]
pub struct ByteCounters {
    pub from_clients: Arc<AtomicU64>,
    pub to_clients: Arc<AtomicU64>,
}

/// Cheap to clone; every clone sees the same table.
#[derive(Clone, Default)]
pub struct Backends {
    table: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl Backends {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // Entries are replaced field by field; a panic mid-update leaves usable values.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mux serving `server` now, if it is attached.
    pub fn mux(&self, server: &str) -> Option<MuxHandle> {
        self.lock().get(server).and_then(|e| e.mux.clone())
    }

    /// The proxy target of `server`, when it is a Streamable HTTP server.
    pub fn http(&self, server: &str) -> Option<Arc<HttpBackend>> {
        self.lock().get(server).and_then(|e| e.http.clone())
    }

    /// Makes stdio server `server` known (not attached yet).
    pub fn register(&self, server: &str) {
        self.lock().entry(server.to_owned()).or_default().http = None;
    }

    /// The per-client container pool of `server`, if it has one.
    pub fn pool(&self, server: &str) -> Option<Arc<ClientPool>> {
        self.lock().get(server).and_then(|e| e.pool.clone())
    }

    /// Sets or clears the per-client pool of stdio server `server`.
    pub fn set_pool(&self, server: &str, pool: Option<Arc<ClientPool>>) {
        if let Some(e) = self.lock().get_mut(server) {
            e.pool = pool;
        }
    }

    /// Makes `server` a proxied Streamable HTTP server (or updates where it lives).
    pub fn register_http(&self, server: &str, backend: HttpBackend) {
        self.lock().entry(server.to_owned()).or_default().http = Some(Arc::new(backend));
    }

    /// Forgets every server not in `keep`.
    pub fn retain(&self, keep: &HashSet<&str>) {
        self.lock().retain(|s, _| keep.contains(s.as_str()));
    }

    pub fn bytes(&self, server: &str) -> Option<ByteCounters> {
        self.lock().get(server).map(|e| ByteCounters {
            from_clients: Arc::clone(&e.bytes_in),
            to_clients: Arc::clone(&e.bytes_out),
        })
    }

    /// A new attach of `server` is live.
    pub(super) fn publish(&self, server: &str, mux: MuxHandle, attach: Arc<AttachStats>) {
        let mut table = self.lock();
        let e = table.entry(server.to_owned()).or_default();
        e.mux = Some(mux);
        e.attach = Some(attach);
        e.attaches_total += 1;
    }

    pub(super) fn attach_failed(&self, server: &str) {
        if let Some(e) = self.lock().get_mut(server) {
            e.attach_failures_total += 1;
        }
    }

    /// The attach of `server` has ended: its figures join the totals.
    pub(super) fn withdraw(&self, server: &str) {
        let mut table = self.lock();
        let Some(e) = table.get_mut(server) else {
            return;
        };
        if let Some(mux) = e.mux.take() {
            e.ended_mux = plus(e.ended_mux, mux.stats());
        }
        if let Some(a) = e.attach.take() {
            e.ended_attach = e.ended_attach.plus(AttachTotals::of(&a));
        }
    }

    /// The gateway's figures per server, for the spool and /metrics.
    pub fn samples(&self) -> Vec<(SeriesKey, f64)> {
        let table = self.lock();
        let mut out = Vec::new();
        for (server, e) in table.iter() {
            let s = server.as_str();
            let live = e.mux.as_ref().map(MuxHandle::stats).unwrap_or_default();
            let mux = plus(e.ended_mux, live);
            let attach = e
                .attach
                .as_deref()
                .map(AttachTotals::of)
                .unwrap_or_default()
                .plus(e.ended_attach);
            let mut push = |name: &str, extra: &[(&str, &str)], v: u64| {
                let mut labels = vec![("server", s)];
                labels.extend_from_slice(extra);
                out.push((SeriesKey::new(name, &labels), v as f64));
            };
            if e.http.is_none() {
                push(ATTACHED, &[], u64::from(e.mux.is_some()));
                push(ATTACHES, &[], e.attaches_total);
                push(ATTACH_FAILURES, &[], e.attach_failures_total);
            }
            if let Some(pool) = &e.pool {
                push(CLIENT_CONTAINERS, &[], pool.in_use() as u64);
                push(
                    CLIENT_STARTS,
                    &[],
                    pool.stats.starts_total.load(Ordering::Relaxed),
                );
                push(
                    CLIENT_START_FAILURES,
                    &[],
                    pool.stats.start_failures_total.load(Ordering::Relaxed),
                );
            }
            push(
                SESSIONS,
                &[],
                e.mux.as_ref().map_or(0, |m| m.sessions() as u64),
            );
            push(IN_FLIGHT, &[], live.in_flight);
            push(STDERR_BYTES, &[], attach.stderr_bytes);
            push(
                BYTES,
                &[("direction", "in")],
                e.bytes_in.load(Ordering::Relaxed),
            );
            push(
                BYTES,
                &[("direction", "out")],
                e.bytes_out.load(Ordering::Relaxed),
            );
            for (reason, v) in dropped(&mux, &attach) {
                push(DROPPED, &[("reason", reason)], v);
            }
        }
        out
    }
}

fn plus(a: MuxStatsSnapshot, b: MuxStatsSnapshot) -> MuxStatsSnapshot {
    MuxStatsSnapshot {
        upstream_malformed: a.upstream_malformed + b.upstream_malformed,
        upstream_unknown: a.upstream_unknown + b.upstream_unknown,
        upstream_late: a.upstream_late + b.upstream_late,
        upstream_unroutable: a.upstream_unroutable + b.upstream_unroutable,
        server_requests_refused: a.server_requests_refused + b.server_requests_refused,
        server_requests_timed_out: a.server_requests_timed_out + b.server_requests_timed_out,
        client_malformed: a.client_malformed + b.client_malformed,
        client_refused: a.client_refused + b.client_refused,
        client_unroutable: a.client_unroutable + b.client_unroutable,
        session_overruns: a.session_overruns + b.session_overruns,
        progress_dropped: a.progress_dropped + b.progress_dropped,
        upstream_queue_dropped: a.upstream_queue_dropped + b.upstream_queue_dropped,
        // Gauges describe the live mux only.
        in_flight: b.in_flight,
        server_requests: b.server_requests,
        upstream_queued: b.upstream_queued,
    }
}

/// Every message the gateway dropped or refused, by reason.
fn dropped(m: &MuxStatsSnapshot, a: &AttachTotals) -> [(&'static str, u64); 14] {
    [
        ("upstream_malformed", m.upstream_malformed),
        ("upstream_unknown_id", m.upstream_unknown),
        ("upstream_late", m.upstream_late),
        ("upstream_unroutable", m.upstream_unroutable),
        ("server_request_refused", m.server_requests_refused),
        ("server_request_timeout", m.server_requests_timed_out),
        ("client_malformed", m.client_malformed),
        ("client_refused", m.client_refused),
        ("client_unroutable", m.client_unroutable),
        ("session_overrun", m.session_overruns),
        ("progress_dropped", m.progress_dropped),
        ("upstream_queue_full", m.upstream_queue_dropped),
        ("oversized_line", a.oversized_lines),
        ("invalid_line", a.invalid_lines),
    ]
}

const ATTACHED: &str = "mcpwatch_mcp_gateway_attached";
const ATTACHES: &str = "mcpwatch_mcp_gateway_attaches_total";
const ATTACH_FAILURES: &str = "mcpwatch_mcp_gateway_attach_failures_total";
const SESSIONS: &str = "mcpwatch_mcp_gateway_sessions";
const CLIENT_CONTAINERS: &str = "mcpwatch_mcp_gateway_client_containers";
const CLIENT_STARTS: &str = "mcpwatch_mcp_gateway_client_container_starts_total";
const CLIENT_START_FAILURES: &str = "mcpwatch_mcp_gateway_client_container_start_failures_total";
const IN_FLIGHT: &str = "mcpwatch_mcp_gateway_in_flight";
const STDERR_BYTES: &str = "mcpwatch_mcp_server_stderr_bytes_total";
const BYTES: &str = "mcpwatch_mcp_gateway_bytes_total";
const DROPPED: &str = "mcpwatch_mcp_gateway_dropped_messages_total";

/// HELP and TYPE of the series [`Backends::samples`] produces, for the agent's /metrics.
pub fn series_help() -> &'static [(&'static str, &'static str, MetricKind)] {
    use MetricKind::{Counter, Gauge};
    &[
        (
            ATTACHED,
            "1 while the gateway is attached to the stdio server's container.",
            Gauge,
        ),
        (
            ATTACHES,
            "Attaches of the gateway to the stdio server's containers.",
            Counter,
        ),
        (
            ATTACH_FAILURES,
            "Attaches to a running stdio server's container that failed.",
            Counter,
        ),
        (
            SESSIONS,
            "MCP client sessions open on the server through the gateway (a running probe included).",
            Gauge,
        ),
        (
            CLIENT_CONTAINERS,
            "Per-client containers serving a client session now (sessions = per_client).",
            Gauge,
        ),
        (
            CLIENT_STARTS,
            "Per-client containers started (for a session or the warm pool).",
            Counter,
        ),
        (
            CLIENT_START_FAILURES,
            "Per-client containers that failed to start or attach.",
            Counter,
        ),
        (
            IN_FLIGHT,
            "Client requests through the gateway waiting for the server's answer.",
            Gauge,
        ),
        (
            STDERR_BYTES,
            "Bytes the stdio server wrote to stderr (its log; counted, not kept).",
            Counter,
        ),
        (
            BYTES,
            "Bytes of MCP client traffic through the gateway by direction (in from clients, out to them).",
            Counter,
        ),
        (
            DROPPED,
            "Messages the gateway dropped or refused by reason (malformed, over a limit, unroutable, late).",
            Counter,
        ),
    ]
}
