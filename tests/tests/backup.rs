//! Backup and restore end to end, with the real binaries: an online backup (API and CLI)
//! while 20 agents stream, the restore refused under a running collector and for a newer
//! schema, then the backup restored on a "new machine" (another directory, same address):
//! the agents reconnect and their spools replay what the backup lacks, so every sample they
//! took is stored exactly once, and users, tokens, rules, alert state and the audit chain
//! come back.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mcpwatch_tests::api::{admin_token, Api};
use mcpwatch_tests::process::{final_counts, AgentProc, CollectorProc};
use mcpwatch_tests::{bin, db, wait_for, Pki};
use serde_json::{json, Value};

const AGENTS: usize = 20;
const LONG: Duration = Duration::from_secs(90);

fn cli(args: &[&str], config: &Path) -> Output {
    Command::new(bin("mcpwatch-collector"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run mcpwatch-collector")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Cumulative bucket counts of the commit-latency histogram: (upper bound, count).
fn latency_buckets(metrics: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("mcpwatch_collector_commit_latency_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// Upper bound of the bucket holding the 99th percentile of the commits between two
/// snapshots of the histogram.
fn p99_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> (f64, f64) {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    let bound = delta
        .iter()
        .find(|(_, n)| *n >= total * 0.99)
        .map_or(f64::NAN, |d| d.0);
    (bound, total)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn backup_while_streaming_then_restore_elsewhere_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let backups = tmp.path().join("backups");
    let extra = format!(
        "\n[backup]\ndir = \"{}\"\ninterval = \"0s\"\nkeep = 3\n",
        backups.display()
    );
    let mut collector = CollectorProc::start(&pki, &tmp.path().join("c"), &extra);
    let admin_secret = admin_token(&collector.db, "backup-test", None);
    let admin = Api::new(collector.http, Some(&admin_secret));
    let mut agents: Vec<AgentProc> = (0..AGENTS)
        .map(|i| {
            let name = format!("node-{i:02}");
            AgentProc::start(
                &pki,
                &tmp.path().join(&name),
                &name,
                collector.ingest,
                "200ms",
                "64MiB",
            )
        })
        .collect();

    // State besides samples: a user, a token of theirs, a rule and the alert it fires.
    let r = admin.send(
        "POST",
        "/api/v1/users",
        &json!({"username": "carol", "password": "keeps-many-backups-1", "roles": ["viewer"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let carol_id = r.json()["id"].as_i64().unwrap();
    let r = admin.send(
        "POST",
        "/api/v1/tokens",
        &json!({"name": "carol-script", "user_id": carol_id}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let carol_token = r.json()["token"].as_str().unwrap().to_owned();
    let r = admin.send(
        "PUT",
        "/api/v1/rules/memory_present",
        &json!({"selector": "mcpwatch_host_memory_total_bytes", "op": ">", "critical": 0.0,
                "summary": "memory on {{ $labels.host }}"}),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    let firing = wait_for("alerts firing for every host", LONG, || {
        let list = admin
            .get("/api/v1/alerts?rule=memory_present&limit=100")
            .json();
        let a = items(&list);
        (a.len() == AGENTS && a.iter().all(|x| x["status"] == "firing")).then_some(a)
    });
    let mut fingerprints: Vec<String> = firing
        .iter()
        .map(|a| a["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    fingerprints.sort();
    for a in &agents {
        a.wait_acked_more(5.0);
    }

    // Online backups while every agent streams: one through the API, one with the CLI.
    let before = latency_buckets(&collector.metrics());
    let r = admin.send("POST", "/api/v1/backups", &json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    let taken = r.json();
    let file = backups.join(taken["file"].as_str().unwrap());
    let cli_copy = tmp.path().join("cli-backup.db");
    let out = cli(
        &["backup", "--to", cli_copy.to_str().unwrap()],
        &collector.config,
    );
    assert!(out.status.success(), "{}", text(&out));
    let after = latency_buckets(&collector.metrics());
    let (p99, commits) = p99_between(&before, &after);
    println!(
        "backup: {} bytes in {} ms (API); commits during the backups: {commits}, p99 <= {p99} s",
        taken["bytes"], taken["duration_ms"]
    );
    assert!(commits > 0.0, "ingest kept committing during the backups");
    for f in [&file, &cli_copy] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let listed = admin.get("/api/v1/backups").json();
    assert_eq!(listed[0]["file"], taken["file"], "{listed}");
    // Verified on its own here too, and the request is in the audit log.
    for f in [&file, &cli_copy] {
        let c =
            rusqlite::Connection::open_with_flags(f, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "{}", f.display());
    }
    let audit = admin
        .get("/api/v1/audit?action=POST%20/api/v1/backups&result=201")
        .json();
    assert_eq!(items(&audit).len(), 1, "{audit}");
    let m = collector.metrics();
    assert!(
        mcpwatch_tests::metric(
            &m,
            "mcpwatch_collector_backup_last_success_timestamp_seconds"
        )
        .unwrap_or(0.0)
            > 0.0
    );
    // What the backup holds: each agent's resume point.
    let resume: Vec<(String, i64)> = {
        let c = rusqlite::Connection::open(&file).unwrap();
        let mut s = c
            .prepare("SELECT h.agent_id, s.last_seq FROM agent_seq s JOIN hosts h ON h.id = s.host_id ORDER BY 1")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(resume.len(), AGENTS);

    // More is acknowledged after the backup: that is what the spools must give back.
    for a in &agents {
        a.wait_acked_more(5.0);
    }

    // Not under a running collector.
    let out = cli(
        &["restore", "--from", file.to_str().unwrap()],
        &collector.config,
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("in use by collector"), "{}", text(&out));
    // Not from a newer build.
    let newer = tmp.path().join("newer.db");
    std::fs::copy(&file, &newer).unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    collector.stop();
    collector.child = None;
    let out = cli(
        &["restore", "--from", newer.to_str().unwrap()],
        &collector.config,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("newer than this build supports"),
        "{}",
        text(&out)
    );

    // The old machine is gone: restore on a new one (same address), start it there.
    collector.relocate(&tmp.path().join("c2"));
    let out = cli(
        &["restore", "--from", file.to_str().unwrap()],
        &collector.config,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("node-00"), "{}", text(&out));
    collector.restart();

    // Every agent reconnects and replays; then each stops, draining what it has.
    for a in &agents {
        a.wait_acked_more(3.0);
    }
    let mut replayed = 0usize;
    for a in &mut agents {
        assert!(a.stop().success());
        if a.logs().contains("replaying what the spool keeps") {
            replayed += 1;
        }
    }
    assert_eq!(replayed, AGENTS, "every agent replayed from its spool");
    for (a, (agent_id, backup_seq)) in agents.iter().zip(&resume) {
        assert_eq!(&a.name, agent_id);
        let (collected, dropped, pending) = final_counts(&a.logs());
        assert_eq!((dropped, pending), (0, 0), "{agent_id}");
        let batches = db::batches(&collector.db, agent_id);
        db::assert_no_duplicates(&batches);
        assert!(
            batches.iter().any(|(seq, _)| *seq as i64 > *backup_seq),
            "{agent_id}: nothing after the backup"
        );
        assert_eq!(
            db::sample_count(&collector.db, agent_id),
            collected,
            "{agent_id}: every sample taken is stored once"
        );
        assert!(db::gaps(&collector.db, agent_id).is_empty(), "{agent_id}");
    }

    // Users, tokens, rules, alert state and the audit chain came back.
    let users = admin.get("/api/v1/users").json();
    assert!(users.to_string().contains("carol"), "{users}");
    let carol = Api::new(collector.http, Some(&carol_token));
    assert_eq!(
        carol.get("/api/v1/hosts").status,
        200,
        "carol's token made before the backup still signs in"
    );
    let rule = admin.get("/api/v1/rules/memory_present");
    assert_eq!(rule.status, 200, "{}", rule.body);
    let list = admin
        .get("/api/v1/alerts?rule=memory_present&limit=100")
        .json();
    let mut after_fps: Vec<String> = items(&list)
        .iter()
        .filter(|a| a["status"] == "firing")
        .map(|a| a["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    after_fps.sort();
    assert_eq!(after_fps, fingerprints, "the same alerts still fire");
    let verify = Command::new(bin("mcpwatch-collector"))
        .args(["audit", "verify", "--db"])
        .arg(&collector.db)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    let audit = admin.get("/api/v1/audit?action=store.restore").json();
    assert_eq!(items(&audit).len(), 1, "{audit}");
    drop(collector);
}
