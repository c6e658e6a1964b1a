//! The session multiplexer: many client sessions share one upstream JSON-RPC stream (the
//! stdin/stdout of a supervised stdio server), transport-independent.
//!
//! **Shape.** One task ([`SessionMux::spawn`]) owns every table; it takes upstream lines from
//! a bounded channel and writes upstream lines to another (the stdio attach plugs in there),
//! and each client session ([`ClientSession`], from [`MuxHandle::open_session`]) sends lines
//! in and receives [`ClientMessage`]s out (the Streamable HTTP front plugs in there). Lines
//! carry no trailing newline. The mux lives as long as the upstream stream: when it ends (the
//! server's output closes, the transport drops its reading side, or shutdown), every
//! in-flight request fails with -32000 and every session's receiver ends; a re-attach starts
//! a new mux and clients reconnect.
//!
//! **Ids.** Every request a client sends goes upstream under a fresh integer id from one
//! counter, so ids from different clients never meet upstream, whatever their type or value;
//! the answer goes back to the session that asked, under the id it used. An answer to an id
//! that is no longer waited for (cancelled, timed out, answered twice) is dropped and counted
//! as late; one to an id never issued is counted as unknown. A client's
//! `notifications/cancelled` is rewritten to the upstream id; one naming no request of its
//! own session is dropped (a client can never cancel another client's request). A request
//! without an answer after `request_timeout` gets -32001 and is cancelled upstream. An id
//! written `1.0` comes back as `1` (rmcp reads it as the integer).
//!
//! **Lifecycle.** A mux on a server whose lifecycle is not known yet first sends the
//! gateway's own `server/discover`, so a server that speaks only 2026-07-28 never sees an
//! `initialize` (rmcp's stdio server ends its session on one); `lifecycle.rs` has the rules.
//!
//! **Initialize.** The first client `initialize` goes upstream (after the discover, if one is
//! out; never to a discover-only server, where the gateway answers -32022 itself); initializes arriving while it
//! is in flight wait for it; its result is cached and answers every later `initialize`
//! (under each client's id), and the gateway then sends `notifications/initialized` upstream
//! itself, once; clients' own `notifications/initialized` are dropped. The upstream therefore
//! sees the first client's protocol version and capabilities. An error or timeout is given
//! to every waiter and not cached. A cached answer takes no in-flight slot, so no limit
//! refuses it. Requests are not held back until initialize: the server
//! answers what it answers (the 2026-07-28 revision has no initialize at all).
//!
//! **Server → client.** `notifications/progress` goes to the session whose request carried
//! the token (tokens are rewritten to the upstream id, so clients' tokens cannot collide).
//! `notifications/cancelled` for a server request goes to the session holding that request.
//! Every other notification (`*/list_changed`, `resources/updated`, `message`, unknown ones)
//! goes to all sessions. A server `ping` is answered by the gateway (`{}`). Other server
//! requests (sampling, elicitation, roots/list) go to one session, the one holding the newest
//! in-flight `tools/call`; failing that the newest in-flight request of any method; failing
//! that the session that last sent a request; failing that the oldest session; with no
//! session at all the server gets an error. stdio carries no link between a server request
//! and the client request that caused it, so with several sessions busy this is a guess: a
//! server that depends on it should run with `sessions = "per_client"`. The server's request
//! id goes to the client unchanged and the client's answer goes back unchanged, accepted
//! only from the session it was sent to. A server request still open when its session ends
//! is answered with an error, and one without an answer after `request_timeout` is answered
//! with -32001 (its client gets `notifications/cancelled`).
//!
//! **Session end.** Each in-flight request of the session gets `notifications/cancelled`
//! upstream (initialize excepted: MCP forbids cancelling it) and its late answer is dropped.
//!
//! **Bounds.** Sessions (`max_sessions`), in-flight requests per session and in total (beyond:
//! a -32030 error answer), open server requests (`max_in_flight`), the queue towards each
//! client (`session_queue`: a client that lets it fill is disconnected, except that progress
//! notifications are dropped instead) and towards the upstream (`upstream_queue`: client input
//! waits). Client input waiting never blocks upstream input, so a server blocked writing its
//! stdout cannot deadlock the mux. Every dropped or refused message is counted in
//! [`MuxStats`]; lines are never logged (they hold arguments and results).
//!
//! Files: `mod.rs` (the handle and what callers see), `actor.rs` (the task), `state.rs` (the
//! tables and the operations on them), `lifecycle.rs` (initialize or discover-only),
//! `server_requests.rs` (the open server requests and their deadlines), `from_client.rs` and
//! `from_upstream.rs` (one message each way), `stats.rs`; `tests/` (a fake upstream server
//! task on a paused clock, and a property test of random interleavings against the tables'
//! invariants).

