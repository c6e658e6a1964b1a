//! Tests of the session mux against a fake upstream server task that speaks JSON-RPC lines,
//! on tokio's paused clock (timeouts without waiting, no timing luck). `routing` covers ids,
//! initialize and notifications, `discover` the upstream's lifecycle, `server_requests` the
//! server→client requests, `lifecycle` cancellation, timeouts, limits, malformed input and
//! the end of the upstream.

mod discover;
mod fake_server;
mod invariants;
mod lifecycle;
mod routing;
mod server_requests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    ClientMessage, ClientSession, Lifecycle, MuxConfig, MuxHandle, SessionMux, Upstream,
    UpstreamLifecycle,
};
use crate::gateway::call_event::{CallEvent, CallOutcome, CallSink};
use fake_server::{FakeOptions, FakeServer, ServerLog};

/// Collects every call event.
#[derive(Default)]
pub(super) struct RecordingSink(Mutex<Vec<CallEvent>>);

impl CallSink for RecordingSink {
    fn record(&self, event: CallEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl RecordingSink {
    pub fn events(&self) -> Vec<CallEvent> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str, outcome: CallOutcome) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|event| event.method == method && event.outcome == outcome)
            .count()
    }
}

pub(super) struct Harness {
    pub mux: MuxHandle,
    /// Lines as if the server wrote them.
    pub inject: mpsc::Sender<String>,
    pub server: Arc<Mutex<ServerLog>>,
    pub sink: Arc<RecordingSink>,
}

impl Harness {
    pub fn start(config: MuxConfig, options: FakeOptions) -> Harness {
        Harness::start_with(config, options, &UpstreamLifecycle::default())
    }

    /// As [`Harness::start`], sharing `lifecycle` (as the muxes of one server do).
    pub fn start_with(
        config: MuxConfig,
        options: FakeOptions,
        lifecycle: &UpstreamLifecycle,
    ) -> Harness {
        let (to_server, server_input) = mpsc::channel(64);
        let (inject, from_server) = mpsc::channel(64);
        let server = FakeServer::spawn(options, server_input, inject.clone());
        let sink = Arc::new(RecordingSink::default());
        let upstream = Upstream {
            from_server,
            to_server,
        };
        let dyn_sink: Arc<dyn CallSink> = sink.clone();
        let shutdown = CancellationToken::new();
        let lifecycle = lifecycle.clone();
        let mux = SessionMux::spawn(config, upstream, dyn_sink, lifecycle, shutdown).unwrap();
        Harness {
            mux,
            inject,
            server,
            sink,
        }
    }

    pub fn default_start() -> Harness {
        Harness::start(MuxConfig::new("files"), FakeOptions::default())
    }

    pub async fn session(&self) -> ClientSession {
        self.mux.open_session().await.unwrap()
    }

    /// A session that has been through initialize.
    pub async fn initialized(&self) -> ClientSession {
        let mut session = self.session().await;
        session.send(initialize(json!(0))).await.unwrap();
        let answer = next(&mut session).await;
        assert!(
            json_of(&answer)["result"]["serverInfo"].is_object(),
            "{answer:?}"
        );
        session
            .send(notification("notifications/initialized", json!({})))
            .await
            .unwrap();
        session
    }

    pub fn log<T>(&self, read: impl FnOnce(&ServerLog) -> T) -> T {
        read(&self.server.lock().unwrap())
    }
}

pub(super) fn request(id: Value, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

pub(super) fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

pub(super) fn initialize(id: Value) -> String {
    let params = json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {"sampling": {}},
        "clientInfo": {"name": "test", "version": "1"},
    });
    request(id, "initialize", params)
}

/// `tools/call` of `tool` with `{"text": text}`.
pub(super) fn call(id: Value, tool: &str, text: &str) -> String {
    let params = json!({"name": tool, "arguments": {"text": text}});
    request(id, "tools/call", params)
}

pub(super) fn json_of(message: &ClientMessage) -> Value {
    serde_json::from_str(&message.line).unwrap()
}

/// The session's next message; fails the test after a minute of (paused) time.
pub(super) async fn next(session: &mut ClientSession) -> ClientMessage {
    tokio::time::timeout(Duration::from_secs(60), session.recv())
        .await
        .expect("a message within a minute")
        .expect("the session is open")
}

/// Whether nothing arrives for the session within a second of (paused) time.
pub(super) async fn quiet(session: &mut ClientSession) -> bool {
    tokio::time::timeout(Duration::from_secs(1), session.recv())
        .await
        .is_err()
}

/// Polls `check` until it holds; fails the test after a minute of (paused) time.
pub(super) async fn eventually(mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
