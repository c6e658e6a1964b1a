//! Discord webhook: `content` (the title) plus one embed per alert (title, description,
//! colour by severity, fields), within Discord's documented limits. A 429 carries a JSON
//! `retry_after` in seconds (preferred) or a `Retry-After` header; 5xx and transport errors
//! are retried; other 4xx are permanent.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::chat_webhook::ChatWebhook;
use super::destination::Destinations;
use super::secret::SecretRef;
use super::{http, Notification, NotifyConfigError, SendError, Severity, Status};

/// Discord's limits.
pub const CONTENT_MAX: usize = 2000;
pub const MAX_EMBEDS: usize = 10;
pub const EMBED_TITLE_MAX: usize = 256;
pub const EMBED_DESCRIPTION_MAX: usize = 4096;
pub const MAX_FIELDS: usize = 25;
pub const FIELD_NAME_MAX: usize = 256;
pub const FIELD_VALUE_MAX: usize = 1024;
/// Total characters over all embeds of one message.
pub const EMBEDS_TOTAL_MAX: usize = 6000;

/// `type = "discord"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfigRaw {
    pub name: String,
    /// Owner scope (`{team="a"}`): the receiver only ever gets alerts about hosts inside
    /// it, and users whose `receivers:write` covers it may change it. Default: fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The webhook URL (it embeds a token, hence a secret).
    pub webhook_url: SecretRef,
    /// Per-request timeout in seconds (default 10).
    pub timeout_secs: Option<u64>,
}

#[derive(Debug)]
pub struct DiscordReceiver {
    hook: ChatWebhook,
}

impl DiscordReceiver {
    pub fn new(
        raw: DiscordConfigRaw,
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
        Ok(DiscordReceiver { hook })
    }

    pub fn name(&self) -> &str {
        self.hook.name()
    }

    pub async fn send(&self, batch: &[Notification]) -> Result<(), SendError> {
        let body = serde_json::to_vec(&message(batch))
            .map_err(|e| SendError::permanent(format!("cannot encode message: {e}")))?;
        let reply = self.hook.post(body).await?;
        let after = serde_json::from_str::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("retry_after").and_then(Value::as_f64))
            .and_then(http::seconds)
            .or_else(|| http::retry_after_header(&reply.headers));
        http::classify_with("discord", &reply, after)
    }
}

/// Embed colour: red, orange, yellow, grey by severity; green once resolved.
pub fn color(n: &Notification) -> u32 {
    if n.status == Status::Resolved {
        return 0x2E_CC71;
    }
    match n.severity {
        Severity::Critical => 0xE7_4C3C,
        Severity::High => 0xE6_7E22,
        Severity::Medium => 0xF1_C40F,
        Severity::Low => 0x95_A5A6,
    }
}

/// The webhook body for a batch.
pub fn message(batch: &[Notification]) -> Value {
    let mut content = super::title(batch);
    if batch.len() > MAX_EMBEDS {
        content.push_str(&format!(
            " — showing {MAX_EMBEDS} of {} alerts",
            batch.len()
        ));
    }
    let mut embeds = Vec::new();
    for n in batch.iter().take(MAX_EMBEDS) {
        // Keep each embed within an even share of the 6000-character total.
        let budget = EMBEDS_TOTAL_MAX / batch.len().clamp(1, MAX_EMBEDS);
        let title = super::truncate_chars(
            &format!("[{}] {}", n.status.as_str().to_uppercase(), n.summary),
            EMBED_TITLE_MAX.min(budget / 4),
        );
        let mut fields = vec![
            ("Severity".to_owned(), n.severity.as_str().to_owned()),
            ("Rule".to_owned(), n.rule.clone()),
        ];
        if let Some(v) = n.value.filter(|v| v.is_finite()) {
            fields.push(("Value".to_owned(), v.to_string()));
        }
        if let Some(url) = &n.runbook_url {
            fields.push(("Runbook".to_owned(), url.clone()));
        }
        for (k, v) in &n.labels {
            fields.push((k.clone(), v.clone()));
        }
        let mut used = title.chars().count();
        let mut field_values = Vec::new();
        for (k, v) in fields.into_iter().take(MAX_FIELDS) {
            let name = super::truncate_chars(&k, FIELD_NAME_MAX.min(64));
            // Discord rejects empty field values.
            let value = if v.is_empty() { "-".to_owned() } else { v };
            let value = super::truncate_chars(&value, FIELD_VALUE_MAX.min(256));
            let cost = name.chars().count() + value.chars().count();
            if used + cost > budget / 2 {
                break;
            }
            used += cost;
            field_values.push(json!({ "name": name, "value": value, "inline": true }));
        }
        let description = super::truncate_chars(
            &n.description,
            EMBED_DESCRIPTION_MAX.min(budget.saturating_sub(used)),
        );
        let mut embed = json!({
            "title": title,
            "color": color(n),
            "fields": field_values,
            "timestamp": super::rfc3339_ms(n.starts_at_ms),
        });
        if !description.is_empty() {
            embed["description"] = json!(description);
        }
        embeds.push(embed);
    }
    // Each embed stays within `budget` (title ≤ budget/4, title + fields ≤ budget/2, the
    // description fills the rest), so all embeds together stay within EMBEDS_TOTAL_MAX.
    json!({
        "content": super::truncate_chars(&content, CONTENT_MAX),
        "embeds": embeds,
        "allowed_mentions": { "parse": [] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::sample;

    #[test]
    fn notify_discord_within_limits() {
        let mut n = sample(Status::Firing, Severity::Critical);
        n.description = "d".repeat(10_000);
        n.summary = "s".repeat(1000);
        let batch: Vec<_> = (0..12).map(|_| n.clone()).collect();
        let m = message(&batch);
        let embeds = m["embeds"].as_array().expect("embeds");
        assert_eq!(embeds.len(), MAX_EMBEDS);
        let total: usize = embeds
            .iter()
            .map(|e| {
                let f: usize = e["fields"]
                    .as_array()
                    .expect("fields")
                    .iter()
                    .map(|f| {
                        f["name"].as_str().expect("n").chars().count()
                            + f["value"].as_str().expect("v").chars().count()
                    })
                    .sum();
                e["title"].as_str().expect("t").chars().count()
                    + e["description"].as_str().map_or(0, |d| d.chars().count())
                    + f
            })
            .sum();
        assert!(total <= EMBEDS_TOTAL_MAX, "{total}");
        assert_eq!(embeds[0]["color"], 0xE7_4C3C);
    }
}
