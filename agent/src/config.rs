//! Agent configuration: the raw TOML shape (serde, `deny_unknown_fields`, documented
//! defaults) and its validation into [`AgentConfig`], whose fields are typed and checked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mcpwatch_common::config::{self as cfg, ByteSize, ConfigError, Duration, RawLog, RawTls};
use mcpwatch_common::tls::{self, TlsFiles};
use mcpwatch_common::wire::{DEFAULT_MAX_FRAME_LEN, MIN_FRAME_LIMIT};
use rustls::pki_types::ServerName;
use serde::Deserialize;

use crate::gateway::config::{GatewayConfig, RawGateway};
use crate::supervisor::spec::{validate_servers, McpServerSpec, RawMcpServer};

pub const DEFAULT_PATH: &str = "/etc/mcpwatch/agent.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentConfig {
    /// Identity; must equal the DNS SAN of `tls.cert`. Default: taken from the certificate.
    pub agent_id: Option<String>,
    pub collector: RawCollector,
    pub tls: RawTls,
    #[serde(default)]
    pub sampling: RawSampling,
    #[serde(default)]
    pub spool: RawSpool,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub uplink: RawUplink,
    #[serde(default)]
    pub log: RawLog,
    /// How long SIGTERM may take to flush and hand over un-acked batches. Default 10s.
    pub shutdown_grace: Option<Duration>,
    /// Agent state kept across restarts (approved MCP tool surfaces). Default
    /// /var/lib/mcpwatch/agent.
    pub state_dir: Option<PathBuf>,
    /// The MCP gateway (see config/agent-mcp.toml).
    #[serde(default)]
    pub gateway: RawGateway,
    /// MCP servers this host must run (see config/agent.toml).
    #[serde(default)]
    pub mcp_server: Vec<RawMcpServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollector {
    /// `host:port` of the collector's ingest listener.
    pub address: String,
    /// Name the collector's certificate must carry. Default: the host part of `address`.
    pub server_name: Option<String>,
    /// Largest frame accepted or sent. Default 1MiB.
    pub max_frame_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampling {
    /// Host metrics interval. Default 1s.
    pub interval: Option<Duration>,
    /// Where the host's root filesystem is mounted when the agent runs in a container
    /// (Kubernetes: `/host/root`): only mounts under it are reported, named as the host
    /// names them. Default: none (the agent's own mount table is the host's).
    pub host_root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Default /var/lib/mcpwatch/spool.
    pub dir: Option<PathBuf>,
    /// Cap on disk; the oldest batches are dropped (and counted) beyond it. Default 256MiB.
    pub max_size: Option<ByteSize>,
    /// fsync every appended batch. Default true.
    pub fsync: Option<bool>,
    /// Acknowledged batches are kept this long (within `max_size`, deleted first when room
    /// is needed) so a collector restored from a backup gets them again. "0s" deletes them
    /// once acknowledged. Default 24h, the collector's default backup interval.
    pub keep_acked: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address of `/metrics` and `/healthz`. Default 127.0.0.1:9464.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplink {
    /// Reconnect backoff floor. Default 100ms.
    pub backoff_min: Option<Duration>,
    /// Reconnect backoff ceiling. Default 30s.
    pub backoff_max: Option<Duration>,
    /// TCP connect + TLS handshake timeout. Default 10s.
    pub connect_timeout: Option<Duration>,
    /// Batches sent but not yet acknowledged. Default 64.
    pub max_in_flight: Option<usize>,
}

/// Validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub path: PathBuf,
    pub agent_id: String,
    pub collector_address: String,
    pub server_name: ServerName<'static>,
    pub max_frame_len: usize,
    pub tls: TlsFiles,
    pub interval: Duration,
    /// Where the host's root is mounted (see [`RawSampling::host_root`]).
    pub host_root: Option<PathBuf>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub spool_fsync: bool,
    pub spool_keep_acked: std::time::Duration,
    pub metrics_listen: SocketAddr,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    pub log_level: String,
    pub log_json: bool,
    pub shutdown_grace: Duration,
    pub state_dir: PathBuf,
    pub gateway: GatewayConfig,
    pub servers: Vec<McpServerSpec>,
}

impl RawAgentConfig {
    /// `[spool] dir`, resolved against the config file `path`'s directory (default
    /// /var/lib/mcpwatch/spool): what the `run` command locks before the config is validated.
    pub fn spool_dir(&self, path: &Path) -> PathBuf {
        let dir = self.spool.dir.clone();
        cfg::resolve_path(
            path,
            dir.unwrap_or_else(|| PathBuf::from("/var/lib/mcpwatch/spool")),
        )
    }
}

impl AgentConfig {
    /// Loads and validates `path`, including that the TLS files are readable and agree.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let raw: RawAgentConfig = cfg::load(path)?;
        Self::validate(path, raw)
    }

    // Over 80 lines on purpose: one check per key, in file order, each a few lines.
    pub fn validate(path: &Path, raw: RawAgentConfig) -> Result<AgentConfig, ConfigError> {
        let bad = |key: &str, msg: String| ConfigError::invalid(path, key, msg);
        let spool_dir = raw.spool_dir(path);
        let resolve = |p: PathBuf| cfg::resolve_path(path, p);
        let tls = raw.tls.resolve(path);
        if !tls.crl.is_empty() {
            return Err(bad("tls.crl", "only the collector checks CRLs".into()));
        }
        let (log_level, log_json) = raw.log.resolve();
        tls::client_config(&tls).map_err(|e| bad("tls", e.to_string()))?;
        let cert = tls::load_certs(&tls.cert).map_err(|e| bad("tls.cert", e.to_string()))?;
        let cert_id = tls::identity_of(&cert[0]).map_err(|e| bad("tls.cert", e.to_string()))?;
        let agent_id = match raw.agent_id {
            Some(id) if id != cert_id => {
                return Err(bad(
                    "agent_id",
                    format!("{id:?} differs from the certificate's identity {cert_id:?}"),
                ))
            }
            Some(id) => id,
            None => cert_id,
        };

        let address = raw.collector.address;
        let host = split_host(&address).ok_or_else(|| {
            bad(
                "collector.address",
                format!("{address:?}: expected host:port"),
            )
        })?;
        let name = raw.collector.server_name.unwrap_or_else(|| host.to_owned());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| bad("collector.server_name", format!("{name:?}: {e}")))?;
        let max_frame_len = raw
            .collector
            .max_frame_size
            .map(|b| b.0)
            .unwrap_or(DEFAULT_MAX_FRAME_LEN as u64);
        if !(MIN_FRAME_LIMIT as u64..=64 << 20).contains(&max_frame_len) {
            return Err(bad(
                "collector.max_frame_size",
                "must be 1KiB..=64MiB".into(),
            ));
        }

        let interval = raw.sampling.interval.unwrap_or(Duration::from_secs(1));
        if interval.get() < std::time::Duration::from_millis(100) {
            return Err(bad("sampling.interval", "must be at least 100ms".into()));
        }
        let host_root = match raw.sampling.host_root {
            Some(p) if !p.is_absolute() || p == Path::new("/") => {
                return Err(bad(
                    "sampling.host_root",
                    "must be an absolute path other than /".into(),
                ))
            }
            p => p,
        };
        let spool_max_bytes = raw.spool.max_size.map(|b| b.0).unwrap_or(256 << 20);
        if spool_max_bytes < 64 << 10 {
            return Err(bad("spool.max_size", "must be at least 64KiB".into()));
        }
        let backoff_min = raw.uplink.backoff_min.unwrap_or(Duration::from_millis(100));
        let backoff_max = raw.uplink.backoff_max.unwrap_or(Duration::from_secs(30));
        if backoff_min > backoff_max || backoff_min.get().is_zero() {
            return Err(bad(
                "uplink.backoff_min",
                "must be positive and not above uplink.backoff_max".into(),
            ));
        }
        let max_in_flight = raw.uplink.max_in_flight.unwrap_or(64);
        if !(1..=4096).contains(&max_in_flight) {
            return Err(bad("uplink.max_in_flight", "must be 1..=4096".into()));
        }
        Ok(AgentConfig {
            path: path.to_owned(),
            agent_id,
            collector_address: address,
            server_name,
            max_frame_len: max_frame_len as usize,
            tls,
            interval,
            host_root,
            spool_dir,
            spool_max_bytes,
            spool_fsync: raw.spool.fsync.unwrap_or(true),
            spool_keep_acked: raw
                .spool
                .keep_acked
                .map_or(crate::spool::DEFAULT_KEEP_ACKED, |d| d.get()),
            metrics_listen: raw
                .metrics
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464))),
            backoff_min,
            backoff_max,
            connect_timeout: raw
                .uplink
                .connect_timeout
                .unwrap_or(Duration::from_secs(10)),
            max_in_flight,
            log_level,
            log_json,
            shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(10)),
            state_dir: resolve(
                raw.state_dir
                    .unwrap_or_else(|| PathBuf::from("/var/lib/mcpwatch/agent")),
            ),
            gateway: GatewayConfig::validate(path, raw.gateway)?,
            servers: validate_servers(path, raw.mcp_server)?,
        })
    }
}

/// Host part of `host:port` or `[v6]:port`.
fn split_host(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_host_handles_v4_v6_and_names() {
        assert_eq!(split_host("127.0.0.1:7443"), Some("127.0.0.1"));
        assert_eq!(split_host("[::1]:7443"), Some("::1"));
        assert_eq!(split_host("collector:7443"), Some("collector"));
        assert_eq!(split_host("collector"), None);
        assert_eq!(split_host(":7443"), None);
    }
}
