//! The audit log's hash chain on a real collector and database file: a plain SQLite
//! connection cannot delete audit rows, retention still removes old ones and what survives
//! verifies, and rows removed or edited behind the collector's back (triggers dropped first,
//! as an attacker with the file would) are named by `mcpwatch-collector audit verify` and
//! reported on the running collector's /metrics and log.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mcpwatch_collector::store::query::audit::{insert_audit, AuditEntry};
use mcpwatch_tests::api::request;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::{bin, metric, wait_for, Pki};
use rusqlite::Connection;

const DAY_MS: i64 = 86_400_000;

/// Stops `c`, appends `toml` to its config, runs `between` on its stopped database, restarts.
fn reconfigure(c: &mut CollectorProc, toml: &str, between: impl FnOnce(&Path)) {
    c.stop();
    c.child = None;
    let mut text = std::fs::read_to_string(&c.config).unwrap();
    text.push_str(toml);
    std::fs::write(&c.config, text).unwrap();
    between(&c.db);
    c.restart();
}

fn verify_cli(db: &Path) -> Output {
    Command::new(bin("mcpwatch-collector"))
        .args(["audit", "verify", "--db"])
        .arg(db)
        .output()
        .expect("run audit verify")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A plain read-write connection, as anyone with the file has.
fn plain(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// `n` requests the API refuses (401), each leaving one audit row.
fn refused_requests(c: &CollectorProc, n: usize) {
    for _ in 0..n {
        let r = request(c.http, "GET", "/api/v1/hosts", None, None).unwrap();
        assert_eq!(r.status, 401, "{r:?}");
    }
}

fn chain_metrics(c: &CollectorProc) -> (Option<f64>, Option<f64>) {
    let m = c.metrics();
    (
        metric(&m, "mcpwatch_collector_audit_chain_ok"),
        metric(&m, "mcpwatch_collector_audit_chain_breaks_total"),
    )
}

/// Waits until the running collector has verified every row up to `id` and found them
/// whole: tampering after that is below its checkpoint, which only a full walk re-reads.
fn wait_verified(c: &CollectorProc, id: i64) {
    wait_for(
        "the chain verified up to the newest row",
        Duration::from_secs(30),
        || {
            let verified = metric(&c.metrics(), "mcpwatch_collector_audit_chain_verified_id");
            (chain_metrics(c) == (Some(1.0), Some(0.0)) && verified == Some(id as f64))
                .then_some(())
        },
    );
}

/// Waits until the running collector reports a break (within a full walk: 12 passes of 1 s).
fn wait_reported_broken(c: &CollectorProc, row: i64) {
    wait_for(
        "the collector to report the break",
        Duration::from_secs(60),
        || (chain_metrics(c) == (Some(0.0), Some(1.0))).then_some(()),
    );
    let logs = c.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("audit log hash chain broken"))
        .unwrap_or_else(|| panic!("no ERROR line about the break:\n{logs}"));
    assert!(
        line.contains("ERROR") && line.contains(&format!("row={row}")),
        "{line}"
    );
}

#[test]
fn audit_rows_cannot_be_deleted_and_a_removed_row_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let mut c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    reconfigure(&mut c, "[api]\naudit_verify_interval = \"1s\"\n", |_| {});
    refused_requests(&c, 5);
    wait_verified(&c, 5);
    let out = verify_cli(&c.db);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("audit chain OK: 5 rows verified"),
        "{}",
        text(&out)
    );

    // Through SQL, while the collector runs: no delete, no update.
    let db = plain(&c.db);
    let err = db
        .execute("DELETE FROM audit_log WHERE id = 3", [])
        .unwrap_err();
    assert!(
        err.to_string().contains("removed only by retention"),
        "{err}"
    );
    assert!(db.execute("DELETE FROM audit_log", []).is_err());
    assert!(db
        .execute("UPDATE audit_log SET actor = 'nobody'", [])
        .is_err());
    let n: i64 = db
        .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 5);

    // With the file itself: the guards dropped, a row removed.
    db.execute_batch(
        "DROP TRIGGER audit_log_delete_by_retention; DROP TRIGGER audit_log_append_only;
         DELETE FROM audit_log WHERE id = 3;",
    )
    .unwrap();
    wait_reported_broken(&c, 4);
    let out = verify_cli(&c.db);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("BROKEN at row 4") && said.contains("row 2"),
        "{said}"
    );

    // Verifying never changes the file: a database marked as from before the chain is
    // refused as it is, not migrated (and so chained afresh) first.
    c.stop();
    c.child = None;
    db.pragma_update(None, "user_version", 6).unwrap();
    let out = verify_cli(&c.db);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("before the audit chain"),
        "{}",
        text(&out)
    );
    let version: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6, "audit verify migrated the database it checked");
}

#[test]
fn audit_retention_removes_old_rows_the_rest_verifies_and_an_edit_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let mut c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let old = mcpwatch_collector::now_ms() - 3 * DAY_MS;
    let toml = "[api]\naudit_retention = \"1d\"\naudit_verify_interval = \"1s\"\n";
    reconfigure(&mut c, toml, |db| {
        mcpwatch_collector::store::admin::with_db(db, |conn| {
            for i in 0..5 {
                let entry = AuditEntry {
                    at_ms: old + i,
                    actor: "user:old".into(),
                    token_id: None,
                    session_id: None,
                    source: "127.0.0.1".into(),
                    action: "POST /api/v1/users".into(),
                    object: "/api/v1/users".into(),
                    result: 201,
                    detail: String::new(),
                    request_id: Some(format!("old-{i}")),
                };
                insert_audit(conn, &entry)?;
            }
            Ok(())
        })
        .unwrap();
    });
    // Retention runs on the collector's first ticks and records what it removed.
    wait_for(
        "retention to remove the old rows",
        Duration::from_secs(30),
        || {
            let db = plain(&c.db);
            let left: i64 = db
                .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
                .ok()?;
            let upto: i64 = db
                .query_row("SELECT upto_id FROM audit_retention", [], |r| r.get(0))
                .ok()?;
            (left == 0 && upto == 5).then_some(())
        },
    );
    refused_requests(&c, 3);
    let out = verify_cli(&c.db);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("audit chain OK: 3 rows verified")
            && said.contains("rows up to id 5 removed by retention"),
        "{said}"
    );
    let new_ids: Vec<i64> = plain(&c.db)
        .prepare("SELECT id FROM audit_log ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        new_ids,
        [6, 7, 8],
        "ids continue after what retention removed"
    );
    wait_verified(&c, 8);

    // An edit behind the collector's back: the row no longer matches its hash.
    let db = plain(&c.db);
    db.execute_batch(
        "DROP TRIGGER audit_log_append_only;
         UPDATE audit_log SET actor = 'user:someone-else' WHERE id = 7;",
    )
    .unwrap();
    let out = verify_cli(&c.db);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("BROKEN at row 7") && said.contains("content does not match"),
        "{said}"
    );
    wait_reported_broken(&c, 7);
}
