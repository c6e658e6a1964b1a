//! Secrets for receivers: referenced in config as `{ file = "path" }` or `{ env = "VAR" }`,
//! loaded once at validation, and held in a [`Secret`] whose `Debug` never shows the value.
//! Receivers defined through the API give theirs as `{"value": ...}` (sealed into the
//! collector's secret store, see `api_secrets`) and keep it with `{"stored": true}`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::NotifyConfigError;

/// Where a secret comes from. Exactly one of `file`, `env` (configuration file), `value` and
/// `stored` (API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// A file holding the secret (trailing newline ignored); relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// An environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The secret itself, as an API request gives it. Never serialized: what is stored
    /// and shown says `stored` instead.
    #[serde(default, skip_serializing)]
    pub value: Option<Secret>,
    /// The secret is in the collector's secret store, sealed for this receiver and field.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stored: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SecretRef {
    pub fn file(path: impl Into<String>) -> SecretRef {
        SecretRef {
            file: Some(path.into()),
            ..SecretRef::default()
        }
    }

    pub fn env(var: impl Into<String>) -> SecretRef {
        SecretRef {
            env: Some(var.into()),
            ..SecretRef::default()
        }
    }

    /// A secret given as its value (API requests).
    pub fn value(value: Secret) -> SecretRef {
        SecretRef {
            value: Some(value),
            ..SecretRef::default()
        }
    }

    /// A secret kept in the collector's secret store.
    pub fn stored() -> SecretRef {
        SecretRef {
            stored: true,
            ..SecretRef::default()
        }
    }

    /// Whether this is a reference the configuration file may hold (a file or a variable).
    pub fn is_config_reference(&self) -> bool {
        self.value.is_none() && !self.stored
    }

    /// Loads the secret. Errors name the file or variable, never the value.
    pub fn load(
        &self,
        receiver: &str,
        field: &str,
        base_dir: &Path,
    ) -> Result<Secret, NotifyConfigError> {
        let value = match (&self.file, &self.env, &self.value, self.stored) {
            (Some(file), None, None, false) => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    NotifyConfigError::new(
                        receiver,
                        format!("{field}: cannot read secret file {}: {e}", path.display()),
                    )
                })?;
                text.trim_end_matches(['\n', '\r']).to_owned()
            }
            (None, Some(var), None, false) => std::env::var(var).map_err(|_| {
                NotifyConfigError::new(
                    receiver,
                    format!("{field}: environment variable {var} is not set (or not UTF-8)"),
                )
            })?,
            (None, None, Some(value), false) => value.expose().to_owned(),
            (None, None, None, true) => {
                return Err(NotifyConfigError::new(
                    receiver,
                    format!(
                        "{field}: the secret is in the collector's secret store and was not \
                         opened"
                    ),
                ))
            }
            _ => {
                return Err(NotifyConfigError::new(
                    receiver,
                    format!("{field}: give exactly one of `file` and `env`"),
                ))
            }
        };
        if value.is_empty() {
            return Err(NotifyConfigError::new(
                receiver,
                format!("{field}: the secret is empty"),
            ));
        }
        Ok(Secret::new(value))
    }
}

pub use mcpwatch_common::secret::Secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_secret_redacted_and_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k"), "s3cr3t\n").expect("write");
        let s = SecretRef::file("k")
            .load("r", "key", dir.path())
            .expect("load");
        assert_eq!(s.expose(), "s3cr3t");
        assert!(!format!("{s:?} {s}").contains("s3cr3t"));
        let both = SecretRef {
            file: Some("k".into()),
            env: Some("X".into()),
            ..SecretRef::default()
        };
        assert!(both.load("r", "key", dir.path()).is_err());
        let err = SecretRef::env("MCPWATCH_TEST_UNSET_VAR_1")
            .load("r", "key", dir.path())
            .expect_err("unset");
        assert!(err.to_string().contains("MCPWATCH_TEST_UNSET_VAR_1"));
        std::fs::write(dir.path().join("e"), "\n").expect("write");
        assert!(SecretRef::file("e").load("r", "key", dir.path()).is_err());
    }
}
