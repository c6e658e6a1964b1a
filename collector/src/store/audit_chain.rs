//! The audit log's hash chain. Every row stores `prev_hash` (the `row_hash` of the row before
//! it) and `row_hash`, a SHA-256 over every column and `prev_hash` (see [`row_hash`]), so a
//! row edited or removed behind the collector's back breaks the chain where the next row
//! names it. Rows are appended only on the writer thread, one at a time, so there is one
//! chain and no fork.
//!
//! Retention removes the oldest rows in id order and first writes the id and hash of the
//! last row it removes into `audit_retention` (the one row retention alone writes): the
//! delete trigger admits only rows at or below that id, and the oldest surviving row must
//! name that hash. Verification starts from that anchor, or from a checkpoint it verified
//! before (incremental), and reports the first row where the chain breaks.

use rusqlite::{params, Connection, OptionalExtension};

use super::query::audit::{AuditEntry, AuditRow};
use super::StoreError;

/// The `prev_hash` of the first row ever written (and the anchor before any retention).
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Names the encoding, so a future layout can never produce the same hash by accident.
const DOMAIN: &str = "mcpwatch-audit-v1";

/// The columns a verification reads, in [`row_hash`] order, then `prev_hash`, `row_hash`.
const ROW_COLUMNS: &str = "id, at_ms, actor, token_id, session_id, source, action, object,
    result, detail, request_id, prev_hash, row_hash";

fn put_int(ctx: &mut ring::digest::Context, v: i64) {
    ctx.update(&v.to_be_bytes());
}

fn put_text(ctx: &mut ring::digest::Context, s: &str) {
    // usize → u64 cannot lose bits on any platform Rust supports.
    ctx.update(&(s.len() as u64).to_be_bytes());
    ctx.update(s.as_bytes());
}

fn put_opt_int(ctx: &mut ring::digest::Context, v: Option<i64>) {
    match v {
        None => ctx.update(&[0]),
        Some(v) => {
            ctx.update(&[1]);
            put_int(ctx, v);
        }
    }
}

fn put_opt_text(ctx: &mut ring::digest::Context, v: Option<&str>) {
    match v {
        None => ctx.update(&[0]),
        Some(s) => {
            ctx.update(&[1]);
            put_text(ctx, s);
        }
    }
}

/// Lowercase hex SHA-256 of the row's canonical encoding: the text `mcpwatch-audit-v1`, then
/// `id`, `at_ms`, `actor`, `token_id`, `session_id`, `source`, `action`, `object`, `result`,
/// `detail`, `request_id`, then `prev_hash`. An integer is 8 bytes big-endian; a text is its
/// UTF-8 length (8 bytes big-endian) then its bytes; an optional value is the byte 0 when
/// absent, else the byte 1 and the value. Every field is self-delimiting, so no two rows
/// encode alike. ARCHITECTURE.md states the same layout for outside verifiers.
pub fn row_hash(r: &AuditRow, prev_hash: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    put_text(&mut ctx, DOMAIN);
    put_int(&mut ctx, r.id);
    put_int(&mut ctx, r.at_ms);
    put_text(&mut ctx, &r.actor);
    put_opt_int(&mut ctx, r.token_id);
    put_opt_int(&mut ctx, r.session_id);
    put_text(&mut ctx, &r.source);
    put_text(&mut ctx, &r.action);
    put_text(&mut ctx, &r.object);
    put_int(&mut ctx, r.result);
    put_text(&mut ctx, &r.detail);
    put_opt_text(&mut ctx, r.request_id.as_deref());
    put_text(&mut ctx, prev_hash);
    mcpwatch_common::hex::encode(ctx.finish().as_ref())
}

/// What retention has removed: every row with id up to `upto_id`, the last of which hashed
/// to `last_hash` ([`GENESIS`] and 0 before any removal).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Removed {
    upto_id: i64,
    last_hash: String,
    /// The cutoff retention recorded: it removed only rows older than this.
    cutoff_ms: i64,
}

/// The schema version that introduced the chain (`PRAGMA user_version`).
pub const FIRST_CHAINED_SCHEMA: i64 = 7;

/// The shortest audit retention the configuration allows (`[api] audit_retention`): no
/// genuine retention pass removes a row younger than this, whatever the setting was then.
pub const MIN_AUDIT_RETENTION_MS: i64 = 86_400_000;

