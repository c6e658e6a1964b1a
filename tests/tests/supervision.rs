//! MCP server supervision end to end with a real Docker engine, the real agent and collector
//! binaries and the rmcp fixture server in a FROM scratch image: start and probe, restart
//! with backoff, crash loop to "gave up", hang to restart, tool drift until approved, adoption
//! after an agent restart, reload, and operator commands through the collector.

use std::time::{Duration, Instant};

use mcpwatch_collector::command::CommandRouter;
use mcpwatch_collector::config::CollectorConfig;
use mcpwatch_common::wire::CommandAction;
use mcpwatch_tests::db::{self, EventRow};
use mcpwatch_tests::docker::{docker, ensure_dockerd, fixture_image, unique_name, PrivateDockerd};
use mcpwatch_tests::process::{signal, AgentProc, CollectorFiles};
use mcpwatch_tests::rig::{http_server, Cleanup, Rig, LONG};
use mcpwatch_tests::{metric, wait_for, Pki};
use tokio_util::sync::CancellationToken;

fn inspect(container: &str, format: &str) -> String {
    let out = docker(&["inspect", "-f", format, container]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn http_server_starts_is_probed_and_everything_reaches_the_collector() {
    // A secret from a file: it must reach the container and never the agent's log.
    let secrets = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-value-9f2c";
    std::fs::write(secrets.path().join("api-key"), format!("{secret}\n")).unwrap();
    let rig = Rig::start(&http_server(
        "web",
        &[],
        &format!(
            "[mcp_server.env]\nAPI_KEY = {{ file = \"{}\" }}\nMODE = \"test\"\n\
             [mcp_server.limits]\ncpus = 0.5\nmemory = \"128MiB\"\npids = 64\n\
             [mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
            secrets.path().join("api-key").display()
        ),
    ));
    let ok = rig.wait_events("web", "probe_ok", 1);
    assert!(ok[0].detail.contains("tools=3"), "{ok:?}");
    rig.wait_events("web", "tools_baseline", 1);
    rig.wait_events("web", "started", 1);
    assert_eq!(inspect(&rig.container("web"), "{{.State.Running}}"), "true");
    // Hardening from the defaults: read-only root, no new privileges, all caps dropped.
    assert_eq!(
        inspect(&rig.container("web"), "{{.HostConfig.ReadonlyRootfs}}"),
        "true"
    );
    assert!(
        inspect(&rig.container("web"), "{{.HostConfig.SecurityOpt}}").contains("no-new-privileges")
    );
    assert!(inspect(&rig.container("web"), "{{.HostConfig.CapDrop}}").contains("ALL"));
    // Limits from the config.
    assert_eq!(
        inspect(&rig.container("web"), "{{.HostConfig.NanoCpus}}"),
        "500000000"
    );
    assert_eq!(
        inspect(&rig.container("web"), "{{.HostConfig.Memory}}"),
        "134217728"
    );
    assert_eq!(
        inspect(&rig.container("web"), "{{.HostConfig.PidsLimit}}"),
        "64"
    );
    let env = inspect(&rig.container("web"), "{{json .Config.Env}}");
    assert!(
        env.contains(&format!("API_KEY={secret}")) && env.contains("MODE=test"),
        "{env}"
    );
    assert!(
        !rig.agent.logs().contains(secret),
        "secret value in the agent log"
    );
    assert!(
        !rig.events().iter().any(|e| e.detail.contains(secret)),
        "secret value in an event"
    );
    wait_for("server metrics on /metrics", LONG, || {
        (rig.agent_metric("mcpwatch_server_up", "web") == Some(1.0)
            && rig.agent_metric("mcpwatch_server_probe_up", "web") == Some(1.0)
            && rig.agent_metric("mcpwatch_server_tools", "web") == Some(3.0))
        .then_some(())
    });
    let series = wait_for("server series stored", LONG, || {
        let s = db::series_names(&rig.collector.db, &rig.id);
        s.iter()
            .any(|n| n == "mcpwatch_server_probe_latency_seconds")
            .then_some(s)
    });
    for name in [
        "mcpwatch_server_up",
        "mcpwatch_server_memory_bytes",
        "mcpwatch_server_tools",
    ] {
        assert!(
            series.iter().any(|n| n == name),
            "{name} not stored: {series:?}"
        );
    }
    mcpwatch_tests::promtool_check("agent with MCP servers", &rig.agent.metrics());
}

#[test]
fn killed_container_is_restarted_after_the_configured_delays() {
    let rig = Rig::start(&http_server(
        "web",
        &[],
        "[mcp_server.backoff]\ninitial = \"2s\"\nmax = \"4s\"\n[mcp_server.probe]\ninterval = \"5m\"\n",
    ));
    rig.wait_events("web", "started", 1);
    for (round, expected) in [(1usize, 2.0f64), (2, 4.0)] {
        docker(&["kill", &rig.container("web")]);
        let exited = rig.wait_events("web", "exited", round);
        let restarted = rig.wait_events("web", "restarted", round);
        let delay = (restarted[round - 1].ts_ms - exited[round - 1].ts_ms) as f64 / 1000.0;
        assert!(
            delay >= expected * 0.8 && delay <= expected * 1.2,
            "restart {round}: {delay:.2}s, expected {expected}s ±20%"
        );
    }
    // /metrics shows the figures of the last sampling cycle.
    wait_for("restarts_total 2", LONG, || {
        (rig.agent_metric("mcpwatch_server_restarts_total", "web") == Some(2.0)).then_some(())
    });
}

#[test]
fn crash_loop_gives_up_after_the_budget() {
    let rig = Rig::start(&http_server(
        "flaky",
        &["--crash-after", "0.2"],
        "[mcp_server.backoff]\ninitial = \"100ms\"\nmax = \"200ms\"\n\
         [mcp_server.budget]\nmax_restarts = 2\nwindow = \"1m\"\n[mcp_server.probe]\ninterval = \"5m\"\n",
    ));
    let gave_up = rig.wait_events("flaky", "gave_up", 1);
    assert_eq!(
        rig.events()
            .iter()
            .filter(|e| e.server == "flaky" && e.kind == "exited")
            .count(),
        3
    );
    assert!(!gave_up[0].detail.is_empty());
    wait_for("gave_up metric", LONG, || {
        (rig.agent_metric("mcpwatch_server_gave_up", "flaky") == Some(1.0)).then_some(())
    });
    let m = rig.agent.metrics();
    let state = |s: &str| {
        metric(
            &m,
            &format!("mcpwatch_server_state{{server=\"flaky\",state=\"{s}\"}}"),
        )
    };
    assert_eq!(state("gave_up"), Some(1.0), "{m}");
    assert_eq!(state("running"), Some(0.0), "{m}");
    assert_eq!(
        inspect(&rig.container("flaky"), "{{.State.Running}}"),
        "false"
    );
}

#[test]
fn hung_server_fails_probes_turns_unhealthy_and_is_restarted() {
    let rig = Rig::start(&http_server(
        "stuck",
        &["--hang-after", "2"],
        "[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfailure_threshold = 2\n\
         [mcp_server.backoff]\ninitial = \"1s\"\n",
    ));
    let failed = rig.wait_events("stuck", "probe_failed", 2);
    assert!(failed[0].detail.contains("kind=timeout"), "{failed:?}");
    rig.wait_events("stuck", "unhealthy", 1);
    rig.wait_events("stuck", "restarted", 1);
    wait_for("restart counted", LONG, || {
        (rig.agent_metric("mcpwatch_server_restarts_total", "stuck") >= Some(1.0)).then_some(())
    });
}

#[test]
fn stdio_server_is_supervised_and_probed_in_its_own_container() {
    let servers = format!(
        "\n[[mcp_server]]\nname = \"tools\"\nimage = \"{}\"\nargs = [\"--transport\", \"stdio\"]\n\
         transport = \"stdio\"\n[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
        fixture_image()
    );
    let rig = Rig::start(&servers);
    let ok = rig.wait_events("tools", "probe_ok", 1);
    assert!(ok[0].detail.contains("tools=3"), "{ok:?}");
    assert_eq!(
        inspect(&rig.container("tools"), "{{.State.Running}}"),
        "true"
    );
    assert_eq!(
        inspect(&rig.container("tools"), "{{.HostConfig.NetworkMode}}"),
        "none"
    );
}

#[test]
fn agent_restart_adopts_running_servers_without_touching_them() {
    let mut rig = Rig::start(&http_server(
        "web",
        &[],
        "[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
    ));
    rig.wait_events("web", "probe_ok", 1);
    let id = inspect(&rig.container("web"), "{{.Id}}");
    let started_at = inspect(&rig.container("web"), "{{.State.StartedAt}}");
    rig.agent.kill9();
    rig.agent.restart();
    rig.wait_events("web", "adopted", 1);
    let after = rig.events().len();
    rig.wait_events("web", "probe_ok", 2);
    assert_eq!(
        inspect(&rig.container("web"), "{{.Id}}"),
        id,
        "container replaced"
    );
    assert_eq!(
        inspect(&rig.container("web"), "{{.State.StartedAt}}"),
        started_at,
        "restarted"
    );
    let out = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=mcpwatch.agent={}", rig.id),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count(),
        1,
        "duplicates"
    );
    assert!(
        !rig.events()[..after]
            .iter()
            .any(|e| e.server == "web" && e.kind == "restarted"),
        "adoption restarted the server"
    );
    // A graceful stop (SIGTERM) drains within the grace period and leaves the server
    // running for the next agent to adopt.
    let started = Instant::now();
    assert!(rig.agent.stop().success(), "agent exit after SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain took {:?}",
        started.elapsed()
    );
    assert_eq!(inspect(&rig.container("web"), "{{.State.Running}}"), "true");
    assert!(
        mcpwatch_tests::process::final_counts(&rig.agent.logs()).2 == 0,
        "un-acked batches left at exit"
    );
}

#[test]
fn reload_adds_and_removes_servers() {
    let rig = Rig::start(&http_server(
        "one",
        &[],
        "[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
    ));
    rig.wait_events("one", "started", 1);
    // Keep everything but the server list; replace `one` with `two`.
    let text = std::fs::read_to_string(&rig.agent.config).unwrap();
    let base = text.split("\n[[mcp_server]]").next().unwrap().to_owned();
    std::fs::write(
        &rig.agent.config,
        base + &http_server(
            "two",
            &[],
            "[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
        ),
    )
    .unwrap();
    signal(rig.agent.child.as_ref().unwrap(), "HUP");
    rig.wait_events("two", "probe_ok", 1);
    rig.wait_events("one", "removed", 1);
    let out = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("name={}", rig.container("one")),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "one still exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_commands_restart_stop_start_and_approve_drift() {
    ensure_dockerd();
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let files = CollectorFiles::write(&pki, &tmp.path().join("c"), "");
    let router = CommandRouter::new();
    let shutdown = CancellationToken::new();
    let collector = tokio::spawn(mcpwatch_collector::run_with_router(
        CollectorConfig::load(&files.config).unwrap(),
        shutdown.clone(),
        router.clone(),
    ));
    let id = unique_name("cmd");
    let _cleanup = Cleanup(id.clone());
    let servers = http_server(
        "web",
        &["--change-tools-after", "3"],
        // A short restart backoff, so that a wrong restart after `stop` would come inside
        // the watch window below.
        "[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n\
         [mcp_server.backoff]\ninitial = \"1s\"\nmax = \"1s\"\n",
    );
    let agent = tokio::task::spawn_blocking({
        let (pki_dir, dir, ingest, id) = (
            pki.dir.clone(),
            tmp.path().join("a"),
            files.ingest,
            id.clone(),
        );
        move || {
            let mut a =
                AgentProc::configure(&Pki { dir: pki_dir }, &dir, &id, ingest, "500ms", "256MiB");
            a.append_config(&servers);
            a.restart();
            a
        }
    })
    .await
    .unwrap();
    let container = format!("mcpwatch-{id}-web");
    let db = files.db.clone();
    let wait = |kind: &'static str, n: usize| {
        let (db, id) = (db.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            wait_for(kind, LONG, || {
                let found: Vec<EventRow> = db::events(&db, &id)
                    .into_iter()
                    .filter(|e| e.server == "web" && e.kind == kind)
                    .collect();
                (found.len() >= n).then_some(found)
            })
        })
    };
    wait("tools_baseline", 1).await.unwrap();

    // Drift: the fixture changes its tools after 3 s; the agent flags it with the diff.
    let drift = wait("tool_drift", 1).await.unwrap();
    let d = &drift[0].detail;
    assert!(
        d.contains("added=[sleep]") && d.contains("removed=[time]") && d.contains("changed=[echo]"),
        "{d}"
    );
    let send = |action: CommandAction| {
        let router = router.clone();
        let id = id.clone();
        async move {
            router
                .send(&id, action, Duration::from_secs(60))
                .await
                .expect("answer")
        }
    };
    let web = || "web".to_owned();
    let r = send(CommandAction::ApproveDrift { server: web() }).await;
    assert!(r.ok, "{r:?}");
    wait("drift_approved", 1).await.unwrap();
    let metric_now = |name: &str| metric(&agent.metrics(), &format!("{name}{{server=\"web\"}}"));
    let deadline = Instant::now() + LONG;
    while metric_now("mcpwatch_server_tool_drift") != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "drift still flagged after approval"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Restart: a new start of the same container.
    let before = inspect(&container, "{{.State.StartedAt}}");
    let r = send(CommandAction::RestartServer { server: web() }).await;
    assert!(r.ok, "{r:?}");
    assert_ne!(inspect(&container, "{{.State.StartedAt}}"), before);
    // Stop: down, and it stays down.
    let r = send(CommandAction::StopServer { server: web() }).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(inspect(&container, "{{.State.Running}}"), "false");
    // Watch past the 1 s backoff: a wrong restart would show within this window.
    let window_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window_end {
        assert_eq!(
            inspect(&container, "{{.State.Running}}"),
            "false",
            "restarted after stop"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Start: up again.
    let r = send(CommandAction::StartServer { server: web() }).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(inspect(&container, "{{.State.Running}}"), "true");
    // Unknown server: a clear refusal, not a hang.
    let r = send(CommandAction::RestartServer {
        server: "nope".into(),
    })
    .await;
    assert!(!r.ok && r.message.contains("nope"), "{r:?}");

    drop(agent);
    shutdown.cancel();
    collector.await.unwrap().unwrap();
}

#[test]
fn agent_recovers_and_reconciles_when_dockerd_restarts() {
    ensure_dockerd();
    let dir = tempfile::tempdir().unwrap();
    let mut dockerd = PrivateDockerd::start(&dir.path().join("dockerd"));
    dockerd.load_image(&fixture_image());
    let host = dockerd.host();
    let rig = Rig::start_with_env(
        &http_server(
            "web",
            &[],
            "[mcp_server.probe]\ninterval = \"1s\"\ntimeout = \"900ms\"\n",
        ),
        &[("DOCKER_HOST", host.as_str())],
    );
    rig.wait_events("web", "probe_ok", 1);

    // A daemon restart stops every container; the agent must notice, wait, and rebuild.
    dockerd.stop();
    rig.wait_events("", "docker_unreachable", 1);
    dockerd.restart();
    rig.wait_events("", "docker_reconnected", 1);
    rig.wait_events("", "reconciled", 2);
    let ok_before = rig
        .events()
        .iter()
        .filter(|e| e.server == "web" && e.kind == "probe_ok")
        .count();
    rig.wait_events("web", "probe_ok", ok_before + 1);
    let running = dockerd.docker(&["inspect", "-f", "{{.State.Running}}", &rig.container("web")]);
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "true");
    let all = dockerd.docker(&["ps", "-aq"]);
    assert_eq!(
        String::from_utf8_lossy(&all.stdout)
            .split_whitespace()
            .count(),
        1,
        "duplicates"
    );
}
