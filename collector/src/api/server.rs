//! The collector's HTTP endpoint limits: the body limit, request timeout, refusal audit and
//! request ids as layers around the API router. The server loop itself (connection caps,
//! timeouts, TLS) is `mcpwatch_common::http_server`, shared with the agent's gateway.

use axum::Router;
pub use mcpwatch_common::http_server::ServerLimits;

use super::refusal_audit::RefusalAudit;

/// Applies the body limit and request timeout to `app`, audits what they (and the URI
/// limit) refuse before routing, and gives every request and response its `X-Request-Id`
/// and the security headers (`security_headers.rs`).
pub fn with_limits(app: Router, limits: &ServerLimits, refusals: RefusalAudit) -> Router {
    app.layer(axum::extract::DefaultBodyLimit::max(limits.body_limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.body_limit,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(super::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            refusals,
            super::refusal_audit::audit_refusals,
        ))
        .layer(axum::middleware::map_response(super::security_headers::add))
        // Outermost: every answer carries the request's id, refusals before routing too.
        .layer(axum::middleware::from_fn(super::request_id::assign))
}
