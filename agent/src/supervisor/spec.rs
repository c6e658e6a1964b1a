//! `[[mcp_server]]` configuration: the raw TOML shape (serde, `deny_unknown_fields`, documented
//! defaults) and its validation into [`McpServerSpec`], plus the config hash that decides when
//! a container must be recreated.
//!
//! Environment values may be secrets, so they live in [`Secret`], whose `Debug` never shows
//! the value; neither the raw nor the validated types can leak one through `{:?}` or a log.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use mcpwatch_common::config::{self as cfg, ByteSize, ConfigError, Duration};
use mcpwatch_common::secret::Secret;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Bumped whenever the way a spec is turned into a container changes, so every managed
/// container is recreated with the new template instead of silently keeping the old one.
const HASH_VERSION: &str = "mcpwatch-container-v1";

/// One `[[mcp_server]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    /// Unique, DNS-label-like (`[a-z0-9-]`, 1..=63, no leading/trailing `-`).
    pub name: String,
    /// Image reference; must be present locally or pullable by the daemon.
    pub image: String,
    /// Entrypoint override. Default: the image's entrypoint.
    pub command: Option<Vec<String>>,
    /// Arguments (the container's CMD). Default: the image's CMD.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment: `NAME = "literal"` or `NAME = { file = "/path" }` (read at validation;
    /// one trailing newline stripped; relative paths resolve against the config file).
    #[serde(default)]
    pub env: BTreeMap<String, RawEnvValue>,
    /// `"http"` (Streamable HTTP at `url`) or `"stdio"`.
    pub transport: TransportKind,
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
    /// Default 15s for http, 5m for stdio (each stdio probe starts a container).
    pub interval: Option<Duration>,
    /// Default 5s.
    pub timeout: Option<Duration>,
    /// Consecutive failures that make the server unhealthy. Default 3.
    pub failure_threshold: Option<u32>,
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
}

/// A validated `[[mcp_server]]`. Built only by [`validate_servers`]; there is no `Default`.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerSpec {
    pub name: String,
    pub image: String,
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
}

