//! The declarative MCP server supervisor: one task that owns every managed server's state and
//! keeps the Docker containers of this agent equal to the `[[mcp_server]]` specs.
//!
//! Inputs, all handled by that one task in order: Docker container events (a watcher task
//! keeps the stream connected and negotiates the API version on every reconnect), results of
//! Docker operations (each runs in its own short task, at most one per server, so a slow stop
//! never holds up other servers), full listings (after every (re)connect and every
//! `reconcile_every` as a safety net: event replay is never trusted), timers (crash-loop
//! delays), and the [`SupervisorHandle`]'s commands, reloads and probe verdicts.
//! After each input it asks [`reconcile::next_action`] what every server needs next.
//!
//! Restarts are ours, not Docker's (restart policy "no"): delays double from
//! `backoff.initial` to `backoff.max`, more than `budget.max_restarts` within `budget.window`
//! gives up. On shutdown containers are left running; the next agent adopts them (same
//! container, not restarted) by their labels.
//!
//! Command semantics: `stop` stops the container and keeps it down (no restarts) until `start`
//! or `restart`; `start` clears a stop, a policy exit and a give-up (the crash loop and budget
//! start over) and starts the server now; `restart` restarts now (or starts, if down), skipping
//! a pending delay, and counts as a restart, but keeps the crash-loop state and budget (a
//! server that gave up is reset as by `start`). Known limit: "stopped by command" lives in
//! memory, so an agent restart starts such a server again according to its policy.

pub mod backoff;
pub mod docker;
pub mod reconcile;
pub mod spec;
pub mod stats;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use futures::StreamExt;
use mcpwatch_common::wire::{CommandAction, Event};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use backoff::{Decision, RestartTracker};
pub use docker::{connect_local, DockerApi, DockerError};
pub use spec::{validate_servers, McpServerSpec, RawMcpServer};
pub use stats::ContainerStats;

use docker::{ContainerEvent, ContainerInfo};
use reconcile::{
    match_listing, next_action, Action, Observed, Server, StartReason, StopReason, Want,
};

/// `ServerEvent::kind` values.
pub mod kind {
    pub const CREATED: &str = "created";
    pub const STARTED: &str = "started";
    pub const ADOPTED: &str = "adopted";
    pub const EXITED: &str = "exited";
    pub const RESTART_SCHEDULED: &str = "restart_scheduled";
    pub const RESTARTED: &str = "restarted";
    pub const GAVE_UP: &str = "gave_up";
    pub const STOPPED: &str = "stopped";
    pub const REMOVED: &str = "removed";
    pub const UNHEALTHY: &str = "unhealthy";
    pub const HEALTHY: &str = "healthy";
    /// A Docker operation failed (detail names it); the supervisor retries or backs off.
    pub const ERROR: &str = "error";
    pub const DOCKER_UNREACHABLE: &str = "docker_unreachable";
    pub const DOCKER_RECONNECTED: &str = "docker_reconnected";
    pub const RECONCILED: &str = "reconciled";
}

/// A state change of a supervised server, for the collector (see `From<ServerEvent> for
/// Event`). Agent-wide events (`docker_*`, `reconciled`) have an empty `server`. Details never
/// contain environment values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    pub ts_ms: i64,
    pub server: String,
    pub kind: String,
    pub detail: String,
}

impl From<ServerEvent> for Event {
    fn from(e: ServerEvent) -> Event {
        Event::Server {
            ts_ms: e.ts_ms,
            server: e.server,
            kind: e.kind,
            detail: e.detail,
        }
    }
}

/// Operator commands the supervisor executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorCommand {
    Restart { server: String },
    Stop { server: String },
    Start { server: String },
}

impl SupervisorCommand {
    /// The supervisor's share of a wire command; `ApproveDrift` (probe state) and `Reload`
    /// (config) belong elsewhere and give `None`.
    pub fn from_wire(action: &CommandAction) -> Option<SupervisorCommand> {
        match action {
            CommandAction::RestartServer { server } => Some(SupervisorCommand::Restart {
                server: server.clone(),
            }),
            CommandAction::StopServer { server } => Some(SupervisorCommand::Stop {
                server: server.clone(),
            }),
            CommandAction::StartServer { server } => Some(SupervisorCommand::Start {
                server: server.clone(),
            }),
            CommandAction::ApproveDrift { .. } | CommandAction::Reload => None,
        }
    }

    pub fn server(&self) -> &str {
        match self {
            SupervisorCommand::Restart { server }
            | SupervisorCommand::Stop { server }
            | SupervisorCommand::Start { server } => server,
        }
    }
}

/// Where a server stands, for metrics and status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPhase {
    /// No running container yet (being created or started, or Docker unreachable).
    Pending,
    Running,
    /// Exited; waiting for the crash-loop delay before the next start.
    BackingOff,
    /// Stopped by an operator command.
    Stopped,
    /// Exited and left down by the restart policy.
    Exited,
    /// Restart budget exhausted.
    GaveUp,
}

impl ServerPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerPhase::Pending => "pending",
            ServerPhase::Running => "running",
            ServerPhase::BackingOff => "backing_off",
            ServerPhase::Stopped => "stopped",
            ServerPhase::Exited => "exited",
            ServerPhase::GaveUp => "gave_up",
        }
    }
}

