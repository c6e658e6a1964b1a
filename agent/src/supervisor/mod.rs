//! The declarative MCP server supervisor: one task that owns every managed server's state and
//! keeps the Docker containers of this agent equal to the `[[mcp_server]]` specs.
//!
//! Inputs, all handled by that one task in order: Docker container events (a watcher task
//! keeps the stream connected and negotiates the API version on every reconnect), results of
//! Docker operations (each runs in its own short task, at most one per server, so a slow stop
//! never holds up other servers), full listings (after every (re)connect and every
//! `reconcile_every` as a safety net: event replay is never trusted), timers (crash-loop
//! delays), and the [`SupervisorHandle`]'s commands, reloads and probe verdicts.
//! After each input it asks `reconcile::next_action` what every server needs next.
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
//!
//! Files: `actor` (the task and [`Supervisor`], which starts it), `handle` (what callers hold),
//! `command`, `event`, `status` (what goes in and out), `internal_message` (what the
//! supervisor's own tasks report to the actor), `docker_watcher`, `operation` and
//! `transitions` (the actor's inputs and their effect on one server), `reconcile` and
//! `restart_tracker` (pure decisions), `docker` (the Docker API), `spec` (configuration),
//! `container_template` (how a spec becomes a container: labels, name, body, config hash),
//! `container_stats` (per-container metrics), `client_container` (the gateway's
//! per-client containers, outside reconcile).

mod actor;
mod client_container;
mod command;
pub mod container_stats;
pub mod container_template;
pub mod docker;
mod docker_watcher;
mod event;
mod handle;
mod internal_message;
mod operation;
mod reconcile;
pub mod restart_tracker;
pub mod spec;
mod status;
mod transitions;

#[cfg(test)]
mod tests;

pub use actor::Supervisor;
pub use command::SupervisorCommand;
pub use container_stats::ContainerStats;
pub use docker::{connect_local, DockerApi, DockerError};
pub use event::{kind, ServerEvent};
pub use handle::{SupervisorHandle, SupervisorOptions};
pub use restart_tracker::{Decision, RestartTracker};
pub use spec::{validate_servers, McpServerSpec, RawMcpServer, Transport};
pub use status::{ServerPhase, ServerStatus};
