//! One collector per database: a second collector started on the same file is refused
//! after a short retry that does not block its runtime, naming the first, and the first
//! keeps serving.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_collector::config::CollectorConfig;
use mcpwatch_collector::store::StoreError;
use mcpwatch_collector::CollectorError;
use mcpwatch_tests::process::CollectorFiles;
use mcpwatch_tests::{http_get, Pki};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_collector_on_the_same_database_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let files = CollectorFiles::write(&pki, &tmp.path().join("c"), "");
    let shutdown = CancellationToken::new();
    let first = tokio::spawn(mcpwatch_collector::run(
        CollectorConfig::load(&files.config).unwrap(),
        shutdown.clone(),
    ));
    let http = files.http;
    let ready = || matches!(http_get(http, "/readyz"), Ok((200, _)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !tokio::task::block_in_place(ready) {
        assert!(!first.is_finished(), "the first collector ended early");
        assert!(
            tokio::time::Instant::now() < deadline,
            "first collector never ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Same database, other ports: only the lock can refuse it. It gives up after its short
    // retry (500 ms, for a forked child's copy of the descriptor) rather than waiting for the
    // first to end, and the retry happens off the runtime: on a single-threaded runtime, a
    // task ticking every 10 ms keeps ticking meanwhile.
    let mut second = CollectorConfig::load(&files.config).unwrap();
    second.ingest_listen.set_port(0);
    second.http_listen.set_port(0);
    let ticks = Arc::new(AtomicU32::new(0));
    let counted = ticks.clone();
    let refused = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            });
            let refused = tokio::time::timeout(
                Duration::from_secs(30),
                mcpwatch_collector::run(second, CancellationToken::new()),
            )
            .await;
            ticker.abort();
            refused
        })
    })
    .join()
    .unwrap()
    .expect("the second collector was refused, not left waiting");
    // 500 ms of retry is 50 ticks of 10 ms; a runtime blocked by the retry would see one or
    // two. Ten leaves room for a busy machine.
    let ticks = ticks.load(Ordering::Relaxed);
    assert!(
        ticks >= 10,
        "the runtime ticked {ticks} times while the lock was retried"
    );
    match refused {
        Err(CollectorError::Store(StoreError::Locked { holder, .. })) => {
            let pid = std::process::id();
            assert!(
                holder.starts_with(&format!("collector (pid {pid} on ")),
                "{holder}"
            );
        }
        other => panic!("expected the database lock's refusal, got {other:?}"),
    }

    // The first is untouched.
    assert!(tokio::task::block_in_place(ready));
    shutdown.cancel();
    first.await.unwrap().unwrap();
}
