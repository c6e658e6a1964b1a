//! Users, roles, role bindings, API tokens, sessions and the audit log in SQLite. Every
//! function takes a connection, so the same SQL serves the API (through the writer thread's
//! `Store::exec`, or a `Reader` for lookups) and the admin CLI (its own connection).
//! Secrets never reach this layer: only argon2id hashes of passwords and SHA-256 of tokens.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::StoreError;
use crate::auth::Permission;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BindingRow {
    pub id: i64,
    pub role: String,
    /// `{label="value", ...}`; empty = every host.
    pub host_selector: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub disabled: bool,
    pub locked_until_ms: i64,
    pub created_ms: i64,
    pub password_changed_ms: i64,
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
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RoleRow {
    pub name: String,
    #[schema(value_type = Vec<String>)]
    pub permissions: Vec<Permission>,
    pub builtin: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub user_id: Option<i64>,
    /// `None` = everything the owner may do.
    #[schema(value_type = Option<Vec<String>>)]
    pub permissions: Option<Vec<Permission>>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
    pub last_used_ms: Option<i64>,
    #[serde(skip)]
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: i64,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub expires_ms: i64,
    pub source: String,
    #[serde(skip)]
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub token_id: Option<i64>,
    pub session_id: Option<i64>,
    pub source: String,
    pub action: String,
    pub object: String,
    pub result: i64,
    pub detail: String,
}

fn perms_json(p: &[Permission]) -> Result<String, StoreError> {
    Ok(serde_json::to_string(p)?)
}

fn perms_parse(text: &str) -> Vec<Permission> {
    // Unknown names (from a newer build) grant nothing.
    serde_json::from_str::<Vec<String>>(text)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
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

const USER_COLS: &str = "id, username, disabled, locked_until_ms, created_ms, password_changed_ms";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        disabled: r.get(2)?,
        locked_until_ms: r.get(3)?,
        created_ms: r.get(4)?,
        password_changed_ms: r.get(5)?,
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

pub fn login_row(c: &Connection, username: &str) -> Result<Option<LoginRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, password_hash, disabled, failed_logins, locked_until_ms
         FROM users WHERE username = ?1",
    )?
    .query_row([username], |r| {
        Ok(LoginRow {
            id: r.get(0)?,
            password_hash: r.get(1)?,
            disabled: r.get(2)?,
            failed_logins: r.get(3)?,
            locked_until_ms: r.get(4)?,
        })
    })
    .optional()?)
}

/// [`login_row`] by user id (for a password change that must check the current one).
pub fn login_row_by_id(c: &Connection, user_id: i64) -> Result<Option<LoginRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, password_hash, disabled, failed_logins, locked_until_ms
         FROM users WHERE id = ?1",
    )?
    .query_row([user_id], |r| {
        Ok(LoginRow {
            id: r.get(0)?,
            password_hash: r.get(1)?,
            disabled: r.get(2)?,
            failed_logins: r.get(3)?,
            locked_until_ms: r.get(4)?,
        })
    })
    .optional()?)
}

/// Counts a login attempt before its password is checked; at `lock_after` consecutive
/// attempts without success the account locks for `lock_ms`. `false` (nothing counted) when
/// the account is locked now.
pub fn reserve_login(
    c: &Connection,
    user_id: i64,
    now_ms: i64,
    lock_after: i64,
    lock_ms: i64,
) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE users SET failed_logins = failed_logins + 1,
                 locked_until_ms = CASE WHEN failed_logins + 1 >= ?3 THEN ?2 + ?4
                                        ELSE locked_until_ms END
             WHERE id = ?1 AND locked_until_ms <= ?2",
        )?
        .execute(params![user_id, now_ms, lock_after, lock_ms])?;
    Ok(n > 0)
}

/// Counts a failed login; at `lock_after` failures the account locks for `lock_ms`.
pub fn login_failed(
    c: &Connection,
    user_id: i64,
    now_ms: i64,
    lock_after: i64,
    lock_ms: i64,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE users SET failed_logins = failed_logins + 1,
             locked_until_ms = CASE WHEN failed_logins + 1 >= ?3 THEN ?2 + ?4 ELSE locked_until_ms END
         WHERE id = ?1",
    )?
    .execute(params![user_id, now_ms, lock_after, lock_ms])?;
    Ok(())
}

