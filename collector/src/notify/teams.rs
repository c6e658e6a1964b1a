//! Microsoft Teams through a Workflows incoming webhook ("When a Teams webhook request is
//! received"): a `message` whose one attachment is an Adaptive Card (version 1.5, the
//! version Teams renders) with the same content as the Slack message — a title, per alert its
//! summary, description, runbook and a fact set, and a context line. Teams refuses a message
//! over 28 KB, so the card shows fewer alerts (at least one, its texts shortened) until it
//! fits. A 429 honours `Retry-After`; 5xx and transport errors are retried; other 4xx are
//! permanent.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::chat_webhook::ChatWebhook;
use super::destination::Destinations;
use super::secret::SecretRef;
use super::{http, Notification, NotifyConfigError, SendError, Severity, Status};

/// Teams's documented limit on one message, JSON included.
pub const MAX_MESSAGE_BYTES: usize = 28 * 1024;
/// Alerts shown in one card at most (as Slack).
pub const MAX_ALERTS_SHOWN: usize = 20;
/// Facts per alert (status, severity, rule, value, then labels).
const MAX_FACTS: usize = 12;
/// Text lengths of the full-size card; halved while the message is too big.
const TEXT_MAX: usize = 2000;
const FACT_MAX: usize = 256;

/// `type = "teams"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfigRaw {
    pub name: String,
    /// Owner scope (`{team="a"}`): the receiver only ever gets alerts about hosts inside
    /// it, and users whose `receivers:write` covers it may change it. Default: fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The workflow's webhook URL (it embeds a signature, hence a secret).
    pub webhook_url: SecretRef,
    /// Per-request timeout in seconds (default 10).
    pub timeout_secs: Option<u64>,
}

#[derive(Debug)]
pub struct TeamsReceiver {
    hook: ChatWebhook,
}

impl TeamsReceiver {
    pub fn new(
        raw: TeamsConfigRaw,
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
        Ok(TeamsReceiver { hook })
    }

    pub fn name(&self) -> &str {
        self.hook.name()
    }

    pub async fn send(&self, batch: &[Notification]) -> Result<(), SendError> {
        let body = encode(batch)?;
        let reply = self.hook.post(body).await?;
        http::classify("teams", &reply)
    }
}

/// The message as sent: the largest card (most alerts, longest texts) within
/// [`MAX_MESSAGE_BYTES`].
pub fn encode(batch: &[Notification]) -> Result<Vec<u8>, SendError> {
    let mut shown = batch.len().clamp(1, MAX_ALERTS_SHOWN);
    let mut text_max = TEXT_MAX;
    loop {
        let body = serde_json::to_vec(&message(batch, shown, text_max))
            .map_err(|e| SendError::permanent(format!("cannot encode message: {e}")))?;
        if body.len() <= MAX_MESSAGE_BYTES {
            return Ok(body);
        }
        if shown > 1 {
            shown = shown.div_ceil(2);
        } else if text_max > 64 {
            text_max /= 2;
        } else {
            return Err(SendError::permanent(
                "the Teams card does not fit in 28 KB even with one shortened alert",
            ));
        }
    }
}

/// Backslash-escapes the Markdown Teams renders in text blocks and facts, so a label value
/// cannot turn into a link or a heading.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '`' | '~' | '<' | '>' | '!' | '|'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Adaptive Card text colour by severity, `good` once resolved.
fn color(n: &Notification) -> &'static str {
    if n.status == Status::Resolved {
        return "Good";
    }
    match n.severity {
        Severity::Critical | Severity::High => "Attention",
        Severity::Medium => "Warning",
        Severity::Low => "Default",
    }
}

fn text(s: &str, max: usize) -> String {
    escape(&super::truncate_chars(s, max))
}

/// The card for the first `shown` alerts of a batch, texts cut at `text_max` characters.
pub fn message(batch: &[Notification], shown: usize, text_max: usize) -> Value {
    let title = super::title(batch);
    let mut body = vec![json!({
        "type": "TextBlock", "text": text(&title, 150), "weight": "Bolder",
        "size": "Medium", "wrap": true,
    })];
    for n in batch.iter().take(shown) {
        let mut items = vec![json!({
            "type": "TextBlock", "text": text(&n.summary, text_max), "weight": "Bolder",
            "color": color(n), "wrap": true,
        })];
        if !n.description.is_empty() {
            items.push(
                json!({ "type": "TextBlock", "text": text(&n.description, text_max),
                "wrap": true }),
            );
        }
        let mut facts = vec![
            ("Status".to_owned(), n.status.as_str().to_owned()),
            ("Severity".to_owned(), n.severity.as_str().to_owned()),
            ("Rule".to_owned(), n.rule.clone()),
        ];
        if let Some(v) = n.value.filter(|v| v.is_finite()) {
            facts.push(("Value".to_owned(), v.to_string()));
        }
        for (k, v) in &n.labels {
            if facts.len() >= MAX_FACTS {
                break;
            }
            facts.push((k.clone(), v.clone()));
        }
        let fact_max = FACT_MAX.min(text_max);
        let facts: Vec<Value> = facts
            .iter()
            .map(|(k, v)| json!({ "title": text(k, fact_max), "value": text(v, fact_max) }))
            .collect();
        items.push(json!({ "type": "FactSet", "facts": facts }));
        if let Some(url) = n
            .runbook_url
            .as_deref()
            .filter(|u| u.starts_with("https://"))
        {
            items.push(json!({ "type": "ActionSet", "actions": [
                { "type": "Action.OpenUrl", "title": "Runbook", "url": url }
            ]}));
        }
        body.push(json!({ "type": "Container", "separator": true, "items": items }));
    }
    let mut context = format!(
        "mcpwatch · group {} · since {}",
        batch.first().map(|n| n.group_key.as_str()).unwrap_or(""),
        batch
            .iter()
            .map(|n| n.starts_at_ms)
            .min()
            .map(super::rfc3339_ms)
            .unwrap_or_default()
    );
    if batch.len() > shown {
        context.push_str(&format!(" · and {} more alerts", batch.len() - shown));
    }
    body.push(json!({
        "type": "TextBlock", "text": text(&context, text_max), "isSubtle": true,
        "size": "Small", "wrap": true,
    }));
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.5",
                "body": body,
            }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::sample;

    #[test]
    fn notify_teams_card_fits_and_escapes() {
        let mut big = sample(Status::Firing, Severity::Critical);
        big.description = "y".repeat(50_000);
        big.summary = "[click](https://evil.example) **now**".into();
        let batch: Vec<_> = (0..40).map(|_| big.clone()).collect();
        let body = encode(&batch).expect("fits");
        assert!(body.len() <= MAX_MESSAGE_BYTES, "{} bytes", body.len());
        let v: Value = serde_json::from_slice(&body).expect("json");
        let card = &v["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        let summary = card["body"][1]["items"][0]["text"].as_str().expect("text");
        assert!(summary.starts_with("\\[click\\]\\(https://evil.example\\) \\*\\*now"));
        let last = card["body"]
            .as_array()
            .expect("body")
            .last()
            .cloned()
            .unwrap_or_default();
        assert!(last["text"]
            .as_str()
            .unwrap_or_default()
            .contains("more alerts"));
    }
}
