//! Failed sign-in attempts and the lockout: wrong passwords and wrong second-factor codes
//! are counted apart (a right password clears only its own count, so holding the password
//! buys no more code guesses), each attempt counted *before* its check so parallel guesses
//! cannot slip past the limit, and a full sign-in clears both.

use rusqlite::{params, Connection};

use crate::store::{Store, StoreError};

/// Which count an attempt goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Password,
    SecondFactor,
}

/// Counts an attempt of `kind` on the account before it is checked; at `lock_after`
/// consecutive attempts of that kind without success the account locks for `lock_ms`.
/// `false` (nothing counted) when the account is locked now.
pub fn reserve(
    c: &Connection,
    kind: Attempt,
    user_id: i64,
    now_ms: i64,
    lock_after: i64,
    lock_ms: i64,
) -> Result<bool, StoreError> {
    let sql = match kind {
        Attempt::Password => {
            "UPDATE users SET failed_logins = failed_logins + 1,
                 locked_until_ms = CASE WHEN failed_logins + 1 >= ?3 THEN ?2 + ?4
                                        ELSE locked_until_ms END
             WHERE id = ?1 AND locked_until_ms <= ?2"
        }
        Attempt::SecondFactor => {
            "UPDATE users SET mfa_failures = mfa_failures + 1,
                 locked_until_ms = CASE WHEN mfa_failures + 1 >= ?3 THEN ?2 + ?4
                                        ELSE locked_until_ms END
             WHERE id = ?1 AND locked_until_ms <= ?2"
        }
    };
    let n = c
        .prepare_cached(sql)?
        .execute(params![user_id, now_ms, lock_after, lock_ms])?;
    Ok(n > 0)
}

/// A full sign-in (password, and the second factor when there is one): both counts start
/// over.
pub fn login_succeeded(c: &Connection, user_id: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE users SET failed_logins = 0, mfa_failures = 0, locked_until_ms = 0 WHERE id = ?1",
    )?
    .execute([user_id])?;
    Ok(())
}

/// The password was right: its count starts over, but not the second factor's.
pub fn password_verified(c: &Connection, user_id: i64, lock_after: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE users SET failed_logins = 0,
             locked_until_ms = CASE WHEN mfa_failures >= ?2 THEN locked_until_ms ELSE 0 END
         WHERE id = ?1",
    )?
    .execute(params![user_id, lock_after])?;
    Ok(())
}

impl Store {
    /// [`reserve`] on the writer; `false` (and nothing written) for no account.
    pub async fn reserve_attempt(
        &self,
        kind: Attempt,
        user_id: Option<i64>,
        now_ms: i64,
        lock_after: i64,
        lock_ms: i64,
    ) -> Result<bool, StoreError> {
        self.exec(move |c| match user_id {
            Some(id) => reserve(c, kind, id, now_ms, lock_after, lock_ms),
            None => Ok(false),
        })
        .await
    }

    /// [`password_verified`] on the writer.
    pub async fn password_verified(&self, user_id: i64, lock_after: i64) -> Result<(), StoreError> {
        self.exec(move |c| password_verified(c, user_id, lock_after))
            .await
    }
}
