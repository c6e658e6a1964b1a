//! `agent::run`: wires the sampler, the spool writer, the uplink and the HTTP endpoint into
//! one cancellation tree, and drains them in order on shutdown.

use std::sync::Arc;
use std::time::Instant;

use mcpwatch_common::backoff::{BackoffError, ExponentialBackoff};
use mcpwatch_common::time::now_ms;
use mcpwatch_common::tls::{self, Reloadable};
use mcpwatch_common::{systemd, wire::SeriesKey};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AgentConfig;
use crate::gateway::endpoint::{self, EndpointCounters};
use crate::gateway::Backends;
use crate::http::{self, Health};
use crate::mcp_servers::{self, AgentCommand, McpServersContext};
use crate::metrics::AgentMetrics;
use crate::sampler::certificates::{CertificateSampler, PeerCertificate};
use crate::sampler::Sampler;
use crate::spool::{Spool, SpoolBatch, SpoolConfig, SpoolError, SpoolHandle, SpoolLock};
use crate::supervisor::McpServerSpec;
use crate::uplink::Uplink;

/// Batches waiting between the sampler and the spool writer. At 1 Hz this is minutes of
/// slack; when it is full the sampler drops (and counts) rather than blocking.
const SPOOL_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Its text starts with "spool:" already.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("uplink backoff: {0}")]
    Backoff(#[from] BackoffError),
    #[error("gateway: {0}")]
    Gateway(#[from] crate::gateway::endpoint::EndpointError),
    #[error("bind metrics listener {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Runs the agent until `shutdown` is cancelled, then flushes the spool and gives the uplink
/// up to `shutdown_grace` to hand over what is still un-acked (the spool keeps the rest).
/// `spool_lock` is the lock of `config.spool_dir` if the caller took it already (the `run`
/// command does, before anything else); `None` takes it here, failing at once if it is held.
// Over 80 lines on purpose: the whole start-up and shutdown order in one place, read top to
// bottom; split up, the order of the drain would be spread over several functions.
pub async fn run(
    config: AgentConfig,
    spool_lock: Option<SpoolLock>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let metrics = Arc::new(AgentMetrics::new());
    let health = Arc::new(Health::default());
    let tls = Arc::new(Reloadable::new(tls::client_config(&config.tls)?));
    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.metrics_listen,
            source,
        })?;
    let spool_cfg = SpoolConfig {
        dir: config.spool_dir.clone(),
        max_bytes: config.spool_max_bytes,
        segment_bytes: (config.spool_max_bytes / 16).clamp(64 << 10, 8 << 20),
        fsync: config.spool_fsync,
        max_frame_len: config.max_frame_len,
        keep_acked: config.spool_keep_acked,
    };
    let spool = SpoolHandle::new(
        tokio::task::spawn_blocking(move || {
            let lock = match spool_lock {
                Some(lock) => lock,
                None => crate::spool::lock(&spool_cfg.dir)?,
            };
            Spool::open_locked(spool_cfg, lock)
        })
        .await
        .map_err(|e| SpoolError::Io {
            op: "open",
            path: config.spool_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })??,
    );
    metrics.observe_spool(&spool.lock().stats());
    // Reconnects of a fleet spread over [d/2, d] and never wait longer than the cap.
    let reconnect = ExponentialBackoff::new(config.backoff_min.get(), config.backoff_max.get())?
        .with_jitter(0.5, 1.0)?;

    let tracker = TaskTracker::new();
    let http_stop = CancellationToken::new();
    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel::<SpoolBatch>(SPOOL_QUEUE);
    let (commands_tx, commands_rx) = mpsc::channel::<AgentCommand>(32);
    let (reload_tx, reload_rx) = mpsc::channel::<()>(1);
    let (servers_tx, servers_rx) = mpsc::channel(4);

    // The endpoint outlives the drain so /metrics shows it; it has its own handle.
    let http_task = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        http_stop.clone(),
    ));
    let writer = {
        let (spool, metrics) = (spool.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || spool_writer(rx, &spool, &metrics))
            .map_err(|e| SpoolError::Io {
                op: "open",
                path: config.spool_dir.clone(),
                source: e,
            })?
    };
    let backends = Backends::default();
    // The gateway stops with the HTTP endpoint, after the drain: clients keep their sessions
    // while the spool hands over.
    let gateway = start_gateway(&config, &backends, &metrics, &http_stop).await?;
    tracker.spawn(mcp_servers::run(
        McpServersContext {
            agent_id: config.agent_id.clone(),
            state_dir: config.state_dir.clone(),
            interval: config.interval.get(),
            spool: tx.clone(),
            metrics: metrics.clone(),
            backends,
            mux_limits: config.gateway.mux.clone(),
            run: format!("{:016x}", fastrand::u64(..)),
        },
        config.servers.clone(),
        commands_rx,
        servers_rx,
        reload_tx.clone(),
        shutdown.clone(),
    ));
    let peer_certificate = PeerCertificate::default();
    let certificates = CertificateSampler::new(
        config.tls.cert.clone(),
        config.tls.ca.clone(),
        peer_certificate.clone(),
    );
    tracker.spawn(sample_loop(
        config.interval.get(),
        config.host_root.clone(),
        tx,
        certificates,
        metrics.clone(),
        shutdown.clone(),
    ));
    let uplink = Uplink {
        agent_id: config.agent_id.clone(),
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        address: config.collector_address.clone(),
        server_name: config.server_name.clone(),
        tls: tls.clone(),
        max_frame_len: config.max_frame_len,
        max_in_flight: config.max_in_flight,
        connect_timeout: config.connect_timeout.get(),
        reconnect,
        spool: spool.clone(),
        metrics: metrics.clone(),
        commands: Some(commands_tx),
        peer_certificate,
        files: config.tls.clone(),
    };
    tracker.spawn(uplink.run(drain.clone(), stop.clone()));
    tracker.spawn(reload(
        config.path.clone(),
        tls,
        servers_tx,
        reload_tx,
        reload_rx,
        shutdown.clone(),
    ));
    systemd::spawn_watchdog(&tracker, shutdown.clone());
    health.set_running(true);
    systemd::ready();
    tracing::info!(agent_id = %config.agent_id, collector = %config.collector_address,
        metrics = %config.metrics_listen, "agent running");

    shutdown.cancelled().await;
    systemd::stopping();
    health.set_running(false);
    let deadline = tokio::time::Instant::now() + config.shutdown_grace.get();
    // The sampler has stopped and dropped its sender: the writer flushes what is queued.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    drain.cancel();
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        let pending = spool.lock().stats().records_pending;
        tracing::warn!(
            pending,
            "grace period over; un-acked batches stay in the spool"
        );
    }
    stop.cancel();
    tracker.wait().await;
    http_stop.cancel();
    let _ = http_task.await;
    if let Some(gateway) = gateway {
        // Each of its connections gets a bounded close; this only guards the whole.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), gateway.task).await;
    }
    let stats = spool.lock().stats();
    tracing::info!(
        samples_collected = metrics.samples_collected_total.get(),
        samples_dropped = metrics.dropped_samples_total.get(),
        pending_records = stats.records_pending,
        last_acked_seq = spool.lock().last_acked(),
        "agent stopped"
    );
    Ok(())
}

