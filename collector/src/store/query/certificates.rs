//! Agent certificates by canonical serial: those the collector issued (enrollment, renewal)
//! and those it saw at a handshake (issued elsewhere, e.g. `certs issue-agent`), with their
//! revocation. The ingest listener refuses every revoked serial at the handshake.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use mcpwatch_common::cert_info::CertInfo;

use crate::store::{Store, StoreError};

/// One certificate as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CertificateRow {
    /// Lower-case hex, no leading zeros.
    pub serial: String,
    /// The agent identity (the certificate's DNS name); empty for a serial revoked before
    /// the collector ever saw it.
    pub identity: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    /// `enroll`, `renew`, `seen` (issued elsewhere, seen at a handshake) or `revoked` (a
    /// serial revoked before it was ever seen).
    pub source: String,
    /// The bootstrap token an enrollment used.
    pub token_id: Option<i64>,
    pub recorded_ms: i64,
    /// Last handshake with it.
    pub last_seen_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub revoked_by: Option<String>,
}

const COLS: &str = "serial, identity, not_before_ms, not_after_ms, source, token_id, recorded_ms,
    last_seen_ms, revoked_ms, revoked_by";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertificateRow> {
    Ok(CertificateRow {
        serial: r.get(0)?,
        identity: r.get(1)?,
        not_before_ms: r.get(2)?,
        not_after_ms: r.get(3)?,
        source: r.get(4)?,
        token_id: r.get(5)?,
        recorded_ms: r.get(6)?,
        last_seen_ms: r.get(7)?,
        revoked_ms: r.get(8)?,
        revoked_by: r.get(9)?,
    })
}

/// Records a certificate the collector just issued.
pub fn record_issued(
    c: &Connection,
    info: &CertInfo,
    source: &str,
    token_id: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO certificates (serial, identity, not_before_ms, not_after_ms, source,
                                   token_id, recorded_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        info.serial,
        info.identity,
        info.not_before_s.saturating_mul(1000),
        info.not_after_s.saturating_mul(1000),
        source,
        token_id,
        now_ms
    ])?;
    Ok(())
}

/// Notes a handshake with a certificate, recording it if it was issued elsewhere. A serial
/// first known only as revoked gets its identity and validity here.
fn seen(c: &Connection, info: &CertInfo, now_ms: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO certificates (serial, identity, not_before_ms, not_after_ms, source,
                                   recorded_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, 'seen', ?5, ?5)
         ON CONFLICT (serial) DO UPDATE SET
             last_seen_ms = excluded.last_seen_ms,
             identity = CASE WHEN certificates.identity = '' THEN excluded.identity
                             ELSE certificates.identity END,
             not_before_ms = excluded.not_before_ms,
             not_after_ms = excluded.not_after_ms",
    )?
    .execute(params![
        info.serial,
        info.identity,
        info.not_before_s.saturating_mul(1000),
        info.not_after_s.saturating_mul(1000),
        now_ms
    ])?;
    Ok(())
}

pub fn certificate(c: &Connection, serial: &str) -> Result<Option<CertificateRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLS} FROM certificates WHERE serial = ?1"
    ))?
    .query_row([serial], from_row)
    .optional()?)
}

/// Every certificate of one agent identity, newest expiry first.
fn of_identity(c: &Connection, identity: &str) -> Result<Vec<CertificateRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLS} FROM certificates WHERE identity = ?1 ORDER BY not_after_ms DESC, serial"
    ))?
    .query_map([identity], from_row)?
    .collect::<Result<_, _>>()?)
}

/// The certificate each agent identity would use now: the unrevoked one expiring last.
pub(crate) fn current(c: &Connection) -> Result<Vec<CertificateRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLS} FROM certificates c
         WHERE revoked_ms IS NULL AND identity != '' AND serial = (
             SELECT serial FROM certificates d
             WHERE d.identity = c.identity AND d.revoked_ms IS NULL
             ORDER BY d.not_after_ms DESC, d.serial LIMIT 1)
         ORDER BY identity"
    ))?
    .query_map([], from_row)?
    .collect::<Result<_, _>>()?)
}

/// Every revoked serial.
pub fn revoked_serials(c: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(
        c.prepare_cached("SELECT serial FROM certificates WHERE revoked_ms IS NOT NULL")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
    )
}

/// Whether an identity holds a certificate that is neither revoked nor expired at `now_ms`.
pub(crate) fn has_valid(c: &Connection, identity: &str, now_ms: i64) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM certificates
                        WHERE identity = ?1 AND revoked_ms IS NULL AND not_after_ms > ?2)",
    )?
    .query_row(params![identity, now_ms], |r| r.get(0))?)
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The certificate, and every serial revoked with it (itself and what was renewed
    /// from it).
    Revoked(CertificateRow, Vec<String>),
    /// It was revoked before; nothing changed.
    Already(CertificateRow),
    /// No certificate of that identity has this serial.
    Missing,
}

