//! A hardened HTTP/1 server loop for axum routers, shared by the collector's API and the
//! agent's MCP gateway: a connection limit overall and per client address, a short deadline
//! for a connection's first byte (or its TLS handshake), an idle timeout between requests,
//! an HTTP/1 header read timeout set on hyper itself (so a slow-loris client is cut off),
//! optional TLS (rustls, the certificate re-read per connection), graceful shutdown. Every
//! connection turned away or closed by the server is reported by reason to the caller's
//! counter. Each request carries the peer's address as a [`ClientAddr`] extension.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use connection::{Activity, AddressSlot, AddressSlots, InFlight, Tracked};

use crate::tls::Reloadable;

/// The peer address of the connection, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// How long an open request may still take once the server shuts down.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Told why the server closed or refused a connection (`address_limit`, `limit`,
/// `accept_error`, `first_byte_timeout`, `tls_handshake`, `header_read_timeout`,
/// `idle_timeout`), to count it.
pub type ClosedCounter = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Limits of an HTTP endpoint (validated from its configuration section).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Connections one client address may hold open at once.
    pub max_connections_per_address: usize,
    /// A new connection must send its first byte (or finish its TLS handshake) within this.
    pub first_byte_timeout: Duration,
    /// A connection that has moved no bytes for this long with no request in progress is
    /// closed (keep-alive idle after a response).
    pub idle_timeout: Duration,
    /// The whole request head must arrive within this.
    pub header_read_timeout: Duration,
    /// A request (handler included) must finish within this.
    pub request_timeout: Duration,
    /// Largest request body accepted.
    pub body_limit: usize,
}

impl ServerLimits {
    pub fn defaults() -> ServerLimits {
        ServerLimits {
            max_connections: 256,
            max_connections_per_address: 32,
            first_byte_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            body_limit: 1 << 20,
        }
    }
}

/// Serves `app` until `shutdown`, then lets open requests finish.
// Over 80 lines on purpose: the accept loop and the per-connection admission (address cap,
// global cap, first byte or TLS handshake) read as one sequence.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    closed: ClosedCounter,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = AddressSlots::new(limits.max_connections_per_address);
    let conns = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    closed("accept_error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over a limit: close at once rather than queue without bound. The per-address cap
        // comes first so one address cannot take the global slots.
        let Some(slot) = per_address.acquire(peer.ip()) else {
            tracing::debug!(%peer, "http connection refused: per-address limit reached");
            closed("address_limit");
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "http connection refused: limit reached");
            closed("limit");
            continue;
        };
        let app = app.clone();
        // The current certificate (SIGHUP may have swapped it); this connection keeps it.
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.get()));
        let stop = shutdown.clone();
        let limits = limits.clone();
        let closed = closed.clone();
        conns.spawn(async move {
            let _held = (permit, slot);
            let activity = Activity::new();
            let why = match acceptor {
                None => {
                    // A connection that sends nothing holds a slot for free; it gets a short
                    // deadline for its first byte.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(limits.first_byte_timeout, tcp.peek(&mut first))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => {
                            let io = Tracked::new(tcp, activity.clone());
                            serve_conn(io, app, peer, &limits, activity, stop).await
                        }
                        Ok(_) => None,
                        Err(_) => Some("first_byte_timeout"),
                    }
                }
                Some(acc) => {
                    match tokio::time::timeout(limits.first_byte_timeout, acc.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let io = Tracked::new(tls, activity.clone());
                            serve_conn(io, app, peer, &limits, activity, stop).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            Some("tls_handshake")
                        }
                        Err(_) => Some("first_byte_timeout"),
                    }
                }
            };
            if let Some(reason) = why {
                tracing::debug!(%peer, reason, "http connection closed");
                closed(reason);
            }
        });
    }
    conns.close();
    conns.wait().await;
}

/// Serves one connection until the client closes it, it idles out, or shutdown. Returns why
/// the server closed it, when it did.
async fn serve_conn<I>(
    io: Tracked<I>,
    app: Router,
    peer: SocketAddr,
    limits: &ServerLimits,
    activity: Arc<Activity>,
    stop: CancellationToken,
) -> Option<&'static str>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let requests = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        // Counted until the response head is ready; a response body still streaming keeps
        // the connection active through its writes.
        let in_flight = requests.request();
        let answer = app.clone().oneshot(req.map(axum::body::Body::new));
        async move {
            let r = answer.await;
            drop(in_flight);
            r
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let mut why = None;
    loop {
        let quiet = activity.quiet_for();
        let wait = idle.saturating_sub(quiet).max(Duration::from_millis(10));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "http connection ended with an error");
                    if e.is_timeout() {
                        why = Some("header_read_timeout");
                    }
                }
                return why;
            }
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {
                if activity.in_flight() == 0 && activity.quiet_for() >= idle {
                    why = Some("idle_timeout");
                    break;
                }
            }
        }
    }
    // Closes an idle connection at once; one mid-request gets its answer first, within
    // CLOSE_GRACE (a stream that never ends, or a client that stops reading, must not hold
    // the process at shutdown).
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
    why
}
