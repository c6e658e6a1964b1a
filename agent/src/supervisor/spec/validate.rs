//! Validation of `[[mcp_server]]` tables into [`McpServerSpec`]s: one function per concern,
//! defaults applied, file references resolved; errors name the key.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use mcpwatch_common::config::{self as cfg, ByteSize, ConfigError, Duration};
use mcpwatch_common::secret::Secret;

use super::raw::{
    RawBackoff, RawBudget, RawEnvValue, RawLimits, RawMcpServer, RawMount, RawProbe,
    RawServerGateway, SessionsKind, TransportKind,
};
use super::server_spec::{
    BackoffSpec, BudgetSpec, GatewaySessions, Limits, McpServerSpec, MountSpec, ProbeSpec,
    RestartPolicy, Transport,
};

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

/// Names the key of an error as `mcp_server[INDEX].field`, in the config file at `path`.
struct KeyPrefix<'a> {
    path: &'a Path,
    index: usize,
}

impl KeyPrefix<'_> {
    fn invalid(&self, key: &str, msg: String) -> ConfigError {
        ConfigError::invalid(self.path, &format!("mcp_server[{}].{key}", self.index), msg)
    }
}

/// One server, checked concern by concern in the order of the table's documentation (the
/// first error is reported).
fn validate_one(path: &Path, i: usize, r: RawMcpServer) -> Result<McpServerSpec, ConfigError> {
    let at = KeyPrefix { path, index: i };
    check_program(&at, &r)?;
    let external = r.image.is_none();
    let env = resolve_env(&at, path, r.env)?;
    let kind = match (r.transport, external) {
        (Some(k), _) => k,
        (None, true) => TransportKind::Http,
        (None, false) => {
            return Err(at.invalid("transport", "required: \"http\" or \"stdio\"".into()))
        }
    };
    if external && kind != TransportKind::Http {
        return Err(at.invalid(
            "transport",
            "an external server (no image) is reached over \"http\"".into(),
        ));
    }
    let transport = transport(&at, kind, r.url)?;
    let headers = headers(&at, path, r.headers, &transport)?;
    let restart = r.restart.unwrap_or(RestartPolicy::Always);
    let backoff = backoff(&at, &r.backoff)?;
    let budget = budget(&at, &r.budget)?;
    let limits = limits(&at, &r.limits)?;
    // An external server has no container and so no network of ours.
    let network = if external {
        String::new()
    } else {
        network(&at, &transport, r.network)?
    };
    let cap_drop = cap_drop(&at, r.cap_drop)?;
    let mounts = mounts(&at, path, r.mounts)?;
    check_labels(&at, &r.labels)?;
    let probe = probe(&at, &r.probe)?;
    let gateway_sessions = gateway_sessions(&at, &r.gateway, &transport)?;
    Ok(McpServerSpec {
        name: r.name,
        image: r.image.unwrap_or_default(),
        external,
        headers,
        command: r.command,
        args: r.args,
        env,
        transport,
        restart,
        backoff,
        budget,
        limits,
        network,
        read_only: r.read_only.unwrap_or(true),
        no_new_privileges: r.no_new_privileges.unwrap_or(true),
        cap_drop,
        mounts,
        labels: r.labels,
        probe,
        gateway_sessions,
    })
}

/// Name, image, command and args.
fn check_program(at: &KeyPrefix, r: &RawMcpServer) -> Result<(), ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
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
    match &r.image {
        Some(image)
            if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            return Err(bad(
                "image",
                format!("{image:?}: expected an image reference"),
            ));
        }
        Some(_) => {}
        None => {
            // An external server: nothing runs here, so nothing about a container applies.
            let container_keys = [
                ("command", r.command.is_some()),
                ("args", !r.args.is_empty()),
                ("env", !r.env.is_empty()),
                ("network", r.network.is_some()),
                ("mounts", !r.mounts.is_empty()),
                ("labels", !r.labels.is_empty()),
                ("cap_drop", r.cap_drop.is_some()),
                ("read_only", r.read_only.is_some()),
                ("no_new_privileges", r.no_new_privileges.is_some()),
            ];
            if let Some((key, _)) = container_keys.iter().find(|(_, set)| *set) {
                return Err(bad(
                    key,
                    "only for a server this agent runs (set image, or remove this key)".into(),
                ));
            }
            if r.url.is_none() {
                return Err(bad(
                    "image",
                    "required, unless url names an external server to probe and proxy".into(),
                ));
            }
        }
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
    Ok(())
}

