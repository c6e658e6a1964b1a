//! Operator commands travel collector → agent over the agent's own stream and the agent's
//! answer comes back; an offline or vanished agent is a clear error, never a hang.

use std::time::Duration;

use mcpwatch_collector::command::{CommandError, CommandRouter};
use mcpwatch_collector::config::CollectorConfig;
use mcpwatch_common::wire::CommandAction;
use mcpwatch_tests::process::{AgentProc, CollectorFiles};
use mcpwatch_tests::{http_get, Pki};
use tokio_util::sync::CancellationToken;

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_agent_and_results_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let files = CollectorFiles::write(&pki, &tmp.path().join("c"), "");
    let config = CollectorConfig::load(&files.config).unwrap();
    let router = CommandRouter::new();
    let shutdown = CancellationToken::new();
    let collector = tokio::spawn(mcpwatch_collector::run_with_router(
        config,
        shutdown.clone(),
        router.clone(),
    ));
    let http = files.http;
    until("collector ready", || {
        matches!(http_get(http, "/readyz"), Ok((200, _)))
    })
    .await;

    let offline = router
        .send("web-1", restart("x"), Duration::from_secs(5))
        .await;
    assert_eq!(offline, Err(CommandError::AgentOffline("web-1".into())));

    let mut agent = tokio::task::spawn_blocking({
        let (pki_dir, dir, ingest) = (pki.dir.clone(), tmp.path().join("a"), files.ingest);
        move || {
            let pki = Pki { dir: pki_dir };
            AgentProc::start(&pki, &dir, "web-1", ingest, "100ms", "256MiB")
        }
    })
    .await
    .unwrap();
    until("agent session", || router.is_connected("web-1")).await;

    // This agent supervises nothing: the answer says so, through the whole path.
    let result = router
        .send("web-1", restart("x"), Duration::from_secs(10))
        .await
        .expect("an answer");
    assert!(!result.ok);
    assert!(
        result.message.contains("supervises no MCP servers"),
        "{result:?}"
    );

    // Batches keep flowing around commands.
    let acked = agent.acked();
    for _ in 0..5 {
        router
            .send("web-1", restart("x"), Duration::from_secs(10))
            .await
            .expect("an answer");
    }
    tokio::task::block_in_place(|| agent.wait_acked_more(2.0));
    assert!(agent.acked() > acked);

    tokio::task::block_in_place(|| agent.kill9());
    until("session gone", || !router.is_connected("web-1")).await;
    let gone = router
        .send("web-1", restart("x"), Duration::from_secs(5))
        .await;
    assert_eq!(gone, Err(CommandError::AgentOffline("web-1".into())));

    shutdown.cancel();
    collector.await.unwrap().unwrap();
}

fn restart(server: &str) -> CommandAction {
    CommandAction::RestartServer {
        server: server.into(),
    }
}
