//! Notification senders ("receivers"): email, Slack, PagerDuty, Discord and a signed generic
//! webhook. Each takes a batch of grouped [`Notification`]s and reports success, a retryable
//! failure (with the provider's requested delay) or a permanent one. Durability, routing and
//! retries live elsewhere (the outbox); this module only sends once per call.
//!
//! Configuration comes in raw (serde, unknown fields rejected) and is validated into a
//! [`Receiver`] by [`Receiver::from_raw`], which also resolves secrets (`{ file = "..." }` or
//! `{ env = "VAR" }`). Secrets are never logged, never in a `Debug` output and never in a
//! [`SendError`] message.
//!
//! ```toml
//! [[receiver]]
//! type = "pagerduty"            # email | slack | pagerduty | discord | webhook
//! name = "oncall"
//! routing_key = { env = "PD_ROUTING_KEY" }
//!
//! [[receiver]]
//! type = "slack"
//! name = "ops-channel"
//! webhook_url = { file = "secrets/slack-url" }
//! ```

pub mod api_secrets;
pub mod chat_webhook;
pub mod destination;
pub mod discord;
pub mod email;
pub mod http;
pub mod pagerduty;
pub mod secret;
pub mod secret_key;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use api_secrets::{ApiSecrets, PreparedReceiver, SealedSecret};
pub use destination::Destinations;
pub use secret::{Secret, SecretRef};
pub use secret_key::{Binding, SecretKey, SecretKeyError};

/// The state an alert is in when a notification about it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
    Acknowledged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
            Status::Acknowledged => "acknowledged",
        }
    }
}

/// Alert severity (as in rules). Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One alert notification. A send takes a batch of these (one group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable identity of the alert (rule + series); the dedup key at providers that have one.
    pub fingerprint: String,
    pub status: Status,
    pub severity: Severity,
    /// Rule name.
    pub rule: String,
    pub summary: String,
    pub description: String,
    pub runbook_url: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The value that triggered (or cleared) the alert, when there is one.
    pub value: Option<f64>,
    pub starts_at_ms: i64,
    pub ends_at_ms: Option<i64>,
    /// The routing group this notification was batched in.
    pub group_key: String,
}

/// How a failed send should be treated by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// Try again later; `after` is the provider's requested delay when it gave one.
    Retry { after: Option<Duration> },
    /// Retrying cannot help (bad request, rejected recipient, bad credentials...).
    Permanent,
}

/// A failed send. `message` never contains a secret (webhook URLs, keys, passwords).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub kind: SendErrorKind,
    pub message: String,
}

impl SendError {
    pub fn retry(message: impl Into<String>) -> SendError {
        SendError {
            kind: SendErrorKind::Retry { after: None },
            message: message.into(),
        }
    }

    pub fn retry_after(after: Option<Duration>, message: impl Into<String>) -> SendError {
        SendError {
            kind: SendErrorKind::Retry { after },
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> SendError {
        SendError {
            kind: SendErrorKind::Permanent,
            message: message.into(),
        }
    }

    pub fn is_retry(&self) -> bool {
        matches!(self.kind, SendErrorKind::Retry { .. })
    }
}

/// A receiver configuration that failed validation (or whose secret could not be loaded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receiver {receiver:?}: {reason}")]
pub struct NotifyConfigError {
    pub receiver: String,
    pub reason: String,
}

impl NotifyConfigError {
    pub(crate) fn new(receiver: &str, reason: impl Into<String>) -> NotifyConfigError {
        NotifyConfigError {
            receiver: receiver.to_owned(),
            reason: reason.into(),
        }
    }
}

/// One `[[receiver]]` entry as written in the config file, selected by `type`. It holds
/// secrets only as references ([`SecretRef`]), so it can be stored and shown as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ReceiverConfigRaw {
    Email(email::EmailConfigRaw),
    Slack(slack::SlackConfigRaw),
    PagerDuty(pagerduty::PagerDutyConfigRaw),
    Discord(discord::DiscordConfigRaw),
    Webhook(webhook::WebhookConfigRaw),
    Teams(teams::TeamsConfigRaw),
}

impl ReceiverConfigRaw {
    pub fn name(&self) -> &str {
        match self {
            ReceiverConfigRaw::Email(c) => &c.name,
            ReceiverConfigRaw::Slack(c) => &c.name,
            ReceiverConfigRaw::PagerDuty(c) => &c.name,
            ReceiverConfigRaw::Discord(c) => &c.name,
            ReceiverConfigRaw::Webhook(c) => &c.name,
            ReceiverConfigRaw::Teams(c) => &c.name,
        }
    }

