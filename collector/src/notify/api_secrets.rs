//! The secrets of receivers defined through the API: given once as `{"value": ...}`, sealed
//! with the collector's [`SecretKey`] and kept in the database apart from the definition
//! (`receiver_secrets`), never shown again; `{"stored": true}` keeps the stored one. The
//! API may not read files or environment variables: those belong to the configuration
//! file, and a reference to them would let a `receivers:write` holder send, say, the SMTP
//! password of a configured receiver to a server of their choosing. A stored secret is
//! bound to the destination it was given for (see [`destination`]): a definition that
//! sends elsewhere must be given the secret again.

use std::path::Path;
use std::sync::Arc;

use super::secret_key::{Binding, SecretKey};
use super::{NotifyConfigError, Receiver, ReceiverConfigRaw, SecretRef};

/// What receivers defined through the API need: the key that seals their secrets, and
/// where they may send (`[api] receiver_url_allow`; default public addresses).
#[derive(Debug, Clone)]
pub struct ApiSecrets {
    pub key: Arc<SecretKey>,
    pub destinations: super::Destinations,
}

/// One sealed secret of a receiver, as stored in `receiver_secrets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The definition's field (`secret`, `routing_key`, `password`, `webhook_url`).
    pub field: String,
    /// Where the definition sent when the secret was given ([`destination`]).
    pub destination: String,
    /// Nonce, ciphertext and tag ([`SecretKey::seal`]).
    pub sealed: Vec<u8>,
}

/// An API receiver ready to store and start.
#[derive(Debug)]
pub struct PreparedReceiver {
    /// The definition to store: every secret as `{"stored": true}`.
    pub definition: ReceiverConfigRaw,
    /// Its secrets, sealed.
    pub secrets: Vec<SealedSecret>,
    /// The receiver, built with the secrets' values.
    pub receiver: Receiver,
}

/// Where a receiver's secrets go: the whole webhook or PagerDuty URL (scheme, host, port,
/// path and query — a shared host can serve other tenants under other paths); the SMTP
/// server and TLS mode of an email receiver (its password is sent there); for Slack and
/// Discord the secret is the URL itself, so it cannot be sent elsewhere.
pub fn destination(raw: &ReceiverConfigRaw) -> String {
    use super::email::TlsMode;
    fn origin(url: &str) -> String {
        match reqwest::Url::parse(url) {
            Ok(mut u) if u.origin().is_tuple() => {
                // `prepare` refuses credentials in the URL; the fragment is never sent.
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_fragment(None);
                u.to_string()
            }
            // Not an http(s) URL: building the receiver refuses it; bind to the text.
            _ => url.to_owned(),
        }
    }
    match raw {
        ReceiverConfigRaw::Email(c) => {
            let scheme = match c.tls_mode() {
                TlsMode::Starttls => "smtp+starttls",
                TlsMode::Tls => "smtps",
                TlsMode::None => "smtp",
            };
            format!(
                "{scheme}://{}:{}",
                c.host.to_ascii_lowercase(),
                c.port_or_default()
            )
        }
        ReceiverConfigRaw::Slack(_) => "the Slack webhook URL itself".to_owned(),
        ReceiverConfigRaw::Discord(_) => "the Discord webhook URL itself".to_owned(),
        ReceiverConfigRaw::Teams(_) => "the Teams workflow URL itself".to_owned(),
        ReceiverConfigRaw::PagerDuty(c) => {
            origin(c.url.as_deref().unwrap_or(super::pagerduty::DEFAULT_URL))
        }
        ReceiverConfigRaw::Webhook(c) => origin(&c.url),
    }
}

fn refused(name: &str, field: &str) -> NotifyConfigError {
    NotifyConfigError::new(
        name,
        format!(
            "{field}: a receiver defined through the API takes its secret as {{\"value\": \
             SECRET}} (sealed in the collector's secret store, never shown again) or \
             {{\"stored\": true}} to keep the one stored; files and environment variables \
             belong to the configuration file"
        ),
    )
}

fn rebind(name: &str, field: &str, was: &str, now: &str) -> NotifyConfigError {
    NotifyConfigError::new(
        name,
        format!(
            "{field}: the stored secret was given for {was} and this definition sends to \
             {now}; give the secret again as {{\"value\": SECRET}}"
        ),
    )
}

