//! Email through SMTP (lettre, tokio, rustls with `ring`): `tls = "starttls"` (default, port
//! 587), `"tls"` (implicit TLS, port 465) or `"none"` (plain, for local relays, port 25);
//! optional AUTH; one `multipart/alternative` message (text + HTML, everything HTML-escaped)
//! to all recipients, subject `[FIRING:critical] summary`. SMTP 4xx replies and transport
//! errors are retried; 5xx replies are permanent.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::destination::Destinations;
use super::secret::SecretRef;
use super::{Notification, NotifyConfigError, SendError};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic).
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS at all: only for a relay on localhost or a trusted network.
    None,
}

/// `type = "email"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfigRaw {
    pub name: String,
    /// Owner scope (`{team="a"}`): the receiver only ever gets alerts about hosts inside
    /// it, and users whose `receivers:write` covers it may change it. Default: fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// SMTP server host name (also the TLS server name).
    pub host: String,
    /// Default by `tls`: 587 (starttls), 465 (tls), 25 (none).
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    pub tls: Option<TlsMode>,
    /// AUTH user; requires `password`.
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// `From:` mailbox, e.g. `mcpwatch <alerts@example.com>`.
    pub from: String,
    /// Recipients (at least one).
    pub to: Vec<String>,
    /// Per-message timeout in seconds (default 30).
    pub timeout_secs: Option<u64>,
}

impl EmailConfigRaw {
    /// `tls`, or its default.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.unwrap_or(TlsMode::Starttls)
    }

    /// `port`, or the default for the TLS mode.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.tls_mode() {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        })
    }
}