    /// The owner scope as written (`None`: fleet-wide).
    pub fn owner(&self) -> Option<&str> {
        match self {
            ReceiverConfigRaw::Email(c) => c.owner.as_deref(),
            ReceiverConfigRaw::Slack(c) => c.owner.as_deref(),
            ReceiverConfigRaw::PagerDuty(c) => c.owner.as_deref(),
            ReceiverConfigRaw::Discord(c) => c.owner.as_deref(),
            ReceiverConfigRaw::Webhook(c) => c.owner.as_deref(),
            ReceiverConfigRaw::Teams(c) => c.owner.as_deref(),
        }
    }

    /// `email`, `slack`, `pagerduty`, `discord`, `webhook` or `teams`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiverConfigRaw::Email(_) => "email",
            ReceiverConfigRaw::Slack(_) => "slack",
            ReceiverConfigRaw::PagerDuty(_) => "pagerduty",
            ReceiverConfigRaw::Discord(_) => "discord",
            ReceiverConfigRaw::Webhook(_) => "webhook",
            ReceiverConfigRaw::Teams(_) => "teams",
        }
    }

    /// The secret fields of this receiver type, as named in a definition.
    pub fn secret_fields(kind: &str) -> &'static [&'static str] {
        match kind {
            "email" => &["password"],
            "slack" | "discord" | "teams" => &["webhook_url"],
            "pagerduty" => &["routing_key"],
            "webhook" => &["secret"],
            _ => &[],
        }
    }

    /// The secret references it holds, with their field names, to change.
    pub fn secret_refs_mut(&mut self) -> Vec<(&'static str, &mut SecretRef)> {
        match self {
            ReceiverConfigRaw::Email(c) => c.password.iter_mut().map(|s| ("password", s)).collect(),
            ReceiverConfigRaw::Slack(c) => vec![("webhook_url", &mut c.webhook_url)],
            ReceiverConfigRaw::PagerDuty(c) => vec![("routing_key", &mut c.routing_key)],
            ReceiverConfigRaw::Discord(c) => vec![("webhook_url", &mut c.webhook_url)],
            ReceiverConfigRaw::Webhook(c) => vec![("secret", &mut c.secret)],
            ReceiverConfigRaw::Teams(c) => vec![("webhook_url", &mut c.webhook_url)],
        }
    }

    /// The secret references it holds, with their field names.
    pub fn secret_refs(&self) -> Vec<(&'static str, &SecretRef)> {
        match self {
            ReceiverConfigRaw::Email(c) => c.password.iter().map(|s| ("password", s)).collect(),
            ReceiverConfigRaw::Slack(c) => vec![("webhook_url", &c.webhook_url)],
            ReceiverConfigRaw::PagerDuty(c) => vec![("routing_key", &c.routing_key)],
            ReceiverConfigRaw::Discord(c) => vec![("webhook_url", &c.webhook_url)],
            ReceiverConfigRaw::Webhook(c) => vec![("secret", &c.secret)],
            ReceiverConfigRaw::Teams(c) => vec![("webhook_url", &c.webhook_url)],
        }
    }
}

/// A validated, ready-to-send receiver. Cheap to share behind an `Arc`; `send` takes `&self`.
pub enum Receiver {
    Email(email::EmailReceiver),
    Slack(slack::SlackReceiver),
    PagerDuty(pagerduty::PagerDutyReceiver),
    Discord(discord::DiscordReceiver),
    Webhook(webhook::WebhookReceiver),
    Teams(teams::TeamsReceiver),
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("kind", &self.kind())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Validates `raw`, resolving secret files relative to `base_dir` (the config file's
    /// directory) and environment variables.
    pub fn from_raw(
        raw: ReceiverConfigRaw,
        base_dir: &Path,
        destinations: &Destinations,
    ) -> Result<Receiver, NotifyConfigError> {
        Ok(match raw {
            ReceiverConfigRaw::Email(c) => {
                Receiver::Email(email::EmailReceiver::new(c, base_dir, destinations)?)
            }
            ReceiverConfigRaw::Slack(c) => {
                Receiver::Slack(slack::SlackReceiver::new(c, base_dir, destinations)?)
            }
            ReceiverConfigRaw::PagerDuty(c) => Receiver::PagerDuty(
                pagerduty::PagerDutyReceiver::new(c, base_dir, destinations)?,
            ),
            ReceiverConfigRaw::Discord(c) => {
                Receiver::Discord(discord::DiscordReceiver::new(c, base_dir, destinations)?)
            }
            ReceiverConfigRaw::Webhook(c) => {
                Receiver::Webhook(webhook::WebhookReceiver::new(c, base_dir, destinations)?)
            }
            ReceiverConfigRaw::Teams(c) => {
                Receiver::Teams(teams::TeamsReceiver::new(c, base_dir, destinations)?)
            }
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Receiver::Email(r) => r.name(),
            Receiver::Slack(r) => r.name(),
            Receiver::PagerDuty(r) => r.name(),
            Receiver::Discord(r) => r.name(),
            Receiver::Webhook(r) => r.name(),
            Receiver::Teams(r) => r.name(),
        }
    }

    /// `email`, `slack`, `pagerduty`, `discord`, `webhook` or `teams` (a metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Receiver::Email(_) => "email",
            Receiver::Slack(_) => "slack",
            Receiver::PagerDuty(_) => "pagerduty",
            Receiver::Discord(_) => "discord",
            Receiver::Webhook(_) => "webhook",
            Receiver::Teams(_) => "teams",
        }
    }

