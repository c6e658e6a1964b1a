//! bench-gateway: the agent's MCP gateway under load. Prints one JSON object as its last line.
//!
//! 1. Throughput and added latency through one stdio server: the fixture supervised by a
//!    real agent, N client sessions on the gateway each calling `tools/call echo` back to
//!    back; in the same run the same fixture binary as a local child driven over its own
//!    stdin/stdout with the same concurrency ("direct"), and a container of the same image
//!    driven through the agent's own Docker attach code without the gateway ("attach"), which
//!    separates what Docker's stdio plumbing costs from what the gateway adds.
//! 2. Memory: the agent with stdio and HTTP fixture servers and one-call-a-second client
//!    sessions (rmcp's Streamable HTTP client) spread over them.
//!
//! Run: `./scripts/test.sh` once (fixture image), then
//! `cargo build --release --workspace --bins && target/release/bench-gateway`

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mcpwatch_tests::docker::{
    docker, ensure_dockerd, fixture_image, static_fixture_binary, unique_name, Container,
};
use mcpwatch_tests::mcp_load::{self, LineClient, LoadResult, Window};
use mcpwatch_tests::process::{AgentProc, CollectorProc};
use mcpwatch_tests::rig::{self, Cleanup};
use mcpwatch_tests::{metric, procfs, wait_for, Pki};
use serde_json::{json, Value};
use tokio::time::Instant;

mod memory;

#[derive(Parser)]
pub struct Args {
    /// Measured seconds of each throughput run (one per mode and concurrency).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load before each measured window.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent callers (client sessions) of the throughput runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32])]
    concurrency: Vec<usize>,
    /// Worker threads of the bench's client runtime (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Measured seconds of the memory run.
    #[arg(long, default_value_t = 60)]
    memory_seconds: u64,
    /// stdio fixture servers of the memory run.
    #[arg(long, default_value_t = 10)]
    stdio_servers: usize,
    /// HTTP fixture servers (host network) of the memory run.
    #[arg(long, default_value_t = 10)]
    http_servers: usize,
    /// Client sessions of the memory run, spread over the servers, one call a second each.
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Extra environment for the agent, KEY=VALUE (repeatable), e.g. MALLOC_ARENA_MAX=2.
    #[arg(long)]
    agent_env: Vec<String>,
    #[arg(long)]
    skip_throughput: bool,
    #[arg(long)]
    skip_memory: bool,
}

/// A stdio fixture server named `name`.
pub fn stdio_server(name: &str, image: &str) -> String {
    format!(
        "\n[[mcp_server]]\nname = \"{name}\"\nimage = \"{image}\"\n\
         args = [\"--transport\", \"stdio\"]\ntransport = \"stdio\"\n\
         [mcp_server.probe]\ninterval = \"15s\"\n"
    )
}

/// A collector and an agent (id `id`) supervising `servers`, started; the returned guard
/// removes the agent's containers.
pub fn start_agent(
    dir: &Path,
    id: &str,
    servers: &str,
    env: &[String],
) -> (CollectorProc, AgentProc, Cleanup) {
    let pki = Pki::new(&dir.join("pki"));
    let collector = CollectorProc::start(&pki, &dir.join("c"), "");
    let mut agent =
        AgentProc::configure(&pki, &dir.join("a"), id, collector.ingest, "1s", "256MiB");
    agent.append_config(servers);
    agent.env = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let cleanup = Cleanup(id.to_owned());
    agent.restart();
    (collector, agent, cleanup)
}

/// Waits until every stdio server is attached and every server answered a probe.
pub fn wait_ready(agent: &AgentProc, stdio: &[String], all: &[String]) {
    wait_for("servers probed and attached", rig::LONG * 2, || {
        let m = agent.metrics();
        let value = |name: &str, s: &str| metric(&m, &format!("{name}{{server=\"{s}\"}}"));
        let probed = all
            .iter()
            .all(|s| value("mcpwatch_server_probe_up", s) == Some(1.0));
        let attached = stdio
            .iter()
            .all(|s| value("mcpwatch_mcp_gateway_attached", s) == Some(1.0));
        (probed && attached).then_some(())
    });
}

/// The pid of a running container's main process.
fn container_pid(name: &str) -> Option<u32> {
    let out = docker(&["inspect", "-f", "{{.State.Pid}}", name]);
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn dockerd_pid() -> Option<u32> {
    std::fs::read_to_string("/var/run/docker.pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| procfs::pid_of("dockerd"))
}

/// Rounds to `places` decimals for the report.
pub fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Direct,
    Attach,
    Gateway,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Attach => "attach",
            Mode::Gateway => "gateway",
        }
    }
}