/// A webhook or PagerDuty URL with `user:password@` would keep a credential in the
/// definition, stored and shown in clear: refused (give it as the receiver's secret).
fn refuse_url_credentials(raw: &ReceiverConfigRaw) -> Result<(), NotifyConfigError> {
    let url = match raw {
        ReceiverConfigRaw::Webhook(c) => Some(c.url.as_str()),
        ReceiverConfigRaw::PagerDuty(c) => c.url.as_deref(),
        _ => None,
    };
    let with_credentials = url
        .and_then(|u| reqwest::Url::parse(u).ok())
        .is_some_and(|u| !u.username().is_empty() || u.password().is_some());
    if with_credentials {
        return Err(NotifyConfigError::new(
            raw.name(),
            "url: credentials in the URL (user:password@) would be stored and shown in \
             clear; a receiver defined through the API takes its credential as its secret",
        ));
    }
    Ok(())
}

impl ApiSecrets {
    /// Validates a definition from an API request, given the secrets stored for that name
    /// (none for a new receiver): each secret is a new value (sealed now) or `stored`
    /// (kept, only when the definition still sends where it did). Errors name fields and
    /// destinations, never a secret.
    pub fn prepare(
        &self,
        raw: ReceiverConfigRaw,
        stored: &[SealedSecret],
    ) -> Result<PreparedReceiver, NotifyConfigError> {
        let name = raw.name().to_owned();
        refuse_url_credentials(&raw)?;
        let dest = destination(&raw);
        let mut definition = raw.clone();
        let mut with_values = raw;
        let mut secrets = Vec::new();
        let pairs = definition
            .secret_refs_mut()
            .into_iter()
            .zip(with_values.secret_refs_mut());
        for ((field, kept), (_, used)) in pairs {
            let binding = Binding {
                receiver: &name,
                field,
                destination: &dest,
            };
            let reference = kept.file.is_some() || kept.env.is_some();
            match (reference, &kept.value, kept.stored) {
                (false, Some(value), false) => {
                    let sealed = self
                        .key
                        .seal(binding, value)
                        .map_err(|e| NotifyConfigError::new(&name, format!("{field}: {e}")))?;
                    secrets.push(SealedSecret {
                        field: field.to_owned(),
                        destination: dest.clone(),
                        sealed,
                    });
                }
                (false, None, true) => {
                    let old = self.open(binding, stored)?;
                    *used = SecretRef::value(old.1);
                    secrets.push(old.0.clone());
                }
                _ => return Err(refused(&name, field)),
            }
            *kept = SecretRef::stored();
        }
        let receiver = Receiver::from_raw(with_values, Path::new(""), &self.destinations)?;
        Ok(PreparedReceiver {
            definition,
            secrets,
            receiver,
        })
    }

    /// Builds a stored API receiver (at startup, for a test-send) from its stored definition
    /// and sealed secrets. A definition changed behind the collector's back to send
    /// elsewhere no longer opens its secrets.
    pub fn build_stored(
        &self,
        mut raw: ReceiverConfigRaw,
        stored: &[SealedSecret],
    ) -> Result<Receiver, NotifyConfigError> {
        let name = raw.name().to_owned();
        let dest = destination(&raw);
        for (field, r) in raw.secret_refs_mut() {
            if !r.stored || r.value.is_some() || r.file.is_some() || r.env.is_some() {
                return Err(NotifyConfigError::new(
                    &name,
                    format!(
                        "{field}: the stored definition does not keep this secret in the \
                         collector's secret store (defined before secrets were sealed?); \
                         give it again with PUT as {{\"value\": SECRET}}"
                    ),
                ));
            }
            let binding = Binding {
                receiver: &name,
                field,
                destination: &dest,
            };
            *r = SecretRef::value(self.open(binding, stored)?.1);
        }
        Receiver::from_raw(raw, Path::new(""), &self.destinations)
    }

