//! Certificate renewal at the agent: when two thirds of its certificate's lifetime have
//! passed, the uplink sends a CSR over its mTLS session (a new key, made here), and installs
//! the certificate the collector answers with; the next connection uses it.
//!
//! Installing is crash-safe: the new key and certificate are written beside the old ones
//! (`.renewed`), fsynced, then renamed key first, certificate second. A crash between the
//! two renames leaves a new key with the old certificate; [`recover`] (run at start)
//! finishes the second rename, so the pair on disk always matches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcpwatch_common::cert_info::{self, CertInfo};
use mcpwatch_common::csr::{self, KeyAndRequest};
use mcpwatch_common::tls::TlsFiles;

/// How long after a failed or refused renewal the next try waits.
pub const RETRY: Duration = Duration::from_secs(300);

/// Part of the lifetime after which a certificate is renewed.
const RENEW_AT: f64 = 2.0 / 3.0;

fn staged(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".renewed");
    PathBuf::from(name)
}

/// The agent's certificate as on disk now.
pub fn current(files: &TlsFiles) -> Option<CertInfo> {
    let pem = std::fs::read(&files.cert).ok()?;
    cert_info::inspect_pem(&pem).ok()?.into_iter().next()
}

/// How long until `cert` is due for renewal (zero when it is due already).
pub fn due_in(cert: &CertInfo, now_s: i64) -> Duration {
    let life = (cert.not_after_s - cert.not_before_s).max(0) as f64;
    let at = cert.not_before_s as f64 + life * RENEW_AT;
    Duration::from_secs_f64((at - now_s as f64).max(0.0))
}

/// A new key and the CSR for `identity`.
pub fn request(identity: &str) -> Result<KeyAndRequest, String> {
    csr::request(identity).map_err(|e| e.to_string())
}

/// Checks the collector's answer against the request (identity, key) and puts key and
/// certificate in place. Returns the new certificate.
pub fn install(
    files: &TlsFiles,
    identity: &str,
    key_pem: &str,
    cert_pem: &str,
) -> Result<CertInfo, String> {
    let info = cert_info::inspect_pem(cert_pem.as_bytes())
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("the answer holds no certificate")?;
    if info.identity != identity {
        return Err(format!(
            "the renewed certificate names {:?}, not {identity:?}",
            info.identity
        ));
    }
    if !csr::key_matches(cert_pem, key_pem) {
        return Err("the renewed certificate is not for the key this agent made".into());
    }
    let (key_new, cert_new) = (staged(&files.key), staged(&files.cert));
    write_synced(&key_new, key_pem.as_bytes(), 0o600)?;
    write_synced(&cert_new, cert_pem.as_bytes(), 0o644)?;
    rename(&key_new, &files.key)?;
    rename(&cert_new, &files.cert)?;
    Ok(info)
}

/// Finishes or discards an install a crash interrupted (see the module doc).
pub fn recover(files: &TlsFiles) {
    let (key_new, cert_new) = (staged(&files.key), staged(&files.cert));
    match (key_new.exists(), cert_new.exists()) {
        // Crashed before the first rename: the old pair is intact.
        (true, _) => {
            let _ = std::fs::remove_file(&key_new);
            let _ = std::fs::remove_file(&cert_new);
        }
        // Crashed between the renames: the key is new, the certificate must follow.
        (false, true) => match rename(&cert_new, &files.cert) {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "finished an interrupted certificate renewal")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot finish an interrupted certificate renewal")
            }
        },
        (false, false) => {}
    }
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    mcpwatch_common::durable_file::write_synced(path, bytes, mode)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::rename(from, to).map_err(|e| format!("{}: {e}", to.display()))?;
    // The rename is durable once the directory is; a failed directory flush still leaves
    // the rename done, so it is not an error of the install.
    let _ = mcpwatch_common::durable_file::sync_dir(to);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("agent.crt"),
            key: dir.join("agent.key"),
            crl: Vec::new(),
        }
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        let c = CertInfo {
            identity: "a".into(),
            serial: "1".into(),
            not_before_s: 0,
            not_after_s: 300,
            is_ca: false,
        };
        assert_eq!(due_in(&c, 100), Duration::from_secs(100));
        assert_eq!(due_in(&c, 250), Duration::ZERO);
    }

    #[test]
    fn an_answer_for_another_key_or_name_is_refused_and_a_good_one_installed() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        mcpwatch_common::certs::init(&pki, &[]).unwrap();
        let ca = mcpwatch_common::certs::ca_paths(&pki);
        let signer = csr::Signer::load(&ca.cert, &ca.key).unwrap();
        let f = files(dir.path());
        std::fs::write(&f.cert, "old").unwrap();
        std::fs::write(&f.key, "old").unwrap();
        let req = request("web-1").unwrap();
        let issued = signer
            .sign(
                &req.csr_der,
                |_| true,
                Duration::from_secs(120),
                1_800_000_000,
            )
            .unwrap();
        let other = request("web-1").unwrap();
        assert!(install(&f, "web-1", &other.key_pem, &issued.pem).is_err());
        assert!(install(&f, "web-2", &req.key_pem, &issued.pem).is_err());
        assert_eq!(
            std::fs::read_to_string(&f.cert).unwrap(),
            "old",
            "nothing replaced"
        );
        let info = install(&f, "web-1", &req.key_pem, &issued.pem).unwrap();
        assert_eq!(current(&f).unwrap().serial, info.serial);
        assert!(!staged(&f.key).exists() && !staged(&f.cert).exists());
    }

    #[test]
    fn an_interrupted_install_is_finished_or_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        // Between the renames: the certificate follows the key.
        std::fs::write(&f.key, "new key").unwrap();
        std::fs::write(staged(&f.cert), "new cert").unwrap();
        recover(&f);
        assert_eq!(std::fs::read_to_string(&f.cert).unwrap(), "new cert");
        // Before the first rename: the staged pair goes, the old one stays.
        std::fs::write(staged(&f.key), "newer key").unwrap();
        std::fs::write(staged(&f.cert), "newer cert").unwrap();
        recover(&f);
        assert_eq!(std::fs::read_to_string(&f.key).unwrap(), "new key");
        assert!(!staged(&f.cert).exists());
    }
}
