//! The mux's tables and the operations every message handler shares: tracking and settling
//! a request, delivering to a client, ending a session, timing out, closing everything. Every
//! table entry is removed on the path that settles it, and `end_session` / `close_all` empty
//! everything a session or the mux holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::mem;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tracing::debug;

use super::lifecycle::UpstreamLifecycle;
use super::server_requests::ServerRequests;
use super::stats::MuxStats;
use super::{ClientMessage, MuxConfig, Route, SessionId};
use crate::gateway::call_event::{CallEvent, CallOutcome, CallSink};
use crate::gateway::jsonrpc::{self, Call, ErrorCode, Message, RequestId};

pub(super) struct Session {
    pub to_client: mpsc::Sender<ClientMessage>,
    /// The client's id → the upstream id, for each of its requests in flight.
    pub requests: HashMap<RequestId, u64>,
    /// Its `initialize` requests waiting for the upstream's first answer.
    pub init_waits: usize,
}

impl Session {
    pub fn in_flight(&self) -> usize {
        self.requests.len() + self.init_waits
    }
}

/// Who waits for an upstream answer.
pub(super) enum Waiting {
    Call {
        session: SessionId,
        client_id: RequestId,
        /// The client's progress token, replaced upstream by the upstream id.
        progress: Option<RequestId>,
    },
    /// The one initialize sent upstream; its waiters are in [`Init::InFlight`].
    Initialize,
    /// The gateway's own `server/discover` (see `lifecycle.rs`).
    Discover,
}

pub(super) struct Pending {
    pub waiting: Waiting,
    pub method: String,
    pub tool: Option<String>,
    pub started: Instant,
    pub deadline: Instant,
}

pub(super) struct InitWaiter {
    pub session: SessionId,
    pub client_id: RequestId,
    pub started: Instant,
}

/// The upstream's initialize: not asked yet (or failed), held until the gateway's discover is
/// answered (with the first client's request), asked, or answered and cached.
pub(super) enum Init {
    Idle,
    Held(Vec<InitWaiter>, Call),
    InFlight(Vec<InitWaiter>),
    Ready(Value),
}

pub(super) struct MuxState {
    pub config: Arc<MuxConfig>,
    pub stats: Arc<MuxStats>,
    sink: Arc<dyn CallSink>,
    /// Ordered by id, so the first is the oldest session.
    pub sessions: BTreeMap<SessionId, Session>,
    /// Upstream id → who waits for it.
    pub pending: HashMap<u64, Pending>,
    pub deadlines: BTreeSet<(Instant, u64)>,
    /// The server's requests waiting for a client's answer.
    pub server_requests: ServerRequests,
    pub init: Init,
    /// What is known of the server's lifecycle, shared with the server's other muxes.
    pub lifecycle: UpstreamLifecycle,
    /// The gateway's `server/discover` is waiting for its answer.
    pub discovering: bool,
    /// Client requests in flight over all sessions, initialize waiters included.
    pub in_flight: usize,
    /// Lines for the upstream, taken by the actor as the channel has room.
    pub to_upstream: VecDeque<String>,
    /// The session whose request went upstream last.
    pub last_requester: Option<SessionId>,
    next_upstream: u64,
}

impl MuxState {
    pub fn new(
        config: Arc<MuxConfig>,
        stats: Arc<MuxStats>,
        sink: Arc<dyn CallSink>,
        lifecycle: UpstreamLifecycle,
    ) -> Self {
        MuxState {
            config,
            stats,
            sink,
            lifecycle,
            discovering: false,
            sessions: BTreeMap::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            server_requests: ServerRequests::default(),
            init: Init::Idle,
            in_flight: 0,
            to_upstream: VecDeque::new(),
            last_requester: None,
            next_upstream: 1,
        }
    }

    pub fn next_upstream_id(&mut self) -> u64 {
        let id = self.next_upstream;
        self.next_upstream += 1;
        id
    }

    /// Whether the gateway has ever sent a request upstream under this id.
    pub fn was_issued(&self, upstream: u64) -> bool {
        upstream < self.next_upstream
    }

    /// Queues a line for the upstream. Client input stops at `upstream_queue`; what the mux
    /// adds on its own (cancels, answers to server requests) may go beyond, up to a hard cap
    /// past which it is dropped and counted: a cancel lost is harmless (late answers are
    /// dropped anyway), a lost error answer leaves the server to its own timeout.
    pub fn send_upstream(&mut self, message: &Message) {
        let hard_cap = self.config.upstream_queue + 2 * self.config.max_in_flight;
        if self.to_upstream.len() >= hard_cap {
            MuxStats::add(&self.stats.upstream_queue_dropped);
            return;
        }
        self.to_upstream.push_back(jsonrpc::to_line(message));
    }

