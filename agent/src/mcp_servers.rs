//! The agent's MCP servers: starts the container supervisor and the probe scheduler when
//! servers are configured (or first appear on reload), forwards their events to the spool,
//! samples container and probe figures every interval (to the spool and /metrics), and
//! executes operator commands ([`AgentCommand`], from the uplink) and reloads. One task owns
//! all of it.

use std::sync::Arc;
use std::time::Duration;

use mcpwatch_common::time::now_ms;
use mcpwatch_common::wire::{CommandAction, Event};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::gateway::client_pool::ClientPool;
use crate::gateway::http_proxy::HttpBackend;
use crate::gateway::{Backends, BridgeContext, MuxConfig, StdioBridges};
use crate::metrics::AgentMetrics;
use crate::probe::scheduler::{Gateway, ProbeScheduler};
use crate::spool::SpoolBatch;
use crate::supervisor::spec::GatewaySessions;
use crate::supervisor::{
    ContainerStats, DockerApi, McpServerSpec, ServerEvent, Supervisor, SupervisorCommand,
    SupervisorHandle, SupervisorOptions, Transport,
};

/// Events waiting for the spool; bursts (a reconcile of many servers) fit comfortably.
const EVENT_QUEUE: usize = 1024;

/// An operator command handed to the agent's dispatcher by the uplink; the answer goes back
/// upstream as a `CommandResult` on the session that carried the command.
#[derive(Debug)]
pub struct AgentCommand {
    pub action: CommandAction,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// What `run` needs from the agent.
pub struct McpServersContext {
    pub agent_id: String,
    pub state_dir: std::path::PathBuf,
    pub interval: Duration,
    pub spool: mpsc::Sender<SpoolBatch>,
    pub metrics: Arc<AgentMetrics>,
    /// Shared with the gateway's HTTP front.
    pub backends: Backends,
    /// Limits of each stdio server's mux (`[gateway]`).
    pub mux_limits: MuxConfig,
    /// This run's label on per-client containers (random per agent start).
    pub run: String,
}

struct Active {
    api: DockerApi,
    supervisor: SupervisorHandle,
    probes: ProbeScheduler,
    bridges: StdioBridges,
    stats: ContainerStats,
}

/// Runs until `shutdown`. `commands` come from the uplink, `reloads` carry the server list
/// of a re-read config (SIGHUP or the Reload command).
pub async fn run(
    ctx: McpServersContext,
    initial: Vec<McpServerSpec>,
    mut commands: mpsc::Receiver<AgentCommand>,
    mut reloads: mpsc::Receiver<Vec<McpServerSpec>>,
    reload_requests: mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let forwarder = tokio::spawn(forward_events(events_rx, ctx.spool.clone()));
    let mut active = (!initial.is_empty()).then(|| start(&ctx, initial, &events_tx, &shutdown));
    let mut tick = tokio::time::interval(ctx.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // Without servers the timer is not even polled: no wake-up per interval.
            _ = tick.tick(), if active.is_some() => {
                if let Some(a) = active.as_mut() {
                    sample(&ctx, a).await;
                }
            }
            Some(cmd) = commands.recv() => {
                handle(cmd, active.as_ref(), &reload_requests);
            }
            Some(specs) = reloads.recv() => match active.as_mut() {
                Some(a) => {
                    a.supervisor.reload(managed(&specs)).await;
                    apply_gateway(&ctx, &a.api, &mut a.bridges, &specs, &shutdown);
                    a.probes.apply(&specs);
                }
                None if !specs.is_empty() => {
                    active = Some(start(&ctx, specs, &events_tx, &shutdown));
                }
                None => {}
            },
        }
    }
    // Containers keep running: the next agent adopts them. Client containers belong to
    // sessions that end with this agent: removed now (what is missed, the next start removes).
    if let Some(a) = &active {
        let removal = a.api.remove_client_containers(None);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), removal).await {
            tracing::warn!(error = %e, "removing client containers at shutdown failed");
        }
    }
    // The forwarder ends once every event sender (ours, the supervisor's, the probe
    // scheduler's) is gone.
    drop(active);
    drop(events_tx);
    let _ = forwarder.await;
}

fn start(
    ctx: &McpServersContext,
    specs: Vec<McpServerSpec>,
    events: &mpsc::Sender<ServerEvent>,
    shutdown: &CancellationToken,
) -> Active {
    let api = DockerApi::local(ctx.agent_id.clone());
    tracing::info!(servers = specs.len(), "starting MCP server supervision");
    let supervisor = Supervisor::spawn_with(
        SupervisorOptions::default(),
        api.clone(),
        managed(&specs),
        events.clone(),
        shutdown.child_token(),
    );
    let mut bridges = StdioBridges::new(
        BridgeContext {
            docker: api.clone(),
            supervisor: supervisor.clone(),
            backends: ctx.backends.clone(),
            sink: ctx.metrics.traffic.clone(),
            limits: ctx.mux_limits.clone(),
        },
        shutdown.child_token(),
    );
    // Client containers of an earlier run (an agent killed with its sessions open) go first.
    let (orphans, run) = (api.clone(), ctx.run.clone());
    tokio::spawn(async move {
        match orphans.remove_client_containers(Some(&run)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed client containers of an earlier run"),
            Err(e) => tracing::warn!(error = %e, "cannot list client containers of an earlier run"),
        }
    });
    apply_gateway(ctx, &api, &mut bridges, &specs, shutdown);
    let mut probes = ProbeScheduler::new(
        Gateway {
            backends: ctx.backends.clone(),
            traffic: ctx.metrics.traffic.clone(),
        },
        supervisor.clone(),
        events.clone(),
        ctx.state_dir.clone(),
        shutdown.child_token(),
    );
    probes.apply(&specs);
    Active {
        api: api.clone(),
        supervisor,
        probes,
        bridges,
        stats: ContainerStats::new(api),
    }
}

