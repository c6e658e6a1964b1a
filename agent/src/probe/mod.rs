//! MCP protocol probe: one client session per run (`initialize` → `tools/list` → `ping`) against
//! a Streamable HTTP endpoint or, for a stdio server, through the gateway's session on the
//! supervised container itself, with per-stage latency, classified failures and a
//! fingerprint of every tool. Never panics.

mod baseline;
pub mod scheduler;
mod session;
pub mod tools;

use std::fmt;
use std::time::{Duration, Instant};

pub use bollard::Docker;
use mcpwatch_common::secret::Secret;
pub use tools::{ToolDrift, ToolFingerprint, ToolSurface};

use crate::gateway::{local_client, Lifecycle, MuxHandle};
use crate::http_client;
use session::Handshake;

/// What to probe.
#[derive(Clone)]
pub enum ProbeTarget {
    /// A Streamable HTTP endpoint, e.g. `http://127.0.0.1:8080/mcp`, with the headers the
    /// server needs (an external server's `Authorization`).
    Http {
        url: String,
        headers: Vec<(String, Secret)>,
    },
    /// A stdio server, through a client session on the gateway's mux attached to its
    /// running container: the probe tests the instance clients use. `None` while the
    /// gateway is not attached (a transport failure at the connect stage).
    Gateway { mux: Option<MuxHandle> },
}

impl fmt::Debug for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Header values may be secrets: only the names are shown.
            ProbeTarget::Http { url, headers } => f
                .debug_struct("Http")
                .field("url", url)
                .field(
                    "headers",
                    &headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                )
                .finish(),
            ProbeTarget::Gateway { mux } => f
                .debug_struct("Gateway")
                .field("attached", &mux.is_some())
                .finish(),
        }
    }
}

/// Where a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeStage {
    /// Stdio only: opening a session on the gateway's attach to the container.
    Connect,
    Initialize,
    ToolsList,
    Ping,
}

impl ProbeStage {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeStage::Connect => "connect",
            ProbeStage::Initialize => "initialize",
            ProbeStage::ToolsList => "tools_list",
            ProbeStage::Ping => "ping",
        }
    }
}

/// How a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Connection refused or dropped, container could not start, server exited.
    Transport,
    /// No answer within the timeout (a hung server).
    Timeout,
    /// The server answered with a JSON-RPC error or a malformed response.
    JsonRpc,
    /// No protocol version both sides support.
    ProtocolVersion,
    /// The gateway refused the probe's request because clients fill its in-flight limits:
    /// the server is busy, not broken, so this never counts towards unhealthy.
    Saturated,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transport => "transport",
            FailureKind::Timeout => "timeout",
            FailureKind::JsonRpc => "jsonrpc",
            FailureKind::ProtocolVersion => "protocol_version",
            FailureKind::Saturated => "saturated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    pub stage: ProbeStage,
    pub kind: FailureKind,
    pub message: String,
}

/// Latency of each stage that completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageLatency {
    /// Stdio only: opening the session on the gateway's attach.
    pub connect: Option<Duration>,
    pub initialize: Option<Duration>,
    /// All pages together.
    pub tools_list: Option<Duration>,
    pub ping: Option<Duration>,
}

/// The outcome of one probe run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// True exactly when `failure` is `None`.
    pub ok: bool,
    pub stage_latency: StageLatency,
    pub failure: Option<ProbeFailure>,
    /// The version the server negotiated, once `initialize` answered.
    pub protocol_version: Option<String>,
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    /// In the server's order; empty unless `tools/list` completed.
    pub tools: Vec<ToolFingerprint>,
}

impl ProbeReport {
    /// The tool surface seen, for drift detection against the approved one.
    pub fn surface(&self) -> ToolSurface {
        ToolSurface::new(&self.tools)
    }
}

/// One probe session on the gateway's mux.
async fn probe_gateway(
    mux: Option<&MuxHandle>,
    handshake: Handshake,
    timeout: Duration,
    report: &mut ProbeReport,
) {
    let started = Instant::now();
    let pipe = match mux {
        Some(mux) => local_client::open_pipe(mux)
            .await
            .map_err(|e| e.to_string()),
        None => Err("the gateway is not attached to the server's container".to_owned()),
    };
    match pipe {
        Ok(pipe) => {
            report.stage_latency.connect = Some(started.elapsed());
            session::run_with(pipe, handshake, timeout, report).await;
        }
        Err(message) => {
            report.failure = Some(ProbeFailure {
                stage: ProbeStage::Connect,
                kind: FailureKind::Transport,
                message,
            });
        }
    }
}