/// The processes whose CPU a mode's calls cost, by role.
struct Processes {
    client: u32,
    agent: u32,
    dockerd: Option<u32>,
    direct_fixture: u32,
    attach: (Option<u32>, Option<u32>),
    gateway: (Option<u32>, Option<u32>),
}

impl Processes {
    fn of(&self, mode: Mode) -> Vec<(&'static str, u32)> {
        let mut v = vec![("client", self.client)];
        let (shim, fixture) = match mode {
            Mode::Direct => {
                v.push(("fixture", self.direct_fixture));
                return v;
            }
            Mode::Attach => self.attach,
            Mode::Gateway => {
                v.push(("agent", self.agent));
                self.gateway
            }
        };
        v.extend(self.dockerd.map(|p| ("dockerd", p)));
        v.extend(shim.map(|p| ("shim", p)));
        v.extend(fixture.map(|p| ("fixture", p)));
        v
    }
}

/// CPU ms and context switches of each process.
fn counters(procs: &[(&'static str, u32)]) -> Vec<[f64; 2]> {
    procs
        .iter()
        .map(|(_, pid)| {
            [procfs::cpu_ms(*pid), procfs::context_switches(*pid)].map(|v| v.unwrap_or(f64::NAN))
        })
        .collect()
}

/// One measured load run and its report line.
async fn measure(
    mode: Mode,
    callers: usize,
    args: &Args,
    procs: &Processes,
    gateway: std::net::SocketAddr,
    lines: &Arc<LineClient>,
) -> (LoadResult, Value) {
    let from = Instant::now() + Duration::from_secs(args.warmup);
    let window = Window {
        from,
        until: from + Duration::from_secs(args.seconds),
    };
    let load = match mode {
        Mode::Gateway => tokio::spawn(async move {
            mcp_load::run_http(gateway, "/mcp/s0", callers, window)
                .await
                .expect("gateway sessions")
        }),
        _ => {
            let lines = Arc::clone(lines);
            tokio::spawn(async move { mcp_load::run_lines(&lines, callers, window).await })
        }
    };
    let pids = procs.of(mode);
    tokio::time::sleep_until(window.from).await;
    let before = counters(&pids);
    let busy0 = procfs::machine_busy_ms().unwrap_or(f64::NAN);
    tokio::time::sleep_until(window.until).await;
    let after = counters(&pids);
    let busy = procfs::machine_busy_ms().unwrap_or(f64::NAN) - busy0;
    let mut result = load.await.expect("load task");
    let secs = args.seconds as f64;
    let calls = result.calls as f64;
    let mut per_s = BTreeMap::new();
    let mut per_call = BTreeMap::new();
    let mut switches = BTreeMap::new();
    let mut measured = 0.0;
    for (((role, _), a), b) in pids.iter().zip(&before).zip(&after) {
        let cpu = b[0] - a[0];
        measured += cpu;
        per_s.insert(*role, round(cpu / secs, 1));
        per_call.insert(*role, round(cpu * 1000.0 / calls.max(1.0), 1));
        switches.insert(*role, round((b[1] - a[1]) / calls.max(1.0), 2));
    }
    // Everything else the machine ran meanwhile (kernel threads, other work on the host).
    per_s.insert("rest_of_machine", round((busy - measured) / secs, 1));
    let report = json!({
        "mode": mode.name(),
        "concurrency": callers,
        "calls_per_s": round(calls / secs, 0),
        "p50_ms": round(result.quantile_ms(0.5), 3),
        "p99_ms": round(result.quantile_ms(0.99), 3),
        "errors": result.errors,
        "machine_busy_cores": round(busy / secs / 1000.0, 2),
        "cpu_ms_per_s": per_s,
        "cpu_us_per_call": per_call,
        "context_switches_per_call": switches,
    });
    eprintln!("{report}");
    (result, report)
}

/// The two line clients that bypass the gateway: the local child's pipes, and the agent's
/// own Docker attach code on container `attached`.
async fn line_clients(
    child: &mut std::process::Child,
    attached: &str,
) -> (Arc<LineClient>, Arc<LineClient>) {
    let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
    let direct = LineClient::over_pipes(stdin.expect("piped"), stdout.expect("piped"));
    direct.initialize().await.expect("direct initialize");
    let docker = bollard::Docker::connect_with_unix_defaults().expect("docker client");
    let attachment = mcpwatch_agent::gateway::stdio_attach::attach(&docker, attached, 256)
        .await
        .expect("docker attach");
    let up = attachment.upstream;
    let via_attach = LineClient::over_channels(up.to_server, up.from_server);
    via_attach.initialize().await.expect("attach initialize");
    (direct, via_attach)
}

/// Every mode at every concurrency, and the gateway's latency over the other two.
async fn run_all(
    args: &Args,
    procs: &Processes,
    gateway: std::net::SocketAddr,
    direct: &Arc<LineClient>,
    via_attach: &Arc<LineClient>,
) -> Vec<Value> {
    let mut runs = Vec::new();
    for &c in &args.concurrency {
        let mut p50 = BTreeMap::new();
        let mut p99 = BTreeMap::new();
        let mut reports = Vec::new();
        for mode in [Mode::Direct, Mode::Attach, Mode::Gateway] {
            let lines = if mode == Mode::Attach {
                via_attach
            } else {
                direct
            };
            let (mut r, report) = measure(mode, c, args, procs, gateway, lines).await;
            p50.insert(mode.name(), r.quantile_ms(0.5));
            p99.insert(mode.name(), r.quantile_ms(0.99));
            reports.push(report);
        }
        let added = |q: &BTreeMap<&str, f64>, base: &str| round(q["gateway"] - q[base], 3);
        runs.push(json!({
            "concurrency": c,
            "runs": reports,
            "added_p50_ms": added(&p50, "direct"),
            "added_p99_ms": added(&p99, "direct"),
            "added_over_attach_p50_ms": added(&p50, "attach"),
            "added_over_attach_p99_ms": added(&p99, "attach"),
        }));
    }
    runs
}

fn throughput(args: &Args, rt: &tokio::runtime::Runtime) -> Value {
    let image = fixture_image();
    let tmp = tempfile::tempdir().expect("tempdir");
    let id = unique_name("bench-gw");
    let servers = stdio_server("s0", &image);
    let (_collector, mut agent, _cleanup) = start_agent(tmp.path(), &id, &servers, &args.agent_env);
    let s0 = vec!["s0".to_owned()];
    wait_ready(&agent, &s0, &s0);
    let attached = Container::run(
        "bench-attach",
        &["-i", "--network", "none", &image, "--transport", "stdio"],
    );
    let mut child = std::process::Command::new(static_fixture_binary())
        .args(["--transport", "stdio"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the fixture");
    let shim_and_pid = |name: &str| {
        let pid = container_pid(name);
        (pid.and_then(procfs::ppid), pid)
    };
    let procs = Processes {
        client: std::process::id(),
        agent: agent.child.as_ref().expect("running").id(),
        dockerd: dockerd_pid(),
        direct_fixture: child.id(),
        attach: shim_and_pid(&attached.name),
        gateway: shim_and_pid(&format!("mcpwatch-{id}-s0")),
    };
    let runs = rt.block_on(async {
        let (direct, via_attach) = line_clients(&mut child, &attached.name).await;
        run_all(args, &procs, agent.gateway_addr, &direct, &via_attach).await
    });
    let _ = child.kill();
    let _ = child.wait();
    drop(attached);
    agent.kill9();
    let best = |mode: &str| {
        runs.iter()
            .flat_map(|r| r["runs"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["mode"] == mode)
            .filter_map(|r| r["calls_per_s"].as_f64())
            .fold(0.0, f64::max)
    };
    let first = runs.first().cloned().unwrap_or_default();
    json!({
        "gateway_max_calls_per_s": best("gateway"),
        "attach_max_calls_per_s": best("attach"),
        "direct_max_calls_per_s": best("direct"),
        "added_p50_ms_at_lowest_concurrency": first["added_p50_ms"],
        "added_p99_ms_at_lowest_concurrency": first["added_p99_ms"],
        "by_concurrency": runs,
    })
}

/// Issue 11's goals against what this run measured (null when a part was skipped).
fn goals(out: &Value) -> Value {
    let t = &out["throughput"];
    let at_most = |v: &Value, goal: f64| v.as_f64().map(|x| x <= goal);
    json!({
        "gateway_calls_per_s_at_least_5000": t["gateway_max_calls_per_s"].as_f64().map(|x| x >= 5000.0),
        "added_p50_at_most_0_5_ms": at_most(&t["added_p50_ms_at_lowest_concurrency"], 0.5),
        "added_p99_at_most_2_ms": at_most(&t["added_p99_ms_at_lowest_concurrency"], 2.0),
        "agent_rss_at_most_15_mb": at_most(&out["memory"]["agent_rss_mb"], 15.0),
    })
}

fn main() {
    let args = Args::parse();
    ensure_dockerd();
    // reqwest (rmcp's HTTP client) is built without a default TLS provider here; an Err only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.client_threads);
        b
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    let mut out = json!({
        "bench": "gateway",
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "seconds": args.seconds,
        "client_threads": args.client_threads,
        "agent_env": args.agent_env,
    });
    if !args.skip_throughput {
        out["throughput"] = throughput(&args, &rt);
    }
    if !args.skip_memory {
        out["memory"] = memory::run(&args, &rt);
    }
    out["goals_met"] = goals(&out);
    println!("{out}");
}
