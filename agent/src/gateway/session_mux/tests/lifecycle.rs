//! Cancellation, timeouts, limits, malformed input and the end of the upstream: every
//! table is emptied, nothing panics, every drop is counted.

use std::time::Duration;

use serde_json::{json, Value};

use super::fake_server::FakeOptions;
use tokio::sync::mpsc::{Receiver, Sender};

use super::*;
use crate::gateway::jsonrpc::{self, id_from_json};
use crate::gateway::session_mux::{MuxError, Route};

async fn hang(session: &ClientSession, id: Value) {
    session.send(call(id, "hang", "")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn ending_a_session_cancels_its_requests_upstream_and_drops_their_late_answers() {
    let harness = Harness::default_start();
    let leaving = harness.initialized().await;
    let mut staying = harness.initialized().await;
    for n in 0..3 {
        hang(&leaving, json!(n)).await;
    }
    hang(&staying, json!(0)).await;
    eventually(|| harness.log(|log| log.hanging.len() == 4)).await;
    let hanging = harness.log(|log| log.hanging.clone());
    drop(leaving);
    eventually(|| harness.log(|log| log.cancelled.len() == 3)).await;
    let cancelled = harness.log(|log| log.cancelled.clone());
    // Whichever three the leaving session sent; never the staying session's.
    let staying_id = hanging
        .iter()
        .find(|id| !cancelled.contains(id))
        .unwrap()
        .clone();
    assert_eq!(harness.sink.count("tools/call", CallOutcome::Cancelled), 3);
    eventually(|| harness.mux.stats().in_flight == 1 && harness.mux.sessions() == 1).await;
    // The server answers all four anyway: three are late, one reaches its caller.
    for id in &hanging {
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"content": []}});
        harness.inject.send(answer.to_string()).await.unwrap();
    }
    let answer = next(&mut staying).await;
    assert_eq!(
        answer.route,
        Route::Response(id_from_json(&json!(0)).unwrap())
    );
    eventually(|| harness.mux.stats().upstream_late == 3).await;
    assert_eq!(harness.mux.stats().in_flight, 0);
    assert!(hanging.contains(&staying_id));
}

#[tokio::test(start_paused = true)]
async fn a_client_cancels_only_its_own_requests_under_the_upstream_id() {
    let harness = Harness::default_start();
    let mut owner = harness.initialized().await;
    let other = harness.initialized().await;
    let cancel = |id: Value| {
        let params = json!({"requestId": id, "reason": "r"});
        notification("notifications/cancelled", params)
    };
    hang(&owner, json!("a")).await;
    eventually(|| harness.log(|log| log.hanging.len() == 1)).await;
    // Another session naming the same client id, and the owner naming an unknown one: no
    // effect, the request is still answered.
    other.send(cancel(json!("a"))).await.unwrap();
    owner.send(cancel(json!("zzz"))).await.unwrap();
    eventually(|| harness.mux.stats().client_unroutable == 2).await;
    let first = harness.log(|log| log.hanging[0].clone());
    let answer = json!({"jsonrpc": "2.0", "id": first, "result": {}});
    harness.inject.send(answer.to_string()).await.unwrap();
    assert_eq!(json_of(&next(&mut owner).await)["id"], json!("a"));
    // The owner's cancel goes upstream under the upstream id; the late answer is dropped.
    hang(&owner, json!("b")).await;
    eventually(|| harness.log(|log| log.hanging.len() == 2)).await;
    let second = harness.log(|log| log.hanging[1].clone());
    owner.send(cancel(json!("b"))).await.unwrap();
    eventually(|| harness.log(|log| !log.cancelled.is_empty())).await;
    harness.log(|log| assert_eq!(log.cancelled, vec![second.clone()]));
    assert_eq!(harness.sink.count("tools/call", CallOutcome::Cancelled), 1);
    let late = json!({"jsonrpc": "2.0", "id": second, "result": {}});
    harness.inject.send(late.to_string()).await.unwrap();
    eventually(|| harness.mux.stats().upstream_late == 1).await;
    assert!(quiet(&mut owner).await, "no answer after a cancel");
}

