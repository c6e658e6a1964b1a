//! The HTTP client shared by the HTTP receivers (reqwest over rustls with the `ring`
//! provider and the platform certificate verifier; no proxies, no redirects) and the mapping
//! of responses and transport errors to [`SendError`]s.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::destination::Destinations;
use super::{NotifyConfigError, SendError};

/// Most of a response body read: a receiver (or whatever an API receiver points at) cannot
/// make the collector buffer more.
const BODY_LIMIT: usize = 64 * 1024;
/// How much of an error response body is logged (never put in a [`SendError`], whose message
/// reaches API callers and audit rows).
const BODY_EXCERPT_CHARS: usize = 300;

/// Builds a client with `timeout` per request (connect bounded at 5 s or `timeout`).
///
/// Redirects are not followed (a redirect could carry a signed body or a secret URL
/// elsewhere) and no proxy is used.
/// `destinations` decides which resolved addresses it may connect to.
pub fn client(
    receiver: &str,
    timeout: Duration,
    destinations: &Destinations,
) -> Result<reqwest::Client, NotifyConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| {
        NotifyConfigError::new(
            receiver,
            format!("cannot load the platform TLS verifier: {e}"),
        )
    })?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NotifyConfigError::new(receiver, format!("TLS config: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder();
    if let Some(resolver) = destinations.resolver() {
        builder = builder.dns_resolver(resolver);
    }
    builder
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("mcpwatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| NotifyConfigError::new(receiver, format!("HTTP client: {e}")))
}

/// A response reduced to what classification needs.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// POSTs `body` as JSON with `headers`. Transport failures (connect, reset, timeout) are
/// retryable; the error text never includes the URL, which may be a secret.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
) -> Result<Reply, SendError> {
    let mut req = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| SendError::retry(format!("request failed: {}", describe(e))))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    // A body we cannot read is treated as empty: the status decides.
    let body = read_limited(resp, BODY_LIMIT).await;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// At most `limit` bytes of the body, as (lossy) text; whatever cannot be read is left out.
pub(crate) async fn read_limited(mut resp: reqwest::Response, limit: usize) -> String {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - buf.len();
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A reqwest error as text without its URL, with its source chain.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The common mapping: 2xx ok; 429 → retry after `Retry-After`; 408 and 5xx → retry;
/// anything else (other 4xx, unfollowed 3xx) → permanent.
pub fn classify(provider: &str, reply: &Reply) -> Result<(), SendError> {
    classify_with(provider, reply, retry_after_header(&reply.headers))
}

/// As [`classify`], with the delay to use for a 429 given by the caller.
pub fn classify_with(
    provider: &str,
    reply: &Reply,
    after_429: Option<Duration>,
) -> Result<(), SendError> {
    let status = reply.status;
    if status.is_success() {
        return Ok(());
    }
    // The status only: the body of whatever answered may hold anything, and the message
    // reaches the API caller and the audit log. The operator's log gets an excerpt.
    let message = format!("{provider} answered {status}");
    tracing::debug!(provider, %status,
        body = %super::truncate_chars(reply.body.trim(), BODY_EXCERPT_CHARS),
        "receiver refused a notification");
    if status == StatusCode::TOO_MANY_REQUESTS {
        Err(SendError::retry_after(after_429, message))
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        Err(SendError::retry(message))
    } else {
        Err(SendError::permanent(message))
    }
}

/// `Retry-After` in delta-seconds (integer or decimal) or as an HTTP-date (the time left
/// until then, 0 when it has passed; a date must be in the format RFC 9110 names).
pub fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    match v.parse::<f64>() {
        Ok(secs) => seconds(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            seconds(left.as_secs_f64())
        }
    }
}

/// Non-negative finite seconds (capped at one day) as a Duration.
pub fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::SendErrorKind;

    fn reply(code: u16, retry_after: Option<&str>) -> Reply {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, v.parse().expect("header"));
        }
        Reply {
            status: StatusCode::from_u16(code).expect("status"),
            headers,
            body: "x".into(),
        }
    }

    #[test]
    fn notify_classify_statuses() {
        assert!(classify("p", &reply(202, None)).is_ok());
        assert!(classify("p", &reply(204, None)).is_ok());
        assert_eq!(
            classify("p", &reply(400, None)).expect_err("400").kind,
            SendErrorKind::Permanent
        );
        assert_eq!(
            classify("p", &reply(301, None)).expect_err("301").kind,
            SendErrorKind::Permanent
        );
        assert_eq!(
            classify("p", &reply(429, Some("7"))).expect_err("429").kind,
            SendErrorKind::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        // An HTTP-date: the time left until then; one that has passed means now.
        assert_eq!(
            classify("p", &reply(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")))
                .expect_err("429")
                .kind,
            SendErrorKind::Retry {
                after: Some(Duration::ZERO)
            }
        );
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(90));
        let after = retry_after_header(&reply(429, Some(&soon)).headers).expect("a date");
        assert!(
            after > Duration::from_secs(80) && after <= Duration::from_secs(90),
            "{after:?}"
        );
        assert_eq!(retry_after_header(&reply(429, Some("soon")).headers), None);
        assert!(classify("p", &reply(503, None))
            .expect_err("503")
            .is_retry());
    }

    #[test]
    fn notify_client_builds_without_default_provider() {
        client("r", Duration::from_secs(2), &Destinations::Any).expect("client");
        client("r", Duration::from_secs(2), &Destinations::Public).expect("client");
    }
}
