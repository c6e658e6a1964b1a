//! Desired versus actual, as pure functions over one server's state: what the supervisor
//! believes about a server ([`Server`]), the next Docker action that moves it towards the
//! spec ([`next_action`]), and how a full container listing maps onto servers
//! ([`match_listing`]): which container each server keeps or adopts, and which managed
//! containers are extra (duplicates, servers no longer configured) and must go.
//!
//! Level-triggered on purpose: after every event, operation result, timer or listing the
//! supervisor simply asks `next_action` again, so a lost event or a failed call is repaired
//! by the next look rather than by bookkeeping of what was meant to happen.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::docker::ContainerInfo;
use super::restart_tracker::RestartTracker;
use super::spec::McpServerSpec;

/// A reply to an operator command, sent once its effect is visible.
pub(super) type Reply = oneshot::Sender<Result<String, String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    Running,
    Stopped,
}

/// The container a server currently has, as last observed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Observed {
    pub id: String,
    pub hash: Option<String>,
    pub running: bool,
    pub never_started: bool,
    pub started_at_ms: Option<i64>,
    /// An `oom` event came since the last start; the next `die` was an OOM kill.
    pub oom_pending: bool,
}

impl Observed {
    pub fn from_info(info: &ContainerInfo) -> Observed {
        Observed {
            id: info.id.clone(),
            hash: info.config_hash.clone(),
            running: info.running,
            never_started: info.never_started,
            started_at_ms: info.started_at_ms,
            oom_pending: false,
        }
    }
}

/// Everything the supervisor knows and intends about one server.
pub(super) struct Server {
    pub name: String,
    /// `None` once the server left the config: its container is removed, then the entry.
    pub spec: Option<McpServerSpec>,
    pub hash: String,
    pub tracker: RestartTracker,
    pub container: Option<Observed>,
    /// A Docker operation for this server is in flight (at most one at a time).
    pub busy: bool,
    /// Operator `stop`: stays down until `start` or `restart`.
    pub stopped_by_command: bool,
    /// Exited and the restart policy says to leave it (never, or on-failure with exit 0).
    pub policy_stay: bool,
    /// When the crash-loop delay ends and the server is started again.
    pub restart_at: Option<Instant>,
    /// Docker was unreachable or refused an operation: do not retry before this.
    pub retry_at: Option<Instant>,
    pub retry_attempt: u32,
    /// Operator `restart`: restart now regardless of a pending delay.
    pub restart_requested: bool,
    /// Unhealthy with a restart decided: stop the hung container now, start at `restart_at`.
    pub kill_requested: bool,
    /// We are stopping the container ourselves: its next `die` is not a crash.
    pub expect_exit: bool,
    pub probe_failures: u32,
    pub unhealthy: bool,
    pub restarts_total: u64,
    pub last_exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Bumped on every observed change, so a listing taken before it is not applied.
    pub version: u64,
    /// Bumped on start/die events, so an operation result older than them does not
    /// overwrite what the events said.
    pub epoch: u64,
    pub waiters: Vec<(Want, Reply)>,
}

impl Server {
    pub fn new(spec: McpServerSpec) -> Server {
        Server {
            name: spec.name.clone(),
            hash: spec.config_hash(),
            tracker: RestartTracker::new(&spec),
            spec: Some(spec),
            container: None,
            busy: false,
            stopped_by_command: false,
            policy_stay: false,
            restart_at: None,
            retry_at: None,
            retry_attempt: 0,
            restart_requested: false,
            kill_requested: false,
            expect_exit: false,
            probe_failures: 0,
            unhealthy: false,
            restarts_total: 0,
            last_exit_code: None,
            oom_killed: false,
            version: 0,
            epoch: 0,
            waiters: Vec::new(),
        }
    }

    /// Whether the server is meant to be up (ignoring a pending crash-loop delay).
    pub fn should_run(&self) -> bool {
        self.spec.is_some()
            && !self.stopped_by_command
            && !self.policy_stay
            && !self.tracker.gave_up()
    }

    pub fn running(&self) -> bool {
        self.container.as_ref().is_some_and(|c| c.running)
    }

    /// Answers every waiter for `want` (all of them when `want` is `None`).
    pub fn resolve(&mut self, want: Option<Want>, result: &Result<String, String>) {
        let (matching, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(w, _)| want.is_none_or(|want| *w == want));
        self.waiters = rest;
        for (_, reply) in matching {
            // The caller may have given up waiting; nothing to do then.
            let _ = reply.send(result.clone());
        }
    }
}

/// Why a container is started (decides the event and whether it counts as a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StartReason {
    /// First start of a new or never-started container.
    Initial,
    /// The crash-loop delay ended.
    Backoff,
    /// Operator `start` or `restart`.
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopReason {
    Command,
    Unhealthy,
    GaveUp,
}

