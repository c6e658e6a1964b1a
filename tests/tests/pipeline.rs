//! End to end over real mutual TLS and real SQLite files, with the real binaries: what the
//! agent samples is what the collector stores, through collector crashes, agent crashes and
//! outages, exactly once.

use std::time::Duration;

use mcpwatch_tests::process::{final_counts, AgentProc, CollectorProc, Pair};
use mcpwatch_tests::{db, wait_for, Pki};

const FAST: &str = "100ms";

fn setup() -> (tempfile::TempDir, Pki) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    (tmp, pki)
}

/// Waits until the agent has nothing un-acked and at least `min_acked` batches acked.
fn wait_drained(agent: &AgentProc, min_acked: f64) {
    wait_for("agent spool drained", Duration::from_secs(60), || {
        let m = agent.metrics();
        let pending = mcpwatch_tests::metric(&m, "mcpwatch_agent_spool_pending_records")?;
        let acked = mcpwatch_tests::metric(&m, "mcpwatch_agent_batches_acked_total")?;
        (pending <= 1.0 && acked >= min_acked).then_some(())
    });
}

#[test]
fn samples_sent_equal_samples_stored() {
    let Pair {
        mut agent,
        collector,
        tmp: _tmp,
        ..
    } = Pair::start();
    wait_drained(&agent, 15.0);
    assert!(agent.stop().success());
    let (collected, dropped, pending) = final_counts(&agent.logs());
    assert_eq!((dropped, pending), (0, 0));
    let batches = db::batches(&collector.db, "web-1");
    db::assert_no_duplicates(&batches);
    assert!(collected >= 15 * 10, "collected {collected}");
    assert_eq!(db::sample_count(&collector.db, "web-1"), collected);
}

#[test]
fn collector_kill9_ten_times_loses_and_duplicates_nothing() {
    let Pair {
        mut agent,
        mut collector,
        tmp: _tmp,
        ..
    } = Pair::start();
    for round in 0..10u64 {
        // Let a few batches flow (some acked, some in flight), then crash mid-stream.
        agent.wait_acked_more(2.0 + (round % 3) as f64);
        collector.kill9();
        collector.restart();
    }
    wait_drained(&agent, 30.0);
    assert!(agent.stop().success());
    let (collected, dropped, pending) = final_counts(&agent.logs());
    assert_eq!((dropped, pending), (0, 0), "nothing dropped, nothing left");
    let batches = db::batches(&collector.db, "web-1");
    db::assert_no_duplicates(&batches);
    assert_eq!(
        db::sample_count(&collector.db, "web-1"),
        collected,
        "0 samples lost"
    );
    assert!(
        agent.metric("mcpwatch_agent_reconnects_total").is_nan(),
        "agent is stopped"
    );
}

#[test]
fn agent_kill9_replays_its_unacked_spool() {
    let Pair {
        mut agent,
        mut collector,
        tmp,
        ..
    } = Pair::start();
    wait_drained(&agent, 3.0);
    collector.kill9();
    wait_for(
        "un-acked batches in the spool",
        Duration::from_secs(30),
        || (agent.metric("mcpwatch_agent_spool_pending_records") >= 8.0).then_some(()),
    );
    agent.kill9();

    // What the killed agent left behind, read from a copy so the original stays untouched.
    let copy = tmp.path().join("spool-copy");
    copy_dir(&agent.spool, &copy);
    let spool = mcpwatch_agent::spool::Spool::open(mcpwatch_agent::spool::SpoolConfig {
        dir: copy,
        max_bytes: 256 << 20,
        segment_bytes: 1 << 20,
        fsync: false,
        max_frame_len: mcpwatch_common::wire::DEFAULT_MAX_FRAME_LEN,
        keep_acked: std::time::Duration::ZERO,
    })
    .expect("open spool copy");
    let left = spool
        .read_from(0, usize::MAX, usize::MAX)
        .expect("read spool copy");
    assert!(left.len() >= 8, "{} records left", left.len());

    agent.restart();
    collector.restart();
    wait_drained(&agent, 1.0);
    assert!(agent.stop().success());
    let stored = db::batches(&collector.db, "web-1");
    db::assert_no_duplicates(&stored);
    for record in &left {
        let n = record.samples.len() as u64;
        assert!(
            stored.contains(&(record.seq, n)),
            "spooled seq {} ({n} samples) missing after replay",
            record.seq
        );
    }
}

