//! A real MCP server (official Rust SDK, rmcp) for mcpwatch's tests, served over stdio or
//! Streamable HTTP, with switches to crash, hang, answer slowly, change its tools or speak only
//! one protocol revision. The binary (`mcp-fixture`) runs it in containers; tests can also
//! serve it in-process.

pub mod options;
pub mod revision;
pub mod server;
pub mod switches;

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use options::{Options, ParseError, Transport};
pub use revision::FixtureService;
pub use server::FixtureServer;
pub use switches::{Clock, Lifecycle, Switches, ToolsVariant};

/// Any failure while serving; the fixture only reports it.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Serves one MCP session over a byte pipe (stdin/stdout, or one end of a
/// `tokio::io::duplex` in tests) until the peer closes its side.
pub async fn serve_io<R, W>(read: R, write: W, switches: Switches) -> Result<(), BoxError>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let service = FixtureService::new(Arc::new(Clock::start(switches)));
    let running = service.serve((read, write)).await?;
    running.waiting().await?;
    Ok(())
}

/// A Streamable HTTP server at `http://ADDR/mcp`, running on the current tokio runtime until
/// it is dropped. Legacy revisions get sessions (`Mcp-Session-Id`); 2026-07-28 requests are
/// answered statelessly, and a 2026-07-28-only fixture has no sessions at all.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn bind(addr: SocketAddr, switches: Switches) -> std::io::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let clock = Arc::new(Clock::start(switches));
        let legacy_sessions = revision::legacy_sessions(&clock.switches);
        let lifecycle = clock.switches.lifecycle();
        // rmcp only accepts loopback Host headers by default; also accept the bound IP so a
        // fixture listening on another local address still answers.
        let hosts = ["localhost".to_owned(), "127.0.0.1".into(), "::1".into()]
            .into_iter()
            .chain([addr.ip().to_string()]);
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(hosts)
            .with_legacy_session_mode(legacy_sessions)
            // Cancelling ends every session, so hung requests cannot hold up shutdown.
            .with_cancellation_token(cancel.child_token());
        let gate = revision::DiscoverGate {
            clock: clock.clone(),
            max_body: config.max_request_body_bytes,
        };
        let service: StreamableHttpService<FixtureServer, LocalSessionManager> =
            StreamableHttpService::new(
                move || Ok(FixtureServer::new(clock.clone())),
                Default::default(),
                config,
            );
        let mut router = axum::Router::new().nest_service("/mcp", service);
        if lifecycle == Lifecycle::InitializeOnly {
            router = router.layer(axum::middleware::from_fn_with_state(
                gate,
                revision::refuse_discover,
            ));
        }
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(HttpServer {
            addr,
            cancel,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint, e.g. `http://127.0.0.1:8080/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Serves until the listener fails (it does not stop on its own).
    pub async fn wait(mut self) -> Result<(), BoxError> {
        match self.task.take() {
            Some(task) => Ok(task.await??),
            None => Ok(()),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
