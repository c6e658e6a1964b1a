//! Server requests (sampling, elicitation, roots, ping) reach one session by the documented
//! rule, and only that session's answer goes back.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::gateway::jsonrpc::{self, id_from_json};
use crate::gateway::session_mux::Route;

#[tokio::test(start_paused = true)]
async fn a_server_request_goes_to_the_calling_session_and_its_answer_goes_back() {
    let harness = Harness::default_start();
    let mut idle = harness.initialized().await;
    let mut caller = harness.initialized().await;
    caller.send(call(json!("c1"), "sample", "")).await.unwrap();
    let message = next(&mut caller).await;
    assert_eq!(
        message.route,
        Route::Related(id_from_json(&json!("c1")).unwrap())
    );
    let server_request = json_of(&message);
    assert_eq!(server_request["method"], json!("sampling/createMessage"));
    let server_id = server_request["id"].clone();
    // Another session cannot answer it, nor send progress on it.
    let forged =
        json!({"jsonrpc": "2.0", "id": server_id, "result": {"content": {"text": "forged"}}});
    idle.send(forged.to_string()).await.unwrap();
    let token = server_request["params"]["_meta"]["progressToken"].clone();
    let progress = json!({"progressToken": token, "progress": 1});
    idle.send(notification("notifications/progress", progress.clone()))
        .await
        .unwrap();
    eventually(|| harness.mux.stats().client_unroutable == 2).await;
    // Its own session can.
    caller
        .send(notification("notifications/progress", progress))
        .await
        .unwrap();
    let result =
        json!({"role": "assistant", "model": "m", "content": {"type": "text", "text": "sampled"}});
    let reply = json!({"jsonrpc": "2.0", "id": server_id, "result": result});
    caller.send(reply.to_string()).await.unwrap();
    let answer = json_of(&next(&mut caller).await);
    assert_eq!(answer["id"], json!("c1"));
    assert_eq!(answer["result"]["content"][0]["text"], json!("sampled"));
    assert!(quiet(&mut idle).await);
    harness.log(|log| {
        assert_eq!(log.client_answers.len(), 1);
        assert_eq!(
            log.client_answers[0]["id"], server_id,
            "the server's id, unchanged"
        );
        assert!(log
            .notifications
            .contains(&"notifications/progress".to_owned()));
    });
    assert_eq!(harness.mux.stats().server_requests, 0);
}

#[tokio::test(start_paused = true)]
async fn a_server_ping_is_answered_by_the_gateway_and_with_no_session_a_request_is_refused() {
    let harness = Harness::default_start();
    let ping = json!({"jsonrpc": "2.0", "id": "ping-1", "method": "ping"});
    harness.inject.send(ping.to_string()).await.unwrap();
    let roots = json!({"jsonrpc": "2.0", "id": "roots-1", "method": "roots/list"});
    harness.inject.send(roots.to_string()).await.unwrap();
    eventually(|| harness.log(|log| log.client_answers.len() == 2)).await;
    harness.log(|log| {
        assert_eq!(
            log.client_answers[0],
            json!({"jsonrpc": "2.0", "id": "ping-1", "result": {}})
        );
        assert_eq!(log.client_answers[1]["id"], json!("roots-1"));
        assert!(log.client_answers[1]["error"]["code"].is_i64());
    });
    assert_eq!(harness.mux.stats().server_requests_refused, 1);
}

