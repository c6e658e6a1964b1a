//! The fixture image against a real Docker engine: the agent's probe speaks MCP to it over an
//! attached stdio container (network none) and over Streamable HTTP (network host, loopback),
//! its switches work from flags and from the environment, and no container outlives a test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcpwatch_agent::probe::{
    run_once, Docker, FailureKind, ProbeReport, ProbeStage, ProbeTarget, PROBE_LABEL,
};
use mcpwatch_tests::docker::{
    container_has_env, containers_with_label, ensure_dockerd, fixture_image, unique_name, Container,
};
use mcpwatch_tests::{free_addr, wait_for};

async fn docker_client() -> Docker {
    ensure_dockerd();
    Docker::connect_with_local_defaults()
        .expect("docker client")
        // Debian's engine may speak an older API than bollard's default.
        .negotiate_version()
        .await
        .expect("docker API version")
}

fn names(r: &ProbeReport) -> Vec<&str> {
    r.tools.iter().map(|t| t.name.as_str()).collect()
}

/// A stdio probe target whose container carries a unique env marker, so the test can tell
/// its own probe containers from those of tests running in parallel.
async fn stdio_target(args: &[&str]) -> (ProbeTarget, String) {
    let marker = format!("MCPWATCH_TEST_MARK={}", unique_name("probe"));
    let target = ProbeTarget::Stdio {
        docker: docker_client().await,
        image: fixture_image(),
        entrypoint: None,
        cmd: args.iter().map(|s| s.to_string()).collect(),
        env: vec![marker.clone()],
    };
    (target, marker)
}

/// The probe removes its container before returning; the daemon may still be finishing an
/// auto-remove that raced with ours, so allow it a moment.
fn assert_probe_container_gone(marker: &str) {
    let label = format!("{}={}", PROBE_LABEL.0, PROBE_LABEL.1);
    wait_for("probe container removed", Duration::from_secs(10), || {
        let mine = containers_with_label(&label)
            .into_iter()
            .any(|id| container_has_env(&id, marker));
        (!mine).then_some(())
    });
}

#[tokio::test]
async fn stdio_probe_in_docker_lists_three_tools() {
    let (target, marker) = stdio_target(&["--transport", "stdio"]).await;
    let r = run_once(&target, Duration::from_secs(10)).await;
    assert!(r.ok, "{:?}", r.failure);
    assert_eq!(names(&r), ["echo", "add", "time"]);
    let l = r.stage_latency;
    assert!(l.connect.is_some() && l.initialize.is_some() && l.ping.is_some());
    assert_eq!(r.server_name.as_deref(), Some("mcpwatch-mcp-fixture"));
    eprintln!("stdio probe latency: {l:?}");
    assert_probe_container_gone(&marker);
}

#[tokio::test]
async fn stdio_probe_of_a_hung_server_times_out_and_removes_the_container() {
    let (target, marker) = stdio_target(&["--transport", "stdio", "--hang-after", "0"]).await;
    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let r = run_once(&target, timeout).await;
    let f = r
        .failure
        .as_ref()
        .expect("a hung server must fail the probe");
    assert_eq!(
        (f.stage, f.kind),
        (ProbeStage::Initialize, FailureKind::Timeout)
    );
    // Container start plus the initialize timeout plus removal, on a 2-core machine.
    let took = started.elapsed();
    assert!(took < timeout * 2 + Duration::from_secs(5), "{took:?}");
    assert_probe_container_gone(&marker);
}

/// A probe whose future is dropped midway (the supervisor cancelled, say) still removes its
/// container, from the guard's `Drop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_stdio_probe_still_removes_its_container() {
    // The server outlives its stdin, so only the probe's own removal can end the container.
    let args = [
        "--transport",
        "stdio",
        "--hang-after",
        "0",
        "--exit-on-stdin-eof=false",
    ];
    let (target, marker) = stdio_target(&args).await;
    let probe = tokio::spawn(async move { run_once(&target, Duration::from_secs(60)).await });
    let label = format!("{}={}", PROBE_LABEL.0, PROBE_LABEL.1);
    // The test thread may block: the probe runs on the runtime's workers.
    wait_for("probe container created", Duration::from_secs(20), || {
        containers_with_label(&label)
            .into_iter()
            .any(|id| container_has_env(&id, &marker))
            .then_some(())
    });
    probe.abort();
    assert!(probe.await.is_err_and(|e| e.is_cancelled()));
    assert_probe_container_gone(&marker);
}

#[tokio::test]
async fn stdio_server_crashing_on_start_is_a_transport_failure() {
    let (target, marker) = stdio_target(&["--transport", "stdio", "--crash-after", "0"]).await;
    let r = run_once(&target, Duration::from_secs(10)).await;
    let f = r
        .failure
        .as_ref()
        .expect("a crashed server must fail the probe");
    assert_eq!(
        (f.stage, f.kind),
        (ProbeStage::Initialize, FailureKind::Transport)
    );
    assert_probe_container_gone(&marker);
}

#[tokio::test]
async fn http_fixture_on_the_host_network_answers_the_probe() {
    ensure_dockerd();
    let image = fixture_image();
    let listen = free_addr().to_string();
    let _server = Container::run(
        "mcpwatch-test-http",
        &[
            "--network",
            "host",
            &image,
            "--transport",
            "http",
            "--listen",
            &listen,
            "--tools-variant",
            "b",
        ],
    );
    let target = ProbeTarget::Http {
        url: format!("http://{listen}/mcp"),
    };
    // The server's readiness is only observable by asking it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = run_once(&target, Duration::from_secs(2)).await;
        if r.ok || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(r.ok, "{:?}", r.failure);
    assert_eq!(names(&r), ["echo", "add", "sleep"]);
    // Once up, a second probe measures the steady state.
    let r = run_once(&target, Duration::from_secs(2)).await;
    assert!(r.ok, "{:?}", r.failure);
    eprintln!("http probe latency: {:?}", r.stage_latency);
}

/// `docker run -i` of the fixture with stdin held open; returns the exit code.
fn exit_code_of(docker_args: &[&str], fixture_args: &[&str]) -> Option<i32> {
    let image = fixture_image();
    let name = unique_name("mcpwatch-test-crash");
    let _cleanup = Container::adopt(name.clone());
    let mut child = Command::new("docker")
        .args(["run", "--rm", "-i", "--network", "none", "--name", &name])
        .args(docker_args)
        .arg(&image)
        .args(fixture_args)
        // Piped and never closed: the server must exit by crashing, not on stdin EOF.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker run");
    let status = wait_for("fixture to exit", Duration::from_secs(30), || {
        child.try_wait().expect("wait for docker run")
    });
    status.code()
}

#[test]
fn crash_after_exits_with_code_3_from_flag_and_from_env() {
    ensure_dockerd();
    assert_eq!(
        exit_code_of(&[], &["--transport", "stdio", "--crash-after", "0.2"]),
        Some(3)
    );
    assert_eq!(
        exit_code_of(&["-e", "MCP_FIXTURE_CRASH_AFTER=0.2"], &[]),
        Some(3)
    );
}