fn removed(c: &Connection) -> Result<Option<Removed>, StoreError> {
    Ok(
        c.prepare_cached("SELECT upto_id, last_hash, cutoff_ms FROM audit_retention WHERE id = 1")?
            .query_row([], |r| {
                Ok(Removed {
                    upto_id: r.get(0)?,
                    last_hash: r.get(1)?,
                    cutoff_ms: r.get(2)?,
                })
            })
            .optional()?,
    )
}

/// Appends `e` as the chain's next row; returns its id. Runs on the writer (in the group
/// transaction), so the row it links to is the newest one.
pub(crate) fn append(c: &Connection, e: &AuditEntry) -> Result<i64, StoreError> {
    let anchor = removed(c)?.ok_or_else(|| {
        StoreError::Invalid(
            "the audit_retention row is missing; the audit chain has no anchor".into(),
        )
    })?;
    let head: Option<(i64, String)> = c
        .prepare_cached("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (prev_id, prev_hash) = head.unwrap_or((anchor.upto_id, anchor.last_hash));
    // Never below what retention removed: an id at or below `upto_id` would be deletable.
    let id = prev_id
        .max(anchor.upto_id)
        .checked_add(1)
        .ok_or_else(|| StoreError::Invalid("audit ids exhausted".into()))?;
    let row = AuditRow {
        id,
        at_ms: e.at_ms,
        actor: e.actor.clone(),
        token_id: e.token_id,
        session_id: e.session_id,
        source: e.source.clone(),
        action: e.action.clone(),
        object: e.object.clone(),
        result: i64::from(e.result),
        detail: e.detail.clone(),
        request_id: e.request_id.clone(),
    };
    let hash = row_hash(&row, &prev_hash);
    c.prepare_cached(
        "INSERT INTO audit_log (id, at_ms, actor, token_id, session_id, source, action, object,
             result, detail, request_id, prev_hash, row_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        row.id,
        row.at_ms,
        row.actor,
        row.token_id,
        row.session_id,
        row.source,
        row.action,
        row.object,
        row.result,
        row.detail,
        row.request_id,
        prev_hash,
        hash
    ])?;
    Ok(id)
}

/// Retention: removes the oldest rows, in id order, while they are older than `before_ms`
/// (at most `limit`). The id and hash of the last one go into `audit_retention` first, which
/// is what lets the delete trigger pass them and the chain start at the oldest survivor.
/// Returns the rows removed.
pub(crate) fn prune(
    c: &Connection,
    before_ms: i64,
    limit: i64,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut last: Option<(i64, String)> = None;
    let mut n = 0usize;
    {
        let mut stmt =
            c.prepare_cached("SELECT id, at_ms, row_hash FROM audit_log ORDER BY id LIMIT ?1")?;
        let mut rows = stmt.query([limit])?;
        // Stops at the first row still kept: removing past it would cut the chain.
        while let Some(r) = rows.next()? {
            if r.get::<_, i64>(1)? >= before_ms {
                break;
            }
            last = Some((r.get(0)?, r.get(2)?));
            n += 1;
        }
    }
    let Some((upto, hash)) = last else {
        return Ok(0);
    };
    c.prepare_cached(
        "UPDATE audit_retention SET upto_id = ?1, last_hash = ?2, cutoff_ms = ?3, updated_ms = ?4
         WHERE id = 1",
    )?
    .execute(params![upto, hash, before_ms, now_ms])?;
    c.prepare_cached("DELETE FROM audit_log WHERE id <= ?1")?
        .execute([upto])?;
    Ok(n)
}

/// Chains the rows a database held before the chain existed (migration to v7), oldest
/// first from [`GENESIS`], a bounded chunk in memory at a time. The caller has lifted the
/// append-only trigger for it.
pub(crate) fn chain_existing(c: &Connection) -> Result<u64, StoreError> {
    chain_in_chunks(c, 10_000)
}