#[tokio::test(start_paused = true)]
async fn server_requests_follow_the_documented_rule_when_several_sessions_are_busy() {
    let harness = Harness::default_start();
    let mut a = harness.initialized().await;
    let mut b = harness.initialized().await;
    let id = |value: &str| id_from_json(&json!(value)).unwrap();
    let mut n = 0;
    let mut server_request = || {
        n += 1;
        json!({"jsonrpc": "2.0", "id": format!("srv-{n}"), "method": "roots/list"}).to_string()
    };
    a.send(call(json!("a1"), "hang", "")).await.unwrap();
    eventually(|| harness.log(|log| log.hanging.len() == 1)).await;
    b.send(request(json!("b1"), "hang/resource", json!({})))
        .await
        .unwrap();
    eventually(|| harness.log(|log| log.hanging.len() == 2)).await;
    // A tools/call in flight wins over a newer request of another method.
    harness.inject.send(server_request()).await.unwrap();
    assert_eq!(next(&mut a).await.route, Route::Related(id("a1")));
    // The newest tools/call wins.
    b.send(call(json!("b2"), "hang", "")).await.unwrap();
    eventually(|| harness.log(|log| log.hanging.len() == 3)).await;
    harness.inject.send(server_request()).await.unwrap();
    assert_eq!(next(&mut b).await.route, Route::Related(id("b2")));
    // The server gives up on it: the client hears, the entry goes.
    let params = json!({"requestId": "srv-2", "reason": "no longer needed"});
    let cancel = notification("notifications/cancelled", params);
    harness.inject.send(cancel).await.unwrap();
    let heard = json_of(&next(&mut b).await);
    assert_eq!(heard["params"]["requestId"], json!("srv-2"));
    assert_eq!(harness.mux.stats().server_requests, 1);
    // Nothing of B's in flight, only A's tools/call: A.
    for client_id in ["b1", "b2"] {
        let params = json!({"requestId": client_id});
        b.send(notification("notifications/cancelled", params))
            .await
            .unwrap();
    }
    eventually(|| harness.log(|log| log.cancelled.len() == 2)).await;
    harness.inject.send(server_request()).await.unwrap();
    assert_eq!(next(&mut a).await.route, Route::Related(id("a1")));
    // Nothing in flight at all: the session that last sent a request (B), unrelated.
    a.send(notification(
        "notifications/cancelled",
        json!({"requestId": "a1"}),
    ))
    .await
    .unwrap();
    eventually(|| harness.mux.stats().in_flight == 0).await;
    harness.inject.send(server_request()).await.unwrap();
    assert_eq!(next(&mut b).await.route, Route::Standalone);
    // Its requester gone: the oldest session left.
    drop(b);
    eventually(|| harness.mux.sessions() == 1).await;
    harness.inject.send(server_request()).await.unwrap();
    let message = next(&mut a).await;
    assert_eq!(message.route, Route::Standalone);
    assert_eq!(json_of(&message)["id"], json!("srv-5"));
}

#[tokio::test(start_paused = true)]
async fn a_server_request_nobody_answers_times_out_on_both_sides() {
    let mut config = MuxConfig::new("files");
    config.request_timeout = Duration::from_secs(5);
    let harness = Harness::start(config, super::fake_server::FakeOptions::default());
    let mut caller = harness.initialized().await;
    caller.send(call(json!("c1"), "sample", "")).await.unwrap();
    let server_id = json_of(&next(&mut caller).await)["id"].clone();
    // The caller gives up on its own call (so only the server request has a deadline left)
    // and never answers the server: after the timeout the server hears -32001 for its
    // request, and the client hears that request cancelled.
    let cancel = json!({"requestId": "c1"});
    caller
        .send(notification("notifications/cancelled", cancel))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let heard = json_of(&next(&mut caller).await);
    assert_eq!(heard["method"], json!("notifications/cancelled"));
    assert_eq!(heard["params"]["requestId"], server_id);
    assert!(started.elapsed() <= Duration::from_secs(5));
    eventually(|| harness.log(|log| log.client_answers.len() == 1)).await;
    harness.log(|log| {
        assert_eq!(log.client_answers[0]["id"], server_id);
        assert_eq!(
            log.client_answers[0]["error"]["code"],
            json!(jsonrpc::REQUEST_TIMEOUT.0)
        );
    });
    let stats = harness.mux.stats();
    assert_eq!(
        (stats.server_requests, stats.server_requests_timed_out),
        (0, 1)
    );
    // A late answer from the client goes nowhere.
    let late = json!({"jsonrpc": "2.0", "id": server_id, "result": {}});
    caller.send(late.to_string()).await.unwrap();
    eventually(|| harness.mux.stats().client_unroutable == 1).await;
    assert_eq!(harness.log(|log| log.client_answers.len()), 1);
}
