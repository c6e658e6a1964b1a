//! A collector process and an agent with MCP servers under supervision, for the tests that
//! drive real containers (supervision, gateway): start, wait for events, read metrics, and
//! remove every container of the test's agent however the test ends.

use std::time::{Duration, Instant};

use crate::db::{self, EventRow};
use crate::docker::{docker, ensure_dockerd, fixture_image, unique_name};
use crate::process::{AgentProc, CollectorProc};
use crate::{free_addr, metric, wait_for, Pki};

pub const LONG: Duration = Duration::from_secs(60);

/// An `http` fixture server on the host network at a free loopback port.
pub fn http_server(name: &str, fixture_args: &[&str], extra: &str) -> String {
    let port = free_addr().port();
    let mut args = vec![
        "--transport".to_owned(),
        "http".to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(fixture_args.iter().map(|s| s.to_string()));
    format!(
        "\n[[mcp_server]]\nname = \"{name}\"\nimage = \"{image}\"\nargs = {args:?}\n\
         transport = \"http\"\nurl = \"http://127.0.0.1:{port}/mcp\"\nnetwork = \"host\"\n{extra}\n",
        image = fixture_image(),
    )
}

/// A stdio fixture server named `name`, probed every `interval` (the first probe a second
/// after start).
pub fn stdio_server(name: &str, fixture_args: &[&str], interval: &str, extra: &str) -> String {
    let mut args = vec!["--transport", "stdio"];
    args.extend_from_slice(fixture_args);
    format!(
        "\n[[mcp_server]]\nname = \"{name}\"\nimage = \"{image}\"\nargs = {args:?}\n\
         transport = \"stdio\"\n[mcp_server.probe]\ninterval = \"{interval}\"\ntimeout = \"900ms\"\n{extra}\n",
        image = fixture_image(),
    )
}

/// Removes every container of one test agent when the test ends, however it ends.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=mcpwatch.agent={}", self.0),
        ]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            docker(&["rm", "-f", id]);
        }
    }
}

/// A collector process and an agent with its own id, configured with `servers`.
pub struct Rig {
    // Drop order: agent (so it stops recreating), then containers, then files.
    pub agent: AgentProc,
    _cleanup: Cleanup,
    pub collector: CollectorProc,
    pub id: String,
    _pki: Pki,
    _tmp: tempfile::TempDir,
}

impl Rig {
    pub fn start(servers: &str) -> Rig {
        Rig::start_with_env(servers, &[])
    }

    /// With extra environment for the agent (DOCKER_HOST for a private daemon).
    pub fn start_with_env(servers: &str, env: &[(&str, &str)]) -> Rig {
        Rig::start_with(servers, env, "", &[])
    }

    /// With `gateway` (TOML lines) added to the agent's `[gateway]` table, and `collector`
    /// files (name, text) written to the collector's directory, a `collector.toml` among them
    /// appended to its configuration.
    pub fn start_with(
        servers: &str,
        env: &[(&str, &str)],
        gateway: &str,
        collector: &[(&str, &str)],
    ) -> Rig {
        ensure_dockerd();
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(&tmp.path().join("pki"));
        let dir = tmp.path().join("c");
        std::fs::create_dir_all(&dir).expect("collector dir");
        let mut extra = String::new();
        for (name, text) in collector {
            if *name == "collector.toml" {
                extra.push_str(text);
            } else {
                std::fs::write(dir.join(name), text).expect("collector file");
            }
        }
        let collector = CollectorProc::start(&pki, &dir, &extra);
        let id = unique_name("sup");
        let agent = AgentProc::configure(
            &pki,
            &tmp.path().join("a"),
            &id,
            collector.ingest,
            "500ms",
            "256MiB",
        );
        if !gateway.is_empty() {
            let text = std::fs::read_to_string(&agent.config).expect("agent config");
            let text = text.replacen("[gateway]\n", &format!("[gateway]\n{gateway}\n"), 1);
            std::fs::write(&agent.config, text).expect("agent config");
        }
        agent.append_config(servers);
        let mut agent = agent;
        agent.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut rig = Rig {
            agent,
            _cleanup: Cleanup(id.clone()),
            collector,
            id,
            _pki: pki,
            _tmp: tmp,
        };
        rig.agent.restart();
        rig
    }

    pub fn events(&self) -> Vec<EventRow> {
        db::events(&self.collector.db, &self.id)
    }

    /// Waits for the `n`-th event of `kind` for `server` at the collector and returns them all.
    pub fn wait_events(&self, server: &str, kind: &str, n: usize) -> Vec<EventRow> {
        let deadline = Instant::now() + LONG;
        loop {
            let found: Vec<EventRow> = self
                .events()
                .into_iter()
                .filter(|e| e.server == server && e.kind == kind)
                .collect();
            if found.len() >= n {
                return found;
            }
            if Instant::now() > deadline {
                let logs = self.agent.logs();
                let tail: Vec<&str> = logs.lines().rev().take(40).collect();
                let events: Vec<String> = self
                    .events()
                    .iter()
                    .map(|e| format!("{} {} {}", e.server, e.kind, e.detail))
                    .collect();
                panic!(
                    "timed out waiting for {n}× {kind} for {server:?}\nevents: {events:#?}\nagent log (newest first):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the gateway is attached to `server` and a probe has listed its tools.
    pub fn wait_attached(&self, server: &str) {
        self.wait_events(server, "probe_ok", 1);
        wait_for("gateway attached", LONG, || {
            (self.agent_metric("mcpwatch_mcp_gateway_attached", server) == Some(1.0)).then_some(())
        });
    }

    /// Waits until the info series of `server` carries the negotiated `revision`.
    pub fn wait_revision(&self, server: &str, revision: &str) {
        let server = format!(r#"server="{server}""#);
        let revision = format!(r#"protocol_version="{revision}""#);
        wait_for("revision on the info series", LONG, || {
            self.agent
                .metrics()
                .lines()
                .any(|l| {
                    l.starts_with("mcpwatch_server_info{")
                        && l.contains(&server)
                        && l.contains(&revision)
                })
                .then_some(())
        });
    }

    pub fn container(&self, server: &str) -> String {
        format!("mcpwatch-{}-{server}", self.id)
    }

    pub fn agent_metric(&self, name: &str, server: &str) -> Option<f64> {
        metric(
            &self.agent.metrics(),
            &format!("{name}{{server=\"{server}\"}}"),
        )
    }
}