    /// Hands a message to a client without waiting. A full queue ends the session (the
    /// client stopped reading), except for `droppable` messages (progress), which are dropped.
    pub fn deliver(&mut self, session: SessionId, message: ClientMessage, droppable: bool) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        match entry.to_client.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) if droppable => {
                MuxStats::add(&self.stats.progress_dropped);
            }
            Err(TrySendError::Full(_)) => {
                MuxStats::add(&self.stats.session_overruns);
                debug!(session, "client session overran its queue; ending it");
                self.end_session(session, Instant::now());
            }
            Err(TrySendError::Closed(_)) => self.end_session(session, Instant::now()),
        }
    }

    /// Answers a client's request (the message carries the client's id).
    pub fn reply(&mut self, session: SessionId, client_id: RequestId, message: &Message) {
        let line = jsonrpc::to_line(message);
        let route = Route::Response(client_id);
        self.deliver(session, ClientMessage { line, route }, false);
    }

    /// Answers a client's request with an error of the gateway's own.
    pub fn reply_error(
        &mut self,
        session: SessionId,
        client_id: RequestId,
        code: ErrorCode,
        text: &'static str,
    ) {
        let message = jsonrpc::error(Some(client_id.clone()), code, text);
        self.reply(session, client_id, &message);
    }

    pub fn record(
        &self,
        method: String,
        tool: Option<String>,
        outcome: CallOutcome,
        started: Instant,
        now: Instant,
    ) {
        self.sink.record(CallEvent {
            server: Arc::clone(&self.config.server),
            method,
            tool,
            outcome,
            duration: now.saturating_duration_since(started),
        });
    }

    /// Sends `call` upstream under id `upstream` (from [`Self::next_upstream_id`]) and waits
    /// for its answer until `deadline`.
    pub fn request_upstream(
        &mut self,
        upstream: u64,
        waiting: Waiting,
        call: Call,
        tool: Option<String>,
        now: Instant,
        deadline: Instant,
    ) {
        let pending = Pending {
            waiting,
            method: call.method.clone(),
            tool,
            started: now,
            deadline,
        };
        self.track(upstream, pending);
        self.send_upstream(&jsonrpc::request(jsonrpc::upstream_id(upstream), call));
    }

    /// Starts waiting for the answer to upstream request `upstream`.
    pub fn track(&mut self, upstream: u64, pending: Pending) {
        if let Waiting::Call {
            session, client_id, ..
        } = &pending.waiting
        {
            if let Some(entry) = self.sessions.get_mut(session) {
                entry.requests.insert(client_id.clone(), upstream);
            }
            self.in_flight += 1;
            self.last_requester = Some(*session);
        }
        self.deadlines.insert((pending.deadline, upstream));
        self.pending.insert(upstream, pending);
    }

    /// Stops waiting for upstream request `upstream`; `None` if nothing waited.
    pub fn settle(&mut self, upstream: u64) -> Option<Pending> {
        let pending = self.pending.remove(&upstream)?;
        self.deadlines.remove(&(pending.deadline, upstream));
        if let Waiting::Call {
            session, client_id, ..
        } = &pending.waiting
        {
            if let Some(entry) = self.sessions.get_mut(session) {
                entry.requests.remove(client_id);
            }
            self.in_flight -= 1;
        }
        Some(pending)
    }

    /// Adds a waiter for the initialize held or in flight (there must be one).
    pub fn add_init_waiter(&mut self, waiter: InitWaiter) {
        let (Init::InFlight(waiters) | Init::Held(waiters, _)) = &mut self.init else {
            return;
        };
        if let Some(entry) = self.sessions.get_mut(&waiter.session) {
            entry.init_waits += 1;
        }
        self.in_flight += 1;
        waiters.push(waiter);
    }

    /// Takes the initialize waiters (held or in flight), leaving the state `Idle`.
    pub fn take_init_waiters(&mut self) -> Vec<InitWaiter> {
        let waiters = match mem::replace(&mut self.init, Init::Idle) {
            Init::InFlight(waiters) | Init::Held(waiters, _) => waiters,
            ready @ Init::Ready(_) => {
                self.init = ready;
                return Vec::new();
            }
            Init::Idle => return Vec::new(),
        };
        for waiter in &waiters {
            if let Some(entry) = self.sessions.get_mut(&waiter.session) {
                entry.init_waits -= 1;
            }
        }
        self.in_flight -= waiters.len();
        waiters
    }

    /// Ends a client session: cancels its requests upstream, drops its initialize waits,
    /// answers its open server requests with an error, forgets it.
    pub fn end_session(&mut self, id: SessionId, now: Instant) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        if self.last_requester == Some(id) {
            self.last_requester = None;
        }
        for upstream in session.requests.into_values() {
            if let Some(pending) = self.pending.remove(&upstream) {
                self.deadlines.remove(&(pending.deadline, upstream));
                self.in_flight -= 1;
                self.record(
                    pending.method,
                    pending.tool,
                    CallOutcome::Cancelled,
                    pending.started,
                    now,
                );
                let reason = "the client session ended";
                self.send_upstream(&jsonrpc::cancelled(jsonrpc::upstream_id(upstream), reason));
            }
        }
        if let Init::InFlight(waiters) | Init::Held(waiters, _) = &mut self.init {
            let (gone, kept): (Vec<_>, Vec<_>) = mem::take(waiters)
                .into_iter()
                .partition(|waiter| waiter.session == id);
            *waiters = kept;
            self.in_flight -= gone.len();
            for waiter in gone {
                let method = "initialize".to_owned();
                self.record(method, None, CallOutcome::Cancelled, waiter.started, now);
            }
        }
        for request_id in self.server_requests.of_session(id) {
            self.server_requests.remove(&request_id);
            let text = "the client session this request went to has ended";
            let code = ErrorCode::INTERNAL_ERROR;
            self.send_upstream(&jsonrpc::error(Some(request_id), code, text));
        }
    }

    /// Fails every request whose deadline has passed: the client gets -32001, the upstream a
    /// cancel (not for initialize, which MCP forbids cancelling). A server request past its
    /// deadline is answered with -32001 and its client told it is cancelled.
    pub fn expire(&mut self, now: Instant) {
        for (id, request) in self.server_requests.take_expired(now) {
            MuxStats::add(&self.stats.server_requests_timed_out);
            let text = "the client did not answer in time";
            self.send_upstream(&jsonrpc::error(
                Some(id.clone()),
                jsonrpc::REQUEST_TIMEOUT,
                text,
            ));
            let line = jsonrpc::to_line(&jsonrpc::cancelled(id, "timed out"));
            let route = Route::Standalone;
            self.deliver(request.session, ClientMessage { line, route }, false);
        }
        while let Some(&(deadline, upstream)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let Some(pending) = self.settle(upstream) else {
                self.deadlines.remove(&(deadline, upstream));
                continue;
            };
            let text = "the server did not answer in time";
            match pending.waiting {
                Waiting::Discover => self.on_discover_answer(None, now),
                Waiting::Initialize => {
                    for waiter in self.take_init_waiters() {
                        let (code, method) = (jsonrpc::REQUEST_TIMEOUT, "initialize".to_owned());
                        self.reply_error(waiter.session, waiter.client_id, code, text);
                        self.record(method, None, CallOutcome::Timeout, waiter.started, now);
                    }
                }
                Waiting::Call {
                    session, client_id, ..
                } => {
                    let cancel = jsonrpc::cancelled(jsonrpc::upstream_id(upstream), "timed out");
                    self.send_upstream(&cancel);
                    self.reply_error(session, client_id, jsonrpc::REQUEST_TIMEOUT, text);
                    let outcome = CallOutcome::Timeout;
                    self.record(pending.method, pending.tool, outcome, pending.started, now);
                }
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let calls = self.deadlines.first().map(|(deadline, _)| *deadline);
        match (calls, self.server_requests.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The upstream is gone (or the gateway stops): every waiting client gets -32000, every
    /// session ends (its receiver sees the end after the queued messages).
    pub fn close_all(&mut self, now: Instant) {
        let text = "the server's session ended";
        let code = jsonrpc::CONNECTION_CLOSED;
        for (_, pending) in mem::take(&mut self.pending) {
            if let Waiting::Call {
                session, client_id, ..
            } = pending.waiting
            {
                self.reply_error(session, client_id, code, text);
                let outcome = CallOutcome::TransportError;
                self.record(pending.method, pending.tool, outcome, pending.started, now);
            }
        }
        self.pending.clear();
        for waiter in self.take_init_waiters() {
            self.reply_error(waiter.session, waiter.client_id, code, text);
            let method = "initialize".to_owned();
            self.record(
                method,
                None,
                CallOutcome::TransportError,
                waiter.started,
                now,
            );
        }
        self.sessions.clear();
        self.server_requests.clear();
        self.deadlines.clear();
        self.to_upstream.clear();
        self.in_flight = 0;
        self.last_requester = None;
        self.update_gauges();
    }

    pub fn update_gauges(&self) {
        MuxStats::set(&self.stats.in_flight, self.in_flight);
        MuxStats::set(&self.stats.server_requests, self.server_requests.len());
        MuxStats::set(&self.stats.upstream_queued, self.to_upstream.len());
    }
}
