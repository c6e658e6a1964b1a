//! How a receiver is shown over the API: its non-secret settings, each secret only as
//! where it is read from, its origin, whether it runs, and its owner scope.

use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::receivers::ReceiverConfigs;
use crate::alerting::stored_receivers::StoredReceiver;
use crate::notify::{ReceiverConfigRaw, SecretRef};

/// A receiver with its settings; secrets appear only as where they are read from.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiverView {
    pub name: String,
    /// `email`, `slack`, `pagerduty`, `discord` or `webhook`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The non-secret settings; each secret as where it is read from (`{"file": PATH}` or
    /// `{"env": VAR}` in the configuration, `{"stored": true}` for the API's), never its
    /// value.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// `config` (the configuration file; read-only here) or `api` (defined through this
    /// API).
    pub origin: String,
    /// Whether notifications are being sent through it. An API receiver that could not be
    /// loaded at startup (say, its secret file is gone) is not, until it is changed.
    pub active: bool,
    /// When an API receiver was last changed.
    pub updated_ms: Option<i64>,
    /// Its owner scope (`{team="a"}`): it only gets alerts about hosts inside it. `None`:
    /// fleet-wide.
    pub owner: Option<String>,
}

/// Where a secret is read from (never the secret itself).
pub(super) fn secret_ref(s: &SecretRef) -> Value {
    match (&s.file, &s.env, s.stored) {
        (Some(f), None, false) => json!({ "file": f }),
        (None, Some(e), false) => json!({ "env": e }),
        (None, None, true) => json!({ "stored": true }),
        _ => json!("redacted"),
    }
}

pub(super) fn receiver_settings(raw: &ReceiverConfigRaw) -> Value {
    use crate::notify::email::TlsMode;
    match raw {
        ReceiverConfigRaw::Email(c) => json!({
            "host": c.host,
            "port": c.port,
            "tls": c.tls.map(|t| match t {
                TlsMode::Starttls => "starttls",
                TlsMode::Tls => "tls",
                TlsMode::None => "none",
            }),
            "username": c.username,
            "password": c.password.as_ref().map(secret_ref),
            "from": c.from,
            "to": c.to,
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::Slack(c) => json!({
            "webhook_url": secret_ref(&c.webhook_url),
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::PagerDuty(c) => json!({
            "routing_key": secret_ref(&c.routing_key),
            "url": c.url,
            "source": c.source,
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::Discord(c) => json!({
            "webhook_url": secret_ref(&c.webhook_url),
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::Teams(c) => json!({
            "webhook_url": secret_ref(&c.webhook_url),
            "timeout_secs": c.timeout_secs,
        }),
        ReceiverConfigRaw::Webhook(c) => json!({
            "url": c.url,
            "secret": secret_ref(&c.secret),
            "timeout_secs": c.timeout_secs,
        }),
    }
}

pub(super) fn config_view(set: &ReceiverConfigs, raw: &ReceiverConfigRaw) -> ReceiverView {
    ReceiverView {
        name: raw.name().to_owned(),
        kind: raw.kind().to_owned(),
        settings: receiver_settings(raw),
        origin: "config".to_owned(),
        active: set
            .dispatcher
            .as_ref()
            .is_none_or(|d| d.is_running(raw.name())),
        updated_ms: None,
        owner: raw.owner().map(str::to_owned),
    }
}

pub(super) fn api_view(set: &ReceiverConfigs, s: &StoredReceiver) -> ReceiverView {
    let (kind, settings, owner) = match s.raw() {
        Ok(raw) => (
            raw.kind().to_owned(),
            receiver_settings(&raw),
            raw.owner().map(str::to_owned),
        ),
        Err(_) => ("unknown".to_owned(), Value::Null, None),
    };
    ReceiverView {
        name: s.name.clone(),
        kind,
        settings,
        origin: "api".to_owned(),
        active: set
            .dispatcher
            .as_ref()
            .is_some_and(|d| d.is_running(&s.name)),
        updated_ms: Some(s.updated_ms),
        owner,
    }
}
