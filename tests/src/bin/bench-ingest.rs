//! bench-ingest: N simulated agents stream batches over real mutual TLS into the real
//! collector binary (durable acks, synchronous=FULL), beside a raw SQLite insert of the same
//! samples in the same run. With `--remote-write`, the collector also forwards everything to
//! a local VictoriaMetrics through `[[remote_write]]`, and the forwarding rate, lag and drain
//! time are reported. Prints one JSON object as its last line.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-ingest`
//! (`--remote-write` needs Debian's `victoria-metrics`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mcpwatch_common::wire::Sample;
use mcpwatch_tests::ingest_load::{self, Load, Totals};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::tsdb::Tsdb;
use mcpwatch_tests::{metric, procfs, Pki};

#[derive(Parser)]
struct Args {
    /// Simulated agents (one mTLS connection each).
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Series per agent.
    #[arg(long, default_value_t = 100)]
    series: u32,
    /// Timestamps per batch (samples per batch = series × this).
    #[arg(long, default_value_t = 10)]
    steps: u32,
    /// Un-acked batches per agent. Deeper windows add a little throughput and a lot of
    /// queueing to the latency figure (8: +7% samples/s, p99 ×1.8).
    #[arg(long, default_value_t = 2)]
    window: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Forward everything to a local VictoriaMetrics through remote write.
    #[arg(long)]
    remote_write: bool,
    /// Cap the offered load at this many samples/s in all (default: as fast as acked).
    #[arg(long)]
    rate: Option<f64>,
}

/// Samples acknowledged to the agents and forwarded by remote write, sampled together:
/// (when, acknowledged, forwarded).
type Progress = Vec<(Instant, u64, u64)>;