#[tokio::test(start_paused = true)]
async fn a_request_without_an_answer_times_out_and_is_cancelled_upstream() {
    let mut config = MuxConfig::new("files");
    config.request_timeout = Duration::from_secs(5);
    let harness = Harness::start(config, FakeOptions::default());
    let mut session = harness.initialized().await;
    let started = tokio::time::Instant::now();
    hang(&session, json!(1)).await;
    let answer = json_of(&next(&mut session).await);
    assert_eq!(answer["error"]["code"], json!(jsonrpc::REQUEST_TIMEOUT.0));
    assert!(started.elapsed() >= Duration::from_secs(5));
    eventually(|| harness.log(|log| log.cancelled.len() == 1)).await;
    let events = harness.sink.events();
    let timeout = events
        .iter()
        .find(|event| event.outcome == CallOutcome::Timeout)
        .unwrap();
    assert_eq!(timeout.tool.as_deref(), Some("hang"));
    assert!(timeout.duration >= Duration::from_secs(5));
    assert_eq!(harness.mux.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn limits_answer_with_errors() {
    let mut config = MuxConfig::new("files");
    config.max_sessions = 3;
    config.max_in_flight_per_session = 2;
    config.max_in_flight = 3;
    config.session_queue = 8;
    let harness = Harness::start(config, FakeOptions::default());
    let mut a = harness.initialized().await;
    let mut b = harness.initialized().await;
    let c = harness.session().await;
    assert_eq!(
        harness.mux.open_session().await.err(),
        Some(MuxError::TooManySessions(3))
    );
    drop(c);
    let mut c = harness.session().await;
    for n in 0..3 {
        hang(&a, json!(n)).await;
    }
    let refused = json_of(&next(&mut a).await);
    assert_eq!(
        (refused["id"].clone(), refused["error"]["code"].clone()),
        (json!(2), json!(jsonrpc::OVER_LIMIT.0))
    );
    hang(&b, json!(0)).await;
    hang(&b, json!(1)).await;
    let refused = json_of(&next(&mut b).await);
    assert_eq!(
        (refused["id"].clone(), refused["error"]["code"].clone()),
        (json!(1), json!(jsonrpc::OVER_LIMIT.0))
    );
    // Over the global limit even initialize waits are refused; the cache still answers.
    c.send(initialize(json!(5))).await.unwrap();
    assert!(json_of(&next(&mut c).await)["result"].is_object());
    hang(&c, json!(6)).await;
    assert_eq!(
        json_of(&next(&mut c).await)["error"]["code"],
        json!(jsonrpc::OVER_LIMIT.0)
    );
    assert_eq!(harness.mux.stats().client_refused, 3);
    assert_eq!(harness.log(|log| log.hanging.len()), 3);
    // A session ending frees its share.
    drop(a);
    eventually(|| harness.mux.stats().in_flight == 1).await;
    c.send(call(json!(7), "echo", "x")).await.unwrap();
    assert!(json_of(&next(&mut c).await)["result"].is_object());
}

#[tokio::test(start_paused = true)]
async fn malformed_upstream_lines_are_counted_and_traffic_goes_on() {
    let harness = Harness::default_start();
    let mut session = harness.initialized().await;
    let lines = [
        "not json",
        "{\"jsonrpc\":",
        "[1,2]",
        "{\"jsonrpc\":\"2.0\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":true,\"result\":{}}",
        "",
        "   ",
    ];
    for line in lines {
        harness.inject.send(line.to_owned()).await.unwrap();
    }
    let unknown = [
        json!({"jsonrpc": "2.0", "id": 999_999, "result": {}}),
        json!({"jsonrpc": "2.0", "id": "x", "result": {}}),
        json!({"jsonrpc": "2.0", "id": -1, "result": {}}),
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse"}}),
    ];
    for line in unknown {
        harness.inject.send(line.to_string()).await.unwrap();
    }
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "nobody"}});
    harness.inject.send(cancel.to_string()).await.unwrap();
    session
        .send(call(json!(1), "echo", "still fine"))
        .await
        .unwrap();
    let answer = json_of(&next(&mut session).await);
    assert_eq!(answer["result"]["content"][0]["text"], json!("still fine"));
    let stats = harness.mux.stats();
    assert_eq!(stats.upstream_malformed, 5);
    assert_eq!(stats.upstream_unknown, 4);
    assert_eq!(stats.upstream_unroutable, 1);
}

