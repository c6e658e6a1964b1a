//! How one server's state reacts to what is observed about its container: Docker events,
//! exits, what a listing found, probe verdicts; and how a restart decision is applied.

use std::time::Duration;

use mcpwatch_common::time::now_ms;
use tokio::time::Instant;

use super::docker::{short_id, ContainerEvent, ContainerInfo};
use super::event::{kind, EventBuffer};
use super::reconcile::{after, Observed, Server};
use super::restart_tracker::Decision;

/// A Docker event about the container `s` has (or had).
pub(super) fn on_container_event(
    s: &mut Server,
    out: &mut EventBuffer,
    ev: ContainerEvent,
    at: Instant,
) {
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
                    format!("container {} started outside mcpwatch", short_id(&ev.id)),
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
                    format!("container {} removed outside mcpwatch", short_id(&ev.id)),
                );
            }
        }
        _ => {}
    }
}

/// Bookkeeping when the current container is seen running (event, operation or listing).
pub(super) fn mark_running(s: &mut Server, at: Instant) {
    s.epoch += 1;
    s.version += 1;
    s.expect_exit = false;
    s.restart_at = None;
    s.probe_failures = 0;
    s.unhealthy = false;
    s.tracker.on_running(at);
}

/// An exit we did not cause: record it and let the restart policy decide.
fn observe_exit(s: &mut Server, out: &mut EventBuffer, code: i64, oom: bool, at: Instant) {
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

pub(super) fn apply_decision(s: &mut Server, out: &mut EventBuffer, d: Decision, at: Instant) {
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

/// Applies what a listing found for one server; true when that corrected our view.
pub(super) fn apply_found(
    s: &mut Server,
    out: &mut EventBuffer,
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
                format!("container {} disappeared", short_id(&c.id)),
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
            adopt(s, out, &info, now);
            true
        }
    }
}

/// Takes over a container the listing found: after an agent restart, or one that replaced
/// ours.
fn adopt(s: &mut Server, out: &mut EventBuffer, info: &ContainerInfo, now: Instant) {
    s.container = Some(Observed::from_info(info));
    s.epoch += 1;
    s.version += 1;
    let hash_ok = info.config_hash.as_deref() == Some(s.hash.as_str());
    let note = if hash_ok {
        ""
    } else {
        "; configuration changed, will be recreated"
    };
    let id = short_id(&info.id).to_owned();
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
}

/// One probe verdict.
pub(super) fn on_probe(s: &mut Server, out: &mut EventBuffer, healthy: bool, now: Instant) {
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
