//! The key that seals the secrets of receivers defined through the API (AES-256-GCM), kept
//! in its own file (`[alerting] secret_key_file`) apart from the database, so a copy of the
//! database alone reveals none of them. Each sealed secret is bound to its receiver, field
//! and destination (the additional authenticated data): moved to another receiver or to a
//! definition that sends elsewhere, it no longer opens.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::Secret;

/// Why the key file could not be used, or a secret not sealed or opened. Never holds a
/// secret or key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("secret key file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the system random generator failed")]
    Random,
    #[error("the sealed secret does not open with this key for this receiver and destination")]
    Open,
}

/// Bytes in a key file: 64 hexadecimal digits (32 bytes), and a newline.
const KEY_LEN: usize = 32;

/// What a sealed secret is bound to: it opens only under the same three.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub receiver: &'a str,
    pub field: &'a str,
    pub destination: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        // Names and fields cannot hold NUL (the API allows [A-Za-z0-9._-]); a destination
        // is the last part, so the encoding is unambiguous.
        let mut out = b"mcpwatch-receiver-secret/v1\0".to_vec();
        for part in [self.receiver, self.field, self.destination] {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
        out
    }
}

/// The sealing key. `Debug` shows only where it came from.
pub struct SecretKey {
    key: LessSafeKey,
    path: PathBuf,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// Reads the key at `path`, creating it (mode 0600, 32 random bytes) when there is
    /// none and `may_create` (no sealed secret exists yet: a new key would open none of
    /// them, and every API receiver would be skipped). A key readable by group or others,
    /// or one reached through a symbolic link, is refused: it unlocks every API receiver's
    /// secret.
    pub fn load_or_create(path: &Path, may_create: bool) -> Result<SecretKey, SecretKeyError> {
        let file_err = |reason: String| SecretKeyError::File {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => create(path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(file_err(
                    "missing, but the database holds secrets sealed with it: restore the key \
                     from your backup (or delete those receivers through the API, and remove \
                     second factors with `mcpwatch-collector user mfa-reset NAME`)"
                        .into(),
                ))
            }
            Err(e) => return Err(file_err(e.to_string())),
        }
        let meta = std::fs::symlink_metadata(path).map_err(|e| file_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(file_err(
                "not a regular file (a symbolic link is refused too)".into(),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(file_err(
                    "readable by group or others; make it 0600, owned by the collector's user"
                        .into(),
                ));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let bytes =
            mcpwatch_common::hex::decode_array::<KEY_LEN>(text.trim_end_matches(['\n', '\r']))
                .ok_or_else(|| file_err(format!("must hold {} hexadecimal digits", KEY_LEN * 2)))?;
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| file_err("not an AES-256 key".into()))?;
        Ok(SecretKey {
            key: LessSafeKey::new(unbound),
            path: path.to_path_buf(),
        })
    }

    /// Seals `value` for `binding`: a fresh random nonce, then the ciphertext and tag.
    pub fn seal(&self, binding: Binding<'_>, value: &Secret) -> Result<Vec<u8>, SecretKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretKeyError::Random)?;
        let mut data = value.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding.aad()),
                &mut data,
            )
            .map_err(|_| SecretKeyError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Opens what [`SecretKey::seal`] made for the same `binding`.
    pub fn open(&self, binding: Binding<'_>, sealed: &[u8]) -> Result<Secret, SecretKeyError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretKeyError::Open);
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretKeyError::Open)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(binding.aad()), &mut data)
            .map_err(|_| SecretKeyError::Open)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SecretKeyError::Open)?;
        Ok(Secret::new(text))
    }
}

/// Writes a new key file, readable by its owner only, without replacing one that appeared
/// meanwhile (`create_new`).
fn create(path: &Path) -> Result<(), SecretKeyError> {
    let file_err = |reason: String| SecretKeyError::File {
        path: path.to_path_buf(),
        reason,
    };
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| SecretKeyError::Random)?;
    let hex = mcpwatch_common::hex::encode(&key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(file_err(format!("cannot create: {e}"))),
    };
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| file_err(format!("cannot write: {e}")))?;
    tracing::info!(path = %path.display(), "created the key that seals API receivers' secrets");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding<'a>(receiver: &'a str, destination: &'a str) -> Binding<'a> {
        Binding {
            receiver,
            field: "secret",
            destination,
        }
    }

    #[test]
    fn notify_secret_key_created_private_and_binds_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        let key = SecretKey::load_or_create(&path, true).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let value = Secret::new("hmac-key-1");
        let sealed = key
            .seal(binding("r", "https://a.example:443"), &value)
            .expect("seal");
        assert!(!sealed.windows(10).any(|w| w == b"hmac-key-1"));
        // The same file gives the same key; the secret opens only under its binding.
        let again = SecretKey::load_or_create(&path, true).expect("load");
        let opened = again
            .open(binding("r", "https://a.example:443"), &sealed)
            .expect("open");
        assert_eq!(opened.expose(), "hmac-key-1");
        for other in [
            binding("r", "https://evil.example:443"),
            binding("r2", "https://a.example:443"),
        ] {
            assert!(again.open(other, &sealed).is_err(), "{other:?}");
        }
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(again
            .open(binding("r", "https://a.example:443"), &tampered)
            .is_err());
        assert!(again.open(binding("r", "x"), &[1, 2]).is_err());
        // Another key does not open it.
        let other = SecretKey::load_or_create(&dir.path().join("k2"), true).expect("create");
        assert!(other
            .open(binding("r", "https://a.example:443"), &sealed)
            .is_err());
    }

    #[cfg(unix)]
    #[test]
    fn notify_secret_key_refused_when_shared_or_malformed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        SecretKey::load_or_create(&path, true).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = SecretKey::load_or_create(&path, true).expect_err("group-readable");
        assert!(e.to_string().contains("group or others"), "{e}");
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "abcd\n").expect("write");
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = SecretKey::load_or_create(&bad, true).expect_err("short");
        assert!(e.to_string().contains("hexadecimal"), "{e}");
        let gone = dir.path().join("gone");
        let e = SecretKey::load_or_create(&gone, false).expect_err("sealed rows exist");
        assert!(e.to_string().contains("restore the key"), "{e}");
        assert!(!gone.exists(), "no new key beside sealed secrets");
        std::os::unix::fs::symlink(&path, dir.path().join("link")).expect("symlink");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = SecretKey::load_or_create(&dir.path().join("link"), true).expect_err("link");
        assert!(e.to_string().contains("regular file"), "{e}");
    }
}
