//! Roles (built-in and custom, with their permission names) and role bindings (a role for
//! the hosts a selector matches) in SQLite, for the API's typed `Store` methods below and
//! the admin CLI. The store keeps permission names; `auth` says what they allow.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::users::{check_name, user};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BindingRow {
    pub id: i64,
    pub role: String,
    /// `{label="value", ...}`; empty = every host.
    pub host_selector: String,
    /// `manual` (made through the API or CLI), or `oidc` (from the user's groups at the
    /// identity provider, recomputed at each sign-in).
    pub origin: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RoleRow {
    pub name: String,
    /// Permission names as stored (`hosts:read`, ...); `auth` gives them meaning.
    pub permissions: Vec<String>,
    pub builtin: bool,
}

/// Permission names as stored: a JSON list. The store keeps names; which names exist and
/// what they allow is the `auth` layer's business.
pub(super) fn perms_json(p: &[String]) -> Result<String, StoreError> {
    Ok(serde_json::to_string(p)?)
}

pub(super) fn perms_parse(text: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(text).unwrap_or_default()
}

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
    perms: &[String],
    now_ms: i64,
) -> Result<bool, StoreError> {
    check_name("role name", name)?;
    if perms.is_empty() {
        return Err(StoreError::Invalid(
            "a role needs at least one permission".into(),
        ));
    }
    // The caller normalises (`auth::permission_names`: known names in a canonical order);
    // each is stored once whatever it passes.
    let mut perms = perms.to_vec();
    let mut seen = std::collections::HashSet::new();
    perms.retain(|p| seen.insert(p.clone()));
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
/// selector comes checked and normalised by the caller (`auth::Scope::normalize`); binding
/// twice returns the existing binding, now manual even if single sign-on made it (it then
/// stays whatever the user's groups say).
pub fn bind(
    c: &Connection,
    user_id: i64,
    role: &str,
    selector: &str,
    now_ms: i64,
) -> Result<BindingRow, StoreError> {
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
             ON CONFLICT (user_id, role, host_selector) DO UPDATE SET origin = 'manual'
             RETURNING id",
        )?
        .query_row(params![user_id, role, selector, now_ms], |r| r.get(0))?;
    Ok(BindingRow {
        id,
        role: role.to_owned(),
        host_selector: selector.to_owned(),
        origin: "manual".to_owned(),
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
        "SELECT id, role, host_selector, origin FROM role_bindings WHERE user_id = ?1 ORDER BY id",
    )?
    .query_map([user_id], |r| {
        Ok(BindingRow {
            id: r.get(0)?,
            role: r.get(1)?,
            host_selector: r.get(2)?,
            origin: r.get(3)?,
        })
    })?
    .collect::<Result<_, _>>()?)
}

/// (permissions of the role, host selector) for each of the user's bindings.
pub fn grants_of(c: &Connection, user_id: i64) -> Result<Vec<(Vec<String>, String)>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT r.permissions, b.host_selector FROM role_bindings b
         JOIN roles r ON r.name = b.role WHERE b.user_id = ?1",
    )?
    .query_map([user_id], |r| {
        Ok((perms_parse(&r.get::<_, String>(0)?), r.get::<_, String>(1)?))
    })?
    .collect::<Result<_, _>>()?)
}

impl Store {
    pub async fn roles(&self) -> Result<Vec<RoleRow>, StoreError> {
        self.read(list_roles).await
    }

    /// Creates or replaces a custom role: whether it was created, and the role as stored.
    pub async fn put_role(
        &self,
        name: String,
        permissions: Vec<String>,
        now_ms: i64,
    ) -> Result<(bool, RoleRow), StoreError> {
        self.exec(move |c| {
            let created = put_role(c, &name, &permissions, now_ms)?;
            let row =
                role(c, &name)?.ok_or_else(|| StoreError::Invalid("the role vanished".into()))?;
            Ok((created, row))
        })
        .await
    }

    /// Deletes a custom role nobody is bound to; whether it existed.
    pub async fn delete_role(&self, name: String) -> Result<bool, StoreError> {
        self.exec(move |c| delete_role(c, &name)).await
    }

    /// Binds an existing user to a role on a host selector; `None` if there is no such user.
    pub async fn bind(
        &self,
        user_id: i64,
        role: String,
        host_selector: String,
        now_ms: i64,
    ) -> Result<Option<BindingRow>, StoreError> {
        self.exec(move |c| {
            if user(c, user_id)?.is_none() {
                return Ok(None);
            }
            bind(c, user_id, &role, &host_selector, now_ms).map(Some)
        })
        .await
    }

    /// Removes one of a user's bindings; whether it existed.
    pub async fn unbind(&self, user_id: i64, binding_id: i64) -> Result<bool, StoreError> {
        self.exec(move |c| unbind(c, user_id, binding_id)).await
    }
}
