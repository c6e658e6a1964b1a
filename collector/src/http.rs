//! The collector's operational routes: `/metrics`, `/healthz` (process alive) and `/readyz`
//! (listeners bound, store open, not shutting down). They share the HTTP endpoint with the
//! API (`api::server`). `/metrics` follows `/federate`'s token rule: with
//! `[api] federation_token` set (required off loopback) it needs that bearer token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mcpwatch_common::exposition;

use crate::api::federation::require_scrape_token;
use crate::metrics::CollectorMetrics;
use crate::notify::Secret;
use crate::store::Store;

#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<CollectorMetrics>,
    ready: Arc<Readiness>,
    store: Store,
    token: Option<Secret>,
}

/// `/metrics` (behind the scrape token when one is set), `/healthz` and `/readyz` (no
/// authentication: they reveal nothing).
pub fn router(
    metrics: Arc<CollectorMetrics>,
    ready: Arc<Readiness>,
    store: Store,
    token: Option<Secret>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics,
            ready,
            store,
            token,
        })
}

async fn metrics_handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = require_scrape_token(&headers, s.token.as_ref()) {
        return denied;
    }
    s.metrics
        .store_queue_depth
        .set(s.store.queue_depth() as i64);
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let (content_type, body) = exposition::negotiate(accept, s.metrics.encode());
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.ready.get() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