#[test]
fn spool_overflow_counts_exactly_the_dropped_samples_and_the_collector_records_the_gap() {
    let (tmp, pki) = setup();
    let mut collector = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let mut agent = AgentProc::start(
        &pki,
        &tmp.path().join("a"),
        "web-1",
        collector.ingest,
        FAST,
        "64KiB",
    );
    wait_drained(&agent, 3.0);
    collector.kill9();
    wait_for("spool overflow", Duration::from_secs(60), || {
        (agent.metric("mcpwatch_agent_dropped_samples_total") >= 200.0).then_some(())
    });
    collector.restart();
    wait_drained(&agent, 1.0);
    let dropped = agent.metric("mcpwatch_agent_dropped_samples_total");
    assert!(agent.stop().success());
    let (_, dropped_final, _) = final_counts(&agent.logs());
    assert_eq!(dropped as u64, dropped_final, "no drops after the outage");
    let gaps = db::gaps(&collector.db, "web-1");
    assert!(!gaps.is_empty(), "collector recorded no gap");
    let gap_samples: u64 = gaps.iter().map(|g| g.2).sum();
    assert_eq!(
        gap_samples, dropped_final,
        "gap samples == agent's dropped samples"
    );
    let stored = db::batches(&collector.db, "web-1");
    db::assert_no_duplicates(&stored);
    for (first, last, _) in &gaps {
        assert!(
            stored.iter().all(|(seq, _)| seq < first || seq > last),
            "a dropped seq in {first}..={last} was stored"
        );
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

/// Two agents on one spool, as in a rollout's overlap (on a node each pod has its own
/// network, so only the state is shared): the second waits for the spool's lock, naming the
/// first, while the first streams on; when the first stops, the second takes over with the
/// next seq — nothing lost, nothing twice.
#[test]
fn a_second_agent_on_the_same_spool_waits_for_the_first_then_takes_over() {
    use mcpwatch_tests::process::{signal, wait_while_running};
    let Pair {
        mut agent,
        collector,
        tmp,
        ..
    } = Pair::start();
    let first_pid = agent.child.as_ref().expect("running").id();
    let (first_config, first_metrics, first_gateway) =
        (agent.config.clone(), agent.metrics_addr, agent.gateway_addr);
    // The first agent's config on ports of its own; its log and metrics address.
    let spawn_second = |n: u32| {
        let metrics = mcpwatch_tests::free_addr();
        let text = std::fs::read_to_string(&first_config)
            .expect("config")
            .replace(&format!("\"{first_metrics}\""), &format!("\"{metrics}\""))
            .replace(
                &format!("\"{first_gateway}\""),
                &format!("\"{}\"", mcpwatch_tests::free_addr()),
            );
        let config = tmp.path().join(format!("second-{n}.toml"));
        std::fs::write(&config, text).expect("write config");
        let log = tmp.path().join(format!("second-{n}.log"));
        let child = std::process::Command::new(mcpwatch_tests::bin("mcpwatch-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn the second agent");
        (KilledOnDrop(child), log, metrics)
    };
    let (mut second, mut log, mut metrics) = spawn_second(1);
    let read = |log: &std::path::Path| std::fs::read_to_string(log).unwrap_or_default();
    wait_while_running(
        &mut second.0,
        &[&log],
        "the second agent waiting for the spool",
        Duration::from_secs(20),
        || read(&log).contains("; waiting up to 30s").then_some(()),
    );
    let holder = format!("is in use by mcpwatch-agent (pid {first_pid} on ");
    assert!(read(&log).contains(&holder), "{}", read(&log));
    agent.wait_acked_more(3.0);
    assert!(agent.stop().success());
    let (collected_first, dropped, _) = final_counts(&agent.logs());
    assert_eq!(dropped, 0);
    // The second opens the spool and streams from where the first stopped. Its listeners
    // are bound only now: a port taken meanwhile by another test is tried again on others.
    for attempt in 2..=4 {
        let streaming = wait_for("the second agent drained", LONG, || {
            if let Ok(Some(_)) = second.0.try_wait() {
                return Some(false);
            }
            let (_, m) = mcpwatch_tests::http_get(metrics, "/metrics").ok()?;
            let acked = mcpwatch_tests::metric(&m, "mcpwatch_agent_batches_acked_total")?;
            let pending = mcpwatch_tests::metric(&m, "mcpwatch_agent_spool_pending_records")?;
            (acked >= 5.0 && pending <= 1.0).then_some(true)
        });
        if streaming {
            break;
        }
        let text = read(&log);
        assert!(
            attempt < 4 && text.contains("Address already in use"),
            "{text}"
        );
        (second, log, metrics) = spawn_second(attempt);
    }
    signal(&second.0, "TERM");
    assert!(second.0.wait().expect("wait").success());
    let (collected_second, dropped, pending) = final_counts(&read(&log));
    assert_eq!((dropped, pending), (0, 0));
    db::assert_no_duplicates(&db::batches(&collector.db, "web-1"));
    assert!(db::gaps(&collector.db, "web-1").is_empty());
    assert_eq!(
        db::sample_count(&collector.db, "web-1"),
        collected_first + collected_second
    );
}

const LONG: Duration = Duration::from_secs(60);

/// A child process killed when the test ends, however it ends.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
