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
    /// The receiver's remote-write URL, e.g. "http://vm:8428/api/v1/write", or, when it
    /// holds a credential (a token in the query, `user:pass@`), a secret reference:
    /// `{ file = ... }` or `{ env = ... }`.
    pub url: RawUrl,
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

/// A URL written inline or kept as a secret.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a URL string, or { file = \"...\" } or { env = \"...\" } holding one"
)]
pub enum RawUrl {
    Inline(String),
    Secret(SecretRef),
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
        let base = path.parent().unwrap_or(Path::new("."));
        let url = match raw.url {
            RawUrl::Inline(url) => Secret::new(url),
            RawUrl::Secret(reference) => {
                if !reference.is_config_reference() {
                    return Err(bad("url", "must be a URL, { file = ... } or { env = ... }"));
                }
                reference
                    .load(&raw.name, "url", base)
                    .map_err(|e| bad("url", &e.to_string()))?
            }
        };
        match reqwest::Url::parse(url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            // The URL may hold credentials: not repeated in the error.
            _ => return Err(bad("url", "must be an http:// or https:// URL")),
        }
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
            url,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        remote_write: Vec<RawRemoteWrite>,
    }

    fn endpoints(dir: &Path, toml_text: &str) -> Result<Vec<Endpoint>, String> {
        let raw: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Endpoint::validate_all(&dir.join("collector.toml"), raw.remote_write)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn remote_write_url_is_inline_or_a_secret_file_and_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let inline = endpoints(
            dir.path(),
            "[[remote_write]]\nname = \"vm\"\nurl = \"http://127.0.0.1:8428/api/v1/write\"\n",
        )
        .unwrap();
        assert_eq!(inline[0].url.expose(), "http://127.0.0.1:8428/api/v1/write");

        std::fs::write(
            dir.path().join("rw-url"),
            "https://127.0.0.1:9/write?token=s3cret\n",
        )
        .unwrap();
        let from_file = endpoints(
            dir.path(),
            "[[remote_write]]\nname = \"mimir\"\nurl = { file = \"rw-url\" }\n",
        )
        .unwrap();
        assert_eq!(
            from_file[0].url.expose(),
            "https://127.0.0.1:9/write?token=s3cret"
        );
        assert!(!format!("{:?}", from_file[0]).contains("s3cret"));

        // A value in the file itself is what `{ file }` exists to avoid.
        let err = endpoints(
            dir.path(),
            "[[remote_write]]\nname = \"x\"\nurl = { value = \"http://127.0.0.1/\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("remote_write[0].url"), "{err}");
        std::fs::write(dir.path().join("bad-url"), "ftp://s3cret@host/\n").unwrap();
        let err = endpoints(
            dir.path(),
            "[[remote_write]]\nname = \"x\"\nurl = { file = \"bad-url\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("must be an http"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = endpoints(dir.path(), "[[remote_write]]\nname = \"x\"\nurl = 7\n").unwrap_err();
        assert!(err.contains("a URL string"), "{err}");
    }
}
