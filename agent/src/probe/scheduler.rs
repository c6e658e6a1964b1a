//! Probe scheduling: one task per configured server runs the MCP probe at the server's
//! interval, reports health to the supervisor (which restarts after N failures), turns every
//! result into an event and metrics, and tracks the tool surface against an approved
//! baseline kept on disk, so a drift stays flagged across agent restarts until approved.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpwatch_common::backoff::ExponentialBackoff;
use mcpwatch_common::time::now_ms;
use mcpwatch_common::wire::SeriesKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::gateway::{Backends, TrafficMetrics};
use crate::probe::baseline::{describe, drift_detail, load_baseline, save_baseline};
use crate::probe::{self, ProbeReport, ProbeTarget, ToolDrift, ToolSurface};
use crate::supervisor::{
    McpServerSpec, ServerEvent, ServerPhase, ServerStatus, SupervisorHandle, Transport,
};

mod series;

pub use series::series_help;
use series::{server_samples, ServerInfo};

/// Event kinds the probe scheduler emits (the supervisor's are in `supervisor::kind`).
pub mod kind {
    pub const PROBE_OK: &str = "probe_ok";
    pub const PROBE_FAILED: &str = "probe_failed";
    pub const TOOLS_BASELINE: &str = "tools_baseline";
    pub const TOOL_DRIFT: &str = "tool_drift";
    pub const DRIFT_APPROVED: &str = "drift_approved";
}

/// What the probe scheduler knows about one server, for metrics and approval.
#[derive(Debug, Default)]
struct State {
    last: Option<ProbeReport>,
    info: Option<ServerInfo>,
    failures_by_kind: BTreeMap<&'static str, u64>,
    probes_total: u64,
    /// Approved tool surface (persisted); the first successful probe sets it.
    baseline: Option<ToolSurface>,
    /// Unapproved difference from the baseline, if any.
    drift: Option<ToolDrift>,
}

type Shared = Arc<Mutex<HashMap<String, State>>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
    // Each update is a few field writes; a panic mid-update leaves plausible state.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Time between the first probes of consecutive servers. Probes started together would run
/// together at every interval after: twenty MCP sessions' buffers at once set the agent's
/// memory high-water mark (measured: 1.3 MB of a 3.6 MB heap peak with 20 servers).
const PROBE_SPACING: Duration = Duration::from_millis(200);

/// The set of probe tasks; owned by the agent's supervision loop.
pub struct ProbeScheduler {
    gateway: Gateway,
    supervisor: SupervisorHandle,
    events: mpsc::Sender<ServerEvent>,
    state_dir: PathBuf,
    shared: Shared,
    tasks: HashMap<String, (McpServerSpec, CancellationToken)>,
    shutdown: CancellationToken,
}

impl ProbeScheduler {
    pub fn new(
        gateway: Gateway,
        supervisor: SupervisorHandle,
        events: mpsc::Sender<ServerEvent>,
        state_dir: PathBuf,
        shutdown: CancellationToken,
    ) -> ProbeScheduler {
        ProbeScheduler {
            gateway,
            supervisor,
            events,
            state_dir,
            shared: Arc::default(),
            tasks: HashMap::new(),
            shutdown,
        }
    }

    /// Starts probes for new servers, stops those of removed ones, restarts changed ones.
    pub fn apply(&mut self, specs: &[McpServerSpec]) {
        let wanted: HashMap<&str, &McpServerSpec> =
            specs.iter().map(|s| (s.name.as_str(), s)).collect();
        self.tasks.retain(|name, (spec, token)| {
            let keep = wanted.get(name.as_str()).is_some_and(|w| *w == spec);
            if !keep {
                token.cancel();
            }
            keep
        });
        lock(&self.shared).retain(|name, _| wanted.contains_key(name.as_str()));
        let now = tokio::time::Instant::now();
        for (position, spec) in specs.iter().enumerate() {
            if self.tasks.contains_key(&spec.name) {
                continue;
            }
            let token = self.shutdown.child_token();
            let baseline = load_baseline(&self.state_dir, &spec.name);
            lock(&self.shared)
                .entry(spec.name.clone())
                .or_default()
                .baseline = baseline;
            tokio::spawn(probe_loop(
                spec.clone(),
                now + first_probe_delay(position, spec.probe.interval.get()),
                self.gateway.clone(),
                self.supervisor.clone(),
                self.events.clone(),
                self.shared.clone(),
                self.state_dir.clone(),
                token.clone(),
            ));
            self.tasks.insert(spec.name.clone(), (spec.clone(), token));
        }
    }

    /// A handle that approves drift from anywhere (commands run beside the owning loop).
    pub fn approver(&self) -> Approver {
        Approver {
            shared: self.shared.clone(),
            state_dir: self.state_dir.clone(),
            events: self.events.clone(),
        }
    }

