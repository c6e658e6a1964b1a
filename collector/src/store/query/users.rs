//! Users in SQLite: accounts, login bookkeeping (attempts, lockout) and passwords (roles and
//! bindings are in `roles`). Every function takes a connection, so the same SQL serves the
//! API (through the typed `Store` methods below: reads on the read pool, writes on the
//! writer thread's `Store::exec`) and the admin CLI (its own connection). Secrets never
//! reach this layer: only argon2id hashes of passwords.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::roles::{bind, bindings_of, BindingRow};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub disabled: bool,
    pub locked_until_ms: i64,
    pub created_ms: i64,
    pub password_changed_ms: i64,
    /// Signs in with a second factor (TOTP).
    pub mfa_enabled: bool,
    /// Made by single sign-on (OpenID Connect): its provider vouches for it.
    pub sso: bool,
    pub bindings: Vec<BindingRow>,
}

/// What login needs (the hash never leaves the server).
#[derive(Debug, Clone)]
pub struct LoginRow {
    pub id: i64,
    pub password_hash: String,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_until_ms: i64,
    /// Made by single sign-on.
    pub sso: bool,
}

// ---- users ----

/// Longest user or role name.
pub const NAME_MAX: usize = 64;

/// User and role names: 1 to 64 of `a-z 0-9 . _ -`. `what` names the field in the error.
pub fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} must be 1 to {NAME_MAX} characters of a-z, 0-9, '.', '_' and '-'"
        )))
    }
}

pub fn create_user(
    c: &Connection,
    username: &str,
    hash: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    check_name("username", username)?;
    let exists: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)")?
        .query_row([username], |r| r.get(0))?;
    if exists {
        return Err(StoreError::Conflict(format!("user {username:?} exists")));
    }
    Ok(c.prepare_cached(
        "INSERT INTO users (username, password_hash, created_ms, password_changed_ms)
         VALUES (?1, ?2, ?3, ?3) RETURNING id",
    )?
    .query_row(params![username, hash, now_ms], |r| r.get(0))?)
}

const USER_COLS: &str = "id, username, disabled, locked_until_ms, created_ms, password_changed_ms,
     totp_enabled_ms IS NOT NULL, oidc_subject IS NOT NULL";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        disabled: r.get(2)?,
        locked_until_ms: r.get(3)?,
        created_ms: r.get(4)?,
        password_changed_ms: r.get(5)?,
        mfa_enabled: r.get(6)?,
        sso: r.get(7)?,
        bindings: Vec::new(),
    })
}

pub fn list_users(c: &Connection) -> Result<Vec<UserRow>, StoreError> {
    let mut users: Vec<UserRow> = c
        .prepare_cached(&format!("SELECT {USER_COLS} FROM users ORDER BY username"))?
        .query_map([], user_from_row)?
        .collect::<Result<_, _>>()?;
    for u in &mut users {
        u.bindings = bindings_of(c, u.id)?;
    }
    Ok(users)
}

pub fn user(c: &Connection, id: i64) -> Result<Option<UserRow>, StoreError> {
    let found = c
        .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
        .query_row([id], user_from_row)
        .optional()?;
    match found {
        Some(mut u) => {
            u.bindings = bindings_of(c, u.id)?;
            Ok(Some(u))
        }
        None => Ok(None),
    }
}

pub fn user_id(c: &Connection, username: &str) -> Result<Option<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT id FROM users WHERE username = ?1")?
            .query_row([username], |r| r.get(0))
            .optional()?,
    )
}

/// The id of a user that must exist (`Invalid` naming it otherwise).
pub fn existing_user_id(c: &Connection, username: &str) -> Result<i64, StoreError> {
    user_id(c, username)?.ok_or_else(|| StoreError::Invalid(format!("no user {username:?}")))
}

const LOGIN_COLS: &str =
    "id, password_hash, disabled, failed_logins, locked_until_ms, oidc_subject IS NOT NULL";