/// Headers of an http server: names and values checked, files read; values never echoed.
fn headers(
    at: &KeyPrefix,
    path: &Path,
    raw: BTreeMap<String, RawEnvValue>,
    transport: &Transport,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if *transport == Transport::Stdio {
        return Err(at.invalid("headers", "only for an http server".into()));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let key = format!("headers.{name}");
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !valid_name {
            return Err(at.invalid(
                &key,
                "expected a header name of A-Z, a-z, 0-9, '-' and '_'".into(),
            ));
        }
        let value = secret_value(at, path, &key, value)?;
        if value
            .expose()
            .bytes()
            .any(|b| b.is_ascii_control() && b != b'\t')
        {
            return Err(at.invalid(&key, "value must not contain control characters".into()));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// A literal or `{ file = ... }` value, the file read and one trailing newline stripped.
fn secret_value(
    at: &KeyPrefix,
    path: &Path,
    key: &str,
    value: RawEnvValue,
) -> Result<Secret, ConfigError> {
    Ok(match value {
        RawEnvValue::Literal(s) => s,
        RawEnvValue::File(p) => {
            let p = cfg::resolve_path(path, p);
            let mut text = std::fs::read_to_string(&p)
                .map_err(|e| at.invalid(key, format!("cannot read {}: {e}", p.display())))?;
            // Secret files usually end in a newline the value does not contain.
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Secret::new(text)
        }
    })
}

/// Environment values, files read; never echoes a value.
fn resolve_env(
    at: &KeyPrefix,
    path: &Path,
    raw: BTreeMap<String, RawEnvValue>,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let mut env = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let key = format!("env.{name}");
        if !is_env_name(&name) {
            return Err(bad(
                &key,
                "expected a variable name of A-Z, a-z, 0-9 and '_', not starting with a digit"
                    .into(),
            ));
        }
        let value = secret_value(at, path, &key, value)?;
        // Never echo the value: it may be a secret.
        if value.expose().contains('\0') {
            return Err(bad(&key, "value must not contain NUL characters".into()));
        }
        env.push((name, value));
    }
    Ok(env)
}

fn transport(
    at: &KeyPrefix,
    kind: TransportKind,
    url: Option<String>,
) -> Result<Transport, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let transport = match (kind, url) {
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
    Ok(transport)
}

fn backoff(at: &KeyPrefix, raw: &RawBackoff) -> Result<BackoffSpec, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let backoff = BackoffSpec {
        initial: raw.initial.unwrap_or(Duration::from_secs(10)),
        max: raw.max.unwrap_or(Duration::from_secs(300)),
        reset_after: raw.reset_after.unwrap_or(Duration::from_secs(600)),
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
    Ok(backoff)
}

fn budget(at: &KeyPrefix, raw: &RawBudget) -> Result<BudgetSpec, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let budget = BudgetSpec {
        max_restarts: raw.max_restarts.unwrap_or(5),
        window: raw.window.unwrap_or(Duration::from_secs(600)),
    };
    if budget.max_restarts > 10_000 {
        return Err(bad("budget.max_restarts", "must be 0..=10000".into()));
    }
    if budget.window.get().is_zero() {
        return Err(bad("budget.window", "must be positive".into()));
    }
    Ok(budget)
}

fn limits(at: &KeyPrefix, raw: &RawLimits) -> Result<Limits, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let nano_cpus = match raw.cpus {
        None => None,
        Some(c) if (0.01..=1024.0).contains(&c) => Some((c * 1e9).round() as i64),
        Some(c) => return Err(bad("limits.cpus", format!("{c}: must be 0.01..=1024"))),
    };
    let memory_bytes = match raw.memory {
        None => None,
        // Docker refuses less than 6 MiB.
        Some(ByteSize(b)) if (6 << 20..=i64::MAX as u64).contains(&b) => Some(b as i64),
        Some(_) => return Err(bad("limits.memory", "must be at least 6MiB".into())),
    };
    let pids = match raw.pids {
        None => None,
        Some(p) if (1..=4_194_304).contains(&p) => Some(p),
        Some(p) => return Err(bad("limits.pids", format!("{p}: must be 1..=4194304"))),
    };
    Ok(Limits {
        nano_cpus,
        memory_bytes,
        pids,
    })
}

