//! How a spec becomes a container: the labels that mark our containers, their names, the
//! create body (hardening, limits, Docker's own restart policy off) and the config hash that
//! decides when a container must be recreated.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, RestartPolicy as DockerRestartPolicy,
    RestartPolicyNameEnum,
};

use super::spec::{McpServerSpec, Transport};

pub const LABEL_MANAGED: &str = "mcpwatch.managed";
pub const LABEL_SERVER: &str = "mcpwatch.server";
pub const LABEL_AGENT: &str = "mcpwatch.agent";
pub const LABEL_HASH: &str = "mcpwatch.config-hash";
/// `LABEL_MANAGED`'s value on a gateway client container (`sessions = "per_client"`): the
/// supervisor lists only `"true"`, so it never adopts or removes these.
pub const MANAGED_CLIENT: &str = "client-session";

/// Bumped whenever the way a spec is turned into a container changes, so every managed
/// container is recreated with the new template instead of silently keeping the old one.
const HASH_VERSION: &str = "mcpwatch-container-v1";

/// `mcpwatch-<agent_id>-<server>`, with characters Docker refuses in names replaced by `-`.
pub fn container_name(agent_id: &str, server: &str) -> String {
    format!("mcpwatch-{agent_id}-{server}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The container template for `spec`: our labels, hardening, limits, and Docker's own
/// restart policy off (the supervisor restarts, with backoff and a budget).
pub fn create_body(agent_id: &str, spec: &McpServerSpec) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_SERVER.into(), spec.name.clone());
    labels.insert(LABEL_AGENT.into(), agent_id.into());
    labels.insert(LABEL_HASH.into(), spec.config_hash());
    let stdio = matches!(spec.transport, Transport::Stdio);
    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            source: Some(m.source.to_string_lossy().into_owned()),
            target: Some(m.target.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let host_config = HostConfig {
        network_mode: Some(spec.network.clone()),
        readonly_rootfs: Some(spec.read_only),
        security_opt: spec
            .no_new_privileges
            .then(|| vec!["no-new-privileges:true".to_owned()]),
        cap_drop: Some(spec.cap_drop.clone()),
        nano_cpus: spec.limits.nano_cpus,
        memory: spec.limits.memory_bytes,
        // No swap beyond the memory cap, so an OOM is an OOM and not a slow crawl.
        memory_swap: spec.limits.memory_bytes,
        pids_limit: spec.limits.pids,
        mounts: (!mounts.is_empty()).then_some(mounts),
        restart_policy: Some(DockerRestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        init: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.command.clone(),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(
            spec.env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose()))
                .collect(),
        ),
        labels: Some(labels),
        // A stdio server reads requests from stdin and exits on EOF: keep stdin open with
        // nothing attached so it stays up; the gateway attaches to it when it is running.
        open_stdin: Some(stdio),
        stdin_once: Some(false),
        attach_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
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
        mcpwatch_common::hex::encode(digest.as_ref())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::{validate_servers, RawMcpServer};

    #[test]
    fn names_are_sanitised() {
        assert_eq!(
            container_name("host-1.example.com", "files"),
            "mcpwatch-host-1.example.com-files"
        );
        assert_eq!(container_name("a b/c", "x"), "mcpwatch-a-b-c-x");
    }

    #[test]
    fn template_carries_labels_hardening_and_no_docker_restart() {
        #[derive(serde::Deserialize)]
        struct Doc {
            mcp_server: Vec<RawMcpServer>,
        }
        let doc: Doc = mcpwatch_common::config::parse(
            std::path::Path::new("/x.toml"),
            r#"
[[mcp_server]]
name = "git"
image = "example/git:1"
transport = "stdio"
command = ["/srv"]
env = { TOKEN = "abc" }
limits = { cpus = 0.5, memory = "64MiB", pids = 32 }
labels = { team = "x" }
"#,
        )
        .unwrap();
        let spec = validate_servers(std::path::Path::new("/x.toml"), doc.mcp_server)
            .unwrap()
            .remove(0);
        let b = create_body("agent-1", &spec);
        let labels = b.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_SERVER], "git");
        assert_eq!(labels[LABEL_AGENT], "agent-1");
        assert_eq!(labels[LABEL_HASH], spec.config_hash());
        assert_eq!(labels["team"], "x");
        assert_eq!(b.open_stdin, Some(true));
        assert_eq!(b.entrypoint, Some(vec!["/srv".to_string()]));
        assert_eq!(b.cmd, None);
        assert_eq!(b.env, Some(vec!["TOKEN=abc".to_string()]));
        let h = b.host_config.unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.security_opt, Some(vec!["no-new-privileges:true".into()]));
        assert_eq!(h.cap_drop, Some(vec!["ALL".into()]));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.memory, Some(64 << 20));
        assert_eq!(h.pids_limit, Some(32));
        assert_eq!(
            h.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
    }
}
