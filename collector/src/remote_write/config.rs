//! `[[remote_write]]`: raw TOML and its validation into [`Endpoint`]s.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mcpwatch_common::backoff::ExponentialBackoff;
use mcpwatch_common::config::{ConfigError, Duration as CfgDuration};
use serde::Deserialize;

use super::relabel::{RawRelabel, Relabel};
use crate::notify::{Secret, SecretRef};

/// Headers the sender sets itself (the spec's) or that HTTP owns.
const RESERVED_HEADERS: &[&str] = &[
    "content-encoding",
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "x-prometheus-remote-write-version",
    "connection",
    "transfer-encoding",
];

/// One `[[remote_write]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteWrite {
    /// Names the endpoint in metrics, logs and its cursor (1..=64 of a-z, 0-9, '-', '_').
    /// Renaming it starts a new cursor (from the newest data).
    pub name: String,
    /// The receiver's remote-write URL, e.g. http://vm:8428/api/v1/write.
    pub url: String,
    /// Extra request headers; values are secrets: `{ file = ... }`, `{ env = ... }` or
    /// `{ value = ... }`. E.g. `Authorization`, `X-Scope-OrgID`.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretRef>,
    /// Per request. Default 30s.
    pub timeout: Option<CfgDuration>,
    #[serde(default)]
    pub queue: RawQueue,
    /// Which series this endpoint receives (all when empty).
    #[serde(default)]
    pub write_relabel: Vec<RawRelabel>,
}

/// `[remote_write.queue]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// Samples per request at most (100..=100000); a request never splits one committed
    /// agent batch, so one larger batch is sent alone. Default 10000.
    pub max_samples_per_send: Option<usize>,
    /// A request goes out once this old even if not full. Default 5s.
    pub batch_send_deadline: Option<CfgDuration>,
    /// Retry backoff after a 5xx, a 429 (unless its Retry-After says longer) or a transport
    /// error. Defaults 30ms and 5s.
    pub min_backoff: Option<CfgDuration>,
    pub max_backoff: Option<CfgDuration>,
    /// Requests in flight at once, each a slice of the batch's series (1..=32). Default 4.
    pub max_shards: Option<usize>,
}

/// A validated endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    /// Holds credentials at times (`https://user:pass@...`): never logged.
    pub url: Secret,
    pub headers: Vec<(reqwest::header::HeaderName, Secret)>,
    pub timeout: Duration,
    pub max_samples_per_send: usize,
    pub batch_send_deadline: Duration,
    pub backoff: ExponentialBackoff,
    pub max_shards: usize,
    pub relabel: Vec<Relabel>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Endpoint {
    /// Validates every `[[remote_write]]`; names must be unique.
    pub fn validate_all(
        path: &Path,
        raw: Vec<RawRemoteWrite>,
    ) -> Result<Vec<Endpoint>, ConfigError> {
        let mut out: Vec<Endpoint> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let e = Endpoint::validate(path, i, r)?;
            if out.iter().any(|o| o.name == e.name) {
                return Err(ConfigError::invalid(
                    path,
                    &format!("remote_write[{i}].name"),
                    "names must be unique",
                ));
            }
            out.push(e);
        }
        Ok(out)
    }

    fn validate(path: &Path, i: usize, raw: RawRemoteWrite) -> Result<Endpoint, ConfigError> {
        let key = |k: &str| format!("remote_write[{i}].{k}");
        let bad = |k: &str, msg: &str| ConfigError::invalid(path, &key(k), msg);
        if !valid_name(&raw.name) {
            return Err(bad("name", "must be 1 to 64 of a-z, 0-9, '-', '_'"));
        }
        match reqwest::Url::parse(&raw.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            // The URL may hold credentials: not repeated in the error.
            _ => return Err(bad("url", "must be an http:// or https:// URL")),
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut headers = Vec::new();
        for (name, value) in raw.headers {
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("headers", &format!("{name:?} is not a header name")))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(bad("headers", &format!("{name} is set by mcpwatch")));
            }
            let secret = value
                .load(&raw.name, &format!("headers.{name}"), base)
                .map_err(|e| bad("headers", &e.to_string()))?;
            if reqwest::header::HeaderValue::from_str(secret.expose()).is_err() {
                return Err(bad(
                    "headers",
                    &format!("the value of {name} is not a valid header value"),
                ));
            }
            headers.push((header, secret));
        }
        let timeout = raw
            .timeout
            .map_or(Duration::from_secs(30), CfgDuration::get);
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&timeout) {
            return Err(bad("timeout", "must be 1s..=5m"));
        }
        let q = raw.queue;
        let max_samples_per_send = q.max_samples_per_send.unwrap_or(10_000);
        if !(100..=100_000).contains(&max_samples_per_send) {
            return Err(bad("queue.max_samples_per_send", "must be 100..=100000"));
        }
        let batch_send_deadline = q
            .batch_send_deadline
            .map_or(Duration::from_secs(5), CfgDuration::get);
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&batch_send_deadline) {
            return Err(bad("queue.batch_send_deadline", "must be 10ms..=1m"));
        }
        let min_backoff = q
            .min_backoff
            .map_or(Duration::from_millis(30), CfgDuration::get);
        let max_backoff = q
            .max_backoff
            .map_or(Duration::from_secs(5), CfgDuration::get);
        if max_backoff > Duration::from_secs(600) {
            return Err(bad("queue.max_backoff", "must be at most 10m"));
        }
        let backoff = ExponentialBackoff::new(min_backoff, max_backoff)
            .and_then(|b| b.with_jitter(0.8, 1.2))
            .map_err(|e| bad("queue.min_backoff", &e.to_string()))?;
        let max_shards = q.max_shards.unwrap_or(4);
        if !(1..=32).contains(&max_shards) {
            return Err(bad("queue.max_shards", "must be 1..=32"));
        }
        let relabel = raw
            .write_relabel
            .into_iter()
            .enumerate()
            .map(|(j, r)| {
                Relabel::new(r).map_err(|e| {
                    ConfigError::invalid(path, &key(&format!("write_relabel[{j}]")), &e)
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Endpoint {
            name: raw.name,
            url: Secret::new(raw.url),
            headers,
            timeout,
            max_samples_per_send,
            batch_send_deadline,
            backoff,
            max_shards,
            relabel,
        })
    }
}
