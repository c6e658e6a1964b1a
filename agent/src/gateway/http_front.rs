//! The gateway's Streamable HTTP front (MCP 2025-11-25 transport; the sessionless requests
//! of 2026-07-28 too): `POST`, `GET` and `DELETE` on `/mcp/{server}`.
//!
//! - `POST` carries one JSON-RPC message. An `initialize` without `Mcp-Session-Id` opens a
//!   session and returns its id in that header. Any other request without the header is
//!   served on a one-request session (the 2026-07-28 revision has no sessions). A request is
//!   answered with `application/json` when the answer is the first thing that comes for it,
//!   and with an SSE stream (related messages, then the answer) when progress or a server
//!   request comes first. Notifications and responses get 202.
//! - `GET` opens the session's stream for messages that belong to no request
//!   (`list_changed`, server requests while nothing is in flight); one at a time (409).
//! - `DELETE` ends the session; its in-flight requests are cancelled upstream.
//!
//! Guards (`http_guard.rs` for the first three), in order: on a loopback listener a loopback
//! `Host` (403), `Origin` (absent, loopback or listed, else 403: DNS-rebinding
//! protection), bearer token when configured (401), body ≤ 4 MiB (413), `Content-Type`
//! (415), `MCP-Protocol-Version` when sent (400). Unknown server 404, known but not
//! attached 503, unknown session 404. Every refusal is counted by reason; bodies are never
//! logged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::stream;

use super::backends::{Backends, ByteCounters};
use super::call_event::CallSink;
use super::client_pool::{Lease, PoolError};
use super::client_sessions::{HttpSession, HttpSessions, RequestStream, RouteError};
use super::config::{GatewayConfig, MAX_BODY};
use super::http_guard;
use super::http_message::{classify, rpc_error, Kind};
use super::http_proxy::{self, ProxyContext};
use super::jsonrpc::{self, ErrorCode, RequestId};
use super::session_mux::{ClientMessage, ClientSession, MuxError, Route};

