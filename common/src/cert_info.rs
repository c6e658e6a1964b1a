//! What the fleet's PKI needs to know about one certificate: its identity, serial, validity
//! and whether it is a CA; SHA-256 fingerprints for pinning a CA; and the one canonical text
//! of a serial number (lower-case hex, no leading zeros), so a serial typed by an operator,
//! read from a certificate and listed in a CRL always compare equal.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::TlsError;

/// One certificate, as far as enrollment, revocation and expiry care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The first DNS subject alternative name, else the subject's common name, else "".
    pub identity: String,
    /// Canonical serial ([`canonical_serial`]).
    pub serial: String,
    pub not_before_s: i64,
    pub not_after_s: i64,
    pub is_ca: bool,
}

/// Reads the fields of [`CertInfo`] from a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, TlsError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::Parse(e.to_string()))?
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(name) => Some((*name).to_owned()),
                _ => None,
            })
        });
    let cn = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    };
    Ok(CertInfo {
        identity: san.or_else(cn).unwrap_or_default(),
        serial: serial_of_bytes(cert.tbs_certificate.raw_serial()),
        not_before_s: cert.validity().not_before.timestamp(),
        not_after_s: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

/// [`inspect`] for every certificate of a PEM file's text, in order.
pub fn inspect_pem(pem: &[u8]) -> Result<Vec<CertInfo>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .map(|c| {
            let c = c.map_err(|e| TlsError::Parse(e.to_string()))?;
            inspect(c.as_ref())
        })
        .collect()
}

/// The canonical serial of a certificate's raw serial bytes.
pub fn serial_of_bytes(bytes: &[u8]) -> String {
    canonical(&crate::hex::encode(bytes))
}

/// An operator's serial (hex, any case, `:` separators allowed, leading zeros ignored) in
/// canonical form; `None` if it is not hex or longer than the 20 bytes RFC 5280 allows.
pub fn canonical_serial(text: &str) -> Option<String> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let ok =
        !digits.is_empty() && digits.len() <= 42 && digits.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| canonical(&digits))
}

fn canonical(hex: &str) -> String {
    let trimmed = hex.trim_start_matches('0').to_ascii_lowercase();
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed
    }
}

/// `SHA256:` and the upper-case hex of the certificate's SHA-256, bytes separated by `:`
/// (the form `openssl x509 -fingerprint -sha256` prints, with its prefix shortened).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    format!("SHA256:{}", hex.join(":"))
}

/// A fingerprint as an operator may type it (`SHA256:` prefix optional, `:` optional, any
/// case) as the 32 digest bytes; `None` when it is not one.
pub fn parse_fingerprint(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    let t = t
        .strip_prefix("SHA256:")
        .or_else(|| t.strip_prefix("sha256:"))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    crate::hex::decode(&hex).filter(|b| b.len() == 32)
}

/// Whether `der` has the fingerprint `pin` (from [`parse_fingerprint`]). A fingerprint is
/// public, so a plain comparison does.
pub fn fingerprint_matches(der: &[u8], pin: &[u8]) -> bool {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref() == pin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_equal_however_written() {
        assert_eq!(canonical_serial("00:1A:2b"), Some("1a2b".into()));
        assert_eq!(canonical_serial("1a2b"), Some("1a2b".into()));
        assert_eq!(canonical_serial("0000"), Some("0".into()));
        assert_eq!(serial_of_bytes(&[0x00, 0x1a, 0x2b]), "1a2b");
        for bad in ["", "xyz", "12 34", &"1".repeat(43)] {
            assert_eq!(canonical_serial(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_round_trip_in_every_spelling() {
        let der = b"not really a certificate";
        let fp = fingerprint(der);
        assert!(
            fp.starts_with("SHA256:") && fp.len() == 7 + 32 * 3 - 1,
            "{fp}"
        );
        let pin = parse_fingerprint(&fp).unwrap();
        assert!(fingerprint_matches(der, &pin));
        let plain = fp[7..].replace(':', "").to_ascii_lowercase();
        assert_eq!(parse_fingerprint(&plain), Some(pin.clone()));
        assert!(!fingerprint_matches(b"another", &pin));
        assert_eq!(parse_fingerprint("SHA256:abcd"), None);
    }

    #[test]
    fn a_dev_certificate_is_inspected() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init(dir.path(), &[]).unwrap();
        let agent = crate::certs::issue_agent(dir.path(), "web-1").unwrap();
        let pem = std::fs::read(&agent.cert).unwrap();
        let info = &inspect_pem(&pem).unwrap()[0];
        assert_eq!(info.identity, "web-1");
        assert!(!info.is_ca);
        assert!(info.not_after_s > info.not_before_s);
        let ca = std::fs::read(crate::certs::ca_paths(dir.path()).cert).unwrap();
        let ca = &inspect_pem(&ca).unwrap()[0];
        assert!(ca.is_ca);
        assert_eq!(ca.identity, "mcpwatch dev CA");
    }
}
