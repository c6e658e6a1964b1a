//! Slack incoming webhook with a Block Kit message (header, one section with fields per
//! alert, context) and a plain `text` fallback. At most one message per second per webhook
//! (Slack's documented limit): sends through one receiver are serialised and spaced by
//! [`MIN_INTERVAL`] measured from the end of the previous request. A 429 honours
//! `Retry-After` (and also delays the next send); 5xx and transport errors are retried; other
//! 4xx are permanent.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::chat_webhook::ChatWebhook;
use super::destination::Destinations;
use super::secret::SecretRef;
use super::{http, Notification, NotifyConfigError, SendError, Severity};

/// Minimum spacing between two messages to one webhook.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Alerts shown in one message; Slack allows 50 blocks, and each alert takes one.
pub const MAX_ALERTS_SHOWN: usize = 20;
/// Slack's limits: header text 150, section text 3000, field text 2000, 10 fields.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const MAX_FIELDS: usize = 10;

/// `type = "slack"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfigRaw {
    pub name: String,
    /// Owner scope (`{team="a"}`): the receiver only ever gets alerts about hosts inside
    /// it, and users whose `receivers:write` covers it may change it. Default: fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The incoming-webhook URL (it embeds a token, hence a secret).
    pub webhook_url: SecretRef,
    /// Per-request timeout in seconds (default 10).
    pub timeout_secs: Option<u64>,
}

#[derive(Debug)]
pub struct SlackReceiver {
    hook: ChatWebhook,
    /// Earliest instant the next message may be sent; the lock also serialises sends.
    next_allowed: Mutex<Option<Instant>>,
}

impl SlackReceiver {
    pub fn new(
        raw: SlackConfigRaw,
        base_dir: &Path,
        destinations: &Destinations,
    ) -> Result<Self, NotifyConfigError> {
        let hook = ChatWebhook::new(
            raw.name,
            &raw.webhook_url,
            raw.timeout_secs,
            base_dir,
            destinations,
        )?;
        Ok(SlackReceiver {
            hook,
            next_allowed: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        self.hook.name()
    }

    pub async fn send(&self, batch: &[Notification]) -> Result<(), SendError> {
        let body = serde_json::to_vec(&message(batch))
            .map_err(|e| SendError::permanent(format!("cannot encode message: {e}")))?;
        let mut next = self.next_allowed.lock().await;
        if let Some(at) = *next {
            tokio::time::sleep_until(at).await;
        }
        let result = self.hook.post(body).await;
        let now = Instant::now();
        let mut at = now + MIN_INTERVAL;
        let outcome = result.and_then(|reply| http::classify("slack", &reply));
        if let Err(SendError {
            kind: super::SendErrorKind::Retry { after: Some(after) },
            ..
        }) = &outcome
        {
            at = at.max(now + *after);
        }
        *next = Some(at);
        outcome
    }
}

/// Escapes `&`, `<` and `>` for Slack mrkdwn and plain text.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn emoji(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => ":red_circle:",
        Severity::High => ":large_orange_circle:",
        Severity::Medium => ":large_yellow_circle:",
        Severity::Low => ":white_circle:",
    }
}

/// The Block Kit message for a batch.
pub fn message(batch: &[Notification]) -> Value {
    let title = super::title(batch);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": super::truncate_chars(&title, HEADER_MAX), "emoji": true }
    })];
    for n in batch.iter().take(MAX_ALERTS_SHOWN) {
        let mut text = format!("{} *{}*", emoji(n.severity), escape(&n.summary));
        if !n.description.is_empty() {
            text.push('\n');
            text.push_str(&escape(&n.description));
        }
        if let Some(url) = &n.runbook_url {
            text.push_str(&format!("\n<{}|Runbook>", escape(url)));
        }
        let mut fields = vec![
            format!("*Status*\n{}", n.status.as_str()),
            format!("*Severity*\n{}", n.severity.as_str()),
            format!("*Rule*\n{}", escape(&n.rule)),
        ];
        if let Some(v) = n.value.filter(|v| v.is_finite()) {
            fields.push(format!("*Value*\n{v}"));
        }
        for (k, v) in &n.labels {
            if fields.len() >= MAX_FIELDS {
                break;
            }
            fields.push(format!("*{}*\n{}", escape(k), escape(v)));
        }
        let fields: Vec<Value> = fields
            .iter()
            .map(|f| json!({ "type": "mrkdwn", "text": super::truncate_chars(f, FIELD_MAX) }))
            .collect();
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": super::truncate_chars(&text, SECTION_MAX) },
            "fields": fields,
        }));
    }
    let mut context = format!(
        "mcpwatch · group {} · since {}",
        escape(batch.first().map(|n| n.group_key.as_str()).unwrap_or("")),
        batch
            .iter()
            .map(|n| n.starts_at_ms)
            .min()
            .map(super::rfc3339_ms)
            .unwrap_or_default()
    );
    if batch.len() > MAX_ALERTS_SHOWN {
        context.push_str(&format!(
            " · and {} more alerts",
            batch.len() - MAX_ALERTS_SHOWN
        ));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": super::truncate_chars(&context, FIELD_MAX) }]
    }));
    json!({ "text": escape(&title), "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::sample;
    use crate::notify::Status;

    #[test]
    fn notify_slack_message_limits() {
        let batch: Vec<_> = (0..30)
            .map(|_| sample(Status::Firing, Severity::Critical))
            .collect();
        let m = message(&batch);
        let blocks = m["blocks"].as_array().expect("blocks");
        assert_eq!(blocks.len(), MAX_ALERTS_SHOWN + 2);
        assert!(m["text"]
            .as_str()
            .expect("text")
            .starts_with("[FIRING:critical]"));
        assert!(blocks[1]["text"]["text"]
            .as_str()
            .expect("section")
            .contains("&lt;b&gt;hot&lt;/b&gt; &amp; busy"));
    }
}
