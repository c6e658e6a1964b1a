//! The protocol revisions the fixture speaks. rmcp's server answers both lifecycles (the
//! `initialize` handshake and 2026-07-28's `server/discover` with per-request `_meta`); pinned
//! to one revision it narrows what it negotiates, but a server pinned before 2026-07-28 still
//! knows `server/discover` and answers it -32022 (unsupported version), which rmcp's own
//! clients do not fall back from. Here such a fixture behaves like a server written before the
//! method existed: -32601 Method not found (over HTTP with status 404, as rmcp maps that code),
//! the answer the 2026-07-28 backward-compatibility rules and rmcp's `Auto` client read as
//! "legacy, use `initialize`". Over stdio [`FixtureService`] wraps the handler; rmcp's
//! Streamable HTTP service only takes a `ServerHandler`, so over HTTP [`refuse_discover`] sits
//! in front of it.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    ClientNotification, ClientRequest, DiscoverRequestMethod, ProtocolVersion, ServerConfig,
    ServerResult,
};
use rmcp::service::{NotificationContext, RequestContext, Service};
use rmcp::{ErrorData, RoleServer};
use serde_json::{json, Value};

use crate::server::FixtureServer;
use crate::switches::{Clock, Lifecycle, Switches};

/// What a server that predates `server/discover` answers it.
fn refusal() -> ErrorData {
    ErrorData::method_not_found::<DiscoverRequestMethod>()
}

/// rmcp's `legacy_session_mode` for Streamable HTTP: off for a 2026-07-28-only server, which
/// has no sessions (SEP-2567), so GET and DELETE are 405 and `initialize` is answered
/// statelessly with its refusal.
pub fn legacy_sessions(switches: &Switches) -> bool {
    switches.lifecycle() != Lifecycle::DiscoverOnly
}

/// The fixture as rmcp serves it over a byte pipe: [`FixtureServer`] behind the lifecycle its
/// switches pin.
#[derive(Debug, Clone)]
pub struct FixtureService {
    server: FixtureServer,
    lifecycle: Lifecycle,
}

impl FixtureService {
    pub fn new(clock: Arc<Clock>) -> FixtureService {
        let lifecycle = clock.switches.lifecycle();
        FixtureService {
            server: FixtureServer::new(clock),
            lifecycle,
        }
    }
}

impl Service<RoleServer> for FixtureService {
    async fn handle_request(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        if self.lifecycle == Lifecycle::InitializeOnly
            && matches!(request, ClientRequest::DiscoverRequest(_))
        {
            // Gated like every answer, so `--hang-on server/discover` gives a legacy server
            // that ignores the unknown method instead of refusing it.
            self.server.clock().gate("server/discover").await;
            return Err(refusal());
        }
        self.server.handle_request(request, context).await
    }

    async fn handle_notification(
        &self,
        notification: ClientNotification,
        context: NotificationContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.server.handle_notification(notification, context).await
    }

    fn get_info(&self) -> ServerConfig {
        Service::<RoleServer>::get_info(&self.server)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Service::<RoleServer>::supported_protocol_versions(&self.server)
    }
}

/// The HTTP state of [`refuse_discover`].
#[derive(Debug, Clone)]
pub(crate) struct DiscoverGate {
    pub clock: Arc<Clock>,
    /// rmcp's own request body limit, so the buffered body is bounded the same way.
    pub max_body: usize,
}

