//! Random interleavings of everything clients and the server can send, fed straight into
//! the mux's state (no tasks): nothing panics, the tables agree with each other after every
//! step, and once every session has ended nothing is left in flight.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::state::{Init, MuxState, Session, Waiting};
use super::super::stats::MuxStats;
use super::super::{ClientMessage, MuxConfig, UpstreamLifecycle};
use super::RecordingSink;

#[derive(Debug, Clone)]
enum Step {
    Open,
    Close(u64),
    /// Session, client id, method (0 tools/call, 1 initialize, 2 other), with a progress token.
    Request(u64, u8, u8, bool),
    Cancel(u64, u8),
    ClientGarbage(u64, String),
    /// Upstream id, kind (0 result, 1 tool error, 2 JSON-RPC error, 3 a discover result of
    /// a discover-only server, 4 its -32022 refusal of initialize).
    Answer(u64, u8),
    Progress(u64),
    ServerRequest(u8),
    ServerCancel(u8),
    /// Session, server request id, as an error.
    ClientAnswer(u64, u8, bool),
    ServerGarbage(String),
    /// The upstream takes its queued lines.
    Drain,
    /// A client reads its queued messages.
    Read(u64),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Open),
        1 => (1..6u64).prop_map(Step::Close),
        8 => (1..6u64, 0..6u8, 0..3u8, any::<bool>()).prop_map(|(s, i, m, p)| Step::Request(s, i, m, p)),
        2 => (1..6u64, 0..6u8).prop_map(|(s, i)| Step::Cancel(s, i)),
        1 => (1..6u64, ".{0,12}").prop_map(|(s, g)| Step::ClientGarbage(s, g)),
        8 => (0..40u64, 0..5u8).prop_map(|(u, k)| Step::Answer(u, k)),
        2 => (0..40u64).prop_map(Step::Progress),
        2 => (0..4u8).prop_map(Step::ServerRequest),
        1 => (0..4u8).prop_map(Step::ServerCancel),
        2 => (1..6u64, 0..4u8, any::<bool>()).prop_map(|(s, i, e)| Step::ClientAnswer(s, i, e)),
        1 => ".{0,12}".prop_map(Step::ServerGarbage),
        2 => Just(Step::Drain),
        3 => (1..6u64).prop_map(Step::Read),
        1 => (0..90u64).prop_map(Step::Advance),
    ]
}

fn check(state: &MuxState) {
    let calls: Vec<_> = state
        .pending
        .iter()
        .filter_map(|(upstream, pending)| match &pending.waiting {
            Waiting::Call {
                session, client_id, ..
            } => Some((*upstream, *session, client_id)),
            Waiting::Initialize | Waiting::Discover => None,
        })
        .collect();
    for (upstream, session, client_id) in &calls {
        let entry = state
            .sessions
            .get(session)
            .expect("a waiting request's session is open");
        assert_eq!(entry.requests.get(*client_id), Some(upstream));
    }
    let requests: usize = state.sessions.values().map(|s| s.requests.len()).sum();
    assert_eq!(requests, calls.len());
    let discovers = state
        .pending
        .values()
        .filter(|p| matches!(p.waiting, Waiting::Discover))
        .count();
    assert_eq!(usize::from(state.discovering), discovers);
    let waiters = match &state.init {
        Init::Held(waiters, _) => {
            assert!(
                state.discovering,
                "an initialize is held only for a discover"
            );
            waiters.len()
        }
        Init::InFlight(waiters) => {
            assert!(state
                .pending
                .values()
                .any(|p| matches!(p.waiting, Waiting::Initialize)));
            for waiter in waiters {
                assert!(state.sessions.contains_key(&waiter.session));
            }
            waiters.len()
        }
        _ => 0,
    };
    let init_waits: usize = state.sessions.values().map(|s| s.init_waits).sum();
    assert_eq!(init_waits, waiters);
    assert_eq!(state.in_flight, calls.len() + waiters);
    assert!(state.in_flight <= state.config.max_in_flight);
    for session in state.sessions.values() {
        assert!(session.in_flight() <= state.config.max_in_flight_per_session);
    }
    assert_eq!(state.deadlines.len(), state.pending.len());
    for request in state.server_requests.values() {
        assert!(state.sessions.contains_key(&request.session));
    }
}

