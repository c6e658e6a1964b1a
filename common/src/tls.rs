//! Mutual TLS for the agent ↔ collector stream: TLS 1.3 only, `ring` provider, client
//! certificates required and verified against the CA bundle, identity taken from the client
//! certificate's DNS SAN. Configs are rebuilt from files on SIGHUP; connections already up keep
//! the config they were accepted with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::revocation::{RevocationVerifier, RevokedSerials};

/// The three files a TLS endpoint needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle used to verify the peer.
    pub ca: PathBuf,
    /// This endpoint's certificate chain.
    pub cert: PathBuf,
    /// This endpoint's private key.
    pub key: PathBuf,
    /// Certificate revocation lists (PEM) the server checks client certificates against;
    /// only the collector's ingest listener has any.
    pub crl: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: no certificate found")]
    NoCertificate { path: PathBuf },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("certificate has no DNS subject alternative name")]
    NoIdentity,
    #[error("certificate could not be parsed: {0}")]
    Parse(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_err(path, e))?;
    }
    Ok(Arc::new(roots))
}

/// The CRLs of `paths`, every one of each PEM file.
fn crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for path in paths {
        let found = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| file_err(path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(path, e))?;
        if found.is_empty() {
            return Err(file_err(path, "no CRL found"));
        }
        out.extend(found);
    }
    Ok(out)
}

/// Server side: TLS 1.3 only, a client certificate signed by `files.ca` is required, and
/// refused when its serial is in `revoked` or it is listed in one of `files.crl`.
///
/// CRLs are checked for the client's own certificate only, and a certificate from a CA no
/// CRL speaks for is let in: a CRL is for an external PKI, where the bundle may hold more
/// CAs than the CRLs cover. An out-of-date CRL is still used (refusing every agent because
/// a CRL was not refreshed would take the fleet down).
pub fn server_config(
    files: &TlsFiles,
    revoked: &RevokedSerials,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider.clone());
    if !files.crl.is_empty() {
        builder = builder
            .with_crls(crls(&files.crl)?)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let verifier = Arc::new(RevocationVerifier::new(builder.build()?, revoked.clone()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    // No resumption: a resumed session skips the client certificate's verification, so a
    // revoked (or CRL-listed) certificate would get back in on its old session.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The oldest TLS version an HTTPS listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTlsVersion {
    Tls12,
    Tls13,
}

/// An HTTPS server (no client certificates) for `cert` and `key`, accepting TLS 1.3 and, if
/// `min` allows, TLS 1.2; ALPN `http/1.1`.
pub fn https_server_config(
    cert: &Path,
    key: &Path,
    min: MinTlsVersion,
) -> Result<Arc<ServerConfig>, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinTlsVersion::Tls13 => &[&rustls::version::TLS13],
        MinTlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client side: TLS 1.3 only, verifies the server against `files.ca` and presents the agent's
/// certificate. The server name is checked by the caller's `ServerName`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    Ok(Arc::new(config))
}

/// The identity a certificate carries: its first DNS subject alternative name.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<String, TlsError> {
    let (_, parsed) =
        X509Certificate::from_der(cert.as_ref()).map_err(|e| TlsError::Parse(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| TlsError::Parse(e.to_string()))?
        .ok_or(TlsError::NoIdentity)?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .ok_or(TlsError::NoIdentity)
}

/// [`identity_of`] for the first certificate of a PEM text.
pub fn identity_of_pem(pem: &str) -> Result<String, TlsError> {
    let cert = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Parse(e.to_string()))?;
    identity_of(&cert)
}

/// A config that can be swapped on reload while connections keep the one they started with.
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn new(config: Arc<T>) -> Self {
        Reloadable {
            current: RwLock::new(config),
        }
    }

    pub fn get(&self) -> Arc<T> {
        // A poisoned lock only means a writer panicked mid-swap of an Arc, which cannot leave
        // a torn value: keep serving the last config.
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set(&self, config: Arc<T>) {
        match self.current.write() {
            Ok(mut g) => *g = config,
            Err(p) => *p.into_inner() = config,
        }
    }
}

/// On every SIGHUP, rebuild a config with `build` and swap it into `target`; new connections
/// use it, live ones keep theirs. A failed rebuild keeps the old config and logs why.
pub async fn reload_on_sighup<T>(
    build: impl Fn() -> Result<Arc<T>, TlsError>,
    target: Arc<Reloadable<T>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; TLS reload disabled");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {}
        }
        match build() {
            Ok(new) => {
                target.set(new);
                tracing::info!("TLS certificates reloaded");
            }
            Err(err) => {
                tracing::error!(error = %err, "TLS reload failed; keeping the old certificates")
            }
        }
    }
}
