//! Supervisor tests against the real Docker daemon, with a tiny `FROM scratch` image built
//! from a static C program (`sleep` until SIGTERM, `exit N`, or `stdin`: run until EOF).
//! Each test uses its own agent id, removes leftovers with that id first and everything it
//! created on drop, and waits on events or polled state with deadlines, never fixed sleeps.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use mcpwatch_common::time::now_ms;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::container_template::LABEL_AGENT;
use super::docker::{connect_local, ContainerInfo, DockerApi};
use super::spec::{validate_servers, McpServerSpec, RawMcpServer};
use super::*;

const IMAGE: &str = "mcpwatch-supervisor-test:latest";
/// Label of containers a test creates by hand (foreign ones), for the cleanup.
const TEST_OWNER: &str = "mcpwatch-supervisor-test.owner";

const PROGRAM: &str = r#"
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void on_term(int sig) { (void)sig; _exit(0); }
int main(int argc, char **argv) {
    signal(SIGTERM, on_term);
    if (argc > 1 && strcmp(argv[1], "exit") == 0) return argc > 2 ? atoi(argv[2]) : 0;
    if (argc > 1 && strcmp(argv[1], "stdin") == 0) {
        char buf[256];
        while (read(0, buf, sizeof buf) > 0) {}
        return 3;
    }
    for (;;) pause();
}
"#;

