//! bench-ingest: N simulated agents stream batches over real mutual TLS into the real
//! collector binary (durable acks, synchronous=FULL), beside a raw SQLite insert of the same
//! samples in the same run. Prints one JSON object as its last line.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-ingest`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::SinkExt;
use mcpwatch_common::wire::{Batch, Frame, Sample, SeriesDef, SeriesKey};
use mcpwatch_tests::client::{config, Conn};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::{procfs, Pki};

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
}

/// Realistic host-metric values: counters that climb, gauges that wander, ratios in 0..1.
fn value(series: u32, step: u64) -> f64 {
    match series % 4 {
        0 => (1_000_000 + step * (series as u64 * 1_337 % 9_000)) as f64,
        1 => ((step * 7 + series as u64) % 100) as f64 / 100.0 + 0.003 * series as f64,
        2 => (8_589_934_592u64 - (step * 4096 + series as u64 * 65536) % 1_000_000_000) as f64,
        _ => ((step + series as u64) % 17) as f64,
    }
}

struct Totals {
    samples: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u64>>,
}

async fn agent(
    i: usize,
    args: Arc<Args>,
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    totals: Arc<Totals>,
    stop: Instant,
) -> Result<(), mcpwatch_tests::client::AnyError> {
    let id = format!("bench-{i}");
    let mut conn = Conn::open(addr, cfg).await?;
    let resume = match conn.handshake(Conn::hello(&id)).await? {
        Frame::Welcome(w) => w.resume_from_seq,
        other => return Err(format!("{id}: {other:?}").into()),
    };
    let mut seq = resume;
    let mut step: u64 = 0;
    let base_ts = 1_700_000_000_000i64 + i as i64;
    let mut declared = false;
    let mut in_flight: std::collections::VecDeque<(u64, Instant, u64)> = Default::default();
    loop {
        while in_flight.len() < args.window && Instant::now() < stop {
            let new_series = if declared {
                Vec::new()
            } else {
                declared = true;
                (0..args.series)
                    .map(|s| SeriesDef {
                        id: s,
                        key: SeriesKey::new(
                            format!("mcpwatch_bench_metric_{}", s % 20),
                            &[("index", &s.to_string())],
                        ),
                    })
                    .collect()
            };
            let mut samples = Vec::with_capacity((args.series * args.steps) as usize);
            for _ in 0..args.steps {
                let ts_ms = base_ts + step as i64 * 1000;
                for s in 0..args.series {
                    samples.push(Sample {
                        series: s,
                        ts_ms,
                        value: value(s, step),
                    });
                }
                step += 1;
            }
            let n = samples.len() as u64;
            conn.framed
                .feed(Frame::Batch(Batch {
                    seq,
                    new_series,
                    samples,
                    events: vec![],
                }))
                .await?;
            in_flight.push_back((seq, Instant::now(), n));
            seq += 1;
        }
        conn.framed.flush().await?;
        if in_flight.is_empty() {
            return Ok(());
        }
        match conn.recv().await? {
            Frame::Ack { seq: acked } => {
                while in_flight.front().is_some_and(|f| f.0 <= acked) {
                    let (_, sent, n) = in_flight.pop_front().expect("checked non-empty");
                    totals.samples.fetch_add(n, Ordering::Relaxed);
                    totals
                        .latencies_us
                        .lock()
                        .expect("not poisoned: no panics while held")
                        .push(sent.elapsed().as_micros() as u64);
                }
            }
            other => return Err(format!("{id}: unexpected {other:?}").into()),
        }
    }
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
                    st.execute(rusqlite::params![ts, series as i64, value(s, step0 + k)])
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
                        value: value(s, step0 + k),
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
    let args = Arc::new(Args::parse());
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let mut collector = CollectorProc::start(&pki, &tmp.path().join("c"), "max_connections = 4096");
    let pid = collector.child.as_ref().expect("running").id();
    let configs: Vec<_> = (0..args.agents)
        .map(|i| {
            let p = pki.agent(&format!("bench-{i}"));
            config(&pki.ca(), &p.cert, &p.key)
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let totals = Arc::new(Totals {
        samples: AtomicU64::new(0),
        latencies_us: Default::default(),
    });
    let cpu_before = procfs::cpu_ms(pid).unwrap_or(0.0);
    let started = Instant::now();
    let stop = started + Duration::from_secs(args.seconds);
    runtime.block_on(async {
        let tasks: Vec<_> = configs
            .into_iter()
            .enumerate()
            .map(|(i, cfg)| {
                tokio::spawn(agent(
                    i,
                    args.clone(),
                    collector.ingest,
                    cfg,
                    totals.clone(),
                    stop,
                ))
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("agent failed: {e}"),
                Err(e) => eprintln!("agent task failed: {e}"),
            }
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let collector_cpu_s = (procfs::cpu_ms(pid).unwrap_or(0.0) - cpu_before) / 1000.0;
    let rss = procfs::mem_mb(pid, "VmHWM").unwrap_or(f64::NAN);
    let samples = totals.samples.load(Ordering::Relaxed);
    let samples_per_s = samples as f64 / elapsed;
    let mut lat = totals
        .latencies_us
        .lock()
        .expect("not poisoned: agents are done")
        .clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
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
        })
    );
}
