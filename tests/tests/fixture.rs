//! The fixture image against a real Docker engine: the agent's probe speaks MCP to it through
//! the gateway's attach to a stdio container (network none, as the supervisor runs it) and
//! over Streamable HTTP (network host, loopback), and its switches work from flags and from
//! the environment.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_agent::gateway::stdio_attach::attach;
use mcpwatch_agent::gateway::{MuxConfig, NoCallSink, SessionMux, UpstreamLifecycle};
use mcpwatch_agent::probe::{run_once, FailureKind, ProbeReport, ProbeStage, ProbeTarget};
use mcpwatch_tests::docker::{ensure_dockerd, fixture_image, unique_name, Container};
use mcpwatch_tests::{free_addr, wait_for};
use tokio_util::sync::CancellationToken;

fn names(r: &ProbeReport) -> Vec<&str> {
    r.tools.iter().map(|t| t.name.as_str()).collect()
}

/// A stdio fixture container (stdin held open, network none) with the gateway attached: the
/// probe target, and the container (removed on drop).
async fn attached(args: &[&str]) -> (ProbeTarget, Container) {
    let mut docker_args = vec!["-i", "--network", "none"];
    let image = fixture_image();
    docker_args.push(&image);
    docker_args.extend_from_slice(args);
    let container = Container::run("gw-probe", &docker_args);
    let client = mcpwatch_tests::docker::bollard_client().await;
    let mux = match attach(&client, &container.name, 16).await {
        Ok(a) => SessionMux::spawn(
            MuxConfig::new("fixture"),
            a.upstream,
            Arc::new(NoCallSink),
            UpstreamLifecycle::default(),
            CancellationToken::new(),
        )
        .ok(),
        // A container that is already gone cannot be attached: the gateway has no session.
        Err(_) => None,
    };
    (ProbeTarget::Gateway { mux }, container)
}

#[tokio::test]
async fn stdio_probe_through_the_gateway_lists_three_tools() {
    let (target, _container) = attached(&["--transport", "stdio"]).await;
    let r = run_once(&target, Duration::from_secs(10)).await;
    assert!(r.ok, "{:?}", r.failure);
    assert_eq!(names(&r), ["echo", "add", "time"]);
    let l = r.stage_latency;
    assert!(l.connect.is_some() && l.initialize.is_some() && l.ping.is_some());
    // Through the shared session the probe initializes (2025-11-25), so the server stays in
    // the revision the gateway's clients speak.
    assert_eq!(r.protocol_version.as_deref(), Some("2025-11-25"));
    assert_eq!(r.server_name.as_deref(), Some("mcpwatch-mcp-fixture"));
    // A second probe shares the same attached server: initialize is answered from the
    // gateway's cache and the rest reaches the same process.
    let again = run_once(&target, Duration::from_secs(10)).await;
    assert!(again.ok, "{:?}", again.failure);
    assert_eq!(names(&again), ["echo", "add", "time"]);
    eprintln!("stdio probe latency through the gateway: {l:?}");
}

#[tokio::test]
async fn stdio_probe_of_a_hung_server_times_out() {
    let (target, _container) = attached(&["--transport", "stdio", "--hang-after", "0"]).await;
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
    let took = started.elapsed();
    assert!(took < timeout * 2 + Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn stdio_server_crashing_on_start_is_a_transport_failure() {
    // Silent, then gone a second later: the attach (made while it ran) ends with it.
    let (target, _container) = attached(&[
        "--transport",
        "stdio",
        "--hang-after",
        "0",
        "--crash-after",
        "1",
    ])
    .await;
    let r = run_once(&target, Duration::from_secs(10)).await;
    let f = r
        .failure
        .as_ref()
        .expect("a crashed server must fail the probe");
    // Gone before the attach (no session) or after it (the session ends).
    assert!(
        matches!(f.stage, ProbeStage::Connect | ProbeStage::Initialize),
        "{f:?}"
    );
    assert_eq!(f.kind, FailureKind::Transport, "{f:?}");
}

#[test]
fn a_probe_without_an_attach_is_a_connect_failure() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(run_once(
        &ProbeTarget::Gateway { mux: None },
        Duration::from_secs(1),
    ));
    let f = r.failure.expect("no attach, no probe");
    assert_eq!(
        (f.stage, f.kind),
        (ProbeStage::Connect, FailureKind::Transport)
    );
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
        headers: vec![],
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
