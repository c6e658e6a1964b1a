//! The `[[mcp_server]]` table as written: serde shapes with `deny_unknown_fields` and the
//! documented defaults (applied by validation). Environment values are [`Secret`]s from the
//! moment they are parsed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use mcpwatch_common::config::{ByteSize, Duration};
use mcpwatch_common::secret::Secret;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::server_spec::RestartPolicy;

/// One `[[mcp_server]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    /// Unique, DNS-label-like (`[a-z0-9-]`, 1..=63, no leading/trailing `-`).
    pub name: String,
    /// Image reference; must be present locally or pullable by the daemon. Omitted, with a
    /// `url`, the server is external: probed and proxied by the gateway, never run here.
    pub image: Option<String>,
    /// Entrypoint override. Default: the image's entrypoint.
    pub command: Option<Vec<String>>,
    /// Arguments (the container's CMD). Default: the image's CMD.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment: `NAME = "literal"` or `NAME = { file = "/path" }` (read at validation;
    /// one trailing newline stripped; relative paths resolve against the config file).
    #[serde(default)]
    pub env: BTreeMap<String, RawEnvValue>,
    /// `"http"` (Streamable HTTP at `url`) or `"stdio"`. Required with `image`; an external
    /// server is `"http"`.
    pub transport: Option<TransportKind>,
    /// Probe endpoint of an `http` server, e.g. `"http://127.0.0.1:8080/mcp"`. Not allowed for
    /// `stdio`.
    pub url: Option<String>,
    /// `always` | `on-failure` | `never`. Default `always`.
    pub restart: Option<RestartPolicy>,
    #[serde(default)]
    pub backoff: RawBackoff,
    #[serde(default)]
    pub budget: RawBudget,
    #[serde(default)]
    pub limits: RawLimits,
    /// `"host"`, `"none"` or a named Docker network. Default `"none"` for stdio; required for
    /// http.
    pub network: Option<String>,
    /// Read-only root filesystem. Default true.
    pub read_only: Option<bool>,
    /// `no-new-privileges` security option. Default true.
    pub no_new_privileges: Option<bool>,
    /// Capabilities to drop. Default `["ALL"]`.
    pub cap_drop: Option<Vec<String>>,
    /// Bind mounts.
    #[serde(default)]
    pub mounts: Vec<RawMount>,
    /// Extra container labels; keys starting with `mcpwatch.` are reserved.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub probe: RawProbe,
    /// How the gateway serves the server to clients (`[mcp_server.gateway]`).
    #[serde(default)]
    pub gateway: RawServerGateway,
    /// Headers sent with every probe and proxied request of an `http` server, e.g.
    /// `Authorization = { file = "/etc/mcpwatch/saas.token" }` (values are secrets, never
    /// logged).
    #[serde(default)]
    pub headers: BTreeMap<String, RawEnvValue>,
}

/// An environment value: a literal string or `{ file = "/path" }`.
pub enum RawEnvValue {
    Literal(Secret),
    File(PathBuf),
}

impl fmt::Debug for RawEnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawEnvValue::Literal(s) => f.debug_tuple("Literal").field(s).finish(),
            RawEnvValue::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

impl<'de> Deserialize<'de> for RawEnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written instead of `#[serde(untagged)]` so a mistake gets a precise message
        // rather than "data did not match any variant".
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEnvValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or { file = \"/path\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::Literal(Secret::new(v)))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::Literal(Secret::new(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnvValue, A::Error> {
                let mut file = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "file" if file.is_none() => file = Some(map.next_value::<PathBuf>()?),
                        "file" => return Err(de::Error::duplicate_field("file")),
                        other => return Err(de::Error::unknown_field(other, &["file"])),
                    }
                }
                file.map(RawEnvValue::File)
                    .ok_or_else(|| de::Error::missing_field("file"))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Http,
    Stdio,
}

/// `[mcp_server.gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerGateway {
    /// `"shared"` (default): every client session shares the supervised container's one
    /// stdio session. `"per_client"`: each client session gets its own container of the same
    /// image (for servers that keep per-session state). stdio servers only.
    pub sessions: Option<SessionsKind>,
    /// `per_client`: client containers at once; more sessions are refused. Default 8.
    pub max_sessions: Option<usize>,
    /// `per_client`: containers started ahead of clients so a new session does not wait for
    /// a container start. Default 0.
    pub warm_pool: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionsKind {
    Shared,
    PerClient,
}

/// Crash-loop backoff, like Kubernetes: `initial` doubling to `max`; back to `initial` after
/// `reset_after` of continuous running.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    /// Default 10s.
    pub initial: Option<Duration>,
    /// Default 5m.
    pub max: Option<Duration>,
    /// Default 10m.
    pub reset_after: Option<Duration>,
}

/// More than `max_restarts` restarts within `window` → the server is given up.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Default 5.
    pub max_restarts: Option<u32>,
    /// Default 10m.
    pub window: Option<Duration>,
}

/// Resource limits; each unlimited when absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// CPU share, e.g. 0.5 (Docker `--cpus`).
    pub cpus: Option<f64>,
    /// Memory cap, e.g. "256MiB" (swap disabled: memory+swap = memory).
    pub memory: Option<ByteSize>,
    /// Maximum number of processes/threads.
    pub pids: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    /// Host path (relative paths resolve against the config file's directory).
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: String,
    /// Default true.
    pub read_only: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// Default 15s. A stdio server is probed through the gateway's session on its container.
    pub interval: Option<Duration>,
    /// Default 5s.
    pub timeout: Option<Duration>,
    /// Consecutive failures that make the server unhealthy. Default 3.
    pub failure_threshold: Option<u32>,
    /// After its container starts, failed probes are not counted for this long (a server
    /// still starting is not unhealthy). Default 10s.
    pub startup_grace: Option<Duration>,
}
