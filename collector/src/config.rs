//! Collector configuration: the raw TOML shape (serde, `deny_unknown_fields`, documented
//! defaults) validated into [`CollectorConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mcpwatch_common::config::{self as cfg, ByteSize, ConfigError, Duration, RawLog, RawTls};
use mcpwatch_common::tls::{self, TlsFiles};
use mcpwatch_common::wire::{DEFAULT_MAX_FRAME_LEN, MIN_FRAME_LIMIT};
use serde::Deserialize;

use crate::alerting::config::{AlertingConfig, RawAlerting, RawInhibit, RawRoute};
use crate::api::server::ServerLimits;
use crate::api::ApiSettings;
use crate::backup::{BackupConfig, RawBackup};
use crate::heartbeat::{HeartbeatConfig, RawHeartbeat};
use crate::notify::{ReceiverConfigRaw, SecretRef};
use crate::oidc::settings::secure_cookies;
use crate::pki::{EnrollConfig, RawEnroll};
use crate::remote_write::{Endpoint, RawRemoteWrite};

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
    pub api: RawApi,
    /// The password policy and second factors (see [`crate::auth::settings::RawAuth`]).
    #[serde(default)]
    pub auth: crate::auth::settings::RawAuth,
    #[serde(default)]
    pub log: RawLog,
    /// Agent enrollment and certificate renewal (see [`RawEnroll`]).
    #[serde(default)]
    pub enroll: RawEnroll,
    /// Scheduled and on-demand backups of the database (see [`RawBackup`]).
    #[serde(default)]
    pub backup: RawBackup,
    /// The dead-man's switch (see [`RawHeartbeat`]).
    #[serde(default)]
    pub heartbeat: RawHeartbeat,
    /// Prometheus remote-write endpoints (see [`RawRemoteWrite`]).
    #[serde(default)]
    pub remote_write: Vec<RawRemoteWrite>,
    /// Single sign-on through an OpenID Connect provider (see [`crate::oidc::RawOidc`]).
    #[serde(default)]
    pub oidc: crate::oidc::RawOidc,
    /// How long SIGTERM may take to commit queued batches. Default 10s.
    pub shutdown_grace: Option<Duration>,
    /// Rule files, grouping and timing of notifications (see `alerting::config`).
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
    /// Escalation policies that routes may name (`escalation = "NAME"`).
    #[serde(default)]
    pub escalation: Vec<crate::alerting::escalation_config::RawEscalation>,
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
    /// Series one agent may have in all (counted in the database, so across restarts); new
    /// series beyond are not stored and their samples dropped, counted in
    /// `mcpwatch_collector_series_refused_total{reason="agent_limit"}`, logged, and noted
    /// in the host's events. Default 50000.
    pub max_series_per_agent: Option<u64>,
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
    /// `/api/v1`, `/federate`, `/metrics`, `/healthz`, `/readyz`. Default 127.0.0.1:9465.
    pub listen: Option<SocketAddr>,
    /// Serve the web console at `/`. Default true.
    pub console: Option<bool>,
    /// Serve HTTPS with this certificate chain and key (PEM), re-read on SIGHUP. Default:
    /// plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Oldest TLS version accepted over HTTPS: "1.3" (default) or "1.2" for old clients.
    pub tls_min_version: Option<String>,
    /// Concurrent connections; more are closed at once. Default 256.
    pub max_connections: Option<usize>,
    /// Concurrent connections from one client address; more are closed at once. Behind a
    /// reverse proxy every client shares its address: raise this to max_connections there.
    /// Default 32.
    pub max_connections_per_address: Option<usize>,
    /// A new connection must send its first byte (TLS: finish its handshake) within this.
    /// Default 5s.
    pub first_byte_timeout: Option<Duration>,
    /// A connection with no request in progress that moves no bytes this long is closed.
    /// Default 30s.
    pub idle_timeout: Option<Duration>,
    /// The request head must arrive within this (slow clients are cut off). Default 10s.
    pub header_read_timeout: Option<Duration>,
    /// A request must be answered within this. Default 30s.
    pub request_timeout: Option<Duration>,
    /// Largest request body. Default 1MiB.
    pub max_body_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// A login session unused this long ends. Default 30m.
    pub session_idle_timeout: Option<Duration>,
    /// A login session ends this long after login. Default 12h.
    pub session_max_age: Option<Duration>,
    /// Failed logins that lock an account, and for how long. Defaults 5, 15m.
    pub lockout_after: Option<u32>,
    pub lockout_duration: Option<Duration>,
    /// Login attempts per source address per minute. Default 10.
    pub login_attempts_per_minute: Option<u32>,
    /// Largest page size a list accepts. Default 1000.
    pub max_page_size: Option<usize>,
    /// Most points one query_range returns. Default 11000.
    pub max_points: Option<usize>,
    /// How long server control waits for the agent. Default 10s.
    pub command_timeout: Option<Duration>,
    /// Bearer token `/federate` requires (file or env). Default: none required.
    pub federation_token: Option<SecretRef>,
    /// Where receivers defined through the API may send: CIDR blocks (`10.0.0.0/8`),
    /// addresses and host names. When set, only these; by default any public address, and
    /// never loopback, private, link-local or shared (CGNAT) ones. Receivers in this file are
    /// not restricted.
    pub receiver_url_allow: Option<Vec<String>>,
    /// Audit records kept for. Default 400d.
    pub audit_retention: Option<Duration>,
    /// How often the running collector verifies the audit log's hash chain (the rows added
    /// since; every 12th time all of them). Default 5m, 1s..=1d.
    pub audit_verify_interval: Option<Duration>,
    /// Live streams (`GET /api/v1/stream`, the console's updates) open at once. Default 256.
    pub stream_max_clients: Option<usize>,
    /// Live streams one user (or one API token without a user) may hold open. Default 16.
    pub stream_max_per_user: Option<usize>,
    /// Mark browser session cookies `Secure` (and `__Host-` prefixed). Default: true when
    /// `[http] tls_cert` is set; set it to true when a TLS-terminating proxy serves the
    /// console over HTTPS.
    pub cookie_secure: Option<bool>,
    /// How often the live feed reads committed changes. Default 500ms, 50ms..=10s.
    pub stream_poll_interval: Option<Duration>,
    /// An idle live stream's heartbeat, when it also re-checks its credential. Default 15s
    /// (or half of http.idle_timeout when that is shorter), 1s..=60s, below
    /// http.idle_timeout.
    pub stream_heartbeat: Option<Duration>,
}

