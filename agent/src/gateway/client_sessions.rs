//! The Streamable HTTP front's client sessions: each `Mcp-Session-Id` names one mux session,
//! and a dispatcher task per session puts every message from the mux where the client will
//! read it: the answer and related messages (progress, server requests) on the stream of
//! the POST that asked, everything else on the session's GET stream, if one is open.
//! Messages with nowhere to go are dropped and counted (the client had no stream open).
//!
//! A session ends when the client sends DELETE, when it has been idle for the configured
//! time (no request, no answer pending, no GET stream open), or when its mux ends (the
//! server's container went away). Ending it drops the mux session, which cancels its
//! in-flight requests upstream; the client's next request with that id gets 404, the MCP
//! signal to start a new session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client_pool::Lease;
use super::jsonrpc::RequestId;
use super::session_mux::{ClientMessage, ClientSession, Route, SessionSender};

/// Messages waiting for one POST's stream or the GET stream.
const STREAM_QUEUE: usize = 64;

/// Where one session's messages go.
#[derive(Default)]
struct Routes {
    /// The waiting POST of each request in flight, by the client's id.
    pending: HashMap<RequestId, mpsc::Sender<ClientMessage>>,
    /// The session's GET stream.
    standalone: Option<mpsc::Sender<ClientMessage>>,
}

/// One client session of the HTTP front.
pub struct HttpSession {
    pub server: String,
    sender: SessionSender,
    routes: Mutex<Routes>,
    last_used: Mutex<Instant>,
    ended: CancellationToken,
    /// Longest wait of a POST for its answer (the mux's request timeout plus a margin).
    pub answer_timeout: Duration,
    /// Messages for this session that had no stream to go to.
    pub undeliverable: AtomicU64,
}

/// A request's stream of messages: related ones, then its answer (the channel then ends).
pub type RequestStream = mpsc::Receiver<ClientMessage>;

#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The client already has a request in flight with this id.
    DuplicateId,
    /// The session has ended.
    Ended,
}

