//! `collector::run`: opens the store, binds the ingest and HTTP listeners, and ties every
//! task to one cancellation tree; on shutdown, sessions commit and ack what they hold, then
//! the store writer flushes and exits.

use std::sync::Arc;

use mcpwatch_common::systemd;
use mcpwatch_common::tls::{self, Reloadable};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::command::CommandRouter;
use crate::config::CollectorConfig;
use crate::dispatch;
use crate::http::{self, Readiness};
use crate::ingest::{self, IngestSettings};
use crate::metrics::CollectorMetrics;
use crate::notify::{NotifyConfigError, Receiver};
use crate::store::alerting::OutboxShared;
use crate::store::{Store, StoreConfig, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Receiver(#[from] NotifyConfigError),
    #[error("bind {what} listener {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The store settings of `config`; `outbox` is shared with the dispatcher.
pub fn store_config(config: &CollectorConfig, outbox: Arc<OutboxShared>) -> StoreConfig {
    StoreConfig {
        alerting: config.alerting.setup.clone(),
        outbox,
        path: config.db_path.clone(),
        retention_raw: config.retention_raw.get(),
        retention_1m: config.retention_1m.get(),
        retention_1h: config.retention_1h.get(),
        retention_events: config.retention_events.get(),
        queue_capacity: config.queue_capacity,
        max_batch_samples: config.max_commit_samples,
    }
}

async fn bind(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<TcpListener, CollectorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| CollectorError::Bind { what, addr, source })
}

/// Runs the collector until `shutdown` is cancelled.
pub async fn run(
    config: CollectorConfig,
    shutdown: CancellationToken,
) -> Result<(), CollectorError> {
    run_with_router(config, shutdown, CommandRouter::new()).await
}

/// [`run`] with a command router supplied by the caller, who can then send commands to
/// connected agents (the HTTP API does; so do tests).
pub async fn run_with_router(
    config: CollectorConfig,
    shutdown: CancellationToken,
    router: CommandRouter,
) -> Result<(), CollectorError> {
    let metrics = CollectorMetrics::new();
    let tls = Arc::new(Reloadable::new(tls::server_config(&config.tls)?));
    let ingest_listener = bind("ingest", config.ingest_listen).await?;
    let http_listener = bind("http", config.http_listen).await?;
    let base_dir = config
        .path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let receivers = config
        .alerting
        .receivers
        .iter()
        .map(|raw| Receiver::from_raw(raw.clone(), &base_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let outbox = OutboxShared::new(receivers.iter().map(Receiver::name));
    let (store, writer) = Store::open(store_config(&config, outbox.clone()))?;

    let ready = Arc::new(Readiness::default());
    let sessions = TaskTracker::new();
    let background = TaskTracker::new();
    let http_stop = CancellationToken::new();
    let background_stop = CancellationToken::new();

    let http_task = tokio::spawn(http::serve(
        http_listener,
        metrics.clone(),
        ready.clone(),
        store.clone(),
        http_stop.clone(),
    ));
    store.spawn_ticker(&background, background_stop.clone());
    // Notifications keep going while sessions drain; they stop with the background tasks.
    dispatch::spawn(
        &store,
        receivers,
        outbox,
        config.alerting.retry,
        metrics.clone(),
        &background,
        background_stop.clone(),
    );
    let files = config.tls.clone();
    background.spawn(tls::reload_on_sighup(
        move || tls::server_config(&files),
        tls.clone(),
        shutdown.clone(),
    ));
    systemd::spawn_watchdog(&background, shutdown.clone());
    let settings = IngestSettings {
        max_connections: config.max_connections,
        handshake_timeout: config.handshake_timeout.get(),
        idle_timeout: config.idle_timeout.get(),
        max_frame_len: config.max_frame_len,
        max_in_flight: config.max_in_flight,
    };
    let accept = tokio::spawn(ingest::serve(
        ingest_listener,
        tls,
        store.clone(),
        router,
        metrics.clone(),
        settings,
        sessions.clone(),
        shutdown.clone(),
    ));
    ready.set(true);
    systemd::ready();
    tracing::info!(ingest = %config.ingest_listen, http = %config.http_listen,
        db = %config.db_path.display(), "collector running");

    shutdown.cancelled().await;
    systemd::stopping();
    ready.set(false);
    let _ = accept.await;
    sessions.close();
    if tokio::time::timeout(config.shutdown_grace.get(), sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over with sessions still open; agents will replay");
    }
    if let Err(err) = store.flush().await {
        tracing::error!(error = %err, "final store flush failed");
    }
    background_stop.cancel();
    background.close();
    background.wait().await;
    http_stop.cancel();
    let _ = http_task.await;
    drop(store);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    tracing::info!("collector stopped");
    Ok(())
}