pub fn login_succeeded(c: &Connection, user_id: i64) -> Result<(), StoreError> {
    c.prepare_cached("UPDATE users SET failed_logins = 0, locked_until_ms = 0 WHERE id = ?1")?
        .execute([user_id])?;
    Ok(())
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
    let n = c
        .prepare_cached(
            "UPDATE users SET password_hash = ?2, password_changed_ms = ?3, failed_logins = 0,
                 locked_until_ms = 0 WHERE id = ?1",
        )?
        .execute(params![user_id, hash, now_ms])?;
    c.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2")?
        .execute(params![user_id, keep_session])?;
    Ok(n > 0)
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

// ---- roles and bindings ----

pub fn list_roles(c: &Connection) -> Result<Vec<RoleRow>, StoreError> {
    Ok(
        c.prepare_cached("SELECT name, permissions, builtin FROM roles ORDER BY name")?
            .query_map([], |r| {
                Ok(RoleRow {
                    name: r.get(0)?,
                    permissions: perms_parse(&r.get::<_, String>(1)?),
                    builtin: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?,
    )
}

/// Creates or replaces a custom role (`true` when created). Built-in roles cannot be
/// changed; a role needs at least one permission.
pub fn put_role(
    c: &Connection,
    name: &str,
    perms: &[Permission],
    now_ms: i64,
) -> Result<bool, StoreError> {
    check_name("role name", name)?;
    if perms.is_empty() {
        return Err(StoreError::Invalid(
            "a role needs at least one permission".into(),
        ));
    }
    let mut perms = perms.to_vec();
    perms.sort();
    perms.dedup();
    let builtin: Option<bool> = c
        .prepare_cached("SELECT builtin FROM roles WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    if builtin == Some(true) {
        return Err(StoreError::Conflict(format!("role {name:?} is built in")));
    }
    c.prepare_cached(
        "INSERT INTO roles (name, permissions, builtin, created_ms) VALUES (?1, ?2, 0, ?3)
         ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions",
    )?
    .execute(params![name, perms_json(&perms)?, now_ms])?;
    Ok(builtin.is_none())
}

pub fn role(c: &Connection, name: &str) -> Result<Option<RoleRow>, StoreError> {
    Ok(
        c.prepare_cached("SELECT name, permissions, builtin FROM roles WHERE name = ?1")?
            .query_row([name], |r| {
                Ok(RoleRow {
                    name: r.get(0)?,
                    permissions: perms_parse(&r.get::<_, String>(1)?),
                    builtin: r.get(2)?,
                })
            })
            .optional()?,
    )
}

/// Deletes a custom role that nobody is bound to. `false` if it does not exist.
pub fn delete_role(c: &Connection, name: &str) -> Result<bool, StoreError> {
    let row: Option<bool> = c
        .prepare_cached("SELECT builtin FROM roles WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    match row {
        None => Ok(false),
        Some(true) => Err(StoreError::Conflict(format!("role {name:?} is built in"))),
        Some(false) => {
            let bound: bool = c
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM role_bindings WHERE role = ?1)")?
                .query_row([name], |r| r.get(0))?;
            if bound {
                return Err(StoreError::Conflict(format!(
                    "role {name:?} is still bound"
                )));
            }
            c.prepare_cached("DELETE FROM roles WHERE name = ?1")?
                .execute([name])?;
            Ok(true)
        }
    }
}

/// Binds `role` to the user for the hosts `selector` matches (empty: every host). The
/// selector is checked and stored trimmed; binding twice returns the existing binding.
pub fn bind(
    c: &Connection,
    user_id: i64,
    role: &str,
    selector: &str,
    now_ms: i64,
) -> Result<BindingRow, StoreError> {
    let selector = match crate::auth::Scope::parse(selector)
        .map_err(|e| StoreError::Invalid(format!("host selector: {e}")))?
    {
        crate::auth::Scope::AllHosts => String::new(),
        crate::auth::Scope::Hosts { selector, .. } => selector,
    };
    let known: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM roles WHERE name = ?1)")?
        .query_row([role], |r| r.get(0))?;
    if !known {
        return Err(StoreError::Invalid(format!("unknown role {role:?}")));
    }
    let user: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)")?
        .query_row([user_id], |r| r.get(0))?;
    if !user {
        return Err(StoreError::Invalid(format!("no user with id {user_id}")));
    }
    let id = c
        .prepare_cached(
            "INSERT INTO role_bindings (user_id, role, host_selector, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id, role, host_selector) DO UPDATE SET created_ms = created_ms
             RETURNING id",
        )?
        .query_row(params![user_id, role, selector, now_ms], |r| r.get(0))?;
    Ok(BindingRow {
        id,
        role: role.to_owned(),
        host_selector: selector,
    })
}

pub fn unbind(c: &Connection, user_id: i64, binding_id: i64) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("DELETE FROM role_bindings WHERE id = ?1 AND user_id = ?2")?
            .execute(params![binding_id, user_id])?
            > 0,
    )
}

