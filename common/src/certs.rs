//! Development PKI with rcgen: a CA, the collector's server certificate and per-agent client
//! certificates (ECDSA P-256), written as PEM files with private keys at mode 0600.
//!
//! Layout of a PKI directory: `ca.crt`, `ca.key`, `collector.crt`, `collector.key`,
//! `agent-NAME.crt`, `agent-NAME.key`. The agent's identity is the certificate's DNS SAN.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid name {0:?}: use letters, digits, '.', '-' (a DNS name)")]
    InvalidName(String),
    #[error("{0} already exists; refusing to overwrite a CA (remove it first)")]
    Exists(PathBuf),
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
    #[error("the OS random source failed")]
    Random,
}

/// Paths of one certificate and its key.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn ca_paths(dir: &Path) -> CertPaths {
    CertPaths {
        cert: dir.join("ca.crt"),
        key: dir.join("ca.key"),
    }
}

pub fn collector_paths(dir: &Path) -> CertPaths {
    CertPaths {
        cert: dir.join("collector.crt"),
        key: dir.join("collector.key"),
    }
}

pub fn agent_paths(dir: &Path, name: &str) -> CertPaths {
    CertPaths {
        cert: dir.join(format!("agent-{name}.crt")),
        key: dir.join(format!("agent-{name}.key")),
    }
}

/// A DNS-style identity: what agent names and SANs may contain.
pub fn validate_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidName(name.to_owned()))
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    crate::durable_file::write(path, contents.as_bytes(), mode).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Creates the dev CA and a collector certificate valid for `names` (DNS names or IP
/// addresses) plus localhost, 127.0.0.1 and ::1. Refuses to overwrite an existing CA.
pub fn init(dir: &Path, names: &[String]) -> Result<(), CertError> {
    let ca = ca_paths(dir);
    if ca.key.exists() {
        return Err(CertError::Exists(ca.key));
    }
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = dn("mcpwatch dev CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let ca_cert = params.self_signed(&ca_key)?;
    write_file(&ca.cert, &ca_cert.pem(), 0o644)?;
    write_file(&ca.key, &ca_key.serialize_pem(), 0o600)?;

    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for n in names {
        if !sans.contains(n) {
            sans.push(n.clone());
        }
    }
    let issuer = Issuer::new(params, ca_key);
    issue(
        &issuer,
        &collector_paths(dir),
        "mcpwatch collector",
        &sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        now - Duration::hours(1),
        now + Duration::days(825),
    )
}

/// Issues a client certificate for agent `name` signed by the CA in `dir`.
pub fn issue_agent(dir: &Path, name: &str) -> Result<CertPaths, CertError> {
    let now = OffsetDateTime::now_utc();
    issue_agent_valid(
        dir,
        name,
        now - Duration::hours(1),
        now + Duration::days(825),
    )
}

/// Like [`issue_agent`] with an explicit validity window (tests issue expired certificates).
pub fn issue_agent_valid(
    dir: &Path,
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertPaths, CertError> {
    validate_name(name)?;
    let ca = ca_paths(dir);
    let ca_key = KeyPair::from_pem(&read(&ca.key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca.cert)?, ca_key)?;
    let paths = agent_paths(dir, name);
    issue(
        &issuer,
        &paths,
        &format!("mcpwatch agent {name}"),
        &[name.to_owned()],
        ExtendedKeyUsagePurpose::ClientAuth,
        not_before,
        not_after,
    )?;
    Ok(paths)
}

pub(crate) fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "mcpwatch");
    dn
}

fn issue(
    issuer: &Issuer<'_, KeyPair>,
    paths: &CertPaths,
    cn: &str,
    sans: &[String],
    usage: ExtendedKeyUsagePurpose,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(), CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => {
                validate_name(s)?;
                Ok(SanType::DnsName(s.as_str().try_into()?))
            }
        })
        .collect::<Result<_, CertError>>()?;
    params.distinguished_name = dn(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(crate::csr::random_serial()?);
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, issuer)?;
    write_file(&paths.cert, &cert.pem(), 0o644)?;
    write_file(&paths.key, &key.serialize_pem(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_and_issue_write_keys_0600_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["collector.example".into()]).unwrap();
        let a = issue_agent(dir.path(), "web-1").unwrap();
        for key in [
            ca_paths(dir.path()).key,
            collector_paths(dir.path()).key,
            a.key,
        ] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        assert!(matches!(init(dir.path(), &[]), Err(CertError::Exists(_))));
        let id =
            crate::tls::identity_of_pem(&read(&agent_paths(dir.path(), "web-1").cert).unwrap())
                .unwrap();
        assert_eq!(id, "web-1");
    }

    #[test]
    fn bad_names_are_refused() {
        for n in ["", "a b", "../x", "-x", "x/y"] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
        assert!(validate_name("host-1.example").is_ok());
    }
}
