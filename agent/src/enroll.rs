//! `mcpwatch-agent enroll`: makes the agent's key here (it never leaves the host; 0600),
//! sends a CSR with its identity and a bootstrap token to the collector's `POST
//! /api/v1/enroll` over HTTPS pinned to the collector's CA, and writes the signed
//! certificate and the CA bundle where the configuration's `[tls]` points.
//!
//! Pinning: with `--ca FILE` the collector is verified against that bundle. With
//! `--ca-fingerprint`, the agent first fetches the public CA bundle (`GET
//! /api/v1/enroll/ca`) over a connection it does not yet trust, keeps only the CA whose
//! SHA-256 equals the pin, and then sends the token on a new connection verified against that
//! CA and the collector's name. A wrong fingerprint stops it before the token is sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcpwatch_common::cert_info;
use mcpwatch_common::tls::TlsFiles;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the collector is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A CA bundle file.
    CaFile(PathBuf),
    /// The SHA-256 of the CA certificate (32 bytes).
    Fingerprint(Vec<u8>),
}

/// What `enroll` is told.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// `https://HOST:PORT` of the collector's API.
    pub collector: String,
    pub token: String,
    pub trust: Trust,
    /// The identity to ask for.
    pub name: String,
    /// Where the key, certificate and CA bundle go.
    pub files: TlsFiles,
    /// Replace a certificate that is already there.
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Usage(String),
    #[error("the collector's CA does not match the pinned fingerprint; the token was not sent")]
    FingerprintMismatch,
    #[error("collector: {0}")]
    Http(String),
    #[error("the collector refused the enrollment ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// What a successful run did.
#[derive(Debug)]
pub enum Enrolled {
    Issued {
        serial: String,
        not_after_s: i64,
    },
    /// A valid certificate is there already (and `force` was not given).
    Already {
        serial: String,
        not_after_s: i64,
    },
}

pub async fn enroll(o: EnrollOptions) -> Result<Enrolled, EnrollError> {
    if !o.force {
        if let Some(info) = existing(&o.files) {
            return Ok(Enrolled::Already {
                serial: info.serial,
                not_after_s: info.not_after_s,
            });
        }
    }
    let base = o.collector.trim_end_matches('/');
    if !base.starts_with("https://") {
        return Err(EnrollError::Usage(
            "--collector must be an https:// URL: the token is sent only over TLS".into(),
        ));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = match &o.trust {
        Trust::CaFile(path) => roots_of(&read(path)?, None).map_err(|m| file_err(path, m))?,
        Trust::Fingerprint(pin) => {
            let bundle = fetch_ca(base).await?;
            roots_of(bundle.as_bytes(), Some(pin)).map_err(|_| EnrollError::FingerprintMismatch)?
        }
    };
    let request =
        mcpwatch_common::csr::request(&o.name).map_err(|e| EnrollError::Usage(e.to_string()))?;
    let csr_pem = request.csr_pem.clone();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| EnrollError::Http(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let client = client(config)?;
    let body = serde_json::json!({ "token": o.token.trim(), "csr_pem": csr_pem });
    let resp = client
        .post(format!("{base}/api/v1/enroll"))
        .json(&body)
        .send()
        .await
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let answer: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| EnrollError::Http(format!("answer is not JSON: {e}")))?;
    if status != 201 {
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned();
        return Err(EnrollError::Refused { status, message });
    }
    let cert_pem = answer["certificate_pem"].as_str().unwrap_or_default();
    let ca_pem = answer["ca_pem"].as_str().unwrap_or_default();
    let info = cert_info::inspect_pem(cert_pem.as_bytes())
        .ok()
        .and_then(|v| v.into_iter().next())
        .filter(|i| i.identity == o.name)
        .ok_or_else(|| EnrollError::Http("the answer holds no certificate for this name".into()))?;
    // The key first: a certificate without its key would be useless, a key alone is
    // replaced by the next enrollment.
    write(&o.files.key, request.key_pem.as_bytes(), 0o600)?;
    write(&o.files.cert, cert_pem.as_bytes(), 0o644)?;
    write(&o.files.ca, ca_pem.as_bytes(), 0o644)?;
    Ok(Enrolled::Issued {
        serial: info.serial,
        not_after_s: info.not_after_s,
    })
}

/// The certificate already in place, if it parses and has not expired.
fn existing(files: &TlsFiles) -> Option<cert_info::CertInfo> {
    if !files.key.exists() {
        return None;
    }
    let pem = std::fs::read(&files.cert).ok()?;
    let info = cert_info::inspect_pem(&pem).ok()?.into_iter().next()?;
    let now = mcpwatch_common::time::now_ms() / 1000;
    (info.not_after_s > now).then_some(info)
}

fn client(config: ClientConfig) -> Result<reqwest::Client, EnrollError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| EnrollError::Http(e.to_string()))
}

/// The collector's public CA bundle, fetched before it is trusted (see the module doc).
async fn fetch_ca(base: &str) -> Result<String, EnrollError> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| EnrollError::Http(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified))
            .with_no_client_auth();
    let resp = client(config)?
        .get(format!("{base}/api/v1/enroll/ca"))
        .send()
        .await
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(EnrollError::Refused {
            status: resp.status().as_u16(),
            message: "the collector does not enroll agents ([enroll] ca_key unset)".into(),
        });
    }
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    Ok(v["ca_pem"].as_str().unwrap_or_default().to_owned())
}

/// Roots from a PEM bundle: every certificate, or with `pin` only the one it names.
fn roots_of(pem: &[u8], pin: Option<&[u8]>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        if pin.is_none_or(|p| cert_info::fingerprint_matches(cert.as_ref(), p)) {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
    }
    if roots.is_empty() {
        return Err("no usable CA certificate".into());
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, EnrollError> {
    std::fs::read(path).map_err(|e| file_err(path, e))
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> EnrollError {
    EnrollError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Temp file, fsync, rename: a crash leaves the old file or the new one.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrollError> {
    mcpwatch_common::durable_file::write(path, bytes, mode).map_err(|e| file_err(path, e))
}

/// Accepts any server certificate (still checking the handshake signature): used only to
/// fetch the public CA bundle, which is then checked against the pin before anything
/// secret is sent.
#[derive(Debug)]
struct Unverified;

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