fn network(
    at: &KeyPrefix,
    transport: &Transport,
    raw: Option<String>,
) -> Result<String, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let network = match (transport, raw) {
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
    Ok(network)
}

fn cap_drop(at: &KeyPrefix, raw: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let cap_drop = raw.unwrap_or_else(|| vec!["ALL".into()]);
    for c in &cap_drop {
        if c.is_empty() || !c.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(
                "cap_drop",
                format!("{c:?}: expected a capability name such as \"ALL\" or \"NET_RAW\""),
            ));
        }
    }
    Ok(cap_drop)
}

fn mounts(at: &KeyPrefix, path: &Path, raw: Vec<RawMount>) -> Result<Vec<MountSpec>, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let mut targets = HashSet::new();
    let mut mounts = Vec::with_capacity(raw.len());
    for (m_i, m) in raw.into_iter().enumerate() {
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
    Ok(mounts)
}

fn check_labels(at: &KeyPrefix, labels: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    for k in labels.keys() {
        if k.is_empty() || k.starts_with("mcpwatch.") {
            return Err(bad(
                &format!("labels.{k}"),
                "label keys must be non-empty and must not start with \"mcpwatch.\" (reserved)"
                    .into(),
            ));
        }
    }
    Ok(())
}

fn gateway_sessions(
    at: &KeyPrefix,
    raw: &RawServerGateway,
    transport: &Transport,
) -> Result<GatewaySessions, ConfigError> {
    let per_client = raw.sessions == Some(SessionsKind::PerClient);
    if !per_client {
        if raw.max_sessions.is_some() || raw.warm_pool.is_some() {
            return Err(at.invalid(
                "gateway.max_sessions",
                "max_sessions and warm_pool apply to sessions = \"per_client\" only".into(),
            ));
        }
        return Ok(GatewaySessions::Shared);
    }
    if *transport != Transport::Stdio {
        return Err(at.invalid(
            "gateway.sessions",
            "\"per_client\" is for stdio servers (an http server has its own sessions)".into(),
        ));
    }
    let max_sessions = raw.max_sessions.unwrap_or(8);
    let warm_pool = raw.warm_pool.unwrap_or(0);
    if !(1..=256).contains(&max_sessions) {
        return Err(at.invalid("gateway.max_sessions", "must be 1..=256".into()));
    }
    if warm_pool > max_sessions {
        return Err(at.invalid(
            "gateway.warm_pool",
            "must not exceed gateway.max_sessions".into(),
        ));
    }
    Ok(GatewaySessions::PerClient {
        max_sessions,
        warm_pool,
    })
}

fn probe(at: &KeyPrefix, raw: &RawProbe) -> Result<ProbeSpec, ConfigError> {
    let bad = |key: &str, msg: String| at.invalid(key, msg);
    let probe = ProbeSpec {
        interval: raw.interval.unwrap_or(Duration::from_secs(15)),
        timeout: raw.timeout.unwrap_or(Duration::from_secs(5)),
        failure_threshold: raw.failure_threshold.unwrap_or(3),
        startup_grace: raw.startup_grace.unwrap_or(Duration::from_secs(10)),
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
    if probe.startup_grace.get() > std::time::Duration::from_secs(3600) {
        return Err(bad("probe.startup_grace", "must be at most 1h".into()));
    }
    Ok(probe)
}

pub(super) fn is_dns_label(s: &str) -> bool {
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
pub(super) fn is_network_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 255
        && matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `http(s)://host[:port][/path]` with a non-empty host and a valid port.
pub(super) fn check_url(url: &str) -> Result<(), &'static str> {
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
