//! PagerDuty Events API v2: one event per alert (`trigger`, `acknowledge` or `resolve`) with
//! `dedup_key` = the alert fingerprint, so a resend after a partial failure is idempotent.
//! 2xx (PagerDuty answers 202) is success; 429 and 5xx are retried; 400 (and any other
//! status) is permanent and never retried.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::destination::Destinations;
use super::secret::{Secret, SecretRef};
use super::{http, Notification, NotifyConfigError, SendError, Severity, Status};

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// PagerDuty's limit on `payload.summary`.
pub const SUMMARY_MAX_CHARS: usize = 1024;
/// PagerDuty's limit on `dedup_key`.
pub const DEDUP_KEY_MAX_CHARS: usize = 255;

/// `type = "pagerduty"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfigRaw {
    pub name: String,
    /// Owner scope (`{team="a"}`): the receiver only ever gets alerts about hosts inside
    /// it, and users whose `receivers:write` covers it may change it. Default: fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The integration's routing key (32 characters).
    pub routing_key: SecretRef,
    /// Events API endpoint (default `https://events.pagerduty.com/v2/enqueue`).
    pub url: Option<String>,
    /// `payload.source` when the alert has no `host` label (default `mcpwatch`).
    pub source: Option<String>,
    /// Per-request timeout in seconds (default 10).
    pub timeout_secs: Option<u64>,
}

pub struct PagerDutyReceiver {
    name: String,
    url: String,
    routing_key: Secret,
    source: String,
    client: reqwest::Client,
}

impl fmt::Debug for PagerDutyReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDutyReceiver")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("routing_key", &self.routing_key)
            .finish_non_exhaustive()
    }
}

impl PagerDutyReceiver {
    pub fn new(
        raw: PagerDutyConfigRaw,
        base_dir: &Path,
        destinations: &Destinations,
    ) -> Result<Self, NotifyConfigError> {
        let name = raw.name;
        let url = raw.url.unwrap_or_else(|| DEFAULT_URL.to_owned());
        super::webhook::check_http_url(&name, "url", &url, destinations)?;
        let routing_key = raw.routing_key.load(&name, "routing_key", base_dir)?;
        let source = raw.source.unwrap_or_else(|| "mcpwatch".to_owned());
        if source.trim().is_empty() {
            return Err(NotifyConfigError::new(&name, "source must not be empty"));
        }
        let timeout = super::timeout_from(&name, raw.timeout_secs, 10)?;
        let client = http::client(&name, timeout, destinations)?;
        Ok(PagerDutyReceiver {
            name,
            url,
            routing_key,
            source,
            client,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one event per alert, in order; stops at the first failure (the caller resends
    /// the batch, which PagerDuty deduplicates by `dedup_key`).
    pub async fn send(&self, batch: &[Notification]) -> Result<(), SendError> {
        for n in batch {
            let event = event(self.routing_key.expose(), &self.source, n);
            let body = serde_json::to_vec(&event)
                .map_err(|e| SendError::permanent(format!("cannot encode event: {e}")))?;
            let reply = http::post_json(&self.client, &self.url, body, &[]).await?;
            http::classify("pagerduty", &reply)?;
        }
        Ok(())
    }
}

/// PagerDuty's severity for ours.
pub fn pd_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "info",
    }
}

/// The Events API v2 body for one alert.
pub fn event(routing_key: &str, default_source: &str, n: &Notification) -> Value {
    let action = match n.status {
        Status::Firing => "trigger",
        Status::Acknowledged => "acknowledge",
        Status::Resolved => "resolve",
    };
    let mut body = Map::new();
    body.insert("routing_key".into(), json!(routing_key));
    body.insert("event_action".into(), json!(action));
    body.insert(
        "dedup_key".into(),
        json!(super::truncate_chars(&n.fingerprint, DEDUP_KEY_MAX_CHARS)),
    );
    if n.status == Status::Firing {
        let source = n
            .labels
            .get("host")
            .filter(|h| !h.is_empty())
            .map(String::as_str)
            .unwrap_or(default_source);
        let summary = if n.summary.trim().is_empty() {
            n.rule.as_str()
        } else {
            n.summary.as_str()
        };
        let mut payload = Map::new();
        payload.insert(
            "summary".into(),
            json!(super::truncate_chars(summary, SUMMARY_MAX_CHARS)),
        );
        payload.insert("source".into(), json!(source));
        payload.insert("severity".into(), json!(pd_severity(n.severity)));
        payload.insert("timestamp".into(), json!(super::rfc3339_ms(n.starts_at_ms)));
        payload.insert("class".into(), json!(n.rule));
        if let Some(server) = n.labels.get("server") {
            payload.insert("component".into(), json!(server));
        }
        payload.insert("group".into(), json!(n.group_key));
        payload.insert(
            "custom_details".into(),
            json!({
                "rule": n.rule,
                "description": n.description,
                "labels": n.labels,
                "value": n.value.filter(|v| v.is_finite()),
                "severity": n.severity.as_str(),
                "group_key": n.group_key,
            }),
        );
        body.insert("payload".into(), Value::Object(payload));
        if let Some(url) = &n.runbook_url {
            body.insert("links".into(), json!([{ "href": url, "text": "Runbook" }]));
        }
        body.insert("client".into(), json!("mcpwatch"));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::sample;

    #[test]
    fn notify_pagerduty_event_shapes() {
        let mut n = sample(Status::Firing, Severity::High);
        n.summary = "x".repeat(3000);
        let e = event("k", "mcpwatch", &n);
        assert_eq!(e["event_action"], "trigger");
        assert_eq!(e["dedup_key"], "fp-1");
        assert_eq!(e["payload"]["severity"], "error");
        assert_eq!(e["payload"]["source"], "web-1");
        assert_eq!(
            e["payload"]["summary"].as_str().map(|s| s.chars().count()),
            Some(SUMMARY_MAX_CHARS)
        );
        assert_eq!(e["links"][0]["href"], "https://runbooks.example/cpu");
        let r = event("k", "mcpwatch", &sample(Status::Resolved, Severity::High));
        assert_eq!(r["event_action"], "resolve");
        assert!(r.get("payload").is_none());
        let a = event(
            "k",
            "mcpwatch",
            &sample(Status::Acknowledged, Severity::Low),
        );
        assert_eq!(a["event_action"], "acknowledge");
    }
}
