//! Revocation by serial, live: [`RevokedSerials`] is the one set of refused serials, shared
//! by the ingest listener's certificate verifier (which refuses them at the handshake, in
//! every TLS config built from now on and in the one in use) and by whoever revokes (the
//! API, the poll that picks up the CLI's revocations). Sessions already up subscribe to
//! its changes and end themselves when their serial appears.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::sync::watch;

use crate::cert_info;

/// The serials (canonical, see `cert_info`) refused at the handshake.
#[derive(Clone)]
pub struct RevokedSerials {
    set: Arc<RwLock<HashSet<String>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for RevokedSerials {
    fn default() -> Self {
        RevokedSerials {
            set: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl std::fmt::Debug for RevokedSerials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RevokedSerials({})", self.len())
    }
}

impl RevokedSerials {
    pub fn contains(&self, serial: &str) -> bool {
        // A poisoned lock means a writer panicked mid-insert of a String: the set is intact.
        self.set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(serial)
    }

    pub fn len(&self) -> usize {
        self.set.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds serials; sessions are told only when one was new.
    pub fn extend(&self, serials: impl IntoIterator<Item = String>) {
        let added = {
            let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
            serials
                .into_iter()
                .fold(false, |added, s| set.insert(s) | added)
        };
        if added {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes whenever a serial is added.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A client verifier that asks `inner` (chain, validity, CRLs) and then refuses a revoked
/// serial.
#[derive(Debug)]
pub struct RevocationVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevokedSerials,
}

impl RevocationVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, revoked: RevokedSerials) -> Self {
        RevocationVerifier { inner, revoked }
    }
}

impl ClientCertVerifier for RevocationVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = cert_info::inspect(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.revoked.contains(&info.serial) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_hear_of_new_serials_only() {
        let revoked = RevokedSerials::default();
        let mut rx = revoked.subscribe();
        revoked.extend(["ab".to_owned()]);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        revoked.extend(["ab".to_owned()]);
        assert!(!rx.has_changed().unwrap(), "nothing new, nobody woken");
        assert!(revoked.contains("ab") && !revoked.contains("cd"));
        assert_eq!(revoked.len(), 1);
    }
}
