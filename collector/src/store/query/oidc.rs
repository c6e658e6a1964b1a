//! Accounts of single sign-on: the user an OpenID Connect identity (issuer and subject) signs
//! in as, created on its first sign-in, and its `oidc` role bindings recomputed from the
//! provider's groups at every sign-in (manual bindings are never touched). One savepoint
//! does it all, so a sign-in never sees half of a recomputation.

use rusqlite::{params, Connection, OptionalExtension};

use super::users::{check_name, user_id};
use crate::store::{Store, StoreError};

/// What the password hash of an account made by single sign-on holds: not a PHC string,
/// so no password ever matches it (until an admin sets one).
pub const NO_PASSWORD: &str = "!oidc";

/// One binding the provider's groups give (role, normalized host selector).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupGrant {
    pub role: String,
    pub selector: String,
}

/// The account a sign-in lands on.
#[derive(Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// Signed in as `user_id`; its `oidc` bindings now match the groups.
    User {
        user_id: i64,
        username: String,
        /// The account was made by this sign-in.
        created: bool,
        /// Bindings added and removed by this sign-in.
        added: Vec<GroupGrant>,
        removed: Vec<GroupGrant>,
        /// Roles the configuration names that do not exist (skipped).
        unknown_roles: Vec<String>,
        /// Bindings the account holds now, manual ones included.
        bindings: usize,
    },
    /// The account exists and an admin disabled it.
    Disabled { username: String },
    /// No account yet, and the groups grant nothing: none is made (a name is not taken by
    /// whoever the provider knows).
    NoAccess,
    /// A local account (or another identity's) already has this username.
    NameTaken,
}

