//! `collector::run`: opens the store, binds the ingest and HTTP listeners, and ties every
//! task to one cancellation tree; on shutdown, sessions commit and ack what they hold, then
//! the store writer flushes and exits.

use std::sync::Arc;

use mcpwatch_common::systemd;
use mcpwatch_common::tls::{self, Reloadable};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::{dispatcher, Alerting, OutboxShared};
use crate::api::{self, ApiState};
use crate::command::CommandRouter;
use crate::config::CollectorConfig;
use crate::http::{self, Readiness};
use crate::ingest::{self, IngestSettings};
use crate::metrics::CollectorMetrics;
use crate::notify::{ApiSecrets, Destinations, NotifyConfigError, Receiver, SecretKey};
use crate::store::{Store, StoreConfig, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Receiver(#[from] NotifyConfigError),
    #[error("{0}")]
    SecretKey(#[from] crate::notify::SecretKeyError),
    #[error(
        "secrets key {path}: it does not open the second factor of user {username}, so it is \
         not the key the database's secrets were sealed with; restore that key file from your \
         backup, or remove the factors with `mcpwatch-collector user mfa-reset NAME`"
    )]
    WrongSecretKey {
        path: std::path::PathBuf,
        username: String,
    },
    #[error("api tls: {0}")]
    ApiTls(String),
    #[error("oidc: {0}")]
    Oidc(String),
    #[error("bind {what} listener {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The store settings of `config`.
pub fn store_config(config: &CollectorConfig) -> StoreConfig {
    StoreConfig {
        path: config.db_path.clone(),
        retention_raw: config.retention_raw.get(),
        retention_1m: config.retention_1m.get(),
        retention_1h: config.retention_1h.get(),
        retention_events: config.retention_events.get(),
        retention_audit: config.audit_retention.get(),
        queue_capacity: config.queue_capacity,
        max_batch_samples: config.max_commit_samples,
        max_series_per_agent: config.max_series_per_agent,
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
    stored: Vec<crate::alerting::stored_receivers::StoredReceiver>,
    secrets: &ApiSecrets,
    receivers: &mut Vec<Receiver>,
) -> Vec<String> {
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
            .and_then(|raw| secrets.build_stored(raw, &s.secrets));
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
    skipped
}

/// The store with the alerting runtime plugged in, and what the dispatcher needs.
struct Opened {
    alerting: Alerting,
    writer: std::thread::JoinHandle<()>,
    /// Configured receivers, then those defined through the API that could be built.
    receivers: Vec<Receiver>,
    /// API receivers that could not be built (see `load_api_receivers`).
    skipped: Vec<String>,
    outbox: Arc<OutboxShared>,
    /// What API receivers' secrets need (the sealing key, allowed destinations).
    api_secrets: ApiSecrets,
}

/// Builds every receiver and opens the store with the alerting runtime.
fn open_alerting(
    config: &CollectorConfig,
    base_dir: &std::path::Path,
    metrics: &CollectorMetrics,
) -> Result<Opened, CollectorError> {
    let mut receivers = config
        .alerting
        .receivers
        .iter()
        .map(|raw| Receiver::from_raw(raw.clone(), base_dir, &Destinations::Any))
        .collect::<Result<Vec<_>, _>>()?;
    let stored = crate::alerting::stored_receivers::load(&config.db_path)?;
    // Sealed with the same key: a missing key file is then an error, not a fresh key.
    let factor = crate::store::query::mfa::any_sealed_in(&config.db_path)?;
    let sealed_exist = stored.iter().any(|s| !s.secrets.is_empty()) || factor.is_some();
    let key = SecretKey::load_or_create(&config.secret_key_path(), !sealed_exist)?;
    if let Some((id, username, sealed)) = factor {
        if !crate::api::mfa::key_opens(&key, id, &sealed) {
            return Err(CollectorError::WrongSecretKey {
                path: config.secret_key_path(),
                username,
            });
        }
    }
    let api_secrets = ApiSecrets {
        key: Arc::new(key),
        destinations: config.alerting.api_destinations.clone(),
    };
    let skipped = load_api_receivers(stored, &api_secrets, &mut receivers);
    let outbox =
        OutboxShared::with_metrics(receivers.iter().map(Receiver::name), metrics.alerts.clone());
    let (alerting, writer) = Alerting::open(
        store_config(config),
        config.alerting.setup.clone(),
        outbox.clone(),
    )?;
    Ok(Opened {
        alerting,
        writer,
        receivers,
        skipped,
        outbox,
        api_secrets,
    })
}

/// What the API serves beside the store.
struct ApiParts {
    alerting: Alerting,
    feed: crate::feed::Feed,
    fleet: crate::fleet::Fleet,
    /// Cancelled when the HTTP endpoint drains.
    http_stop: CancellationToken,
    api_secrets: ApiSecrets,
    dispatcher: dispatcher::Dispatcher,
    router: CommandRouter,
    pki: crate::pki::Pki,
    backups: crate::backup::Backups,
    oidc: Option<Arc<crate::oidc::RelyingParty>>,
}

/// The HTTP application (API, `/metrics`, health) with its limits.
fn http_app(
    config: &CollectorConfig,
    base_dir: &std::path::Path,
    store: &Store,
    api: ApiParts,
    metrics: &Arc<CollectorMetrics>,
    ready: &Arc<Readiness>,
) -> axum::Router {
    let api_state = ApiState(Arc::new(api::Inner {
        store: store.clone(),
        alerting: api.alerting,
        commands: api.router,
        metrics: metrics.clone(),
        settings: config.api.clone(),
        limiter: Default::default(),
        enroll_limiter: Default::default(),
        feed: api.feed,
        fleet: api.fleet,
        pki: api.pki,
        backups: api.backups,
        secret_key: api.api_secrets.key.clone(),
        oidc: api.oidc,
        stream_slots: Arc::new(tokio::sync::Semaphore::new(config.api.stream_max_clients)),
        stream_holders: Default::default(),
        streams_stop: api.http_stop,
    }));
    let (api_router, _doc) = api::build(api_state);
    // The receivers as configured, for listing (secrets as references only) and test-sends,
    // and what API-defined receivers need: where their secrets may come from, the workers.
    let api_router = api_router.layer(axum::Extension(Arc::new(api::receivers::ReceiverConfigs {
        list: config.alerting.receivers.clone(),
        base_dir: base_dir.to_path_buf(),
        api_secrets: Some(api.api_secrets),
        dispatcher: Some(api.dispatcher),
    })));
    let mut app = http::router(
        metrics.clone(),
        ready.clone(),
        store.clone(),
        config.api.federation_token.clone(),
    )
    .merge(api_router);
    if config.console {
        app = app.merge(crate::console::router());
    }
    api::server::with_limits(
        app,
        &config.http_limits,
        api::refusal_audit::RefusalAudit {
            store: store.clone(),
            metrics: metrics.clone(),
        },
    )
}

/// The HTTPS API's TLS config, when `[http] tls_cert` is set, re-read on SIGHUP (live
/// connections keep theirs).
fn api_tls(
    config: &CollectorConfig,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<Reloadable<rustls::ServerConfig>>>, CollectorError> {
    let Some(files) = config.http_tls.clone() else {
        return Ok(None);
    };
    let build = move || tls::https_server_config(&files.cert, &files.key, files.min_version);
    let current = Arc::new(Reloadable::new(
        build().map_err(|e| CollectorError::ApiTls(e.to_string()))?,
    ));
    tracker.spawn(tls::reload_on_sighup(
        build,
        current.clone(),
        shutdown.clone(),
    ));
    Ok(Some(current))
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
///
/// Over 80 lines on purpose: it is the collector's whole start-up and shutdown order in one
/// place (what starts before what, and what drains before what), read top to bottom.
pub async fn run_with_router(
    config: CollectorConfig,
    shutdown: CancellationToken,
    router: CommandRouter,
) -> Result<(), CollectorError> {
    // Held until return: `restore` refuses to swap the file under a running collector, and
    // a second collector on the same file is refused here. On a blocking thread: a lock held
    // by a forked child is retried for up to 500 ms, which must not stall the caller's runtime.
    let db_path = config.db_path.clone();
    let _db_lock = tokio::task::spawn_blocking(move || {
        crate::store::lock::DbLock::acquire(&db_path, "collector")
    })
    .await
    .map_err(|e| StoreError::Io {
        path: config.db_path.clone(),
        source: std::io::Error::other(format!("the task taking the database lock failed: {e}")),
    })??;
    let metrics = CollectorMetrics::new();
    let pki = crate::pki::Pki::new(&config.enroll, metrics.clone());
    let tls = Arc::new(Reloadable::new(tls::server_config(
        &config.tls,
        pki.revoked(),
    )?));
    let ingest_listener = bind("ingest", config.ingest_listen).await?;
    let ingest_up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let http_listener = bind("http", config.http_listen).await?;
    let base_dir = config
        .path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let Opened {
        alerting,
        writer,
        receivers,
        skipped,
        outbox,
        api_secrets,
    } = open_alerting(&config, &base_dir, &metrics)?;
    let store = alerting.store().clone();
    pki.load(&store, &config.tls).await?;
    let own_series = outbox.own_series.clone();
    let backups = crate::backup::Backups::new(
        config.db_path.clone(),
        config.backup.clone(),
        metrics.clone(),
        own_series.clone(),
        shutdown.clone(),
    );

    let ready = Arc::new(Readiness::default());
    let sessions = TaskTracker::new();
    let background = TaskTracker::new();
    let http_stop = CancellationToken::new();
    let background_stop = CancellationToken::new();
    // Notifications keep going while sessions drain; they stop with the background tasks.
    let dispatcher = dispatcher::spawn(
        &alerting,
        receivers,
        outbox,
        config.alerting.retry,
        metrics.clone(),
        &background,
        background_stop.clone(),
    );
    dispatcher.set_skipped(skipped);
    // Only while a heartbeat runs: a held handle keeps the store (and so the writer) alive.
    let dispatcher_health = config.heartbeat.is_some().then(|| dispatcher.clone());

    let feed = crate::feed::Feed::new();
    background.spawn(crate::feed::run(
        store.clone(),
        feed.clone(),
        metrics.clone(),
        config.api.stream_poll,
        background_stop.clone(),
    ));
    let fleet = crate::fleet::Fleet::new();
    background.spawn(crate::fleet::run(
        store.clone(),
        fleet.clone(),
        metrics.clone(),
        config.api.stream_poll,
        background_stop.clone(),
    ));
    let api = ApiParts {
        alerting,
        feed,
        fleet,
        http_stop: http_stop.clone(),
        api_secrets,
        dispatcher,
        router: router.clone(),
        pki: pki.clone(),
        backups: backups.clone(),
        oidc: match config.oidc.clone() {
            Some(settings) => Some(Arc::new({
                if config.api.auth.require_mfa != crate::auth::settings::MfaRequirement::None {
                    tracing::warn!(
                        "[auth] require_mfa concerns local accounts: single sign-on sessions \
                         count as having passed a second factor, so the provider must require one"
                    );
                }
                crate::oidc::RelyingParty::new(settings).map_err(CollectorError::Oidc)?
            })),
            None => None,
        },
    };
    let app = http_app(&config, &base_dir, &store, api, &metrics, &ready);
    let http_tls = api_tls(&config, &background, &shutdown)?;
    let closed_metrics = metrics.clone();
    let http_task = tokio::spawn(mcpwatch_common::http_server::serve(
        http_listener,
        app,
        config.http_limits.clone(),
        http_tls,
        Arc::new(move |reason| closed_metrics.http_connection_closed(reason)),
        http_stop.clone(),
    ));
    spawn_session_cleanup(
        &store,
        config.api.session_idle_ms,
        &background,
        background_stop.clone(),
    );
    store.spawn_ticker(&background, background_stop.clone());
    backups.spawn_schedule(&background, background_stop.clone());
    crate::audit_watch::spawn(
        &store,
        metrics.clone(),
        config.audit_verify_interval.get(),
        &background,
        background_stop.clone(),
    );
    pki.spawn_tls_watch(
        config.tls.clone(),
        tls.clone(),
        &background,
        background_stop.clone(),
    );
    pki.spawn_poll(store.clone(), &background, background_stop.clone());
    systemd::spawn_watchdog(&background, shutdown.clone());
    let settings = IngestSettings {
        max_connections: config.max_connections,
        handshake_timeout: config.handshake_timeout.get(),
        idle_timeout: config.idle_timeout.get(),
        max_frame_len: config.max_frame_len,
        max_in_flight: config.max_in_flight,
    };
    let serving = ingest::serve(
        ingest_listener,
        tls,
        store.clone(),
        router,
        metrics.clone(),
        settings,
        pki.clone(),
        sessions.clone(),
        shutdown.clone(),
    );
    let up = ingest_up.clone();
    let accept = tokio::spawn(async move {
        let ended = serving.await;
        up.store(false, std::sync::atomic::Ordering::Relaxed);
        ended
    });
    crate::remote_write::spawn(
        &config.remote_write,
        &store,
        &metrics,
        &own_series,
        &background,
        &background_stop,
    )?;
    if let Some(beat) = config.heartbeat.clone() {
        let health = crate::heartbeat::Health {
            ingest_up,
            store: store.clone(),
            dispatcher: dispatcher_health,
        };
        crate::heartbeat::spawn(
            beat,
            health,
            metrics.clone(),
            &background,
            background_stop.clone(),
        )?;
    }
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