fn client_id(n: u8) -> serde_json::Value {
    if n.is_multiple_of(2) {
        json!(n)
    } else {
        json!(format!("id-{n}"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_keeps_the_tables_consistent(steps in proptest::collection::vec(step(), 1..120)) {
        let mut config = MuxConfig::new("files");
        config.max_in_flight_per_session = 3;
        config.max_in_flight = 6;
        config.session_queue = 5;
        config.request_timeout = Duration::from_secs(60);
        let sink: Arc<dyn super::super::super::call_event::CallSink> = Arc::new(RecordingSink::default());
        let mut state = MuxState::new(Arc::new(config), Arc::new(MuxStats::default()), sink, UpstreamLifecycle::default());
        let mut now = Instant::now();
        // Upstream id 1 is the gateway's own `server/discover`.
        state.start(now);
        let mut clients: Vec<(u64, mpsc::Receiver<ClientMessage>)> = Vec::new();
        let mut next_session = 1;
        for step in steps {
            match step {
                Step::Open => {
                    let (to_client, from_mux) = mpsc::channel(5);
                    let session = Session { to_client, requests: Default::default(), init_waits: 0 };
                    state.sessions.insert(next_session, session);
                    clients.push((next_session, from_mux));
                    next_session += 1;
                }
                Step::Close(s) => state.end_session(s, now),
                Step::Request(s, id, method, progress) => {
                    let method = ["tools/call", "initialize", "resources/read"][usize::from(method)];
                    let mut params = json!({"name": "t"});
                    if progress {
                        params["_meta"] = json!({"progressToken": "p"});
                    }
                    let line = json!({"jsonrpc": "2.0", "id": client_id(id), "method": method, "params": params});
                    state.on_client_line(s, &line.to_string(), now);
                }
                Step::Cancel(s, id) => {
                    let line = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": client_id(id)}});
                    state.on_client_line(s, &line.to_string(), now);
                }
                Step::ClientGarbage(s, garbage) => state.on_client_line(s, &garbage, now),
                Step::Answer(upstream, kind) => {
                    let line = match kind {
                        0 => json!({"jsonrpc": "2.0", "id": upstream, "result": {"protocolVersion": "x"}}),
                        1 => json!({"jsonrpc": "2.0", "id": upstream, "result": {"isError": true}}),
                        3 => json!({"jsonrpc": "2.0", "id": upstream, "result": {"supportedVersions": ["2026-07-28"]}}),
                        4 => json!({"jsonrpc": "2.0", "id": upstream, "error": {"code": -32022, "message": "m", "data": {"supported": ["2026-07-28"]}}}),
                        _ => json!({"jsonrpc": "2.0", "id": upstream, "error": {"code": 1, "message": "m"}}),
                    };
                    state.on_upstream_line(&line.to_string(), now);
                }
                Step::Progress(token) => {
                    let line = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}});
                    state.on_upstream_line(&line.to_string(), now);
                }
                Step::ServerRequest(id) => {
                    let line = json!({"jsonrpc": "2.0", "id": format!("s{id}"), "method": "sampling/createMessage", "params": {"_meta": {"progressToken": id}}});
                    state.on_upstream_line(&line.to_string(), now);
                }
                Step::ServerCancel(id) => {
                    let line = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": format!("s{id}")}});
                    state.on_upstream_line(&line.to_string(), now);
                }
                Step::ClientAnswer(s, id, error) => {
                    let line = if error {
                        json!({"jsonrpc": "2.0", "id": format!("s{id}"), "error": {"code": 1, "message": "no"}})
                    } else {
                        json!({"jsonrpc": "2.0", "id": format!("s{id}"), "result": {}})
                    };
                    state.on_client_line(s, &line.to_string(), now);
                }
                Step::ServerGarbage(garbage) => state.on_upstream_line(&garbage, now),
                Step::Drain => state.to_upstream.clear(),
                Step::Read(s) => {
                    if let Some((_, from_mux)) = clients.iter_mut().find(|(id, _)| *id == s) {
                        while from_mux.try_recv().is_ok() {}
                    }
                }
                Step::Advance(seconds) => {
                    now += Duration::from_secs(seconds);
                    state.expire(now);
                }
            }
            check(&state);
        }
        let open: Vec<u64> = state.sessions.keys().copied().collect();
        for session in open {
            state.end_session(session, now);
        }
        check(&state);
        prop_assert_eq!(state.in_flight, 0);
        prop_assert!(state.server_requests.is_empty());
        prop_assert!(state.pending.values().all(|p| matches!(p.waiting, Waiting::Initialize | Waiting::Discover)));
        state.close_all(now);
        prop_assert!(state.pending.is_empty() && state.deadlines.is_empty());
    }
}