pub struct EmailReceiver {
    name: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl fmt::Debug for EmailReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailReceiver")
            .field("name", &self.name)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl EmailReceiver {
    pub fn new(
        raw: EmailConfigRaw,
        base_dir: &Path,
        destinations: &Destinations,
    ) -> Result<Self, NotifyConfigError> {
        let mode = raw.tls_mode();
        let port = raw.port_or_default();
        let name = raw.name;
        let err = |reason: String| NotifyConfigError::new(&name, reason);
        if raw.host.trim().is_empty() {
            return Err(err("host must not be empty".into()));
        }
        let from: Mailbox = raw
            .from
            .parse()
            .map_err(|e| err(format!("from {:?} is not a mailbox: {e}", raw.from)))?;
        if raw.to.is_empty() {
            return Err(err("to needs at least one recipient".into()));
        }
        let to = raw
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| err(format!("to {t:?} is not a mailbox: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // lettre resolves the host itself: checked here, when the receiver is built.
        destinations
            .check_host(&raw.host, port)
            .map_err(|why| err(format!("host: {why}")))?;
        let timeout: Duration = super::timeout_from(&name, raw.timeout_secs, 30)?;
        let tls = match mode {
            TlsMode::None => Tls::None,
            TlsMode::Starttls | TlsMode::Tls => {
                let params = TlsParameters::new_rustls(raw.host.clone())
                    .map_err(|e| err(format!("TLS parameters: {e}")))?;
                if mode == TlsMode::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&raw.host)
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        match (raw.username, raw.password) {
            (Some(user), Some(password)) => {
                let password = password.load(&name, "password", base_dir)?;
                builder = builder.credentials(Credentials::new(user, password.expose().to_owned()));
            }
            (None, None) => {}
            _ => return Err(err("username and password go together".into())),
        }
        Ok(EmailReceiver {
            name,
            from,
            to,
            transport: builder.build(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn send(&self, batch: &[Notification]) -> Result<(), SendError> {
        let message = self.message(batch)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// The message for a batch (public for inspection in tests).
    pub fn message(&self, batch: &[Notification]) -> Result<Message, SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject(batch));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                text_body(batch),
                html_body(batch),
            ))
            .map_err(|e| SendError::permanent(format!("cannot build message: {e}")))
    }
}

/// The subject line: the batch title on one line (control characters become spaces), at most
/// 200 characters.
pub fn subject(batch: &[Notification]) -> String {
    let line: String = super::title(batch)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    super::truncate_chars(&line, 200)
}

/// 4xx → retry, 5xx → permanent, transport/TLS/timeouts → retry, client-side errors →
/// permanent.
fn classify(e: lettre::transport::smtp::Error) -> SendError {
    let message = format!("smtp: {e}");
    if e.is_permanent() || e.is_client() {
        SendError::permanent(message)
    } else {
        SendError::retry(message)
    }
}

/// The plain-text body.
pub fn text_body(batch: &[Notification]) -> String {
    let mut out = format!("{}\n\n", super::title(batch));
    for n in batch {
        out.push_str(&format!(
            "* [{}:{}] {}\n  rule: {}\n",
            n.status.as_str().to_uppercase(),
            n.severity.as_str(),
            n.summary,
            n.rule
        ));
        if !n.description.is_empty() {
            out.push_str(&format!("  {}\n", n.description));
        }
        if let Some(v) = n.value.filter(|v| v.is_finite()) {
            out.push_str(&format!("  value: {v}\n"));
        }
        for (k, v) in &n.labels {
            out.push_str(&format!("  {k}={v}\n"));
        }
        out.push_str(&format!("  since: {}\n", super::rfc3339_ms(n.starts_at_ms)));
        if let Some(url) = &n.runbook_url {
            out.push_str(&format!("  runbook: {url}\n"));
        }
        out.push('\n');
    }
    out
}

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML body; every interpolated value is escaped, and only http(s) runbook links are
/// rendered as links.
pub fn html_body(batch: &[Notification]) -> String {
    let mut out = format!(
        "<!DOCTYPE html><html><body><h2>{}</h2>",
        html_escape(&super::title(batch))
    );
    for n in batch {
        out.push_str(&format!(
            "<h3>[{}:{}] {}</h3><p>{}</p><table>",
            n.status.as_str().to_uppercase(),
            n.severity.as_str(),
            html_escape(&n.summary),
            html_escape(&n.description)
        ));
        out.push_str(&format!(
            "<tr><th>rule</th><td>{}</td></tr>",
            html_escape(&n.rule)
        ));
        if let Some(v) = n.value.filter(|v| v.is_finite()) {
            out.push_str(&format!("<tr><th>value</th><td>{v}</td></tr>"));
        }
        for (k, v) in &n.labels {
            out.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>",
                html_escape(k),
                html_escape(v)
            ));
        }
        out.push_str(&format!(
            "<tr><th>since</th><td>{}</td></tr></table>",
            super::rfc3339_ms(n.starts_at_ms)
        ));
        if let Some(url) = &n.runbook_url {
            if url.starts_with("https://") || url.starts_with("http://") {
                out.push_str(&format!(
                    "<p><a href=\"{0}\">Runbook</a></p>",
                    html_escape(url)
                ));
            } else {
                out.push_str(&format!("<p>Runbook: {}</p>", html_escape(url)));
            }
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::sample;
    use crate::notify::{Severity, Status};

    fn raw() -> EmailConfigRaw {
        EmailConfigRaw {
            name: "mail".into(),
            owner: None,
            host: "127.0.0.1".into(),
            port: Some(2525),
            tls: Some(TlsMode::None),
            username: None,
            password: None,
            from: "mcpwatch <alerts@example.com>".into(),
            to: vec!["ops@example.com".into()],
            timeout_secs: None,
        }
    }

    #[test]
    fn notify_email_escapes_html() {
        let n = sample(Status::Firing, Severity::Critical);
        let html = html_body(&[n]);
        assert!(html.contains("cpu &lt;b&gt;hot&lt;/b&gt; &amp; busy"));
        assert!(!html.contains("<b>hot"));
    }

    #[test]
    fn notify_email_subject_single_line() {
        let mut n = sample(Status::Firing, Severity::Critical);
        n.summary = "a\r\nBcc: x@example.com".into();
        assert_eq!(subject(&[n]), "[FIRING:critical] a  Bcc: x@example.com");
    }

    #[test]
    fn notify_email_config_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(EmailReceiver::new(raw(), dir.path(), &Destinations::Any).is_ok());
        let mut bad = raw();
        bad.to.clear();
        assert!(EmailReceiver::new(bad, dir.path(), &Destinations::Any).is_err());
        let mut bad = raw();
        bad.from = "not a mailbox".into();
        assert!(EmailReceiver::new(bad, dir.path(), &Destinations::Any).is_err());
        let mut bad = raw();
        bad.username = Some("u".into());
        assert!(EmailReceiver::new(bad, dir.path(), &Destinations::Any).is_err());
    }
}
