//! The upstream's lifecycle: the gateway's own `server/discover` before any `initialize`, a
//! discover-only server never sent one, and what is learned outlives the mux.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::fake_server::{Discover, FakeOptions};
use super::*;

/// A mux on a fake server that answers `server/discover` as `discover` says, sharing
/// `lifecycle` (as the muxes of one server do).
fn start(discover: Discover, lifecycle: &UpstreamLifecycle) -> Harness {
    let options = FakeOptions {
        discover,
        ..FakeOptions::default()
    };
    Harness::start_with(MuxConfig::new("files"), options, lifecycle)
}

/// A `tools/call` as a 2026-07-28 client sends it: no session, the revision in `_meta`.
fn modern_call(id: Value) -> String {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let params = json!({"name": "echo", "arguments": {"text": "hi"}, "_meta": meta});
    request(id, "tools/call", params)
}

#[tokio::test(start_paused = true)]
async fn a_discover_only_server_never_sees_initialize_and_modern_clients_pass() {
    let lifecycle = UpstreamLifecycle::default();
    let harness = start(Discover::Only2026, &lifecycle);
    let mut legacy = harness.session().await;
    legacy.send(initialize(json!(1))).await.unwrap();
    let refusal = json_of(&next(&mut legacy).await);
    assert_eq!(refusal["id"], json!(1), "{refusal}");
    assert_eq!(refusal["error"]["code"], json!(-32022), "{refusal}");
    assert_eq!(
        refusal["error"]["data"],
        json!({"requested": "2025-11-25", "supported": ["2026-07-28"]})
    );
    // A second one is refused the same way, from what the mux knows.
    legacy.send(initialize(json!(2))).await.unwrap();
    let again = json_of(&next(&mut legacy).await);
    assert_eq!(again["error"]["code"], json!(-32022), "{again}");
    assert_eq!(harness.log(|log| (log.discovers, log.initializes)), (1, 0));
    assert_eq!(
        lifecycle.get(),
        Lifecycle::DiscoverOnly(vec!["2026-07-28".to_owned()])
    );
    assert_eq!(harness.mux.lifecycle(), lifecycle.get());
    assert_eq!(
        harness.sink.count("initialize", CallOutcome::JsonRpcError),
        2
    );

    let mut modern = harness.session().await;
    modern.send(modern_call(json!("m"))).await.unwrap();
    let answer = json_of(&next(&mut modern).await);
    assert_eq!(answer["id"], json!("m"));
    assert_eq!(
        answer["result"]["content"][0]["text"],
        json!("hi"),
        "{answer}"
    );

    // The next mux on the same server (a re-attach) does not ask again.
    let second = start(Discover::Only2026, &lifecycle);
    let mut session = second.session().await;
    session.send(initialize(json!(3))).await.unwrap();
    let refusal = json_of(&next(&mut session).await);
    assert_eq!(refusal["error"]["code"], json!(-32022), "{refusal}");
    assert_eq!(second.log(|log| (log.discovers, log.initializes)), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_initialize_waits_for_the_discover_and_then_goes_upstream() {
    for discover in [Discover::Empty, Discover::Unknown, Discover::Hang] {
        let lifecycle = UpstreamLifecycle::default();
        let harness = start(discover, &lifecycle);
        let started = tokio::time::Instant::now();
        let mut session = harness.session().await;
        session.send(initialize(json!(7))).await.unwrap();
        let answer = json_of(&next(&mut session).await);
        assert!(answer["result"]["serverInfo"].is_object(), "{answer}");
        assert_eq!(harness.log(|log| (log.discovers, log.initializes)), (1, 1));
        assert_eq!(lifecycle.get(), Lifecycle::Initialize);
        // The discover went first: upstream id 1, the initialize 2.
        let ids = harness.log(|log| log.request_ids.clone());
        assert_eq!(ids[..2], [json!(1), json!(2)]);
        let waited = started.elapsed();
        if discover == Discover::Hang {
            // A server that ignores unknown methods costs the first client the timeout, once.
            assert!(waited >= Duration::from_secs(10), "{waited:?}");
        } else {
            assert!(waited < Duration::from_secs(1), "{waited:?}");
        }
        // Known now: the next mux goes straight to initialize.
        let second = start(discover, &lifecycle);
        second.initialized().await;
        assert_eq!(second.log(|log| (log.discovers, log.initializes)), (0, 1));
    }
}

#[tokio::test(start_paused = true)]
async fn an_initialize_refused_as_unsupported_teaches_the_mux_discover_only() {
    // Wrongly known as an `initialize` server (as after a crash during discover).
    let lifecycle = UpstreamLifecycle::known(Lifecycle::Initialize);
    let harness = start(Discover::Only2026, &lifecycle);
    let mut session = harness.session().await;
    session.send(initialize(json!(1))).await.unwrap();
    let refusal = json_of(&next(&mut session).await);
    assert_eq!(refusal["error"]["code"], json!(-32022), "{refusal}");
    assert!(matches!(lifecycle.get(), Lifecycle::DiscoverOnly(_)));
    session.send(initialize(json!(2))).await.unwrap();
    next(&mut session).await;
    assert_eq!(harness.log(|log| log.initializes), 1, "asked upstream once");
}

#[tokio::test(start_paused = true)]
async fn a_server_that_ends_during_the_discover_is_next_asked_to_initialize() {
    let (to_server, mut server_input) = mpsc::channel(8);
    let (inject, from_server) = mpsc::channel(8);
    let upstream = Upstream {
        from_server,
        to_server,
    };
    let lifecycle = UpstreamLifecycle::default();
    let config = MuxConfig::new("files");
    let shutdown = CancellationToken::new();
    let sink: Arc<dyn CallSink> = Arc::new(RecordingSink::default());
    let mux = SessionMux::spawn(config, upstream, sink, lifecycle.clone(), shutdown).unwrap();
    let mut session = mux.open_session().await.unwrap();
    session.send(initialize(json!(1))).await.unwrap();
    let discover: Value = serde_json::from_str(&server_input.recv().await.unwrap()).unwrap();
    assert_eq!(discover["method"], json!("server/discover"));
    let meta = &discover["params"]["_meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/protocolVersion"],
        json!("2026-07-28")
    );
    // Held by the mux until the discover is answered.
    eventually(|| mux.stats().in_flight == 1).await;
    drop(inject);
    let answer = json_of(&next(&mut session).await);
    assert_eq!(
        answer["error"]["code"],
        json!(crate::gateway::jsonrpc::CONNECTION_CLOSED.0)
    );
    assert_eq!(lifecycle.get(), Lifecycle::Initialize);
}