/// One Docker operation for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Create the container (the next look starts it: a start is only issued once the
    /// container's id is known, so none of its events can be missed).
    Create,
    /// Remove `old` (config changed), then create.
    Recreate {
        old: String,
    },
    Start {
        id: String,
        reason: StartReason,
    },
    Stop {
        id: String,
        reason: StopReason,
    },
    /// Operator restart of a running container (stop + start in one daemon call).
    Restart {
        id: String,
    },
    /// The server left the config.
    Remove {
        id: String,
    },
}

/// The next operation that moves `s` towards its spec, or `None` when it is where it should
/// be, waiting (delay, retry, operation in flight) or beyond our say (given up, stopped).
pub(super) fn next_action(s: &Server, now: Instant) -> Option<Action> {
    if s.busy || s.retry_at.is_some_and(|t| t > now) {
        return None;
    }
    let Some(c) = &s.container else {
        let due = s.restart_requested || s.restart_at.is_none_or(|t| t <= now);
        return (s.should_run() && due).then_some(Action::Create);
    };
    if s.spec.is_none() {
        return Some(Action::Remove { id: c.id.clone() });
    }
    if c.hash.as_deref() != Some(s.hash.as_str()) {
        // Recreating applies a config change at once, even mid-delay: the change reset the
        // crash loop (a fixed config deserves a fresh start). A stopped server is recreated
        // too, and stays stopped.
        return Some(Action::Recreate { old: c.id.clone() });
    }
    if c.running {
        let id = c.id.clone();
        return if !s.should_run() {
            let reason = if s.stopped_by_command {
                StopReason::Command
            } else {
                StopReason::GaveUp
            };
            Some(Action::Stop { id, reason })
        } else if s.restart_requested {
            Some(Action::Restart { id })
        } else if s.kill_requested {
            Some(Action::Stop {
                id,
                reason: StopReason::Unhealthy,
            })
        } else {
            None
        };
    }
    if !s.should_run() {
        return None;
    }
    let id = c.id.clone();
    if s.restart_requested {
        return Some(Action::Start {
            id,
            reason: StartReason::Command,
        });
    }
    match s.restart_at {
        Some(t) if t > now => None,
        Some(_) => Some(Action::Start {
            id,
            reason: StartReason::Backoff,
        }),
        // Not running, meant to run and no exit pending a delay: a container that was
        // created but never started, or a server a `start` command released.
        None => Some(Action::Start {
            id,
            reason: if c.never_started {
                StartReason::Initial
            } else {
                StartReason::Command
            },
        }),
    }
}

/// A listing of this agent's managed containers, sorted out.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// The one container each known server keeps.
    pub keep: HashMap<String, ContainerInfo>,
    /// Containers to remove, with the reason: duplicates, unknown or unlabelled servers.
    pub extras: Vec<(ContainerInfo, &'static str)>,
}

/// Assigns each listed container to its server. Of several containers for one server the
/// best is kept (running with the right hash, then running, then right hash, then newest);
/// `hash_of(server)` is the server's current config hash, `None` if it is not configured.
pub(super) fn match_listing(
    infos: Vec<ContainerInfo>,
    hash_of: impl Fn(&str) -> Option<String>,
) -> Listing {
    let mut listing = Listing::default();
    for info in infos {
        let Some(server) = info.server.clone() else {
            listing
                .extras
                .push((info, "managed container without a server label"));
            continue;
        };
        let Some(hash) = hash_of(&server) else {
            listing.extras.push((info, "server no longer configured"));
            continue;
        };
        let rank = |c: &ContainerInfo| {
            (
                c.running,
                c.config_hash.as_deref() == Some(hash.as_str()),
                c.started_at_ms.unwrap_or(0),
            )
        };
        match listing.keep.remove(&server) {
            None => {
                listing.keep.insert(server, info);
            }
            Some(prev) => {
                let (keep, drop) = if rank(&info) > rank(&prev) {
                    (info, prev)
                } else {
                    (prev, info)
                };
                listing.keep.insert(server, keep);
                listing
                    .extras
                    .push((drop, "duplicate container for the server"));
            }
        }
    }
    listing
}

