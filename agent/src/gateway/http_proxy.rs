//! The gateway's reverse proxy for Streamable HTTP servers (supervised `http` servers and
//! external ones): `/mcp/{server}` forwards to the server's URL with the MCP headers
//! (`Mcp-Session-Id`, `MCP-Protocol-Version`, `Last-Event-ID`, `Accept`, `Content-Type`)
//! passed through both ways, and the server's own headers (an external server's
//! `Authorization`) added; the client's `Authorization` (the gateway's token) is not
//! forwarded. JSON answers are read to learn the outcome; SSE streams are passed through as
//! they arrive while a scanner watches for the answer to the request. Every request is
//! measured like a stdio one: the outcome comes from the answer, a timeout, a failed
//! connection or the client leaving first (cancelled).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{stream, StreamExt};
use mcpwatch_common::secret::Secret;
use tokio::time::Instant;

use super::backends::ByteCounters;
use super::call_event::{CallEvent, CallOutcome, CallSink};
use super::http_message::{classify, rpc_error, Kind};
use super::jsonrpc::{self, RequestId};
use crate::http_client;

/// Largest JSON answer read whole, and largest SSE event scanned (an SSE stream is never
/// held whole): the gateway's message limit.
const MAX_ANSWER: usize = super::config::MAX_BODY;

/// Headers passed from the client to the server, and back.
const FORWARDED: &[&str] = &[
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    // 2026-07-28: the method (and tool) of every POST, checked by the server against its body.
    "mcp-method",
    "mcp-name",
];
const RETURNED: &[&str] = &[
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "cache-control",
];

/// Where a proxied server lives.
#[derive(Debug)]
pub struct HttpBackend {
    pub url: String,
    /// Added to every request (marked sensitive: never printed).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpBackend {
    /// `headers` were validated with the configuration; one that still does not fit an HTTP
    /// header is left out (and logged by name).
    pub fn new(url: &str, headers: &[(String, Secret)]) -> HttpBackend {
        let mut out = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                (Ok(n), Ok(mut v)) => {
                    v.set_sensitive(true);
                    out.push((n, v));
                }
                _ => tracing::warn!(header = %name, "header left out: not a valid HTTP header"),
            }
        }
        HttpBackend {
            url: url.to_owned(),
            headers: out,
        }
    }
}

/// Records one request's outcome exactly once; dropped unrecorded, it counts as cancelled
/// (the client went away before the answer).
struct Meter {
    sink: Arc<dyn CallSink>,
    server: Arc<str>,
    method: String,
    tool: Option<String>,
    id: RequestId,
    started: Instant,
    done: bool,
}

impl Meter {
    fn finish(&mut self, outcome: CallOutcome) {
        if self.done {
            return;
        }
        self.done = true;
        self.sink.record(CallEvent {
            server: Arc::clone(&self.server),
            method: std::mem::take(&mut self.method),
            tool: self.tool.take(),
            outcome,
            duration: self.started.elapsed(),
        });
    }

    /// Finishes when `message` is the answer to this request.
    fn observe(&mut self, message: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(message) else {
            return;
        };
        let answers = v.get("id").and_then(jsonrpc::id_from_json).as_ref() == Some(&self.id);
        if !answers || v.get("method").is_some() {
            return;
        }
        let outcome = match v.get("result") {
            Some(result) if jsonrpc::is_tool_error(result) => CallOutcome::ToolError,
            Some(_) => CallOutcome::Ok,
            None => CallOutcome::JsonRpcError,
        };
        self.finish(outcome);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(CallOutcome::Cancelled);
    }
}

/// What the proxy needs besides the backend.
pub struct ProxyContext {
    pub server: Arc<str>,
    pub sink: Arc<dyn CallSink>,
    pub request_timeout: Duration,
    pub bytes: ByteCounters,
}