fn chain_in_chunks(c: &Connection, chunk: i64) -> Result<u64, StoreError> {
    let mut select = c.prepare(&format!(
        "SELECT {ROW_COLUMNS} FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let mut update =
        c.prepare("UPDATE audit_log SET prev_hash = ?2, row_hash = ?3 WHERE id = ?1")?;
    let mut prev = GENESIS.to_owned();
    let mut after = i64::MIN;
    let mut done = 0u64;
    loop {
        let rows: Vec<AuditRow> = select
            .query_map(params![after, chunk], |r| Ok(read_row(r)?.0))?
            .collect::<Result<_, _>>()?;
        for row in &rows {
            let hash = row_hash(row, &prev);
            update.execute(params![row.id, prev, hash])?;
            prev = hash;
        }
        done += rows.len() as u64;
        match rows.last() {
            Some(last) if rows.len() as i64 == chunk => after = last.id,
            _ => return Ok(done),
        }
    }
}

/// A row as read for verification: its columns, its `prev_hash` and `row_hash`.
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AuditRow, String, String)> {
    Ok((AuditRow::from_row(r)?, r.get(11)?, r.get(12)?))
}

/// Where a verification got to: the newest row it accepted (or retention's anchor when no
/// row survives) and the retention state it saw. The next verification can start there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: i64,
    pub hash: String,
    /// Every row up to this id had been removed by retention.
    pub removed_upto: i64,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every row walked matches its hash and links to the row before it.
    Intact {
        /// Rows walked in this pass.
        rows: u64,
        checkpoint: Checkpoint,
    },
    /// The first break found: the row where it shows, and why. `resume`, when set, is the
    /// broken row taken as it now stands, for a later pass to check the rows after it.
    Broken {
        id: i64,
        reason: String,
        resume: Option<Checkpoint>,
    },
}

/// Walks the chain in one read snapshot. From retention's anchor (every surviving row)
/// when `from` is `None` or `full`; else only the rows after `from`. Either way a given
/// `from` must still hold: its row unchanged unless retention removed it, and retention's
/// record not moved back (what catches the newest rows being cut off).
pub fn verify(
    c: &Connection,
    from: Option<&Checkpoint>,
    full: bool,
) -> Result<Verdict, StoreError> {
    // Deferred and read-only: one snapshot for the anchor and the rows, no write lock.
    let tx = c.unchecked_transaction()?;
    let Some(anchor) = removed(&tx)? else {
        return Ok(broken(0, "the audit_retention row is missing".into(), None));
    };
    // Someone with write access to the file could move retention's record up to a recent
    // row and delete everything below it; no genuine pass cuts younger than a day.
    let newest_cut = mcpwatch_common::time::now_ms().saturating_sub(MIN_AUDIT_RETENTION_MS);
    if anchor.cutoff_ms > newest_cut {
        let reason = format!(
            "retention's record claims rows up to id {} were removed with a cutoff younger \
             than the shortest retention allowed (1d): removed outside retention",
            anchor.upto_id
        );
        return Ok(broken(anchor.upto_id, reason, None));
    }
    let mut start = (anchor.upto_id, anchor.last_hash.clone());
    if let Some(cp) = from {
        if anchor.upto_id < cp.removed_upto {
            let reason = format!(
                "retention's record moved back from id {} to {}",
                cp.removed_upto, anchor.upto_id
            );
            return Ok(broken(cp.removed_upto, reason, None));
        }
        if cp.id > anchor.upto_id {
            let now: Option<String> = tx
                .prepare_cached("SELECT row_hash FROM audit_log WHERE id = ?1")?
                .query_row([cp.id], |r| r.get(0))
                .optional()?;
            match now {
                None => {
                    let reason = "the row was verified earlier and is gone, \
                                  removed outside retention"
                        .to_owned();
                    return Ok(broken(cp.id, reason, None));
                }
                Some(h) if h != cp.hash => {
                    let reason = "its hash changed since it was verified".to_owned();
                    return Ok(broken(cp.id, reason, None));
                }
                Some(_) if !full => start = (cp.id, cp.hash.clone()),
                Some(_) => {}
            }
        }
    }
    if start.0 == anchor.upto_id {
        let below: Option<i64> = tx
            .prepare_cached("SELECT min(id) FROM audit_log WHERE id <= ?1")?
            .query_row([anchor.upto_id], |r| r.get(0))?;
        if let Some(id) = below {
            let reason = format!(
                "it survives below retention's record (rows up to {} removed)",
                anchor.upto_id
            );
            return Ok(broken(id, reason, None));
        }
    }
    walk(&tx, start, &anchor)
}