/// `now + d`, saturating far in the future instead of panicking on overflow.
pub(super) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::{validate_servers, RawMcpServer};
    use std::time::Duration;

    fn spec(name: &str) -> McpServerSpec {
        #[derive(serde::Deserialize)]
        struct Doc {
            mcp_server: Vec<RawMcpServer>,
        }
        let text =
            format!("[[mcp_server]]\nname = \"{name}\"\nimage = \"i\"\ntransport = \"stdio\"\n");
        let doc: Doc =
            mcpwatch_common::config::parse(std::path::Path::new("/x.toml"), &text).unwrap();
        validate_servers(std::path::Path::new("/x.toml"), doc.mcp_server)
            .unwrap()
            .remove(0)
    }

    fn observed(s: &Server, running: bool) -> Observed {
        Observed {
            id: "c1".into(),
            hash: Some(s.hash.clone()),
            running,
            never_started: false,
            started_at_ms: Some(1),
            oom_pending: false,
        }
    }

    fn info(
        server: Option<&str>,
        id: &str,
        running: bool,
        hash: &str,
        started: i64,
    ) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            server: server.map(Into::into),
            config_hash: Some(hash.into()),
            running,
            status: if running { "running" } else { "exited" }.into(),
            never_started: false,
            exit_code: 0,
            oom_killed: false,
            started_at_ms: Some(started),
        }
    }

    #[test]
    fn missing_container_is_created_unless_held() {
        let now = Instant::now();
        let mut s = Server::new(spec("a"));
        assert_eq!(next_action(&s, now), Some(Action::Create));
        s.busy = true;
        assert_eq!(next_action(&s, now), None);
        s.busy = false;
        s.restart_at = Some(now + Duration::from_secs(1));
        assert_eq!(next_action(&s, now), None, "delay pending");
        s.restart_requested = true;
        assert_eq!(next_action(&s, now), Some(Action::Create));
        s.restart_requested = false;
        s.restart_at = None;
        s.stopped_by_command = true;
        assert_eq!(next_action(&s, now), None);
        s.stopped_by_command = false;
        s.retry_at = Some(now + Duration::from_secs(1));
        assert_eq!(next_action(&s, now), None);
    }

    #[test]
    fn running_container_is_left_alone_or_stopped() {
        let now = Instant::now();
        let mut s = Server::new(spec("a"));
        s.container = Some(observed(&s, true));
        assert_eq!(next_action(&s, now), None, "adopted, healthy: untouched");
        s.kill_requested = true;
        assert!(matches!(
            next_action(&s, now),
            Some(Action::Stop {
                reason: StopReason::Unhealthy,
                ..
            })
        ));
        s.kill_requested = false;
        s.restart_requested = true;
        assert!(matches!(next_action(&s, now), Some(Action::Restart { .. })));
        s.restart_requested = false;
        s.stopped_by_command = true;
        assert!(matches!(
            next_action(&s, now),
            Some(Action::Stop {
                reason: StopReason::Command,
                ..
            })
        ));
    }

    #[test]
    fn exited_container_waits_for_its_delay() {
        let now = Instant::now();
        let mut s = Server::new(spec("a"));
        s.container = Some(observed(&s, false));
        s.restart_at = Some(now + Duration::from_millis(200));
        assert_eq!(next_action(&s, now), None);
        assert_eq!(
            next_action(&s, now + Duration::from_millis(200)),
            Some(Action::Start {
                id: "c1".into(),
                reason: StartReason::Backoff
            })
        );
        s.policy_stay = true;
        assert_eq!(next_action(&s, now + Duration::from_secs(1)), None);
    }

    #[test]
    fn config_change_recreates_and_removal_removes() {
        let now = Instant::now();
        let mut s = Server::new(spec("a"));
        let mut c = observed(&s, true);
        c.hash = Some("old".into());
        s.container = Some(c);
        assert_eq!(
            next_action(&s, now),
            Some(Action::Recreate { old: "c1".into() })
        );
        s.spec = None;
        assert_eq!(
            next_action(&s, now),
            Some(Action::Remove { id: "c1".into() })
        );
        s.container = None;
        assert_eq!(next_action(&s, now), None);
    }

    #[test]
    fn listing_keeps_the_best_and_flags_the_rest() {
        let hash_of = |s: &str| (s == "a" || s == "b").then(|| format!("h-{s}"));
        let l = match_listing(
            vec![
                info(Some("a"), "old", false, "h-a", 5),
                info(Some("a"), "good", true, "h-a", 1),
                info(Some("a"), "stale", true, "h-x", 9),
                info(Some("gone"), "g", true, "h", 1),
                info(None, "anon", true, "h", 1),
                info(Some("b"), "b1", false, "h-x", 1),
            ],
            hash_of,
        );
        assert_eq!(l.keep["a"].id, "good");
        assert_eq!(l.keep["b"].id, "b1");
        let mut extras: Vec<&str> = l.extras.iter().map(|(c, _)| c.id.as_str()).collect();
        extras.sort();
        assert_eq!(extras, ["anon", "g", "old", "stale"]);
    }
}
