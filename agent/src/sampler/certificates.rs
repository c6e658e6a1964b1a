//! The expiry of the certificates this agent depends on, as samples the collector's
//! `tls_certificate_expiring` rule reads: its own (`role="agent"`), every CA of its bundle
//! (`role="ca"`) and the collector's, as presented at the last handshake
//! (`role="collector"`). Files are re-read only when they change (a renewal, a SIGHUP).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mcpwatch_common::cert_info::{self, CertInfo};
use mcpwatch_common::wire::SeriesKey;

pub const CERTIFICATE_EXPIRY: &str = "mcpwatch_tls_certificate_expiry_timestamp_seconds";

/// The family this sampler emits, for the agent's `/metrics`.
pub fn series_help() -> &'static [(&'static str, &'static str, super::MetricKind)] {
    &[(
        CERTIFICATE_EXPIRY,
        "notAfter (Unix seconds) of the agent's certificate (role=agent), its CAs (role=ca) \
         and the collector's, as presented at the last handshake (role=collector).",
        super::MetricKind::Gauge,
    )]
}

/// The collector's certificate as the uplink last saw it.
pub type PeerCertificate = Arc<Mutex<Option<CertInfo>>>;

pub struct CertificateSampler {
    files: Vec<(&'static str, PathBuf)>,
    stamps: Vec<Option<(SystemTime, u64)>>,
    from_files: Vec<(SeriesKey, f64)>,
    peer: PeerCertificate,
}

impl CertificateSampler {
    pub fn new(own: PathBuf, ca: PathBuf, peer: PeerCertificate) -> CertificateSampler {
        CertificateSampler {
            files: vec![("agent", own), ("ca", ca)],
            stamps: Vec::new(),
            from_files: Vec::new(),
            peer,
        }
    }

    pub fn sample(&mut self, out: &mut Vec<(SeriesKey, f64)>) {
        let stamps: Vec<_> = self
            .files
            .iter()
            .map(|(_, p)| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect();
        if stamps != self.stamps {
            self.stamps = stamps;
            self.from_files.clear();
            for (role, path) in &self.files {
                let Ok(pem) = std::fs::read(path) else {
                    continue;
                };
                let Ok(certs) = cert_info::inspect_pem(&pem) else {
                    tracing::debug!(path = %path.display(), "certificate file unreadable");
                    continue;
                };
                // The agent's file may hold its chain: only the first certificate is its own.
                let take = if *role == "agent" { 1 } else { certs.len() };
                for c in certs.into_iter().take(take) {
                    self.from_files.push(series(role, &c));
                }
            }
        }
        out.extend(self.from_files.iter().cloned());
        let peer = self.peer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(c) = peer {
            out.push(series("collector", &c));
        }
    }
}

fn series(role: &str, c: &CertInfo) -> (SeriesKey, f64) {
    (
        SeriesKey::new(
            CERTIFICATE_EXPIRY,
            &[
                ("role", role),
                ("identity", &c.identity),
                ("serial", &c.serial),
            ],
        ),
        c.not_after_s as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ca_and_collector_certificates_are_sampled_and_re_read_on_change() {
        let dir = tempfile::tempdir().unwrap();
        mcpwatch_common::certs::init(dir.path(), &[]).unwrap();
        let a = mcpwatch_common::certs::issue_agent(dir.path(), "web-1").unwrap();
        let ca = mcpwatch_common::certs::ca_paths(dir.path()).cert;
        let peer = PeerCertificate::default();
        let mut s = CertificateSampler::new(a.cert.clone(), ca, peer.clone());
        let mut out = Vec::new();
        s.sample(&mut out);
        let roles: Vec<_> = out.iter().map(|(k, _)| k.labels[1].1.clone()).collect();
        assert_eq!(roles, ["agent", "ca"]);
        let first = cert_info::inspect_pem(&std::fs::read(&a.cert).unwrap()).unwrap()[0].clone();
        assert_eq!(out[0].1, first.not_after_s as f64);
        *peer.lock().unwrap() = Some(first.clone());
        // A renewed certificate is picked up: another serial.
        let renewed = mcpwatch_common::certs::issue_agent(dir.path(), "web-1").unwrap();
        assert_eq!(renewed.cert, a.cert);
        let mut out = Vec::new();
        s.sample(&mut out);
        assert_eq!(out.len(), 3);
        assert_ne!(
            out[0].0.labels[2].1, first.serial,
            "re-read after the change"
        );
        assert_eq!(out[2].0.labels[1].1, "collector");
    }
}