/// Builds the test image once per test process.
fn ensure_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("prog.c"), PROGRAM).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY prog /prog\nENTRYPOINT [\"/prog\"]\nCMD [\"sleep\"]\n",
        )
        .map_err(|e| e.to_string())?;
        run(Command::new("gcc")
            .args(["-static", "-O2", "-o", "prog", "prog.c"])
            .current_dir(dir.path()))?;
        run(Command::new("docker")
            .args(["build", "-q", "-t", IMAGE, "."])
            .env("DOCKER_BUILDKIT", "0")
            .current_dir(dir.path()))?;
        Ok(())
    });
    if let Err(e) = r {
        panic!("building {IMAGE}: {e}");
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn docker_cli(args: &[&str]) -> String {
    run(Command::new("docker").args(args)).unwrap_or_else(|e| panic!("{e}"))
}

/// Removes every container of the test's agent id (managed or foreign) now and on drop.
struct Cleanup(String);

impl Cleanup {
    fn new(agent: &str) -> Cleanup {
        remove_all(agent);
        Cleanup(agent.to_owned())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_all(&self.0);
    }
}

fn remove_all(agent: &str) {
    for filter in [
        format!("label={LABEL_AGENT}={agent}"),
        format!("label={TEST_OWNER}={agent}"),
    ] {
        let ids = run(Command::new("docker").args(["ps", "-aq", "--filter", &filter]))
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// A validated spec of the test image; stdio unless `extra` names another transport.
fn spec(name: &str, extra: &str) -> McpServerSpec {
    #[derive(serde::Deserialize)]
    struct Doc {
        mcp_server: Vec<RawMcpServer>,
    }
    let transport = if extra.contains("transport") {
        ""
    } else {
        "transport = \"stdio\"\n"
    };
    let text =
        format!("[[mcp_server]]\nname = \"{name}\"\nimage = \"{IMAGE}\"\n{transport}{extra}\n");
    let path = std::path::Path::new("/test/agent.toml");
    let doc: Doc = mcpwatch_common::config::parse(path, &text).unwrap();
    validate_servers(path, doc.mcp_server).unwrap().remove(0)
}

/// Receives the supervisor's events and finds the ones a test waits for.
struct Events {
    rx: mpsc::Receiver<ServerEvent>,
    /// Everything received, in order, and whether a `wait` has consumed it.
    log: Vec<(ServerEvent, bool)>,
    /// Index just past the latest event a `wait` returned: `none` looks from here.
    mark: usize,
}

impl Events {
    fn new(rx: mpsc::Receiver<ServerEvent>) -> Events {
        Events {
            rx,
            log: vec![],
            mark: 0,
        }
    }

    /// The first not yet consumed event of `server` with `kind`, within `within`.
    async fn wait(&mut self, server: &str, kind: &str, within: Duration) -> ServerEvent {
        let deadline = Instant::now() + within;
        let mut from = 0;
        loop {
            if let Some(i) = (from..self.log.len()).find(|&i| {
                let (e, used) = &self.log[i];
                !used && e.server == server && e.kind == kind
            }) {
                self.log[i].1 = true;
                self.mark = self.mark.max(i + 1);
                return self.log[i].0.clone();
            }
            from = self.log.len();
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => self.log.push((e, false)),
                Ok(None) => panic!("event channel closed waiting for {server}/{kind}"),
                Err(_) => panic!(
                    "no {kind:?} event for {server:?} within {within:?}; received: {:#?}",
                    self.log.iter().map(|(e, _)| e).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Asserts that no event of `server` with one of `kinds` came after the latest waited-for
    /// event, nor comes within `within`.
    async fn none(&mut self, server: &str, kinds: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        let mut from = self.mark;
        loop {
            if let Some((e, _)) = self.log[from..]
                .iter()
                .find(|(e, _)| e.server == server && kinds.contains(&e.kind.as_str()))
            {
                panic!("unexpected event {e:?}");
            }
            from = self.log.len();
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => self.log.push((e, false)),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Consumes everything received so far.
    fn forget(&mut self) {
        for (_, used) in &mut self.log {
            *used = true;
        }
        self.mark = self.log.len();
    }
}

struct Harness {
    agent: String,
    api: DockerApi,
    handle: SupervisorHandle,
    events: Events,
    shutdown: CancellationToken,
    _cleanup: Cleanup,
}

fn test_options() -> SupervisorOptions {
    SupervisorOptions {
        stop_grace: Duration::from_secs(2),
        ..SupervisorOptions::default()
    }
}

async fn start(agent: &str, specs: Vec<McpServerSpec>) -> Harness {
    ensure_image();
    let cleanup = Cleanup::new(agent);
    let api = DockerApi::new(connect_local().unwrap(), agent);
    api.negotiate().await.expect("docker daemon must answer");
    let shutdown = CancellationToken::new();
    let (handle, rx) = spawn(agent, specs, shutdown.clone());
    Harness {
        agent: agent.to_owned(),
        api,
        handle,
        events: Events::new(rx),
        shutdown,
        _cleanup: cleanup,
    }
}

fn spawn(
    agent: &str,
    specs: Vec<McpServerSpec>,
    shutdown: CancellationToken,
) -> (SupervisorHandle, mpsc::Receiver<ServerEvent>) {
    let (tx, rx) = mpsc::channel(256);
    let handle =
        Supervisor::spawn_with(test_options(), DockerApi::local(agent), specs, tx, shutdown);
    (handle, rx)
}

impl Harness {
    /// Stops the current supervisor and starts a new one with `specs`, as an agent restart
    /// does.
    fn respawn(&mut self, specs: Vec<McpServerSpec>) {
        self.shutdown.cancel();
        self.shutdown = CancellationToken::new();
        let (handle, rx) = spawn(&self.agent, specs, self.shutdown.clone());
        self.handle = handle;
        self.events = Events::new(rx);
    }

    async fn container(&self, server: &str) -> ContainerInfo {
        let id = self
            .handle
            .snapshot()
            .into_iter()
            .find(|s| s.server == server)
            .and_then(|s| s.container_id)
            .unwrap_or_else(|| panic!("{server} has no container"));
        self.api.inspect(&id).await.unwrap()
    }

    async fn managed(&self) -> Vec<ContainerInfo> {
        self.api.list_managed().await.unwrap()
    }

    fn status(&self, server: &str) -> ServerStatus {
        self.handle
            .snapshot()
            .into_iter()
            .find(|s| s.server == server)
            .unwrap_or_else(|| panic!("{server} not in snapshot"))
    }

    /// Polls the snapshot until `pred` holds for `server`.
    async fn until(&self, server: &str, within: Duration, pred: impl Fn(&ServerStatus) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if self
                .handle
                .snapshot()
                .iter()
                .any(|s| s.server == server && pred(s))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "condition not reached for {server}: {:?}",
                self.handle.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const T: Duration = Duration::from_secs(30);

/// Docker's own container events of `agent` between two wall-clock instants (ns).
async fn daemon_events(agent: &str, since_ns: i64, until_ns: i64) -> Vec<docker::ContainerEvent> {
    let docker = connect_local().unwrap();
    DockerApi::new(docker.clone(), agent)
        .negotiate()
        .await
        .unwrap();
    let fmt = |ns: i64| format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    let opts = EventsOptions {
        since: Some(fmt(since_ns)),
        until: Some(fmt(until_ns)),
        filters: Some(std::collections::HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![format!("{LABEL_AGENT}={agent}")]),
        ])),
    };
    let mut out = vec![];
    let mut stream = docker.events(Some(opts));
    while let Ok(Some(Ok(m))) = tokio::time::timeout(T, stream.next()).await {
        if let (Some(actor), Some(action)) = (m.actor, m.action) {
            out.push(docker::ContainerEvent {
                id: actor.id.unwrap_or_default(),
                action,
                server: None,
                exit_code: None,
                time_nano: m.time_nano.unwrap_or(0),
            });
        }
    }
    out
}

fn wall_ns() -> i64 {
    now_ms() * 1_000_000
}

#[tokio::test]
async fn docker_start_creates_hardened_running_containers() {
    let http = spec(
        "web",
        "transport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\nnetwork = \"host\"\n\
         limits = { cpus = 0.5, memory = \"64MiB\", pids = 16 }\nlabels = { team = \"t\" }\n\
         env = { TOKEN = \"not-logged\" }",
    );
    // A stdio server that exits on EOF must stay up: its stdin is held open.
    let stdio = spec("io", "args = [\"stdin\"]");
    let mut h = start("svt-start", vec![http, stdio]).await;
    h.events.wait("", kind::RECONCILED, T).await;
    h.events.wait("web", kind::STARTED, T).await;
    h.events.wait("io", kind::STARTED, T).await;
    for server in ["web", "io"] {
        h.until(server, T, |s| s.running && s.phase == ServerPhase::Running)
            .await;
    }
    let web = h.container("web").await;
    assert!(web.running);
    assert_eq!(web.server.as_deref(), Some("web"));
    let inspect = docker_cli(&[
        "inspect",
        "-f",
        "{{.Name}} {{.HostConfig.NetworkMode}} {{.HostConfig.ReadonlyRootfs}} \
         {{.HostConfig.SecurityOpt}} {{.HostConfig.CapDrop}} {{.HostConfig.NanoCpus}} \
         {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}} \
         {{index .Config.Labels \"team\"}}",
        &web.id,
    ]);
    assert_eq!(
        inspect,
        "/mcpwatch-svt-start-web host true [no-new-privileges:true] [ALL] 500000000 67108864 16 \
         no t"
    );
    let io = h.container("io").await;
    assert_eq!(
        docker_cli(&[
            "inspect",
            "-f",
            "{{.HostConfig.NetworkMode}} {{.Config.OpenStdin}}",
            &io.id
        ]),
        "none true"
    );
    h.events
        .none("io", &[kind::EXITED], Duration::from_millis(1500))
        .await;
    // Container metrics straight from the cgroup files.
    let mut stats = ContainerStats::new(h.api.clone());
    let snapshot = h.handle.snapshot();
    stats.sample(&snapshot, now_ms()).await;
    let t0 = std::time::Instant::now();
    let samples = stats.sample(&snapshot, now_ms()).await;
    println!(
        "stats sample of {} servers: {} µs, {} series",
        snapshot.len(),
        t0.elapsed().as_micros(),
        samples.len()
    );
    for server in ["web", "io"] {
        let value = |name: &str| {
            samples
                .iter()
                .find(|(k, _)| k.name == name && k.labels[0].1 == server)
                .map(|(_, v)| *v)
        };
        assert_eq!(value(container_stats::SERVER_UP), Some(1.0));
        assert!(
            value(container_stats::SERVER_MEMORY_BYTES).is_some_and(|m| m > 0.0),
            "{samples:?}"
        );
        assert!(
            value(container_stats::SERVER_CPU_SECONDS_TOTAL).is_some(),
            "{samples:?}"
        );
        assert!(value(container_stats::SERVER_UPTIME_SECONDS).is_some_and(|u| u >= 0.0));
    }
    assert!(
        h.api.inspect(&io.id).await.unwrap().running,
        "stdio server stays up"
    );
    assert_eq!(h.managed().await.len(), 2);
}

#[tokio::test]
async fn docker_killed_container_restarts_after_the_backoff_delay() {
    let s = spec(
        "k",
        "backoff = { initial = \"2s\", max = \"8s\", reset_after = \"10m\" }",
    );
    let mut h = start("svt-kill", vec![s]).await;
    h.events.wait("k", kind::STARTED, T).await;
    let first = h.container("k").await;
    let mut measured = vec![];
    for (attempt, expect) in [(1u32, 2000i64), (2, 4000)] {
        let since = wall_ns() - 1_000_000_000;
        docker_cli(&["kill", &first.id]);
        let ev = h.events.wait("k", kind::EXITED, T).await;
        assert!(ev.detail.contains("137"), "{ev:?}");
        let ev = h.events.wait("k", kind::RESTART_SCHEDULED, T).await;
        assert_eq!(ev.detail, format!("attempt {attempt} in {expect} ms"));
        h.events.wait("k", kind::RESTARTED, T).await;
        // The daemon may publish its start event a moment after our restart call returns,
        // so ask until it is there (bounded by T).
        let deadline = tokio::time::Instant::now() + T;
        let (die, start) = loop {
            let evs = daemon_events("svt-kill", since, wall_ns()).await;
            let die = evs
                .iter()
                .rfind(|e| e.action == "die")
                .expect("die event")
                .time_nano;
            if let Some(start) = evs
                .iter()
                .find(|e| e.action == "start" && e.time_nano > die)
            {
                break (die, start.time_nano);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "start event after the die"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ms = (start - die) / 1_000_000;
        measured.push(ms);
        // Never early; late only by scheduling on a loaded machine (half the delay plus
        // 0.5 s of slack): the next attempt's doubled delay would still fail.
        assert!(
            (expect * 8 / 10..=expect * 3 / 2 + 500).contains(&ms),
            "restart {attempt}: {ms} ms after the die, configured {expect} ms"
        );
        // Same container, restarted in place.
        assert_eq!(h.container("k").await.id, first.id);
    }
    let st = h.status("k");
    assert_eq!(st.restarts_total, 2);
    assert_eq!(st.crashloop_attempt, 2);
    assert_eq!(st.next_delay, Duration::from_secs(8));
    assert_eq!(st.last_exit_code, Some(137));
    println!("restart delays measured die→start: {measured:?} ms (configured 2000, 4000)");
}

#[tokio::test]
async fn docker_crash_loop_gives_up_after_the_budget() {
    let s = spec(
        "crash",
        "args = [\"exit\", \"1\"]\nbackoff = { initial = \"100ms\", max = \"400ms\" }\n\
         budget = { max_restarts = 3, window = \"1m\" }",
    );
    let mut h = start("svt-crash", vec![s]).await;
    for (attempt, ms) in [(1, 100), (2, 200), (3, 400)] {
        let ev = h.events.wait("crash", kind::RESTART_SCHEDULED, T).await;
        assert_eq!(ev.detail, format!("attempt {attempt} in {ms} ms"));
    }
    let ev = h.events.wait("crash", kind::GAVE_UP, T).await;
    assert!(
        ev.detail.contains("more than 3 restarts within 1m"),
        "{ev:?}"
    );
    h.until("crash", T, |s| s.phase == ServerPhase::GaveUp)
        .await;
    let st = h.status("crash");
    assert!(st.gave_up && !st.running);
    assert_eq!(st.restarts_total, 3);
    assert_eq!(st.last_exit_code, Some(1));
    // Terminal: nothing restarts it...
    h.events
        .none(
            "crash",
            &[kind::RESTARTED, kind::RESTART_SCHEDULED],
            Duration::from_millis(800),
        )
        .await;
    // ...until an operator starts it, which resets the budget.
    let r = h
        .handle
        .command(SupervisorCommand::Start {
            server: "crash".into(),
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
    let ev = h.events.wait("crash", kind::RESTART_SCHEDULED, T).await;
    assert_eq!(ev.detail, "attempt 1 in 100 ms");
    assert_eq!(h.managed().await.len(), 1, "one container throughout");
}

#[tokio::test]
async fn docker_agent_restart_adopts_without_restarting() {
    let specs = || vec![spec("a", ""), spec("b", "")];
    let mut h = start("svt-adopt", specs()).await;
    h.events.wait("a", kind::STARTED, T).await;
    h.events.wait("b", kind::STARTED, T).await;
    let before = [h.container("a").await, h.container("b").await];

    // Agent restart: the old supervisor stops, a new one with the same specs starts.
    let old = h.handle.clone();
    h.respawn(specs());
    tokio::time::timeout(T, old.stopped()).await.unwrap();
    let t0 = Instant::now();
    h.events.wait("a", kind::ADOPTED, T).await;
    h.events.wait("b", kind::ADOPTED, T).await;
    let ev = h.events.wait("", kind::RECONCILED, T).await;
    println!(
        "adoption of 2 running servers: {} ms after spawn; {}",
        t0.elapsed().as_millis(),
        ev.detail
    );
    h.until("a", T, |s| s.running).await;
    h.until("b", T, |s| s.running).await;
    h.events
        .none(
            "a",
            &[kind::CREATED, kind::STARTED, kind::RESTARTED, kind::STOPPED],
            Duration::from_millis(500),
        )
        .await;
    let after = [h.container("a").await, h.container("b").await];
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.id, b.id, "same container");
        assert_eq!(a.started_at_ms, b.started_at_ms, "not restarted");
        assert!(a.running);
    }
    assert_eq!(h.managed().await.len(), 2, "no duplicates");
    assert_eq!(h.status("a").restarts_total, 0);
}

#[tokio::test]
async fn docker_reload_applies_only_the_differences() {
    let mut h = start("svt-reload", vec![spec("a", ""), spec("b", "")]).await;
    h.events.wait("a", kind::STARTED, T).await;
    h.events.wait("b", kind::STARTED, T).await;
    let a = h.container("a").await;
    let b = h.container("b").await;

    // b removed, c added; a unchanged apart from a supervisor-only field.
    let a_policy = spec("a", "restart = \"on-failure\"");
    h.handle.reload(vec![a_policy.clone(), spec("c", "")]).await;
    let ev = h.events.wait("b", kind::REMOVED, T).await;
    assert!(ev.detail.contains("no longer configured"), "{ev:?}");
    h.events.wait("c", kind::CREATED, T).await;
    h.events.wait("c", kind::STARTED, T).await;
    let names: Vec<String> = h.handle.snapshot().into_iter().map(|s| s.server).collect();
    assert_eq!(names, ["a", "c"]);
    let mut servers: Vec<String> = h
        .managed()
        .await
        .into_iter()
        .filter_map(|c| c.server)
        .collect();
    servers.sort();
    assert_eq!(servers, ["a", "c"]);
    assert!(h.api.inspect(&b.id).await.is_err(), "b's container is gone");
    let a_now = h.container("a").await;
    assert_eq!(
        (a_now.id.as_str(), a_now.started_at_ms),
        (a.id.as_str(), a.started_at_ms)
    );

    // A container field of a changes: recreated with the new config.
    h.events.forget();
    h.handle
        .reload(vec![spec("a", "env = { MODE = \"2\" }"), spec("c", "")])
        .await;
    let ev = h.events.wait("a", kind::REMOVED, T).await;
    assert!(ev.detail.contains("configuration changed"), "{ev:?}");
    h.events.wait("a", kind::STARTED, T).await;
    let a_new = h.container("a").await;
    assert_ne!(a_new.id, a.id);
    assert!(a_new.running);
    assert_eq!(
        a_new.config_hash.as_deref(),
        Some(spec("a", "env = { MODE = \"2\" }").config_hash().as_str())
    );
    h.events
        .none(
            "c",
            &[kind::REMOVED, kind::CREATED, kind::STARTED],
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(h.managed().await.len(), 2);
}

#[tokio::test]
async fn docker_stop_start_restart_commands() {
    let s = spec("cmd", "backoff = { initial = \"100ms\", max = \"200ms\" }");
    let mut h = start("svt-cmd", vec![s]).await;
    h.events.wait("cmd", kind::STARTED, T).await;
    let c0 = h.container("cmd").await;
    let cmd = |c: fn(String) -> SupervisorCommand| c("cmd".into());

    let r = h
        .handle
        .command(cmd(|server| SupervisorCommand::Stop { server }))
        .await;
    assert!(r.is_ok(), "{r:?}");
    assert!(!h.api.inspect(&c0.id).await.unwrap().running);
    h.events.wait("cmd", kind::STOPPED, T).await;
    assert_eq!(h.status("cmd").phase, ServerPhase::Stopped);
    // Desired-stopped: the backoff (100 ms) passes and nothing restarts it.
    h.events
        .none(
            "cmd",
            &[
                kind::RESTART_SCHEDULED,
                kind::STARTED,
                kind::RESTARTED,
                kind::EXITED,
            ],
            Duration::from_millis(800),
        )
        .await;

    let r = h
        .handle
        .command(cmd(|server| SupervisorCommand::Start { server }))
        .await;
    assert!(r.is_ok(), "{r:?}");
    let c1 = h.api.inspect(&c0.id).await.unwrap();
    assert!(c1.running);
    assert_eq!(
        h.status("cmd").restarts_total,
        0,
        "a start is not a restart"
    );

    let r = h
        .handle
        .command(cmd(|server| SupervisorCommand::Restart { server }))
        .await;
    assert!(r.is_ok(), "{r:?}");
    h.events.wait("cmd", kind::RESTARTED, T).await;
    let c2 = h.api.inspect(&c0.id).await.unwrap();
    assert!(c2.running);
    assert_ne!(c2.started_at_ms, c1.started_at_ms, "restarted");
    assert_eq!(h.status("cmd").restarts_total, 1);
    h.events
        .none(
            "cmd",
            &[kind::EXITED, kind::RESTART_SCHEDULED],
            Duration::from_millis(300),
        )
        .await;

    let r = h
        .handle
        .command(SupervisorCommand::Stop {
            server: "nope".into(),
        })
        .await;
    assert!(r.unwrap_err().contains("unknown server"));
    assert_eq!(h.managed().await.len(), 1);
}

#[tokio::test]
async fn docker_unhealthy_server_is_restarted() {
    let s = spec(
        "sick",
        "backoff = { initial = \"100ms\" }\nprobe = { failure_threshold = 2 }",
    );
    let mut h = start("svt-sick", vec![s]).await;
    h.events.wait("sick", kind::STARTED, T).await;
    h.until("sick", T, |s| s.running).await;
    let c0 = h.container("sick").await;
    h.handle.report_probe("sick", false).await;
    h.handle.report_probe("sick", true).await;
    h.handle.report_probe("sick", false).await;
    h.events
        .none("sick", &[kind::UNHEALTHY], Duration::from_millis(200))
        .await;
    h.handle.report_probe("sick", false).await;
    let ev = h.events.wait("sick", kind::UNHEALTHY, T).await;
    assert_eq!(ev.detail, "2 consecutive probe failures");
    h.events.wait("sick", kind::RESTART_SCHEDULED, T).await;
    h.events.wait("sick", kind::RESTARTED, T).await;
    let c1 = h.container("sick").await;
    assert_eq!(c1.id, c0.id);
    assert!(c1.running);
    assert_ne!(c1.started_at_ms, c0.started_at_ms);
    let st = h.status("sick");
    assert!(!st.unhealthy);
    assert_eq!(st.restarts_total, 1);
}

#[tokio::test]
async fn docker_foreign_containers_are_never_touched() {
    let agent = "svt-foreign";
    let mut h = start(agent, vec![]).await;
    // Same labels but another agent's id, and one without our labels holding the name our
    // server "svc" would get.
    let other = docker_cli(&[
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        "mcpwatch.managed=true",
        "--label",
        "mcpwatch.server=svc",
        "--label",
        &format!("mcpwatch.agent={agent}-other"),
        "--label",
        &format!("{TEST_OWNER}={agent}"),
        IMAGE,
    ]);
    let squatter = docker_cli(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &format!("mcpwatch-{agent}-svc"),
        "--label",
        &format!("{TEST_OWNER}={agent}"),
        IMAGE,
    ]);
    h.respawn(vec![spec("svc", ""), spec("ok", "")]);
    h.events.wait("", kind::RECONCILED, T).await;
    h.events.wait("ok", kind::STARTED, T).await;
    let ev = h.events.wait("svc", kind::ERROR, T).await;
    assert!(ev.detail.contains("name in use"), "{ev:?}");
    // Another full listing (the conflict asks for one) still leaves them alone.
    h.events
        .none(
            "svc",
            &[kind::ADOPTED, kind::REMOVED, kind::STARTED],
            Duration::from_millis(800),
        )
        .await;
    for id in [&other, &squatter] {
        let c = h.api.inspect(id).await.expect("still there");
        assert!(c.running, "untouched: {id}");
    }
    let mine: Vec<String> = h
        .managed()
        .await
        .into_iter()
        .filter_map(|c| c.server)
        .collect();
    assert_eq!(mine, ["ok"]);
}

#[tokio::test]
async fn supervisor_reports_an_unreachable_daemon_without_panicking() {
    let (tx, rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let handle = Supervisor::spawn_with(
        SupervisorOptions::default(),
        DockerApi::at_socket("/nonexistent/mcpwatch-test.sock", "svt-down"),
        vec![spec("x", "")],
        tx,
        shutdown.clone(),
    );
    let mut events = Events::new(rx);
    let ev = events.wait("", kind::DOCKER_UNREACHABLE, T).await;
    assert!(!ev.detail.is_empty());
    let r = handle
        .command(SupervisorCommand::Restart { server: "x".into() })
        .await;
    assert!(r.unwrap_err().contains("unreachable"));
    let st = handle.snapshot();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].phase, ServerPhase::Pending);
    shutdown.cancel();
    tokio::time::timeout(T, handle.stopped()).await.unwrap();
}

/// A unix-socket relay to the real daemon that a test can take down and bring back, so a
/// daemon outage can be staged without restarting the shared dockerd.
struct Relay {
    path: std::path::PathBuf,
    stop: CancellationToken,
}

impl Relay {
    fn start(path: &std::path::Path) -> Relay {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((mut inbound, _)) = accepted else {
                    break;
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Relay {
            path: path.to_owned(),
            stop,
        }
    }

    /// Drops every relayed connection and the listening socket.
    fn down(&self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn docker_outage_reconnects_and_reconciles_what_it_missed() {
    ensure_image();
    let agent = "svt-outage";
    let _cleanup = Cleanup::new(agent);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let relay = Relay::start(&sock);
    let (tx, rx) = mpsc::channel(256);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let handle = Supervisor::spawn_with(
        SupervisorOptions {
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(500),
            ..test_options()
        },
        DockerApi::at_socket(sock.to_string_lossy(), agent),
        vec![spec("p", "backoff = { initial = \"100ms\" }")],
        tx,
        shutdown,
    );
    let mut events = Events::new(rx);
    events.wait("", kind::RECONCILED, T).await;
    events.wait("p", kind::STARTED, T).await;
    let id = handle.snapshot()[0].container_id.clone().unwrap();

    relay.down();
    events.wait("", kind::DOCKER_UNREACHABLE, T).await;
    // While the supervisor cannot see the daemon, the server crashes: no event reaches it.
    docker_cli(&["kill", &id]);
    let r = handle
        .command(SupervisorCommand::Restart { server: "p".into() })
        .await;
    assert!(r.unwrap_err().contains("unreachable"), "commands fail fast");

    let t0 = Instant::now();
    let _relay = Relay::start(&sock);
    events.wait("", kind::DOCKER_RECONNECTED, T).await;
    let ev = events.wait("", kind::RECONCILED, T).await;
    println!(
        "reconnect + reconcile after the outage: {} ms; {}",
        t0.elapsed().as_millis(),
        ev.detail
    );
    let ev = events.wait("p", kind::EXITED, T).await;
    assert!(ev.detail.contains("137"), "{ev:?}");
    events.wait("p", kind::RESTARTED, T).await;
    let api = DockerApi::new(connect_local().unwrap(), agent);
    api.negotiate().await.unwrap();
    let c = api.inspect(&id).await.unwrap();
    assert!(c.running, "restarted in place after the outage");
    assert_eq!(api.list_managed().await.unwrap().len(), 1);
}