/// One configured server as the supervisor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    pub server: String,
    pub container_id: Option<String>,
    pub phase: ServerPhase,
    pub running: bool,
    pub unhealthy: bool,
    /// Restarts this agent performed (crash loop, unhealthy, `restart` command).
    pub restarts_total: u64,
    /// Wall-clock start of the running container, ms since the epoch.
    pub started_at_ms: Option<i64>,
    pub last_exit_code: Option<i64>,
    pub oom_killed: bool,
    pub crashloop_attempt: u32,
    pub next_delay: Duration,
    pub gave_up: bool,
    pub stopped_by_command: bool,
}

/// Tunables that are not part of the config file.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Full list-and-reconcile period, on top of the event stream. Default 30s.
    pub reconcile_every: Duration,
    /// SIGTERM-to-SIGKILL grace when stopping or restarting a container. Default 10s.
    pub stop_grace: Duration,
    /// Docker reconnect backoff floor and ceiling. Default 500ms and 30s.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            reconcile_every: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// Events not yet accepted by the (bounded) events channel wait here, oldest dropped first
/// beyond this, so a stalled consumer never stalls supervision.
const MAX_BACKLOG: usize = 4096;
/// How long the watcher waits for an immediate error from a new event subscription before
/// calling the connection established (the stream yields nothing until an event happens).
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(200);
/// A listing that failed is retried after this.
const LISTING_RETRY: Duration = Duration::from_secs(1);
/// A container name held by a container we do not manage: look again after this.
const CONFLICT_RETRY: Duration = Duration::from_secs(10);

enum Request {
    Command {
        action: SupervisorCommand,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Reload {
        specs: Vec<McpServerSpec>,
        done: oneshot::Sender<()>,
    },
    Probe {
        server: String,
        healthy: bool,
    },
}

enum Internal {
    Connected,
    Lost(String),
    /// A container event and when it arrived (restart delays count from there).
    Event(ContainerEvent, Instant),
    OpDone(OpDone),
    Listed {
        result: Result<Vec<ContainerInfo>, DockerError>,
        versions: HashMap<String, u64>,
        generation: u64,
        after_connect: bool,
        took: Duration,
    },
    ExtraRemoved {
        info: ContainerInfo,
        reason: &'static str,
        result: Result<(), DockerError>,
    },
}

/// The outcome of one [`Action`], step by step.
struct OpDone {
    server: String,
    action: Action,
    /// The server's event epoch when the action was dispatched.
    epoch: u64,
    removed: Option<Result<(), DockerError>>,
    created: Option<Result<String, DockerError>>,
    /// The start, stop or restart call.
    run: Option<Result<(), DockerError>>,
}

/// Cheap to clone; every clone talks to the same supervisor task.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<Arc<Vec<ServerStatus>>>,
}

impl SupervisorHandle {
    /// Runs an operator command; the answer comes once its effect is visible (container
    /// started or stopped), or as an error (unknown server, Docker unreachable or failing).
    pub async fn command(&self, action: SupervisorCommand) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Command { action, reply })
            .await
            .map_err(|_| "supervisor stopped".to_owned())?;
        // Docker calls have their own deadlines; this only guards against a lost reply.
        match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("supervisor stopped".into()),
            Err(_) => Err("command timed out".into()),
        }
    }

    /// Replaces the specs: new servers are created, removed ones' containers removed,
    /// changed ones recreated (container fields) or re-policied (restart, backoff, budget,
    /// probe); unchanged servers are not touched. Returns once applied to the supervisor's
    /// state (containers follow asynchronously; watch the events).
    pub async fn reload(&self, specs: Vec<McpServerSpec>) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Reload { specs, done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// One probe verdict; `failure_threshold` consecutive failures make the server unhealthy
    /// and, if the restart policy allows, restart it. Ignored while it is not running.
    pub async fn report_probe(&self, server: &str, healthy: bool) {
        let _ = self
            .tx
            .send(Request::Probe {
                server: server.to_owned(),
                healthy,
            })
            .await;
    }

    /// Every configured server, sorted by name, as of the last change.
    pub fn snapshot(&self) -> Vec<ServerStatus> {
        self.status.borrow().as_ref().clone()
    }

    /// Resolves when the supervisor task has ended (after shutdown).
    pub async fn stopped(&self) {
        let mut rx = self.status.clone();
        while rx.changed().await.is_ok() {}
    }
}

pub struct Supervisor;

impl Supervisor {
    /// Starts the supervisor task (and its Docker event watcher) with default options.
    pub fn spawn(
        agent_id: String,
        specs: Vec<McpServerSpec>,
        docker: Docker,
        events_tx: mpsc::Sender<ServerEvent>,
        shutdown: CancellationToken,
    ) -> SupervisorHandle {
        Self::spawn_with(
            SupervisorOptions::default(),
            DockerApi::new(docker, agent_id),
            specs,
            events_tx,
            shutdown,
        )
    }