/// The HTTP endpoint's TLS files and protocol floor.
#[derive(Debug, Clone)]
pub struct HttpTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub min_version: tls::MinTlsVersion,
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
    pub max_series_per_agent: u64,
    pub tls: TlsFiles,
    pub enroll: EnrollConfig,
    /// `None`: no `[backup] dir`, so no schedule and no API backups.
    pub backup: Option<BackupConfig>,
    /// `None`: no `[heartbeat] url`.
    pub heartbeat: Option<HeartbeatConfig>,
    pub remote_write: Vec<Endpoint>,
    /// `None`: no `[oidc] issuer`, so no single sign-on.
    pub oidc: Option<crate::oidc::OidcSettings>,
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
    /// Set when the HTTP endpoint serves TLS.
    pub http_tls: Option<HttpTls>,
    pub http_limits: ServerLimits,
    /// Serve the web console at `/`.
    pub console: bool,
    pub api: ApiSettings,
    pub audit_retention: Duration,
    pub audit_verify_interval: Duration,
}

impl CollectorConfig {
    pub fn load(path: &Path) -> Result<CollectorConfig, ConfigError> {
        let raw: RawCollectorConfig = cfg::load(path)?;
        Self::validate(path, raw)
    }

    /// The key sealing API receivers' secrets: `[alerting] secret_key_file`, else
    /// `receiver-secrets.key` beside the database.
    pub fn secret_key_path(&self) -> PathBuf {
        self.alerting
            .secret_key_file
            .clone()
            .unwrap_or_else(|| self.db_path.with_file_name("receiver-secrets.key"))
    }

