//! Certificate signing requests, both halves: the agent makes its key (which never leaves
//! the host) and a CSR naming only its identity; the collector's [`Signer`] issues a client
//! certificate from a CSR under a fixed policy. Of a CSR only the public key and the one DNS
//! name are used: a request for more names, for a CA, or with extensions the policy does not
//! know is refused, and the certificate's usages, validity and serial are the signer's.

use std::path::Path;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateSigningRequestDer;
use time::OffsetDateTime;

use crate::cert_info::{self, CertInfo};
use crate::certs::{dn, validate_name, CertError};

/// A new key and the CSR that asks for `identity`.
pub struct KeyAndRequest {
    /// PKCS#8 PEM; write it 0600 and nowhere else.
    pub key_pem: String,
    pub csr_der: Vec<u8>,
    pub csr_pem: String,
}

/// Makes an ECDSA P-256 key and a CSR with `identity` as its only DNS name.
pub fn request(identity: &str) -> Result<KeyAndRequest, CertError> {
    validate_name(identity)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![identity.to_owned()])?;
    params.distinguished_name = dn(&format!("mcpwatch agent {identity}"));
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_der: csr.der().to_vec(),
        csr_pem: csr.pem()?,
    })
}

/// Why a CSR was not signed. The texts are for the requester: they say what to change.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("the certificate request cannot be read or its signature is wrong: {0}")]
    Invalid(String),
    #[error("the certificate request asks for a CA certificate")]
    WantsCa,
    #[error("the certificate request must name exactly one DNS name, the agent's identity")]
    Names,
    #[error("the name {0:?} is not a valid agent identity")]
    BadName(String),
    #[error("the name {0:?} is not allowed here")]
    NotAllowed(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A certificate just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    pub info: CertInfo,
}

/// The CA that signs agents' certificates, key in memory.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate file's text, handed to enrolling agents as their CA bundle.
    ca_pem: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { .. }")
    }
}

impl Signer {
    /// The CA certificate (first of the PEM file) and its key; refuses a key that is not the
    /// certificate's.
    pub fn load(ca_cert: &Path, ca_key: &Path) -> Result<Signer, CertError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| CertError::Io {
                path: p.to_owned(),
                source,
            })
        };
        let text = read(ca_cert)?;
        // This text is served to anyone (GET /enroll/ca): a file holding the key too (a
        // combined key + certificate PEM) must never get that far.
        if text.contains("PRIVATE KEY") {
            return Err(CertError::Mismatch {
                path: ca_cert.to_owned(),
                message: "the CA certificate file holds a private key; point ca_cert at a \
                          file with certificates only"
                    .into(),
            });
        }
        let ca_pem = certificate_blocks(&text);
        let key = KeyPair::from_pem(&read(ca_key)?)?;
        let first = cert_info_first(&ca_pem).ok_or_else(|| CertError::Mismatch {
            path: ca_cert.to_owned(),
            message: "no certificate in the file".into(),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&first).map_err(|e| CertError::Mismatch {
                path: ca_cert.to_owned(),
                message: e.to_string(),
            })?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertError::Mismatch {
                path: ca_key.to_owned(),
                message: "this key does not belong to the CA certificate".into(),
            });
        }
        if !parsed.is_ca() {
            return Err(CertError::Mismatch {
                path: ca_cert.to_owned(),
                message: "the certificate is not a CA".into(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&first.into(), key)?;
        Ok(Signer { issuer, ca_pem })
    }

    /// The CA bundle enrolling agents verify the collector with.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs `csr_der` for its one DNS name if `allowed` says yes: a client certificate
    /// valid from a little before `now_s` (Unix seconds; clock skew) for `lifetime`.
    pub fn sign(
        &self,
        csr_der: &[u8],
        allowed: impl FnOnce(&str) -> bool,
        lifetime: std::time::Duration,
        now_s: i64,
    ) -> Result<Issued, CsrError> {
        let now = OffsetDateTime::from_unix_timestamp(now_s)
            .map_err(|e| CsrError::Signing(e.to_string()))?;
        let (name, csr) = parse(csr_der)?;
        if !allowed(&name) {
            return Err(CsrError::NotAllowed(name));
        }
        let lifetime =
            time::Duration::try_from(lifetime).map_err(|e| CsrError::Signing(e.to_string()))?;
        // Backdated for clock skew: five minutes, or a tenth of a short lifetime (a long
        // backdate would bring a short-lived certificate's renewal time into the past).
        let skew: time::Duration = (lifetime / 10_i32).min(time::Duration::minutes(5));
        let params = agent_params(&name, now - skew, now + lifetime)
            .map_err(|e| CsrError::Signing(e.to_string()))?;
        let policy = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = policy
            .signed_by(&self.issuer)
            .map_err(|e| CsrError::Signing(e.to_string()))?;
        let info = cert_info::inspect(cert.der()).map_err(|e| CsrError::Signing(e.to_string()))?;
        Ok(Issued {
            pem: cert.pem(),
            info,
        })
    }
}

/// Whether the first certificate of `cert_pem` carries the public key of `key_pem`.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    let (Some(der), Ok(key)) = (cert_info_first(cert_pem), KeyPair::from_pem(key_pem)) else {
        return false;
    };
    x509_parser::parse_x509_certificate(&der)
        .is_ok_and(|(_, c)| c.public_key().raw == key.subject_public_key_info().as_slice())
}

