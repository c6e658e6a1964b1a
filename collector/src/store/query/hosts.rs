//! Hosts as the API reads them: pages of hosts filtered by the caller's scope, one host, the
//! `(id, agent id, labels)` of every host for scoping, and the operator-label write.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{Store, StoreError};

/// One host row as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub id: i64,
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub online: bool,
    pub revoked: bool,
    /// JSON object of operator-assigned labels.
    pub labels: String,
    pub last_seq: i64,
}

const HOST_COLS: &str = "h.id, h.agent_id, h.hostname, h.agent_version, h.first_seen_ms,
    h.last_seen_ms, h.online, h.revoked, h.labels, coalesce(s.last_seq, 0)";

fn host_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HostRecord> {
    Ok(HostRecord {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        hostname: r.get(2)?,
        agent_version: r.get(3)?,
        first_seen_ms: r.get(4)?,
        last_seen_ms: r.get(5)?,
        online: r.get(6)?,
        revoked: r.get(7)?,
        labels: r.get(8)?,
        last_seq: r.get(9)?,
    })
}

pub(super) fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Rows fetched per round while a filtered list fills a page.
pub(super) const SCAN_CHUNK: usize = 512;

/// Hosts with `id > after`, in id order, keeping those `keep` accepts, until `limit + 1` are
/// found (the extra one tells the caller another page exists) or the table ends.
fn hosts_scan(
    c: &Connection,
    after: i64,
    limit: usize,
    mut keep: impl FnMut(&HostRecord) -> bool,
) -> Result<Vec<HostRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {HOST_COLS} FROM hosts h LEFT JOIN agent_seq s ON s.host_id = h.id
         WHERE h.id > ?1 ORDER BY h.id LIMIT ?2"
    ))?;
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let rows: Vec<HostRecord> = stmt
            .query_map(params![cursor, sql_limit(SCAN_CHUNK)], host_from_row)?
            .collect::<Result<_, _>>()?;
        let full = rows.len() == SCAN_CHUNK;
        for h in rows {
            cursor = h.id;
            if keep(&h) {
                out.push(h);
                if out.len() > limit {
                    return Ok(out);
                }
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

/// The host of an agent id, if it ever registered.
pub(super) fn host(c: &Connection, agent_id: &str) -> Result<Option<HostRecord>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {HOST_COLS} FROM hosts h LEFT JOIN agent_seq s ON s.host_id = h.id
         WHERE h.agent_id = ?1"
    ))?
    .query_row([agent_id], host_from_row)
    .optional()?)
}

/// `(id, agent_id, labels JSON)` of every host, for scoping fleet-wide queries.
fn host_scopes(c: &Connection) -> Result<Vec<(i64, String, String)>, StoreError> {
    Ok(
        c.prepare_cached("SELECT id, agent_id, labels FROM hosts ORDER BY id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?,
    )
}

/// Replaces a host's operator labels (a JSON object). Returns whether the host exists.
fn set_labels(c: &Connection, agent_id: &str, labels_json: &str) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("UPDATE hosts SET labels = ?2 WHERE agent_id = ?1")?
            .execute(params![agent_id, labels_json])?
            > 0,
    )
}

/// Replaces a host's operator labels (a JSON object) if `check`, given the host as stored,
/// returns `None`. Run on the writer (the alerting runtime's relabel), so the check sees the
/// labels it replaces.
pub fn set_labels_checked<R>(
    c: &Connection,
    agent_id: &str,
    labels_json: &str,
    check: impl FnOnce(&HostRecord) -> Option<R>,
) -> Result<Relabel<R>, StoreError> {
    let Some(current) = host(c, agent_id)? else {
        return Ok(Relabel::Missing);
    };
    if let Some(refusal) = check(&current) {
        return Ok(Relabel::Refused(refusal));
    }
    set_labels(c, agent_id, labels_json)?;
    Ok(host(c, agent_id)?.map_or(Relabel::Missing, Relabel::Done))
}

/// `host_id IN (...)` for a list of ids read from the database (integers, so safe to
/// inline), or no condition when `hosts` is `None`.
pub(super) fn host_condition(column: &str, hosts: Option<&[i64]>) -> String {
    match hosts {
        None => "1".to_owned(),
        Some(ids) => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!("{column} IN ({})", list.join(","))
        }
    }
}

/// What a checked label write found.
#[derive(Debug)]
pub enum Relabel<R> {
    /// No such host.
    Missing,
    /// The check refused the write, for this reason.
    Refused(R),
    /// Written; the host as it is now.
    Done(HostRecord),
}

impl Store {
    /// Hosts with `id > after`, in id order, that `keep` accepts: up to `limit + 1` (the
    /// extra one tells the caller another page exists).
    pub async fn hosts_page(
        &self,
        after: i64,
        limit: usize,
        keep: impl FnMut(&HostRecord) -> bool + Send + 'static,
    ) -> Result<Vec<HostRecord>, StoreError> {
        self.read(move |c| hosts_scan(c, after, limit, keep)).await
    }

    /// The host of an agent id, if it ever registered.
    pub async fn host(&self, agent_id: &str) -> Result<Option<HostRecord>, StoreError> {
        let id = agent_id.to_owned();
        self.read(move |c| host(c, &id)).await
    }

    /// `(id, agent_id, labels JSON)` of every host, for scoping fleet-wide queries.
    pub async fn host_scopes(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.read(host_scopes).await
    }
}