/// Revokes `serial`. With `identity`, only a certificate recorded for that identity (the
/// API's host route); without, any serial, recorded or not (the CLI, for certificates the
/// collector never saw).
pub fn revoke(
    c: &Connection,
    serial: &str,
    identity: Option<&str>,
    by: &str,
    now_ms: i64,
) -> Result<Revocation, StoreError> {
    match certificate(c, serial)? {
        Some(row) if identity.is_some_and(|i| i != row.identity) => Ok(Revocation::Missing),
        Some(row) if row.revoked_ms.is_some() => Ok(Revocation::Already(row)),
        Some(_) => {
            // With every certificate renewed from it, and from those: a stolen key may have
            // renewed itself to a new serial before the theft was noticed.
            let line = c
                .prepare_cached(
                    "WITH RECURSIVE line(serial) AS (
                     SELECT ?1
                     UNION SELECT c.serial FROM certificates c JOIN line l ON c.renewed_from = l.serial
                 )
                 UPDATE certificates SET revoked_ms = ?2, revoked_by = ?3
                 WHERE serial IN (SELECT serial FROM line) AND revoked_ms IS NULL
                 RETURNING serial",
                )?
                .query_map(params![serial, now_ms, by], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(certificate(c, serial)?
                .map_or(Revocation::Missing, |row| Revocation::Revoked(row, line)))
        }
        None if identity.is_some() => Ok(Revocation::Missing),
        None => {
            c.prepare_cached(
                "INSERT INTO certificates (serial, identity, not_before_ms, not_after_ms, source,
                                           recorded_ms, revoked_ms, revoked_by)
                 VALUES (?1, '', 0, 0, 'revoked', ?2, ?2, ?3)",
            )?
            .execute(params![serial, now_ms, by])?;
            Ok(certificate(c, serial)?.map_or(Revocation::Missing, |row| {
                Revocation::Revoked(row, vec![serial.to_owned()])
            }))
        }
    }
}

impl Store {
    /// Notes a handshake with `info` (see [`seen`]).
    pub async fn certificate_seen(&self, info: CertInfo, now_ms: i64) -> Result<(), StoreError> {
        self.exec(move |c| seen(c, &info, now_ms)).await
    }

    /// Records a certificate issued by renewal of `from` (a serial). `Ok(false)`: `from` was
    /// revoked meanwhile (checked here, on the writer, so a revocation racing the renewal
    /// cannot leave its successor valid); nothing is recorded.
    pub async fn certificate_renewed(
        &self,
        info: CertInfo,
        from: String,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.exec(move |c| {
            if certificate(c, &from)?.is_some_and(|row| row.revoked_ms.is_some()) {
                return Ok(false);
            }
            record_issued(c, &info, "renew", None, now_ms)?;
            c.prepare_cached("UPDATE certificates SET renewed_from = ?2 WHERE serial = ?1")?
                .execute(params![info.serial, from])?;
            Ok(true)
        })
        .await
    }

    pub async fn certificates_of(&self, identity: &str) -> Result<Vec<CertificateRow>, StoreError> {
        let identity = identity.to_owned();
        self.read(move |c| of_identity(c, &identity)).await
    }

    pub async fn current_certificates(&self) -> Result<Vec<CertificateRow>, StoreError> {
        self.read(current).await
    }

    pub async fn revoked_serials(&self) -> Result<Vec<String>, StoreError> {
        self.read(revoked_serials).await
    }

    /// Revokes a serial of `identity` (see [`revoke`]).
    pub async fn revoke_certificate(
        &self,
        serial: String,
        identity: String,
        by: String,
        now_ms: i64,
    ) -> Result<Revocation, StoreError> {
        self.exec(move |c| revoke(c, &serial, Some(&identity), &by, now_ms))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn info(serial: &str) -> CertInfo {
        CertInfo {
            serial: serial.to_owned(),
            identity: "web-1".to_owned(),
            not_before_s: 0,
            not_after_s: 4_000_000_000,
            is_ca: false,
        }
    }

    #[tokio::test]
    async fn certificates_revoking_one_revokes_what_was_renewed_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(StoreConfig::new(dir.path().join("c.db"))).unwrap();
        store
            .exec(|c| record_issued(c, &info("aa"), "enroll", None, 1))
            .await
            .unwrap();
        // aa → bb → cc by renewal; dd is another line of the same agent (a re-enrollment).
        assert!(store
            .certificate_renewed(info("bb"), "aa".into(), 2)
            .await
            .unwrap());
        assert!(store
            .certificate_renewed(info("cc"), "bb".into(), 3)
            .await
            .unwrap());
        store
            .exec(|c| record_issued(c, &info("dd"), "enroll", None, 4))
            .await
            .unwrap();
        let revoked = store
            .exec(|c| revoke(c, "bb", Some("web-1"), "test", 5))
            .await
            .unwrap();
        let Revocation::Revoked(_, mut line) = revoked else {
            panic!("{revoked:?}")
        };
        line.sort();
        assert_eq!(line, ["bb", "cc"]);
        let mut serials = store.revoked_serials().await.unwrap();
        serials.sort();
        assert_eq!(
            serials,
            ["bb", "cc"],
            "bb and its successor; aa and dd stay"
        );
        // A renewal from a revoked certificate (racing its revocation) records nothing.
        assert!(!store
            .certificate_renewed(info("ee"), "cc".into(), 6)
            .await
            .unwrap());
        assert!(store
            .exec(|c| certificate(c, "ee"))
            .await
            .unwrap()
            .is_none());
        drop(store);
        writer.join().unwrap();
    }
}