    /// Latest probe figures as series (also shown on the agent's /metrics).
    pub fn samples(&self) -> Vec<(SeriesKey, f64)> {
        let mut out = Vec::new();
        for (server, st) in lock(&self.shared).iter() {
            server_samples(server, st, &mut out);
        }
        out
    }
}

/// The gateway parts the probes use: the stdio servers' muxes, and the traffic metrics
/// whose tool lists the probes keep current.
#[derive(Clone)]
pub struct Gateway {
    pub backends: Backends,
    pub traffic: Arc<TrafficMetrics>,
}

/// What a probe talks to: a stdio server through the gateway's session on its container.
fn target(spec: &McpServerSpec, backends: &Backends) -> ProbeTarget {
    match &spec.transport {
        Transport::Http { url } => ProbeTarget::Http {
            url: url.clone(),
            headers: spec.headers.clone(),
        },
        Transport::Stdio => ProbeTarget::Gateway {
            mux: backends.mux(&spec.name),
        },
    }
}

/// Whether the server's container started less than `grace` ago.
fn starting(status: &ServerStatus, grace: Duration) -> bool {
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    status
        .started_at_ms
        .is_some_and(|at| now_ms().saturating_sub(at) < grace_ms)
}

/// Accepts a server's current tool surface as its new approved baseline.
#[derive(Clone)]
pub struct Approver {
    shared: Shared,
    state_dir: PathBuf,
    events: mpsc::Sender<ServerEvent>,
}

impl Approver {
    pub async fn approve(&self, server: &str) -> Result<String, String> {
        let (surface, drift) = {
            let mut all = lock(&self.shared);
            let state = all
                .get_mut(server)
                .ok_or_else(|| format!("no MCP server named {server:?}"))?;
            let Some(surface) = state
                .last
                .as_ref()
                .filter(|r| r.ok)
                .map(ProbeReport::surface)
            else {
                return Err(format!("{server}: no successful probe yet to approve"));
            };
            let drift = state.drift.take();
            state.baseline = Some(surface.clone());
            (surface, drift)
        };
        save_baseline(&self.state_dir, server, &surface)
            .map_err(|e| format!("{server}: saving the approved tools failed: {e}"))?;
        let detail = format!(
            "tools={} approved_drift={}",
            surface.count(),
            drift
                .as_ref()
                .map(describe)
                .unwrap_or_else(|| "none".into())
        );
        emit(&self.events, server, kind::DRIFT_APPROVED, detail.clone()).await;
        Ok(format!("{server}: {detail}"))
    }
}

