//! bench-supervision: the real agent supervising N MCP servers (the rmcp fixture in Docker,
//! Streamable HTTP, default 15 s probes) while streaming to a real collector; measures the
//! agent's RSS and CPU over a steady-state window. Prints one JSON object as its last line.
//!
//! Run: `./scripts/test.sh` once (fixture image), then
//! `cargo build --release --workspace --bins && target/release/bench-supervision`

use std::time::{Duration, Instant};

use clap::Parser;
use mcpwatch_tests::docker::{docker, ensure_dockerd, fixture_image, unique_name};
use mcpwatch_tests::process::{AgentProc, CollectorProc};
use mcpwatch_tests::{free_addr, metric, procfs, wait_for, Pki};

#[derive(Parser)]
struct Args {
    /// Supervised MCP servers.
    #[arg(long, default_value_t = 20)]
    servers: usize,
    /// Measured seconds after every server answered its first probe.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Probe interval of every server.
    #[arg(long, default_value = "15s")]
    probe_interval: String,
}

fn main() {
    let args = Args::parse();
    ensure_dockerd();
    let image = fixture_image();
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let id = unique_name("bench");
    let mut agent = AgentProc::configure(
        &pki,
        &tmp.path().join("a"),
        &id,
        collector.ingest,
        "1s",
        "256MiB",
    );
    let mut servers = String::new();
    for i in 0..args.servers {
        let port = free_addr().port();
        servers.push_str(&format!(
            "\n[[mcp_server]]\nname = \"s{i}\"\nimage = \"{image}\"\n\
             args = [\"--transport\", \"http\", \"--listen\", \"127.0.0.1:{port}\"]\n\
             transport = \"http\"\nurl = \"http://127.0.0.1:{port}/mcp\"\nnetwork = \"host\"\n\
             [mcp_server.probe]\ninterval = \"{}\"\n",
            args.probe_interval
        ));
    }
    agent.append_config(&servers);
    agent.restart();
    let pid = agent.child.as_ref().expect("running").id();
    wait_for("every server probed once", Duration::from_secs(120), || {
        let m = agent.metrics();
        (0..args.servers)
            .all(|i| {
                metric(&m, &format!("mcpwatch_server_probe_up{{server=\"s{i}\"}}")) == Some(1.0)
            })
            .then_some(())
    });
    let cpu0 = procfs::cpu_ms(pid).expect("agent cpu");
    let probes0: f64 = (0..args.servers)
        .filter_map(|i| agent.metric_labelled("mcpwatch_server_probes_total", &format!("s{i}")))
        .sum();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = procfs::cpu_ms(pid).expect("agent cpu") - cpu0;
    let probes: f64 = (0..args.servers)
        .filter_map(|i| agent.metric_labelled("mcpwatch_server_probes_total", &format!("s{i}")))
        .sum::<f64>()
        - probes0;
    let rss = procfs::mem_mb(pid, "VmRSS").unwrap_or(f64::NAN);
    let hwm = procfs::mem_mb(pid, "VmHWM").unwrap_or(f64::NAN);
    let up = (0..args.servers)
        .filter(|i| agent.metric_labelled("mcpwatch_server_up", &format!("s{i}")) == Some(1.0))
        .count();
    agent.kill9();
    let out = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=mcpwatch.agent={id}"),
    ]);
    for c in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        docker(&["rm", "-f", c]);
    }
    drop(collector);
    let r = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "supervision",
            "servers": args.servers,
            "servers_up": up,
            "probe_interval": args.probe_interval,
            "seconds": r(elapsed),
            "probes": probes,
            "agent_rss_mb": r(rss),
            "agent_peak_rss_mb": r(hwm),
            "agent_cpu_percent_of_core": r(cpu / (elapsed * 1000.0) * 100.0),
            "agent_cpu_ms_per_s": r(cpu / elapsed),
        })
    );
}