    /// As [`Supervisor::spawn`], with options and a [`DockerApi`] (which carries the agent
    /// id); `DockerApi::local(agent_id)` also copes with a daemon whose socket does not exist
    /// yet.
    pub fn spawn_with(
        opts: SupervisorOptions,
        api: DockerApi,
        specs: Vec<McpServerSpec>,
        events_tx: mpsc::Sender<ServerEvent>,
        shutdown: CancellationToken,
    ) -> SupervisorHandle {
        let (req_tx, req_rx) = mpsc::channel(256);
        let (int_tx, int_rx) = mpsc::channel(1024);
        let (status_tx, status_rx) = watch::channel(Arc::new(Vec::new()));
        tokio::spawn(watch_events(
            api.clone(),
            int_tx.clone(),
            opts.clone(),
            shutdown.clone(),
        ));
        let now = Instant::now();
        let task = Task {
            api,
            servers: specs
                .into_iter()
                .map(|s| (s.name.clone(), Server::new(s)))
                .collect(),
            internal_tx: int_tx,
            out: Outbox {
                tx: events_tx,
                backlog: VecDeque::new(),
            },
            status_tx,
            connected: false,
            synced: false,
            unreachable_reported: false,
            generation: 0,
            listing: false,
            need_sync: false,
            next_listing: now,
            opts,
        };
        tokio::spawn(task.run(req_rx, int_rx, shutdown));
        SupervisorHandle {
            tx: req_tx,
            status: status_rx,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `now + d`, saturating far in the future instead of panicking on overflow.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Events for the collector, buffered when the channel is full.
struct Outbox {
    tx: mpsc::Sender<ServerEvent>,
    backlog: VecDeque<ServerEvent>,
}

impl Outbox {
    fn emit(&mut self, server: &str, kind: &str, detail: String) {
        tracing::info!(server, kind, detail = %detail, "mcp server event");
        self.backlog.push_back(ServerEvent {
            ts_ms: now_ms(),
            server: server.to_owned(),
            kind: kind.to_owned(),
            detail,
        });
        if self.backlog.len() > MAX_BACKLOG {
            self.backlog.pop_front();
            tracing::warn!("server event backlog full: dropped the oldest event");
        }
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(ev) = self.backlog.pop_front() {
            match self.tx.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    self.backlog.push_front(ev);
                    break;
                }
                // Nobody listens any more (agent shutting down): nothing to keep.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    break;
                }
            }
        }
    }
}

/// The supervisor task's state. Only [`Task::run`] touches it.
struct Task {
    api: DockerApi,
    opts: SupervisorOptions,
    servers: BTreeMap<String, Server>,
    internal_tx: mpsc::Sender<Internal>,
    out: Outbox,
    status_tx: watch::Sender<Arc<Vec<ServerStatus>>>,
    /// The event stream is up.
    connected: bool,
    /// A listing since the last (re)connect has been applied: actions may run.
    synced: bool,
    unreachable_reported: bool,
    /// Bumped on every connect and loss; listings from another connection are discarded.
    generation: u64,
    listing: bool,
    need_sync: bool,
    next_listing: Instant,
}

