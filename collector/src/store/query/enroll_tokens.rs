//! Bootstrap tokens for agent enrollment (only SHA-256 hashes of their secrets) and the
//! enrollment itself: token checked and used, certificate recorded, host created or
//! relabelled, all in one writer step, so a use is counted exactly when a certificate is
//! issued.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use mcpwatch_common::csr::{CsrError, Issued};

use super::certificates;
use crate::store::{Store, StoreError};

/// One bootstrap token as the API shows it (never its secret or hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnrollTokenRow {
    pub id: i64,
    pub description: String,
    /// The one name it enrolls, or a pattern (`*` for any run of characters); `None`: any.
    pub name: Option<String>,
    /// Operator labels given to every host it enrolls.
    pub labels: BTreeMap<String, String>,
    pub max_uses: i64,
    pub used: i64,
    pub created_ms: i64,
    pub created_by: String,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
    #[serde(skip)]
    pub hash: String,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewEnrollToken {
    pub hash: String,
    pub description: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub max_uses: i64,
    pub expires_ms: i64,
    pub created_by: String,
}

const COLS: &str = "id, description, name, labels, max_uses, used, created_ms, created_by,
    expires_ms, revoked_ms, last_used_ms, hash";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnrollTokenRow> {
    let labels: String = r.get(3)?;
    Ok(EnrollTokenRow {
        id: r.get(0)?,
        description: r.get(1)?,
        name: r.get(2)?,
        // Written only from a map by `create`; an unreadable set reads as none.
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        max_uses: r.get(4)?,
        used: r.get(5)?,
        created_ms: r.get(6)?,
        created_by: r.get(7)?,
        expires_ms: r.get(8)?,
        revoked_ms: r.get(9)?,
        last_used_ms: r.get(10)?,
        hash: r.get(11)?,
    })
}

pub fn create(c: &Connection, t: &NewEnrollToken, now_ms: i64) -> Result<i64, StoreError> {
    let labels =
        serde_json::to_string(&t.labels).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(c.prepare_cached(
        "INSERT INTO enroll_tokens (hash, description, name, labels, max_uses, created_ms,
                                    created_by, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
    )?
    .query_row(
        params![
            t.hash,
            t.description,
            t.name,
            labels,
            t.max_uses,
            now_ms,
            t.created_by,
            t.expires_ms
        ],
        |r| r.get(0),
    )?)
}

pub fn list(c: &Connection) -> Result<Vec<EnrollTokenRow>, StoreError> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLS} FROM enroll_tokens ORDER BY id"))?
            .query_map([], from_row)?
            .collect::<Result<_, _>>()?,
    )
}

pub fn get(c: &Connection, id: i64) -> Result<Option<EnrollTokenRow>, StoreError> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLS} FROM enroll_tokens WHERE id = ?1"))?
            .query_row([id], from_row)
            .optional()?,
    )
}

/// Revokes a token; `false` if there is none or it was revoked already.
pub fn revoke(c: &Connection, id: i64, now_ms: i64) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "UPDATE enroll_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
    )?
    .execute(params![id, now_ms])?
        > 0)
}

/// Why an enrollment was refused. The API tells the agent only "token refused" for the
/// first four (which one is for the audit log), so a guesser learns nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollRefusal {
    UnknownToken,
    TokenRevoked,
    TokenExpired,
    TokenUsedUp,
    /// The host's identity is revoked (by name).
    HostRevoked,
    /// A pattern token may not take over a name that holds a valid certificate.
    NameTaken(String),
    Csr(CsrError),
}

/// What an enrollment produced.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub token: EnrollTokenRow,
    pub issued: Issued,
    pub host_id: i64,
}

/// What the enrollment step is given: the presented token and a signer that checks the CSR
/// against the token (its name rule) and issues the certificate.
pub struct EnrollAttempt<F> {
    pub token_id: i64,
    /// `credential::hash` of the presented secret.
    pub secret_hash: String,
    pub now_ms: i64,
    pub sign: F,
}