/// The servers this agent runs (external ones are only probed and proxied).
fn managed(specs: &[McpServerSpec]) -> Vec<McpServerSpec> {
    specs.iter().filter(|s| !s.external).cloned().collect()
}

/// Points the gateway at every server: a bridge per stdio server (and a container pool for
/// `per_client` ones), the proxy for http ones.
fn apply_gateway(
    ctx: &McpServersContext,
    api: &DockerApi,
    bridges: &mut StdioBridges,
    specs: &[McpServerSpec],
    shutdown: &CancellationToken,
) {
    for spec in specs {
        if let Transport::Http { url } = &spec.transport {
            ctx.backends
                .register_http(&spec.name, HttpBackend::new(url, &spec.headers));
        }
    }
    bridges.apply(specs);
    for spec in specs.iter().filter(|s| s.transport != Transport::Stdio) {
        ctx.backends.set_pool(&spec.name, None);
    }
    for spec in specs.iter().filter(|s| s.transport == Transport::Stdio) {
        let current = ctx.backends.pool(&spec.name);
        let pool = match spec.gateway_sessions {
            GatewaySessions::Shared => None,
            // An unchanged spec keeps its pool (and the sessions on it).
            GatewaySessions::PerClient { .. }
                if current.as_ref().is_some_and(|p| p.spec() == spec) =>
            {
                current
            }
            GatewaySessions::PerClient {
                max_sessions,
                warm_pool,
            } => Some(ClientPool::new(
                api.clone(),
                spec.clone(),
                ctx.mux_limits.clone(),
                ctx.metrics.traffic.clone(),
                max_sessions,
                warm_pool,
                ctx.run.clone(),
                shutdown.child_token(),
            )),
        };
        ctx.backends.set_pool(&spec.name, pool);
    }
    let names = specs.iter().map(|s| s.name.as_str()).collect();
    ctx.backends.retain(&names);
    ctx.metrics.traffic.retain_servers(&names);
}

/// Container and probe figures: to /metrics, and as one batch to the spool.
async fn sample(ctx: &McpServersContext, a: &mut Active) {
    let ts_ms = now_ms();
    let status = a.supervisor.snapshot();
    let mut values = a.stats.sample(&status, ts_ms).await;
    values.extend(a.probes.samples());
    values.extend(ctx.backends.samples());
    ctx.metrics.set_server_samples(&values);
    // Rendered on /metrics by the traffic collector itself (histograms), so added after.
    values.extend(ctx.metrics.traffic.samples());
    let n = values.len() as u64;
    if n == 0 {
        return;
    }
    ctx.metrics.samples_collected_total.inc_by(n);
    if ctx.spool.try_send(SpoolBatch::at(ts_ms, values)).is_err() {
        ctx.metrics.dropped_samples_total.inc_by(n);
        tracing::warn!(samples = n, "spool queue full; server samples dropped");
    }
}

/// Runs a command beside the loop: restarts take seconds and sampling must go on.
fn handle(cmd: AgentCommand, active: Option<&Active>, reload_requests: &mpsc::Sender<()>) {
    let AgentCommand { action, reply } = cmd;
    if let CommandAction::Reload = action {
        let outcome = match reload_requests.try_send(()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok("reload requested".to_owned()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err("agent is shutting down".to_owned()),
        };
        let _ = reply.send(outcome);
        return;
    }
    let Some(a) = active else {
        let _ = reply.send(Err("this agent supervises no MCP servers".to_owned()));
        return;
    };
    match (SupervisorCommand::from_wire(&action), action) {
        (Some(command), _) => {
            let supervisor = a.supervisor.clone();
            tokio::spawn(async move {
                let _ = reply.send(supervisor.command(command).await);
            });
        }
        (None, CommandAction::ApproveDrift { server }) => {
            let approver = a.probes.approver();
            tokio::spawn(async move {
                let _ = reply.send(approver.approve(&server).await);
            });
        }
        (None, other) => {
            let _ = reply.send(Err(format!("unsupported command {other:?}")));
        }
    }
}

/// Supervisor and probe scheduler events to the spool, a batch per burst. Waits for queue space
/// rather than dropping: events are rare and each one matters.
async fn forward_events(mut rx: mpsc::Receiver<ServerEvent>, spool: mpsc::Sender<SpoolBatch>) {
    while let Some(first) = rx.recv().await {
        let mut events: Vec<Event> = vec![first.into()];
        while let Ok(more) = rx.try_recv() {
            events.push(more.into());
        }
        if spool.send(SpoolBatch::of_events(events)).await.is_err() {
            return;
        }
    }
}
