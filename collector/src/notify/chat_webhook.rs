//! The part every chat service's incoming webhook shares (Slack, Discord, Microsoft Teams):
//! the receiver's name, the webhook URL — a secret, checked against where the receiver may
//! send — and one HTTP client, posting JSON.

use std::fmt;
use std::path::Path;

use super::destination::Destinations;
use super::secret::{Secret, SecretRef};
use super::{http, NotifyConfigError, SendError};

pub struct ChatWebhook {
    name: String,
    url: Secret,
    client: reqwest::Client,
}

impl fmt::Debug for ChatWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatWebhook")
            .field("name", &self.name)
            .field("webhook_url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ChatWebhook {
    /// Loads the `webhook_url` secret, checks it may be sent to and builds the client
    /// (`timeout_secs` default 10).
    pub fn new(
        name: String,
        webhook_url: &SecretRef,
        timeout_secs: Option<u64>,
        base_dir: &Path,
        destinations: &Destinations,
    ) -> Result<Self, NotifyConfigError> {
        let url = webhook_url.load(&name, "webhook_url", base_dir)?;
        super::webhook::check_http_url(&name, "webhook_url", url.expose(), destinations)?;
        let timeout = super::timeout_from(&name, timeout_secs, 10)?;
        let client = http::client(&name, timeout, destinations)?;
        Ok(ChatWebhook { name, url, client })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Posts `body` (JSON) once; the reply, for the caller to classify.
    pub async fn post(&self, body: Vec<u8>) -> Result<http::Reply, SendError> {
        http::post_json(&self.client, self.url.expose(), body, &[]).await
    }
}
