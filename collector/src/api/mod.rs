//! The HTTP API: JSON under `/api/v1`, bearer authentication (API tokens and login
//! sessions), permissions scoped to host groups, an audit record for every change and every
//! denial, and an OpenAPI 3.1 document generated from the same router that serves the
//! routes (`/api/v1/openapi.json`), so the two cannot drift apart.
//!
//! Each resource family lives in its own file and contributes an `OpenApiRouter`; `build`
//! nests them, adds the audit layer, limits and the document.

pub mod auth;
pub mod browser_session;
pub mod contract;
pub mod error;
pub mod json_body;
pub mod login;
pub mod paging;
pub mod refusal_audit;
pub mod request_id;
pub mod scope;
pub mod security_headers;
pub mod server;

pub mod alert_routes;
pub mod alerts;
pub mod audit_log;
pub mod backups;
pub mod certificates;
pub mod enrollment;
pub mod events;
pub mod federation;
pub mod fleet;
pub mod hosts;
pub mod metrics_api;
pub mod mfa;
pub mod notifications;
pub mod oidc;
pub mod pending_alerts;
mod receiver_view;
pub mod receivers;
pub mod roles;
pub mod rules;
pub mod server_state;
pub mod servers;
pub mod sessions;
pub mod silences;
pub mod stream;
pub mod tokens;
pub mod tool_stats;
pub mod tools;
pub mod users;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{middleware, Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::Modify;
use utoipa_axum::router::OpenApiRouter;

use crate::command::CommandRouter;
use crate::metrics::CollectorMetrics;

/// API behaviour settings (validated from `[api]`).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// A session unused for this long ends.
    pub session_idle_ms: i64,
    /// A session ends this long after login whatever its use.
    pub session_absolute_ms: i64,
    /// Failed logins before an account locks, and for how long.
    pub lockout_after: i64,
    pub lockout_ms: i64,
    /// Login attempts per source address per minute.
    pub login_per_minute: u32,
    /// Largest page a list may return (`limit` above it is refused).
    pub max_page: usize,
    /// Points a `query_range` may return at most.
    pub max_points: usize,
    /// How long a server control command may wait for the agent.
    pub command_timeout: std::time::Duration,
    /// Bearer token required by `/federate`, when set (redacted in `Debug`).
    pub federation_token: Option<crate::notify::Secret>,
    /// The API is served over TLS: browser session cookies are `Secure` and `__Host-` named.
    pub cookie_secure: bool,
    /// Live streams (`/api/v1/stream`) open at once; more are answered 503.
    pub stream_max_clients: usize,
    /// Live streams one user (or user-less token) may hold; more are answered 429.
    pub stream_max_per_user: usize,
    /// How often the live feed looks for committed changes.
    pub stream_poll: std::time::Duration,
    /// How often an idle live stream sends a heartbeat and re-checks its credential.
    pub stream_heartbeat: std::time::Duration,
    /// `[auth]`: the password policy and who needs a second factor.
    pub auth: crate::auth::settings::AuthSettings,
}

impl ApiSettings {
    pub fn defaults() -> ApiSettings {
        ApiSettings {
            session_idle_ms: 30 * 60_000,
            session_absolute_ms: 12 * 3_600_000,
            lockout_after: 5,
            lockout_ms: 15 * 60_000,
            login_per_minute: 10,
            max_page: 1000,
            max_points: 11_000,
            command_timeout: std::time::Duration::from_secs(10),
            federation_token: None,
            cookie_secure: false,
            stream_max_clients: 256,
            stream_max_per_user: 16,
            stream_poll: std::time::Duration::from_millis(500),
            stream_heartbeat: std::time::Duration::from_secs(15),
            auth: crate::auth::settings::AuthSettings::default(),
        }
    }
}

