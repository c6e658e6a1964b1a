//! The collector's side of the fleet PKI at run time: the signer (when `[enroll] ca_key` is
//! set), the live set of revoked serials the ingest verifier refuses, the poll that picks up
//! revocations made by the CLI on the database, the watch that rebuilds the ingest TLS
//! config when one of its files changes or on SIGHUP, and the certificate expiry gauges.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpwatch_common::cert_info::{self, CertInfo};
use mcpwatch_common::config::{ConfigError, Duration as ConfigDuration};
use mcpwatch_common::csr::Signer;
use mcpwatch_common::revocation::RevokedSerials;
use mcpwatch_common::tls::{self, Reloadable, TlsFiles};
use mcpwatch_common::wire::RenewResult;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{CertificateLabel, CollectorMetrics};
use crate::store::Store;

/// How often the database is asked for revocations made outside this process, and CRL
/// files for changes: the longest a CLI revocation or a new CRL waits.
const POLL: Duration = Duration::from_secs(1);

/// Shared by ingest and the API.
#[derive(Clone)]
pub struct Pki {
    inner: Arc<Inner>,
}

struct Inner {
    signer: Option<Arc<Signer>>,
    lifetime: Duration,
    revoked: RevokedSerials,
    metrics: Arc<CollectorMetrics>,
    /// The agent series of the expiry gauge now set: identity → (serial, notAfter s).
    agents: Mutex<HashMap<String, (String, i64)>>,
}

impl Pki {
    pub fn new(config: &EnrollConfig, metrics: Arc<CollectorMetrics>) -> Pki {
        Pki {
            inner: Arc::new(Inner {
                signer: config.signer.clone(),
                lifetime: config.lifetime,
                revoked: RevokedSerials::default(),
                metrics,
                agents: Mutex::default(),
            }),
        }
    }

    /// `None` when this collector does not sign (no `[enroll] ca_key`).
    pub fn signer(&self) -> Option<&Signer> {
        self.inner.signer.as_deref()
    }

    pub fn lifetime(&self) -> Duration {
        self.inner.lifetime
    }

    pub fn revoked(&self) -> &RevokedSerials {
        &self.inner.revoked
    }

    pub fn metrics(&self) -> &CollectorMetrics {
        &self.inner.metrics
    }

    /// Revoked serials and agent certificates from the database, this collector's own
    /// certificates from its files. Run before the ingest listener accepts.
    pub async fn load(
        &self,
        store: &Store,
        files: &TlsFiles,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.revoked.extend(store.revoked_serials().await?);
        self.set_own(files);
        self.refresh_agents(store).await;
        Ok(())
    }

    /// The expiry of the collector's certificate and of every CA in its bundle.
    pub fn set_own(&self, files: &TlsFiles) {
        let gauge = &self.inner.metrics.certificate_expiry;
        for (role, path) in [("collector", &files.cert), ("ca", &files.ca)] {
            let Ok(pem) = std::fs::read(path) else {
                continue;
            };
            let Ok(certs) = cert_info::inspect_pem(&pem) else {
                continue;
            };
            // The collector's file may carry its chain: only the first is its own.
            let take = if role == "collector" { 1 } else { certs.len() };
            for c in certs.into_iter().take(take) {
                gauge
                    .get_or_create(&CertificateLabel {
                        role: role.into(),
                        identity: c.identity,
                        serial: c.serial,
                    })
                    .set(c.not_after_s);
            }
        }
    }