/// Starts the MCP gateway's listener when enabled; it stops with the HTTP endpoint.
async fn start_gateway(
    config: &AgentConfig,
    backends: &Backends,
    metrics: &Arc<AgentMetrics>,
    stop: &CancellationToken,
) -> Result<Option<endpoint::Endpoint>, AgentError> {
    if !config.gateway.enabled {
        return Ok(None);
    }
    let (refused, closed) = (metrics.clone(), metrics.clone());
    let counters = EndpointCounters {
        refused: Arc::new(move |reason| refused.inc_gateway_refused(reason)),
        connections_closed: Arc::new(move |reason| closed.inc_gateway_connection_closed(reason)),
        calls: metrics.traffic.clone(),
    };
    let gateway =
        endpoint::start(&config.gateway, backends.clone(), counters, stop.clone()).await?;
    tracing::info!(listen = %gateway.local_addr, tls = config.gateway.tls.is_some(),
        tokens = config.gateway.tokens.len(), "MCP gateway listening");
    Ok(Some(gateway))
}

/// The one owner of spool appends: takes batches off the queue, appends (fsync), wakes the
/// uplink. Ends when the sampler's sender is dropped and the queue is empty.
fn spool_writer(mut rx: mpsc::Receiver<SpoolBatch>, handle: &SpoolHandle, metrics: &AgentMetrics) {
    while let Some(mut batch) = rx.blocking_recv() {
        let mut spool = handle.lock();
        if let Some(event) = spool.take_corruption_event() {
            batch.events.push(event);
        }
        let samples = batch.samples.len() as u64;
        if let Err(err) = spool.append(batch) {
            metrics.dropped_samples_total.inc_by(samples);
            tracing::error!(error = %err, samples, "spool append failed; batch dropped");
        }
        metrics.observe_spool(&spool.stats());
        drop(spool);
        handle.notify_appended();
    }
}

