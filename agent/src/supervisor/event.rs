//! What the supervisor reports: [`ServerEvent`]s (kinds in [`kind`]) and the buffer that
//! holds them while the (bounded) events channel is full.

use std::collections::VecDeque;

use mcpwatch_common::time::now_ms;
use mcpwatch_common::wire::Event;
use tokio::sync::mpsc;

/// Events not yet accepted by the (bounded) events channel wait here, oldest dropped first
/// beyond this, so a stalled consumer never stalls supervision.
const MAX_BACKLOG: usize = 4096;

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

/// Events for the collector, buffered when the channel is full so that a slow consumer
/// never stalls supervision.
pub(super) struct EventBuffer {
    tx: mpsc::Sender<ServerEvent>,
    backlog: VecDeque<ServerEvent>,
}

impl EventBuffer {
    pub(super) fn new(tx: mpsc::Sender<ServerEvent>) -> EventBuffer {
        EventBuffer {
            tx,
            backlog: VecDeque::new(),
        }
    }

    pub(super) fn emit(&mut self, server: &str, kind: &str, detail: String) {
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

    pub(super) fn flush(&mut self) {
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

    /// Events still waiting for room in the channel.
    pub(super) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }
}