    /// Brings the agent series of the expiry gauge to the database's current certificates
    /// (one per identity), removing superseded and revoked ones.
    pub async fn refresh_agents(&self, store: &Store) {
        let rows = match store.current_certificates().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading agent certificates failed");
                return;
            }
        };
        let gauge = &self.inner.metrics.certificate_expiry;
        let label = |identity: &str, serial: &str| CertificateLabel {
            role: "agent".into(),
            identity: identity.into(),
            serial: serial.into(),
        };
        let mut agents = self.inner.agents.lock().unwrap_or_else(|p| p.into_inner());
        let now: HashMap<String, (String, i64)> = rows
            .into_iter()
            .map(|r| (r.identity, (r.serial, r.not_after_ms / 1000)))
            .collect();
        for (identity, (serial, _)) in agents.iter() {
            if now.get(identity).map(|(s, _)| s) != Some(serial) {
                gauge.remove(&label(identity, serial));
            }
        }
        for (identity, (serial, not_after)) in &now {
            gauge
                .get_or_create(&label(identity, serial))
                .set(*not_after);
        }
        *agents = now;
    }

    /// Records a handshake with `info`, and updates the expiry gauge when the identity now
    /// uses another certificate. A failure is logged and counted; the session goes on.
    pub async fn note_seen(&self, store: &Store, info: cert_info::CertInfo) {
        let known = {
            let agents = self.inner.agents.lock().unwrap_or_else(|p| p.into_inner());
            agents.get(&info.identity).map(|(s, _)| s == &info.serial) == Some(true)
        };
        if let Err(e) = store.certificate_seen(info, crate::now_ms()).await {
            self.refused("record_seen");
            tracing::warn!(error = %e, "recording an agent certificate failed");
            return;
        }
        if !known {
            self.refresh_agents(store).await;
        }
    }

    /// Picks up revocations written to the database by others (the CLI) every [`POLL`].
    pub fn spawn_poll(&self, store: Store, tracker: &TaskTracker, stop: CancellationToken) {
        let pki = self.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
                match store.revoked_serials().await {
                    Ok(serials) => {
                        let before = pki.revoked().len();
                        pki.revoked().extend(serials);
                        if pki.revoked().len() != before {
                            tracing::info!(
                                revoked = pki.revoked().len(),
                                "certificate revocations picked up"
                            );
                            pki.refresh_agents(&store).await;
                        }
                    }
                    Err(e) => {
                        pki.refused("revocation_poll");
                        tracing::warn!(error = %e, "reading revoked serials failed");
                    }
                }
            }
        });
    }

    /// Rebuilds the ingest TLS config whenever one of its files (CA, certificate, key,
    /// CRLs) changes, and at once on SIGHUP (which also catches a change the poll cannot
    /// see: a file replaced with one of the same size and time). A rebuild that fails keeps
    /// the old config, counts the refusal and logs why.
    pub fn spawn_tls_watch(
        &self,
        files: TlsFiles,
        target: Arc<Reloadable<rustls::ServerConfig>>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) {
        let pki = self.clone();
        let paths: Vec<_> = [&files.ca, &files.cert, &files.key]
            .into_iter()
            .chain(files.crl.iter())
            .cloned()
            .collect();
        let stamp = move || -> Vec<Option<(std::time::SystemTime, u64)>> {
            paths
                .iter()
                .map(|p| {
                    std::fs::metadata(p)
                        .ok()
                        .and_then(|m| Some((m.modified().ok()?, m.len())))
                })
                .collect()
        };
        tracker.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangup = match signal(SignalKind::hangup()) {
                Ok(hangup) => Some(hangup),
                Err(e) => {
                    pki.refused("sighup_listen");
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; ingest TLS files are still watched");
                    None
                }
            };
            let mut seen = stamp();
            loop {
                let signalled = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let by_signal = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => false,
                    _ = signalled => true,
                };
                let now = stamp();
                if now == seen && !by_signal {
                    continue;
                }
                seen = now;
                let trigger = if by_signal { "SIGHUP" } else { "file change" };
                match tls::server_config(&files, pki.revoked()) {
                    Ok(config) => {
                        target.set(config);
                        pki.set_own(&files);
                        tracing::info!(trigger, "ingest TLS files reloaded; new connections use them");
                    }
                    Err(e) => {
                        pki.refused("tls_reload");
                        tracing::error!(trigger, error = %e, "ingest TLS files cannot be used; keeping the old ones");
                    }
                }
            }
        });
    }

    /// Signs a renewal CSR for the identity the session's `current` certificate proves, and
    /// records it. Refused for a certificate revoked meanwhile, a revoked host, and before
    /// half of the current certificate's lifetime (agents renew at two thirds): a stolen key
    /// cannot mint itself a fresh serial the moment it connects, nor a flood of rows. The
    /// answer says why not when it is refused.
    pub async fn renew(&self, store: &Store, current: &CertInfo, csr_der: &[u8]) -> RenewResult {
        let identity = current.identity.as_str();
        let refuse = |reason: &str, message: String| {
            self.refused(reason);
            tracing::warn!(agent_id = identity, reason, %message, "certificate renewal refused");
            RenewResult {
                ok: false,
                certificate_pem: String::new(),
                message,
            }
        };
        let Some(signer) = self.signer() else {
            return refuse(
                "renew_unsupported",
                "this collector does not sign certificates ([enroll] ca_key unset)".into(),
            );
        };
        let now = crate::now_ms();
        if self.revoked().contains(&current.serial) {
            return refuse(
                "renew_revoked",
                "the session's certificate is revoked".into(),
            );
        }
        let half_life = current.not_before_s + (current.not_after_s - current.not_before_s) / 2;
        if now / 1000 < half_life {
            return refuse(
                "renew_early",
                format!("renewal opens at half the certificate's lifetime (Unix {half_life})"),
            );
        }
        match store.host(identity).await {
            Ok(Some(h)) if h.revoked => {
                return refuse("renew_revoked", "the host is revoked".into());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(agent_id = identity, error = %e, "renewal: host lookup failed");
                return refuse(
                    "renew_store",
                    "the collector could not check the host; retry later".into(),
                );
            }
        }
        let issued = match signer.sign(csr_der, |n| n == identity, self.lifetime(), now / 1000) {
            Ok(i) => i,
            Err(e) => return refuse("renew_csr", e.to_string()),
        };
        match store
            .certificate_renewed(issued.info.clone(), current.serial.clone(), now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return refuse(
                    "renew_revoked",
                    "the session's certificate is revoked".into(),
                );
            }
            Err(e) => {
                // The agent gets no store internals; the log has them.
                tracing::error!(agent_id = identity, error = %e, "renewal: recording the certificate failed");
                return refuse(
                    "renew_store",
                    "the certificate could not be recorded; retry later".into(),
                );
            }
        }
        self.refresh_agents(store).await;
        tracing::info!(agent_id = identity, serial = %issued.info.serial,
            not_after_s = issued.info.not_after_s, "certificate renewed");
        RenewResult {
            ok: true,
            certificate_pem: issued.pem,
            message: String::new(),
        }
    }

    /// Counts one refusal (or failure) by reason.
    pub fn refused(&self, reason: &str) {
        self.inner
            .metrics
            .pki_refusals
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
}