/// Finds or creates the account of `subject` (named `username` when created), then makes
/// its `oidc` bindings exactly `grants`.
pub fn provision(
    c: &Connection,
    subject: &str,
    username: &str,
    grants: &[GroupGrant],
    now_ms: i64,
) -> Result<Provisioned, StoreError> {
    let mut known = Vec::new();
    let mut unknown_roles = Vec::new();
    for g in grants {
        let exists: bool = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM roles WHERE name = ?1)")?
            .query_row([&g.role], |r| r.get(0))?;
        if exists {
            known.push(g.clone());
        } else {
            unknown_roles.push(g.role.clone());
        }
    }
    let found: Option<(i64, String, bool)> = c
        .prepare_cached("SELECT id, username, disabled FROM users WHERE oidc_subject = ?1")?
        .query_row([subject], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (id, name, created) = match found {
        Some((_, name, true)) => return Ok(Provisioned::Disabled { username: name }),
        Some((id, name, false)) => (id, name, false),
        None if known.is_empty() => return Ok(Provisioned::NoAccess),
        None => {
            check_name("username", username)?;
            // Never adopt an existing account by name: whoever controls a username at the
            // provider would take over the local account of that name.
            if user_id(c, username)?.is_some() {
                return Ok(Provisioned::NameTaken);
            }
            let id = c
                .prepare_cached(
                    "INSERT INTO users (username, password_hash, created_ms, password_changed_ms,
                                        oidc_subject)
                     VALUES (?1, ?2, ?3, ?3, ?4) RETURNING id",
                )?
                .query_row(params![username, NO_PASSWORD, now_ms, subject], |r| {
                    r.get(0)
                })?;
            (id, username.to_owned(), true)
        }
    };
    let current: Vec<GroupGrant> = c
        .prepare_cached(
            "SELECT role, host_selector FROM role_bindings WHERE user_id = ?1 AND origin = 'oidc'",
        )?
        .query_map([id], |r| {
            Ok(GroupGrant {
                role: r.get(0)?,
                selector: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut removed = Vec::new();
    for g in current.iter().filter(|g| !known.contains(g)) {
        c.prepare_cached(
            "DELETE FROM role_bindings
             WHERE user_id = ?1 AND role = ?2 AND host_selector = ?3 AND origin = 'oidc'",
        )?
        .execute(params![id, g.role, g.selector])?;
        removed.push(g.clone());
    }
    let mut added = Vec::new();
    for g in known.iter().filter(|g| !current.contains(g)) {
        // A manual binding that is the same stays manual.
        let n = c
            .prepare_cached(
                "INSERT INTO role_bindings (user_id, role, host_selector, created_ms, origin)
                 VALUES (?1, ?2, ?3, ?4, 'oidc') ON CONFLICT (user_id, role, host_selector) DO NOTHING",
            )?
            .execute(params![id, g.role, g.selector, now_ms])?;
        if n > 0 {
            added.push(g.clone());
        }
    }
    let bindings: i64 = c
        .prepare_cached("SELECT count(*) FROM role_bindings WHERE user_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    Ok(Provisioned::User {
        user_id: id,
        username: name,
        created,
        added,
        removed,
        unknown_roles,
        bindings: usize::try_from(bindings).unwrap_or(0),
    })
}

impl Store {
    /// [`provision`] on the writer.
    pub async fn provision_oidc_user(
        &self,
        subject: String,
        username: String,
        grants: Vec<GroupGrant>,
        now_ms: i64,
    ) -> Result<Provisioned, StoreError> {
        self.exec(move |c| provision(c, &subject, &username, &grants, now_ms))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::roles::{bind, bindings_of};
    use crate::store::query::users::create_user;

    fn grant(role: &str, selector: &str) -> GroupGrant {
        GroupGrant {
            role: role.into(),
            selector: selector.into(),
        }
    }

    #[test]
    fn oidc_provision_creates_once_recomputes_bindings_and_keeps_manual_ones() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::admin::open(&dir.path().join("o.db")).unwrap();
        let sub = "https://idp.test\nalice-sub";
        let team_a = grant("operator", "{team=\"a\"}");
        let first = provision(&c, sub, "alice", std::slice::from_ref(&team_a), 10).unwrap();
        let Provisioned::User {
            user_id, created, ..
        } = first
        else {
            panic!("{first:?}")
        };
        assert!(created);
        // A manual binding beside the provider's.
        bind(&c, user_id, "viewer", "", 11).unwrap();
        // Next sign-in: moved from team a to an unknown role and the viewers' group.
        let next = provision(
            &c,
            sub,
            "renamed-at-the-idp",
            &[grant("nope", ""), grant("viewer", "")],
            12,
        )
        .unwrap();
        assert_eq!(
            next,
            Provisioned::User {
                user_id,
                username: "alice".into(),
                created: false,
                added: vec![],
                removed: vec![team_a],
                unknown_roles: vec!["nope".into()],
                bindings: 1,
            },
            "the identical manual binding stays manual; the name is the account's own"
        );
        let left = bindings_of(&c, user_id).unwrap();
        assert_eq!(
            (left.len(), left[0].origin.as_str()),
            (1, "manual"),
            "{left:?}"
        );
        // Leaving every group takes nothing manual away.
        let none = provision(&c, sub, "alice", &[], 13).unwrap();
        assert!(matches!(none, Provisioned::User { bindings: 1, .. }));

        // Groups granting nothing make no account (and take no name).
        assert_eq!(
            provision(
                &c,
                "https://idp.test\ncarol-sub",
                "carol",
                &[grant("nope", "")],
                14
            )
            .unwrap(),
            Provisioned::NoAccess
        );
        assert_eq!(
            crate::store::query::users::user_id(&c, "carol").unwrap(),
            None
        );
        // A local account's name is never adopted; a disabled account stays out.
        create_user(&c, "bob", "hash", 14).unwrap();
        assert_eq!(
            provision(
                &c,
                "https://idp.test\nbob-sub",
                "bob",
                &[grant("viewer", "")],
                15
            )
            .unwrap(),
            Provisioned::NameTaken
        );
        c.execute("UPDATE users SET disabled = 1 WHERE id = ?1", [user_id])
            .unwrap();
        assert_eq!(
            provision(&c, sub, "alice", &[], 16).unwrap(),
            Provisioned::Disabled {
                username: "alice".into()
            }
        );
    }
}
