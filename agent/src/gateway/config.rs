//! `[gateway]`: the raw section (serde, `deny_unknown_fields`, documented defaults) and its
//! validation into [`GatewayConfig`]. Off loopback the gateway requires TLS and at least one
//! bearer token; a configuration without them is refused (exit 64, naming the key).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mcpwatch_common::config::{self as cfg, ConfigError, Duration};
use mcpwatch_common::secret::Secret;
use serde::Deserialize;

use super::session_mux::MuxConfig;

/// Largest request body the gateway accepts (the MCP line limit of the stdio attach).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Serve MCP clients at all. Default true. Off, stdio servers are still attached (their
    /// probes go through the attach) but no listener is opened.
    pub enabled: Option<bool>,
    /// Address of the MCP endpoint (`/mcp/{server}`). Default 127.0.0.1:9470.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain and key for HTTPS. Required when `listen` is not loopback.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Bearer tokens clients must present (`Authorization: Bearer ...`), each read from a
    /// file: `tokens = [{ file = "/etc/mcpwatch/gateway.token" }]`. Required when `listen`
    /// is not loopback; optional on loopback (then every client must present one).
    #[serde(default)]
    pub tokens: Vec<RawTokenFile>,
    /// Browser origins allowed besides loopback ones (`http://localhost:*`,
    /// `http://127.0.0.1:*`, `http://[::1]:*`), e.g. `["https://ide.example.com"]`. Requests
    /// without an `Origin` header (non-browser clients) are allowed.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Client sessions per server. Default 64.
    pub max_sessions: Option<usize>,
    /// Requests in flight per client session. Default 64.
    pub max_in_flight_per_session: Option<usize>,
    /// Requests in flight per server over all sessions. Default 1024.
    pub max_in_flight: Option<usize>,
    /// How long a request may wait for the server's answer. Default 60s.
    pub request_timeout: Option<Duration>,
    /// A client session with no request for this long is ended. Default 10m.
    pub session_idle_timeout: Option<Duration>,
    /// Connections open at once, and per client address. Defaults 256, and 64 per address
    /// off loopback; on a loopback listener every local client shares one address, so
    /// there the per-address default is the global one.
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenFile {
    pub file: PathBuf,
}

/// Validated `[gateway]`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Empty: no token required (loopback only).
    pub tokens: Vec<Secret>,
    pub allowed_origins: Vec<String>,
    pub mux: MuxConfig,
    pub session_idle_timeout: std::time::Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

impl GatewayConfig {
    // Over 80 lines on purpose: one check per key, in the order of the raw section.
    pub fn validate(path: &Path, raw: RawGateway) -> Result<GatewayConfig, ConfigError> {
        let bad =
            |key: &str, msg: String| ConfigError::invalid(path, &format!("gateway.{key}"), msg);
        let listen = raw
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9470)));
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(c), Some(k)) => {
                let (c, k) = (cfg::resolve_path(path, c), cfg::resolve_path(path, k));
                mcpwatch_common::tls::https_server_config(
                    &c,
                    &k,
                    mcpwatch_common::tls::MinTlsVersion::Tls13,
                )
                .map_err(|e| bad("tls_cert", e.to_string()))?;
                Some((c, k))
            }
            (None, None) => None,
            _ => return Err(bad("tls_cert", "tls_cert and tls_key go together".into())),
        };
        let mut tokens = Vec::with_capacity(raw.tokens.len());
        for (i, t) in raw.tokens.into_iter().enumerate() {
            let file = cfg::resolve_path(path, t.file);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| bad(&format!("tokens[{i}]"), format!("{}: {e}", file.display())))?;
            let token = text.trim();
            if token.len() < 16 {
                return Err(bad(
                    &format!("tokens[{i}]"),
                    format!("{}: a token must be at least 16 characters", file.display()),
                ));
            }
            tokens.push(Secret::new(token));
        }
        let enabled = raw.enabled.unwrap_or(true);
        if enabled && !listen.ip().is_loopback() {
            if tls.is_none() {
                return Err(bad(
                    "tls_cert",
                    format!("required when listen ({listen}) is not a loopback address"),
                ));
            }
            if tokens.is_empty() {
                return Err(bad(
                    "tokens",
                    format!("required when listen ({listen}) is not a loopback address"),
                ));
            }
        }
        for origin in &raw.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.trim_end_matches('/').matches('/').count() != 2
            {
                return Err(bad(
                    "allowed_origins",
                    format!("{origin:?}: expected scheme://host[:port]"),
                ));
            }
        }
        let defaults = MuxConfig::new("");
        let mux = MuxConfig {
            max_sessions: raw.max_sessions.unwrap_or(defaults.max_sessions),
            max_in_flight_per_session: raw
                .max_in_flight_per_session
                .unwrap_or(defaults.max_in_flight_per_session),
            max_in_flight: raw.max_in_flight.unwrap_or(defaults.max_in_flight),
            request_timeout: raw
                .request_timeout
                .map(Duration::get)
                .unwrap_or(defaults.request_timeout),
            ..defaults
        };
        let mux = MuxConfig {
            // The queue towards a client must exceed its in-flight limit (see MuxConfig).
            session_queue: mux.session_queue.max(mux.max_in_flight_per_session * 2),
            ..mux
        };
        mux.check()
            .map_err(|e| bad("max_in_flight", e.to_string()))?;
        if mux.max_sessions > 10_000 || mux.max_in_flight > 100_000 {
            return Err(bad(
                "max_sessions",
                "at most 10000 sessions and 100000 requests in flight per server".into(),
            ));
        }
        let max_connections = raw.max_connections.unwrap_or(256);
        if !(1..=100_000).contains(&max_connections) {
            return Err(bad("max_connections", "must be 1..=100000".into()));
        }
        Ok(GatewayConfig {
            enabled,
            listen,
            tls,
            tokens,
            allowed_origins: raw
                .allowed_origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            mux,
            session_idle_timeout: raw
                .session_idle_timeout
                .map(Duration::get)
                .unwrap_or(std::time::Duration::from_secs(600)),
            max_connections,
            // Twenty local MCP clients hold up to three connections each (a GET stream, a
            // POST being answered, one being opened), all from 127.0.0.1.
            max_connections_per_address: raw.max_connections_per_address.unwrap_or(
                if listen.ip().is_loopback() {
                    max_connections
                } else {
                    64
                },
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_limit_defaults_to_the_global_one_on_loopback_only() {
        let path = Path::new("/etc/mcpwatch/agent.toml");
        let loopback = GatewayConfig::validate(path, RawGateway::default()).unwrap();
        assert_eq!(loopback.max_connections_per_address, 256);
        let raw = RawGateway {
            max_connections: Some(100),
            ..RawGateway::default()
        };
        let loopback = GatewayConfig::validate(path, raw).unwrap();
        assert_eq!(loopback.max_connections_per_address, 100);
        let raw = RawGateway {
            max_connections_per_address: Some(8),
            ..RawGateway::default()
        };
        let set = GatewayConfig::validate(path, raw).unwrap();
        assert_eq!(set.max_connections_per_address, 8);
    }
}