pub const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// Revisions the gateway passes through; another `MCP-Protocol-Version` is refused.
pub const KNOWN_VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// An SSE comment this often keeps a quiet stream from the connection idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Counts a refusal by reason (the agent's metrics implement it).
pub type RefusalCounter = Arc<dyn Fn(&'static str) + Send + Sync>;

#[derive(Clone)]
pub struct FrontState {
    pub backends: Backends,
    pub sessions: HttpSessions,
    pub config: Arc<GatewayConfig>,
    pub refused: RefusalCounter,
    /// Measures proxied requests (stdio ones are measured by their mux).
    pub sink: Arc<dyn CallSink>,
}

/// 400 for a request that needs a session and names none.
fn no_session(state: &FrontState) -> Response {
    refuse(
        state,
        "no_session",
        StatusCode::BAD_REQUEST,
        "Mcp-Session-Id required",
    )
}

/// 404 for a session id that names no live session of this server (MCP: start a new one).
fn unknown_session(state: &FrontState) -> Response {
    refuse(
        state,
        "unknown_session",
        StatusCode::NOT_FOUND,
        "no such session",
    )
}

/// Hands the request to the reverse proxy when `server` is a Streamable HTTP server.
async fn proxied(
    state: &FrontState,
    server: &str,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<Response> {
    let backend = state.backends.http(server)?;
    let bytes = state.backends.bytes(server)?;
    bytes
        .from_clients
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let ctx = ProxyContext {
        server: server.into(),
        sink: Arc::clone(&state.sink),
        request_timeout: state.config.mux.request_timeout,
        bytes,
    };
    Some(http_proxy::forward(ctx, &backend, method, headers, body).await)
}

pub fn router(state: FrontState) -> Router {
    Router::new()
        .route(
            "/mcp/{server}",
            post(post_message).get(open_stream).delete(end_session),
        )
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http_guard::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

pub(super) fn refuse(
    state: &FrontState,
    reason: &'static str,
    status: StatusCode,
    text: &str,
) -> Response {
    (state.refused)(reason);
    tracing::debug!(reason, "gateway request refused");
    (status, format!("{text}\n")).into_response()
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"))
        || headers.get(header::ACCEPT).is_none()
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok())
}

/// A fresh 128-bit session id from the system's CSPRNG, as hex.
fn new_session_id() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(mcpwatch_common::hex::encode(&bytes))
}

// Over 80 lines on purpose: the POST checks in the order the module doc lists them, then the
// three ways a message enters a session; split, the order of the checks would be scattered.
async fn post_message(
    State(state): State<FrontState>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return refuse(
            &state,
            "content_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    if let Some(v) = headers.get(VERSION_HEADER) {
        if !v.to_str().is_ok_and(|v| KNOWN_VERSIONS.contains(&v)) {
            return refuse(
                &state,
                "protocol_version",
                StatusCode::BAD_REQUEST,
                "unsupported MCP-Protocol-Version",
            );
        }
    }
    if let Some(r) = proxied(&state, &server, Method::POST, &headers, body.clone()).await {
        return r;
    }
    let Some(bytes) = state.backends.bytes(&server) else {
        return refuse(
            &state,
            "unknown_server",
            StatusCode::NOT_FOUND,
            "no such MCP server",
        );
    };
    bytes
        .from_clients
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let (line, kind) = match classify(&body) {
        Ok(x) => x,
        Err(bad) => {
            (state.refused)("malformed");
            return bad.into_response();
        }
    };
    let sse = accepts_sse(&headers);
    if let Some(sid) = session_id(&headers) {
        let Some(session) = state.sessions.get(&server, sid) else {
            return refuse(
                &state,
                "unknown_session",
                StatusCode::NOT_FOUND,
                "no such session",
            );
        };
        return match kind {
            Kind::Request { id, .. } => request(&session, id, line, sse, bytes, None).await,
            Kind::Other => match session.send(line).await {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(_) => refuse(
                    &state,
                    "unknown_session",
                    StatusCode::NOT_FOUND,
                    "session ended",
                ),
            },
        };
    }
    let Kind::Request { id, method, .. } = kind else {
        return no_session(&state);
    };
    let (opened, lease) = match open_upstream(&state, &server, &id, &method).await {
        Ok(x) => x,
        Err(refusal) => return refusal,
    };
    if method == "initialize" {
        let Some(sid) = new_session_id() else {
            return refuse(
                &state,
                "internal",
                StatusCode::INTERNAL_SERVER_ERROR,
                "no randomness for a session id",
            );
        };
        let session = state
            .sessions
            .start(&server, Some(sid.clone()), opened, lease);
        let mut response = request(&session, id, line, sse, bytes, None).await;
        if response.status() == StatusCode::OK {
            if let Ok(v) = HeaderValue::from_str(&sid) {
                response.headers_mut().insert(SESSION_HEADER, v);
            }
        } else {
            state.sessions.remove(&server, &sid);
        }
        return response;
    }
    // Sessionless (2026-07-28): one request on its own session, ended once answered.
    let session = state.sessions.start(&server, None, opened, lease);
    let owner = EndOnDrop(Arc::clone(&session));
    request(&session, id, line, sse, bytes, Some(owner)).await
}

/// A new mux session for a client of `server`: on the shared attach, or on a container of
/// its own (`per_client`, which needs an `initialize`).
async fn open_upstream(
    state: &FrontState,
    server: &str,
    id: &RequestId,
    method: &str,
) -> Result<(ClientSession, Option<Lease>), Response> {
    let too_many = || {
        (state.refused)("too_many_sessions");
        rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(id.clone()),
            jsonrpc::OVER_LIMIT,
            "too many client sessions on this server",
        )
    };
    if let Some(pool) = state.backends.pool(server) {
        if method != "initialize" {
            return Err(refuse(
                state,
                "no_session",
                StatusCode::BAD_REQUEST,
                "this server gives each client its own instance: initialize first",
            ));
        }
        return match pool.open().await {
            Ok((session, lease)) => Ok((session, Some(lease))),
            Err(PoolError::Full(_)) => Err(too_many()),
            Err(PoolError::Start(_)) => Err(refuse(
                state,
                "not_attached",
                StatusCode::SERVICE_UNAVAILABLE,
                "no instance of the server could be started",
            )),
        };
    }
    let Some(mux) = state.backends.mux(server) else {
        return Err(refuse(
            state,
            "not_attached",
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is not running (starting, restarting or down)",
        ));
    };
    match mux.open_session().await {
        Ok(s) => Ok((s, None)),
        Err(MuxError::TooManySessions(_)) => Err(too_many()),
        Err(_) => Err(refuse(
            state,
            "not_attached",
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is restarting",
        )),
    }
}

