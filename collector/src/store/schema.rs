//! Connection settings and schema migrations, versioned by `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1`; they run in one
//! transaction, so opening an up-to-date database is a no-op and a crash mid-migration leaves
//! the previous version intact. Most are SQL; one that must compute in Rust (v7 hashes the
//! audit rows already stored) is a function. Never edit a released migration: append one.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// One schema step.
enum Migration {
    Sql(&'static str),
    /// For steps SQL alone cannot do; runs inside the migration transaction.
    Code(fn(&Connection) -> Result<(), StoreError>),
}

/// Schema migrations; index `i` upgrades version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[
    // v1: hosts, series, raw sample blobs, rollups, events, gaps, meta.
    Migration::Sql(
        r#"
    CREATE TABLE hosts (
        id            INTEGER PRIMARY KEY,
        agent_id      TEXT    NOT NULL UNIQUE,
        hostname      TEXT    NOT NULL,
        agent_version TEXT    NOT NULL,
        boot_id       TEXT    NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        online        INTEGER NOT NULL DEFAULT 0,
        revoked       INTEGER NOT NULL DEFAULT 0,
        labels        TEXT    NOT NULL DEFAULT '{}'
    );
    -- Last committed batch seq per host, written in the same transaction as the batch.
    CREATE TABLE agent_seq (
        host_id  INTEGER PRIMARY KEY REFERENCES hosts(id),
        last_seq INTEGER NOT NULL
    );
    CREATE TABLE series (
        id      INTEGER PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        name    TEXT    NOT NULL,
        labels  TEXT    NOT NULL,
        UNIQUE (host_id, name, labels)
    );
    -- One row per committed batch; AUTOINCREMENT so ids never get reused after retention
    -- deletes the newest rows, which the rollup watermarks rely on.
    CREATE TABLE raw (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        seq     INTEGER NOT NULL,
        ts_min  INTEGER NOT NULL,
        ts_max  INTEGER NOT NULL,
        n       INTEGER NOT NULL,
        data    BLOB    NOT NULL
    );
    CREATE INDEX raw_host_ts ON raw (host_id, ts_max);
    -- A host's rows in id order, for its rollup steps.
    CREATE INDEX raw_host ON raw (host_id);
    -- Retention scans by time across hosts.
    CREATE INDEX raw_ts ON raw (ts_max);
    -- min/max/sum nullable: SQLite stores NaN as NULL, and inf + -inf is NaN.
    CREATE TABLE rollup_1m (
        series_id INTEGER NOT NULL,
        ts        INTEGER NOT NULL,
        min       REAL,
        max       REAL,
        sum       REAL,
        count     INTEGER NOT NULL,
        PRIMARY KEY (series_id, ts)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_1h (
        series_id INTEGER NOT NULL,
        ts        INTEGER NOT NULL,
        min       REAL,
        max       REAL,
        sum       REAL,
        count     INTEGER NOT NULL,
        PRIMARY KEY (series_id, ts)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        ts_ms   INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        server  TEXT,
        detail  TEXT    NOT NULL
    );
    CREATE INDEX events_host_ts ON events (host_id, ts_ms);
    CREATE INDEX events_ts ON events (ts_ms);
    CREATE TABLE gaps (
        host_id   INTEGER NOT NULL REFERENCES hosts(id),
        first_seq INTEGER NOT NULL,
        last_seq  INTEGER NOT NULL,
        samples   INTEGER NOT NULL,
        from_ts   INTEGER NOT NULL,
        to_ts     INTEGER NOT NULL
    );
    CREATE INDEX gaps_host ON gaps (host_id, from_ts);
    CREATE INDEX gaps_ts ON gaps (to_ts);
    -- Per host: highest raw.id already folded into the rollups.
    CREATE TABLE rollup_wm (
        host_id INTEGER PRIMARY KEY REFERENCES hosts(id),
        raw_id  INTEGER NOT NULL
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    ),
    // v2: API tokens, stored only as SHA-256 hashes (quickstart's admin token; the API's
    // users, roles and sessions build on this table).
    Migration::Sql(
        r#"
    CREATE TABLE api_tokens (
        id         INTEGER PRIMARY KEY,
        name       TEXT    NOT NULL,
        hash       TEXT    NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER,
        revoked    INTEGER NOT NULL DEFAULT 0
    );
    "#,
    ),
    // v3: alerting. Rule definitions (config now, API later), the engine's per-series state,
    // alert records and their transition history, what each receiver was told, the outbox,
    // its dead-letter list, and silences. Everything a transition causes is written in the
    // transaction that commits the data behind it.
    Migration::Sql(
        r#"
    CREATE TABLE alert_rules (
        name       TEXT PRIMARY KEY,
        origin     TEXT    NOT NULL,
        definition TEXT    NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE alert_state (
        rule        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state       TEXT NOT NULL,
        PRIMARY KEY (rule, fingerprint)
    ) WITHOUT ROWID;
    CREATE TABLE alerts (
        fingerprint TEXT PRIMARY KEY,
        rule        TEXT    NOT NULL,
        status      TEXT    NOT NULL,
        started_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL,
        record      TEXT    NOT NULL
    );
    CREATE INDEX alerts_status ON alerts (status, updated_ms);
    CREATE TABLE alert_history (
        id          INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        rule        TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        labels      TEXT    NOT NULL,
        from_state  TEXT    NOT NULL,
        to_state    TEXT    NOT NULL,
        level       TEXT,
        value       REAL,
        notify      INTEGER NOT NULL
    );
    CREATE INDEX alert_history_at ON alert_history (at_ms);
    CREATE INDEX alert_history_fp ON alert_history (fingerprint, at_ms);
    CREATE TABLE notify_log (
        receiver    TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        told        TEXT NOT NULL,
        PRIMARY KEY (receiver, fingerprint)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        receiver    TEXT    NOT NULL,
        group_key   TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        payload     TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL,
        due_ms      INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT
    );
    CREATE INDEX outbox_due ON outbox (receiver, due_ms);
    CREATE INDEX outbox_group ON outbox (receiver, group_key);
    CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY,
        receiver    TEXT    NOT NULL,
        group_key   TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        payload     TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL,
        failed_ms   INTEGER NOT NULL,
        attempts    INTEGER NOT NULL,
        reason      TEXT    NOT NULL
    );
    CREATE INDEX dead_letters_failed ON dead_letters (failed_ms);
    CREATE TABLE silences (
        id         INTEGER PRIMARY KEY,
        matchers   TEXT    NOT NULL,
        starts_ms  INTEGER NOT NULL,
        ends_ms    INTEGER NOT NULL,
        author     TEXT    NOT NULL,
        comment    TEXT    NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX silences_ends ON silences (ends_ms);
    "#,
    ),
    // v4: API users, roles, role bindings scoped by host selector, sessions, token owners and
    // permission subsets, and the append-only audit log.
    Migration::Sql(
        r#"
    CREATE TABLE users (
        id                  INTEGER PRIMARY KEY,
        username            TEXT    NOT NULL UNIQUE,
        password_hash       TEXT    NOT NULL,
        disabled            INTEGER NOT NULL DEFAULT 0,
        failed_logins       INTEGER NOT NULL DEFAULT 0,
        locked_until_ms     INTEGER NOT NULL DEFAULT 0,
        created_ms          INTEGER NOT NULL,
        password_changed_ms INTEGER NOT NULL
    );
    CREATE TABLE roles (
        name        TEXT PRIMARY KEY,
        permissions TEXT    NOT NULL,
        builtin     INTEGER NOT NULL DEFAULT 0,
        created_ms  INTEGER NOT NULL
    );
    INSERT INTO roles (name, permissions, builtin, created_ms) VALUES
        ('admin', '["hosts:read","hosts:write","metrics:read","alerts:read","alerts:ack","silences:write","rules:write","receivers:write","servers:control","users:admin","audit:read"]', 1, 0),
        ('operator', '["hosts:read","metrics:read","alerts:read","alerts:ack","silences:write","servers:control"]', 1, 0),
        ('viewer', '["hosts:read","metrics:read","alerts:read"]', 1, 0);
    CREATE TABLE role_bindings (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users(id),
        role          TEXT    NOT NULL REFERENCES roles(name),
        host_selector TEXT    NOT NULL DEFAULT '',
        created_ms    INTEGER NOT NULL,
        UNIQUE (user_id, role, host_selector)
    );
    ALTER TABLE api_tokens ADD COLUMN user_id INTEGER REFERENCES users(id);
    -- JSON list of permissions the token is limited to; NULL = everything its owner has.
    ALTER TABLE api_tokens ADD COLUMN permissions TEXT;
    ALTER TABLE api_tokens ADD COLUMN last_used_ms INTEGER;
    CREATE TABLE sessions (
        id           INTEGER PRIMARY KEY,
        user_id      INTEGER NOT NULL REFERENCES users(id),
        hash         TEXT    NOT NULL,
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_ms   INTEGER NOT NULL,
        source       TEXT    NOT NULL
    );
    CREATE INDEX sessions_expires ON sessions (expires_ms);
    CREATE TABLE audit_log (
        id         INTEGER PRIMARY KEY,
        at_ms      INTEGER NOT NULL,
        actor      TEXT    NOT NULL,
        token_id   INTEGER,
        session_id INTEGER,
        source     TEXT    NOT NULL,
        action     TEXT    NOT NULL,
        object     TEXT    NOT NULL,
        result     INTEGER NOT NULL,
        detail     TEXT    NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_log_at ON audit_log (at_ms);
    -- Nothing may rewrite history; only retention deletes old rows.
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    "#,
    ),
    // v5: receivers defined through the API (a `ReceiverConfigRaw` as JSON: secrets only as
    // file/env references, never values). Configured receivers stay in the config file.
    Migration::Sql(
        r#"
    CREATE TABLE receivers (
        name       TEXT    PRIMARY KEY,
        definition TEXT    NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    "#,
    ),
    // v6: session ids are never reused (AUTOINCREMENT), so audit rows of two users can never
    // carry the same session id. The sequence starts above every id already handed out,
    // including ended sessions that only the audit log still names.
    Migration::Sql(
        r#"
    CREATE TABLE sessions_v6 (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id      INTEGER NOT NULL REFERENCES users(id),
        hash         TEXT    NOT NULL,
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_ms   INTEGER NOT NULL,
        source       TEXT    NOT NULL
    );
    INSERT INTO sessions_v6 SELECT id, user_id, hash, created_ms, last_seen_ms, expires_ms, source
        FROM sessions;
    DROP TABLE sessions;
    ALTER TABLE sessions_v6 RENAME TO sessions;
    CREATE INDEX sessions_expires ON sessions (expires_ms);
    DELETE FROM sqlite_sequence WHERE name = 'sessions';
    INSERT INTO sqlite_sequence (name, seq) VALUES ('sessions', max(
        coalesce((SELECT max(id) FROM sessions), 0),
        coalesce((SELECT max(session_id) FROM audit_log), 0)));
    "#,
    ),
    // v7: the audit log becomes a hash chain that only retention may shorten (see
    // `audit_chain`): each row's request id and hashes, retention's record of what it
    // removed, and a delete trigger that admits only rows retention has recorded.
    Migration::Code(super::audit_chain::migrate_v7),
    // v8: the secrets of receivers defined through the API, sealed (nonce, ciphertext and
    // tag, under a key kept outside the database) and bound to the receiver, the field and
    // the destination they were given for. Never read back through the API.
    Migration::Sql(
        r#"
    CREATE TABLE receiver_secrets (
        receiver    TEXT NOT NULL REFERENCES receivers(name) ON DELETE CASCADE,
        field       TEXT NOT NULL,
        destination TEXT NOT NULL,
        sealed      BLOB NOT NULL,
        PRIMARY KEY (receiver, field)
    ) WITHOUT ROWID;
    "#,
    ),
    // v9: the fleet's PKI. Bootstrap tokens for enrollment (only SHA-256 hashes), and every
    // agent certificate the collector issued or saw at a handshake, by canonical serial,
    // with its revocation (refused at the handshake from then on).
    Migration::Sql(
        r#"
    CREATE TABLE enroll_tokens (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        hash        TEXT    NOT NULL UNIQUE,
        description TEXT    NOT NULL DEFAULT '',
        name        TEXT,
        labels      TEXT    NOT NULL DEFAULT '{}',
        max_uses    INTEGER NOT NULL,
        used        INTEGER NOT NULL DEFAULT 0,
        created_ms  INTEGER NOT NULL,
        created_by  TEXT    NOT NULL,
        expires_ms  INTEGER NOT NULL,
        revoked_ms  INTEGER,
        last_used_ms INTEGER
    );
    CREATE TABLE certificates (
        serial        TEXT    PRIMARY KEY,
        identity      TEXT    NOT NULL,
        not_before_ms INTEGER NOT NULL,
        not_after_ms  INTEGER NOT NULL,
        source        TEXT    NOT NULL,
        token_id      INTEGER,
        recorded_ms   INTEGER NOT NULL,
        last_seen_ms  INTEGER,
        revoked_ms    INTEGER,
        revoked_by    TEXT
    ) WITHOUT ROWID;
    CREATE INDEX certificates_identity ON certificates (identity, not_after_ms);
    CREATE INDEX certificates_revoked ON certificates (revoked_ms) WHERE revoked_ms IS NOT NULL;
    "#,
    ),
    // v10: the built-in admin role holds every permission, `hosts:enroll` (v9) included.
    Migration::Sql(
        r#"
    UPDATE roles SET permissions = '["hosts:read","hosts:write","hosts:enroll","metrics:read","alerts:read","alerts:ack","silences:write","rules:write","receivers:write","servers:control","users:admin","audit:read"]'
    WHERE name = 'admin' AND builtin = 1;
    "#,
    ),
    // v11: the built-in admin role holds `admin:backup`.
    Migration::Sql(
        r#"
    UPDATE roles SET permissions = '["hosts:read","hosts:write","hosts:enroll","metrics:read","alerts:read","alerts:ack","silences:write","rules:write","receivers:write","servers:control","users:admin","audit:read","admin:backup"]'
    WHERE name = 'admin' AND builtin = 1;
    "#,
    ),
    // v12: how far each remote-write endpoint has delivered (a raw row id), advanced only
    // after the endpoint accepted everything up to it.
    Migration::Sql(
        r#"
    CREATE TABLE remote_write_cursors (
        endpoint   TEXT    PRIMARY KEY,
        raw_id     INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    "#,
    ),
    // v13: when each raw row was stored, so remote write's lag counts from arrival: an
    // agent replaying an hour of spool is not an endpoint an hour behind. 0 for older rows.
    Migration::Sql("ALTER TABLE raw ADD COLUMN committed_ms INTEGER NOT NULL DEFAULT 0;"),
    // v14: sign-in for local accounts: the passwords a user had (no reuse), a second factor
    // (TOTP, its secret sealed with the secrets key; the last time step accepted, so a code
    // is good once), one-time recovery codes (hashed), and whether a session passed it.
    Migration::Sql(
        r#"
    CREATE TABLE password_history (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        password_hash TEXT    NOT NULL,
        replaced_ms   INTEGER NOT NULL
    );
    CREATE INDEX password_history_user ON password_history (user_id, id);
    ALTER TABLE users ADD COLUMN totp_secret BLOB;
    ALTER TABLE users ADD COLUMN totp_pending BLOB;
    ALTER TABLE users ADD COLUMN totp_enabled_ms INTEGER;
    ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE recovery_codes (
        id        INTEGER PRIMARY KEY,
        user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        code_hash TEXT    NOT NULL,
        used_ms   INTEGER
    );
    CREATE INDEX recovery_codes_user ON recovery_codes (user_id);
    ALTER TABLE sessions ADD COLUMN mfa_ms INTEGER;
    "#,
    ),
    // v15: wrong second-factor codes counted apart from wrong passwords, so a right
    // password does not clear the count of code guesses.
    Migration::Sql("ALTER TABLE users ADD COLUMN mfa_failures INTEGER NOT NULL DEFAULT 0;"),
    // v16: single sign-on: the OpenID Connect identity (issuer and subject) of an account
    // it created, and where each role binding came from (`oidc`: recomputed from the
    // provider's groups at every sign-in; `manual`: kept).
    Migration::Sql(
        r#"
    ALTER TABLE users ADD COLUMN oidc_subject TEXT;
    CREATE UNIQUE INDEX users_oidc_subject ON users (oidc_subject) WHERE oidc_subject IS NOT NULL;
    ALTER TABLE role_bindings ADD COLUMN origin TEXT NOT NULL DEFAULT 'manual';
    "#,
    ),
    // v17: whether a session was opened through single sign-on (its provider then vouches
    // for password and second factor; a password session of the same account does not).
    Migration::Sql("ALTER TABLE sessions ADD COLUMN sso INTEGER NOT NULL DEFAULT 0;"),
    // v18: the delivery log (every send attempt's outcome, and requeues from the dead-letter
    // list), dead letters by receiver (bulk retry, counts for the built-in rule), and routes
    // defined through the API.
    Migration::Sql(
        r#"
    CREATE TABLE routes (name TEXT PRIMARY KEY, definition TEXT NOT NULL,
        updated_ms INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, receiver TEXT NOT NULL,
        fingerprint TEXT NOT NULL, rule TEXT NOT NULL, host TEXT, status TEXT NOT NULL,
        result TEXT NOT NULL, attempt INTEGER NOT NULL, error TEXT, actor TEXT
    );
    CREATE INDEX deliveries_at ON deliveries (at_ms);
    CREATE INDEX dead_letters_receiver ON dead_letters (receiver);
    "#,
    ),
    // v19: the raw row a remote-write request in flight reaches (a crash resends that batch
    // alone), and the certificate a renewal was made from (revoking one revokes its line).
    Migration::Sql(
        "ALTER TABLE remote_write_cursors ADD COLUMN sending_to INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE certificates ADD COLUMN renewed_from TEXT;",
    ),
];

/// Settings for the single write connection. synchronous=FULL because an ack promises the
/// batch survives power loss; WAL so readers never block the writer.
pub(crate) fn configure_writer(conn: &Connection) -> Result<(), StoreError> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Invalid(format!(
            "database refused WAL journal mode (got {mode})"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32768;
         -- Ticks checkpoint passively every second; this is the safety net when no ticker
         -- runs, sized so the automatic checkpoint rarely lands inside a commit.
         PRAGMA wal_autocheckpoint = 8192;
         PRAGMA journal_size_limit = 67108864;",
    )?;
    // Other writers (admin CLI) may hold the lock briefly; wait rather than fail a group.
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Settings for read connections: never write, wait for the writer's checkpoints.
pub(crate) fn configure_reader(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA foreign_keys = ON;")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(())
}

/// The schema version this build writes (and the newest it can open).
pub(crate) fn version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema to the latest version. Idempotent.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Brings the schema to version `target` (tests build old databases with it).
pub(crate) fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    apply(conn, target, true)
}

fn apply(conn: &mut Connection, target: usize, log: bool) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    let steps = MIGRATIONS.iter().take(target).enumerate();
    for (version, step) in steps.skip(found.max(0) as usize) {
        match step {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Code(f) => f(&tx)?,
        }
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        if log {
            tracing::info!(version = version + 1, "store schema migrated");
        }
    }
    tx.commit()?;
    Ok(())
}

type SchemaObject = (String, String, String, Option<String>);

fn schema_objects(
    conn: &Connection,
) -> Result<std::collections::BTreeSet<SchemaObject>, StoreError> {
    let mut stmt = conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How the schema of `conn` (claiming `version`) differs from the one this build's
/// migrations make at that version: one line per object missing or extra. A file from
/// elsewhere (a backup) may carry triggers or views of its own that would run inside the
/// collector on its next write; only an exact match is let in.
pub(crate) fn differences(conn: &Connection, version: i64) -> Result<Vec<String>, StoreError> {
    let mut reference = Connection::open_in_memory()?;
    apply(&mut reference, usize::try_from(version).unwrap_or(0), false)?;
    let want = schema_objects(&reference)?;
    let have = schema_objects(conn)?;
    let describe = |(kind, name, _, _): &SchemaObject| format!("{kind} {name:?}");
    let mut out: Vec<String> = have
        .difference(&want)
        .map(|o| format!("unexpected {}", describe(o)))
        .collect();
    out.extend(
        want.difference(&have)
            .map(|o| format!("missing or altered {}", describe(o))),
    );
    Ok(out)
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