pub struct Inner {
    pub store: crate::store::Store,
    /// The alerting runtime's requests (rules, receivers, silences, acknowledgements).
    pub alerting: crate::alerting::Alerting,
    pub commands: CommandRouter,
    pub metrics: Arc<CollectorMetrics>,
    pub settings: ApiSettings,
    pub limiter: login::LoginLimiter,
    /// Enrollment attempts per address (kept apart from logins: neither uses up the other).
    pub enroll_limiter: login::LoginLimiter,
    /// Committed changes for live streams.
    pub feed: crate::feed::Feed,
    /// Per-host sparklines and server counts for `GET /fleet`.
    pub fleet: crate::fleet::Fleet,
    /// The signer and the live revocations (enrollment, certificates of a host).
    pub pki: crate::pki::Pki,
    /// On-demand backups and the list of backup files.
    pub backups: crate::backup::Backups,
    /// Seals the second factors of local accounts (the receivers' secrets key).
    pub secret_key: Arc<crate::notify::SecretKey>,
    /// Single sign-on (`[oidc]`), when configured.
    pub oidc: Option<Arc<crate::oidc::RelyingParty>>,
    /// One permit per open live stream (`settings.stream_max_clients`).
    pub stream_slots: Arc<tokio::sync::Semaphore>,
    /// Open live streams per holder (`settings.stream_max_per_user`).
    pub stream_holders: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Cancelled when the HTTP endpoint starts draining: live streams end at once.
    pub streams_stop: tokio_util::sync::CancellationToken,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct ApiState(pub Arc<Inner>);

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "mcpwatch collector API", version = "1"),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::ErrorBody, error::ErrorDetail))
)]
struct ApiDoc;

/// Which answers `gzip` compresses: what tower-http would by default (not tiny, not already
/// compressed, not event streams), and successful ones only, since a refusal is small and
/// `json_errors` reads the plain-text ones.
type Compressible = tower_http::compression::predicate::And<
    tower_http::compression::DefaultPredicate,
    fn(StatusCode, axum::http::Version, &axum::http::HeaderMap, &axum::http::Extensions) -> bool,
>;

/// gzip for the large read-only answers (`/fleet`, `/query_range`) when the client accepts
/// it. Only routes answering metric data use it: no secret is ever in a compressed body, so
/// compression cannot leak one through its size (BREACH).
pub(crate) fn gzip() -> tower_http::compression::CompressionLayer<Compressible> {
    use tower_http::compression::{CompressionLayer, DefaultPredicate, Predicate as _};
    let only_success: fn(
        StatusCode,
        axum::http::Version,
        &axum::http::HeaderMap,
        &axum::http::Extensions,
    ) -> bool = |status, _, _, _| status.is_success();
    CompressionLayer::new().compress_when(DefaultPredicate::new().and(only_success))
}

/// Rejections produced outside handlers (malformed JSON, bad query strings, a body over the
/// limit, a timeout) come as plain text from axum and tower-http; give them the API's JSON
/// error shape so clients parse one format.
pub(crate) async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    // axum answers a JSON body of the wrong shape with 422; the API keeps 422 for requests
    // that fit the document but whose content is refused, so a body that does not fit it
    // is a 400 like any other malformed request.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    // The rejection's text says what was wrong with the request (never server internals).
    let bytes = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.trim().to_owned()
    };
    error::plain(status, code, &message)
}

/// The API routes (with their OpenAPI document) under `/api/v1`, plus `/federate`.
pub fn build(state: ApiState) -> (Router, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    let v1 = OpenApiRouter::new()
        .merge(login::routes())
        .merge(hosts::routes())
        .merge(enrollment::routes())
        .merge(certificates::routes())
        .merge(fleet::routes())
        .merge(servers::routes())
        .merge(tools::routes())
        .merge(events::routes())
        .merge(metrics_api::routes())
        .merge(alerts::routes())
        .merge(pending_alerts::routes())
        .merge(silences::routes())
        .merge(rules::routes())
        .merge(receivers::routes())
        .merge(notifications::routes())
        .merge(alert_routes::routes())
        .merge(users::routes())
        .merge(mfa::routes())
        .merge(oidc::routes())
        .merge(roles::routes())
        .merge(tokens::routes())
        .merge(sessions::routes())
        .merge(audit_log::routes())
        .merge(backups::routes())
        .merge(stream::routes());
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::audit))
        .layer(middleware::from_fn(json_body::integral_numbers))
        .split_for_parts();
    let doc_json = Arc::new(contract::complete(&doc, state.settings.max_page));
    let router = router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let d = doc_json.clone();
                async move { Json((*d).clone()) }
            }),
        )
        .merge(federation::routes())
        .fallback(|| async {
            error::plain(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
        })
        .with_state(state);
    (router, doc)
}