/// How long samples acknowledged at each point of the load waited until they were
/// forwarded: the first later point where the forwarded count reached that acknowledged
/// count, minus the point's time. Returns (p50, p99, max) seconds.
fn delivery_delays(progress: &Progress, load_end: Instant) -> (f64, f64, f64) {
    let mut delays: Vec<f64> = progress
        .iter()
        .filter(|p| p.0 <= load_end)
        .filter_map(|&(t, acked, _)| {
            progress
                .iter()
                .find(|q| q.0 >= t && q.2 >= acked)
                .map(|q| (q.0 - t).as_secs_f64())
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let q = |f: f64| {
        delays
            .get(((delays.len() as f64 * f) as usize).min(delays.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| (d * 100.0).round() / 100.0)
    };
    (q(0.5), q(0.99), q(1.0))
}

/// Same samples as plain rows, key (ts, series), 2000 rows per transaction, WAL + FULL.
fn sqlite_ceiling(dir: &std::path::Path, args: &Args, samples: u64) -> f64 {
    let db = rusqlite::Connection::open(dir.join("ceiling.db")).expect("open ceiling db");
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE s (ts INTEGER, series INTEGER, value REAL, PRIMARY KEY (ts, series)) WITHOUT ROWID;",
    )
    .expect("schema");
    let per_agent = (args.series * args.steps) as u64;
    let batches = samples.div_ceil(per_agent).max(1);
    let started = Instant::now();
    let mut rows = 0u64;
    let mut tx_rows = 0;
    db.execute_batch("BEGIN").expect("begin");
    {
        let mut st = db
            .prepare_cached("INSERT INTO s VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for b in 0..batches {
            let agent = b % args.agents as u64;
            let step0 = b / args.agents as u64 * args.steps as u64;
            for k in 0..args.steps as u64 {
                let ts = 1_700_000_000_000i64 + ((step0 + k) * 1000) as i64;
                for s in 0..args.series {
                    let series = agent * args.series as u64 + s as u64;
                    st.execute(rusqlite::params![
                        ts,
                        series as i64,
                        ingest_load::value(s, step0 + k)
                    ])
                    .expect("insert");
                    rows += 1;
                    tx_rows += 1;
                    if tx_rows == 2000 {
                        db.execute_batch("COMMIT; BEGIN").expect("commit");
                        tx_rows = 0;
                    }
                }
            }
        }
    }
    db.execute_batch("COMMIT").expect("commit");
    rows as f64 / started.elapsed().as_secs_f64()
}

/// The fastest layout we know: each batch's samples as one postcard BLOB row (DESIGN.md:
/// "one BLOB per frame"), 100 batches per transaction, WAL + FULL.
fn sqlite_blob_ceiling(dir: &std::path::Path, args: &Args, samples: u64) -> f64 {
    let db = rusqlite::Connection::open(dir.join("ceiling-blob.db")).expect("open blob db");
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE b (id INTEGER PRIMARY KEY, agent INTEGER, seq INTEGER, data BLOB);",
    )
    .expect("schema");
    let per_batch = (args.series * args.steps) as u64;
    let batches = samples.div_ceil(per_batch).max(1);
    let started = Instant::now();
    db.execute_batch("BEGIN").expect("begin");
    {
        let mut st = db
            .prepare_cached("INSERT INTO b (agent, seq, data) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for b in 0..batches {
            let step0 = b / args.agents as u64 * args.steps as u64;
            let mut rows = Vec::with_capacity(per_batch as usize);
            for k in 0..args.steps as u64 {
                let ts_ms = 1_700_000_000_000i64 + ((step0 + k) * 1000) as i64;
                for s in 0..args.series {
                    rows.push(Sample {
                        series: s,
                        ts_ms,
                        value: ingest_load::value(s, step0 + k),
                    });
                }
            }
            let blob = postcard::to_stdvec(&rows).expect("encode");
            st.execute(rusqlite::params![
                (b % args.agents as u64) as i64,
                b as i64,
                blob
            ])
            .expect("insert");
            if b % 100 == 99 {
                db.execute_batch("COMMIT; BEGIN").expect("commit");
            }
        }
    }
    db.execute_batch("COMMIT").expect("commit");
    (batches * per_batch) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let vm = args
        .remote_write
        .then(|| Tsdb::victoria(&tmp.path().join("vm")));
    let mut extra = "max_connections = 4096\n".to_owned();
    if let Some(vm) = &vm {
        extra.push_str(&format!(
            "[[remote_write]]\nname = \"vm\"\nurl = \"{}\"\n[remote_write.queue]\n\
             batch_send_deadline = \"1s\"\n",
            vm.write_url()
        ));
    }
    let mut collector = CollectorProc::start(&pki, &tmp.path().join("c"), &extra);
    let pid = collector.child.as_ref().expect("running").id();
    let vm_pid = vm.as_ref().and_then(Tsdb::pid);
    // With remote write the samples must be recent (receivers refuse old ones): from a
    // minute ago, 1 ms apart per series.
    let (base_ts, step_ms) = if vm.is_some() {
        (mcpwatch_common::time::now_ms() - 60_000, 1)
    } else {
        (1_700_000_000_000, 1000)
    };
    let load = Load {
        agents: args.agents,
        series: args.series,
        steps: args.steps,
        window: args.window,
        base_ts,
        step_ms,
        samples_per_s_per_agent: args.rate.map(|r| r / args.agents as f64),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let totals = Arc::new(Totals::default());
    let cpu_before = procfs::cpu_ms(pid).unwrap_or(0.0);
    let vm_cpu_before = vm_pid.and_then(procfs::cpu_ms).unwrap_or(0.0);
    let started = Instant::now();
    let stop = started + Duration::from_secs(args.seconds);
    let progress = Arc::new(std::sync::Mutex::new(Progress::new()));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = vm.as_ref().map(|_| {
        let (http, progress, totals, watching) = (
            collector.http,
            progress.clone(),
            totals.clone(),
            watching.clone(),
        );
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let acked = totals.samples.load(std::sync::atomic::Ordering::Relaxed);
                let m = mcpwatch_tests::http_get(http, "/metrics")
                    .map(|r| r.1)
                    .unwrap_or_default();
                let sent = metric(
                    &m,
                    "mcpwatch_collector_remote_write_samples_sent_total{endpoint=\"vm\"}",
                )
                .unwrap_or(0.0) as u64;
                progress
                    .lock()
                    .expect("not poisoned")
                    .push((Instant::now(), acked, sent));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    ingest_load::run(&runtime, &pki, collector.ingest, load, totals.clone(), stop);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_at_stop = procfs::cpu_ms(pid).unwrap_or(0.0);
    let samples = totals.samples.load(std::sync::atomic::Ordering::Relaxed);
    let sent = |c: &CollectorProc| {
        metric(
            &c.metrics(),
            "mcpwatch_collector_remote_write_samples_sent_total{endpoint=\"vm\"}",
        )
        .unwrap_or(0.0) as u64
    };
    let mut remote = serde_json::Value::Null;
    if vm.is_some() {
        let sent_at_stop = sent(&collector);
        let drain_started = Instant::now();
        while sent(&collector) < samples && drain_started.elapsed() < Duration::from_secs(300) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let drain_s = drain_started.elapsed().as_secs_f64();
        // One more point after everything arrived, then the delays.
        std::thread::sleep(Duration::from_millis(200));
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(w) = watcher {
            w.join().expect("watcher");
        }
        let (d50, d99, dmax) = delivery_delays(&progress.lock().expect("not poisoned"), stop);
        let forwarded = sent(&collector);
        assert_eq!(forwarded, samples, "every acknowledged sample forwarded");
        let vm_cpu = (vm_pid.and_then(procfs::cpu_ms).unwrap_or(0.0) - vm_cpu_before) / 1000.0;
        let collector_cpu = (procfs::cpu_ms(pid).unwrap_or(0.0) - cpu_before) / 1000.0;
        remote = serde_json::json!({
            "collector_cpu_s_per_s_until_drained": (collector_cpu / (elapsed + drain_s) * 100.0).round() / 100.0,
            "forwarded_during_load_per_s": (sent_at_stop as f64 / elapsed).round(),
            "forwarded_per_s_until_drained": (forwarded as f64 / (elapsed + drain_s)).round(),
            "drain_seconds_after_load": (drain_s * 10.0).round() / 10.0,
            "delivery_delay_seconds_p50": d50,
            "delivery_delay_seconds_p99": d99,
            "delivery_delay_seconds_max": dmax,
            "victoriametrics_cpu_s_per_s": (vm_cpu / (elapsed + drain_s) * 100.0).round() / 100.0,
        });
    }
    let collector_cpu_s = (cpu_at_stop - cpu_before) / 1000.0;
    let rss = procfs::mem_mb(pid, "VmHWM").unwrap_or(f64::NAN);
    let samples_per_s = samples as f64 / elapsed;
    let pct = |p: f64| totals.latency_ms(p, started, Instant::now());
    assert!(collector.stop().success(), "collector exit");
    let db_bytes: u64 = ["collector.db", "collector.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(collector.dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let stored = mcpwatch_tests::db::all_sample_count(&collector.db);
    assert_eq!(stored, samples, "every acked sample is stored");
    eprintln!("measuring the raw SQLite ceiling on the same samples...");
    let ceiling = sqlite_ceiling(tmp.path(), &args, samples.min(20_000_000));
    let blob_ceiling = sqlite_blob_ceiling(tmp.path(), &args, samples.min(50_000_000));
    println!(
        "{}",
        serde_json::json!({
            "bench": "ingest",
            "agents": args.agents,
            "samples_per_batch": args.series * args.steps,
            "seconds": (elapsed * 10.0).round() / 10.0,
            "samples": samples,
            "samples_per_s": samples_per_s.round(),
            "ceiling_samples_per_s": ceiling.round(),
            "ratio": (samples_per_s / ceiling * 1000.0).round() / 1000.0,
            "blob_ceiling_samples_per_s": blob_ceiling.round(),
            "blob_ratio": (samples_per_s / blob_ceiling * 1000.0).round() / 1000.0,
            "p50_commit_ms": pct(0.50),
            "p99_commit_ms": pct(0.99),
            "bytes_per_sample": (db_bytes as f64 / samples.max(1) as f64 * 100.0).round() / 100.0,
            "collector_rss_mb": (rss * 10.0).round() / 10.0,
            "collector_cpu_s_per_s": (collector_cpu_s / elapsed * 100.0).round() / 100.0,
            "remote_write": remote,
        })
    );
}
