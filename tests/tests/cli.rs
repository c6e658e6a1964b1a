//! The command line: example configs parse, invalid configs exit 64 naming file, line and
//! key, `--help` works everywhere, quickstart runs, and systemd hears READY=1 only once the
//! listeners are bound.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mcpwatch_agent::AgentConfig;
use mcpwatch_collector::config::CollectorConfig;
use mcpwatch_tests::process::{signal, wait_while_running, CollectorProc};
use mcpwatch_tests::{bin, db, free_addr, http_get, Pki};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn every_example_config_parses_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    pki.agent("web-1");
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("config")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let copy = tmp.path().join(&name);
        std::fs::copy(&path, &copy).unwrap();
        match name.as_str() {
            "agent.toml" => {
                let c = AgentConfig::load(&copy).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(c.agent_id, "web-1");
                assert_eq!(c.interval.get(), Duration::from_secs(1));
                assert_eq!(c.spool_max_bytes, 256 << 20);
            }
            "agent-mcp.toml" => {
                let c = AgentConfig::load(&copy).unwrap_or_else(|e| panic!("{e}"));
                let names: Vec<&str> = c.servers.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(names, ["search", "files"]);
                assert_eq!(c.servers[1].network, "none", "stdio default network");
                assert_eq!(c.servers[0].probe.failure_threshold, 3);
                assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:9470");
                assert!(c.gateway.tokens.is_empty() && c.gateway.tls.is_none());
            }
            "collector.toml" => {
                let c = CollectorConfig::load(&copy).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(c.max_frame_len, 1 << 20);
                assert_eq!(c.max_series_per_agent, 50_000);
            }
            "collector-alerting.toml" => {
                // Its secrets come from files next to it.
                let secrets = tmp.path().join("secrets");
                std::fs::create_dir_all(&secrets).unwrap();
                for (file, value) in [
                    ("pagerduty-routing-key", "R0UT1NGKEY0000000000000000000000"),
                    (
                        "slack-webhook-url",
                        "https://hooks.slack.com/services/T0/B0/X",
                    ),
                    ("webhook-hmac-key", "k"),
                    (
                        "discord-webhook-url",
                        "https://discord.com/api/webhooks/1/x",
                    ),
                    ("smtp-password", "pw"),
                    (
                        "teams-workflow-url",
                        "https://prod-01.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke",
                    ),
                ] {
                    std::fs::write(secrets.join(file), value).unwrap();
                }
                std::fs::copy(
                    repo().join("config/rules.toml"),
                    tmp.path().join("rules.toml"),
                )
                .unwrap();
                let c = CollectorConfig::load(&copy).unwrap_or_else(|e| panic!("{e}"));
                let a = &c.alerting;
                assert_eq!(a.receivers.len(), 6);
                let platform = &a.setup.routing.routes[1];
                assert_eq!(
                    platform.owner.as_ref().map(|o| o.selector()),
                    Some(r#"{team="platform"}"#)
                );
                let policy = platform.escalation.as_ref().expect("escalation");
                assert_eq!(policy.steps[1].after_ms, 15 * 60_000);
                assert_eq!(policy.repeat_ms, Some(2 * 3_600_000));
                assert!(a.setup.receiver_owners.contains_key("platform-teams"));
                let limits = a.setup.silence_limits;
                assert_eq!((limits.max, limits.per_user), (1000, 100));
                assert_eq!(a.setup.routing.routes.len(), 2);
                assert_eq!(a.setup.routing.default_receivers, ["ops-chat"]);
                assert_eq!(a.setup.inhibit.len(), 3, "two built-in inhibitions + one");
                let names: Vec<&str> = a.setup.rules.iter().map(|r| r.name.as_str()).collect();
                assert!(names.contains(&"mcp_probe_slow"));
                assert!(!names.contains(&"agent_dropping_samples"), "disabled");
                let cpu = a
                    .setup
                    .rules
                    .iter()
                    .find(|r| r.name == "host_cpu_high")
                    .unwrap();
                assert_eq!(cpu.thresholds.warning.unwrap().fire, 0.7);
                assert_eq!(cpu.thresholds.critical.unwrap().fire, 0.95, "built-in kept");
            }
            "rules.toml" => {
                let text = std::fs::read_to_string(&copy).unwrap();
                let rules = mcpwatch_collector::alert::load_rules(&copy, &text)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(rules.iter().any(|r| r.name == "mcp_probe_slow"));
                let p99 = rules.iter().find(|r| r.name == "mcp_tools_list_slow");
                assert_eq!(p99.and_then(|r| r.quantile), Some(0.99));
                let ratio = rules
                    .iter()
                    .find(|r| r.name == "mcp_tool_error_ratio_high")
                    .unwrap();
                assert_eq!(ratio.window_ms, 600_000);
                assert_eq!(ratio.min_denominator, Some(50.0));
                assert_eq!(
                    ratio.thresholds.critical.unwrap().fire,
                    0.2,
                    "built-in kept"
                );
            }
            other => panic!("config/{other} has no parse test: add it here"),
        }
        seen += 1;
    }
    assert_eq!(seen, 5);
}

