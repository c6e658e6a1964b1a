//! API tokens and login sessions in SQLite (only SHA-256 hashes of their secrets). Like
//! `users`, each function takes a connection: the API reaches them through typed `Store`
//! methods, the admin CLI with its own connection.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::roles::{grants_of, perms_json, perms_parse};
use super::users::{user, UserRow};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub user_id: Option<i64>,
    /// `None` = everything the owner may do.
    #[schema(value_type = Option<Vec<String>>)]
    pub permissions: Option<Vec<String>>,
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
    /// When it passed a second factor (absent: signed in with a password alone).
    pub mfa_ms: Option<i64>,
    /// Opened through single sign-on.
    pub sso: bool,
}

// ---- tokens ----

pub fn create_token(
    c: &Connection,
    name: &str,
    user_id: Option<i64>,
    perms: Option<&[String]>,
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

/// A login session to open.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: i64,
    /// SHA-256 of its secret.
    pub hash: String,
    pub now_ms: i64,
    pub expires_ms: i64,
    /// The client's address.
    pub source: String,
    /// When it passed a second factor (`None`: a password alone).
    pub mfa_ms: Option<i64>,
    /// Opened through single sign-on (the provider vouches for password and factor).
    pub sso: bool,
}

pub fn create_session(c: &Connection, s: &NewSession) -> Result<i64, StoreError> {
    Ok(c.prepare_cached(
        "INSERT INTO sessions (user_id, hash, created_ms, last_seen_ms, expires_ms, source, mfa_ms,
                               sso)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7) RETURNING id",
    )?
    .query_row(
        params![
            s.user_id,
            s.hash,
            s.now_ms,
            s.expires_ms,
            s.source,
            s.mfa_ms,
            s.sso
        ],
        |r| r.get(0),
    )?)
}

const SESSION_COLS: &str =
    "id, user_id, created_ms, last_seen_ms, expires_ms, source, hash, mfa_ms, sso";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        created_ms: r.get(2)?,
        last_seen_ms: r.get(3)?,
        expires_ms: r.get(4)?,
        source: r.get(5)?,
        hash: r.get(6)?,
        mfa_ms: r.get(7)?,
        sso: r.get(8)?,
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

/// What a bearer credential names: an API token or a login session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerKind {
    Token,
    Session,
}

/// A bearer credential's row.
#[derive(Debug, Clone)]
pub enum BearerRow {
    Token(TokenRow),
    Session(SessionRow),
}

impl BearerRow {
    /// The user the credential acts for (`None`: a token without a user).
    pub fn user_id(&self) -> Option<i64> {
        match self {
            BearerRow::Token(t) => t.user_id,
            BearerRow::Session(s) => Some(s.user_id),
        }
    }
}

/// A user's grants: `(permissions of the role, host selector)` per binding.
pub type Grants = Vec<(Vec<String>, String)>;

/// A bearer credential with its user and that user's grants.
#[derive(Debug, Clone)]
pub struct Bearer {
    pub credential: BearerRow,
    pub owner: Option<(UserRow, Grants)>,
}

/// The parameters of a new API token.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    /// The user it acts for (must exist and be enabled).
    pub owner: Option<i64>,
    /// Its permission subset (`None`: everything its owner may do).
    pub permissions: Option<Vec<String>>,
    pub expires_ms: Option<i64>,
    /// The token that asks for it: its subset is passed on when none is asked for, and the
    /// new token never outlives it.
    pub parent: Option<i64>,
    pub hash: String,
}

impl Store {
    /// A token or session by id, with its user and grants when `accept` (given the
    /// credential row) says it is valid; `None` when it does not exist or is refused.
    pub async fn bearer(
        &self,
        kind: BearerKind,
        id: i64,
        accept: impl FnOnce(&BearerRow) -> bool + Send + 'static,
    ) -> Result<Option<Bearer>, StoreError> {
        self.read(move |c| {
            let credential = match kind {
                BearerKind::Token => token(c, id)?.map(BearerRow::Token),
                BearerKind::Session => session(c, id)?.map(BearerRow::Session),
            };
            let Some(credential) = credential.filter(|r| accept(r)) else {
                return Ok(None);
            };
            let owner = match credential.user_id() {
                Some(uid) => match user(c, uid)? {
                    Some(u) => Some((u, grants_of(c, uid)?)),
                    None => return Ok(None),
                },
                None => None,
            };
            Ok(Some(Bearer { credential, owner }))
        })
        .await
    }

    pub async fn tokens(&self, user_id: Option<i64>) -> Result<Vec<TokenRow>, StoreError> {
        self.read(move |c| list_tokens(c, user_id)).await
    }

    pub async fn token(&self, id: i64) -> Result<Option<TokenRow>, StoreError> {
        self.read(move |c| token(c, id)).await
    }

    /// Creates an API token: `(id, permissions, expiry)` as stored.
    pub async fn create_token(
        &self,
        new: NewToken,
        now_ms: i64,
    ) -> Result<(i64, Option<Vec<String>>, Option<i64>), StoreError> {
        self.exec(move |c| {
            if let Some(uid) = new.owner {
                match user(c, uid)? {
                    None => return Err(StoreError::Invalid(format!("no user with id {uid}"))),
                    Some(u) if u.disabled => {
                        return Err(StoreError::Invalid(format!(
                            "user {} is disabled",
                            u.username
                        )))
                    }
                    Some(_) => {}
                }
            }
            let parent = match new.parent {
                Some(t) => token(c, t)?,
                None => None,
            };
            let perms = match (new.permissions, new.parent) {
                (Some(p), _) => Some(p),
                (None, Some(_)) => parent.as_ref().and_then(|t| t.permissions.clone()),
                (None, None) => None,
            };
            let parent_expiry = parent.and_then(|t| t.expires_ms);
            let expires = match (new.expires_ms, parent_expiry) {
                (Some(e), Some(p)) => Some(e.min(p)),
                (None, Some(p)) => Some(p),
                (e, None) => e,
            };
            let id = create_token(
                c,
                &new.name,
                new.owner,
                perms.as_deref(),
                expires,
                &new.hash,
                now_ms,
            )?;
            Ok((id, perms, expires))
        })
        .await
    }

    /// Revokes a token; whether it existed.
    pub async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        self.exec(move |c| revoke_token(c, id)).await
    }

    pub async fn token_used(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        self.exec(move |c| token_used(c, id, now_ms)).await
    }

    pub async fn sessions(&self, user_id: Option<i64>) -> Result<Vec<SessionRow>, StoreError> {
        self.read(move |c| list_sessions(c, user_id)).await
    }

    pub async fn session(&self, id: i64) -> Result<Option<SessionRow>, StoreError> {
        self.read(move |c| session(c, id)).await
    }

    pub async fn touch_session(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        self.exec(move |c| touch_session(c, id, now_ms)).await
    }

    /// Ends a session; whether it existed.
    pub async fn delete_session(&self, id: i64) -> Result<bool, StoreError> {
        self.exec(move |c| delete_session(c, id)).await
    }

    /// Deletes expired and idle sessions; how many.
    pub async fn cleanup_sessions(&self, now_ms: i64, idle_ms: i64) -> Result<usize, StoreError> {
        self.exec(move |c| cleanup_sessions(c, now_ms, idle_ms))
            .await
    }
}