fn login_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LoginRow> {
    Ok(LoginRow {
        id: r.get(0)?,
        password_hash: r.get(1)?,
        disabled: r.get(2)?,
        failed_logins: r.get(3)?,
        locked_until_ms: r.get(4)?,
        sso: r.get(5)?,
    })
}

pub fn login_row(c: &Connection, username: &str) -> Result<Option<LoginRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {LOGIN_COLS} FROM users WHERE username = ?1"
    ))?
    .query_row([username], login_from_row)
    .optional()?)
}

/// [`login_row`] by user id (for a password change that must check the current one).
pub fn login_row_by_id(c: &Connection, user_id: i64) -> Result<Option<LoginRow>, StoreError> {
    Ok(
        c.prepare_cached(&format!("SELECT {LOGIN_COLS} FROM users WHERE id = ?1"))?
            .query_row([user_id], login_from_row)
            .optional()?,
    )
}

/// Changes a password and ends the user's sessions, except `keep_session` (the one a user
/// changed its own password from). `false` if no such user.
pub fn set_password(
    c: &Connection,
    user_id: i64,
    hash: &str,
    now_ms: i64,
    keep_session: Option<i64>,
) -> Result<bool, StoreError> {
    // The password being replaced joins the history (the newest 24 are kept: the most a
    // policy may check).
    c.prepare_cached(
        "INSERT INTO password_history (user_id, password_hash, replaced_ms)
         SELECT id, password_hash, ?2 FROM users WHERE id = ?1",
    )?
    .execute(params![user_id, now_ms])?;
    c.prepare_cached(
        "DELETE FROM password_history WHERE user_id = ?1 AND id NOT IN
             (SELECT id FROM password_history WHERE user_id = ?1 ORDER BY id DESC LIMIT 24)",
    )?
    .execute([user_id])?;
    let n = c
        .prepare_cached(
            "UPDATE users SET password_hash = ?2, password_changed_ms = ?3, failed_logins = 0,
                 mfa_failures = 0, locked_until_ms = 0 WHERE id = ?1",
        )?
        .execute(params![user_id, hash, now_ms])?;
    c.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2")?
        .execute(params![user_id, keep_session])?;
    Ok(n > 0)
}

/// The hashes of the user's latest `n` passwords, the current one first.
pub fn recent_password_hashes(
    c: &Connection,
    user_id: i64,
    n: usize,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT password_hash FROM (
             SELECT password_hash, 1 AS k, 0 AS id FROM users WHERE id = ?1
             UNION ALL
             SELECT password_hash, 0, id FROM password_history WHERE user_id = ?1)
         ORDER BY k DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![user_id, super::hosts::sql_limit(n)], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Disables (or re-enables) a user; disabling ends their sessions at once.
pub fn set_disabled(c: &Connection, user_id: i64, disabled: bool) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached("UPDATE users SET disabled = ?2 WHERE id = ?1")?
        .execute(params![user_id, disabled])?;
    if disabled {
        c.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
            .execute([user_id])?;
    }
    Ok(n > 0)
}

