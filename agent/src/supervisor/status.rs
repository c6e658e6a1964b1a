//! Where each supervised server stands, as published to the rest of the agent (metrics,
//! probe scheduling, status pages).

use std::time::Duration;

use super::reconcile::Server;

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

/// The published view of one server.
pub(super) fn status_of(s: &Server) -> ServerStatus {
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