    // Over 80 lines on purpose: one check per key of the small sections, in file order; the
    // larger sections have their own functions below.
    pub fn validate(path: &Path, raw: RawCollectorConfig) -> Result<CollectorConfig, ConfigError> {
        let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
        let resolve = |p: PathBuf| cfg::resolve_path(path, p);
        let tls = raw.tls.resolve(path);
        let (log_level, log_json) = raw.log.resolve();
        tls::server_config(&tls, &Default::default()).map_err(|e| bad("tls", &e.to_string()))?;
        let enroll = EnrollConfig::validate(path, raw.enroll, &tls)?;
        let backup = BackupConfig::validate(path, raw.backup)?;
        let heartbeat = HeartbeatConfig::validate(path, raw.heartbeat)?;
        let remote_write = Endpoint::validate_all(path, raw.remote_write)?;
        let oidc = crate::oidc::OidcSettings::validate(path, raw.oidc)?;
        let i = raw.ingest;
        let max_frame_len = i
            .max_frame_size
            .map(|b| b.0)
            .unwrap_or(DEFAULT_MAX_FRAME_LEN as u64);
        if !(MIN_FRAME_LIMIT as u64..=64 << 20).contains(&max_frame_len) {
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
        let max_series_per_agent = i.max_series_per_agent.unwrap_or(50_000);
        if !(1..=10_000_000).contains(&max_series_per_agent) {
            return Err(bad("ingest.max_series_per_agent", "must be 1..=10000000"));
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
        let sections = (raw.receiver, raw.route, raw.inhibit, raw.escalation);
        let mut alerting = AlertingConfig::validate(path, raw.alerting, sections)?;
        if let Some(allow) = &raw.api.receiver_url_allow {
            alerting.api_destinations = crate::notify::Destinations::only(allow)
                .map_err(|e| bad("api.receiver_url_allow", &e))?;
        }
        let http_tls = http_tls(path, &raw.http)?;
        let http_limits = http_limits(path, &raw.http)?;
        let (mut api, audit_retention) = api_settings(path, &raw.api, http_limits.request_timeout)?;
        let on_tls = http_tls.is_some();
        api.cookie_secure = secure_cookies(oidc.as_ref(), raw.api.cookie_secure, on_tls)
            .map_err(|m| bad("api.cookie_secure", m))?;
        api.auth = crate::auth::settings::AuthSettings::validate(path, &raw.auth)?;
        if raw.api.stream_heartbeat.is_none() {
            // The default must stay below a shortened idle timeout too.
            api.stream_heartbeat = api.stream_heartbeat.min(http_limits.idle_timeout / 2);
        }
        if api.stream_heartbeat >= http_limits.idle_timeout {
            return Err(bad(
                "api.stream_heartbeat",
                "must be shorter than http.idle_timeout (an idle stream would be cut)",
            ));
        }
        let audit_verify_interval = raw
            .api
            .audit_verify_interval
            .unwrap_or(Duration::from_secs(300));
        if !(1..=86_400).contains(&audit_verify_interval.get().as_secs()) {
            return Err(bad("api.audit_verify_interval", "must be 1s..=1d"));
        }
        let listen = raw
            .http
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9465)));
        // /federate needs no user: off loopback it must at least need its token.
        if !listen.ip().is_loopback() && api.federation_token.is_none() {
            return Err(bad(
                "api.federation_token",
                "required when http.listen is not a loopback address (/federate exposes every host's data)",
            ));
        }
        Ok(CollectorConfig {
            alerting,
            http_tls,
            http_limits,
            console: raw.http.console.unwrap_or(true),
            api,
            audit_retention,
            audit_verify_interval,
            path: path.to_owned(),
            ingest_listen: i.listen,
            max_connections,
            handshake_timeout: i.handshake_timeout.unwrap_or(Duration::from_secs(10)),
            idle_timeout: i.idle_timeout.unwrap_or(Duration::from_secs(120)),
            max_frame_len: max_frame_len as usize,
            max_in_flight,
            max_series_per_agent,
            tls,
            enroll,
            backup,
            heartbeat,
            remote_write,
            oidc,
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

/// `[http] tls_cert`, `tls_key`, `tls_min_version`: the files checked now, so a bad one fails
/// check-config rather than the first connection.
fn http_tls(path: &Path, h: &RawHttp) -> Result<Option<HttpTls>, ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let resolve = |p: PathBuf| cfg::resolve_path(path, p);
    let http_tls = match (&h.tls_cert, &h.tls_key) {
        (Some(c), Some(k)) => {
            let (c, k) = (resolve(c.clone()), resolve(k.clone()));
            tls::load_certs(&c).map_err(|e| bad("http.tls_cert", &e.to_string()))?;
            tls::load_key(&k).map_err(|e| bad("http.tls_key", &e.to_string()))?;
            let min_version = match h.tls_min_version.as_deref() {
                None | Some("1.3") => tls::MinTlsVersion::Tls13,
                Some("1.2") => tls::MinTlsVersion::Tls12,
                Some(_) => return Err(bad("http.tls_min_version", "must be \"1.2\" or \"1.3\"")),
            };
            Some(HttpTls {
                cert: c,
                key: k,
                min_version,
            })
        }
        (None, None) => None,
        _ => return Err(bad("http.tls_cert", "tls_cert and tls_key go together")),
    };
    Ok(http_tls)
}

/// The HTTP endpoint's connection and request limits (`[http]`).
fn http_limits(path: &Path, h: &RawHttp) -> Result<ServerLimits, ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let d = ServerLimits::defaults();
    let http_limits = ServerLimits {
        max_connections: h.max_connections.unwrap_or(d.max_connections),
        max_connections_per_address: h
            .max_connections_per_address
            .unwrap_or(d.max_connections_per_address),
        first_byte_timeout: h
            .first_byte_timeout
            .map_or(d.first_byte_timeout, |x| x.get()),
        idle_timeout: h.idle_timeout.map_or(d.idle_timeout, |x| x.get()),
        header_read_timeout: h
            .header_read_timeout
            .map_or(d.header_read_timeout, |x| x.get()),
        request_timeout: h.request_timeout.map_or(d.request_timeout, |x| x.get()),
        body_limit: h.max_body_size.map_or(d.body_limit, |b| b.0 as usize),
    };
    if http_limits.max_connections == 0 || http_limits.body_limit < 1024 {
        return Err(bad(
            "http",
            "max_connections must be positive and max_body_size at least 1KiB",
        ));
    }
    if http_limits.max_connections_per_address == 0 {
        return Err(bad(
            "http.max_connections_per_address",
            "must be at least 1",
        ));
    }
    if http_limits.first_byte_timeout.is_zero() || http_limits.idle_timeout.is_zero() {
        return Err(bad(
            "http.first_byte_timeout",
            "first_byte_timeout and idle_timeout must be positive",
        ));
    }
    Ok(http_limits)
}

/// `[api]`: sessions, lockout, paging, command timeout, the scrape token, audit retention.
fn api_settings(
    path: &Path,
    a: &RawApi,
    request_timeout: std::time::Duration,
) -> Result<(ApiSettings, Duration), ConfigError> {
    let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
    let dflt = ApiSettings::defaults();
    let federation_token = match &a.federation_token {
        Some(s) => Some(
            s.load(
                "api",
                "federation_token",
                path.parent().unwrap_or(Path::new(".")),
            )
            .map_err(|e| bad("api.federation_token", &e.to_string()))?,
        ),
        None => None,
    };
    let api = ApiSettings {
        session_idle_ms: a
            .session_idle_timeout
            .map_or(dflt.session_idle_ms, |d| d.as_millis_i64()),
        session_absolute_ms: a
            .session_max_age
            .map_or(dflt.session_absolute_ms, |d| d.as_millis_i64()),
        lockout_after: a.lockout_after.map_or(dflt.lockout_after, i64::from),
        lockout_ms: a
            .lockout_duration
            .map_or(dflt.lockout_ms, |d| d.as_millis_i64()),
        login_per_minute: a.login_attempts_per_minute.unwrap_or(dflt.login_per_minute),
        max_page: a.max_page_size.unwrap_or(dflt.max_page),
        max_points: a.max_points.unwrap_or(dflt.max_points),
        command_timeout: a.command_timeout.map_or(dflt.command_timeout, |d| d.get()),
        federation_token,
        cookie_secure: false,
        stream_max_clients: a.stream_max_clients.unwrap_or(dflt.stream_max_clients),
        stream_max_per_user: a.stream_max_per_user.unwrap_or(dflt.stream_max_per_user),
        stream_poll: a.stream_poll_interval.map_or(dflt.stream_poll, |d| d.get()),
        stream_heartbeat: a
            .stream_heartbeat
            .map_or(dflt.stream_heartbeat, |d| d.get()),
        // Validated from `[auth]` by the caller.
        auth: dflt.auth.clone(),
    };
    if api.stream_max_clients == 0 || api.stream_max_per_user == 0 {
        return Err(bad(
            "api.stream_max_clients",
            "stream_max_clients and stream_max_per_user must be positive",
        ));
    }
    if !(50..=10_000).contains(&api.stream_poll.as_millis()) {
        return Err(bad("api.stream_poll_interval", "must be 50ms..=10s"));
    }
    if !(1_000..=60_000).contains(&api.stream_heartbeat.as_millis()) {
        return Err(bad("api.stream_heartbeat", "must be 1s..=60s"));
    }
    if api.session_idle_ms <= 0 || api.session_absolute_ms < api.session_idle_ms {
        return Err(bad(
            "api.session_idle_timeout",
            "must be positive and at most session_max_age",
        ));
    }
    if api.lockout_after == 0 || api.max_page == 0 || api.max_points < 2 {
        return Err(bad(
            "api",
            "lockout_after, max_page_size must be positive and max_points at least 2",
        ));
    }
    let audit_retention = a
        .audit_retention
        .unwrap_or(Duration::from_secs(400 * 86_400));
    // The chain's verifier relies on this floor (`MIN_AUDIT_RETENTION_MS`).
    if audit_retention.as_millis_i64() < crate::store::audit_chain::MIN_AUDIT_RETENTION_MS {
        return Err(bad("api.audit_retention", "must be at least 1d"));
    }
    if api.command_timeout >= request_timeout {
        return Err(bad(
            "api.command_timeout",
            "must be shorter than http.request_timeout",
        ));
    }
    Ok((api, audit_retention))
}