impl Task {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut internal: mpsc::Receiver<Internal>,
        shutdown: CancellationToken,
    ) {
        loop {
            let now = Instant::now();
            self.tick(now);
            self.publish();
            self.out.flush();
            let wake = self.next_wake(now);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(msg) = internal.recv() => self.on_internal(msg),
                Some(req) = requests.recv() => self.on_request(req),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // Containers stay as they are: the next agent adopts them.
        for s in self.servers.values_mut() {
            s.resolve(None, &Err("supervisor stopped".into()));
        }
        self.out.flush();
    }

    /// Starts listings and every action that is due.
    fn tick(&mut self, now: Instant) {
        if self.connected && !self.listing && now >= self.next_listing {
            self.start_listing();
        }
        if !(self.connected && self.synced) {
            return;
        }
        let due: Vec<(String, Action)> = self
            .servers
            .iter()
            .filter_map(|(name, s)| next_action(s, now).map(|a| (name.clone(), a)))
            .collect();
        for (name, action) in due {
            self.dispatch(&name, action);
        }
        // Commands whose outcome came about some other way (a stop while the container was
        // being created, a start overtaken by a stop) are answered here.
        for s in self.servers.values_mut() {
            if s.waiters.is_empty() || s.busy {
                continue;
            }
            let name = s.name.clone();
            if !s.running() {
                s.resolve(Some(Want::Stopped), &Ok(format!("server {name} stopped")));
            }
            if !s.should_run() {
                s.resolve(
                    Some(Want::Running),
                    &Err(format!(
                        "server {name} is held down (stopped, exited by policy or given up)"
                    )),
                );
            }
        }
        // Servers that left the config are dropped once their container is gone.
        self.servers.retain(|_, s| {
            let keep = s.spec.is_some() || s.container.is_some() || s.busy;
            if !keep {
                s.resolve(None, &Err("server removed from the configuration".into()));
            }
            keep
        });
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = after(now, Duration::from_secs(3600));
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t.filter(|t| *t > now) {
                wake = wake.min(t);
            }
        };
        if self.connected && !self.listing {
            consider(Some(self.next_listing));
        }
        for s in self.servers.values() {
            consider(s.restart_at);
            consider(s.retry_at);
        }
        if !self.out.backlog.is_empty() {
            consider(Some(now + Duration::from_millis(100)));
        }
        wake
    }

    fn publish(&mut self) {
        let snapshot: Vec<ServerStatus> = self
            .servers
            .values()
            .filter(|s| s.spec.is_some())
            .map(status_of)
            .collect();
        self.status_tx.send_if_modified(|cur| {
            if **cur != snapshot {
                *cur = Arc::new(snapshot);
                true
            } else {
                false
            }
        });
    }

    fn start_listing(&mut self) {
        self.listing = true;
        let after_connect = std::mem::take(&mut self.need_sync);
        let versions = self
            .servers
            .iter()
            .map(|(k, s)| (k.clone(), s.version))
            .collect();
        let (api, tx, generation) = (self.api.clone(), self.internal_tx.clone(), self.generation);
        tokio::spawn(async move {
            let started = Instant::now();
            let result = api.list_managed().await;
            let _ = tx
                .send(Internal::Listed {
                    result,
                    versions,
                    generation,
                    after_connect,
                    took: started.elapsed(),
                })
                .await;
        });
    }

    fn dispatch(&mut self, name: &str, action: Action) {
        let Some(s) = self.servers.get_mut(name) else {
            return;
        };
        s.busy = true;
        // Our own stop, restart or removal kills the process: its `die` is not a crash.
        match &action {
            Action::Stop { reason, .. } => {
                s.expect_exit = s.running();
                if *reason == StopReason::Unhealthy {
                    s.kill_requested = false;
                }
            }
            Action::Restart { .. } | Action::Remove { .. } | Action::Recreate { .. } => {
                s.expect_exit = s.running();
            }
            Action::Create | Action::Start { .. } => {}
        }
        let done = OpDone {
            server: name.to_owned(),
            action,
            epoch: s.epoch,
            removed: None,
            created: None,
            run: None,
        };
        let (api, spec, tx, grace) = (
            self.api.clone(),
            s.spec.clone(),
            self.internal_tx.clone(),
            self.opts.stop_grace,
        );
        tokio::spawn(async move {
            let done = execute(&api, spec.as_ref(), done, grace).await;
            let _ = tx.send(Internal::OpDone(done)).await;
        });
    }

    fn on_internal(&mut self, msg: Internal) {
        let now = Instant::now();
        match msg {
            Internal::Connected => {
                if self.unreachable_reported {
                    self.out.emit(
                        "",
                        kind::DOCKER_RECONNECTED,
                        "docker daemon reachable again; listing and reconciling".into(),
                    );
                }
                self.unreachable_reported = false;
                self.connected = true;
                self.synced = false;
                self.generation += 1;
                self.need_sync = true;
                self.next_listing = now;
                for s in self.servers.values_mut() {
                    s.retry_at = None;
                    s.retry_attempt = 0;
                }
            }
            Internal::Lost(err) => {
                if !self.unreachable_reported {
                    self.out.emit("", kind::DOCKER_UNREACHABLE, err);
                }
                self.unreachable_reported = true;
                self.connected = false;
                self.synced = false;
                self.generation += 1;
                for s in self.servers.values_mut() {
                    s.resolve(None, &Err("docker daemon unreachable".into()));
                }
            }
            Internal::Event(ev, at) => self.on_event(ev, at),
            Internal::OpDone(done) => self.on_op_done(done, now),
            Internal::Listed {
                result,
                versions,
                generation,
                after_connect,
                took,
            } => {
                self.listing = false;
                if generation != self.generation {
                    // Taken on an earlier connection: the current one lists afresh.
                    return;
                }
                match result {
                    Ok(infos) => self.apply_listing(infos, &versions, after_connect, took, now),
                    Err(e) => {
                        tracing::warn!(error = %e, "listing managed containers failed");
                        self.need_sync |= after_connect;
                        self.next_listing = after(now, LISTING_RETRY);
                    }
                }
            }
            Internal::ExtraRemoved {
                info,
                reason,
                result,
            } => match result {
                Ok(()) => self.out.emit(
                    info.server.as_deref().unwrap_or(""),
                    kind::REMOVED,
                    format!("container {} removed: {reason}", short(&info.id)),
                ),
                Err(e) => tracing::warn!(container = %info.id, error = %e,
                    "removing an extra managed container failed; next listing retries"),
            },
        }
    }

    fn on_event(&mut self, ev: ContainerEvent, at: Instant) {
        let Some(s) = ev.server.as_deref().and_then(|n| self.servers.get_mut(n)) else {
            return;
        };
        let out = &mut self.out;
        // Events of containers we do not track (a create whose result has not arrived, an
        // old container being replaced) change nothing: the operation results and the next
        // listing cover them.
        let Some(c) = s.container.as_mut().filter(|c| c.id == ev.id) else {
            return;
        };
        match ev.action.as_str() {
            "start" => {
                let started_ms = (ev.time_nano > 0).then_some(ev.time_nano / 1_000_000);
                if c.running {
                    // The operation result came first; the daemon's time is more exact.
                    c.started_at_ms = started_ms.or(c.started_at_ms);
                    return;
                }
                c.running = true;
                c.never_started = false;
                c.oom_pending = false;
                c.started_at_ms = started_ms.or(Some(now_ms()));
                mark_running(s, at);
                if !s.busy {
                    // Started by someone else: they want it up, so a policy exit or a
                    // give-up no longer holds (an operator stop still does).
                    if s.policy_stay || s.tracker.gave_up() {
                        s.policy_stay = false;
                        s.tracker.reset();
                    }
                    out.emit(
                        &s.name,
                        kind::STARTED,
                        format!("container {} started outside mcpwatch", short(&ev.id)),
                    );
                }
            }
            "die" => {
                if !c.running {
                    return;
                }
                c.running = false;
                let oom = std::mem::take(&mut c.oom_pending);
                s.epoch += 1;
                s.version += 1;
                let code = ev.exit_code.unwrap_or(-1);
                if std::mem::take(&mut s.expect_exit) {
                    s.last_exit_code = Some(code);
                    s.oom_killed = oom;
                } else {
                    observe_exit(s, out, code, oom, at);
                }
            }
            "oom" => c.oom_pending = true,
            "destroy" => {
                s.container = None;
                s.epoch += 1;
                s.version += 1;
                if !s.busy {
                    out.emit(
                        &s.name,
                        kind::REMOVED,
                        format!("container {} removed outside mcpwatch", short(&ev.id)),
                    );
                }
            }
            _ => {}
        }
    }

    fn on_op_done(&mut self, done: OpDone, now: Instant) {
        let Some(s) = self.servers.get_mut(&done.server) else {
            return;
        };
        let out = &mut self.out;
        s.busy = false;
        s.version += 1;
        match done.action {
            Action::Remove { id } => match done.removed {
                Some(Ok(())) => {
                    s.retry_attempt = 0;
                    if s.container.as_ref().is_some_and(|c| c.id == id) {
                        s.container = None;
                    }
                    out.emit(
                        &s.name,
                        kind::REMOVED,
                        format!(
                            "container {} removed: server no longer configured",
                            short(&id)
                        ),
                    );
                }
                Some(Err(e)) => op_failed(s, out, "remove", &e, now),
                None => {}
            },
            Action::Create | Action::Recreate { .. } => {
                if let (Action::Recreate { old }, Some(removed)) = (&done.action, done.removed) {
                    match removed {
                        Ok(()) => {
                            if s.container.as_ref().is_some_and(|c| &c.id == old) {
                                s.container = None;
                            }
                            out.emit(
                                &s.name,
                                kind::REMOVED,
                                format!("container {} removed: configuration changed", short(old)),
                            );
                        }
                        Err(e) => return op_failed(s, out, "remove", &e, now),
                    }
                }
                match done.created {
                    Some(Ok(id)) => {
                        s.retry_attempt = 0;
                        out.emit(
                            &s.name,
                            kind::CREATED,
                            format!("container {} created", short(&id)),
                        );
                        s.container = Some(Observed {
                            id,
                            hash: Some(s.hash.clone()),
                            running: false,
                            never_started: true,
                            started_at_ms: None,
                            oom_pending: false,
                        });
                    }
                    Some(Err(DockerError::Conflict(m))) => {
                        // The name is taken. If by one of ours, the listing adopts it; if by
                        // a container we do not manage, it is left alone and we look again.
                        out.emit(
                            &s.name,
                            kind::ERROR,
                            format!("create: container name in use: {m}"),
                        );
                        s.retry_at = Some(after(now, CONFLICT_RETRY));
                        self.next_listing = now;
                    }
                    Some(Err(e)) if e.is_unreachable() => op_failed(s, out, "create", &e, now),
                    Some(Err(e)) => {
                        out.emit(&s.name, kind::ERROR, format!("create failed: {e}"));
                        s.resolve(Some(Want::Running), &Err(format!("create failed: {e}")));
                        s.restart_requested = false;
                        let d = s.tracker.on_start_failed(now);
                        apply_decision(s, out, d, now);
                    }
                    None => {}
                }
            }
            Action::Start { reason, .. } => {
                if let Some(run) = done.run {
                    after_start(s, out, run, reason, done.epoch, now);
                }
            }
            Action::Restart { .. } => {
                if let Some(run) = done.run {
                    if run.is_err() {
                        s.expect_exit = false;
                    }
                    after_start(s, out, run, StartReason::Command, done.epoch, now);
                }
            }
            Action::Stop { id, reason } => match done.run {
                Some(Ok(())) | Some(Err(DockerError::NotFound(_))) => {
                    s.retry_attempt = 0;
                    if let Some(c) = s.container.as_mut().filter(|c| c.id == id) {
                        if s.epoch == done.epoch {
                            c.running = false;
                            s.expect_exit = false;
                        }
                    }
                    let why = match reason {
                        StopReason::Command => Some("by command"),
                        StopReason::GaveUp => Some("restart budget exhausted"),
                        StopReason::Unhealthy => None,
                    };
                    if let Some(why) = why {
                        out.emit(
                            &s.name,
                            kind::STOPPED,
                            format!("container {} stopped {why}", short(&id)),
                        );
                    }
                    let name = s.name.clone();
                    s.resolve(Some(Want::Stopped), &Ok(format!("server {name} stopped")));
                }
                Some(Err(e)) => {
                    s.expect_exit = false;
                    s.resolve(Some(Want::Stopped), &Err(format!("stop failed: {e}")));
                    op_failed(s, out, "stop", &e, now);
                }
                None => {}
            },
        }
    }

    fn apply_listing(
        &mut self,
        infos: Vec<ContainerInfo>,
        versions: &HashMap<String, u64>,
        after_connect: bool,
        took: Duration,
        now: Instant,
    ) {
        let total = infos.len();
        // Servers being removed still count as known: their own state removes the container.
        let listing = match_listing(infos, |name| self.servers.get(name).map(|s| s.hash.clone()));
        let extras = listing.extras.len();
        for (info, reason) in listing.extras {
            let (api, tx) = (self.api.clone(), self.internal_tx.clone());
            tokio::spawn(async move {
                let result = api.remove(&info.id).await;
                let _ = tx
                    .send(Internal::ExtraRemoved {
                        info,
                        reason,
                        result,
                    })
                    .await;
            });
        }
        let mut keep = listing.keep;
        let mut changed = 0usize;
        for (name, s) in self.servers.iter_mut() {
            let found = keep.remove(name);
            if s.busy || versions.get(name) != Some(&s.version) {
                // Changed while the listing was in flight: the listing may be stale for it.
                continue;
            }
            if apply_found(s, &mut self.out, found, now) {
                changed += 1;
            }
        }
        if after_connect {
            self.synced = true;
        }
        if after_connect || changed > 0 || extras > 0 {
            self.out.emit(
                "",
                kind::RECONCILED,
                format!(
                    "{total} managed containers listed in {} ms; {changed} servers corrected, \
                     {extras} extra containers removed",
                    took.as_millis()
                ),
            );
        }
        self.next_listing = after(now, self.opts.reconcile_every);
    }

    fn on_request(&mut self, req: Request) {
        let now = Instant::now();
        match req {
            Request::Command { action, reply } => self.on_command(action, reply),
            Request::Reload { specs, done } => {
                self.reload(specs, now);
                let _ = done.send(());
            }
            Request::Probe { server, healthy } => {
                let Some(s) = self.servers.get_mut(&server) else {
                    return;
                };
                on_probe(s, &mut self.out, healthy, now);
            }
        }
    }

    fn on_command(
        &mut self,
        action: SupervisorCommand,
        reply: oneshot::Sender<Result<String, String>>,
    ) {
        let name = action.server().to_owned();
        let Some(s) = self.servers.get_mut(&name).filter(|s| s.spec.is_some()) else {
            let _ = reply.send(Err(format!("unknown server {name:?}")));
            return;
        };
        if !(self.connected && self.synced) {
            let _ = reply.send(Err("docker daemon unreachable; try again later".into()));
            return;
        }
        match action {
            SupervisorCommand::Stop { .. } => {
                s.stopped_by_command = true;
                s.restart_at = None;
                s.restart_requested = false;
                s.kill_requested = false;
                if s.running() || s.busy {
                    s.waiters.push((Want::Stopped, reply));
                } else {
                    self.out.emit(
                        &name,
                        kind::STOPPED,
                        "stopped by command (was not running)".into(),
                    );
                    let _ = reply.send(Ok(format!("server {name} stopped")));
                }
            }
            SupervisorCommand::Start { .. } => {
                s.stopped_by_command = false;
                s.policy_stay = false;
                s.tracker.reset();
                if s.running() && !s.busy {
                    let _ = reply.send(Ok(format!("server {name} already running")));
                } else {
                    s.restart_at = None;
                    s.waiters.push((Want::Running, reply));
                }
            }
            SupervisorCommand::Restart { .. } => {
                if s.tracker.gave_up() {
                    s.tracker.reset();
                }
                s.stopped_by_command = false;
                s.policy_stay = false;
                s.restart_requested = true;
                s.kill_requested = false;
                s.restart_at = None;
                s.waiters.push((Want::Running, reply));
            }
        }
    }

    fn reload(&mut self, specs: Vec<McpServerSpec>, now: Instant) {
        let mut new: BTreeMap<String, McpServerSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut changes = 0usize;
        for (name, s) in self.servers.iter_mut() {
            match new.remove(name) {
                None => {
                    if s.spec.take().is_some() {
                        changes += 1;
                        s.restart_at = None;
                        s.restart_requested = false;
                        s.kill_requested = false;
                        s.resolve(None, &Err("server removed from the configuration".into()));
                    }
                }
                Some(spec) if s.spec.as_ref() == Some(&spec) => {}
                Some(spec) => {
                    changes += 1;
                    let hash = spec.config_hash();
                    let policy_changed = s.spec.as_ref().is_none_or(|old| {
                        old.restart != spec.restart
                            || old.backoff != spec.backoff
                            || old.budget != spec.budget
                    });
                    if hash != s.hash || policy_changed {
                        // A config change ends a crash loop and a give-up: fresh start.
                        s.tracker = RestartTracker::new(&spec);
                        if s.running() {
                            s.tracker.on_running(now);
                        }
                        s.policy_stay = false;
                    }
                    if hash != s.hash {
                        s.restart_at = None;
                    }
                    s.hash = hash;
                    s.spec = Some(spec);
                    s.probe_failures = 0;
                }
            }
        }
        for (name, spec) in new {
            changes += 1;
            self.servers.insert(name, Server::new(spec));
        }
        tracing::info!(changes, "supervisor configuration reloaded");
    }
}

