//! The collector's frame limit end to end (issue 10, item 11): an agent whose spool holds
//! records stored under a larger limit than its collector accepts keeps delivering. A record
//! that can be cut is replaced by records that fit, exactly once; what is too large even
//! alone is set aside, counted on the agent's /metrics and stored by the collector as a gap.
//! Before the limit was sent in the Welcome, the first such record ended every session it
//! was resent in, and nothing after it was ever delivered.

use std::time::Duration;

use mcpwatch_agent::spool::{Spool, SpoolBatch, SpoolConfig, REJECTED_DIR};
use mcpwatch_common::wire::SeriesKey;
use mcpwatch_tests::process::{AgentProc, CollectorProc};
use mcpwatch_tests::{db, wait_for, Pki};

const SEED: &str = "mcpwatch_seed_metric";
const AFTER: &str = "mcpwatch_seed_after";

/// Seeds the agent's spool as an agent does when it spools under the default 1 MiB limit
/// before meeting a collector that accepts 16 KiB: seq 1 holds 2000 samples (about 80 KB on
/// the wire), seq 2 one sample whose series key alone is 40 KB, seq 3 a small batch.
fn seed(spool: &std::path::Path) {
    let mut s = Spool::open(SpoolConfig::new(spool, 256 << 20)).expect("open spool");
    let wide = (0..2000)
        .map(|i| (SeriesKey::new(SEED, &[("i", &format!("{i:06}"))]), i as f64))
        .collect();
    let huge = SeriesKey::new("mcpwatch_seed_huge", &[("v", &"x".repeat(40 << 10))]);
    let now = mcpwatch_common::time::now_ms();
    for batch in [
        SpoolBatch::at(now, wide),
        SpoolBatch::at(now, vec![(huge, 1.0)]),
        SpoolBatch::at(now, vec![(SeriesKey::new(AFTER, &[]), 1.0)]),
    ] {
        s.append(batch).expect("append");
    }
    assert_eq!(s.next_seq(), 4, "one record each");
}

fn uplink_errors(agent: &AgentProc) -> f64 {
    let m = agent.metrics();
    ["io", "tls", "protocol", "rejected"]
        .iter()
        .map(|k| {
            let name = format!("mcpwatch_agent_uplink_errors_total{{kind=\"{k}\"}}");
            mcpwatch_tests::metric(&m, &name).unwrap_or(0.0)
        })
        .sum()
}

#[test]
fn records_over_the_collectors_frame_limit_never_block_the_uplink() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(&pki, &tmp.path().join("c"), "max_frame_size = \"16KiB\"");
    let mut agent = AgentProc::configure(
        &pki,
        &tmp.path().join("a"),
        "web-1",
        collector.ingest,
        "100ms",
        "256MiB",
    );
    seed(&agent.spool);
    agent.restart();

    // Everything behind the big records arrives, and the uplink keeps going.
    wait_for(
        "the 2000 split samples and seq 3",
        Duration::from_secs(60),
        || {
            let seeded = db::series_count(&collector.db, "web-1", SEED) == 2000;
            let after = db::series_count(&collector.db, "web-1", AFTER) == 1;
            (seeded && after).then_some(())
        },
    );
    agent.wait_acked_more(5.0);
    assert_eq!(uplink_errors(&agent), 0.0, "no session ended");

    // The record that cannot be cut: a gap at its seq for its one sample, counted, kept.
    wait_for("the gap at seq 2", Duration::from_secs(30), || {
        (db::gaps(&collector.db, "web-1") == vec![(2, 2, 1)]).then_some(())
    });
    let metric = |name: &str| agent.metric(name);
    assert_eq!(metric("mcpwatch_agent_spool_records_oversized_total"), 1.0);
    assert!(metric("mcpwatch_agent_spool_records_split_total") >= 1.0);
    let kept = agent
        .spool
        .join(REJECTED_DIR)
        .join(format!("{:020}.rec", 2));
    assert!(kept.exists(), "{} kept for a human", kept.display());
    let stored = db::batches(&collector.db, "web-1");
    db::assert_no_duplicates(&stored);
    assert!(
        stored.iter().all(|(seq, _)| *seq != 1 && *seq != 2),
        "replaced seqs never reach the collector: {stored:?}"
    );
    assert!(stored.iter().any(|(seq, _)| *seq == 3));
    // The 2000 samples arrived as several batches, each under the limit.
    let pieces: u64 = stored
        .iter()
        .filter(|(seq, _)| *seq > 3)
        .map(|(_, n)| *n)
        .sum();
    assert!(pieces >= 2000, "{pieces}");

    // A crash and restart replace nothing twice and report no second gap.
    agent.kill9();
    agent.restart();
    agent.wait_acked_more(5.0);
    assert_eq!(db::gaps(&collector.db, "web-1"), vec![(2, 2, 1)]);
    assert_eq!(db::series_count(&collector.db, "web-1", SEED), 2000);
    db::assert_no_duplicates(&db::batches(&collector.db, "web-1"));
    assert_eq!(
        agent.metric("mcpwatch_agent_spool_records_oversized_total"),
        0.0,
        "nothing left to set aside after the restart"
    );
    assert_eq!(uplink_errors(&agent), 0.0);
}

/// The Welcome carries the collector's limit (protocol 2); an agent still speaking
/// protocol 1 gets the Welcome it decodes (no limit field) and can stream as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_announces_the_limit_and_version_1_agents_are_still_served() {
    use mcpwatch_common::wire::{Batch, Frame, Welcome, PROTOCOL_VERSION};
    use mcpwatch_tests::client::{config, Conn};
    use tokio::io::AsyncReadExt;

    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let collector = CollectorProc::start(&pki, &tmp.path().join("c"), "max_frame_size = \"16KiB\"");
    let certs = pki.agent("web-7");
    let cfg = config(&pki.ca(), &certs.cert, &certs.key);

    let mut conn = Conn::open(collector.ingest, cfg.clone()).await.unwrap();
    match conn.handshake(Conn::hello("web-7")).await.unwrap() {
        Frame::Welcome(Welcome {
            protocol_version,
            max_frame_len,
            ..
        }) => assert_eq!(
            (protocol_version, max_frame_len),
            (PROTOCOL_VERSION, 16 << 10)
        ),
        other => panic!("expected Welcome, got {other:?}"),
    }
    drop(conn);

    let mut conn = Conn::open(collector.ingest, cfg).await.unwrap();
    let mut hello = Conn::hello("web-7");
    hello.protocol_version = 1;
    conn.send(Frame::Hello(hello)).await.unwrap();
    // Read the answer as bytes: version 2's Welcome type cannot decode version 1's.
    let io = conn.framed.get_mut();
    let len = io.read_u32().await.unwrap() as usize;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await.unwrap();
    let ((variant, version, resume), rest) =
        postcard::take_from_bytes::<(u32, u16, u64)>(&body).unwrap();
    assert_eq!(
        (variant, version, resume),
        (1, 1, 1),
        "Welcome, version 1, seq 1"
    );
    assert!(rest.is_empty(), "no field version 1 does not know");
    // Batches and acks are the same in both versions.
    conn.send(Frame::Batch(Batch {
        seq: 1,
        new_series: vec![],
        samples: vec![],
        events: vec![],
    }))
    .await
    .unwrap();
    assert_eq!(conn.recv().await.unwrap(), Frame::Ack { seq: 1 });
}