fn broken(id: i64, reason: String, resume: Option<Checkpoint>) -> Verdict {
    Verdict::Broken { id, reason, resume }
}

/// Checks every row after `start` (an id and the hash the next row must name).
fn walk(c: &Connection, start: (i64, String), anchor: &Removed) -> Result<Verdict, StoreError> {
    let (mut prev_id, mut expected) = start;
    let mut rows = 0u64;
    let mut stmt = c.prepare(&format!(
        "SELECT {ROW_COLUMNS} FROM audit_log WHERE id > ?1 ORDER BY id"
    ))?;
    let mut cursor = stmt.query([prev_id])?;
    while let Some(r) = cursor.next()? {
        let (row, prev_hash, row_hash_stored) = read_row(r)?;
        let here = Checkpoint {
            id: row.id,
            hash: row_hash_stored.clone(),
            removed_upto: anchor.upto_id,
        };
        if prev_hash != expected {
            let before = if prev_id > anchor.upto_id {
                format!(
                    "row {prev_id}: a row between them was removed or row {prev_id} was changed"
                )
            } else if anchor.upto_id > 0 {
                format!("the last row retention removed (id {prev_id}): rows before it were removed outside retention")
            } else {
                "the start of the chain: rows before it were removed".to_owned()
            };
            let reason = format!("its prev_hash does not match {before}");
            return Ok(broken(row.id, reason, Some(here)));
        }
        if row_hash(&row, &prev_hash) != row_hash_stored {
            let reason = "its content does not match its hash: the row was changed".to_owned();
            return Ok(broken(row.id, reason, Some(here)));
        }
        prev_id = row.id;
        expected = row_hash_stored;
        rows += 1;
    }
    Ok(Verdict::Intact {
        rows,
        checkpoint: Checkpoint {
            id: prev_id,
            hash: expected,
            removed_upto: anchor.upto_id,
        },
    })
}

/// v7: adds the chain's columns and retention's record, hashes the rows already stored
/// (the append-only trigger is lifted for that, inside this transaction), then refuses
/// deletes beyond retention's record.
pub(super) fn migrate_v7(c: &Connection) -> Result<(), StoreError> {
    c.execute_batch(&format!(
        "ALTER TABLE audit_log ADD COLUMN request_id TEXT;
         ALTER TABLE audit_log ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
         ALTER TABLE audit_log ADD COLUMN row_hash TEXT NOT NULL DEFAULT '';
         -- Written only by retention: every audit row with id <= upto_id is removed, the
         -- last of them hashed to last_hash (the oldest survivor's prev_hash).
         CREATE TABLE audit_retention (
             id         INTEGER PRIMARY KEY CHECK (id = 1),
             upto_id    INTEGER NOT NULL,
             last_hash  TEXT    NOT NULL,
             cutoff_ms  INTEGER NOT NULL,
             updated_ms INTEGER NOT NULL
         );
         INSERT INTO audit_retention (id, upto_id, last_hash, cutoff_ms, updated_ms)
             VALUES (1, 0, '{genesis}', 0, 0);
         DROP TRIGGER audit_log_append_only;",
        genesis = GENESIS
    ))?;
    chain_existing(c)?;
    c.execute_batch(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
         BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
         -- coalesce: without retention's row nothing is deletable (fail closed).
         CREATE TRIGGER audit_log_delete_by_retention BEFORE DELETE ON audit_log
         WHEN OLD.id > coalesce((SELECT upto_id FROM audit_retention WHERE id = 1), 0)
         BEGIN SELECT RAISE(ABORT, 'audit rows are removed only by retention'); END;
         CREATE TRIGGER audit_retention_forward BEFORE UPDATE ON audit_retention
         WHEN NEW.upto_id < OLD.upto_id OR NEW.id != OLD.id
         BEGIN SELECT RAISE(ABORT, 'audit retention only moves forward'); END;
         CREATE TRIGGER audit_retention_kept BEFORE DELETE ON audit_retention
         BEGIN SELECT RAISE(ABORT, 'audit retention record is kept'); END;",
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "audit_chain_tests.rs"]
mod tests;
