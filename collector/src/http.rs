//! The collector's operational routes: `/metrics`, `/healthz` (process alive) and `/readyz`
//! (listeners bound, store open, not shutting down). They share the HTTP endpoint with the
//! API (`api::server`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mcpwatch_common::exposition;

use crate::metrics::CollectorMetrics;
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
}

/// `/metrics`, `/healthz` and `/readyz` (no authentication: they reveal no fleet data).
pub fn router(metrics: Arc<CollectorMetrics>, ready: Arc<Readiness>, store: Store) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics,
            ready,
            store,
        })
}

async fn metrics_handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
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