mod actor;
mod from_client;
mod from_upstream;
mod lifecycle;
mod server_requests;
mod state;
mod stats;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

pub use actor::{SessionMux, Upstream};
pub use lifecycle::{Lifecycle, UpstreamLifecycle};
pub use stats::{MuxStats, MuxStatsSnapshot};

use super::jsonrpc::RequestId;

/// Limits and identity of one mux, from `[gateway]` (`gateway::config`).
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// The `[[mcp_server]]` name, carried in every call event.
    pub server: Arc<str>,
    /// Client sessions open at once. Default 64.
    pub max_sessions: usize,
    /// Requests in flight per session (initialize waits included). Default 64.
    pub max_in_flight_per_session: usize,
    /// Requests in flight over all sessions, and open server→client requests. Default 1024.
    pub max_in_flight: usize,
    /// How long a request may wait for its answer. Default 60 s.
    pub request_timeout: Duration,
    /// Messages waiting for a client to take them; must exceed the per-session in-flight
    /// limit, so a client that reads can never be disconnected by its own answers. Default 256.
    pub session_queue: usize,
    /// Lines waiting for the upstream to take them before client input waits. Default 256.
    pub upstream_queue: usize,
}

impl MuxConfig {
    pub fn new(server: &str) -> MuxConfig {
        MuxConfig {
            server: server.into(),
            max_sessions: 64,
            max_in_flight_per_session: 64,
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(60),
            session_queue: 256,
            upstream_queue: 256,
        }
    }

    /// Whether the limits fit together (every mux checks them again when it starts).
    pub fn check(&self) -> Result<(), MuxError> {
        let problem = if self.max_sessions == 0 {
            "max_sessions must be at least 1"
        } else if self.max_in_flight_per_session == 0 {
            "max_in_flight_per_session must be at least 1"
        } else if self.max_in_flight < self.max_in_flight_per_session {
            "max_in_flight must be at least max_in_flight_per_session"
        } else if self.session_queue <= self.max_in_flight_per_session {
            "session_queue must exceed max_in_flight_per_session"
        } else if self.upstream_queue == 0 {
            "upstream_queue must be at least 1"
        } else if self.request_timeout.is_zero() {
            "request_timeout must be above zero"
        } else {
            return Ok(());
        };
        Err(MuxError::InvalidConfig(problem))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MuxError {
    #[error("invalid gateway limits: {0}")]
    InvalidConfig(&'static str),
    #[error("too many client sessions (limit {0})")]
    TooManySessions(usize),
    #[error("the upstream session has ended")]
    Closed,
}

/// Where a message to a client belongs, so a Streamable HTTP front can put it on the right
/// stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// The answer to the client's request with this id (ends that request).
    Response(RequestId),
    /// Belongs to the client's request with this id (progress, or a server request made
    /// while it was in flight).
    Related(RequestId),
    /// Belongs to no request (list_changed and other notifications).
    Standalone,
}

/// One line for a client, and where it belongs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    pub line: String,
    pub route: Route,
}

pub(crate) type SessionId = u64;

/// Session lifecycle, on its own unbounded channel: a session's close must get through
/// from `Drop`, which cannot wait. Bounded in practice: each session sends one open and one
/// close, and at most `max_sessions` exist at once.
enum Control {
    Open {
        id: SessionId,
        to_client: mpsc::Sender<ClientMessage>,
        opened: oneshot::Sender<()>,
    },
    Close(SessionId),
}

/// Opens client sessions on one mux. Cheap to clone.
#[derive(Clone)]
pub struct MuxHandle {
    control: mpsc::UnboundedSender<Control>,
    input: mpsc::Sender<(SessionId, String)>,
    session_slots: Arc<Semaphore>,
    /// One session beyond `max_sessions`, for the agent's own probe: clients that take every
    /// slot cannot make the probe fail and the server be restarted under everyone.
    reserved_slot: Arc<Semaphore>,
    next_session: Arc<AtomicU64>,
    stats: Arc<MuxStats>,
    config: Arc<MuxConfig>,
    lifecycle: UpstreamLifecycle,
}

impl MuxHandle {
    /// What the mux knows of the server's lifecycle (`initialize` or discover-only).
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.get()
    }

