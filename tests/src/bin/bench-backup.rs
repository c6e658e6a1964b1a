//! bench-backup: an online backup of a large collector database while 100 simulated agents
//! keep streaming into it over mutual TLS. The load fills the database to `--gb`, then the
//! backup runs (`mcpwatch-collector backup`, its own read-only connection); the ingest stall
//! is the send → ack latency of the batches acknowledged while it ran, beside the same
//! figure before it. Prints one JSON object as its last line.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-backup --gb 5`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mcpwatch_tests::ingest_load::{self, Load, Totals};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::{bin, procfs, Pki};

#[derive(Parser)]
struct Args {
    /// Size the database is filled to before the backup (GB of database + WAL files).
    #[arg(long, default_value_t = 5.0)]
    gb: f64,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Where the database and the backup go (both on this disk; default: a temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn db_bytes(c: &CollectorProc) -> u64 {
    ["collector.db", "collector.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(c.dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn main() {
    let args = Args::parse();
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    };
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(&pki, &tmp.path().join("c"), "max_connections = 4096");
    let pid = collector.child.as_ref().expect("running").id();
    let totals = Arc::new(Totals::default());
    let load = Load {
        agents: args.agents,
        series: 100,
        steps: 10,
        window: 2,
        // From a day ago, one second apart: a few minutes of load spans about a day and a
        // half, inside raw retention (7 days), so retention deletes nothing.
        base_ts: mcpwatch_common::time::now_ms() - 86_400_000,
        step_ms: 1000,
        samples_per_s_per_agent: None,
    };
    let target = (args.gb * 1e9) as u64;
    // The load runs until the backup is done (`stop` is pushed by setting a far deadline
    // and ending through `done`).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let (pki_dir, addr, totals, load) = (
            pki.dir.clone(),
            collector.ingest,
            totals.clone(),
            load.clone(),
        );
        let done = done.clone();
        std::thread::spawn(move || {
            let pki = Pki { dir: pki_dir };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            // Rounds of 10 s until told to stop.
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let stop = Instant::now() + Duration::from_secs(10);
                ingest_load::run(&runtime, &pki, addr, load.clone(), totals.clone(), stop);
            }
        })
    };
    let fill_started = Instant::now();
    while db_bytes(&collector) < target {
        std::thread::sleep(Duration::from_millis(500));
    }
    let fill_s = fill_started.elapsed().as_secs_f64();
    eprintln!(
        "filled {} bytes in {fill_s:.0} s; backing up",
        db_bytes(&collector)
    );
    let before_from = Instant::now() - Duration::from_secs(20);
    let dest = tmp.path().join("backup.db");
    let cpu0 = procfs::cpu_ms(pid).unwrap_or(0.0);
    let t0 = Instant::now();
    let out = std::process::Command::new(bin("mcpwatch-collector"))
        .args(["backup", "--config"])
        .arg(&collector.config)
        .arg("--to")
        .arg(&dest)
        .output()
        .expect("run backup");
    let t1 = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backup_s = (t1 - t0).as_secs_f64();
    let collector_cpu = (procfs::cpu_ms(pid).unwrap_or(0.0) - cpu0) / 1000.0;
    // Ten more seconds of load after it, then stop.
    std::thread::sleep(Duration::from_secs(10));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    loader.join().expect("load thread");
    let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    let db = db_bytes(&collector);
    let during = |q| totals.latency_ms(q, t0, t1);
    let before = |q| totals.latency_ms(q, before_from, t0);
    let batches_during = totals.batches_between(t0, t1);
    let samples_per_s_during = batches_during as f64 * 1000.0 / backup_s;
    println!(
        "{}",
        serde_json::json!({
            "bench": "backup",
            "db_bytes": db,
            "fill_seconds": fill_s.round(),
            "backup_seconds": (backup_s * 10.0).round() / 10.0,
            "backup_bytes": size,
            "backup_mb_per_s": (size as f64 / 1e6 / backup_s).round(),
            "ingest_samples_per_s_during": samples_per_s_during.round(),
            "p50_ack_ms_during": during(0.5),
            "p99_ack_ms_during": during(0.99),
            "max_ack_ms_during": during(1.0),
            "p99_ack_ms_before": before(0.99),
            "collector_cpu_s_during": (collector_cpu * 10.0).round() / 10.0,
            "cli_output": String::from_utf8_lossy(&out.stdout).trim(),
        })
    );
}