fn enroll<F>(
    c: &Connection,
    attempt: EnrollAttempt<F>,
) -> Result<Result<Enrolled, EnrollRefusal>, StoreError>
where
    F: FnOnce(&EnrollTokenRow) -> Result<Issued, CsrError>,
{
    let now = attempt.now_ms;
    let Some(token) = get(c, attempt.token_id)? else {
        return Ok(Err(EnrollRefusal::UnknownToken));
    };
    if !mcpwatch_common::secret::constant_time_eq(&token.hash, &attempt.secret_hash) {
        return Ok(Err(EnrollRefusal::UnknownToken));
    }
    if token.revoked_ms.is_some() {
        return Ok(Err(EnrollRefusal::TokenRevoked));
    }
    if token.expires_ms <= now {
        return Ok(Err(EnrollRefusal::TokenExpired));
    }
    if token.used >= token.max_uses {
        return Ok(Err(EnrollRefusal::TokenUsedUp));
    }
    let issued = match (attempt.sign)(&token) {
        Ok(i) => i,
        Err(e) => return Ok(Err(EnrollRefusal::Csr(e))),
    };
    let name = issued.info.identity.clone();
    let (host_revoked, labels_json): (bool, Option<String>) = c
        .prepare_cached("SELECT revoked, labels FROM hosts WHERE agent_id = ?1")?
        .query_row([&name], |r| Ok((r.get(0)?, Some(r.get(1)?))))
        .optional()?
        .unwrap_or((false, None));
    if host_revoked {
        return Ok(Err(EnrollRefusal::HostRevoked));
    }
    let exact = token.name.as_deref() == Some(name.as_str());
    // A host that exists is re-enrolled only by a token naming exactly it: a pattern or
    // any-name token (a fleet's shared DaemonSet token) never claims a known identity, live,
    // revoked or expired, with its history.
    if !exact && (labels_json.is_some() || certificates::has_valid(c, &name, now)?) {
        return Ok(Err(EnrollRefusal::NameTaken(name)));
    }
    // A new host gets the token's labels; a known one keeps its own (moving a host between
    // teams is `PUT /hosts/{id}/labels`, with its own scope checks).
    let labels: BTreeMap<String, String> = match labels_json {
        Some(j) => serde_json::from_str(&j).unwrap_or_default(),
        None => token.labels.clone(),
    };
    let labels = serde_json::to_string(&labels).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let host_id: i64 = c
        .prepare_cached(
            "INSERT INTO hosts (agent_id, hostname, agent_version, boot_id, first_seen_ms,
                                last_seen_ms, online, labels)
             VALUES (?1, ?1, '', '', ?2, ?2, 0, ?3)
             ON CONFLICT (agent_id) DO UPDATE SET labels = excluded.labels
             RETURNING id",
        )?
        .query_row(params![name, now, labels], |r| r.get(0))?;
    certificates::record_issued(c, &issued.info, "enroll", Some(token.id), now)?;
    c.prepare_cached("UPDATE enroll_tokens SET used = used + 1, last_used_ms = ?2 WHERE id = ?1")?
        .execute(params![token.id, now])?;
    let token = get(c, token.id)?.unwrap_or(token);
    Ok(Ok(Enrolled {
        token,
        issued,
        host_id,
    }))
}

impl Store {
    pub async fn create_enroll_token(
        &self,
        token: NewEnrollToken,
        now_ms: i64,
    ) -> Result<EnrollTokenRow, StoreError> {
        self.exec(move |c| {
            let id = create(c, &token, now_ms)?;
            get(c, id)?.ok_or_else(|| StoreError::Invalid("token vanished".into()))
        })
        .await
    }

    pub async fn enroll_tokens(&self) -> Result<Vec<EnrollTokenRow>, StoreError> {
        self.read(list).await
    }

    pub async fn enroll_token(&self, id: i64) -> Result<Option<EnrollTokenRow>, StoreError> {
        self.read(move |c| get(c, id)).await
    }

    pub async fn revoke_enroll_token(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.exec(move |c| revoke(c, id, now_ms)).await
    }

    /// Runs one enrollment on the writer (see the module doc).
    pub async fn enroll<F>(
        &self,
        attempt: EnrollAttempt<F>,
    ) -> Result<Result<Enrolled, EnrollRefusal>, StoreError>
    where
        F: FnOnce(&EnrollTokenRow) -> Result<Issued, CsrError> + Send + 'static,
    {
        self.exec(move |c| enroll(c, attempt)).await
    }
}