#[tokio::test(start_paused = true)]
async fn malformed_client_lines_are_answered_with_errors() {
    let harness = Harness::default_start();
    let mut session = harness.initialized().await;
    session.send("garbage".to_owned()).await.unwrap();
    let answer = json_of(&next(&mut session).await);
    assert_eq!(
        (answer["id"].clone(), answer["error"]["code"].clone()),
        (Value::Null, json!(-32700))
    );
    session
        .send(json!({"jsonrpc": "2.0", "id": {}, "method": "x"}).to_string())
        .await
        .unwrap();
    assert_eq!(
        json_of(&next(&mut session).await)["error"]["code"],
        json!(-32600)
    );
    hang(&session, json!(1)).await;
    hang(&session, json!(1)).await;
    let duplicate = json_of(&next(&mut session).await);
    assert_eq!(
        (duplicate["id"].clone(), duplicate["error"]["code"].clone()),
        (json!(1), json!(-32600))
    );
    let answer_to_nothing = json!({"jsonrpc": "2.0", "id": 4, "result": {}});
    session.send(answer_to_nothing.to_string()).await.unwrap();
    eventually(|| harness.mux.stats().client_unroutable == 1).await;
    let stats = harness.mux.stats();
    assert_eq!((stats.client_malformed, stats.client_refused), (2, 1));
    assert_eq!(harness.log(|log| log.hanging.len()), 1);
}

/// A mux whose upstream is the test itself: lines in through the first sender, lines out
/// on the receiver.
fn bare_mux(
    config: MuxConfig,
) -> (
    MuxHandle,
    Sender<String>,
    Receiver<String>,
    Arc<RecordingSink>,
    CancellationToken,
) {
    let (to_server, server_input) = tokio::sync::mpsc::channel(1);
    let (inject, from_server) = tokio::sync::mpsc::channel(1);
    let sink = Arc::new(RecordingSink::default());
    let dyn_sink: Arc<dyn CallSink> = sink.clone();
    let upstream = Upstream {
        from_server,
        to_server,
    };
    let shutdown = CancellationToken::new();
    // Known, so the test (the upstream) sees no `server/discover` of the gateway's own.
    let lifecycle = UpstreamLifecycle::known(Lifecycle::Initialize);
    let mux = SessionMux::spawn(config, upstream, dyn_sink, lifecycle, shutdown.clone()).unwrap();
    (mux, inject, server_input, sink, shutdown)
}