/// Axum middleware for an [`Lifecycle::InitializeOnly`] fixture: a POSTed `server/discover`
/// request is answered 404 with a -32601 error; everything else goes on to rmcp unchanged.
pub(crate) async fn refuse_discover(
    State(gate): State<DiscoverGate>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, gate.max_body).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let message: Option<Value> = serde_json::from_slice(&bytes).ok();
    if let Some(msg) = message.filter(|m| m["method"] == "server/discover") {
        gate.clock.gate("server/discover").await;
        let error = json!({"jsonrpc": "2.0", "id": msg["id"], "error": refusal()});
        return (StatusCode::NOT_FOUND, axum::Json(error)).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf};
    use tokio::io::{DuplexStream, Error};

    /// A raw JSON-RPC line client of the fixture served over an in-memory pipe, so the tests
    /// see exactly what goes over the wire.
    struct Pipe {
        lines: Lines<BufReader<ReadHalf<DuplexStream>>>,
        write: WriteHalf<DuplexStream>,
    }

    impl Pipe {
        fn serve(protocol_version: Option<&str>) -> Pipe {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (sr, sw) = tokio::io::split(server);
            let switches = Switches {
                protocol_version: protocol_version.map(str::to_owned),
                ..Switches::default()
            };
            tokio::spawn(crate::serve_io(sr, sw, switches));
            let (cr, cw) = tokio::io::split(client);
            Pipe {
                lines: BufReader::new(cr).lines(),
                write: cw,
            }
        }

        async fn call(&mut self, id: u64, method: &str, params: Value) -> Result<Value, Error> {
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            self.write.write_all(format!("{msg}\n").as_bytes()).await?;
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await?
                    .ok_or(Error::other("closed"))?;
                let v: Value = serde_json::from_str(&line).map_err(Error::other)?;
                if v["id"] == json!(id) {
                    return Ok(v);
                }
            }
        }
    }

    /// `server/discover` as rmcp's client sends it for 2026-07-28.
    fn discover_params() -> Value {
        json!({"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}
        }})
    }

    fn initialize_params() -> Value {
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "t", "version": "0"}})
    }

    #[tokio::test]
    async fn a_2025_11_25_only_server_refuses_discover_as_unknown_and_initializes() {
        let mut p = Pipe::serve(Some("2025-11-25"));
        let d = p
            .call(1, "server/discover", discover_params())
            .await
            .unwrap();
        assert_eq!(d["error"]["code"], -32601, "{d}");
        // The refusal leaves the connection usable for the handshake, as clients expect.
        let i = p.call(2, "initialize", initialize_params()).await.unwrap();
        assert_eq!(i["result"]["protocolVersion"], "2025-11-25", "{i}");
    }

    #[tokio::test]
    async fn a_2026_07_28_only_server_discovers_and_refuses_initialize() {
        let mut p = Pipe::serve(Some("2026-07-28"));
        let d = p
            .call(1, "server/discover", discover_params())
            .await
            .unwrap();
        assert_eq!(
            d["result"]["supportedVersions"],
            json!(["2026-07-28"]),
            "{d}"
        );
        let i = p.call(2, "initialize", initialize_params()).await.unwrap();
        assert_eq!(i["error"]["code"], -32022, "{i}");
        assert_eq!(
            i["error"]["data"]["supported"],
            json!(["2026-07-28"]),
            "{i}"
        );
    }

    #[tokio::test]
    async fn the_default_server_speaks_both_lifecycles() {
        let mut p = Pipe::serve(None);
        let d = p
            .call(1, "server/discover", discover_params())
            .await
            .unwrap();
        let versions = &d["result"]["supportedVersions"];
        assert!(
            versions.as_array().is_some_and(|v| v.len() == 5
                && v.contains(&json!("2025-11-25"))
                && v.contains(&json!("2026-07-28"))),
            "{d}"
        );
        let i = p.call(2, "initialize", initialize_params()).await.unwrap();
        assert_eq!(i["result"]["protocolVersion"], "2025-11-25", "{i}");
    }

    /// One HTTP/1.1 exchange with a fixture served on loopback: `(status, body)`.
    async fn http(switches: Switches, method: &str, body: Option<Value>) -> (u16, String) {
        let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let server = crate::HttpServer::bind(any_port, switches).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        // As rmcp's client: on everything but `initialize` the version header and, at
        // 2026-07-28, the method header (SEP-2243).
        let version = match body.as_ref().map(|b| &b["method"]) {
            Some(Value::String(m)) if m == "initialize" => String::new(),
            Some(Value::String(m)) => {
                format!("MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: {m}\r\n")
            }
            _ => "MCP-Protocol-Version: 2026-07-28\r\n".to_owned(),
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Accept: application/json, text/event-stream\r\n\
             Content-Type: application/json\r\n{version}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
            .await
            .unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, response)
    }

    fn request(method: &str, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
    }

    fn only(revision: &str) -> Switches {
        Switches {
            protocol_version: Some(revision.into()),
            ..Switches::default()
        }
    }

    #[tokio::test]
    async fn over_http_a_2025_11_25_only_server_answers_discover_404_method_not_found() {
        let discover = request("server/discover", discover_params());
        let (status, body) = http(only("2025-11-25"), "POST", Some(discover)).await;
        assert_eq!(status, 404, "{body}");
        assert!(
            body.contains(r#""code":-32601"#) && body.contains(r#""id":7"#),
            "{body}"
        );
        // The default server answers it.
        let discover = request("server/discover", discover_params());
        let (status, body) = http(Switches::default(), "POST", Some(discover)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("supportedVersions"), "{body}");
    }

    #[tokio::test]
    async fn over_http_a_2026_07_28_only_server_has_no_sessions_and_refuses_initialize() {
        let init = request("initialize", initialize_params());
        let (status, body) = http(only("2026-07-28"), "POST", Some(init)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""code":-32022"#), "{body}");
        assert!(
            !body.to_ascii_lowercase().contains("mcp-session-id"),
            "{body}"
        );
        let (status, body) = http(only("2026-07-28"), "GET", None).await;
        assert_eq!(status, 405, "{body}");
        // The default server keeps legacy sessions.
        let init = request("initialize", initialize_params());
        let (_, body) = http(Switches::default(), "POST", Some(init)).await;
        assert!(
            body.to_ascii_lowercase().contains("mcp-session-id"),
            "{body}"
        );
    }
}
