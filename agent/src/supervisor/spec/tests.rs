//! Tests of `[[mcp_server]]` parsing, validation and the config hash.

use std::path::Path;

use mcpwatch_common::config::{self as cfg, ConfigError, Duration};
use serde::Deserialize;

use super::validate::{check_url, is_dns_label, is_network_name};
use super::*;
use mcpwatch_common::secret::Secret;
use std::collections::HashSet;

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
    // Stdio servers are probed through the gateway's attach, as cheaply as http ones.
    assert_eq!(g.probe.interval, Duration::from_secs(15));
    assert_eq!(g.probe.startup_grace, Duration::from_secs(10));
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