impl McpServerSpec {
    /// Hex SHA-256 over everything that is baked into the container at creation (image,
    /// command, args, env values, network, security options, limits, mounts, labels, stdin
    /// mode), and nothing that the supervisor applies itself (restart policy, backoff, budget,
    /// probe), so changing those never recreates a container.
    pub fn config_hash(&self) -> String {
        let mut h = Hasher(ring::digest::Context::new(&ring::digest::SHA256));
        h.field("version", HASH_VERSION);
        h.field("name", &self.name);
        h.field("image", &self.image);
        match &self.command {
            Some(c) => h.list("command", c.iter().map(String::as_str)),
            None => h.field("command", "-"),
        }
        h.list("args", self.args.iter().map(String::as_str));
        h.list(
            "env",
            self.env
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.expose()].into_iter()),
        );
        h.field(
            "stdin",
            match self.transport {
                Transport::Http { .. } => "closed",
                Transport::Stdio => "open",
            },
        );
        h.field("network", &self.network);
        h.field("read_only", bool_str(self.read_only));
        h.field("no_new_privileges", bool_str(self.no_new_privileges));
        h.list("cap_drop", self.cap_drop.iter().map(String::as_str));
        h.field("nano_cpus", &opt_str(self.limits.nano_cpus));
        h.field("memory", &opt_str(self.limits.memory_bytes));
        h.field("pids", &opt_str(self.limits.pids));
        for m in &self.mounts {
            h.field("mount.source", &m.source.to_string_lossy());
            h.field("mount.target", &m.target);
            h.field("mount.read_only", bool_str(m.read_only));
        }
        h.list(
            "labels",
            self.labels
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()].into_iter()),
        );
        let digest = h.0.finish();
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn opt_str(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Length-prefixed fields so no two different specs can feed the same byte stream.
struct Hasher(ring::digest::Context);

impl Hasher {
    fn bytes(&mut self, b: &[u8]) {
        self.0.update(&(b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn field(&mut self, key: &str, value: &str) {
        self.bytes(key.as_bytes());
        self.bytes(value.as_bytes());
    }
    fn list<'a>(&mut self, key: &str, values: impl Iterator<Item = &'a str>) {
        self.bytes(key.as_bytes());
        let values: Vec<&str> = values.collect();
        self.0.update(&(values.len() as u64).to_le_bytes());
        for v in values {
            self.bytes(v.as_bytes());
        }
    }
}

/// Validates every `[[mcp_server]]`; `path` is the config file (for messages and relative
/// paths). Errors name the key as `mcp_server[INDEX].field`.
pub fn validate_servers(
    path: &Path,
    raw: Vec<RawMcpServer>,
) -> Result<Vec<McpServerSpec>, ConfigError> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let spec = validate_one(path, i, r)?;
        if !names.insert(spec.name.clone()) {
            return Err(ConfigError::invalid(
                path,
                &format!("mcp_server[{i}].name"),
                format!("duplicate server name {:?}", spec.name),
            ));
        }
        out.push(spec);
    }
    Ok(out)
}

fn validate_one(path: &Path, i: usize, r: RawMcpServer) -> Result<McpServerSpec, ConfigError> {
    let bad =
        |key: &str, msg: String| ConfigError::invalid(path, &format!("mcp_server[{i}].{key}"), msg);

    if !is_dns_label(&r.name) {
        return Err(bad(
            "name",
            format!(
                "{:?}: expected 1..=63 characters of a-z, 0-9 and '-', not starting or \
                 ending with '-'",
                r.name
            ),
        ));
    }
    if r.image.is_empty() || r.image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "image",
            format!("{:?}: expected an image reference", r.image),
        ));
    }
    if let Some(c) = &r.command {
        if c.is_empty() || c[0].is_empty() {
            return Err(bad(
                "command",
                "must name a program (omit it to keep the image's entrypoint)".into(),
            ));
        }
        if c.iter().any(|s| s.contains('\0')) {
            return Err(bad("command", "must not contain NUL characters".into()));
        }
    }
    if r.args.iter().any(|s| s.contains('\0')) {
        return Err(bad("args", "must not contain NUL characters".into()));
    }

    let mut env = Vec::with_capacity(r.env.len());
    for (name, value) in r.env {
        let key = format!("env.{name}");
        if !is_env_name(&name) {
            return Err(bad(
                &key,
                "expected a variable name of A-Z, a-z, 0-9 and '_', not starting with a digit"
                    .into(),
            ));
        }
        let value = match value {
            RawEnvValue::Literal(s) => s,
            RawEnvValue::File(p) => {
                let p = cfg::resolve_path(path, p);
                let mut text = std::fs::read_to_string(&p)
                    .map_err(|e| bad(&key, format!("cannot read {}: {e}", p.display())))?;
                // Secret files usually end in a newline the value does not contain.
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                Secret::new(text)
            }
        };
        // Never echo the value: it may be a secret.
        if value.expose().contains('\0') {
            return Err(bad(&key, "value must not contain NUL characters".into()));
        }
        env.push((name, value));
    }

    let transport = match (r.transport, r.url) {
        (TransportKind::Http, Some(url)) => {
            check_url(&url).map_err(|m| bad("url", format!("{url:?}: {m}")))?;
            Transport::Http { url }
        }
        (TransportKind::Http, None) => {
            return Err(bad(
                "url",
                "required for transport \"http\" (the probe endpoint)".into(),
            ))
        }
        (TransportKind::Stdio, Some(_)) => {
            return Err(bad("url", "not allowed for transport \"stdio\"".into()))
        }
        (TransportKind::Stdio, None) => Transport::Stdio,
    };

    let restart = r.restart.unwrap_or(RestartPolicy::Always);
    let backoff = BackoffSpec {
        initial: r.backoff.initial.unwrap_or(Duration::from_secs(10)),
        max: r.backoff.max.unwrap_or(Duration::from_secs(300)),
        reset_after: r.backoff.reset_after.unwrap_or(Duration::from_secs(600)),
    };
    if backoff.initial.get().is_zero() {
        return Err(bad("backoff.initial", "must be positive".into()));
    }
    if backoff.max < backoff.initial {
        return Err(bad(
            "backoff.max",
            format!("must not be below backoff.initial ({})", backoff.initial),
        ));
    }
    if backoff.reset_after.get().is_zero() {
        return Err(bad("backoff.reset_after", "must be positive".into()));
    }
    let budget = BudgetSpec {
        max_restarts: r.budget.max_restarts.unwrap_or(5),
        window: r.budget.window.unwrap_or(Duration::from_secs(600)),
    };
    if budget.max_restarts > 10_000 {
        return Err(bad("budget.max_restarts", "must be 0..=10000".into()));
    }
    if budget.window.get().is_zero() {
        return Err(bad("budget.window", "must be positive".into()));
    }

    let nano_cpus = match r.limits.cpus {
        None => None,
        Some(c) if (0.01..=1024.0).contains(&c) => Some((c * 1e9).round() as i64),
        Some(c) => return Err(bad("limits.cpus", format!("{c}: must be 0.01..=1024"))),
    };
    let memory_bytes = match r.limits.memory {
        None => None,
        // Docker refuses less than 6 MiB.
        Some(ByteSize(b)) if (6 << 20..=i64::MAX as u64).contains(&b) => Some(b as i64),
        Some(_) => return Err(bad("limits.memory", "must be at least 6MiB".into())),
    };
    let pids = match r.limits.pids {
        None => None,
        Some(p) if (1..=4_194_304).contains(&p) => Some(p),
        Some(p) => return Err(bad("limits.pids", format!("{p}: must be 1..=4194304"))),
    };

    let network = match (&transport, r.network) {
        (_, Some(n)) if n == "host" || n == "none" || is_network_name(&n) => n,
        (_, Some(n)) => {
            return Err(bad(
                "network",
                format!("{n:?}: expected \"host\", \"none\" or a Docker network name"),
            ))
        }
        (Transport::Stdio, None) => "none".into(),
        (Transport::Http { .. }, None) => {
            return Err(bad(
                "network",
                "required for transport \"http\": \"host\" or a Docker network name".into(),
            ))
        }
    };
    if matches!(transport, Transport::Http { .. }) && network == "none" {
        // The probe could never reach it, so the server would be restarted forever.
        return Err(bad(
            "network",
            "\"none\" leaves an http server unreachable for the probe; use \"host\" or a \
             Docker network"
                .into(),
        ));
    }

    let cap_drop = r.cap_drop.unwrap_or_else(|| vec!["ALL".into()]);
    for c in &cap_drop {
        if c.is_empty() || !c.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(
                "cap_drop",
                format!("{c:?}: expected a capability name such as \"ALL\" or \"NET_RAW\""),
            ));
        }
    }

    let mut targets = HashSet::new();
    let mut mounts = Vec::with_capacity(r.mounts.len());
    for (m_i, m) in r.mounts.into_iter().enumerate() {
        let key = format!("mounts[{m_i}]");
        if !m.target.starts_with('/') || m.target.contains('\0') {
            return Err(bad(
                &format!("{key}.target"),
                format!("{:?}: must be an absolute path", m.target),
            ));
        }
        if !targets.insert(m.target.clone()) {
            return Err(bad(
                &format!("{key}.target"),
                format!("{:?}: mounted twice", m.target),
            ));
        }
        let source = cfg::resolve_path(path, m.source);
        if !source.exists() {
            return Err(bad(
                &format!("{key}.source"),
                format!("{}: does not exist", source.display()),
            ));
        }
        mounts.push(MountSpec {
            source,
            target: m.target,
            read_only: m.read_only.unwrap_or(true),
        });
    }

    for k in r.labels.keys() {
        if k.is_empty() || k.starts_with("mcpwatch.") {
            return Err(bad(
                &format!("labels.{k}"),
                "label keys must be non-empty and must not start with \"mcpwatch.\" (reserved)"
                    .into(),
            ));
        }
    }

    let default_interval = match transport {
        Transport::Http { .. } => Duration::from_secs(15),
        Transport::Stdio => Duration::from_secs(300),
    };
    let probe = ProbeSpec {
        interval: r.probe.interval.unwrap_or(default_interval),
        timeout: r.probe.timeout.unwrap_or(Duration::from_secs(5)),
        failure_threshold: r.probe.failure_threshold.unwrap_or(3),
    };
    if probe.interval.get() < std::time::Duration::from_millis(100) {
        return Err(bad("probe.interval", "must be at least 100ms".into()));
    }
    if probe.timeout.get().is_zero() || probe.timeout > probe.interval {
        return Err(bad(
            "probe.timeout",
            format!(
                "must be positive and not above probe.interval ({})",
                probe.interval
            ),
        ));
    }
    if probe.failure_threshold == 0 {
        return Err(bad("probe.failure_threshold", "must be at least 1".into()));
    }

    Ok(McpServerSpec {
        name: r.name,
        image: r.image,
        command: r.command,
        args: r.args,
        env,
        transport,
        restart,
        backoff,
        budget,
        limits: Limits {
            nano_cpus,
            memory_bytes,
            pids,
        },
        network,
        read_only: r.read_only.unwrap_or(true),
        no_new_privileges: r.no_new_privileges.unwrap_or(true),
        cap_drop,
        mounts,
        labels: r.labels,
        probe,
    })
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Docker's rule for network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_network_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 255
        && matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `http(s)://host[:port][/path]` with a non-empty host and a valid port.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("credentials in the URL are not supported");
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unterminated IPv6 address")?;
        if !after.is_empty() {
            let port = after.strip_prefix(':').ok_or("expected :port after ]")?;
            port.parse::<u16>().map_err(|_| "invalid port")?;
        }
        host
    } else if let Some((host, port)) = authority.rsplit_once(':') {
        port.parse::<u16>().map_err(|_| "invalid port")?;
        host
    } else {
        authority
    };
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected a host and no whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        mcp_server: Vec<RawMcpServer>,
    }

    fn load(text: &str) -> Result<Vec<McpServerSpec>, ConfigError> {
        let path = Path::new("/etc/mcpwatch/agent.toml");
        let doc: Doc = cfg::parse(path, text)?;
        validate_servers(path, doc.mcp_server)
    }

    const HTTP: &str = r#"
