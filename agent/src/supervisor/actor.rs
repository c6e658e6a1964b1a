//! The supervisor actor: one task that owns every managed server's state, takes its inputs
//! in order (see the `supervisor` module documentation) and after each one asks
//! [`next_action`] what every server needs next; and [`Supervisor`], which starts it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::command::SupervisorCommand;
use super::docker::{short_id, ContainerEvent, ContainerInfo, DockerApi};
use super::docker_watcher::watch_events;
use super::event::{kind, EventBuffer, ServerEvent};
use super::handle::{Request, SupervisorHandle, SupervisorOptions};
use super::internal_message::{Internal, OpDone};
use super::operation::{apply_op_done, execute, Relist};
use super::reconcile::{after, match_listing, next_action, Action, Server, StopReason, Want};
use super::restart_tracker::RestartTracker;
use super::spec::McpServerSpec;
use super::status::{status_of, ServerStatus};
use super::transitions::{apply_found, on_container_event, on_probe};

/// A listing that failed is retried after this.
const LISTING_RETRY: Duration = Duration::from_secs(1);

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
        let actor = Actor {
            api,
            servers: specs
                .into_iter()
                .map(|s| (s.name.clone(), Server::new(s)))
                .collect(),
            internal_tx: int_tx,
            events: EventBuffer::new(events_tx),
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
        tokio::spawn(actor.run(req_rx, int_rx, shutdown));
        SupervisorHandle::new(req_tx, status_rx)
    }
}

/// The supervisor task's state. Only [`Actor::run`] touches it.
struct Actor {
    api: DockerApi,
    opts: SupervisorOptions,
    servers: BTreeMap<String, Server>,
    internal_tx: mpsc::Sender<Internal>,
    events: EventBuffer,
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

impl Actor {
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
            self.events.flush();
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
        self.events.flush();
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
        if self.events.has_backlog() {
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
                    self.events.emit(
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
                    self.events.emit("", kind::DOCKER_UNREACHABLE, err);
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
                Ok(()) => self.events.emit(
                    info.server.as_deref().unwrap_or(""),
                    kind::REMOVED,
                    format!("container {} removed: {reason}", short_id(&info.id)),
                ),
                Err(e) => tracing::warn!(container = %info.id, error = %e,
                    "removing an extra managed container failed; next listing retries"),
            },
        }
    }

    fn on_event(&mut self, ev: ContainerEvent, at: Instant) {
        if let Some(s) = ev.server.as_deref().and_then(|n| self.servers.get_mut(n)) {
            on_container_event(s, &mut self.events, ev, at);
        }
    }

    fn on_op_done(&mut self, done: OpDone, now: Instant) {
        let Some(s) = self.servers.get_mut(&done.server) else {
            return;
        };
        if apply_op_done(s, &mut self.events, done, now) == Relist::Now {
            self.next_listing = now;
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
            if apply_found(s, &mut self.events, found, now) {
                changed += 1;
            }
        }
        if after_connect {
            self.synced = true;
        }
        if after_connect || changed > 0 || extras > 0 {
            self.events.emit(
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
                on_probe(s, &mut self.events, healthy, now);
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
                    self.events.emit(
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