async fn sample_loop(
    interval: std::time::Duration,
    host_root: Option<std::path::PathBuf>,
    tx: mpsc::Sender<SpoolBatch>,
    mut certificates: CertificateSampler,
    metrics: Arc<AgentMetrics>,
    shutdown: CancellationToken,
) {
    let mut sampler = Sampler::new(host_root);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let ts_ms = now_ms();
        let mut values = sampler.sample();
        certificates.sample(&mut values);
        metrics
            .sample_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.set_host_samples(&values);
        // The agent's own health travels with the host metrics so the collector can alert on
        // an agent that drops samples.
        values.push((
            SeriesKey::new("mcpwatch_agent_dropped_samples_total", &[]),
            metrics.dropped_samples_total.get() as f64,
        ));
        values.push((
            SeriesKey::new("mcpwatch_agent_spool_bytes", &[]),
            metrics.spool_bytes.get() as f64,
        ));
        let n = values.len() as u64;
        let batch = SpoolBatch::at(ts_ms, values);
        metrics.samples_collected_total.inc_by(n);
        if tx.try_send(batch).is_err() {
            metrics.dropped_samples_total.inc_by(n);
            tracing::warn!(samples = n, "spool queue full; samples dropped");
        }
    }
}

/// SIGHUP or the Reload command: re-read the config file; the TLS files apply to new
/// connections (live ones keep theirs), the server list goes to supervision, which applies
/// only the differences. An invalid file changes nothing and is logged.
async fn reload(
    path: std::path::PathBuf,
    tls: Arc<Reloadable<rustls::ClientConfig>>,
    servers: mpsc::Sender<Vec<McpServerSpec>>,
    requests_tx: mpsc::Sender<()>,
    mut requests: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    // SIGHUP feeds the same queue as the Reload command.
    let hup_shutdown = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload only by command");
            return;
        };
        loop {
            tokio::select! {
                _ = hup_shutdown.cancelled() => return,
                _ = hup.recv() => { let _ = requests_tx.try_send(()); }
            }
        }
    });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = requests.recv() => {}
        }
        let load = path.clone();
        let config = match tokio::task::spawn_blocking(move || AgentConfig::load(&load)).await {
            Ok(Ok(c)) => c,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "reload refused: invalid configuration; nothing changed");
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "reload task failed");
                continue;
            }
        };
        match tls::client_config(&config.tls) {
            Ok(new) => {
                tls.set(new);
                tracing::info!("TLS certificates reloaded");
            }
            Err(err) => {
                tracing::error!(error = %err, "TLS reload failed; keeping the old certificates")
            }
        }
        tracing::info!(servers = config.servers.len(), "configuration reloaded");
        if servers.send(config.servers).await.is_err() {
            return;
        }
    }
}
