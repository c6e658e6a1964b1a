//! The audit chain against real SQLite files: the delete trigger, retention, and what
//! verification finds after tampering done the way an attacker with the file would (plain
//! SQL, triggers dropped first).

use rusqlite::Connection;

use super::*;

fn db() -> (tempfile::TempDir, crate::store::admin::AdminDb) {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::store::admin::open(&dir.path().join("a.db")).unwrap();
    (dir, c)
}

fn entry(at_ms: i64) -> AuditEntry {
    AuditEntry {
        at_ms,
        actor: "user:alice".into(),
        token_id: Some(3),
        session_id: None,
        source: "127.0.0.1".into(),
        action: "POST /api/v1/users".into(),
        object: "/api/v1/users".into(),
        result: 201,
        detail: "created bob".into(),
        request_id: Some(format!("req-{at_ms}")),
    }
}

/// Rows at times 1..=n; returns their ids.
fn fill(c: &Connection, n: i64) -> Vec<i64> {
    (1..=n).map(|t| append(c, &entry(t)).unwrap()).collect()
}

fn intact(v: &Verdict) -> (u64, Checkpoint) {
    match v {
        Verdict::Intact { rows, checkpoint } => (*rows, checkpoint.clone()),
        other => panic!("expected an intact chain, got {other:?}"),
    }
}

