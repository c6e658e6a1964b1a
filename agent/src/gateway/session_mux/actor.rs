//! The mux task: one loop that owns [`MuxState`] and takes, in priority order, session
//! opens and closes, upstream lines, room on the upstream channel, deadlines, client lines.
//! Upstream input is always read, whatever the upstream output is doing; client input is
//! read only while the upstream queue is under its bound (backpressure to the clients).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lifecycle::UpstreamLifecycle;
use super::state::{MuxState, Session};
use super::stats::MuxStats;
use super::{Control, MuxConfig, MuxError, MuxHandle, SessionId};
use crate::gateway::call_event::CallSink;

/// Client lines waiting for the mux task; senders wait beyond.
const CLIENT_INPUT_QUEUE: usize = 256;

/// The two directions of the upstream stream, one line per message, no newline.
pub struct Upstream {
    /// Lines the server wrote; the stream ends when this channel closes.
    pub from_server: mpsc::Receiver<String>,
    /// Lines for the server; the mux stops when the receiving side is dropped.
    pub to_server: mpsc::Sender<String>,
}

pub struct SessionMux;

impl SessionMux {
    /// Starts the mux task for one upstream stream. It runs until the upstream ends, every
    /// handle and session is dropped, or `shutdown` is cancelled.
    pub fn spawn(
        config: MuxConfig,
        upstream: Upstream,
        sink: Arc<dyn CallSink>,
        lifecycle: UpstreamLifecycle,
        shutdown: CancellationToken,
    ) -> Result<MuxHandle, MuxError> {
        config.check()?;
        let config = Arc::new(config);
        let stats = Arc::new(MuxStats::default());
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (input_tx, input_rx) = mpsc::channel(CLIENT_INPUT_QUEUE);
        let state = MuxState::new(
            Arc::clone(&config),
            Arc::clone(&stats),
            sink,
            lifecycle.clone(),
        );
        tokio::spawn(run(state, upstream, control_rx, input_rx, shutdown));
        Ok(MuxHandle {
            control: control_tx,
            input: input_tx,
            session_slots: Arc::new(Semaphore::new(config.max_sessions)),
            reserved_slot: Arc::new(Semaphore::new(1)),
            next_session: Arc::new(AtomicU64::new(1)),
            stats,
            config,
            lifecycle,
        })
    }
}

async fn run(
    mut state: MuxState,
    upstream: Upstream,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut input: mpsc::Receiver<(SessionId, String)>,
    shutdown: CancellationToken,
) {
    let Upstream {
        mut from_server,
        to_server,
    } = upstream;
    // Far enough to never fire; reset to the earliest deadline whenever there is one.
    let idle = Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    state.start(Instant::now());
    loop {
        let next_deadline = state.next_deadline();
        if let Some(deadline) = next_deadline {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
        }
        let may_read_clients = state.to_upstream.len() < state.config.upstream_queue;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            message = control.recv() => match message {
                Some(Control::Open { id, to_client, opened }) => {
                    let session = Session {
                        to_client,
                        requests: Default::default(),
                        init_waits: 0,
                    };
                    state.sessions.insert(id, session);
                    // An opener that gave up waiting never built its `ClientSession`, so no
                    // Drop will close this one: close it here.
                    if opened.send(()).is_err() {
                        state.end_session(id, Instant::now());
                    }
                }
                Some(Control::Close(id)) => state.end_session(id, Instant::now()),
                // Every handle and session is gone: nobody is left to serve.
                None => break,
            },
            line = from_server.recv() => match line {
                Some(line) => state.on_upstream_line(&line, Instant::now()),
                None => {
                    state.upstream_ended();
                    break;
                }
            },
            permit = to_server.reserve(), if !state.to_upstream.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(line) = state.to_upstream.pop_front() {
                        permit.send(line);
                    }
                }
                Err(_) => break,
            },
            // The transport dropped its reading side while nothing was queued for it.
            () = to_server.closed() => break,
            () = &mut timer, if next_deadline.is_some() => state.expire(Instant::now()),
            item = input.recv(), if may_read_clients => match item {
                Some((session, line)) => state.on_client_line(session, &line, Instant::now()),
                // Cannot happen while `control` is open (the handle holds both senders).
                None => break,
            },
        }
        state.update_gauges();
    }
    state.close_all(Instant::now());
}