/// Ends a one-request session when dropped: after its JSON answer, or when its SSE stream
/// has been sent (or the client went away).
struct EndOnDrop(Arc<HttpSession>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Sends a request and answers with what comes back for it. `owner`, for a one-request
/// session, lives as long as the answer.
async fn request(
    session: &Arc<HttpSession>,
    id: RequestId,
    line: String,
    sse: bool,
    bytes: ByteCounters,
    owner: Option<EndOnDrop>,
) -> Response {
    let mut stream = match session.expect(id.clone()) {
        Ok(s) => s,
        Err(RouteError::DuplicateId) => {
            return rpc_error(
                StatusCode::OK,
                Some(id),
                ErrorCode::INVALID_REQUEST,
                "a request with this id is already in flight",
            );
        }
        Err(RouteError::Ended) => {
            return (StatusCode::NOT_FOUND, "session ended\n").into_response()
        }
    };
    if session.send(line).await.is_err() {
        session.forget(&id);
        return (StatusCode::NOT_FOUND, "session ended\n").into_response();
    }
    let closed = || {
        rpc_error(
            StatusCode::OK,
            Some(id.clone()),
            jsonrpc::CONNECTION_CLOSED,
            "the server's session ended",
        )
    };
    // The mux answers every request within its timeout; this bound only guards against a
    // message that never comes (it would pin the POST and its session).
    let deadline = tokio::time::Instant::now() + session.answer_timeout;
    loop {
        let first = match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return closed(),
            Err(_) => {
                session.forget(&id);
                return rpc_error(
                    StatusCode::OK,
                    Some(id),
                    jsonrpc::REQUEST_TIMEOUT,
                    "no answer in time",
                );
            }
        };
        if let Route::Response(_) = first.route {
            bytes
                .to_clients
                .fetch_add(first.line.len() as u64, Ordering::Relaxed);
            return ([(header::CONTENT_TYPE, "application/json")], first.line).into_response();
        }
        if sse {
            return sse_response(Some(first), stream, bytes, true, owner);
        }
        // A client that takes no SSE cannot get related messages: they are dropped.
        session.undeliverable.fetch_add(1, Ordering::Relaxed);
    }
}

/// An SSE response carrying `first` and then the stream; with `until_answer`, it ends after
/// the answer.
fn sse_response(
    first: Option<ClientMessage>,
    rx: RequestStream,
    bytes: ByteCounters,
    until_answer: bool,
    owner: Option<EndOnDrop>,
) -> Response {
    let events = stream::unfold(
        (first, rx, false, owner),
        move |(pending, mut rx, done, owner)| {
            let bytes = bytes.clone();
            async move {
                if done {
                    drop(owner);
                    return None;
                }
                let message = match pending {
                    Some(m) => m,
                    None => rx.recv().await?,
                };
                let last = until_answer && matches!(message.route, Route::Response(_));
                bytes
                    .to_clients
                    .fetch_add(message.line.len() as u64, Ordering::Relaxed);
                let event = Event::default().event("message").data(message.line);
                Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (None, rx, last, owner),
                ))
            }
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

async fn open_stream(
    State(state): State<FrontState>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = proxied(&state, &server, Method::GET, &headers, Bytes::new()).await {
        return r;
    }
    let Some(sid) = session_id(&headers) else {
        return no_session(&state);
    };
    let Some(session) = state.sessions.get(&server, sid) else {
        return unknown_session(&state);
    };
    if !accepts_sse(&headers) {
        return refuse(
            &state,
            "not_acceptable",
            StatusCode::NOT_ACCEPTABLE,
            "GET serves text/event-stream only",
        );
    }
    let Some(rx) = session.open_standalone() else {
        return refuse(
            &state,
            "stream_open",
            StatusCode::CONFLICT,
            "this session already has a GET stream",
        );
    };
    session.touch();
    let Some(bytes) = state.backends.bytes(&server) else {
        return refuse(
            &state,
            "unknown_server",
            StatusCode::NOT_FOUND,
            "no such MCP server",
        );
    };
    sse_response(None, rx, bytes, false, None)
}

async fn end_session(
    State(state): State<FrontState>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = proxied(&state, &server, Method::DELETE, &headers, Bytes::new()).await {
        return r;
    }
    let Some(sid) = session_id(&headers) else {
        return no_session(&state);
    };
    if state.sessions.remove(&server, sid) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        unknown_session(&state)
    }
}