async fn emit(events: &mpsc::Sender<ServerEvent>, server: &str, kind: &str, detail: String) {
    let event = ServerEvent {
        ts_ms: now_ms(),
        server: server.to_owned(),
        kind: kind.to_owned(),
        detail,
    };
    if events.send(event).await.is_err() {
        tracing::debug!(server, kind, "event channel closed (shutting down)");
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// When the `position`th server's first probe runs: soon after start, so a fresh agent
/// reports health quickly, and [`PROBE_SPACING`] after the previous server's (wrapping
/// within the interval), so later probes stay spread out too.
fn first_probe_delay(position: usize, interval: Duration) -> Duration {
    let soon = first_look(interval);
    let spread = PROBE_SPACING.as_nanos().saturating_mul(position as u128);
    let phase = spread % interval.as_nanos().max(1);
    // Below the interval, which is a Duration: fits in u64 nanoseconds.
    soon + Duration::from_nanos(u64::try_from(phase).unwrap_or(0))
}

/// How soon a server is first looked at (and looked at again while not yet running).
fn first_look(interval: Duration) -> Duration {
    Duration::from_secs(1).min(interval)
}

#[allow(clippy::too_many_arguments)] // one call site; each is a distinct resource of the task
async fn probe_loop(
    spec: McpServerSpec,
    first: tokio::time::Instant,
    gateway: Gateway,
    supervisor: SupervisorHandle,
    events: mpsc::Sender<ServerEvent>,
    shared: Shared,
    state_dir: PathBuf,
    stop: CancellationToken,
) {
    let name = spec.name.clone();
    let interval = spec.probe.interval.get();
    // Until the server is first seen running (its container may take seconds to start), look
    // again soon, backing off to the interval, so a long interval does not delay the first
    // health report by a whole interval.
    let first_wait = ExponentialBackoff::new(first_look(interval), interval).ok();
    // Looks so far at a server not yet seen running; `None` once it has been.
    let mut not_yet_running = Some(0u32);
    let mut next = first;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += interval;
        // Probing a server we stopped or are backing off would only record noise. An external
        // server has no container: it is always probed, and never in a startup grace.
        let status = supervisor
            .snapshot()
            .into_iter()
            .find(|s| s.server == name && s.phase == ServerPhase::Running);
        if status.is_none() && !spec.external {
            if let (Some(wait), Some(looks)) = (&first_wait, not_yet_running.as_mut()) {
                next = tokio::time::Instant::now() + wait.delay(*looks);
                *looks = looks.saturating_add(1);
            }
            continue;
        }
        // Seen running: from now on a stopped server waits a whole interval.
        not_yet_running = None;
        let target = target(&spec, &gateway.backends);
        let report = tokio::select! {
            _ = stop.cancelled() => return,
            r = probe::run_once(&target, spec.probe.timeout.get()) => r,
        };
        let grace = spec.probe.startup_grace.get();
        if !report.ok && status.as_ref().is_some_and(|s| starting(s, grace)) {
            tracing::debug!(server = %name, "probe failed within the startup grace; not counted");
            continue;
        }
        if report.ok {
            gateway
                .traffic
                .set_tools(&name, report.tools.iter().map(|t| t.name.as_str()));
        }
        let drift_event = record(&shared, &state_dir, &name, &report);
        match &report.failure {
            None => {
                let detail = format!(
                    "protocol={} tools={} initialize_ms={} tools_list_ms={} ping_ms={}",
                    report.protocol_version.as_deref().unwrap_or("-"),
                    report.tools.len(),
                    ms(report.stage_latency.initialize),
                    ms(report.stage_latency.tools_list),
                    // A successful probe without ping: the revision has none (2026-07-28).
                    report
                        .stage_latency
                        .ping
                        .map_or_else(|| "skipped".to_owned(), |d| ms(Some(d))),
                );
                emit(&events, &name, kind::PROBE_OK, detail).await;
            }
            Some(f) => {
                let detail = format!(
                    "stage={} kind={} message={}",
                    f.stage.as_str(),
                    f.kind.as_str(),
                    f.message
                );
                tracing::warn!(server = %name, stage = f.stage.as_str(), kind = f.kind.as_str(), error = %f.message, "probe failed");
                emit(&events, &name, kind::PROBE_FAILED, detail).await;
            }
        }
        if let Some((kind, detail)) = drift_event {
            emit(&events, &name, kind, detail).await;
        }
        // A probe refused by a saturated gateway says nothing about the server's health.
        let saturated = report
            .failure
            .as_ref()
            .is_some_and(|f| f.kind == probe::FailureKind::Saturated);
        if !saturated {
            supervisor.report_probe(&name, report.ok).await;
        }
    }
}

/// Folds a report into the shared state; returns a baseline or drift event to emit.
fn record(
    shared: &Shared,
    state_dir: &Path,
    name: &str,
    report: &ProbeReport,
) -> Option<(&'static str, String)> {
    let mut all = lock(shared);
    let st = all.entry(name.to_owned()).or_default();
    st.probes_total += 1;
    if let Some(info) = ServerInfo::of(report) {
        st.info = Some(info);
    }
    if let Some(f) = &report.failure {
        *st.failures_by_kind.entry(f.kind.as_str()).or_default() += 1;
    }
    let mut event = None;
    if report.ok {
        let surface = report.surface();
        match &st.baseline {
            None => {
                if let Err(e) = save_baseline(state_dir, name, &surface) {
                    tracing::error!(server = name, error = %e, "saving the tool baseline failed");
                }
                event = Some((kind::TOOLS_BASELINE, format!("tools={}", surface.count())));
                st.baseline = Some(surface);
            }
            Some(baseline) => {
                let drift = baseline.diff(&surface);
                if drift.is_empty() {
                    st.drift = None;
                } else if st.drift.as_ref() != Some(&drift) {
                    // A new or different drift: announce it once; it stays flagged.
                    event = Some((kind::TOOL_DRIFT, drift_detail(&drift)));
                    st.drift = Some(drift);
                }
            }
        }
    }
    st.last = Some(report.clone());
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probes_are_spread_and_wrap_within_the_interval() {
        let ms = Duration::from_millis;
        let at = |position, interval| first_probe_delay(position, interval);
        assert_eq!(at(0, ms(15_000)), ms(1000));
        assert_eq!(at(19, ms(15_000)), ms(1000 + 19 * 200));
        // More servers than fit in the interval wrap around it instead of waiting longer.
        assert_eq!(at(80, ms(15_000)), ms(1000 + 1000));
        // A short interval probes first at once after that interval, then spreads within it.
        assert_eq!(at(0, ms(500)), ms(500));
        assert_eq!(at(3, ms(500)), ms(500 + 100));
    }
}