/// Probes `target` once. Each stage gets `timeout`, so a run takes at most three timeouts
/// plus the session close (≤ 1 s).
pub async fn run_once(target: &ProbeTarget, timeout: Duration) -> ProbeReport {
    let mut report = ProbeReport::default();
    match target {
        ProbeTarget::Http { url, headers } => match http_client::get(http_client::Purpose::Probe) {
            Ok(client) => {
                let mut config =
                    rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
                        url.as_str(),
                    );
                for (name, value) in headers {
                    if let (Ok(n), Ok(mut v)) = (
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                        reqwest::header::HeaderValue::from_str(value.expose()),
                    ) {
                        v.set_sensitive(true);
                        config.custom_headers.insert(n, v);
                    }
                }
                let transport =
                    rmcp::transport::StreamableHttpClientTransport::with_client(client, config);
                session::run(transport, timeout, &mut report).await;
            }
            Err(message) => {
                report.failure = Some(ProbeFailure {
                    stage: ProbeStage::Initialize,
                    kind: FailureKind::Transport,
                    message,
                });
            }
        },
        ProbeTarget::Gateway { mux } => {
            // The gateway's session is shared with clients: `initialize` keeps the server in
            // the revision they speak; only a server that refuses it (the gateway answers
            // for one it knows to be discover-only) is probed with `server/discover`.
            let discover_only = mux
                .as_ref()
                .is_some_and(|mux| matches!(mux.lifecycle(), Lifecycle::DiscoverOnly(_)));
            if !discover_only {
                probe_gateway(mux.as_ref(), Handshake::Initialize, timeout, &mut report).await;
            }
            let refused = report.failure.as_ref().is_some_and(|f| {
                f.stage == ProbeStage::Initialize && f.kind == FailureKind::ProtocolVersion
            });
            if discover_only || refused {
                report = ProbeReport::default();
                probe_gateway(mux.as_ref(), Handshake::Discover, timeout, &mut report).await;
            }
        }
    }
    report.ok = report.failure.is_none();
    if let Some(f) = &report.failure {
        tracing::debug!(probe = ?target, stage = f.stage.as_str(), kind = f.kind.as_str(),
            message = %f.message, "probe failed");
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpwatch_mcp_fixture::{HttpServer, Switches, ToolsVariant};
    use std::net::SocketAddr;
    use std::time::Instant;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const TIMEOUT: Duration = Duration::from_secs(3);
    /// Allowed overrun of a timed-out stage: scheduling on a busy 2-core machine.
    const SLACK: Duration = Duration::from_millis(1500);

    async fn fixture(switches: Switches) -> HttpServer {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        HttpServer::bind(any_port, switches).await.unwrap()
    }

    async fn probe(server: &HttpServer, timeout: Duration) -> ProbeReport {
        let target = ProbeTarget::Http {
            url: server.url(),
            headers: vec![],
        };
        run_once(&target, timeout).await
    }

    fn names(r: &ProbeReport) -> Vec<&str> {
        r.tools.iter().map(|t| t.name.as_str()).collect()
    }

    fn failure(r: &ProbeReport) -> (ProbeStage, FailureKind) {
        let f = r.failure.as_ref().expect("probe should have failed");
        (f.stage, f.kind)
    }

    #[tokio::test]
    async fn http_probe_ok_has_three_tools_and_latencies() {
        let server = fixture(Switches::default()).await;
        let r = probe(&server, TIMEOUT).await;
        assert!(r.ok, "{:?}", r.failure);
        assert_eq!(names(&r), ["echo", "add", "time"]);
        let l = r.stage_latency;
        assert!(l.initialize.is_some() && l.tools_list.is_some());
        // The default fixture speaks every revision: the probe picks 2026-07-28, which has
        // no ping (skipped, not failed).
        assert_eq!(l.ping, None);
        assert_eq!(l.connect, None);
        assert_eq!(r.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(r.server_name.as_deref(), Some("mcpwatch-mcp-fixture"));
        assert!(r.server_version.is_some());
    }

    #[tokio::test]
    async fn slow_server_latencies_include_the_delay() {
        let slow = Duration::from_millis(120);
        let server = fixture(Switches {
            slow,
            ..Switches::default()
        })
        .await;
        let r = probe(&server, TIMEOUT).await;
        assert!(r.ok, "{:?}", r.failure);
        let l = r.stage_latency;
        for stage in [l.initialize, l.tools_list] {
            assert!(stage.unwrap() >= slow, "{l:?}");
        }
    }

    #[tokio::test]
    async fn every_page_of_tools_is_listed() {
        let server = fixture(Switches {
            page_size: Some(1),
            ..Switches::default()
        })
        .await;
        let r = probe(&server, TIMEOUT).await;
        assert!(r.ok, "{:?}", r.failure);
        assert_eq!(names(&r), ["echo", "add", "time"]);
    }

    /// Runs a probe against a server that never answers `stage`'s method and checks the
    /// failure lands on that stage, as a timeout, within timeout + slack.
    async fn hang_is_a_timeout_at(switches: Switches, stage: ProbeStage) -> ProbeReport {
        let server = fixture(switches).await;
        let timeout = Duration::from_millis(400);
        let started = Instant::now();
        let r = probe(&server, timeout).await;
        let took = started.elapsed();
        assert_eq!(failure(&r), (stage, FailureKind::Timeout), "{r:?}");
        assert!(!r.ok);
        assert!(took >= timeout, "{took:?}");
        // The stages before the hung one ran, each well within the timeout.
        assert!(took < timeout * 2 + SLACK, "{took:?}");
        r
    }

    #[tokio::test]
    async fn hang_after_is_a_timeout_at_initialize() {
        let r = hang_is_a_timeout_at(
            Switches {
                hang_after: Some(Duration::ZERO),
                ..Switches::default()
            },
            ProbeStage::Initialize,
        )
        .await;
        assert_eq!(r.stage_latency, StageLatency::default());
    }

    #[tokio::test]
    async fn hang_on_tools_list_is_a_timeout_at_tools_list() {
        let r = hang_is_a_timeout_at(
            Switches {
                hang_on: Some("tools/list".into()),
                ..Switches::default()
            },
            ProbeStage::ToolsList,
        )
        .await;
        assert!(r.stage_latency.initialize.is_some());
        assert!(r.tools.is_empty());
    }

    #[tokio::test]
    async fn hang_on_ping_is_a_timeout_at_ping_with_tools_known() {
        let r = hang_is_a_timeout_at(
            Switches {
                hang_on: Some("ping".into()),
                // Ping exists only before 2026-07-28.
                protocol_version: Some("2025-11-25".into()),
                ..Switches::default()
            },
            ProbeStage::Ping,
        )
        .await;
        assert_eq!(r.tools.len(), 3);
        assert_eq!(r.stage_latency.ping, None);
    }

    #[tokio::test]
    async fn refused_connection_is_a_transport_failure() {
        // A port that was just free and has no listener now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = ProbeTarget::Http {
            url: format!("http://{addr}/mcp"),
            headers: vec![],
        };
        let started = Instant::now();
        let r = run_once(&target, TIMEOUT).await;
        assert_eq!(
            failure(&r),
            (ProbeStage::Initialize, FailureKind::Transport),
            "{r:?}"
        );
        // Refusal is immediate; it must not be reported only when the timeout fires.
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn changed_tools_diff_lists_added_removed_changed() {
        let a = fixture(Switches::default()).await;
        let b = fixture(Switches {
            tools_variant: ToolsVariant::B,
            ..Switches::default()
        })
        .await;
        let (ra, rb) = (probe(&a, TIMEOUT).await, probe(&b, TIMEOUT).await);
        assert!(ra.ok && rb.ok);
        let drift = ra.surface().diff(&rb.surface());
        assert_eq!(drift.added, ["sleep"]);
        assert_eq!(drift.removed, ["time"]);
        assert_eq!(drift.changed, ["echo"]);
        // The same surface probed twice is no drift.
        let again = probe(&a, TIMEOUT).await;
        assert!(ra.surface().diff(&again.surface()).is_empty());
        assert_eq!(ra.tools, again.tools);
    }

    #[tokio::test]
    async fn version_rejected_by_the_server_is_a_protocol_version_failure() {
        // Only a post-handshake version: the server cannot answer `initialize` at all.
        let server = fixture(Switches {
            protocol_version: Some("2099-01-01".into()),
            ..Switches::default()
        })
        .await;
        let r = probe(&server, TIMEOUT).await;
        assert_eq!(
            failure(&r),
            (ProbeStage::Initialize, FailureKind::ProtocolVersion),
            "{r:?}"
        );
    }

    /// Serves the fixture on one end of an in-memory pipe and probes it over the other, as the
    /// stdio probe does over a container's attached stdin/stdout.
    async fn probe_over_pipe(switches: Switches) -> ProbeReport {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (sr, sw) = tokio::io::split(server);
        let served = tokio::spawn(mcpwatch_mcp_fixture::serve_io(sr, sw, switches));
        let (cr, cw) = tokio::io::split(client);
        let mut r = ProbeReport::default();
        session::run((cr, cw), TIMEOUT, &mut r).await;
        // Closing the session closes the pipe, which ends the server.
        let _ = tokio::time::timeout(TIMEOUT, served)
            .await
            .expect("server still running after the probe closed");
        r
    }

    #[tokio::test]
    async fn unknown_version_answered_by_the_server_is_a_protocol_version_failure() {
        // Over stdio rmcp accepts any answered version and the probe's own check must catch
        // it. (Over HTTP the client transport already fails on the next request's
        // MCP-Protocol-Version header, which surfaces as a transport failure.)
        let r = probe_over_pipe(Switches {
            protocol_version: Some("2020-01-01".into()),
            ..Switches::default()
        })
        .await;
        assert_eq!(
            failure(&r),
            (ProbeStage::Initialize, FailureKind::ProtocolVersion),
            "{r:?}"
        );
        assert_eq!(r.protocol_version.as_deref(), Some("2020-01-01"));
        assert_eq!(r.stage_latency.tools_list, None);
    }

    #[tokio::test]
    async fn stdio_session_over_a_pipe() {
        let r = probe_over_pipe(Switches::default()).await;
        assert_eq!(r.failure, None);
        assert_eq!(names(&r), ["echo", "add", "time"]);
        assert_eq!(r.protocol_version.as_deref(), Some("2026-07-28"));
    }

    #[tokio::test]
    async fn server_exit_is_a_transport_failure() {
        let (client, server) = tokio::io::duplex(1024);
        // The server goes away before answering anything.
        drop(server);
        let (cr, cw) = tokio::io::split(client);
        let mut r = ProbeReport::default();
        session::run((cr, cw), TIMEOUT, &mut r).await;
        let f = r.failure.unwrap();
        assert_eq!(
            (f.stage, f.kind),
            (ProbeStage::Initialize, FailureKind::Transport)
        );
    }

    /// A scripted stdio server: a proper `initialize` answer, then a JSON-RPC error for
    /// `tools/list`.
    #[tokio::test]
    async fn json_rpc_error_response_is_classified_jsonrpc() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let script = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let msg: serde_json::Value = serde_json::from_str(&line).unwrap();
                let Some(id) = msg.get("id").cloned() else {
                    continue; // notifications
                };
                let reply = match msg["method"].as_str() {
                    Some("initialize") => serde_json::json!({"jsonrpc": "2.0", "id": id,
                        "result": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                   "serverInfo": {"name": "scripted", "version": "0"}}}),
                    _ => serde_json::json!({"jsonrpc": "2.0", "id": id,
                        "error": {"code": -32603, "message": "tools are on fire"}}),
                };
                let mut out = reply.to_string();
                out.push('\n');
                if w.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let (cr, cw) = tokio::io::split(client);
        let mut r = ProbeReport::default();
        session::run((cr, cw), TIMEOUT, &mut r).await;
        let f = r.failure.unwrap();
        assert_eq!(
            (f.stage, f.kind),
            (ProbeStage::ToolsList, FailureKind::JsonRpc)
        );
        assert!(f.message.contains("tools are on fire"), "{}", f.message);
        assert_eq!(r.server_name.as_deref(), Some("scripted"));
        script.abort();
    }
}
