//! The simulated-agent load of the ingest benchmarks: N agents over real mutual TLS, each
//! streaming batches of `series × steps` samples with a window of un-acked batches, every
//! acknowledged batch counted with its send → ack latency and when it was acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::SinkExt;
use mcpwatch_common::wire::{Batch, Frame, Sample, SeriesDef, SeriesKey};

use crate::client::{config, Conn};
use crate::Pki;

/// The shape of the load.
#[derive(Debug, Clone)]
pub struct Load {
    pub agents: usize,
    pub series: u32,
    pub steps: u32,
    pub window: usize,
    /// First sample time (ms) and the spacing of steps (ms).
    pub base_ts: i64,
    pub step_ms: i64,
    /// Offered samples/s per agent at most (`None`: as fast as the acks allow).
    pub samples_per_s_per_agent: Option<f64>,
}

/// Realistic host-metric values: counters that climb, gauges that wander, ratios in 0..1.
pub fn value(series: u32, step: u64) -> f64 {
    match series % 4 {
        0 => (1_000_000 + step * (series as u64 * 1_337 % 9_000)) as f64,
        1 => ((step * 7 + series as u64) % 100) as f64 / 100.0 + 0.003 * series as f64,
        2 => (8_589_934_592u64 - (step * 4096 + series as u64 * 65536) % 1_000_000_000) as f64,
        _ => ((step + series as u64) % 17) as f64,
    }
}

/// What the agents achieved.
#[derive(Default)]
pub struct Totals {
    pub samples: AtomicU64,
    /// (acknowledged at, send → ack latency µs) per batch.
    pub acks: Mutex<Vec<(Instant, u64)>>,
}

impl Totals {
    /// Latency quantile `q` (ms) of the batches acknowledged within `[from, to]`.
    pub fn latency_ms(&self, q: f64, from: Instant, to: Instant) -> f64 {
        let mut lat: Vec<u64> = self
            .acks
            .lock()
            .expect("not poisoned: no panics while held")
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, l)| *l)
            .collect();
        lat.sort_unstable();
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    }

    pub fn batches_between(&self, from: Instant, to: Instant) -> usize {
        self.acks
            .lock()
            .expect("not poisoned: no panics while held")
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .count()
    }
}

async fn agent(
    i: usize,
    load: Arc<Load>,
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    totals: Arc<Totals>,
    stop: Instant,
) -> Result<(), crate::client::AnyError> {
    let id = format!("bench-{i}");
    let mut conn = Conn::open(addr, cfg).await?;
    let resume = match conn.handshake(Conn::hello(&id)).await? {
        Frame::Welcome(w) => w.resume_from_seq,
        other => return Err(format!("{id}: {other:?}").into()),
    };
    let mut seq = resume;
    let mut step: u64 = 0;
    let base_ts = load.base_ts + i as i64;
    let mut declared = false;
    let mut in_flight: std::collections::VecDeque<(u64, Instant, u64)> = Default::default();
    let began = Instant::now();
    let mut offered = 0u64;
    loop {
        while in_flight.len() < load.window && Instant::now() < stop {
            if let Some(rate) = load.samples_per_s_per_agent {
                // Paced: the next batch goes when the offered samples allow it.
                let due = began + std::time::Duration::from_secs_f64(offered as f64 / rate);
                if due > Instant::now() && in_flight.is_empty() {
                    tokio::time::sleep_until(due.into()).await;
                } else if due > Instant::now() {
                    break;
                }
            }
            let new_series = if declared {
                Vec::new()
            } else {
                declared = true;
                (0..load.series)
                    .map(|s| SeriesDef {
                        id: s,
                        key: SeriesKey::new(
                            format!("mcpwatch_bench_metric_{}", s % 20),
                            &[("index", &s.to_string())],
                        ),
                    })
                    .collect()
            };
            let mut samples = Vec::with_capacity((load.series * load.steps) as usize);
            for _ in 0..load.steps {
                let ts_ms = base_ts + step as i64 * load.step_ms;
                for s in 0..load.series {
                    samples.push(Sample {
                        series: s,
                        ts_ms,
                        value: value(s, step),
                    });
                }
                step += 1;
            }
            let n = samples.len() as u64;
            offered += n;
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
                let now = Instant::now();
                while in_flight.front().is_some_and(|f| f.0 <= acked) {
                    let (_, sent, n) = in_flight.pop_front().expect("checked non-empty");
                    totals.samples.fetch_add(n, Ordering::Relaxed);
                    totals
                        .acks
                        .lock()
                        .expect("not poisoned: no panics while held")
                        .push((now, sent.elapsed().as_micros() as u64));
                }
            }
            other => return Err(format!("{id}: unexpected {other:?}").into()),
        }
    }
}

/// Runs the load against the collector at `addr` until `stop`, on `runtime`; agent failures
/// are printed to stderr.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    pki: &Pki,
    addr: std::net::SocketAddr,
    load: Load,
    totals: Arc<Totals>,
    stop: Instant,
) {
    let load = Arc::new(load);
    let configs: Vec<_> = (0..load.agents)
        .map(|i| {
            let p = pki.agent(&format!("bench-{i}"));
            config(&pki.ca(), &p.cert, &p.key)
        })
        .collect();
    runtime.block_on(async {
        let tasks: Vec<_> = configs
            .into_iter()
            .enumerate()
            .map(|(i, cfg)| tokio::spawn(agent(i, load.clone(), addr, cfg, totals.clone(), stop)))
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("agent failed: {e}"),
                Err(e) => eprintln!("agent task failed: {e}"),
            }
        }
    });
}