    /// Sends one batch (one group) once. An empty batch is a no-op.
    pub async fn send(&self, batch: &[Notification]) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            Receiver::Email(r) => r.send(batch).await,
            Receiver::Slack(r) => r.send(batch).await,
            Receiver::PagerDuty(r) => r.send(batch).await,
            Receiver::Discord(r) => r.send(batch).await,
            Receiver::Webhook(r) => r.send(batch).await,
            Receiver::Teams(r) => r.send(batch).await,
        }
    }
}

/// The status that describes a whole batch: firing if any alert fires, else acknowledged if
/// any is acknowledged, else resolved.
pub fn batch_status(batch: &[Notification]) -> Status {
    if batch.iter().any(|n| n.status == Status::Firing) {
        Status::Firing
    } else if batch.iter().any(|n| n.status == Status::Acknowledged) {
        Status::Acknowledged
    } else {
        Status::Resolved
    }
}

/// The highest severity in a batch (`Low` for an empty one).
pub fn batch_severity(batch: &[Notification]) -> Severity {
    batch
        .iter()
        .map(|n| n.severity)
        .max()
        .unwrap_or(Severity::Low)
}

/// `[FIRING:critical] summary` (+ ` (+N more)` for a batch of several alerts).
pub fn title(batch: &[Notification]) -> String {
    let status = batch_status(batch).as_str().to_ascii_uppercase();
    let severity = batch_severity(batch).as_str();
    let summary = batch.first().map(|n| n.summary.as_str()).unwrap_or("");
    let more = if batch.len() > 1 {
        format!(" (+{} more)", batch.len() - 1)
    } else {
        String::new()
    };
    format!("[{status}:{severity}] {summary}{more}")
}

/// `s` cut to at most `max` characters (not bytes), ending in `…` when it was cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (`2026-11-21T22:00:07.123Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// A request timeout from config (seconds), bounded to something sane.
pub(crate) fn timeout_from(
    name: &str,
    secs: Option<u64>,
    default: u64,
) -> Result<Duration, NotifyConfigError> {
    let secs = secs.unwrap_or(default);
    if secs == 0 || secs > 300 {
        return Err(NotifyConfigError::new(
            name,
            format!("timeout_secs must be between 1 and 300, got {secs}"),
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(status: Status, severity: Severity) -> Notification {
        Notification {
            fingerprint: "fp-1".into(),
            status,
            severity,
            rule: "cpu_high".into(),
            summary: "CPU above 95% on web-1".into(),
            description: "cpu <b>hot</b> & busy".into(),
            runbook_url: Some("https://runbooks.example/cpu".into()),
            labels: BTreeMap::from([("host".to_owned(), "web-1".to_owned())]),
            value: Some(97.5),
            starts_at_ms: 1_700_000_000_123,
            ends_at_ms: None,
            group_key: "g".into(),
        }
    }

    #[test]
    fn notify_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn notify_truncate_counts_chars() {
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars("héllo", 3), "hé…");
        assert_eq!(truncate_chars("abc", 0), "");
    }

    #[test]
    fn notify_title_and_batch_status() {
        let a = sample(Status::Resolved, Severity::High);
        let b = sample(Status::Firing, Severity::Critical);
        assert_eq!(
            title(std::slice::from_ref(&a)),
            "[RESOLVED:high] CPU above 95% on web-1"
        );
        assert_eq!(
            title(&[a, b]),
            "[FIRING:critical] CPU above 95% on web-1 (+1 more)"
        );
    }
}
