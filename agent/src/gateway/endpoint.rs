//! Starts the gateway's listener: binds `[gateway] listen`, loads the HTTPS certificate when
//! configured, and serves the Streamable HTTP front through the shared hardened server loop
//! (connection caps overall and per address, first-byte, header and idle timeouts), with the
//! idle-session sweeper beside it.

use std::sync::Arc;
use std::time::Duration;

use mcpwatch_common::http_server::{self, ClosedCounter, ServerLimits};
use mcpwatch_common::tls::{self, MinTlsVersion, Reloadable};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backends::Backends;
use super::call_event::CallSink;
use super::client_sessions::HttpSessions;
use super::config::{GatewayConfig, MAX_BODY};
use super::http_front::{self, FrontState, RefusalCounter};

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("bind gateway listener {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("gateway tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// What the endpoint reports to the agent's metrics.
pub struct EndpointCounters {
    pub refused: RefusalCounter,
    pub connections_closed: ClosedCounter,
    /// The traffic metrics, for proxied requests.
    pub calls: Arc<dyn CallSink>,
}

/// A running gateway endpoint.
pub struct Endpoint {
    pub local_addr: std::net::SocketAddr,
    pub sessions: HttpSessions,
    pub task: JoinHandle<()>,
}

/// Binds and serves until `shutdown`. Returns once the listener is bound.
pub async fn start(
    config: &GatewayConfig,
    backends: Backends,
    counters: EndpointCounters,
    shutdown: CancellationToken,
) -> Result<Endpoint, EndpointError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EndpointError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| EndpointError::Bind {
            addr: config.listen,
            source,
        })?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(Arc::new(Reloadable::new(tls::https_server_config(
            cert,
            key,
            MinTlsVersion::Tls13,
        )?))),
        None => None,
    };
    let sessions = HttpSessions::new(config.mux.request_timeout);
    let app = http_front::router(FrontState {
        backends,
        sessions: sessions.clone(),
        config: Arc::new(config.clone()),
        refused: counters.refused,
        sink: counters.calls,
    });
    let limits = ServerLimits {
        max_connections: config.max_connections,
        max_connections_per_address: config.max_connections_per_address,
        // Long tool calls and SSE streams are legitimate; the mux's request timeout bounds a
        // request, and SSE keep-alives keep a quiet stream from the idle timeout.
        request_timeout: Duration::from_secs(24 * 3600),
        body_limit: MAX_BODY,
        ..ServerLimits::defaults()
    };
    let idle = config.session_idle_timeout;
    tokio::spawn(sessions.clone().expire_idle(idle, shutdown.clone()));
    let task = tokio::spawn(http_server::serve(
        listener,
        app,
        limits,
        tls,
        counters.connections_closed,
        shutdown,
    ));
    Ok(Endpoint {
        local_addr,
        sessions,
        task,
    })
}
