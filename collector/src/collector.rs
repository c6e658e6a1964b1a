//! `collector::run`: opens the store, binds the ingest and HTTP listeners, and ties every
//! task to one cancellation tree; on shutdown, sessions commit and ack what they hold, then
//! the store writer flushes and exits.

use std::sync::Arc;

use mcpwatch_common::systemd;
use mcpwatch_common::tls::{self, Reloadable};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
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
    #[error("api tls: {0}")]
    ApiTls(String),
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
        retention_audit: config.audit_retention.get(),
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

/// The HTTPS server config of the API (no client certificates: users authenticate with
/// bearer credentials).
fn api_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, CollectorError> {
    let certs = tls::load_certs(cert)?;
    let key = tls::load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| CollectorError::ApiTls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Deletes expired and idle sessions every minute.
fn spawn_session_cleanup(
    store: &Store,
    idle_ms: i64,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    let store = store.clone();
    tracker.spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let now = crate::now_ms();
            match store.cleanup_sessions(now, idle_ms).await {
                Ok(n) if n > 0 => tracing::debug!(sessions = n, "expired sessions removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "session cleanup failed"),
            }
        }
    });
}

/// Builds the receivers defined through the API (stored in the database) next to the
/// configured ones in `receivers`. One that cannot be built (unreadable definition, a secret
/// reference that no longer resolves) is logged and skipped, not fatal: its name is
/// returned, and its queued notifications wait until it is fixed (PUT) or deleted. One the
/// configuration now defines too is the configured one (the store drops the API copy).
fn load_api_receivers(
    config: &CollectorConfig,
    receivers: &mut Vec<Receiver>,
) -> Result<Vec<String>, CollectorError> {
    let stored = crate::store::receivers::load(&config.db_path)?;
    let mut skipped = Vec::new();
    for s in stored {
        if receivers.iter().any(|r| r.name() == s.name) {
            continue;
        }
        let built = s
            .raw()
            .map_err(|reason| NotifyConfigError {
                receiver: s.name.clone(),
                reason,
            })
            .and_then(|raw| config.alerting.api_secrets.build(raw));
        match built {
            Ok(r) => receivers.push(r),
            Err(e) => {
                tracing::error!(receiver = %s.name, error = %e,
                    "receiver defined through the API cannot be loaded; skipped until it is changed or deleted");
                skipped.push(s.name);
            }
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            skipped = skipped.len(),
            "receivers defined through the API skipped"
        );
    }
    Ok(skipped)
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
    let mut receivers = config
        .alerting
        .receivers
        .iter()
        .map(|raw| Receiver::from_raw(raw.clone(), &base_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let skipped = load_api_receivers(&config, &mut receivers)?;
    let outbox =
        OutboxShared::with_metrics(receivers.iter().map(Receiver::name), metrics.alerts.clone());
    let (store, writer) = Store::open(store_config(&config, outbox.clone()))?;

    let ready = Arc::new(Readiness::default());
    let sessions = TaskTracker::new();
    let background = TaskTracker::new();
    let http_stop = CancellationToken::new();
    let background_stop = CancellationToken::new();
    // Notifications keep going while sessions drain; they stop with the background tasks.
    let dispatcher = dispatch::spawn(
        &store,
        receivers,
        outbox,
        config.alerting.retry,
        metrics.clone(),
        &background,
        background_stop.clone(),
    );
    dispatcher.set_skipped(skipped);

    let api_state = ApiState(Arc::new(api::Inner {
        store: store.clone(),
        commands: router.clone(),
        metrics: metrics.clone(),
        settings: config.api.clone(),
        limiter: Default::default(),
    }));
    let (api_router, _doc) = api::build(api_state);
    // The receivers as configured, for listing (secrets as references only) and test-sends,
    // and what API-defined receivers need: where their secrets may come from, the workers.
    let api_router = api_router.layer(axum::Extension(Arc::new(api::receivers::ReceiverConfigs {
        list: config.alerting.receivers.clone(),
        base_dir: base_dir.clone(),
        api_secrets: Some(config.alerting.api_secrets.clone()),
        dispatcher: Some(dispatcher),
    })));
    let app = api::server::with_limits(
        http::router(metrics.clone(), ready.clone(), store.clone()).merge(api_router),
        &config.http_limits,
    );
    let http_tls = match &config.http_tls {
        Some((cert, key)) => Some(api_tls(cert, key)?),
        None => None,
    };
    let http_task = tokio::spawn(api::server::serve(
        http_listener,
        app,
        config.http_limits.clone(),
        http_tls,
        http_stop.clone(),
    ));
    spawn_session_cleanup(
        &store,
        config.api.session_idle_ms,
        &background,
        background_stop.clone(),
    );
    store.spawn_ticker(&background, background_stop.clone());
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
