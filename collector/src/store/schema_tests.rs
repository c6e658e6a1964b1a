//! Tests of the schema migrations: idempotence, versions, what each data migration does.

use super::*;

#[test]
fn store_migrations_are_idempotent_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut conn = Connection::open(&path).unwrap();
    configure_writer(&conn).unwrap();
    migrate(&mut conn).unwrap();
    migrate(&mut conn).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);
    // v6: a session id, once used, is never handed out again.
    conn.execute_batch(
        "INSERT INTO users (id, username, password_hash, created_ms, password_changed_ms)
             VALUES (1, 'u', 'x', 0, 0);
         INSERT INTO sessions (user_id, hash, created_ms, last_seen_ms, expires_ms, source)
             VALUES (1, 'h', 0, 0, 0, 's');
         DELETE FROM sessions;
         INSERT INTO sessions (user_id, hash, created_ms, last_seen_ms, expires_ms, source)
             VALUES (1, 'h', 0, 0, 0, 's');",
    )
    .unwrap();
    let id: i64 = conn
        .query_row("SELECT id FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(id, 2, "a deleted session's id was reused");
    conn.pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(
        migrate(&mut conn),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

#[test]
fn store_builtin_admin_role_holds_every_permission_after_migration() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("roles.db")).unwrap();
    migrate(&mut conn).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT permissions FROM roles WHERE name = 'admin'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut stored: Vec<String> = serde_json::from_str(&stored).unwrap();
    stored.sort();
    let mut all: Vec<String> = crate::auth::Permission::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    all.sort();
    assert_eq!(
        stored, all,
        "a new permission needs a migration granting it to admin"
    );
}

#[test]
fn store_migration_v7_chains_the_audit_rows_already_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("v6.db")).unwrap();
    configure_writer(&conn).unwrap();
    for step in &MIGRATIONS[..6] {
        let Migration::Sql(sql) = step else {
            panic!("v1..v6 are SQL")
        };
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 6).unwrap();
    for (at, actor) in [(10, "user:a"), (20, "token:ci"), (30, "anonymous")] {
        conn.execute(
            "INSERT INTO audit_log (at_ms, actor, source, action, object, result)
             VALUES (?1, ?2, '127.0.0.1', 'POST /x', '/x', 200)",
            rusqlite::params![at, actor],
        )
        .unwrap();
    }
    migrate(&mut conn).unwrap();
    match super::super::audit_chain::verify(&conn, None, true).unwrap() {
        super::super::audit_chain::Verdict::Intact { rows, checkpoint } => {
            assert_eq!((rows, checkpoint.id), (3, 3));
        }
        other => panic!("{other:?}"),
    }
    // The chain is guarded from here on, and new rows continue it.
    assert!(conn
        .execute("DELETE FROM audit_log WHERE id = 1", [])
        .is_err());
    assert!(conn
        .execute("UPDATE audit_log SET actor = 'x' WHERE id = 1", [])
        .is_err());
    let entry = super::super::query::audit::AuditEntry {
        at_ms: 40,
        actor: "user:b".into(),
        token_id: None,
        session_id: None,
        source: "127.0.0.1".into(),
        action: "DELETE /x".into(),
        object: "/x".into(),
        result: 204,
        detail: String::new(),
        request_id: Some("abc".into()),
    };
    assert_eq!(
        super::super::query::audit::insert_audit(&conn, &entry).unwrap(),
        4
    );
    assert!(matches!(
        super::super::audit_chain::verify(&conn, None, true).unwrap(),
        super::super::audit_chain::Verdict::Intact { rows: 4, .. }
    ));
}
