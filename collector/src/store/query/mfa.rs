//! Second factors of local accounts in SQLite: the TOTP secret (sealed by the caller; this
//! layer never sees it in the clear), a pending one until its first code confirms it, the
//! last time step accepted (each code is good once), and one-time recovery codes (hashes).
//! The checks that accept a code are single `UPDATE`s, so two requests racing with the same
//! code cannot both pass.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{Store, StoreError};

/// A user's second factor as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TotpRow {
    /// Sealed secret of the active factor.
    pub secret: Option<Vec<u8>>,
    /// Sealed secret enrolled but not yet confirmed.
    pub pending: Option<Vec<u8>>,
    pub enabled_ms: Option<i64>,
    pub last_step: i64,
    /// Recovery codes not used yet.
    pub recovery_left: i64,
}

pub fn totp(c: &Connection, user_id: i64) -> Result<Option<TotpRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT totp_secret, totp_pending, totp_enabled_ms, totp_last_step,
                (SELECT count(*) FROM recovery_codes r WHERE r.user_id = u.id AND r.used_ms IS NULL)
         FROM users u WHERE id = ?1",
    )?
    .query_row([user_id], |r| {
        Ok(TotpRow {
            secret: r.get(0)?,
            pending: r.get(1)?,
            enabled_ms: r.get(2)?,
            last_step: r.get(3)?,
            recovery_left: r.get(4)?,
        })
    })
    .optional()?)
}

/// One account's sealed secret (active or pending), if any account has one: the secrets
/// key must then not be replaced, and must open it.
pub fn any_sealed(c: &Connection) -> Result<Option<(i64, String, Vec<u8>)>, StoreError> {
    Ok(c.query_row(
        "SELECT id, username, COALESCE(totp_secret, totp_pending) FROM users
         WHERE totp_secret IS NOT NULL OR totp_pending IS NOT NULL ORDER BY id LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?)
}

/// [`any_sealed`] on the database at `path`, read before the store opens (start-up).
pub fn any_sealed_in(path: &std::path::Path) -> Result<Option<(i64, String, Vec<u8>)>, StoreError> {
    let conn = crate::store::open_connection(path)?;
    any_sealed(&conn)
}

/// Accepts time step `step` for the user if it is later than every step accepted before.
pub fn accept_step(c: &Connection, user_id: i64, step: i64) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE users SET totp_last_step = ?2
             WHERE id = ?1 AND totp_enabled_ms IS NOT NULL AND totp_last_step < ?2",
        )?
        .execute(params![user_id, step])?;
    Ok(n > 0)
}

/// Uses up the recovery code whose hash is `code_hash`; `false` if it is not one of the
/// user's unused codes.
pub fn use_recovery_code(
    c: &Connection,
    user_id: i64,
    code_hash: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE recovery_codes SET used_ms = ?3
             WHERE user_id = ?1 AND code_hash = ?2 AND used_ms IS NULL",
        )?
        .execute(params![user_id, code_hash, now_ms])?;
    Ok(n > 0)
}

/// Activates the pending secret `sealed` (only if it is still the pending one and no factor
/// is active), records `step` as used, replaces the recovery codes, ends the user's other
/// sessions, and marks `session` as having passed it.
pub fn confirm(
    c: &Connection,
    user_id: i64,
    sealed: &[u8],
    step: i64,
    code_hashes: &[String],
    session: Option<i64>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL,
                 totp_enabled_ms = ?3, totp_last_step = ?4
             WHERE id = ?1 AND totp_pending = ?2 AND totp_enabled_ms IS NULL",
        )?
        .execute(params![user_id, sealed, now_ms, step])?;
    if n == 0 {
        return Ok(false);
    }
    // Whoever else was signed in as this user (a session opened with a stolen password
    // before the factor existed) signs in again, now with the factor.
    c.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2")?
        .execute(params![user_id, session])?;
    c.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
        .execute([user_id])?;
    let mut insert =
        c.prepare_cached("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?1, ?2)")?;
    for h in code_hashes {
        insert.execute(params![user_id, h])?;
    }
    if let Some(s) = session {
        c.prepare_cached("UPDATE sessions SET mfa_ms = ?2 WHERE id = ?1 AND user_id = ?3")?
            .execute(params![s, now_ms, user_id])?;
    }
    Ok(true)
}