impl Store {
    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        self.read(list_users).await
    }

    pub async fn user(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        self.read(move |c| user(c, id)).await
    }

    /// Creates a user bound to `roles` on `host_selector`; the user as stored.
    pub async fn create_user_with_roles(
        &self,
        username: String,
        password_hash: String,
        roles: Vec<String>,
        host_selector: String,
        now_ms: i64,
    ) -> Result<UserRow, StoreError> {
        self.exec(move |c| {
            let id = create_user(c, &username, &password_hash, now_ms)?;
            for role in &roles {
                bind(c, id, role, &host_selector, now_ms)?;
            }
            user(c, id)?.ok_or_else(|| StoreError::Invalid("the new user vanished".into()))
        })
        .await
    }

    pub async fn login_row(&self, username: String) -> Result<Option<LoginRow>, StoreError> {
        self.read(move |c| login_row(c, &username)).await
    }

    pub async fn login_row_by_id(&self, user_id: i64) -> Result<Option<LoginRow>, StoreError> {
        self.read(move |c| login_row_by_id(c, user_id)).await
    }

    /// Clears the failed-login count and creates a session; its id.
    pub async fn start_session(
        &self,
        session: super::tokens::NewSession,
    ) -> Result<i64, StoreError> {
        self.exec(move |c| {
            super::login_attempts::login_succeeded(c, session.user_id)?;
            super::tokens::create_session(c, &session)
        })
        .await
    }

    /// The hashes of the user's latest `n` passwords, the current one first.
    pub async fn recent_password_hashes(
        &self,
        user_id: i64,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |c| recent_password_hashes(c, user_id, n))
            .await
    }

    /// Sets a password, ending the user's sessions but `keep_session`; whether the user exists.
    pub async fn set_password(
        &self,
        user_id: i64,
        hash: String,
        now_ms: i64,
        keep_session: Option<i64>,
    ) -> Result<bool, StoreError> {
        self.exec(move |c| set_password(c, user_id, &hash, now_ms, keep_session))
            .await
    }

    /// Disables or enables a user; the user as it is now, `None` if there is none.
    pub async fn set_disabled(
        &self,
        user_id: i64,
        disabled: bool,
    ) -> Result<Option<UserRow>, StoreError> {
        self.exec(move |c| {
            if !set_disabled(c, user_id, disabled)? {
                return Ok(None);
            }
            user(c, user_id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bind` as its callers use it: the selector normalised by `auth` first.
    fn bind(
        c: &Connection,
        user_id: i64,
        role: &str,
        selector: &str,
        now_ms: i64,
    ) -> Result<BindingRow, StoreError> {
        let selector = crate::auth::Scope::normalize(selector).map_err(StoreError::Invalid)?;
        super::bind(c, user_id, role, &selector, now_ms)
    }
    use crate::store::query::audit::*;
    use crate::store::query::roles::*;
    use crate::store::query::tokens::*;

    fn db() -> (tempfile::TempDir, crate::store::admin::AdminDb) {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::admin::open(&dir.path().join("t.db")).unwrap();
        (dir, c)
    }

    #[test]
    fn auth_store_names_roles_and_bindings() {
        let (_d, c) = db();
        assert!(check_name("username", "ops.bot-1_x").is_ok());
        for bad in ["", "Alice", "a b", "é", &"a".repeat(65)] {
            assert!(check_name("username", bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            create_user(&c, "Root", "h", 1),
            Err(StoreError::Invalid(_))
        ));
        let id = create_user(&c, "alice", "h", 1).unwrap();
        assert!(matches!(
            create_user(&c, "alice", "h", 1),
            Err(StoreError::Conflict(_))
        ));
        // Selectors are checked and stored trimmed; binding twice is one binding.
        let b = bind(&c, id, "operator", "  {team=\"a\"} ", 2).unwrap();
        assert_eq!(b.host_selector, "{team=\"a\"}");
        assert_eq!(
            bind(&c, id, "operator", "{team=\"a\"}", 3).unwrap().id,
            b.id
        );
        assert!(matches!(
            bind(&c, id, "operator", "{team=", 2),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            bind(&c, id, "nope", "", 2),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            bind(&c, 999, "viewer", "", 2),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(user(&c, id).unwrap().unwrap().bindings.len(), 1);
        assert!(user(&c, 999).unwrap().is_none());
        // Custom roles: created, replaced, refused while bound; built-ins fixed.
        let name = |p: &str| p.to_owned();
        assert!(put_role(&c, "team", &[name("hosts:read")], 1).unwrap());
        assert!(!put_role(&c, "team", &[name("alerts:read"), name("alerts:read")], 1).unwrap());
        assert_eq!(
            role(&c, "team").unwrap().unwrap().permissions,
            ["alerts:read"]
        );
        assert!(matches!(
            put_role(&c, "team", &[], 1),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            put_role(&c, "viewer", &[name("hosts:read")], 1),
            Err(StoreError::Conflict(_))
        ));
        bind(&c, id, "team", "", 1).unwrap();
        assert!(matches!(
            delete_role(&c, "team"),
            Err(StoreError::Conflict(_))
        ));
        assert!(unbind_role(&c, id, "team", " ").unwrap());
        assert!(delete_role(&c, "team").unwrap());
        assert!(!delete_role(&c, "team").unwrap());
    }

    #[test]
    fn auth_store_password_change_keeps_only_the_named_session() {
        let (_d, c) = db();
        let id = create_user(&c, "bob", "h1", 1).unwrap();
        let new_session = |hash: &str| NewSession {
            user_id: id,
            hash: hash.into(),
            now_ms: 1,
            expires_ms: 100,
            source: String::new(),
            mfa_ms: None,
            sso: false,
        };
        let keep = create_session(&c, &new_session("s1")).unwrap();
        let other = create_session(&c, &new_session("s2")).unwrap();
        assert!(set_password(&c, id, "h2", 5, Some(keep)).unwrap());
        assert!(session(&c, keep).unwrap().is_some());
        assert!(session(&c, other).unwrap().is_none());
        assert!(set_password(&c, id, "h3", 6, None).unwrap());
        assert!(session(&c, keep).unwrap().is_none());
        assert_eq!(
            login_row_by_id(&c, id).unwrap().unwrap().password_hash,
            "h3"
        );
        assert!(!set_password(&c, 999, "h", 6, None).unwrap());
    }

    #[test]
    fn auth_store_audit_filters_and_pages_newest_first() {
        let (_d, c) = db();
        for i in 0..10 {
            insert_audit(
                &c,
                &AuditEntry {
                    at_ms: 1000 + i,
                    actor: if i % 2 == 0 { "user:a" } else { "user:b" }.into(),
                    token_id: None,
                    session_id: None,
                    source: "127.0.0.1".into(),
                    action: if i < 5 { "POST /x" } else { "DELETE /x" }.into(),
                    object: if i == 9 { "/x/9" } else { "/x" }.into(),
                    result: if i >= 8 { 403 } else { 200 },
                    detail: String::new(),
                    request_id: Some(format!("req-{i}")),
                },
            )
            .unwrap();
        }
        let all = AuditFilter::default();
        let page = list_audit(&c, &all, None, 4).unwrap();
        assert_eq!(
            page.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [1009, 1008, 1007, 1006]
        );
        let next = list_audit(&c, &all, Some(page[3].id), 4).unwrap();
        assert_eq!(next[0].at_ms, 1005);
        let f = AuditFilter {
            actor: Some("user:a".into()),
            action: Some("POST /x".into()),
            since_ms: Some(1001),
            ..AuditFilter::default()
        };
        let rows = list_audit(&c, &f, None, 100).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [1004, 1002]
        );
        let by_request = AuditFilter {
            request_id: Some("req-7".into()),
            ..AuditFilter::default()
        };
        let rows = list_audit(&c, &by_request, None, 100).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].at_ms, 1007);
        assert_eq!(rows[0].request_id.as_deref(), Some("req-7"));
        // A time range is [since, until); object and result match exactly.
        let window = AuditFilter {
            since_ms: Some(1003),
            until_ms: Some(1006),
            ..AuditFilter::default()
        };
        let rows = list_audit(&c, &window, None, 100).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [1005, 1004, 1003]
        );
        let refused = AuditFilter {
            object: Some("/x/9".into()),
            result: Some(403),
            ..AuditFilter::default()
        };
        let rows = list_audit(&c, &refused, None, 100).unwrap();
        assert_eq!(rows.iter().map(|r| r.at_ms).collect::<Vec<_>>(), [1009]);
        let other_result = AuditFilter {
            result: Some(404),
            ..refused
        };
        assert!(list_audit(&c, &other_result, None, 100).unwrap().is_empty());
    }
}
