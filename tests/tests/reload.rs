//! SIGHUP reloads the collector's certificates and CA bundle: a new CA is trusted from then
//! on, and connections already up are not dropped.

use std::time::Duration;

use mcpwatch_common::wire::Frame;
use mcpwatch_tests::client::{config, Conn};
use mcpwatch_tests::process::{signal, Pair};
use mcpwatch_tests::Pki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_trusts_a_new_ca_without_dropping_live_agents() {
    let Pair {
        agent,
        collector,
        pki,
        tmp,
    } = Pair::start();
    let other = Pki::new(&tmp.path().join("pki-b"));
    let b = other.agent("web-2");
    let cfg = config(&pki.ca(), &b.cert, &b.key);
    let try_b = || async {
        match Conn::open(collector.ingest, cfg.clone()).await {
            Ok(mut c) => matches!(
                c.handshake(Conn::hello("web-2")).await,
                Ok(Frame::Welcome(_))
            ),
            Err(_) => false,
        }
    };
    assert!(!try_b().await, "CA B must not be trusted before the reload");

    let bundle = [
        std::fs::read_to_string(pki.ca()).unwrap(),
        std::fs::read_to_string(other.ca()).unwrap(),
    ]
    .concat();
    std::fs::write(tmp.path().join("c/ca-bundle.crt"), bundle).unwrap();
    signal(collector.child.as_ref().unwrap(), "HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !try_b().await {
        assert!(
            std::time::Instant::now() < deadline,
            "CA B still refused after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    agent.wait_acked_more(3.0);
    assert_eq!(
        agent.metric("mcpwatch_agent_reconnects_total"),
        0.0,
        "live agent was dropped"
    );
    // The file watch may have seen the bundle first; the SIGHUP reloads in any case, and
    // says so (SIGHUP alone, with a change the watch cannot see, is tested in revocation.rs).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !collector
        .logs()
        .lines()
        .any(|l| l.contains("ingest TLS files reloaded") && l.contains("SIGHUP"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no SIGHUP reload logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