/// Runs one action's Docker calls; never panics, every failure is in the result.
async fn execute(
    api: &DockerApi,
    spec: Option<&McpServerSpec>,
    mut done: OpDone,
    grace: Duration,
) -> OpDone {
    match &done.action {
        Action::Create | Action::Recreate { .. } => {
            if let Action::Recreate { old } = &done.action {
                let r = api.remove(old).await;
                let failed = r.is_err();
                done.removed = Some(r);
                if failed {
                    return done;
                }
            }
            // next_action never creates without a spec; nothing to do if it did.
            if let Some(spec) = spec {
                done.created = Some(api.create(spec).await);
            }
        }
        Action::Start { id, .. } => done.run = Some(api.start(id).await),
        Action::Stop { id, .. } => done.run = Some(api.stop(id, grace).await),
        Action::Restart { id } => done.run = Some(api.restart(id, grace).await),
        Action::Remove { id } => done.removed = Some(api.remove(id).await),
    }
    done
}

/// Keeps the event stream connected: negotiate the API version, subscribe, forward events;
/// on any failure report `Lost`, back off and start over. Each success reports `Connected`,
/// which makes the supervisor list and reconcile.
async fn watch_events(
    api: DockerApi,
    tx: mpsc::Sender<Internal>,
    opts: SupervisorOptions,
    shutdown: CancellationToken,
) {
    let mut attempt = 0u32;
    loop {
        if attempt > 0 {
            let delay = crate::uplink::backoff(opts.reconnect_min, opts.reconnect_max, attempt - 1);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        attempt = attempt.saturating_add(1);
        let negotiated = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = api.negotiate() => r,
        };
        if let Err(e) = negotiated {
            if tx.send(Internal::Lost(e.to_string())).await.is_err() {
                return;
            }
            continue;
        }
        let mut stream = api.events();
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(SUBSCRIBE_SETTLE, stream.next()) => r,
        };
        let early = match first {
            Err(_) => None,
            Ok(Some(Ok(ev))) => Some(ev),
            Ok(Some(Err(e))) => {
                if tx.send(Internal::Lost(e.to_string())).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {
                if tx
                    .send(Internal::Lost("event stream closed".into()))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        if tx.send(Internal::Connected).await.is_err() {
            return;
        }
        if let Some(ev) = early {
            if tx.send(Internal::Event(ev, Instant::now())).await.is_err() {
                return;
            }
        }
        // Connected: the next failure reconnects at once, repeated ones back off.
        attempt = 0;
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            let msg = match item {
                Some(Ok(ev)) => Internal::Event(ev, Instant::now()),
                Some(Err(e)) => Internal::Lost(e.to_string()),
                None => Internal::Lost("event stream ended".into()),
            };
            let lost = matches!(msg, Internal::Lost(_));
            if tx.send(msg).await.is_err() {
                return;
            }
            if lost {
                break;
            }
        }
    }
}

fn status_of(s: &Server) -> ServerStatus {
    let running = s.running();
    let phase = if s.tracker.gave_up() {
        ServerPhase::GaveUp
    } else if s.stopped_by_command {
        ServerPhase::Stopped
    } else if running {
        ServerPhase::Running
    } else if s.policy_stay {
        ServerPhase::Exited
    } else if s.restart_at.is_some() {
        ServerPhase::BackingOff
    } else {
        ServerPhase::Pending
    };
    ServerStatus {
        server: s.name.clone(),
        container_id: s.container.as_ref().map(|c| c.id.clone()),
        phase,
        running,
        unhealthy: s.unhealthy,
        restarts_total: s.restarts_total,
        started_at_ms: s
            .container
            .as_ref()
            .filter(|c| c.running)
            .and_then(|c| c.started_at_ms),
        last_exit_code: s.last_exit_code,
        oom_killed: s.oom_killed,
        crashloop_attempt: s.tracker.attempt(),
        next_delay: s.tracker.next_delay(),
        gave_up: s.tracker.gave_up(),
        stopped_by_command: s.stopped_by_command,
    }
}

/// Bookkeeping when the current container is seen running (event, operation or listing).
fn mark_running(s: &mut Server, at: Instant) {
    s.epoch += 1;
    s.version += 1;
    s.expect_exit = false;
    s.restart_at = None;
    s.probe_failures = 0;
    s.unhealthy = false;
    s.tracker.on_running(at);
}

/// An exit we did not cause: record it and let the restart policy decide.
fn observe_exit(s: &mut Server, out: &mut Outbox, code: i64, oom: bool, at: Instant) {
    s.last_exit_code = Some(code);
    s.oom_killed = oom;
    s.unhealthy = false;
    s.probe_failures = 0;
    s.kill_requested = false;
    let oom_note = if oom { " (OOM-killed)" } else { "" };
    out.emit(
        &s.name,
        kind::EXITED,
        format!("exited with code {code}{oom_note}"),
    );
    let d = s.tracker.on_exit(at, code, oom);
    apply_decision(s, out, d, at);
}

fn apply_decision(s: &mut Server, out: &mut Outbox, d: Decision, at: Instant) {
    match d {
        Decision::RestartAfter(delay) => {
            s.restart_at = Some(after(at, delay));
            out.emit(
                &s.name,
                kind::RESTART_SCHEDULED,
                format!(
                    "attempt {} in {} ms",
                    s.tracker.attempt(),
                    delay.as_millis()
                ),
            );
        }
        Decision::GaveUp => {
            s.restart_at = None;
            s.kill_requested = false;
            let spec = s.spec.as_ref();
            out.emit(
                &s.name,
                kind::GAVE_UP,
                format!(
                    "more than {} restarts within {}; send start to try again",
                    spec.map_or(0, |p| p.budget.max_restarts),
                    spec.map_or_else(String::new, |p| p.budget.window.to_string()),
                ),
            );
        }
        Decision::Stay => {
            s.policy_stay = true;
            s.restart_at = None;
        }
    }
}

/// The result of a start (or restart) call.
fn after_start(
    s: &mut Server,
    out: &mut Outbox,
    result: Result<(), DockerError>,
    reason: StartReason,
    epoch: u64,
    now: Instant,
) {
    match result {
        Ok(()) => {
            if s.epoch == epoch {
                // No start/die event has arrived since we asked: running as of now.
                if let Some(c) = s.container.as_mut() {
                    c.running = true;
                    c.never_started = false;
                    c.oom_pending = false;
                    c.started_at_ms = Some(now_ms());
                }
                mark_running(s, now);
            }
            let counted = reason == StartReason::Backoff || s.restart_requested;
            s.restart_requested = false;
            s.retry_attempt = 0;
            let id = s
                .container
                .as_ref()
                .map(|c| short(&c.id).to_owned())
                .unwrap_or_default();
            if counted {
                s.restarts_total += 1;
                out.emit(
                    &s.name,
                    kind::RESTARTED,
                    format!(
                        "container {id} restarted (restart {}, crash-loop attempt {})",
                        s.restarts_total,
                        s.tracker.attempt()
                    ),
                );
            } else {
                out.emit(&s.name, kind::STARTED, format!("container {id} started"));
            }
            let name = s.name.clone();
            s.resolve(Some(Want::Running), &Ok(format!("server {name} running")));
        }
        Err(DockerError::NotFound(_)) => {
            // Gone under us: the next look creates a new one (waiters keep waiting).
            s.container = None;
        }
        Err(e) if e.is_unreachable() => {
            s.resolve(Some(Want::Running), &Err(format!("start failed: {e}")));
            op_failed(s, out, "start", &e, now);
        }
        Err(e) => {
            out.emit(&s.name, kind::ERROR, format!("start failed: {e}"));
            s.resolve(Some(Want::Running), &Err(format!("start failed: {e}")));
            s.restart_requested = false;
            let d = s.tracker.on_start_failed(now);
            apply_decision(s, out, d, now);
        }
    }
}

/// A Docker call failed for a reason that is not the server's fault: retry with backoff.
fn op_failed(s: &mut Server, out: &mut Outbox, op: &str, e: &DockerError, now: Instant) {
    let delay = crate::uplink::backoff(
        Duration::from_millis(500),
        Duration::from_secs(30),
        s.retry_attempt,
    );
    s.retry_attempt = s.retry_attempt.saturating_add(1);
    s.retry_at = Some(after(now, delay));
    if e.is_unreachable() {
        // The watcher reports the daemon as unreachable once; no event per server.
        tracing::warn!(server = %s.name, op, error = %e, "docker call failed; will retry");
    } else {
        out.emit(&s.name, kind::ERROR, format!("{op} failed: {e}"));
    }
}

/// Applies what a listing found for one server; true when that corrected our view.
fn apply_found(
    s: &mut Server,
    out: &mut Outbox,
    found: Option<ContainerInfo>,
    now: Instant,
) -> bool {
    let same = matches!((&found, &s.container), (Some(i), Some(c)) if i.id == c.id);
    match (found, same) {
        (None, _) => {
            let Some(c) = s.container.take() else {
                return false;
            };
            s.version += 1;
            s.epoch += 1;
            out.emit(
                &s.name,
                kind::REMOVED,
                format!("container {} disappeared", short(&c.id)),
            );
            true
        }
        (Some(info), true) => {
            let Some(c) = s.container.as_mut() else {
                return false;
            };
            c.hash = info.config_hash.clone();
            match (c.running, info.running) {
                (true, false) => {
                    // A missed `die`.
                    c.running = false;
                    s.epoch += 1;
                    s.version += 1;
                    if std::mem::take(&mut s.expect_exit) {
                        s.last_exit_code = Some(info.exit_code);
                    } else {
                        observe_exit(s, out, info.exit_code, info.oom_killed, now);
                    }
                    true
                }
                (false, true) => {
                    // A missed `start`.
                    c.running = true;
                    c.never_started = false;
                    c.started_at_ms = info.started_at_ms;
                    mark_running(s, now);
                    true
                }
                _ => {
                    c.started_at_ms = info.started_at_ms.or(c.started_at_ms);
                    false
                }
            }
        }
        (Some(info), false) => {
            // Adopt: after an agent restart, or a container that replaced ours.
            s.container = Some(Observed::from_info(&info));
            s.epoch += 1;
            s.version += 1;
            let hash_ok = info.config_hash.as_deref() == Some(s.hash.as_str());
            let note = if hash_ok {
                ""
            } else {
                "; configuration changed, will be recreated"
            };
            let id = short(&info.id).to_owned();
            if info.running {
                let up_ms = info
                    .started_at_ms
                    .map_or(0, |t| now_ms().saturating_sub(t).max(0));
                let since = now
                    .checked_sub(Duration::from_millis(up_ms.unsigned_abs()))
                    .unwrap_or(now);
                s.tracker.on_running(since);
                s.unhealthy = false;
                s.probe_failures = 0;
                out.emit(
                    &s.name,
                    kind::ADOPTED,
                    format!(
                        "running container {id} adopted, up {} s{note}",
                        up_ms / 1000
                    ),
                );
            } else if info.never_started {
                out.emit(
                    &s.name,
                    kind::ADOPTED,
                    format!("created container {id} adopted{note}"),
                );
            } else {
                out.emit(
                    &s.name,
                    kind::ADOPTED,
                    format!("{} container {id} adopted{note}", info.status),
                );
                if hash_ok {
                    observe_exit(s, out, info.exit_code, info.oom_killed, now);
                }
            }
            true
        }
    }
}

fn on_probe(s: &mut Server, out: &mut Outbox, healthy: bool, now: Instant) {
    let Some(threshold) = s.spec.as_ref().map(|p| p.probe.failure_threshold) else {
        return;
    };
    // Verdicts about a container that is down or being replaced say nothing new.
    if !s.running() || s.busy || s.kill_requested {
        return;
    }
    if healthy {
        s.probe_failures = 0;
        s.tracker.on_healthy(now);
        if std::mem::take(&mut s.unhealthy) {
            out.emit(&s.name, kind::HEALTHY, "probe succeeded again".into());
        }
        return;
    }
    s.probe_failures = s.probe_failures.saturating_add(1);
    if s.probe_failures < threshold || s.unhealthy {
        return;
    }
    s.unhealthy = true;
    out.emit(
        &s.name,
        kind::UNHEALTHY,
        format!("{} consecutive probe failures", s.probe_failures),
    );
    match s.tracker.on_unhealthy(now) {
        // `never`: flagged, but left running.
        Decision::Stay => {}
        d @ Decision::RestartAfter(_) => {
            s.kill_requested = true;
            apply_decision(s, out, d, now);
        }
        d @ Decision::GaveUp => apply_decision(s, out, d, now),
    }
}