/// Removes the user's binding of `role` for exactly `selector` (trimmed). `false` if none.
pub fn unbind_role(
    c: &Connection,
    user_id: i64,
    role: &str,
    selector: &str,
) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "DELETE FROM role_bindings WHERE user_id = ?1 AND role = ?2 AND host_selector = ?3",
    )?
    .execute(params![user_id, role, selector.trim()])?
        > 0)
}

pub fn bindings_of(c: &Connection, user_id: i64) -> Result<Vec<BindingRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, role, host_selector FROM role_bindings WHERE user_id = ?1 ORDER BY id",
    )?
    .query_map([user_id], |r| {
        Ok(BindingRow {
            id: r.get(0)?,
            role: r.get(1)?,
            host_selector: r.get(2)?,
        })
    })?
    .collect::<Result<_, _>>()?)
}

/// (permissions of the role, host selector) for each of the user's bindings.
pub fn grants_of(
    c: &Connection,
    user_id: i64,
) -> Result<Vec<(Vec<Permission>, String)>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT r.permissions, b.host_selector FROM role_bindings b
         JOIN roles r ON r.name = b.role WHERE b.user_id = ?1",
    )?
    .query_map([user_id], |r| {
        Ok((perms_parse(&r.get::<_, String>(0)?), r.get::<_, String>(1)?))
    })?
    .collect::<Result<_, _>>()?)
}

// ---- tokens ----

pub fn create_token(
    c: &Connection,
    name: &str,
    user_id: Option<i64>,
    perms: Option<&[Permission]>,
    expires_ms: Option<i64>,
    hash: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let perms = perms.map(perms_json).transpose()?;
    Ok(c.prepare_cached(
        "INSERT INTO api_tokens (name, hash, created_ms, expires_ms, user_id, permissions)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
    )?
    .query_row(
        params![name, hash, now_ms, expires_ms, user_id, perms],
        |r| r.get(0),
    )?)
}

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        user_id: r.get(2)?,
        permissions: r.get::<_, Option<String>>(3)?.map(|t| perms_parse(&t)),
        created_ms: r.get(4)?,
        expires_ms: r.get(5)?,
        revoked: r.get(6)?,
        last_used_ms: r.get(7)?,
        hash: r.get(8)?,
    })
}

const TOKEN_COLS: &str =
    "id, name, user_id, permissions, created_ms, expires_ms, revoked, last_used_ms, hash";

pub fn token(c: &Connection, id: i64) -> Result<Option<TokenRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TOKEN_COLS} FROM api_tokens WHERE id = ?1"
    ))?
    .query_row([id], token_from_row)
    .optional()?)
}

/// Every token, or those of one user.
pub fn list_tokens(c: &Connection, user_id: Option<i64>) -> Result<Vec<TokenRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TOKEN_COLS} FROM api_tokens WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id"
    ))?
    .query_map([user_id], token_from_row)?
    .collect::<Result<_, _>>()?)
}

pub fn revoke_token(c: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("UPDATE api_tokens SET revoked = 1 WHERE id = ?1")?
            .execute([id])?
            > 0,
    )
}

pub fn token_used(c: &Connection, id: i64, now_ms: i64) -> Result<(), StoreError> {
    c.prepare_cached("UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1")?
        .execute(params![id, now_ms])?;
    Ok(())
}

// ---- sessions ----

pub fn create_session(
    c: &Connection,
    user_id: i64,
    hash: &str,
    now_ms: i64,
    expires_ms: i64,
    source: &str,
) -> Result<i64, StoreError> {
    Ok(c.prepare_cached(
        "INSERT INTO sessions (user_id, hash, created_ms, last_seen_ms, expires_ms, source)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5) RETURNING id",
    )?
    .query_row(params![user_id, hash, now_ms, expires_ms, source], |r| {
        r.get(0)
    })?)
}

