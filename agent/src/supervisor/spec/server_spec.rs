//! A validated `[[mcp_server]]` ([`McpServerSpec`]) and its parts: what the supervisor,
//! the probe scheduler and the container template work from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mcpwatch_common::config::Duration;
use mcpwatch_common::secret::Secret;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart after every exit.
    Always,
    /// Restart after a non-zero exit code, an OOM kill or an unhealthy verdict.
    OnFailure,
    /// Never restart; an exited server stays exited until a `start` command.
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// How the probe reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Http { url: String },
    Stdio,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffSpec {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpec {
    pub max_restarts: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Docker `NanoCpus` (cpus × 10⁹).
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    /// Failed probes within this long of the container's start are not counted.
    pub startup_grace: Duration,
}

/// How the gateway serves a server's client sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewaySessions {
    /// All client sessions share the supervised container's session.
    Shared,
    /// Each client session gets its own container.
    PerClient {
        max_sessions: usize,
        warm_pool: usize,
    },
}

/// A validated `[[mcp_server]]`. Built only by
/// [`validate_servers`](super::validate_servers); there is no `Default`.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerSpec {
    pub name: String,
    /// Empty for an external server.
    pub image: String,
    /// Not run by this agent (no `image`): only probed and proxied. The supervisor never
    /// sees such a spec.
    pub external: bool,
    /// Sent with every probe and proxied request (http servers); values resolved.
    pub headers: Vec<(String, Secret)>,
    pub command: Option<Vec<String>>,
    pub args: Vec<String>,
    /// Sorted by name; values resolved (files read) and redacted in `Debug`.
    pub env: Vec<(String, Secret)>,
    pub transport: Transport,
    pub restart: RestartPolicy,
    pub backoff: BackoffSpec,
    pub budget: BudgetSpec,
    pub limits: Limits,
    pub network: String,
    pub read_only: bool,
    pub no_new_privileges: bool,
    pub cap_drop: Vec<String>,
    pub mounts: Vec<MountSpec>,
    pub labels: BTreeMap<String, String>,
    pub probe: ProbeSpec,
    pub gateway_sessions: GatewaySessions,
}
