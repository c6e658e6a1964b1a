//! The agent's local HTTP endpoint: `/metrics` for Prometheus and `/healthz` for supervisors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use mcpwatch_common::exposition;

use crate::metrics::AgentMetrics;

/// Whether the agent is up and running, as reported by `/healthz`. Starts not running so a
/// supervisor sees 503 until startup has finished.
#[derive(Debug, Default)]
pub struct Health {
    running: AtomicBool,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<AgentMetrics>,
    health: Arc<Health>,
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish. Binding is the caller's job (default 127.0.0.1:9464).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn router(metrics: Arc<AgentMetrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(AppState { metrics, health })
}

/// OpenMetrics when the client asks for it (Prometheus does), the Prometheus text format
/// otherwise (curl, `promtool check metrics`, which does not parse OpenMetrics counters).
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let (content_type, body) = exposition::negotiate(accept, state.metrics.encode());
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.health.is_running() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not running").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A minimal HTTP/1.1 client: one request, `Connection: close`, read to EOF.
    async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("response within 10 s")
            .expect("read");
        let raw = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("header terminator");
        let mut lines = head.lines();
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    struct Server {
        addr: SocketAddr,
        metrics: Arc<AgentMetrics>,
        health: Arc<Health>,
        token: CancellationToken,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Arc::new(AgentMetrics::new());
        let health = Arc::new(Health::new());
        let token = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            metrics.clone(),
            health.clone(),
            token.clone(),
        ));
        Server {
            addr,
            metrics,
            health,
            token,
            task,
        }
    }

    #[tokio::test]
    async fn http_serves_metrics_healthz_and_404() {
        let Server {
            addr,
            metrics,
            health,
            token,
            task,
        } = start().await;
        metrics.reconnects_total.inc();

        let r = get(addr, "/metrics", None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(PROMETHEUS_TEXT_CONTENT_TYPE));
        assert!(
            r.body.contains("\nmcpwatch_agent_reconnects_total 1\n"),
            "{}",
            r.body
        );

        let om = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let r = get(addr, "/metrics", Some(om)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(OPENMETRICS_CONTENT_TYPE));
        assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
        assert!(r
            .body
            .contains("# TYPE mcpwatch_agent_reconnects counter\n"));

        let r = get(addr, "/healthz", None).await;
        assert_eq!((r.status, r.body.as_str()), (503, "not running"));
        health.set_running(true);
        let r = get(addr, "/healthz", None).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));

        assert_eq!(get(addr, "/nope", None).await.status, 404);

        token.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops after cancel")
            .expect("server task");
        assert!(result.is_ok(), "{result:?}");
    }

    /// `promtool check metrics` is the contract in DESIGN.md; a machine without it must fail
    /// this test, not skip it.
    #[tokio::test]
    async fn http_metrics_pass_promtool_check() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let Server {
            addr,
            metrics,
            token,
            task,
            ..
        } = start().await;
        let mut sampler = crate::sampler::Sampler::new(None);
        metrics.set_host_samples(&sampler.sample());
        metrics.sample_duration_seconds.observe(0.0005);
        metrics.record_ack();
        let r = get(addr, "/metrics", None).await;
        assert_eq!(r.status, 200);
        token.cancel();
        let _ = task.await;

        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run `promtool` ({e}): install it by running the test command from \
                 README.md (it installs the Debian `prometheus` package), or \
                 `apt-get install -y prometheus`"
            ),
        };
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(r.body.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("promtool output");
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}\n--- exposition ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            r.body
        );
    }
}
