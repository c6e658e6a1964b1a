//! Messages the supervisor's own tasks send to its actor: the Docker event watcher's
//! connection changes and events, finished operations and listings.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::docker::{ContainerEvent, ContainerInfo, DockerError};
use super::reconcile::Action;

/// What the supervisor's own tasks (Docker event watcher, operations, listings) report to
/// its actor.
pub(super) enum Internal {
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
pub(super) struct OpDone {
    pub server: String,
    pub action: Action,
    /// The server's event epoch when the action was dispatched.
    pub epoch: u64,
    pub removed: Option<Result<(), DockerError>>,
    pub created: Option<Result<String, DockerError>>,
    /// The start, stop or restart call.
    pub run: Option<Result<(), DockerError>>,
}