[[mcp_server]]
name = "files"
image = "example/files:1"
transport = "http"
url = "http://127.0.0.1:8080/mcp"
network = "host"
"#;

    const STDIO: &str = r#"
[[mcp_server]]
name = "git"
image = "example/git:1"
transport = "stdio"
"#;

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } | ConfigError::Parse { key, .. } => key,
            ConfigError::Read { .. } => "(read)".into(),
        }
    }

    #[test]
    fn defaults_apply() {
        let s = load(&format!("{HTTP}{STDIO}")).unwrap();
        let (h, g) = (&s[0], &s[1]);
        assert_eq!(h.restart, RestartPolicy::Always);
        assert_eq!(h.backoff.initial, Duration::from_secs(10));
        assert_eq!(h.backoff.max, Duration::from_secs(300));
        assert_eq!(h.backoff.reset_after, Duration::from_secs(600));
        assert_eq!(h.budget.max_restarts, 5);
        assert_eq!(h.budget.window, Duration::from_secs(600));
        assert_eq!(h.probe.interval, Duration::from_secs(15));
        assert_eq!(g.probe.interval, Duration::from_secs(300));
        assert_eq!(h.probe.timeout, Duration::from_secs(5));
        assert_eq!(h.probe.failure_threshold, 3);
        assert_eq!(g.network, "none");
        assert!(h.read_only && h.no_new_privileges);
        assert_eq!(h.cap_drop, vec!["ALL".to_string()]);
        assert_eq!(h.limits.nano_cpus, None);
        assert_eq!(g.transport, Transport::Stdio);
    }

    #[test]
    fn full_table_parses() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "s3cr3t-value\n").unwrap();
        let text = format!(
            r#"
[[mcp_server]]
name = "search-1"
image = "example/search:2"
command = ["/bin/server"]
args = ["--port", "8080"]
transport = "http"
url = "http://[::1]:8080/mcp"
network = "host"
restart = "on-failure"
read_only = false
no_new_privileges = true
cap_drop = ["NET_RAW"]
backoff = {{ initial = "200ms", max = "2s", reset_after = "1m" }}
budget = {{ max_restarts = 2, window = "1m" }}
limits = {{ cpus = 0.5, memory = "256MiB", pids = 128 }}
mounts = [{{ source = "{dir}", target = "/data" }}]
labels = {{ team = "search" }}
probe = {{ interval = "30s", timeout = "2s", failure_threshold = 5 }}
[mcp_server.env]
LOG = "debug"
TOKEN = {{ file = "{secret}" }}
"#,
            dir = dir.path().display(),
            secret = secret.display()
        );
        let s = &load(&text).unwrap()[0];
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(s.limits.nano_cpus, Some(500_000_000));
        assert_eq!(s.limits.memory_bytes, Some(256 << 20));
        assert_eq!(s.limits.pids, Some(128));
        assert_eq!(s.env[1].0, "TOKEN");
        assert_eq!(s.env[1].1.expose(), "s3cr3t-value");
        assert!(s.mounts[0].read_only);
        assert_eq!(s.probe.failure_threshold, 5);
        // Secrets never reach Debug output, raw or validated.
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("debug\""), "{dbg}");
        let doc: Doc = cfg::parse(Path::new("/x.toml"), &text).unwrap();
        let raw_dbg = format!("{doc:?}");
        assert!(!raw_dbg.contains("\"debug\""), "{raw_dbg}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("name = \"files\"", "name = \"Files_1\""),
            ("network = \"host\"", "network = \"no such/net\""),
            ("network = \"host\"", "network = \"none\""),
            ("network = \"host\"", ""),
            ("url = \"http://127.0.0.1:8080/mcp\"", "url = \"ftp://x\""),
            ("url = \"http://127.0.0.1:8080/mcp\"", ""),
        ];
        let keys = [
            "mcp_server[0].name",
            "mcp_server[0].network",
            "mcp_server[0].network",
            "mcp_server[0].network",
            "mcp_server[0].url",
            "mcp_server[0].url",
        ];
        for ((from, to), key) in cases.iter().zip(keys) {
            let e = load(&HTTP.replace(from, to)).unwrap_err();
            assert_eq!(key_of(e), key, "{from} -> {to}");
        }
        let extra = |line: &str| load(&format!("{STDIO}{line}\n")).unwrap_err();
        let stdio2 = |line: &str| load(&format!("{HTTP}{STDIO}{line}\n")).unwrap_err();
        assert_eq!(
            key_of(stdio2("limits = { memory = \"1MiB\" }")),
            "mcp_server[1].limits.memory"
        );
        assert_eq!(
            key_of(extra("limits = { cpus = 0.0 }")),
            "mcp_server[0].limits.cpus"
        );
        assert_eq!(
            key_of(extra("limits = { pids = 0 }")),
            "mcp_server[0].limits.pids"
        );
        assert_eq!(
            key_of(extra("backoff = { initial = \"1m\", max = \"10s\" }")),
            "mcp_server[0].backoff.max"
        );
        assert_eq!(
            key_of(extra("budget = { window = \"0s\" }")),
            "mcp_server[0].budget.window"
        );
        assert_eq!(
            key_of(extra("probe = { interval = \"1s\", timeout = \"2s\" }")),
            "mcp_server[0].probe.timeout"
        );
        assert_eq!(
            key_of(extra("probe = { failure_threshold = 0 }")),
            "mcp_server[0].probe.failure_threshold"
        );
        assert_eq!(
            key_of(extra("url = \"http://127.0.0.1:1/mcp\"")),
            "mcp_server[0].url"
        );
        assert_eq!(
            key_of(extra("cap_drop = [\"NET RAW\"]")),
            "mcp_server[0].cap_drop"
        );
        assert_eq!(
            key_of(extra("labels = { \"mcpwatch.server\" = \"x\" }")),
            "mcp_server[0].labels.mcpwatch.server"
        );
        assert_eq!(
            key_of(extra("mounts = [{ source = \"/\", target = \"rel\" }]")),
            "mcp_server[0].mounts[0].target"
        );
        assert_eq!(
            key_of(extra(
                "mounts = [{ source = \"/nonexistent/mcpwatch\", target = \"/x\" }]"
            )),
            "mcp_server[0].mounts[0].source"
        );
        assert_eq!(
            key_of(extra("env = { \"1BAD\" = \"x\" }")),
            "mcp_server[0].env.1BAD"
        );
        let e = extra("env = { TOKEN = { file = \"/nonexistent/secret\" } }");
        assert_eq!(key_of(e), "mcp_server[0].env.TOKEN");
        // Parse-level errors (serde) come with the line and the key from common::config.
        let e = extra("restart = \"sometimes\"");
        assert!(e.to_string().contains("restart"), "{e}");
        let e = extra("env = { TOKEN = { path = \"/x\" } }");
        assert!(e.to_string().contains("path"), "{e}");
        let e = extra("bogus = 1");
        assert!(e.to_string().contains("bogus"), "{e}");
        // Duplicate names point at the second table.
        let e = load(&format!("{STDIO}{STDIO}")).unwrap_err();
        assert_eq!(key_of(e), "mcp_server[1].name");
    }

    #[test]
    fn env_errors_never_echo_the_value() {
        let e = load(&format!("{STDIO}env = {{ A = \"top\\u0000secret\" }}\n")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn config_hash_tracks_container_fields_only() {
        let base = load(HTTP).unwrap().remove(0);
        let h = base.config_hash();
        assert_eq!(h.len(), 64);
        assert_eq!(h, base.clone().config_hash(), "stable");
        let mut s = base.clone();
        s.restart = RestartPolicy::Never;
        s.backoff.initial = Duration::from_secs(1);
        s.budget.max_restarts = 1;
        s.probe.interval = Duration::from_secs(1);
        s.transport = Transport::Http {
            url: "http://127.0.0.1:9/mcp".into(),
        };
        assert_eq!(s.config_hash(), h, "supervisor-only fields do not recreate");
        type Change = Box<dyn Fn(&mut McpServerSpec)>;
        let changes: Vec<Change> = vec![
            Box::new(|s| s.image.push('x')),
            Box::new(|s| s.command = Some(vec!["/x".into()])),
            Box::new(|s| s.args.push("-v".into())),
            Box::new(|s| s.env.push(("A".into(), Secret::new("1")))),
            Box::new(|s| s.transport = Transport::Stdio),
            Box::new(|s| s.network = "mcp".into()),
            Box::new(|s| s.read_only = false),
            Box::new(|s| s.no_new_privileges = false),
            Box::new(|s| s.cap_drop.clear()),
            Box::new(|s| s.limits.memory_bytes = Some(1 << 30)),
            Box::new(|s| {
                s.mounts.push(MountSpec {
                    source: "/".into(),
                    target: "/h".into(),
                    read_only: true,
                })
            }),
            Box::new(|s| {
                s.labels.insert("a".into(), "b".into());
            }),
        ];
        let mut seen = HashSet::from([h]);
        for change in changes {
            let mut s = base.clone();
            change(&mut s);
            assert!(seen.insert(s.config_hash()), "{s:?}");
        }
        // Env values count, yet only the digest is visible.
        let mut a = base.clone();
        a.env.push(("T".into(), Secret::new("one")));
        let mut b = base;
        b.env.push(("T".into(), Secret::new("two")));
        assert_ne!(a.config_hash(), b.config_hash());
    }

    #[test]
    fn helpers() {
        assert!(is_dns_label("a") && is_dns_label("my-server-2"));
        assert!(!is_dns_label("-a") && !is_dns_label("a-") && !is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(check_url("http://localhost/mcp").is_ok());
        assert!(check_url("https://[::1]:443").is_ok());
        assert!(check_url("http://:80/").is_err());
        assert!(check_url("http://h:99999/").is_err());
        assert!(check_url("http://u:p@h/").is_err());
        assert!(is_network_name("mcp_net.1") && !is_network_name(".x"));
    }
}
