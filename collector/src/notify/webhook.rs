//! Generic JSON webhook, signed with HMAC-SHA256.
//!
//! Body (schema version `"1"`):
//! ```json
//! { "version": "1", "status": "firing|resolved|acknowledged", "group_key": "...",
//!   "sent_at_ms": 1700000000000,
//!   "alerts": [ { "fingerprint": "...", "status": "firing", "severity": "critical",
//!                 "rule": "...", "summary": "...", "description": "...",
//!                 "runbook_url": "https://..." | null, "labels": { "k": "v" },
//!                 "value": 97.5 | null, "starts_at_ms": 1700000000000,
//!                 "ends_at_ms": 1700000000000 | null, "group_key": "..." } ] }
//! ```
//! Headers: `X-Mcpwatch-Signature: sha256=<lowercase hex HMAC-SHA256(secret, raw body)>` and
//! `X-Mcpwatch-Timestamp: <sent_at_ms>` (the same value is inside the signed body, so a
//! receiver can reject stale replays). 2xx is success; 408, 429 (honouring `Retry-After`) and
//! 5xx are retried; other statuses are permanent.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::destination::Destinations;
use super::secret::{Secret, SecretRef};
use super::{http, Notification, NotifyConfigError, SendError, Status};

pub const SIGNATURE_HEADER: &str = "X-Mcpwatch-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Mcpwatch-Timestamp";
pub const SCHEMA_VERSION: &str = "1";

/// `type = "webhook"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfigRaw {
    pub name: String,
    /// Owner scope (`{team="a"}`): the receiver only ever gets alerts about hosts inside
    /// it, and users whose `receivers:write` covers it may change it. Default: fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `http://` or `https://` URL.
    pub url: String,
    /// The HMAC key.
    pub secret: SecretRef,
    /// Per-request timeout in seconds (default 10).
    pub timeout_secs: Option<u64>,
}

/// The JSON body sent to a generic webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookPayload {
    pub version: String,
    pub status: Status,
    pub group_key: String,
    pub sent_at_ms: i64,
    pub alerts: Vec<Notification>,
}

pub struct WebhookReceiver {
    name: String,
    url: String,
    secret: Secret,
    client: reqwest::Client,
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl WebhookReceiver {
    pub fn new(
        raw: WebhookConfigRaw,
        base_dir: &Path,
        destinations: &Destinations,
    ) -> Result<Self, NotifyConfigError> {
        let name = raw.name;
        check_http_url(&name, "url", &raw.url, destinations)?;
        let secret = raw.secret.load(&name, "secret", base_dir)?;
        let timeout = super::timeout_from(&name, raw.timeout_secs, 10)?;
        let client = http::client(&name, timeout, destinations)?;
        Ok(WebhookReceiver {
            name,
            url: raw.url,
            secret,
            client,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn send(&self, batch: &[Notification]) -> Result<(), SendError> {
        let sent_at_ms = crate::now_ms();
        let payload = WebhookPayload {
            version: SCHEMA_VERSION.to_owned(),
            status: super::batch_status(batch),
            group_key: batch
                .first()
                .map(|n| n.group_key.clone())
                .unwrap_or_default(),
            sent_at_ms,
            alerts: batch.to_vec(),
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| SendError::permanent(format!("cannot encode payload: {e}")))?;
        let signature = sign(self.secret.expose().as_bytes(), &body);
        let reply = http::post_json(
            &self.client,
            &self.url,
            body,
            &[
                (SIGNATURE_HEADER, signature),
                (TIMESTAMP_HEADER, sent_at_ms.to_string()),
            ],
        )
        .await?;
        http::classify("webhook", &reply)
    }
}

/// `sha256=<hex HMAC-SHA256(key, body)>`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", mcpwatch_common::hex::encode(tag.as_ref()))
}

/// Rejects anything but an absolute http(s) URL. The URL itself is not echoed (it may hold a
/// token).
/// An http(s) URL with a host, whose literal address (if it is one) `destinations` allows.
pub(crate) fn check_http_url(
    name: &str,
    field: &str,
    url: &str,
    destinations: &Destinations,
) -> Result<(), NotifyConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| NotifyConfigError::new(name, format!("{field} is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(NotifyConfigError::new(
            name,
            format!("{field} must be an http:// or https:// URL with a host"),
        ));
    }
    destinations
        .check_url(url)
        .map_err(|why| NotifyConfigError::new(name, format!("{field}: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_hmac_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn notify_webhook_url_checked() {
        let any = Destinations::Any;
        assert!(check_http_url("r", "url", "ftp://x/", &any).is_err());
        assert!(check_http_url("r", "url", "nope", &any).is_err());
        assert!(check_http_url("r", "url", "http://127.0.0.1:9/h", &any).is_ok());
        let public = Destinations::Public;
        let e = check_http_url("r", "url", "http://127.0.0.1:9/h", &public).expect_err("loopback");
        assert!(e.reason.starts_with("url: 127.0.0.1"), "{e}");
    }
}