#[test]
fn invalid_configs_exit_64_naming_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[collector]\naddress = \"x:1\"\nbogus = 1\n").unwrap();
    for binary in ["mcpwatch-agent", "mcpwatch-collector"] {
        for cmd in ["check-config", "run"] {
            let out = Command::new(bin(binary))
                .args([cmd, "--config"])
                .arg(&bad)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(64), "{binary} {cmd}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("{}:", bad.display())), "{err}");
            if binary == "mcpwatch-agent" {
                assert!(
                    err.contains(":3:") && err.contains("collector.bogus"),
                    "{err}"
                );
            } else {
                assert!(err.contains("collector"), "{err}");
            }
        }
    }
    let missing = Command::new(bin("mcpwatch-agent"))
        .args(["check-config", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
}

#[test]
fn check_config_accepts_a_valid_config() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    pki.agent("web-1");
    std::fs::copy(
        repo().join("config/agent.toml"),
        tmp.path().join("agent.toml"),
    )
    .unwrap();
    let out = Command::new(bin("mcpwatch-agent"))
        .args(["check-config", "--config"])
        .arg(tmp.path().join("agent.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_works_on_every_command() {
    let commands: &[(&str, &[&str])] = &[
        ("mcpwatch-agent", &[]),
        ("mcpwatch-agent", &["run"]),
        ("mcpwatch-agent", &["check-config"]),
        ("mcpwatch-collector", &[]),
        ("mcpwatch-collector", &["run"]),
        ("mcpwatch-collector", &["check-config"]),
        ("mcpwatch-collector", &["certs"]),
        ("mcpwatch-collector", &["certs", "init"]),
        ("mcpwatch-collector", &["certs", "issue-agent"]),
        ("mcpwatch-collector", &["quickstart"]),
    ];
    for (binary, args) in commands {
        let out = Command::new(bin(binary))
            .args(*args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{binary} {args:?} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn certs_commands_create_a_working_pki() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let run = |args: &[&str]| {
        Command::new(bin("mcpwatch-collector"))
            .args(args)
            .output()
            .unwrap()
    };
    let d = dir.to_str().unwrap();
    assert!(
        run(&["certs", "init", "--dir", d, "--name", "collector.lan"])
            .status
            .success()
    );
    assert!(run(&["certs", "issue-agent", "--dir", d, "--name", "db-7"])
        .status
        .success());
    let again = run(&["certs", "init", "--dir", d]);
    assert!(!again.status.success(), "init must not overwrite a CA");
    let bad = run(&["certs", "issue-agent", "--dir", d, "--name", "../etc"]);
    assert!(!bad.status.success());
    let key = std::fs::metadata(dir.join("agent-db-7.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read_to_string(dir.join("agent-db-7.crt")).unwrap();
    assert_eq!(mcpwatch_common::tls::identity_of_pem(&pem).unwrap(), "db-7");
}

/// Runs the quickstart in `dir` with the demo image `image`; its stdout goes to `out`, its
/// log to `out` with `.log` added.
fn quickstart(
    dir: &Path,
    out: &Path,
    addrs: [std::net::SocketAddr; 4],
    image: &str,
) -> std::process::Child {
    mcpwatch_tests::process::quickstart_command(dir, addrs)
        .args(["--demo-image", image])
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(log_of(out)).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until the quickstart `child` (stdout to `out`) has stored samples of its host in
/// `db_path`.
fn wait_samples_stored(child: &mut std::process::Child, out: &Path, db_path: &Path) {
    wait_while_running(
        child,
        &[out, &log_of(out)],
        "quickstart samples stored",
        Duration::from_secs(60),
        || db::try_sample_count(db_path, "local").filter(|n| *n > 0),
    );
}

/// Where [`quickstart`] writes the log of a run whose stdout goes to `out`.
fn log_of(out: &Path) -> std::path::PathBuf {
    out.with_extension("log")
}

/// Without a Docker engine the quickstart says so in one line and runs everything else:
/// the host streams and the console signs in.
#[test]
fn quickstart_without_docker_says_so_in_one_line_and_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let addrs = [free_addr(), free_addr(), free_addr(), free_addr()];
    let http = addrs[1];
    let out = tmp.path().join("stdout");
    let mut child = mcpwatch_tests::process::quickstart_command(&dir, addrs)
        // No engine behind this socket.
        .env(
            "DOCKER_HOST",
            format!("unix://{}", tmp.path().join("no-docker.sock").display()),
        )
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(log_of(&out)).unwrap())
        .spawn()
        .unwrap();
    let db_path = dir.join("collector.db");
    wait_samples_stored(&mut child, &out, &db_path);
    let printed = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = printed.lines().filter(|l| l.contains("Docker")).collect();
    assert_eq!(
        lines,
        ["  demo MCP server           none: Docker does not answer; start dockerd and run scripts/demo-image.sh"],
        "{printed}"
    );
    assert_eq!(http_get(http, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(http, "/").unwrap().0, 200, "the console page");
    signal(&child, "INT");
    assert!(child.wait().unwrap().success());
}

/// Waits until the demo server's `probe_ok` events number more than `after`, while the
/// quickstart `child` (stdout to `out`) runs.
fn wait_demo_probed(
    child: &mut std::process::Child,
    out: &Path,
    db_path: &Path,
    after: usize,
) -> usize {
    wait_while_running(
        child,
        &[out, &log_of(out)],
        "the demo server is probed",
        Duration::from_secs(600),
        || {
            let n = db::events(db_path, "local")
                .into_iter()
                .filter(|e| e.server == "demo" && e.kind == "probe_ok")
                .count();
            (n > after).then_some(n)
        },
    )
}

#[test]
fn quickstart_runs_collector_and_agent_and_stops_on_ctrl_c() {
    mcpwatch_tests::docker::ensure_dockerd();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let addrs = [free_addr(), free_addr(), free_addr(), free_addr()];
    let [ingest, http, agent, gateway] = addrs;
    let out = tmp.path().join("stdout");
    // A demo image of this run's own: missing at first, so the quickstart builds it with
    // scripts/demo-image.sh (from the fixture build the test script already made).
    let image = format!(
        "{}:test",
        mcpwatch_tests::docker::unique_name("mcpwatch-demo")
    );
    let _cleanup = mcpwatch_tests::rig::Cleanup("local".into());
    let _image = RemoveImage(image.clone());
    let mut child = quickstart(&dir, &out, addrs, &image);
    let db_path = dir.join("collector.db");
    wait_samples_stored(&mut child, &out, &db_path);
    assert_eq!(http_get(http, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(agent, "/healthz").unwrap().0, 200);
    // The image is built in the background and the server added to the running agent.
    let probed = wait_demo_probed(&mut child, &out, &db_path, 0);
    let printed = std::fs::read_to_string(&out).unwrap();
    for line in [
        format!("demo MCP server           building image {image} with scripts/demo-image.sh"),
        format!("demo MCP server           ready: http://{gateway}/mcp/demo"),
        format!("http://{http}/metrics"),
        format!("http://{agent}/metrics"),
        ingest.to_string(),
    ] {
        assert!(printed.contains(&line), "{line} not printed:\n{printed}");
    }
    let token = dir.join("admin.token");
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&token).unwrap().trim().len() >= 32);
    // The console: its URL, user and a 0600 password file that signs in.
    let password_file = dir.join("admin.password");
    for line in [
        format!("console                   http://{http}/"),
        "console user              admin".to_owned(),
        format!("console password file     {}", password_file.display()),
    ] {
        assert!(printed.contains(&line), "{line} not printed:\n{printed}");
    }
    assert_eq!(
        std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let password = std::fs::read_to_string(&password_file).unwrap();
    let body = serde_json::json!({"username": "admin", "password": password.trim()}).to_string();
    let login = mcpwatch_tests::api::request(
        http,
        "POST",
        "/api/v1/sessions",
        None,
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(login.status, 201, "{}", login.body);
    assert_eq!(http_get(http, "/").unwrap().0, 200, "the console page");
    signal(&child, "INT");
    let status = child.wait().unwrap();
    assert!(status.success(), "quickstart exit: {status}");

    // Again in the same directory: the image is there now, so the demo runs from the start.
    let out = tmp.path().join("stdout.2");
    let mut child = quickstart(&dir, &out, addrs, &image);
    wait_demo_probed(&mut child, &out, &db_path, probed);
    let printed = std::fs::read_to_string(&out).unwrap();
    let ready = format!("demo MCP server           http://{gateway}/mcp/demo (image {image})");
    assert!(printed.contains(&ready), "{ready} not printed:\n{printed}");
    signal(&child, "INT");
    assert!(child.wait().unwrap().success());
}

/// Removes a test's Docker image when the test ends, however it ends.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        mcpwatch_tests::docker::docker(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn systemd_hears_ready_after_the_listeners_are_bound_and_stopping_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    // Start once through the harness for a config, then again under a notify socket.
    let mut c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    assert!(c.stop().success(), "SIGTERM exits cleanly");
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(bin("mcpwatch-collector"))
        .args(["run", "--config"])
        .arg(&c.config)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 30 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // READY came after bind: both listeners answer now, without retrying.
    std::net::TcpStream::connect(c.ingest).expect("ingest bound before READY");
    assert_eq!(http_get(c.http, "/readyz").unwrap().0, 200);
    signal(&child, "TERM");
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}
