//! The HTTP server loop under the collector's HTTP endpoint: a connection limit, an HTTP/1
//! header read timeout set on hyper itself (so a slow-loris client is cut off), request
//! body and time limits as tower layers, optional TLS (rustls), graceful shutdown.

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

use super::auth::ClientAddr;

/// Limits of the HTTP endpoint (validated from `[http]`).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
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
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            body_limit: 1 << 20,
        }
    }
}

/// Applies the body limit and request timeout to `app`.
pub fn with_limits(app: Router, limits: &ServerLimits) -> Router {
    app.layer(axum::extract::DefaultBodyLimit::max(limits.body_limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.body_limit,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(super::json_errors))
}

/// Serves `app` until `shutdown`, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let conns = TaskTracker::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the limit: close at once rather than queue without bound.
            tracing::debug!(%peer, "http connection refused: limit reached");
            drop(tcp);
            continue;
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        let stop = shutdown.clone();
        let header_timeout = limits.header_read_timeout;
        conns.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_conn(TokioIo::new(tcp), app, peer, header_timeout, stop).await,
                Some(acc) => match tokio::time::timeout(header_timeout, acc.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        serve_conn(TokioIo::new(tls), app, peer, header_timeout, stop).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "api tls handshake failed"),
                    Err(_) => tracing::debug!(%peer, "api tls handshake timed out"),
                },
            }
        });
    }
    conns.close();
    conns.wait().await;
}

async fn serve_conn<I>(
    io: TokioIo<I>,
    app: Router,
    peer: SocketAddr,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