/// Only the `CERTIFICATE` blocks of a PEM text, as written (comments and other blocks
/// dropped).
fn certificate_blocks(pem: &str) -> String {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = String::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push_str(&rest[start..end]);
        out.push('\n');
        rest = &rest[end..];
    }
    out
}

fn cert_info_first(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

/// The one DNS name a CSR asks for, after checking its signature and that it asks for
/// nothing the policy refuses.
pub fn requested_name(csr_der: &[u8]) -> Result<String, CsrError> {
    parse(csr_der).map(|(name, _)| name)
}

fn parse(csr_der: &[u8]) -> Result<(String, CertificateSigningRequestParams), CsrError> {
    let csr =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(|e| CsrError::Invalid(e.to_string()))?;
    if !matches!(csr.params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
        return Err(CsrError::WantsCa);
    }
    let [SanType::DnsName(name)] = csr.params.subject_alt_names.as_slice() else {
        return Err(CsrError::Names);
    };
    let name = name.as_str().to_owned();
    validate_name(&name).map_err(|_| CsrError::BadName(name.clone()))?;
    Ok((name, csr))
}

/// The parameters of every agent certificate: client authentication only, the identity as
/// its one DNS name, a random serial.
pub(crate) fn agent_params(
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
    params.distinguished_name = dn(&format!("mcpwatch agent {name}"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

/// 128 random bits, positive (top bit clear), never starting with a zero byte (so the
/// canonical text always has 32 digits).
pub(crate) fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::BasicConstraints;

    fn signer() -> (tempfile::TempDir, Signer) {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init(dir.path(), &[]).unwrap();
        let ca = crate::certs::ca_paths(dir.path());
        let signer = Signer::load(&ca.cert, &ca.key).unwrap();
        (dir, signer)
    }

    fn csr_with(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    #[test]
    fn a_request_for_one_name_is_signed_for_that_name_only() {
        let (_dir, signer) = signer();
        let req = request("web-1").unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let issued = signer
            .sign(&req.csr_der, |n| n == "web-1", DAY, now)
            .unwrap();
        assert_eq!(issued.info.identity, "web-1");
        assert!(!issued.info.is_ca);
        assert_eq!(issued.info.not_after_s, now + 86_400);
        assert_eq!(issued.info.serial.len(), 32, "{}", issued.info.serial);
        assert!(key_matches(&issued.pem, &req.key_pem));
        assert!(!key_matches(
            &issued.pem,
            &request("web-1").unwrap().key_pem
        ));
        let again = signer.sign(&req.csr_der, |_| true, DAY, now).unwrap();
        assert_ne!(issued.info.serial, again.info.serial, "serials are random");
        assert_eq!(
            signer
                .sign(&req.csr_der, |n| n == "web-2", DAY, now)
                .unwrap_err(),
            CsrError::NotAllowed("web-1".into())
        );
    }

    #[test]
    fn requests_for_more_than_the_policy_gives_are_refused() {
        let (_dir, signer) = signer();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let two = CertificateParams::new(vec!["web-1".to_owned(), "evil".to_owned()]).unwrap();
        assert_eq!(
            signer.sign(&csr_with(two), |_| true, DAY, now).unwrap_err(),
            CsrError::Names
        );
        let mut ca = CertificateParams::new(vec!["web-1".to_owned()]).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert_eq!(
            signer.sign(&csr_with(ca), |_| true, DAY, now).unwrap_err(),
            CsrError::WantsCa
        );
        let ip = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        assert_eq!(
            signer.sign(&csr_with(ip), |_| true, DAY, now).unwrap_err(),
            CsrError::Names
        );
        let mut tampered = request("web-1").unwrap().csr_der;
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            signer.sign(&tampered, |_| true, DAY, now),
            Err(CsrError::Invalid(_))
        ));
        assert!(matches!(
            signer.sign(b"junk", |_| true, DAY, now),
            Err(CsrError::Invalid(_))
        ));
    }

    #[test]
    fn a_key_that_is_not_the_cas_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init(dir.path(), &[]).unwrap();
        let ca = crate::certs::ca_paths(dir.path());
        let collector = crate::certs::collector_paths(dir.path());
        let err = Signer::load(&ca.cert, &collector.key).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        let err = Signer::load(&collector.cert, &collector.key).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn a_ca_file_holding_its_key_is_refused_and_only_certificates_are_served() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init(dir.path(), &[]).unwrap();
        let ca = crate::certs::ca_paths(dir.path());
        let cert = std::fs::read_to_string(&ca.cert).unwrap();
        let key = std::fs::read_to_string(&ca.key).unwrap();
        let combined = dir.path().join("combined.pem");
        std::fs::write(&combined, format!("{key}{cert}")).unwrap();
        let err = Signer::load(&combined, &combined).unwrap_err();
        assert!(err.to_string().contains("holds a private key"), "{err}");
        // Comments and text around the blocks are not served.
        let commented = dir.path().join("commented.pem");
        std::fs::write(
            &commented,
            format!("# our CA, ops@example\n{cert}trailing\n"),
        )
        .unwrap();
        let s = Signer::load(&commented, &ca.key).unwrap();
        assert!(s.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!s.ca_pem().contains("ops@example") && !s.ca_pem().contains("trailing"));
    }
}