impl HttpSession {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        // Plain map updates; a panic mid-update leaves a usable table.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// A request whose POST is still waiting, or an open GET stream. A request whose client
    /// went away does not keep the session alive.
    fn busy(&self) -> bool {
        let routes = self.routes();
        routes.pending.values().any(|s| !s.is_closed())
            || routes.standalone.as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Registers a request before it is sent, so its answer cannot arrive unrouted.
    pub fn expect(&self, id: RequestId) -> Result<RequestStream, RouteError> {
        if self.ended.is_cancelled() {
            return Err(RouteError::Ended);
        }
        let mut routes = self.routes();
        if routes.pending.get(&id).is_some_and(|s| !s.is_closed()) {
            return Err(RouteError::DuplicateId);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        routes.pending.insert(id, tx);
        Ok(rx)
    }

    /// Forgets a request whose POST gave up before sending it.
    pub fn forget(&self, id: &RequestId) {
        self.routes().pending.remove(id);
    }

    /// Opens the session's GET stream; `None` while another one is open.
    pub fn open_standalone(&self) -> Option<RequestStream> {
        let mut routes = self.routes();
        if routes.standalone.as_ref().is_some_and(|s| !s.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        routes.standalone = Some(tx);
        Some(rx)
    }

    /// One message from the client, in order with the session's others.
    pub async fn send(&self, line: String) -> Result<(), RouteError> {
        self.touch();
        self.sender.send(line).await.map_err(|_| RouteError::Ended)
    }

    /// Ends the session (DELETE, idle, shutdown): the dispatcher drops the mux session.
    pub fn end(&self) {
        self.ended.cancel();
    }

    fn deliver(&self, message: ClientMessage) {
        let mut routes = self.routes();
        let target = match &message.route {
            Route::Response(id) => routes.pending.remove(id),
            Route::Related(id) => routes
                .pending
                .get(id)
                .cloned()
                .or_else(|| routes.standalone.clone()),
            Route::Standalone => routes.standalone.clone(),
        };
        drop(routes);
        let delivered = target.is_some_and(|t| t.try_send(message).is_ok());
        if !delivered {
            self.undeliverable.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The sessions of the HTTP front, by `Mcp-Session-Id`. Cheap to clone.
#[derive(Clone)]
pub struct HttpSessions {
    table: Arc<Mutex<HashMap<String, Arc<HttpSession>>>>,
    answer_timeout: Duration,
}

impl HttpSessions {
    /// `request_timeout` is the mux's: a POST waits for its answer a little longer.
    pub fn new(request_timeout: Duration) -> HttpSessions {
        HttpSessions {
            table: Arc::default(),
            answer_timeout: request_timeout + Duration::from_secs(5),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<HttpSession>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wraps a new mux session and starts its dispatcher. With `id`, the session is listed
    /// under it; without, it is a one-request session (sessionless revisions) that ends when
    /// the returned handle's owner calls [`HttpSession::end`].
    pub fn start(
        &self,
        server: &str,
        id: Option<String>,
        session: ClientSession,
        lease: Option<Lease>,
    ) -> Arc<HttpSession> {
        let http = Arc::new(HttpSession {
            server: server.to_owned(),
            sender: session.sender(),
            routes: Mutex::default(),
            last_used: Mutex::new(Instant::now()),
            ended: CancellationToken::new(),
            answer_timeout: self.answer_timeout,
            undeliverable: AtomicU64::new(0),
        });
        if let Some(id) = &id {
            self.lock().insert(id.clone(), Arc::clone(&http));
        }
        tokio::spawn(dispatch(
            session,
            Arc::clone(&http),
            self.clone(),
            id,
            lease,
        ));
        http
    }

    /// The session `id` of `server`, if it exists.
    pub fn get(&self, server: &str, id: &str) -> Option<Arc<HttpSession>> {
        self.lock()
            .get(id)
            .filter(|s| s.server == server && !s.ended.is_cancelled())
            .cloned()
    }

    /// Ends and forgets session `id` of `server`; false when there was none.
    pub fn remove(&self, server: &str, id: &str) -> bool {
        let mut table = self.lock();
        match table.get(id) {
            Some(s) if s.server == server => {
                s.end();
                table.remove(id);
                true
            }
            _ => false,
        }
    }

    /// Client sessions open now, per server.
    pub fn count(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for s in self.lock().values() {
            *counts.entry(s.server.clone()).or_default() += 1;
        }
        counts
    }

    /// Ends the sessions idle for `idle` or more, until `stop`.
    pub async fn expire_idle(self, idle: Duration, stop: CancellationToken) {
        let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            self.lock().retain(|_, s| {
                let keep = s.busy() || s.idle_for() < idle;
                if !keep {
                    tracing::debug!(server = %s.server, "gateway client session idle; ended");
                    s.end();
                }
                keep
            });
        }
        for s in self.lock().drain().map(|(_, s)| s) {
            s.end();
        }
    }
}

/// Runs until the session ends; then `lease` (a per-client container) is dropped, which
/// removes the container.
async fn dispatch(
    mut session: ClientSession,
    http: Arc<HttpSession>,
    table: HttpSessions,
    id: Option<String>,
    lease: Option<Lease>,
) {
    loop {
        tokio::select! {
            _ = http.ended.cancelled() => break,
            message = session.recv() => match message {
                Some(m) => http.deliver(m),
                None => break,
            },
        }
    }
    http.ended.cancel();
    if let Some(id) = id {
        table.lock().remove(&id);
    }
    // Waiting POSTs see their stream end: the front answers them with "connection closed".
    let mut routes = http.routes();
    routes.pending.clear();
    routes.standalone = None;
    drop(routes);
    // Ending the mux session first cancels what is still in flight, then the container goes.
    drop(session);
    drop(lease);
}
