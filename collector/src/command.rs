//! Operator commands down an agent's stream: the router maps an agent id to its live session,
//! numbers each command, and resolves the caller's future with the agent's `CommandResult`,
//! or with a clear error when the agent is offline, goes away, or does not answer in time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpwatch_common::wire::{Command, CommandAction, CommandResult};
use tokio::sync::{mpsc, oneshot};

/// Commands queued per session before `send` waits; operators issue a handful at a time.
const SESSION_QUEUE: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("agent {0} is not connected")]
    AgentOffline(String),
    #[error("agent {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("agent {0} disconnected before answering")]
    Disconnected(String),
}

/// A command on its way to a session, with where its answer goes.
#[derive(Debug)]
pub struct PendingCommand {
    pub command: Command,
    pub reply: oneshot::Sender<CommandResult>,
}

#[derive(Debug)]
struct Link {
    conn: u64,
    tx: mpsc::Sender<PendingCommand>,
}

/// Shared by the ingest sessions (which register) and the API (which sends).
#[derive(Debug, Clone, Default)]
pub struct CommandRouter {
    links: Arc<Mutex<HashMap<String, Link>>>,
    next_id: Arc<AtomicU64>,
}

impl CommandRouter {
    pub fn new() -> CommandRouter {
        CommandRouter::default()
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        // A panic while holding this lock cannot leave a half-updated map entry (inserts and
        // removes are single calls), so the data is still good.
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `agent_id` on connection `conn` takes over command delivery; the newest
    /// session wins (an old one may linger until the collector notices it is gone).
    pub fn register(&self, agent_id: &str, conn: u64) -> mpsc::Receiver<PendingCommand> {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        self.links().insert(agent_id.to_owned(), Link { conn, tx });
        rx
    }

    /// Removes the link if it still belongs to `conn`.
    pub fn unregister(&self, agent_id: &str, conn: u64) {
        let mut links = self.links();
        if links.get(agent_id).is_some_and(|l| l.conn == conn) {
            links.remove(agent_id);
        }
    }

    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.links().contains_key(agent_id)
    }

    /// Sends `action` to the agent and waits for its result, at most `timeout` in all.
    pub async fn send(
        &self,
        agent_id: &str,
        action: CommandAction,
        timeout: Duration,
    ) -> Result<CommandResult, CommandError> {
        let tx = self
            .links()
            .get(agent_id)
            .map(|l| l.tx.clone())
            .ok_or_else(|| CommandError::AgentOffline(agent_id.to_owned()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, answer) = oneshot::channel();
        let pending = PendingCommand {
            command: Command { id, action },
            reply,
        };
        let exchange = async {
            tx.send(pending)
                .await
                .map_err(|_| CommandError::Disconnected(agent_id.to_owned()))?;
            answer
                .await
                .map_err(|_| CommandError::Disconnected(agent_id.to_owned()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CommandError::Timeout(agent_id.to_owned(), timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart() -> CommandAction {
        CommandAction::RestartServer { server: "s".into() }
    }

    #[tokio::test]
    async fn offline_agent_is_reported_at_once() {
        let r = CommandRouter::new();
        let err = r.send("a", restart(), Duration::from_secs(5)).await;
        assert_eq!(err, Err(CommandError::AgentOffline("a".into())));
    }

    #[tokio::test]
    async fn result_comes_back_and_silence_times_out() {
        tokio::time::pause();
        let r = CommandRouter::new();
        let mut rx = r.register("a", 1);
        let answering = tokio::spawn(async move {
            let p = rx.recv().await.expect("command");
            let _ = p.reply.send(CommandResult {
                id: p.command.id,
                ok: true,
                message: "done".into(),
            });
            rx
        });
        let res = r
            .send("a", restart(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(res.ok && res.message == "done");
        let _rx = answering.await.unwrap();
        let err = r.send("a", restart(), Duration::from_secs(5)).await;
        assert_eq!(
            err,
            Err(CommandError::Timeout("a".into(), Duration::from_secs(5)))
        );
    }

    #[tokio::test]
    async fn a_closed_session_is_a_disconnect_and_old_sessions_do_not_unregister_new_ones() {
        let r = CommandRouter::new();
        let old = r.register("a", 1);
        let new = r.register("a", 2);
        drop(old);
        r.unregister("a", 1);
        assert!(r.is_connected("a"), "old session removed the new link");
        drop(new);
        let err = r.send("a", restart(), Duration::from_secs(5)).await;
        assert_eq!(err, Err(CommandError::Disconnected("a".into())));
        r.unregister("a", 2);
        assert!(!r.is_connected("a"));
    }
}