/// Whether a token's name rule lets it enroll `name`: no rule = any name; otherwise the exact
/// name, or a pattern where each `*` stands for any run of characters (`web-*`,
/// `*.prod.example.com`).
pub fn name_allowed(rule: Option<&str>, name: &str) -> bool {
    let Some(rule) = rule else { return true };
    let mut parts = rule.split('*');
    // `split` always yields a first part.
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `[enroll]`: the collector signs agents' certificates (enrollment with a bootstrap token,
/// renewal over the mTLS session) only when it holds the CA key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnroll {
    /// The CA's private key (PEM). Unset: no enrollment, no renewal.
    pub ca_key: Option<PathBuf>,
    /// The CA certificate the key belongs to. Default: `[tls] ca`.
    pub ca_cert: Option<PathBuf>,
    /// Lifetime of the certificates it issues (1m..=825d). Default 30d; agents renew after
    /// two thirds of it.
    pub lifetime: Option<ConfigDuration>,
}

/// Validated `[enroll]`.
#[derive(Debug, Clone)]
pub struct EnrollConfig {
    /// Loaded once; `None` when `ca_key` is unset.
    pub signer: Option<std::sync::Arc<mcpwatch_common::csr::Signer>>,
    pub lifetime: std::time::Duration,
}

impl EnrollConfig {
    pub(crate) fn validate(
        path: &Path,
        raw: RawEnroll,
        tls: &TlsFiles,
    ) -> Result<EnrollConfig, ConfigError> {
        let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
        let lifetime = raw
            .lifetime
            .unwrap_or(ConfigDuration::from_secs(30 * 86_400))
            .get();
        if !(std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(825 * 86_400))
            .contains(&lifetime)
        {
            return Err(bad("enroll.lifetime", "must be 1m..=825d"));
        }
        let signer = match raw.ca_key {
            None if raw.ca_cert.is_some() => {
                return Err(bad("enroll.ca_cert", "needs enroll.ca_key"));
            }
            None => None,
            Some(key) => {
                let key = mcpwatch_common::config::resolve_path(path, key);
                let cert = raw
                    .ca_cert
                    .map(|c| mcpwatch_common::config::resolve_path(path, c))
                    .unwrap_or_else(|| tls.ca.clone());
                let signer = mcpwatch_common::csr::Signer::load(&cert, &key)
                    .map_err(|e| bad("enroll.ca_key", &e.to_string()))?;
                Some(std::sync::Arc::new(signer))
            }
        };
        Ok(EnrollConfig { signer, lifetime })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signing PKI over a fresh store, and a certificate for web-1 issued `age` ago with
    /// a one-hour lifetime.
    async fn renewing(
        age: Duration,
    ) -> (
        tempfile::TempDir,
        Pki,
        Store,
        std::thread::JoinHandle<()>,
        CertInfo,
    ) {
        let dir = tempfile::tempdir().unwrap();
        mcpwatch_common::certs::init(dir.path(), &[]).unwrap();
        let ca = mcpwatch_common::certs::ca_paths(dir.path());
        let signer = Signer::load(&ca.cert, &ca.key).unwrap();
        let lifetime = Duration::from_secs(3600);
        let now_s = crate::now_ms() / 1000 - age.as_secs() as i64;
        let csr = mcpwatch_common::csr::request("web-1").unwrap();
        let current = signer
            .sign(&csr.csr_der, |_| true, lifetime, now_s)
            .unwrap()
            .info;
        let pki = Pki::new(
            &EnrollConfig {
                signer: Some(Arc::new(signer)),
                lifetime,
            },
            CollectorMetrics::new(),
        );
        let (store, writer) =
            Store::open(crate::store::StoreConfig::new(dir.path().join("c.db"))).unwrap();
        let info = current.clone();
        store
            .exec(move |c| {
                crate::store::query::certificates::record_issued(c, &info, "enroll", None, 1)
            })
            .await
            .unwrap();
        (dir, pki, store, writer, current)
    }

    fn csr() -> Vec<u8> {
        mcpwatch_common::csr::request("web-1").unwrap().csr_der
    }

    #[tokio::test]
    async fn pki_renewal_is_refused_early_for_revoked_certificates_and_hosts() {
        // Before half its lifetime: refused, nothing recorded.
        let (_dir, pki, store, writer, current) = renewing(Duration::from_secs(60)).await;
        let r = pki.renew(&store, &current, &csr()).await;
        assert!(!r.ok && r.message.contains("half"), "{}", r.message);
        assert_eq!(store.certificates_of("web-1").await.unwrap().len(), 1);
        drop(store);
        writer.join().unwrap();

        // Past half-life it renews, and the new certificate descends from the old one.
        let (_dir, pki, store, writer, current) = renewing(Duration::from_secs(40 * 60)).await;
        let r = pki.renew(&store, &current, &csr()).await;
        assert!(r.ok, "{}", r.message);
        let renewed = cert_info::inspect_pem(r.certificate_pem.as_bytes())
            .unwrap()
            .remove(0);
        assert_ne!(renewed.serial, current.serial);
        // Revoked on the database (the CLI's way, not yet in the live set): refused, and
        // revoking the first also revoked the one renewed from it.
        let serial = current.serial.clone();
        store
            .exec(move |c| crate::store::query::certificates::revoke(c, &serial, None, "cli", 2))
            .await
            .unwrap();
        assert!(store
            .revoked_serials()
            .await
            .unwrap()
            .contains(&renewed.serial));
        let r = pki.renew(&store, &current, &csr()).await;
        assert!(!r.ok && r.message.contains("revoked"), "{}", r.message);
        drop(store);
        writer.join().unwrap();

        // A revoked host renews nothing.
        let (_dir, pki, store, writer, current) = renewing(Duration::from_secs(40 * 60)).await;
        store
            .register_agent(1, "web-1", "web-1", "1", "boot", 0)
            .await
            .unwrap();
        assert!(store.set_revoked("web-1", true).await.unwrap());
        let r = pki.renew(&store, &current, &csr()).await;
        assert!(
            !r.ok && r.message.contains("host is revoked"),
            "{}",
            r.message
        );
        drop(store);
        writer.join().unwrap();
    }

    #[test]
    fn name_rules_pin_a_name_or_match_a_pattern() {
        assert!(name_allowed(None, "anything"));
        assert!(name_allowed(Some("web-1"), "web-1"));
        assert!(!name_allowed(Some("web-1"), "web-12"));
        assert!(name_allowed(Some("web-*"), "web-12"));
        assert!(!name_allowed(Some("web-*"), "db-1"));
        assert!(name_allowed(
            Some("*.prod.example.com"),
            "a.prod.example.com"
        ));
        assert!(!name_allowed(
            Some("*.prod.example.com"),
            "a.dev.example.com"
        ));
        assert!(name_allowed(Some("node-*-pool-*"), "node-3-pool-b"));
        assert!(!name_allowed(Some("node-*-pool-*"), "node-3-poo"));
        assert!(
            !name_allowed(Some("a*a"), "a"),
            "the two ends may not overlap"
        );
        assert!(name_allowed(Some("*"), "x"));
    }
}