#[tokio::test(start_paused = true)]
async fn the_end_of_the_upstream_fails_every_request_and_ends_every_session() {
    for ending in ["server output ends", "transport stops reading", "shutdown"] {
        let (mux, inject, mut server_input, sink, shutdown) = bare_mux(MuxConfig::new("files"));
        let mut session = mux.open_session().await.unwrap();
        session.send(call(json!(1), "hang", "")).await.unwrap();
        server_input.recv().await.unwrap();
        match ending {
            "server output ends" => drop(inject),
            "transport stops reading" => drop(server_input),
            _ => shutdown.cancel(),
        }
        let answer = json_of(&next(&mut session).await);
        assert_eq!(
            answer["error"]["code"],
            json!(jsonrpc::CONNECTION_CLOSED.0),
            "{ending}"
        );
        assert!(session.recv().await.is_none(), "{ending}: the session ends");
        assert_eq!(sink.count("tools/call", CallOutcome::TransportError), 1);
        assert_eq!(mux.open_session().await.err(), Some(MuxError::Closed));
        let line = call(json!(2), "echo", "");
        assert_eq!(session.send(line).await, Err(MuxError::Closed), "{ending}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_disconnected_and_the_others_are_not() {
    let mut config = MuxConfig::new("files");
    config.max_in_flight_per_session = 2;
    config.session_queue = 4;
    let harness = Harness::start(config, FakeOptions::default());
    let mut stalled = harness.initialized().await;
    let mut reading = harness.initialized().await;
    // The stalled client asks the server something, then reads nothing.
    stalled.send(call(json!("s"), "sample", "")).await.unwrap();
    eventually(|| harness.mux.stats().server_requests == 1).await;
    let line = notification("notifications/resources/list_changed", json!({}));
    for _ in 0..6 {
        harness.inject.send(line.clone()).await.unwrap();
        next(&mut reading).await;
    }
    eventually(|| harness.mux.stats().session_overruns == 1).await;
    // Its queued messages are still readable, then the session ends.
    while stalled.recv().await.is_some() {}
    // Its open server request was answered with an error, so the server is not left waiting.
    eventually(|| harness.log(|log| log.client_answers.len() == 1)).await;
    harness.log(|log| assert!(log.client_answers[0]["error"].is_object()));
    let stats = harness.mux.stats();
    assert_eq!((stats.server_requests, stats.in_flight), (0, 0));
    reading.send(call(json!(1), "echo", "fine")).await.unwrap();
    assert!(json_of(&next(&mut reading).await)["result"].is_object());
}

#[tokio::test(start_paused = true)]
async fn limits_that_cannot_work_are_refused() {
    let (_to_server, from_server) = tokio::sync::mpsc::channel(1);
    let (to_server, _server_input) = tokio::sync::mpsc::channel(1);
    let mut config = MuxConfig::new("files");
    config.session_queue = config.max_in_flight_per_session;
    let sink: Arc<dyn CallSink> = Arc::new(RecordingSink::default());
    let upstream = Upstream {
        from_server,
        to_server,
    };
    let lifecycle = UpstreamLifecycle::default();
    let refused = SessionMux::spawn(config, upstream, sink, lifecycle, CancellationToken::new());
    assert!(matches!(refused, Err(MuxError::InvalidConfig(_))));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_stops_reading_holds_clients_back_but_never_its_own_output() {
    // No fake server: the test is the upstream, and at first it reads nothing.
    let mut config = MuxConfig::new("files");
    config.upstream_queue = 4;
    config.max_in_flight_per_session = 1000;
    config.max_in_flight = 1000;
    config.session_queue = 1001;
    let (mux, inject, mut server_input, _sink, _shutdown) = bare_mux(config);
    let mut session = mux.open_session().await.unwrap();
    let sender = session.sender();
    let sending = tokio::spawn(async move {
        for n in 0..1000 {
            sender.send(call(json!(n), "echo", "")).await.unwrap();
        }
    });
    eventually(|| mux.stats().upstream_queued == 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !sending.is_finished(),
        "client input waits while the upstream is behind"
    );
    assert_eq!(
        mux.stats().upstream_queued,
        4,
        "the queue stays at its bound"
    );
    // What the server writes is still read and delivered.
    let line = notification("notifications/tools/list_changed", json!({}));
    inject.send(line).await.unwrap();
    assert_eq!(
        json_of(&next(&mut session).await)["method"],
        json!("notifications/tools/list_changed")
    );
    // The server reads again: every request arrives, each once.
    let mut ids = std::collections::HashSet::new();
    while ids.len() < 1000 {
        let line = server_input.recv().await.unwrap();
        let request: Value = serde_json::from_str(&line).unwrap();
        assert!(ids.insert(request["id"].to_string()), "{line}");
    }
    sending.await.unwrap();
    drop(inject);
}
