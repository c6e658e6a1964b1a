//! bench-agent: the real agent sampling at 1 s (spooling with fsync and streaming to a real
//! collector) beside Debian's prometheus-node-exporter scraped every second, in the same run.
//! Prints one JSON object as its last line.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-agent`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use mcpwatch_tests::process::{AgentProc, CollectorProc};
use mcpwatch_tests::{free_addr, http_get, procfs, wait_for, Pki};

#[derive(Parser)]
struct Args {
    /// Measured seconds (= agent cycles = node_exporter scrapes).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
    node_exporter: String,
}

fn main() {
    let args = Args::parse();
    if !std::path::Path::new(&args.node_exporter).is_file() {
        eprintln!(
            "bench-agent: {} not found; install it with `apt-get install prometheus-node-exporter` \
             (or pass --node-exporter PATH)",
            args.node_exporter
        );
        std::process::exit(2);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let agent = AgentProc::start(
        &pki,
        &tmp.path().join("a"),
        "bench",
        collector.ingest,
        "1s",
        "256MiB",
    );
    let agent_pid = agent.child.as_ref().expect("running").id();

    let ne_addr = free_addr();
    let mut ne = Command::new(&args.node_exporter)
        .arg(format!("--web.listen-address={ne_addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("bench-agent: cannot start {}: {e}", args.node_exporter);
            std::process::exit(2);
        });
    wait_for("node_exporter", Duration::from_secs(20), || {
        matches!(http_get(ne_addr, "/metrics"), Ok((200, _))).then_some(())
    });
    // Warm-up: the first cycles allocate caches and buffers on both sides.
    for _ in 0..5 {
        let _ = http_get(ne_addr, "/metrics");
        std::thread::sleep(Duration::from_secs(1));
    }

    let cycles_before = agent.metric("mcpwatch_agent_sample_duration_seconds_count");
    let agent_cpu0 = procfs::cpu_ms(agent_pid).expect("agent cpu");
    let ne_cpu0 = procfs::cpu_ms(ne.id()).expect("node_exporter cpu");
    let start = Instant::now();
    let mut scrapes = 0u64;
    for i in 0..args.seconds {
        let (status, _) = http_get(ne_addr, "/metrics").expect("scrape node_exporter");
        assert_eq!(status, 200);
        scrapes += 1;
        // Keep a 1 s cadence like a Prometheus scrape interval.
        let next = start + Duration::from_secs(i + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let agent_cpu = procfs::cpu_ms(agent_pid).expect("agent cpu") - agent_cpu0;
    let ne_cpu = procfs::cpu_ms(ne.id()).expect("node_exporter cpu") - ne_cpu0;
    let cycles = agent.metric("mcpwatch_agent_sample_duration_seconds_count") - cycles_before;
    let agent_rss = procfs::mem_mb(agent_pid, "VmRSS").unwrap_or(f64::NAN);
    let agent_hwm = procfs::mem_mb(agent_pid, "VmHWM").unwrap_or(f64::NAN);
    let ne_rss = procfs::mem_mb(ne.id(), "VmRSS").unwrap_or(f64::NAN);
    let agent_anon = procfs::mem_mb(agent_pid, "RssAnon").unwrap_or(f64::NAN);
    let agent_file = procfs::mem_mb(agent_pid, "RssFile").unwrap_or(f64::NAN);
    let agent_threads = procfs::status_field(agent_pid, "Threads").unwrap_or(0);
    let _ = ne.kill();
    let _ = ne.wait();
    let per_cycle = agent_cpu / cycles.max(1.0);
    let per_scrape = ne_cpu / scrapes.max(1) as f64;
    let r = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "agent",
            "seconds": args.seconds,
            "agent_cycles": cycles,
            "agent_rss_mb": r(agent_rss),
            "agent_peak_rss_mb": r(agent_hwm),
            "agent_rss_anon_mb": r(agent_anon),
            "agent_rss_file_mb": r(agent_file),
            "agent_threads": agent_threads,
            "agent_cpu_ms_per_cycle": r(per_cycle),
            "node_exporter_rss_mb": r(ne_rss),
            "node_exporter_cpu_ms_per_scrape": r(per_scrape),
            "ratio": (per_cycle / per_scrape * 1000.0).round() / 1000.0,
        })
    );
}
