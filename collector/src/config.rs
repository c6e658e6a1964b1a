//! Collector configuration: the raw TOML shape (serde, `deny_unknown_fields`, documented
//! defaults) validated into [`CollectorConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mcpwatch_common::config::{self as cfg, ByteSize, ConfigError, Duration, RawLog, RawTls};
use mcpwatch_common::tls::{self, TlsFiles};
use mcpwatch_common::wire::DEFAULT_MAX_FRAME_LEN;
use serde::Deserialize;

use crate::alerting_config::{AlertingConfig, RawAlerting, RawInhibit, RawRoute};
use crate::notify::ReceiverConfigRaw;

pub const DEFAULT_PATH: &str = "/etc/mcpwatch/collector.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollectorConfig {
    pub ingest: RawIngest,
    pub tls: RawTls,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub log: RawLog,
    /// How long SIGTERM may take to commit queued batches. Default 10s.
    pub shutdown_grace: Option<Duration>,
    /// Rule files, grouping and timing of notifications (see `alerting_config`).
    #[serde(default)]
    pub alerting: RawAlerting,
    /// Notification receivers: email, slack, pagerduty, discord, webhook.
    #[serde(default)]
    pub receiver: Vec<ReceiverConfigRaw>,
    /// Routes from alert labels to receivers; first match wins unless `continue`.
    #[serde(default)]
    pub route: Vec<RawRoute>,
    /// Extra inhibition rules (besides the built-in ones).
    #[serde(default)]
    pub inhibit: Vec<RawInhibit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// Address agents connect to, e.g. "0.0.0.0:7443".
    pub listen: SocketAddr,
    /// Concurrent agent connections; more are refused. Default 1024.
    pub max_connections: Option<usize>,
    /// TLS handshake plus Hello must finish within this. Default 10s.
    pub handshake_timeout: Option<Duration>,
    /// A connection with no frame for this long is closed. Default 120s.
    pub idle_timeout: Option<Duration>,
    /// Largest frame accepted. Default 1MiB.
    pub max_frame_size: Option<ByteSize>,
    /// Batches per connection received but not yet committed; reading pauses beyond it.
    /// Default 256.
    pub max_in_flight: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// SQLite database file. Default /var/lib/mcpwatch/collector.db.
    pub path: Option<PathBuf>,
    /// Raw samples kept for. Default 7d.
    pub retention_raw: Option<Duration>,
    /// 1-minute rollups kept for. Default 30d.
    pub retention_1m: Option<Duration>,
    /// 1-hour rollups kept for. Default 400d.
    pub retention_1h: Option<Duration>,
    /// Events and gaps kept for. Default 30d.
    pub retention_events: Option<Duration>,
    /// Requests queued for the store writer. Default 4096.
    pub queue_capacity: Option<usize>,
    /// Samples committed per transaction at most (group commit). Default 200000.
    pub max_commit_samples: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `/metrics`, `/healthz`, `/readyz`. Default 127.0.0.1:9465.
    pub listen: Option<SocketAddr>,
}

/// Validated collector configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub path: PathBuf,
    pub ingest_listen: SocketAddr,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_frame_len: usize,
    pub max_in_flight: usize,
    pub tls: TlsFiles,
    pub db_path: PathBuf,
    pub retention_raw: Duration,
    pub retention_1m: Duration,
    pub retention_1h: Duration,
    pub retention_events: Duration,
    pub queue_capacity: usize,
    pub max_commit_samples: usize,
    pub http_listen: SocketAddr,
    pub log_level: String,
    pub log_json: bool,
    pub shutdown_grace: Duration,
    pub alerting: AlertingConfig,
}

impl CollectorConfig {
    pub fn load(path: &Path) -> Result<CollectorConfig, ConfigError> {
        let raw: RawCollectorConfig = cfg::load(path)?;
        Self::validate(path, raw)
    }

    pub fn validate(path: &Path, raw: RawCollectorConfig) -> Result<CollectorConfig, ConfigError> {
        let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
        let resolve = |p: PathBuf| cfg::resolve_path(path, p);
        let tls = raw.tls.resolve(path);
        let (log_level, log_json) = raw.log.resolve();
        tls::server_config(&tls).map_err(|e| bad("tls", &e.to_string()))?;
        let i = raw.ingest;
        let max_frame_len = i
            .max_frame_size
            .map(|b| b.0)
            .unwrap_or(DEFAULT_MAX_FRAME_LEN as u64);
        if !(1024..=64 << 20).contains(&max_frame_len) {
            return Err(bad("ingest.max_frame_size", "must be 1KiB..=64MiB"));
        }
        let max_connections = i.max_connections.unwrap_or(1024);
        if max_connections == 0 {
            return Err(bad("ingest.max_connections", "must be at least 1"));
        }
        let max_in_flight = i.max_in_flight.unwrap_or(256);
        if !(1..=65536).contains(&max_in_flight) {
            return Err(bad("ingest.max_in_flight", "must be 1..=65536"));
        }
        let s = raw.store;
        let retention_raw = s.retention_raw.unwrap_or(Duration::from_secs(7 * 86_400));
        let retention_1m = s.retention_1m.unwrap_or(Duration::from_secs(30 * 86_400));
        let retention_1h = s.retention_1h.unwrap_or(Duration::from_secs(400 * 86_400));
        if retention_raw.get().as_secs() < 60 {
            return Err(bad("store.retention_raw", "must be at least 1m"));
        }
        if retention_1m < retention_raw || retention_1h < retention_1m {
            return Err(bad(
                "store.retention_1m",
                "tiers must not shrink: retention_raw <= retention_1m <= retention_1h",
            ));
        }
        let queue_capacity = s.queue_capacity.unwrap_or(4096);
        let max_commit_samples = s.max_commit_samples.unwrap_or(200_000);
        if queue_capacity == 0 || max_commit_samples == 0 {
            return Err(bad(
                "store",
                "queue_capacity and max_commit_samples must be positive",
            ));
        }
        let alerting =
            AlertingConfig::validate(path, raw.alerting, raw.receiver, raw.route, raw.inhibit)?;
        Ok(CollectorConfig {
            alerting,
            path: path.to_owned(),
            ingest_listen: i.listen,
            max_connections,
            handshake_timeout: i.handshake_timeout.unwrap_or(Duration::from_secs(10)),
            idle_timeout: i.idle_timeout.unwrap_or(Duration::from_secs(120)),
            max_frame_len: max_frame_len as usize,
            max_in_flight,
            tls,
            db_path: resolve(
                s.path
                    .unwrap_or_else(|| PathBuf::from("/var/lib/mcpwatch/collector.db")),
            ),
            retention_raw,
            retention_1m,
            retention_1h,
            retention_events: s
                .retention_events
                .unwrap_or(Duration::from_secs(30 * 86_400)),
            queue_capacity,
            max_commit_samples,
            http_listen: raw
                .http
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9465))),
            log_level,
            log_json,
            shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(10)),
        })
    }
}