/// Removes the user's second factor (pending, active, recovery codes) and ends their
/// sessions: an admin's reset after a lost device, which may also be a stolen one.
pub fn reset(c: &Connection, user_id: i64) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_enabled_ms = NULL,
                 totp_last_step = 0 WHERE id = ?1",
        )?
        .execute([user_id])?;
    c.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
        .execute([user_id])?;
    c.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(n > 0)
}

impl Store {
    pub async fn totp(&self, user_id: i64) -> Result<Option<TotpRow>, StoreError> {
        self.read(move |c| totp(c, user_id)).await
    }

    /// Stores `sealed` as the user's pending secret (replacing an earlier pending one);
    /// `false` when a factor is active (or the user is gone).
    pub async fn set_totp_pending(
        &self,
        user_id: i64,
        sealed: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.exec(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE users SET totp_pending = ?2
                     WHERE id = ?1 AND totp_enabled_ms IS NULL",
                )?
                .execute(params![user_id, sealed])?;
            Ok(n > 0)
        })
        .await
    }

    pub async fn accept_totp_step(&self, user_id: i64, step: i64) -> Result<bool, StoreError> {
        self.exec(move |c| accept_step(c, user_id, step)).await
    }

    pub async fn use_recovery_code(
        &self,
        user_id: i64,
        code_hash: String,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.exec(move |c| use_recovery_code(c, user_id, &code_hash, now_ms))
            .await
    }

    pub async fn confirm_totp(
        &self,
        user_id: i64,
        sealed: Vec<u8>,
        step: i64,
        code_hashes: Vec<String>,
        session: Option<i64>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.exec(move |c| confirm(c, user_id, &sealed, step, &code_hashes, session, now_ms))
            .await
    }

    pub async fn reset_mfa(&self, user_id: i64) -> Result<bool, StoreError> {
        self.exec(move |c| reset(c, user_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, crate::store::admin::AdminDb, i64) {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::admin::open(&dir.path().join("m.db")).unwrap();
        let id = super::super::users::create_user(&c, "alice", "h", 1).unwrap();
        (dir, c, id)
    }

    #[test]
    fn mfa_confirm_accepts_each_step_once_and_recovery_codes_once() {
        let (_dir, c, id) = db();
        assert!(any_sealed(&c).unwrap().is_none());
        c.execute(
            "UPDATE users SET totp_pending = x'0102' WHERE id = ?1",
            [id],
        )
        .unwrap();
        assert_eq!(
            any_sealed(&c).unwrap(),
            Some((id, "alice".to_owned(), vec![1, 2]))
        );
        // Only the pending secret it was shown can be confirmed.
        assert!(!confirm(&c, id, &[9], 5, &[], None, 10).unwrap());
        let codes = vec!["h1".to_owned(), "h2".to_owned()];
        assert!(confirm(&c, id, &[1, 2], 5, &codes, None, 10).unwrap());
        let row = totp(&c, id).unwrap().unwrap();
        assert_eq!(row.secret.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(
            (row.pending, row.enabled_ms, row.last_step),
            (None, Some(10), 5)
        );
        assert_eq!(row.recovery_left, 2);
        // The confirming step and earlier ones are spent; a later one passes once.
        assert!(!accept_step(&c, id, 5).unwrap());
        assert!(!accept_step(&c, id, 4).unwrap());
        assert!(accept_step(&c, id, 6).unwrap());
        assert!(!accept_step(&c, id, 6).unwrap());
        assert!(use_recovery_code(&c, id, "h1", 11).unwrap());
        assert!(!use_recovery_code(&c, id, "h1", 12).unwrap());
        assert!(!use_recovery_code(&c, id, "nope", 12).unwrap());
        assert_eq!(totp(&c, id).unwrap().unwrap().recovery_left, 1);
        assert!(reset(&c, id).unwrap());
        assert_eq!(
            totp(&c, id).unwrap().unwrap(),
            TotpRow::default(),
            "reset leaves nothing behind"
        );
        assert!(!accept_step(&c, id, 100).unwrap(), "no factor, no step");
    }
}