/// Forwards one request to `backend` and answers with what it says.
pub async fn forward(
    ctx: ProxyContext,
    backend: &HttpBackend,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let client = match http_client::get(http_client::Purpose::Proxy) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "gateway proxy has no HTTP client");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "gateway proxy unavailable\n",
            )
                .into_response();
        }
    };
    let mut meter = match (&method, classify(&body)) {
        (&Method::POST, Ok((_, Kind::Request { id, method, tool }))) => Some(Meter {
            sink: Arc::clone(&ctx.sink),
            server: Arc::clone(&ctx.server),
            method,
            tool,
            id,
            started: Instant::now(),
            done: false,
        }),
        _ => None,
    };
    let request_id = meter.as_ref().map(|m| m.id.clone());
    let mut outgoing = reqwest::header::HeaderMap::new();
    for name in FORWARDED {
        if let Some(v) = headers.get(*name) {
            outgoing.insert(*name, v.clone());
        }
    }
    for (name, value) in &backend.headers {
        outgoing.insert(name.clone(), value.clone());
    }
    let send = client
        .request(method, &backend.url)
        .headers(outgoing)
        .body(body)
        .send();
    let upstream = match tokio::time::timeout(ctx.request_timeout, send).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            // Without the URL: its query could hold a credential.
            let e = e.without_url();
            tracing::debug!(server = %ctx.server, error = %e, "gateway proxy: server unreachable");
            if let Some(m) = meter.as_mut() {
                m.finish(CallOutcome::TransportError);
            }
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                request_id,
                jsonrpc::CONNECTION_CLOSED,
                "the MCP server is unreachable",
            );
        }
        Err(_) => {
            if let Some(m) = meter.as_mut() {
                m.finish(CallOutcome::Timeout);
            }
            return rpc_error(
                StatusCode::GATEWAY_TIMEOUT,
                request_id,
                jsonrpc::REQUEST_TIMEOUT,
                "the MCP server did not answer in time",
            );
        }
    };
    let status = upstream.status();
    let mut response_headers = HeaderMap::new();
    for name in RETURNED {
        if let Some(v) = upstream.headers().get(*name) {
            response_headers.insert(*name, v.clone());
        }
    }
    let is_json = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if let Some(m) = meter.as_mut().filter(|_| !status.is_success()) {
        m.finish(CallOutcome::TransportError);
    }
    if is_json {
        return json_answer(upstream, status, response_headers, meter, request_id, &ctx).await;
    }
    streamed_answer(upstream, status, response_headers, meter, ctx.bytes)
}

/// A JSON answer, read whole (bounded) to learn the outcome.
async fn json_answer(
    upstream: reqwest::Response,
    status: StatusCode,
    headers: HeaderMap,
    mut meter: Option<Meter>,
    request_id: Option<RequestId>,
    ctx: &ProxyContext,
) -> Response {
    let read = tokio::time::timeout(ctx.request_timeout, read_limited(upstream)).await;
    let Ok(Ok(bytes)) = read else {
        if let Some(m) = meter.as_mut() {
            m.finish(CallOutcome::TransportError);
        }
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            request_id,
            jsonrpc::CONNECTION_CLOSED,
            "the MCP server's answer was cut off or too large",
        );
    };
    if let Some(m) = meter.as_mut() {
        m.observe(&bytes);
        // A JSON answer that is not the answer to the request.
        m.finish(CallOutcome::TransportError);
    }
    ctx.bytes
        .to_clients
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    (status, headers, bytes).into_response()
}

/// Anything else (an SSE stream): passed through as it comes, scanned for the answer.
fn streamed_answer(
    upstream: reqwest::Response,
    status: StatusCode,
    headers: HeaderMap,
    meter: Option<Meter>,
    bytes: ByteCounters,
) -> Response {
    let chunks = upstream.bytes_stream();
    let state = (chunks, SseScanner::default(), meter, bytes);
    let body = stream::unfold(
        state,
        |(mut chunks, mut scanner, mut meter, bytes)| async move {
            let finish = |meter: &mut Option<Meter>| {
                if let Some(m) = meter.as_mut() {
                    m.finish(CallOutcome::TransportError);
                }
            };
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    bytes
                        .to_clients
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if let Some(m) = meter.as_mut() {
                        scanner.push(&chunk, |event| m.observe(event));
                    }
                    let next = (chunks, scanner, meter, bytes);
                    Some((Ok::<_, std::io::Error>(chunk), next))
                }
                Some(Err(e)) => {
                    finish(&mut meter);
                    let next = (chunks, scanner, meter, bytes);
                    Some((Err(std::io::Error::other(e)), next))
                }
                // The stream ended; without the answer, that is a transport error.
                None => {
                    finish(&mut meter);
                    None
                }
            }
        },
    );
    (status, headers, Body::from_stream(body)).into_response()
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| ())? {
        if out.len() + chunk.len() > MAX_ANSWER {
            return Err(());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Finds the `data` of each SSE event in a byte stream, bounded: an event over
/// [`MAX_ANSWER`] is skipped, not kept.
#[derive(Default)]
struct SseScanner {
    line: Vec<u8>,
    data: Vec<u8>,
    overflow: bool,
}

impl SseScanner {
    fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8])) {
        for &b in chunk {
            if b != b'\n' {
                if self.line.len() < MAX_ANSWER {
                    self.line.push(b);
                } else {
                    self.overflow = true;
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                if !self.overflow && !self.data.is_empty() {
                    on_event(&self.data);
                }
                self.data.clear();
                self.overflow = false;
            } else if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.data.len() + rest.len() + 1 > MAX_ANSWER {
                    self.overflow = true;
                } else {
                    if !self.data.is_empty() {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(rest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_found_across_chunks() {
        let mut s = SseScanner::default();
        let mut seen = Vec::new();
        let stream =
            b"event: message\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: {\"b\"\ndata: :2}\n\n";
        for chunk in stream.chunks(3) {
            s.push(chunk, |e| {
                seen.push(String::from_utf8_lossy(e).into_owned())
            });
        }
        assert_eq!(seen, ["{\"a\":1}", "{\"b\"\n:2}"]);
    }
}
