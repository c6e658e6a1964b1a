//! bench-alert: alert latency from a sample's timestamp to the HTTP request arriving at a
//! local webhook receiver, for mcpwatch (raw agent → real collector, rule with `for = 0`) and,
//! in the same run, for Debian's Prometheus + Alertmanager at their tightest settings (an
//! exporter flips a gauge; Prometheus scrapes and evaluates every 10 ms, the smallest interval
//! it keeps up with; Alertmanager routes with `group_wait: 0s`, one group per alert). The two
//! halves run one after the other, never at once. Everything listens on 127.0.0.1 only.
//! Prints one JSON object as its last line.
//!
//! mcpwatch latency = webhook arrival − the sample's `ts_ms` (wall clock, whole ms);
//! Prometheus latency = Alertmanager webhook arrival − the moment the exporter started serving
//! the 1 (so it includes waiting for the next scrape, as a real exporter would).
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-alert`
//! (`--only-prometheus` / `--only-mcpwatch` run one half).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use mcpwatch_common::wire::SeriesKey;
use mcpwatch_tests::client::{self, AnyError, Conn};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::receivers::{verify_hmac, HttpCapture, Reply};
use mcpwatch_tests::sim::SimAgent;
use mcpwatch_tests::{free_addr, http_get, procfs, Pki};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

#[derive(Parser)]
struct Args {
    /// Measured alerts per system (one new series each).
    #[arg(long, default_value_t = 50)]
    alerts: usize,
    /// Mean gap between two alerts in ms. Each gap is drawn uniformly from 0.5× to 1.5× this,
    /// so alert times fall at every phase of the scrape and evaluation cycles.
    #[arg(long, default_value_t = 300)]
    spacing_ms: u64,
    /// How long to wait for outstanding notifications after the last alert, in seconds.
    #[arg(long, default_value_t = 30)]
    wait_s: u64,
    /// Run only the Prometheus + Alertmanager half.
    #[arg(long, conflicts_with = "only_mcpwatch")]
    only_prometheus: bool,
    /// Run only the mcpwatch half.
    #[arg(long)]
    only_mcpwatch: bool,
    /// Prometheus `scrape_interval` (and `scrape_timeout`) in ms. 10 ms is the smallest
    /// Prometheus 2.42 keeps up with here (2 cores): no failed scrapes, no missed evaluations,
    /// about 0.45 CPU core. At 5 ms it misses ~6% of evaluations and some scrapes time out
    /// for no gain in latency; at 2 ms it misses ~45%; at 1 ms millisecond timestamps collide
    /// ("different value but same timestamp") and samples are dropped. Config validation
    /// itself accepts anything down to 1 ms.
    #[arg(long, default_value_t = 10)]
    scrape_interval_ms: u64,
    /// Prometheus `evaluation_interval` in ms (see `--scrape-interval-ms`).
    #[arg(long, default_value_t = 10)]
    eval_interval_ms: u64,
    /// Alertmanager route `group_interval` in ms. It only paces follow-up notifications of a
    /// group, never the first one, so it does not enter the figure: 1 ms (accepted; 0 is
    /// not) measured the same latency at 20× the Alertmanager CPU, as every group re-runs its
    /// notification pipeline that often. 1 s, as on the mcpwatch side.
    #[arg(long, default_value_t = 1000)]
    group_interval_ms: u64,
    #[arg(long, default_value = "/usr/bin/prometheus")]
    prometheus: String,
    #[arg(long, default_value = "/usr/bin/prometheus-alertmanager")]
    alertmanager: String,
}

/// The HMAC key of the collector's webhook receiver.
const WEBHOOK_SECRET: &str = "bench-secret";
/// The agent id the raw client presents; the collector labels alerts `host = "bench-alert"`.
const AGENT_ID: &str = "bench-alert";
/// Label value of the alert that proves a pipeline works before anything is measured.
const WARMUP: &str = "warmup";
/// How long a Prometheus-side gauge stays at 1 (mcpwatch's rule window: its alerts resolve
/// once the last sample is older than that).
const FIRING_FOR: Duration = Duration::from_secs(10);

const MCPWATCH_RULES: &str = r#"[[rule]]
name = "bench_high"
selector = "bench_value"
function = "last"
window = "10s"
op = ">"
critical = 0.5
severity = "critical"
summary = "bench {{ $labels.i }}"
"#;

/// Inserted after the `[ingest]` keys of collector.toml; paths are relative to its directory.
fn mcpwatch_alerting(url: &str) -> String {
    format!(
        r#"
[alerting]
rule_files = ["bench-rules.toml"]
builtin_rules = false
group_by = ["..."]
group_wait = "0s"
group_interval = "1s"
repeat_interval = "4h"

[[receiver]]
type = "webhook"
name = "bench"
url = "{url}"
secret = {{ file = "bench-secret" }}
"#
    )
}

const PROMETHEUS_RULES: &str = r#"groups:
  - name: bench
    rules:
      - alert: BenchHigh
        expr: bench_value > 0.5
        for: 0s
        labels:
          severity: critical
        annotations:
          summary: "bench {{ $labels.i }}"
"#;

fn prometheus_config(args: &Args, exporter: SocketAddr, alertmanager: SocketAddr) -> String {
    format!(
        r#"global:
  scrape_interval: {s}ms
  scrape_timeout: {s}ms
  evaluation_interval: {e}ms
rule_files: ["rules.yml"]
alerting:
  alertmanagers:
    - api_version: v2
      static_configs:
        - targets: ["{alertmanager}"]
scrape_configs:
  - job_name: bench
    static_configs:
      - targets: ["{exporter}"]
"#,
        s = args.scrape_interval_ms,
        e = args.eval_interval_ms,
    )
}

fn alertmanager_config(args: &Args, url: &str) -> String {
    format!(
        r#"route:
  receiver: bench
  group_by: ["..."]
  group_wait: 0s
  group_interval: {g}ms
  repeat_interval: 4h
receivers:
  - name: bench
    webhook_configs:
      - url: "{url}"
        send_resolved: false
"#,
        g = args.group_interval_ms,
    )
}

/// Converts `Instant`s (HttpCapture's arrival times) to wall-clock milliseconds, from one
/// reading of both clocks taken at start.
struct Clock {
    instant: Instant,
    wall_ms: f64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            instant: Instant::now(),
            wall_ms: wall_ms_now(),
        }
    }

    fn wall_ms(&self, at: Instant) -> f64 {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.wall_ms + d.as_secs_f64() * 1000.0,
            None => self.wall_ms - self.instant.duration_since(at).as_secs_f64() * 1000.0,
        }
    }
}

fn wall_ms_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        * 1000.0
}

/// xorshift64*: jitter for the gaps between alerts, no dependency needed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        Rng(wall_ms_now().to_bits() | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gap(&mut self, mean_ms: u64) -> Duration {
        Duration::from_secs_f64(mean_ms as f64 / 1000.0 * (0.5 + self.unit()))
    }
}

/// What one half measured.
struct Half {
    /// Latencies in ms, sorted.
    latencies: Vec<f64>,
    missed: usize,
    /// CPU seconds per second of the measured phase, per process.
    cpu: BTreeMap<&'static str, f64>,
    /// Whether the system kept up with its settings (Prometheus: its own counters).
    health: Value,
}

impl Half {
    fn pct(&self, p: f64) -> Option<f64> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        Some(round1(self.latencies[rank - 1]))
    }

    fn max(&self) -> Option<f64> {
        self.latencies.last().copied().map(round1)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The `i` labels of the firing alerts in a webhook body. Both payloads (mcpwatch's and
/// Alertmanager's) carry `alerts: [{status, labels}]`.
fn firing_labels(body: &Value) -> Vec<String> {
    body.get("alerts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("status").and_then(Value::as_str) == Some("firing"))
        .filter_map(|a| a.pointer("/labels/i").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// Reads captured requests until every label in `starts` (label → start time, wall ms) has
/// its first firing notification or `deadline` passes; records arrival − start in `got`.
async fn collect(
    capture: &mut HttpCapture,
    clock: &Clock,
    starts: &BTreeMap<String, f64>,
    got: &mut BTreeMap<String, f64>,
    secret: Option<&[u8]>,
    deadline: Instant,
) {
    while starts.keys().any(|k| !got.contains_key(k)) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // HttpCapture::next panics after 10 s: ask for at most 5 s at a time.
        let Ok(req) = tokio::time::timeout(left.min(Duration::from_secs(5)), capture.next()).await
        else {
            continue;
        };
        if let Some(secret) = secret {
            let sig = req.header("x-mcpwatch-signature").unwrap_or("");
            if !verify_hmac(secret, &req.body, sig) {
                eprintln!("warning: webhook request with a bad signature");
            }
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            eprintln!(
                "warning: non-JSON request on {}: {}",
                req.path,
                String::from_utf8_lossy(&req.body)
            );
            continue;
        };
        let arrived = clock.wall_ms(req.at);
        for label in firing_labels(&body) {
            if let Some(start) = starts.get(&label) {
                got.entry(label).or_insert(arrived - start);
            }
        }
    }
}

fn finish(starts: &BTreeMap<String, f64>, got: &BTreeMap<String, f64>) -> (Vec<f64>, usize) {
    let mut latencies: Vec<f64> = starts.keys().filter_map(|k| got.get(k).copied()).collect();
    latencies.sort_unstable_by(f64::total_cmp);
    let missed = starts.len() - latencies.len();
    (latencies, missed)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- mcpwatch ---------------------------------------------------------------------------

/// Sends `bench_value{i=label} 1` at now (declaring the series on first use), waits for
/// the ack; returns the sample's timestamp (wall ms).
async fn send_sample(agent: &mut SimAgent, label: &str) -> Result<f64, AnyError> {
    let ts_ms = wall_ms_now() as i64;
    let key = SeriesKey::new("bench_value", &[("i", label)]);
    agent.try_push(&[(key, ts_ms, 1.0)], Vec::new()).await?;
    Ok(ts_ms as f64)
}

fn run_mcpwatch(args: &Args, rt: &Runtime, tmp: &Path, clock: &Clock) -> Half {
    let pki = Pki::new(&tmp.join("pki"));
    let certs = pki.agent(AGENT_ID);
    let mut capture = rt.block_on(HttpCapture::start(Reply::status(200)));
    let dir = tmp.join("collector");
    std::fs::create_dir_all(&dir).expect("mkdir collector dir");
    std::fs::write(dir.join("bench-rules.toml"), MCPWATCH_RULES).expect("write rules");
    std::fs::write(dir.join("bench-secret"), WEBHOOK_SECRET).expect("write secret");
    let mut collector = CollectorProc::start(&pki, &dir, &mcpwatch_alerting(&capture.url("/hook")));
    let pid = collector.child.as_ref().expect("running").id();
    let cfg = client::config(&pki.ca(), &certs.cert, &certs.key);
    let mut rng = Rng::seeded();
    let secret = WEBHOOK_SECRET.as_bytes();

    let outcome = rt.block_on(async {
        // Series ids: 0 for the warm-up, k + 1 for measured alert k (one new series each).
        let mut agent = SimAgent::try_connect(collector.ingest, cfg, Conn::hello(AGENT_ID))
            .await?
            .first_series_id(0)
            .ack_timeout(None);
        // Warm-up: one alert end to end before measuring.
        let mut starts = BTreeMap::new();
        let mut got = BTreeMap::new();
        starts.insert(WARMUP.to_owned(), send_sample(&mut agent, WARMUP).await?);
        let deadline = Instant::now() + Duration::from_secs(30);
        collect(
            &mut capture,
            clock,
            &starts,
            &mut got,
            Some(secret),
            deadline,
        )
        .await;
        if got.is_empty() {
            return Err("no firing webhook for the warm-up alert within 30 s".into());
        }
        eprintln!("mcpwatch warm-up alert: {:.1} ms", got[WARMUP]);

        let cpu0 = procfs::cpu_ms(pid).unwrap_or(f64::NAN);
        let started = Instant::now();
        let mut starts = BTreeMap::new();
        let mut got = BTreeMap::new();
        for k in 0..args.alerts {
            tokio::time::sleep(rng.gap(args.spacing_ms)).await;
            let label = k.to_string();
            let ts = send_sample(&mut agent, &label).await?;
            starts.insert(label, ts);
        }
        let deadline = Instant::now() + Duration::from_secs(args.wait_s);
        collect(
            &mut capture,
            clock,
            &starts,
            &mut got,
            Some(secret),
            deadline,
        )
        .await;
        let cpu = procfs::cpu_ms(pid).unwrap_or(f64::NAN) - cpu0;
        Ok::<_, AnyError>((starts, got, cpu / 1000.0 / started.elapsed().as_secs_f64()))
    });
    let (starts, got, cpu) = match outcome {
        Ok(o) => o,
        Err(e) => panic!(
            "mcpwatch half failed: {e}\n--- collector log (tail) ---\n{}",
            tail(&collector.log, 40)
        ),
    };
    let status = collector.stop();
    if !status.success() {
        eprintln!("warning: collector exited with {status}");
    }
    let (latencies, missed) = finish(&starts, &got);
    Half {
        latencies,
        missed,
        cpu: BTreeMap::from([("collector", cpu)]),
        health: Value::Null,
    }
}

// ---- Prometheus + Alertmanager ----------------------------------------------------------

/// `bench_value{i="..."}` gauges served as Prometheus text on `/metrics` (any path).
#[derive(Clone)]
struct Exporter {
    values: Arc<Mutex<Vec<(String, f64)>>>,
}

impl Exporter {
    fn new(labels: impl IntoIterator<Item = String>) -> Exporter {
        Exporter {
            values: Arc::new(Mutex::new(labels.into_iter().map(|l| (l, 0.0)).collect())),
        }
    }

    /// Sets series `label` to 1 and returns the moment it is served (wall ms): any scrape
    /// that starts rendering after this sees the 1.
    fn flip(&self, clock: &Clock, label: &str) -> f64 {
        let mut values = self
            .values
            .lock()
            .expect("not poisoned: no panics while held");
        let slot = values
            .iter_mut()
            .find(|(l, _)| l == label)
            .expect("label declared at start");
        slot.1 = 1.0;
        clock.wall_ms(Instant::now())
    }

    /// Sets series `label` back to 0 (its alert resolves at the next evaluation).
    fn reset(&self, label: &str) {
        let mut values = self
            .values
            .lock()
            .expect("not poisoned: no panics while held");
        if let Some(slot) = values.iter_mut().find(|(l, _)| l == label) {
            slot.1 = 0.0;
        }
    }

    fn render(&self) -> String {
        let values = self
            .values
            .lock()
            .expect("not poisoned: no panics while held");
        let mut out =
            String::from("# HELP bench_value Bench alert input.\n# TYPE bench_value gauge\n");
        for (l, v) in values.iter() {
            out.push_str(&format!("bench_value{{i=\"{l}\"}} {v}\n"));
        }
        out
    }

    /// Serves on a fresh loopback port (keep-alive HTTP/1.1, GET only); returns the address.
    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind exporter");
        let addr = listener.local_addr().expect("exporter addr");
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let _ = me.connection(stream).await;
                });
            }
        });
        addr
    }

    async fn connection(&self, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            buf.drain(..end);
            let body = self.render();
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).await?;
        }
    }
}

/// A child daemon with its log file; SIGKILLed on drop (including when a panic unwinds).
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, program: &str, args: &[String], log: PathBuf) -> Daemon {
        let err = std::fs::File::create(&log).expect("create log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program} ({e}): apt-get install -y prometheus prometheus-alertmanager")
            });
        Daemon { name, child, log }
    }

    /// Waits until GET `path` answers 200 and `ok(body)` holds; panics with the log if the
    /// process exits or `timeout` passes.
    fn wait_http(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited early ({status}):\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
            if let Ok((200, body)) = http_get(addr, path) {
                if ok(&body) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} {path} not ready within {timeout:?}:\n{}",
                self.name,
                tail(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cpu_ms(&self) -> f64 {
        procfs::cpu_ms(self.child.id()).unwrap_or(f64::NAN)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of every sample of `name` (any labels) in a Prometheus text exposition.
fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let n = l.split(['{', ' ']).next()?;
            (n == name).then(|| l.rsplit(' ').next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// The value of a one-element instant query (the expression URL-encoded).
fn prometheus_query(addr: SocketAddr, expr: &str) -> Option<f64> {
    let (_, body) = http_get(addr, &format!("/api/v1/query?query={expr}")).ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v.pointer("/data/result/0/value/1")?.as_str()?.parse().ok()
}

/// Prometheus's own account of the run: did it scrape and evaluate at the configured pace
/// without failures? (Scrapes start ~5 s after evaluations: the scrape manager applies
/// discovered targets every 5 s.)
fn prometheus_health(addr: SocketAddr) -> Value {
    let metrics = http_get(addr, "/metrics").map(|r| r.1).unwrap_or_default();
    let m = |name: &str| sum_metric(&metrics, name);
    json!({
        "scrapes": prometheus_query(addr, "count_over_time(up%5B1h%5D)"),
        "scrapes_failed":
            prometheus_query(addr, "count_over_time(up%5B1h%5D)-sum_over_time(up%5B1h%5D)"),
        "rule_group_evaluations": m("prometheus_rule_group_iterations_total"),
        "rule_group_evaluations_missed": m("prometheus_rule_group_iterations_missed_total"),
        "rule_evaluation_failures": m("prometheus_rule_evaluation_failures_total"),
        "samples_dropped_duplicate_timestamp":
            m("prometheus_target_scrapes_sample_duplicate_timestamp_total"),
        "notifications_dropped": m("prometheus_notifications_dropped_total"),
    })
}

fn version(program: &str) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // "prometheus, version 2.42.0+ds (branch: ...)" → "2.42.0+ds"
    text.lines()
        .next()?
        .split("version ")
        .nth(1)?
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

fn run_prometheus(args: &Args, rt: &Runtime, tmp: &Path, clock: &Clock) -> Half {
    let dir = tmp.join("prometheus");
    std::fs::create_dir_all(&dir).expect("mkdir prometheus dir");
    let labels: Vec<String> = (0..args.alerts).map(|k| k.to_string()).collect();
    let exporter = Exporter::new(std::iter::once(WARMUP.to_owned()).chain(labels.iter().cloned()));
    let exporter_addr = rt.block_on(exporter.serve());
    let mut capture = rt.block_on(HttpCapture::start(Reply::status(200)));

    let am_addr = free_addr();
    std::fs::write(
        dir.join("alertmanager.yml"),
        alertmanager_config(args, &capture.url("/hook")),
    )
    .expect("write alertmanager.yml");
    let mut am = Daemon::spawn(
        "alertmanager",
        &args.alertmanager,
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address={am_addr}"),
            // Empty: no gossip listener (it would bind 0.0.0.0:9094), no cluster settle wait.
            "--cluster.listen-address=".to_owned(),
            "--log.level=warn".to_owned(),
        ],
        dir.join("alertmanager.log"),
    );
    am.wait_http(am_addr, "/-/ready", Duration::from_secs(30), |_| true);

    let prom_addr = free_addr();
    std::fs::write(
        dir.join("prometheus.yml"),
        prometheus_config(args, exporter_addr, am_addr),
    )
    .expect("write prometheus.yml");
    std::fs::write(dir.join("rules.yml"), PROMETHEUS_RULES).expect("write rules.yml");
    let mut prom = Daemon::spawn(
        "prometheus",
        &args.prometheus,
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address={prom_addr}"),
            // The first notification of an alert is sent right after the evaluation that
            // fires it whatever this says; it only paces re-sends of still-firing alerts, and
            // a short one would re-post every firing alert each evaluation. Default kept.
            "--rules.alert.resend-delay=1m".to_owned(),
            "--log.level=warn".to_owned(),
        ],
        dir.join("prometheus.log"),
    );
    let up = Duration::from_secs(60);
    prom.wait_http(prom_addr, "/-/ready", up, |_| true);
    prom.wait_http(prom_addr, "/api/v1/targets", up, |b| {
        b.contains(r#""health":"up""#)
    });
    prom.wait_http(prom_addr, "/api/v1/alertmanagers", up, |b| {
        b.contains(r#""activeAlertmanagers":[{"#)
    });
    prom.wait_http(prom_addr, "/api/v1/rules", up, |b| b.contains("BenchHigh"));

    // Warm-up: one alert end to end before measuring.
    let mut starts = BTreeMap::from([(WARMUP.to_owned(), exporter.flip(clock, WARMUP))]);
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    rt.block_on(collect(
        &mut capture,
        clock,
        &starts,
        &mut got,
        None,
        deadline,
    ));
    assert!(
        !got.is_empty(),
        "no Alertmanager webhook for the warm-up alert within 30 s\n--- prometheus ---\n{}\n--- alertmanager ---\n{}",
        tail(&prom.log, 20),
        tail(&am.log, 20)
    );
    eprintln!("prometheus warm-up alert: {:.1} ms", got[WARMUP]);

    let mut rng = Rng::seeded();
    let (prom_cpu0, am_cpu0) = (prom.cpu_ms(), am.cpu_ms());
    let started = Instant::now();
    starts.clear();
    got.clear();
    // Like mcpwatch's series (rule window 10 s, then no more samples), each gauge goes back to
    // 0 after 10 s, so both systems hold about the same number of firing alerts.
    let mut flipped: std::collections::VecDeque<(Instant, &str)> = Default::default();
    for label in &labels {
        std::thread::sleep(rng.gap(args.spacing_ms));
        while let Some(&(at, old)) = flipped.front() {
            if at.elapsed() < FIRING_FOR {
                break;
            }
            exporter.reset(old);
            flipped.pop_front();
        }
        starts.insert(label.clone(), exporter.flip(clock, label));
        flipped.push_back((Instant::now(), label));
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_s);
    rt.block_on(collect(
        &mut capture,
        clock,
        &starts,
        &mut got,
        None,
        deadline,
    ));
    let secs = started.elapsed().as_secs_f64();
    let cpu = BTreeMap::from([
        ("prometheus", (prom.cpu_ms() - prom_cpu0) / 1000.0 / secs),
        ("alertmanager", (am.cpu_ms() - am_cpu0) / 1000.0 / secs),
    ]);
    for d in [&prom, &am] {
        let warnings = std::fs::read_to_string(&d.log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if warnings > 0 {
            eprintln!(
                "{} logged {warnings} warning/error lines; last ones:\n{}",
                d.name,
                tail(&d.log, 5)
            );
        }
    }
    let health = prometheus_health(prom_addr);
    drop(prom);
    drop(am);
    let (latencies, missed) = finish(&starts, &got);
    Half {
        latencies,
        missed,
        cpu,
        health,
    }
}

fn main() {
    let args = Args::parse();
    assert!(args.alerts > 0, "--alerts must be at least 1");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let clock = Clock::new();

    let mcpwatch = (!args.only_prometheus).then(|| run_mcpwatch(&args, &rt, tmp.path(), &clock));
    let prometheus = (!args.only_mcpwatch).then(|| run_prometheus(&args, &rt, tmp.path(), &clock));

    let get = |h: &Option<Half>, f: &dyn Fn(&Half) -> Option<f64>| h.as_ref().and_then(f);
    let p99 = get(&mcpwatch, &|h| h.pct(0.99));
    let prom_p99 = get(&prometheus, &|h| h.pct(0.99));
    let ratio = match (p99, prom_p99) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 1000.0).round() / 1000.0),
        _ => None,
    };
    let cpu = |h: &Option<Half>, name: &str| {
        h.as_ref()
            .and_then(|h| h.cpu.get(name).copied())
            .map(|c| (c * 1000.0).round() / 1000.0)
    };
    println!(
        "{}",
        json!({
            "bench": "alert",
            "alerts": args.alerts,
            "spacing_ms": args.spacing_ms,
            "p50_ms": get(&mcpwatch, &|h| h.pct(0.50)),
            "p99_ms": p99,
            "max_ms": get(&mcpwatch, &Half::max),
            "missed": mcpwatch.as_ref().map(|h| h.missed),
            "collector_cpu_s_per_s": cpu(&mcpwatch, "collector"),
            "prometheus_p50_ms": get(&prometheus, &|h| h.pct(0.50)),
            "prometheus_p99_ms": prom_p99,
            "prometheus_max_ms": get(&prometheus, &Half::max),
            "prometheus_missed": prometheus.as_ref().map(|h| h.missed),
            "prometheus_cpu_s_per_s": cpu(&prometheus, "prometheus"),
            "alertmanager_cpu_s_per_s": cpu(&prometheus, "alertmanager"),
            "prometheus_scrape_interval_ms": args.scrape_interval_ms,
            "prometheus_evaluation_interval_ms": args.eval_interval_ms,
            "alertmanager_group_wait_ms": 0,
            "alertmanager_group_interval_ms": args.group_interval_ms,
            "prometheus_health": prometheus.as_ref().map(|h| &h.health),
            "prometheus_version": prometheus.as_ref().and_then(|_| version(&args.prometheus)),
            "alertmanager_version": prometheus.as_ref().and_then(|_| version(&args.alertmanager)),
            "ratio": ratio,
        })
    );
}