    /// A new client session, or `TooManySessions` at the limit, or `Closed` once the
    /// upstream has ended.
    pub async fn open_session(&self) -> Result<ClientSession, MuxError> {
        let permit = Arc::clone(&self.session_slots)
            .try_acquire_owned()
            .map_err(|_| MuxError::TooManySessions(self.config.max_sessions))?;
        self.open_with(permit).await
    }

    /// A session on the slot kept for the agent's probe (one at a time; waits a moment for
    /// the previous probe's session to close).
    pub async fn open_reserved_session(&self) -> Result<ClientSession, MuxError> {
        let slot = Arc::clone(&self.reserved_slot).acquire_owned();
        let permit = tokio::time::timeout(std::time::Duration::from_secs(2), slot)
            .await
            .map_err(|_| MuxError::TooManySessions(1))?
            .map_err(|_| MuxError::Closed)?;
        self.open_with(permit).await
    }

    async fn open_with(&self, permit: OwnedSemaphorePermit) -> Result<ClientSession, MuxError> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (to_client, from_mux) = mpsc::channel(self.config.session_queue);
        let (opened, is_open) = oneshot::channel();
        self.control
            .send(Control::Open {
                id,
                to_client,
                opened,
            })
            .map_err(|_| MuxError::Closed)?;
        // Waiting for the mux to register the session orders its first line after the open
        // (lines travel on another channel) and its close after both.
        is_open.await.map_err(|_| MuxError::Closed)?;
        Ok(ClientSession {
            sender: SessionSender {
                id,
                input: self.input.clone(),
            },
            control: self.control.clone(),
            from_mux,
            _slot: permit,
        })
    }

    /// Client sessions open now.
    pub fn sessions(&self) -> usize {
        self.config.max_sessions - self.session_slots.available_permits()
    }

    pub fn stats(&self) -> MuxStatsSnapshot {
        self.stats.snapshot()
    }
}

/// One client's end of the mux. Dropping it ends the session: its in-flight requests are
/// cancelled upstream.
pub struct ClientSession {
    sender: SessionSender,
    control: mpsc::UnboundedSender<Control>,
    from_mux: mpsc::Receiver<ClientMessage>,
    _slot: OwnedSemaphorePermit,
}

/// The sending half of a session, for a front that sends from other tasks than the one
/// reading (a Streamable HTTP POST while an SSE stream is open). Lines sent after the
/// session has ended are ignored.
#[derive(Clone)]
pub struct SessionSender {
    id: SessionId,
    input: mpsc::Sender<(SessionId, String)>,
}

impl SessionSender {
    /// One JSON-RPC message from the client, as a line. Waits while the upstream is behind.
    pub async fn send(&self, line: String) -> Result<(), MuxError> {
        self.input
            .send((self.id, line))
            .await
            .map_err(|_| MuxError::Closed)
    }
}

impl ClientSession {
    pub fn id(&self) -> u64 {
        self.sender.id
    }

    pub fn sender(&self) -> SessionSender {
        self.sender.clone()
    }

    /// As [`SessionSender::send`].
    pub async fn send(&self, line: String) -> Result<(), MuxError> {
        self.sender.send(line).await
    }

    /// The next message for the client; `None` once the session has been ended by the mux
    /// (upstream gone, or the client let its queue overflow).
    pub async fn recv(&mut self) -> Option<ClientMessage> {
        self.from_mux.recv().await
    }
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        // Fails only when the mux is gone, and then there is nothing left to clean up.
        let _ = self.control.send(Control::Close(self.sender.id));
    }
}
