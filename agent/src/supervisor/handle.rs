//! How the rest of the agent talks to the supervisor: [`SupervisorHandle`] (commands,
//! reloads, probe verdicts, status snapshots) and the [`SupervisorOptions`] it is started with.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::command::SupervisorCommand;
use super::spec::McpServerSpec;
use super::status::ServerStatus;

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

/// What a [`SupervisorHandle`] asks of the supervisor actor.
pub(super) enum Request {
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

/// Cheap to clone; every clone talks to the same supervisor task.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<Arc<Vec<ServerStatus>>>,
}

impl SupervisorHandle {
    /// Built by `Supervisor::spawn_with` around the actor's channels.
    pub(super) fn new(
        tx: mpsc::Sender<Request>,
        status: watch::Receiver<Arc<Vec<ServerStatus>>>,
    ) -> SupervisorHandle {
        SupervisorHandle { tx, status }
    }

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

    /// Every change of the published statuses, for tasks that follow a server's container
    /// (the gateway re-attaches when it changes).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<ServerStatus>>> {
        self.status.clone()
    }

    /// Resolves when the supervisor task has ended (after shutdown).
    pub async fn stopped(&self) {
        let mut rx = self.status.clone();
        while rx.changed().await.is_ok() {}
    }
}
