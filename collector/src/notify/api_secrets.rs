//! Where receivers defined through the API may read their secrets: files inside one
//! directory (`[alerting] api_secret_dir`) and `MCPWATCH_SECRET_*` environment variables.
//! Receivers in the configuration file are trusted with any file or variable; the API is
//! not (see [`ApiSecrets`]).

use std::path::Path;

use super::{NotifyConfigError, Receiver, ReceiverConfigRaw};

/// Where receivers defined through the API may read their secrets from. Unlike the
/// configuration file, the API is not trusted with the collector's file system or
/// environment: a reference to any file or variable would let a `receivers:write` holder
/// send, say, the CA key or the admin token to a server of their choosing (as a PagerDuty
/// routing key, an SMTP password...). So their secret files must lie inside `dir`, and
/// their variables must start with [`API_SECRET_ENV_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSecrets {
    /// `[alerting] api_secret_dir`: file references are relative to it and stay inside it.
    pub dir: std::path::PathBuf,
    /// Where API receivers may send (`[api] receiver_url_allow`; default public addresses).
    pub destinations: super::Destinations,
}

/// Environment variables an API-defined receiver may read start with this.
pub const API_SECRET_ENV_PREFIX: &str = "MCPWATCH_SECRET_";

impl ApiSecrets {
    /// Checks that every secret of `raw` is one the API may use (see [`ApiSecrets`]).
    /// Errors name the field and the reference, never a value.
    pub fn check(&self, raw: &ReceiverConfigRaw) -> Result<(), NotifyConfigError> {
        let name = raw.name();
        for (field, r) in raw.secret_refs() {
            match (&r.file, &r.env) {
                (Some(file), None) => self.check_file(name, field, file)?,
                (None, Some(var))
                    if !var.starts_with(API_SECRET_ENV_PREFIX)
                        || var.len() == API_SECRET_ENV_PREFIX.len() =>
                {
                    return Err(NotifyConfigError::new(
                        name,
                        format!(
                            "{field}: receivers defined through the API may only read \
                             environment variables named {API_SECRET_ENV_PREFIX}*"
                        ),
                    ));
                }
                // `SecretRef::load` explains what is wrong.
                _ => {}
            }
        }
        Ok(())
    }

    fn check_file(&self, name: &str, field: &str, file: &str) -> Result<(), NotifyConfigError> {
        use std::path::Component;
        let outside = || {
            NotifyConfigError::new(
                name,
                format!(
                    "{field}: receivers defined through the API may only read secret files \
                     inside {} (a relative path without '..')",
                    self.dir.display()
                ),
            )
        };
        let rel = Path::new(file);
        let plain = rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !plain || !rel.components().any(|c| matches!(c, Component::Normal(_))) {
            return Err(outside());
        }
        // Symbolic links must not lead out either. A missing file is reported by `load`.
        let (Ok(dir), Ok(target)) = (self.dir.canonicalize(), self.dir.join(rel).canonicalize())
        else {
            return Ok(());
        };
        if !target.starts_with(&dir) {
            return Err(outside());
        }
        Ok(())
    }

    /// Validates an API-defined receiver: its secret references must be allowed here
    /// and resolve (files relative to [`ApiSecrets::dir`]).
    pub fn build(&self, raw: ReceiverConfigRaw) -> Result<Receiver, NotifyConfigError> {
        self.check(&raw)?;
        Receiver::from_raw(raw, &self.dir, &self.destinations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::webhook::WebhookConfigRaw;
    use crate::notify::SecretRef;

    fn hook(secret: SecretRef) -> ReceiverConfigRaw {
        ReceiverConfigRaw::Webhook(WebhookConfigRaw {
            name: "h".into(),
            url: "http://192.0.2.1:9/x".into(),
            secret,
            timeout_secs: None,
        })
    }

    #[test]
    fn notify_api_secrets_confined_to_their_dir_and_prefix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("secrets");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("k"), "key\n").expect("write");
        std::fs::write(dir.join("sub/k"), "key\n").expect("write");
        std::fs::write(tmp.path().join("outside"), "ca key\n").expect("write");
        let api = ApiSecrets {
            dir: dir.clone(),
            destinations: crate::notify::Destinations::only(&["192.0.2.0/24".into()])
                .expect("valid"),
        };
        for ok in ["k", "sub/k", "./k"] {
            api.build(hook(SecretRef::file(ok)))
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let outside = tmp.path().join("outside").display().to_string();
        for bad in ["../outside", "sub/../../outside", outside.as_str(), "", "."] {
            let e = api.build(hook(SecretRef::file(bad))).expect_err(bad);
            assert!(e.reason.contains("inside"), "{bad}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(tmp.path().join("outside"), dir.join("link"))
                .expect("symlink");
            let e = api
                .build(hook(SecretRef::file("link")))
                .expect_err("a link out of the directory");
            assert!(e.reason.contains("inside"), "{e}");
        }
        // A missing file is reported by name, like in the configuration.
        let e = api
            .build(hook(SecretRef::file("gone")))
            .expect_err("missing");
        assert!(e.reason.contains("cannot read secret file"), "{e}");
        for var in ["HOME", "PATH", API_SECRET_ENV_PREFIX] {
            let e = api.build(hook(SecretRef::env(var))).expect_err(var);
            assert!(e.reason.contains(API_SECRET_ENV_PREFIX), "{var}: {e}");
        }
        let e = api
            .build(hook(SecretRef::env("MCPWATCH_SECRET_TEST_UNSET_1")))
            .expect_err("unset");
        assert!(e.reason.contains("not set"), "{e}");
        assert!(!format!("{e}").contains("ca key"));
    }
}
