//! Docker operations of the supervisor: running one [`Action`]'s calls ([`execute`], in its
//! own task) and applying the outcome to the server's state ([`apply_op_done`]), retrying
//! with backoff when Docker, not the server, failed.

use std::time::Duration;

use mcpwatch_common::time::now_ms;
use tokio::time::Instant;

use super::docker::{short_id, DockerApi, DockerError};
use super::docker_watcher::retry_backoff;
use super::event::{kind, EventBuffer};
use super::internal_message::OpDone;
use super::reconcile::{after, Action, Observed, Server, StartReason, StopReason, Want};
use super::spec::McpServerSpec;
use super::transitions::{apply_decision, mark_running};

/// A container name held by a container we do not manage: look again after this.
const CONFLICT_RETRY: Duration = Duration::from_secs(10);

/// Whether an operation's outcome calls for a container listing right away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Relist {
    Now,
    Later,
}

/// Applies the outcome of one operation to its server.
pub(super) fn apply_op_done(
    s: &mut Server,
    out: &mut EventBuffer,
    done: OpDone,
    now: Instant,
) -> Relist {
    s.busy = false;
    s.version += 1;
    let OpDone {
        action,
        epoch,
        removed,
        created,
        run,
        ..
    } = done;
    match action {
        Action::Remove { id } => {
            if let Some(removed) = removed {
                after_remove(s, out, &id, removed, now);
            }
        }
        Action::Create | Action::Recreate { .. } => {
            if let (Action::Recreate { old }, Some(removed)) = (&action, removed) {
                if !after_replaced_removed(s, out, old, removed, now) {
                    return Relist::Later;
                }
            }
            if let Some(created) = created {
                return after_create(s, out, created, now);
            }
        }
        Action::Start { reason, .. } => {
            if let Some(run) = run {
                after_start(s, out, run, reason, epoch, now);
            }
        }
        Action::Restart { .. } => {
            if let Some(run) = run {
                if run.is_err() {
                    s.expect_exit = false;
                }
                after_start(s, out, run, StartReason::Command, epoch, now);
            }
        }
        Action::Stop { id, reason } => {
            if let Some(run) = run {
                after_stop(s, out, &id, reason, run, epoch, now);
            }
        }
    }
    Relist::Later
}

/// The result of removing the container of a server that left the configuration.
fn after_remove(
    s: &mut Server,
    out: &mut EventBuffer,
    id: &str,
    removed: Result<(), DockerError>,
    now: Instant,
) {
    match removed {
        Ok(()) => {
            s.retry_attempt = 0;
            if s.container.as_ref().is_some_and(|c| c.id == id) {
                s.container = None;
            }
            out.emit(
                &s.name,
                kind::REMOVED,
                format!(
                    "container {} removed: server no longer configured",
                    short_id(id)
                ),
            );
        }
        Err(e) => op_failed(s, out, "remove", &e, now),
    }
}

/// The result of removing the old container of a recreate; false when the create must not
/// follow.
fn after_replaced_removed(
    s: &mut Server,
    out: &mut EventBuffer,
    old: &str,
    removed: Result<(), DockerError>,
    now: Instant,
) -> bool {
    match removed {
        Ok(()) => {
            if s.container.as_ref().is_some_and(|c| c.id == old) {
                s.container = None;
            }
            out.emit(
                &s.name,
                kind::REMOVED,
                format!("container {} removed: configuration changed", short_id(old)),
            );
            true
        }
        Err(e) => {
            op_failed(s, out, "remove", &e, now);
            false
        }
    }
}

/// The result of a create call.
fn after_create(
    s: &mut Server,
    out: &mut EventBuffer,
    created: Result<String, DockerError>,
    now: Instant,
) -> Relist {
    match created {
        Ok(id) => {
            s.retry_attempt = 0;
            out.emit(
                &s.name,
                kind::CREATED,
                format!("container {} created", short_id(&id)),
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
        Err(DockerError::Conflict(m)) => {
            // The name is taken. If by one of ours, the listing adopts it; if by
            // a container we do not manage, it is left alone and we look again.
            out.emit(
                &s.name,
                kind::ERROR,
                format!("create: container name in use: {m}"),
            );
            s.retry_at = Some(after(now, CONFLICT_RETRY));
            return Relist::Now;
        }
        Err(e) if e.is_unreachable() => op_failed(s, out, "create", &e, now),
        Err(e) => {
            out.emit(&s.name, kind::ERROR, format!("create failed: {e}"));
            s.resolve(Some(Want::Running), &Err(format!("create failed: {e}")));
            s.restart_requested = false;
            let d = s.tracker.on_start_failed(now);
            apply_decision(s, out, d, now);
        }
    }
    Relist::Later
}

/// The result of a stop call.
fn after_stop(
    s: &mut Server,
    out: &mut EventBuffer,
    id: &str,
    reason: StopReason,
    run: Result<(), DockerError>,
    epoch: u64,
    now: Instant,
) {
    match run {
        Ok(()) | Err(DockerError::NotFound(_)) => {
            s.retry_attempt = 0;
            if let Some(c) = s.container.as_mut().filter(|c| c.id == id) {
                if s.epoch == epoch {
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
                    format!("container {} stopped {why}", short_id(id)),
                );
            }
            let name = s.name.clone();
            s.resolve(Some(Want::Stopped), &Ok(format!("server {name} stopped")));
        }
        Err(e) => {
            s.expect_exit = false;
            s.resolve(Some(Want::Stopped), &Err(format!("stop failed: {e}")));
            op_failed(s, out, "stop", &e, now);
        }
    }
}

/// The result of a start (or restart) call.
fn after_start(
    s: &mut Server,
    out: &mut EventBuffer,
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
                .map(|c| short_id(&c.id).to_owned())
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
fn op_failed(s: &mut Server, out: &mut EventBuffer, op: &str, e: &DockerError, now: Instant) {
    let delay =
        retry_backoff(Duration::from_millis(500), Duration::from_secs(30)).delay(s.retry_attempt);
    s.retry_attempt = s.retry_attempt.saturating_add(1);
    s.retry_at = Some(after(now, delay));
    if e.is_unreachable() {
        // The watcher reports the daemon as unreachable once; no event per server.
        tracing::warn!(server = %s.name, op, error = %e, "docker call failed; will retry");
    } else {
        out.emit(&s.name, kind::ERROR, format!("{op} failed: {e}"));
    }
}

/// Runs one action's Docker calls; never panics, every failure is in the result.
pub(super) async fn execute(
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