fn broken_at(v: &Verdict) -> (i64, String) {
    match v {
        Verdict::Broken { id, reason, .. } => (*id, reason.clone()),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

/// What an attacker with the database file does first.
fn drop_triggers(c: &Connection) {
    c.execute_batch(
        "DROP TRIGGER audit_log_append_only; DROP TRIGGER audit_log_delete_by_retention;
         DROP TRIGGER audit_retention_forward;",
    )
    .unwrap();
}

#[test]
fn audit_chain_links_every_row_and_hashes_every_column() {
    let (_d, c) = db();
    let ids = fill(&c, 5);
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let (rows, cp) = intact(&verify(&c, None, true).unwrap());
    assert_eq!((rows, cp.id, cp.removed_upto), (5, 5, 0));
    let first: String = c
        .query_row("SELECT prev_hash FROM audit_log WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(first, GENESIS);
    // Each column changes the hash, and so does moving a value between adjacent columns.
    let base = AuditRow {
        id: 1,
        at_ms: 2,
        actor: "a".into(),
        token_id: None,
        session_id: Some(4),
        source: "s".into(),
        action: "x".into(),
        object: "y".into(),
        result: 200,
        detail: "d".into(),
        request_id: None,
    };
    let h = row_hash(&base, GENESIS);
    let variants = [
        AuditRow {
            id: 9,
            ..base.clone()
        },
        AuditRow {
            at_ms: 9,
            ..base.clone()
        },
        AuditRow {
            actor: "b".into(),
            ..base.clone()
        },
        AuditRow {
            token_id: Some(4),
            session_id: None,
            ..base.clone()
        },
        AuditRow {
            session_id: None,
            ..base.clone()
        },
        AuditRow {
            source: "sx".into(),
            action: "".into(),
            ..base.clone()
        },
        AuditRow {
            object: "z".into(),
            ..base.clone()
        },
        AuditRow {
            result: 201,
            ..base.clone()
        },
        AuditRow {
            detail: "".into(),
            ..base.clone()
        },
        AuditRow {
            request_id: Some(String::new()),
            ..base.clone()
        },
    ];
    for v in &variants {
        assert_ne!(row_hash(v, GENESIS), h, "{v:?}");
    }
    assert_ne!(row_hash(&base, &"1".repeat(64)), h);
}

#[test]
fn audit_rows_are_deleted_only_by_retention() {
    let (_d, c) = db();
    fill(&c, 6);
    for sql in [
        "DELETE FROM audit_log WHERE id = 6",
        "DELETE FROM audit_log",
        "UPDATE audit_log SET actor = 'x' WHERE id = 2",
        "UPDATE audit_retention SET upto_id = 0",
        "DELETE FROM audit_retention",
    ] {
        let err = c.execute(sql, []);
        // Moving retention's record back to where it is is not a change the trigger sees;
        // everything else is refused.
        if sql.starts_with("UPDATE audit_retention") {
            assert!(err.is_ok(), "{sql}");
            continue;
        }
        let msg = err.expect_err(sql).to_string();
        assert!(
            msg.contains("audit") && (msg.contains("retention") || msg.contains("append-only")),
            "{sql}: {msg}"
        );
    }
    // Retention removes the oldest rows (times 1..=3 are before the cutoff 4), in id order.
    assert_eq!(prune(&c, 4, 100, 99).unwrap(), 3);
    let left: Vec<i64> = c
        .prepare("SELECT id FROM audit_log ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, [4, 5, 6]);
    // Its record cannot move back, and rows it has not recorded stay undeletable.
    assert!(c
        .execute("UPDATE audit_retention SET upto_id = 1", [])
        .is_err());
    assert!(c.execute("DELETE FROM audit_log WHERE id = 4", []).is_err());
    // What survives still verifies, from retention's record.
    let (rows, cp) = intact(&verify(&c, None, true).unwrap());
    assert_eq!((rows, cp.id, cp.removed_upto), (3, 6, 3));
}

#[test]
fn audit_retention_stops_at_the_first_row_it_keeps_and_ids_never_go_back() {
    let (_d, c) = db();
    for t in [1, 2, 10, 3, 4] {
        append(&c, &entry(t)).unwrap();
    }
    // Row 4 (time 3) is older than the cutoff but comes after row 3 (time 10): removing it
    // alone would cut the chain, so it waits.
    assert_eq!(prune(&c, 5, 100, 0).unwrap(), 2);
    // A limit bounds one pass.
    let (_d2, c2) = db();
    fill(&c2, 10);
    assert_eq!(prune(&c2, 100, 4, 0).unwrap(), 4);
    assert_eq!(prune(&c2, 100, 4, 0).unwrap(), 4);
    assert_eq!(prune(&c2, 100, 4, 0).unwrap(), 2);
    intact(&verify(&c2, None, true).unwrap());
    // Everything removed: the next row continues the ids and the chain after retention's
    // record, so it can never be mistaken for a removable one.
    let id = append(&c2, &entry(200)).unwrap();
    assert_eq!(id, 11);
    assert!(c2.execute("DELETE FROM audit_log", []).is_err());
    let (rows, cp) = intact(&verify(&c2, None, true).unwrap());
    assert_eq!((rows, cp.id, cp.removed_upto), (1, 11, 10));
}

#[test]
fn audit_chain_finds_a_changed_row() {
    let (_d, c) = db();
    fill(&c, 5);
    drop_triggers(&c);
    c.execute(
        "UPDATE audit_log SET actor = 'user:mallory' WHERE id = 3",
        [],
    )
    .unwrap();
    let (id, reason) = broken_at(&verify(&c, None, true).unwrap());
    assert_eq!(id, 3);
    assert!(reason.contains("content does not match"), "{reason}");
    // Recomputing the row's own hash moves the break to the next row, which names it.
    let row: AuditRow = c
        .query_row(
            &format!("SELECT {ROW_COLUMNS} FROM audit_log WHERE id = 3"),
            [],
            |r| Ok(read_row(r)?.0),
        )
        .unwrap();
    let prev: String = c
        .query_row("SELECT prev_hash FROM audit_log WHERE id = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    c.execute(
        "UPDATE audit_log SET row_hash = ?1 WHERE id = 3",
        [row_hash(&row, &prev)],
    )
    .unwrap();
    let (id, reason) = broken_at(&verify(&c, None, true).unwrap());
    assert_eq!(id, 4);
    assert!(reason.contains("row 3"), "{reason}");
}

#[test]
fn audit_chain_finds_removed_rows_anywhere() {
    // In the middle.
    let (_d, c) = db();
    fill(&c, 5);
    drop_triggers(&c);
    c.execute("DELETE FROM audit_log WHERE id = 3", []).unwrap();
    let (id, reason) = broken_at(&verify(&c, None, true).unwrap());
    assert_eq!(id, 4);
    assert!(
        reason.contains("row 2") && reason.contains("removed"),
        "{reason}"
    );
    // The oldest, without retention's record.
    let (_d, c) = db();
    fill(&c, 5);
    drop_triggers(&c);
    c.execute("DELETE FROM audit_log WHERE id <= 2", [])
        .unwrap();
    let (id, reason) = broken_at(&verify(&c, None, true).unwrap());
    assert_eq!(id, 3);
    assert!(reason.contains("start of the chain"), "{reason}");
    // The oldest after retention ran: the survivor must follow what retention removed.
    let (_d, c) = db();
    fill(&c, 5);
    prune(&c, 2, 100, 0).unwrap();
    drop_triggers(&c);
    c.execute("DELETE FROM audit_log WHERE id = 2", []).unwrap();
    let (id, reason) = broken_at(&verify(&c, None, true).unwrap());
    assert_eq!(id, 3);
    assert!(reason.contains("retention removed (id 1)"), "{reason}");
}

#[test]
fn audit_chain_checkpoint_catches_a_cut_tail_and_a_rewound_retention() {
    let (_d, c) = db();
    fill(&c, 5);
    let (_, cp) = intact(&verify(&c, None, true).unwrap());
    // Incremental: only rows after the checkpoint are walked.
    fill(&c, 2);
    let (rows, cp2) = intact(&verify(&c, Some(&cp), false).unwrap());
    assert_eq!((rows, cp2.id), (2, 7));
    // The newest rows cut off: the rest is a valid chain, but the checkpoint row is gone.
    drop_triggers(&c);
    c.execute("DELETE FROM audit_log WHERE id >= 6", [])
        .unwrap();
    intact(&verify(&c, None, true).unwrap());
    let (id, reason) = broken_at(&verify(&c, Some(&cp2), false).unwrap());
    assert_eq!(id, 7);
    assert!(reason.contains("gone"), "{reason}");
    // A checkpoint row rewritten together with its hash.
    c.execute("UPDATE audit_log SET row_hash = ?1 WHERE id = 5", [GENESIS])
        .unwrap();
    let (id, reason) = broken_at(&verify(&c, Some(&cp), true).unwrap());
    assert_eq!(id, 5);
    assert!(reason.contains("changed since"), "{reason}");
    // Retention's record set back (to hide rows removed outside retention).
    let (_d, c) = db();
    fill(&c, 5);
    prune(&c, 3, 100, 0).unwrap();
    let (_, cp) = intact(&verify(&c, None, true).unwrap());
    drop_triggers(&c);
    c.execute("UPDATE audit_retention SET upto_id = 1", [])
        .unwrap();
    let (id, reason) = broken_at(&verify(&c, Some(&cp), false).unwrap());
    assert_eq!(id, 2);
    assert!(reason.contains("moved back"), "{reason}");
}

#[test]
fn audit_chain_resumes_past_a_break() {
    let (_d, c) = db();
    fill(&c, 6);
    drop_triggers(&c);
    c.execute("UPDATE audit_log SET detail = 'x' WHERE id IN (2, 5)", [])
        .unwrap();
    let Verdict::Broken { id, resume, .. } = verify(&c, None, true).unwrap() else {
        panic!("not broken");
    };
    assert_eq!(id, 2);
    let resume = resume.expect("a break inside the chain can be resumed past");
    let (id, _) = broken_at(&verify(&c, Some(&resume), false).unwrap());
    assert_eq!(id, 5, "the second break is found on the next pass");
}

#[test]
fn audit_chain_of_existing_rows_is_built_chunk_by_chunk() {
    let (_d, c) = db();
    fill(&c, 7);
    let (_, before) = intact(&verify(&c, None, true).unwrap());
    drop_triggers(&c);
    c.execute("UPDATE audit_log SET prev_hash = '', row_hash = ''", [])
        .unwrap();
    assert!(matches!(
        verify(&c, None, true).unwrap(),
        Verdict::Broken { id: 1, .. }
    ));
    // Chunks of 3 over 7 rows: the chain carries across chunk boundaries.
    assert_eq!(chain_in_chunks(&c, 3).unwrap(), 7);
    let (rows, after) = intact(&verify(&c, None, true).unwrap());
    assert_eq!(rows, 7);
    assert_eq!(after, before, "the same chain as appending built");
}

#[test]
fn audit_chain_refuses_a_retention_record_younger_than_any_retention() {
    // Rows written now; the attacker moves retention's record up to row 3 (hash and all,
    // so the survivors link to it) and deletes what lies below, as retention would.
    let (_d, c) = db();
    let now = mcpwatch_common::time::now_ms();
    let ids: Vec<i64> = (0..5)
        .map(|i| append(&c, &entry(now + i)).unwrap())
        .collect();
    let hash: String = c
        .query_row(
            "SELECT row_hash FROM audit_log WHERE id = ?1",
            [ids[2]],
            |r| r.get(0),
        )
        .unwrap();
    c.execute(
        "UPDATE audit_retention SET upto_id = ?1, last_hash = ?2, cutoff_ms = ?3",
        rusqlite::params![ids[2], hash, now + 3],
    )
    .unwrap();
    c.execute("DELETE FROM audit_log WHERE id <= ?1", [ids[2]])
        .unwrap();
    let (id, reason) = broken_at(&verify(&c, None, true).unwrap());
    assert_eq!(id, ids[2]);
    assert!(reason.contains("outside retention"), "{reason}");
}