    /// The stored secret for `binding`'s field, opened, if it was given for the same
    /// destination.
    fn open<'s>(
        &self,
        binding: Binding<'_>,
        stored: &'s [SealedSecret],
    ) -> Result<(&'s SealedSecret, super::Secret), NotifyConfigError> {
        let name = binding.receiver;
        let field = binding.field;
        let old = stored.iter().find(|s| s.field == field).ok_or_else(|| {
            NotifyConfigError::new(
                name,
                format!("{field}: no secret is stored; give it as {{\"value\": SECRET}}"),
            )
        })?;
        if old.destination != binding.destination {
            return Err(rebind(name, field, &old.destination, binding.destination));
        }
        let value = self
            .key
            .open(binding, &old.sealed)
            .map_err(|e| NotifyConfigError::new(name, format!("{field}: {e}")))?;
        Ok((old, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::pagerduty::PagerDutyConfigRaw;
    use crate::notify::webhook::WebhookConfigRaw;
    use crate::notify::Secret;

    fn hook(url: &str, secret: SecretRef) -> ReceiverConfigRaw {
        ReceiverConfigRaw::Webhook(WebhookConfigRaw {
            name: "h".into(),
            owner: None,
            url: url.into(),
            secret,
            timeout_secs: None,
        })
    }

    fn api(dir: &Path) -> ApiSecrets {
        ApiSecrets {
            key: Arc::new(SecretKey::load_or_create(&dir.join("key"), true).expect("key")),
            destinations: crate::notify::Destinations::only(&["192.0.2.0/24".into()])
                .expect("valid"),
        }
    }

    #[test]
    fn notify_api_secrets_sealed_kept_and_bound_to_their_destination() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let api = api(tmp.path());
        let value = SecretRef::value(Secret::new("hmac-value-91"));
        let first = api
            .prepare(hook("http://192.0.2.1:9/a", value.clone()), &[])
            .expect("prepare");
        assert_eq!(first.secrets.len(), 1);
        assert_eq!(first.secrets[0].destination, "http://192.0.2.1:9/a");
        let stored_json = serde_json::to_string(&first.definition).expect("json");
        assert!(
            stored_json.contains(r#""secret":{"stored":true}"#),
            "{stored_json}"
        );
        assert!(!stored_json.contains("hmac-value-91"));

        // Kept for the same URL (its fragment aside); rebuilt from what is stored.
        let kept = api
            .prepare(
                hook("http://192.0.2.1:9/a#x", SecretRef::stored()),
                &first.secrets,
            )
            .expect("kept");
        assert_eq!(kept.secrets, first.secrets);
        api.build_stored(kept.definition.clone(), &kept.secrets)
            .expect("rebuilt");

        // Another host, scheme, port, path or query: the secret must be given again.
        for elsewhere in [
            "http://192.0.2.1:9/b",
            "http://192.0.2.1:9/a?tenant=2",
            "http://192.0.2.7:9/a",
            "https://192.0.2.1:9/a",
            "http://192.0.2.1:10/a",
        ] {
            let e = api
                .prepare(hook(elsewhere, SecretRef::stored()), &first.secrets)
                .expect_err(elsewhere);
            assert!(e.reason.contains("give the secret again"), "{e}");
            // A definition edited behind the collector's back does not open it either.
            let mut moved = first.definition.clone();
            if let ReceiverConfigRaw::Webhook(w) = &mut moved {
                w.url = elsewhere.into();
            }
            let mut forged = first.secrets.clone();
            forged[0].destination = destination(&moved);
            assert!(api.build_stored(moved, &forged).is_err(), "{elsewhere}");
        }
        api.prepare(hook("http://192.0.2.7:9/a", value.clone()), &first.secrets)
            .expect("a new value for a new destination");

        // Files, variables, nothing, or a stored secret that is not there: refused.
        for bad in [
            SecretRef::file("smtp-password"),
            SecretRef::env("HOME"),
            SecretRef::default(),
        ] {
            let e = api
                .prepare(hook("http://192.0.2.1:9/a", bad.clone()), &[])
                .expect_err("refused");
            assert!(e.reason.contains("configuration file"), "{bad:?}: {e}");
        }
        let e = api
            .prepare(hook("http://u:p@192.0.2.1:9/a", value.clone()), &[])
            .expect_err("credentials in the URL");
        assert!(e.reason.contains("user:password@"), "{e}");
        let e = api
            .prepare(hook("http://192.0.2.1:9/a", SecretRef::stored()), &[])
            .expect_err("nothing stored");
        assert!(e.reason.contains("no secret is stored"), "{e}");
        // A definition stored before secrets were sealed must be given again.
        let e = api
            .build_stored(hook("http://192.0.2.1:9/a", SecretRef::file("k")), &[])
            .expect_err("old definition");
        assert!(e.reason.contains("PUT"), "{e}");
    }

    #[test]
    fn notify_api_secrets_destination_of_each_kind() {
        let pd = ReceiverConfigRaw::PagerDuty(PagerDutyConfigRaw {
            name: "p".into(),
            owner: None,
            routing_key: SecretRef::stored(),
            url: None,
            source: None,
            timeout_secs: None,
        });
        assert_eq!(destination(&pd), "https://events.pagerduty.com/v2/enqueue");
        let mail: ReceiverConfigRaw = serde_json::from_value(serde_json::json!({
            "type": "email", "name": "m", "host": "SMTP.example.com", "tls": "tls",
            "username": "u", "password": {"stored": true}, "from": "a@example.com",
            "to": ["b@example.com"]
        }))
        .expect("email");
        assert_eq!(destination(&mail), "smtps://smtp.example.com:465");
        assert_eq!(
            destination(&hook("file:///etc/x", SecretRef::stored())),
            "file:///etc/x"
        );
    }
}
