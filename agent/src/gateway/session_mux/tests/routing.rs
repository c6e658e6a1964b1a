//! Ids, initialize, notifications and server requests reach the right client.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::fake_server::FakeOptions;
use super::*;
use crate::gateway::jsonrpc::{id_from_json, RequestId};
use crate::gateway::session_mux::Route;

/// The id a session uses for its `n`-th call: the same set in every session (so they all
/// collide), half integers, half strings.
fn id_for(n: usize) -> Value {
    if n.is_multiple_of(2) {
        json!(n)
    } else {
        json!(format!("call-{n}"))
    }
}

#[tokio::test(start_paused = true)]
async fn ids_never_cross_between_20_sessions_with_colliding_ids() {
    const SESSIONS: usize = 20;
    const CALLS: usize = 200;
    const WINDOW: usize = 40;
    let mut config = MuxConfig::new("files");
    config.max_in_flight = SESSIONS * WINDOW;
    let harness = Harness::start(config, FakeOptions::default());
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let mut session = harness.initialized().await;
        tasks.push(tokio::spawn(async move {
            // id → the text only this session's call with that id sent.
            let mut waiting: HashMap<RequestId, String> = HashMap::new();
            let mut sent = 0;
            let mut answered = 0;
            while answered < CALLS {
                while sent < CALLS && waiting.len() < WINDOW {
                    let text = format!("session {s} call {sent}");
                    let id = id_for(sent);
                    waiting.insert(id_from_json(&id).unwrap(), text.clone());
                    session.send(call(id, "echo", &text)).await.unwrap();
                    sent += 1;
                }
                let message = next(&mut session).await;
                let answer = json_of(&message);
                let id = id_from_json(&answer["id"]).unwrap();
                assert_eq!(message.route, Route::Response(id.clone()));
                let expected = waiting.remove(&id).expect("an answer to a waiting id");
                assert_eq!(answer["result"]["content"][0]["text"], json!(expected));
                answered += 1;
            }
            assert!(waiting.is_empty());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let upstream_ids: HashSet<String> = harness.log(|log| {
        assert_eq!(log.initializes, 1);
        log.request_ids.iter().map(Value::to_string).collect()
    });
    assert_eq!(
        upstream_ids.len(),
        // and the initialize and the gateway's own discover
        SESSIONS * CALLS + 2,
        "every upstream id is unique"
    );
    assert_eq!(
        harness.sink.count("tools/call", CallOutcome::Ok),
        SESSIONS * CALLS
    );
    assert_eq!(harness.sink.count("initialize", CallOutcome::Ok), SESSIONS);
    assert_eq!(harness.mux.stats().in_flight, 0);
    assert_eq!(harness.mux.stats().upstream_unknown, 0);
    assert_eq!(harness.mux.stats().upstream_late, 0);
}

#[tokio::test(start_paused = true)]
async fn initialize_goes_upstream_once_and_is_shared() {
    let options = FakeOptions {
        init_delay: Duration::from_millis(100),
        ..FakeOptions::default()
    };
    let harness = Harness::start(MuxConfig::new("files"), options);
    let mut sessions = Vec::new();
    for n in 0..5 {
        let session = harness.session().await;
        session
            .send(initialize(json!(format!("init-{n}"))))
            .await
            .unwrap();
        sessions.push(session);
    }
    let mut results = Vec::new();
    for (n, session) in sessions.iter_mut().enumerate() {
        let answer = json_of(&next(session).await);
        assert_eq!(answer["id"], json!(format!("init-{n}")));
        results.push(answer["result"].clone());
        let initialized = notification("notifications/initialized", json!({}));
        session.send(initialized).await.unwrap();
    }
    assert!(results.iter().all(|result| *result == results[0]));
    // A later session is answered from the cache, without waiting for the server.
    let mut late = harness.session().await;
    late.send(initialize(json!(1))).await.unwrap();
    let answer = json_of(&next(&mut late).await);
    assert_eq!(
        (answer["id"].clone(), answer["result"].clone()),
        (json!(1), results[0].clone())
    );
    late.send(call(json!(2), "echo", "x")).await.unwrap();
    next(&mut late).await;
    harness.log(|log| {
        assert_eq!(log.initializes, 1);
        assert_eq!(
            log.initialized, 1,
            "the gateway's own, once; clients' are dropped"
        );
    });
    assert_eq!(harness.sink.count("initialize", CallOutcome::Ok), 6);
}

#[tokio::test(start_paused = true)]
async fn a_failed_initialize_reaches_every_waiter_and_is_not_cached() {
    let options = FakeOptions {
        init_delay: Duration::from_millis(100),
        init_fails_first: true,
        ..FakeOptions::default()
    };
    let harness = Harness::start(MuxConfig::new("files"), options);
    let mut first = harness.session().await;
    let mut second = harness.session().await;
    first.send(initialize(json!(1))).await.unwrap();
    second.send(initialize(json!(1))).await.unwrap();
    for session in [&mut first, &mut second] {
        let answer = json_of(&next(session).await);
        assert_eq!(answer["error"]["message"], json!("not yet"));
    }
    first.send(initialize(json!(2))).await.unwrap();
    assert!(json_of(&next(&mut first).await)["result"].is_object());
    harness.log(|log| assert_eq!((log.initializes, log.initialized), (2, 1)));
    assert_eq!(
        harness.sink.count("initialize", CallOutcome::JsonRpcError),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn list_changed_reaches_every_session() {
    let harness = Harness::default_start();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(harness.initialized().await);
    }
    let line = notification("notifications/tools/list_changed", json!({}));
    harness.inject.send(line).await.unwrap();
    for session in &mut sessions {
        let message = next(session).await;
        assert_eq!(message.route, Route::Standalone);
        assert_eq!(
            json_of(&message)["method"],
            json!("notifications/tools/list_changed")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn progress_reaches_only_the_session_whose_request_carried_the_token() {
    let harness = Harness::default_start();
    let mut a = harness.initialized().await;
    let mut b = harness.initialized().await;
    let mut idle = harness.initialized().await;
    // Both clients use the same request id and the same progress token.
    for session in [&a, &b] {
        let params = json!({"name": "progress", "arguments": {}, "_meta": {"progressToken": "p"}});
        session
            .send(request(json!(9), "tools/call", params))
            .await
            .unwrap();
    }
    for session in [&mut a, &mut b] {
        for expected in [1, 2] {
            let message = next(session).await;
            assert_eq!(
                message.route,
                Route::Related(id_from_json(&json!(9)).unwrap())
            );
            let progress = json_of(&message);
            assert_eq!(progress["params"]["progressToken"], json!("p"));
            assert_eq!(progress["params"]["progress"], json!(expected));
        }
        let answer = next(session).await;
        assert_eq!(
            answer.route,
            Route::Response(id_from_json(&json!(9)).unwrap())
        );
    }
    assert!(quiet(&mut idle).await);
    let tokens = harness.log(|log| log.progress_tokens.clone());
    assert_eq!(tokens.len(), 2);
    assert_ne!(
        tokens[0], tokens[1],
        "upstream tokens are the gateway's own"
    );
    // Progress for a finished request, or with a token never given, goes nowhere.
    for token in [tokens[0].clone(), json!("p"), json!(12345)] {
        let params = json!({"progressToken": token, "progress": 3});
        harness
            .inject
            .send(notification("notifications/progress", params))
            .await
            .unwrap();
    }
    eventually(|| harness.mux.stats().upstream_unroutable == 3).await;
    assert!(quiet(&mut a).await && quiet(&mut b).await);
}

#[tokio::test(start_paused = true)]
async fn outcomes_and_tools_are_measured() {
    let harness = Harness::default_start();
    let mut session = harness.initialized().await;
    for (n, tool) in ["echo", "fail", "rpc_error"].into_iter().enumerate() {
        session
            .send(call(json!(n), tool, "secret argument"))
            .await
            .unwrap();
        let answer = json_of(&next(&mut session).await);
        assert_eq!(answer["id"], json!(n));
    }
    session
        .send(request(json!(10), "tools/list", json!({})))
        .await
        .unwrap();
    next(&mut session).await;
    let calls: Vec<_> = harness
        .sink
        .events()
        .into_iter()
        .filter(|event| event.method != "initialize")
        .map(|event| {
            (
                event.method,
                event.tool,
                event.outcome,
                event.server.to_string(),
            )
        })
        .collect();
    let tool = |name: &str| Some(name.to_owned());
    let files = "files".to_owned();
    assert_eq!(
        calls,
        vec![
            (
                "tools/call".into(),
                tool("echo"),
                CallOutcome::Ok,
                files.clone()
            ),
            (
                "tools/call".into(),
                tool("fail"),
                CallOutcome::ToolError,
                files.clone()
            ),
            (
                "tools/call".into(),
                tool("rpc_error"),
                CallOutcome::JsonRpcError,
                files.clone()
            ),
            ("tools/list".into(), None, CallOutcome::Ok, files),
        ]
    );
    let debug = format!("{:?}", harness.sink.events());
    assert!(
        !debug.contains("secret argument"),
        "events never carry arguments"
    );
}