const SESSION_COLS: &str = "id, user_id, created_ms, last_seen_ms, expires_ms, source, hash";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        created_ms: r.get(2)?,
        last_seen_ms: r.get(3)?,
        expires_ms: r.get(4)?,
        source: r.get(5)?,
        hash: r.get(6)?,
    })
}

pub fn session(c: &Connection, id: i64) -> Result<Option<SessionRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
    ))?
    .query_row([id], session_from_row)
    .optional()?)
}

pub fn list_sessions(c: &Connection, user_id: Option<i64>) -> Result<Vec<SessionRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM sessions WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id"
    ))?
    .query_map([user_id], session_from_row)?
    .collect::<Result<_, _>>()?)
}

pub fn touch_session(c: &Connection, id: i64, now_ms: i64) -> Result<(), StoreError> {
    c.prepare_cached("UPDATE sessions SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1")?
        .execute(params![id, now_ms])?;
    Ok(())
}

pub fn delete_session(c: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(c.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([id])?
        > 0)
}

/// Deletes sessions past their absolute expiry or idle for longer than `idle_ms`.
pub fn cleanup_sessions(c: &Connection, now_ms: i64, idle_ms: i64) -> Result<usize, StoreError> {
    Ok(
        c.prepare_cached("DELETE FROM sessions WHERE expires_ms <= ?1 OR last_seen_ms <= ?1 - ?2")?
            .execute(params![now_ms, idle_ms])?,
    )
}

// ---- audit ----

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub actor: String,
    pub token_id: Option<i64>,
    pub session_id: Option<i64>,
    pub source: String,
    pub action: String,
    pub object: String,
    pub result: u16,
    pub detail: String,
}

pub fn insert_audit(c: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO audit_log (at_ms, actor, token_id, session_id, source, action, object,
             result, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.at_ms,
        e.actor,
        e.token_id,
        e.session_id,
        e.source,
        e.action,
        e.object,
        e.result,
        e.detail
    ])?;
    Ok(())
}

/// Which audit rows to list (every field optional).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact actor, e.g. `user:alice`.
    pub actor: Option<String>,
    /// Exact action, e.g. `POST /api/v1/users`.
    pub action: Option<String>,
    /// Rows at or after this time.
    pub since_ms: Option<i64>,
}

/// Newest first, rows with id below `before` (cursor) that pass `filter`, at most `limit`.
pub fn list_audit(
    c: &Connection,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<AuditRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, at_ms, actor, token_id, session_id, source, action, object, result, detail
         FROM audit_log
         WHERE (?1 IS NULL OR id < ?1) AND (?3 IS NULL OR actor = ?3)
           AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR at_ms >= ?5)
         ORDER BY id DESC LIMIT ?2",
    )?
    .query_map(
        params![
            before,
            i64::try_from(limit).unwrap_or(i64::MAX),
            filter.actor,
            filter.action,
            filter.since_ms
        ],
        |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                token_id: r.get(3)?,
                session_id: r.get(4)?,
                source: r.get(5)?,
                action: r.get(6)?,
                object: r.get(7)?,
                result: r.get(8)?,
                detail: r.get(9)?,
            })
        },
    )?
    .collect::<Result<_, _>>()?)
}

/// Deletes audit rows older than `before_ms` (retention), at most `limit`.
pub fn prune_audit(c: &Connection, before_ms: i64, limit: i64) -> Result<usize, StoreError> {
    Ok(c.prepare_cached(
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at_ms < ?1 LIMIT ?2)",
    )?
    .execute(params![before_ms, limit])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = super::super::admin::open(&dir.path().join("t.db")).unwrap();
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
        assert!(put_role(&c, "team", &[Permission::HostsRead], 1).unwrap());
        assert!(!put_role(
            &c,
            "team",
            &[Permission::AlertsRead, Permission::AlertsRead],
            1
        )
        .unwrap());
        assert_eq!(
            role(&c, "team").unwrap().unwrap().permissions,
            [Permission::AlertsRead]
        );
        assert!(matches!(
            put_role(&c, "team", &[], 1),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            put_role(&c, "viewer", &[Permission::HostsRead], 1),
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
        let keep = create_session(&c, id, "s1", 1, 100, "").unwrap();
        let other = create_session(&c, id, "s2", 1, 100, "").unwrap();
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
                    object: "/x".into(),
                    result: 200,
                    detail: String::new(),
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
        };
        let rows = list_audit(&c, &f, None, 100).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [1004, 1002]
        );
    }
}
