//! Request correlation: the outermost layer of the HTTP endpoint gives every request an id —
//! the client's `X-Request-Id` when it is well formed, else a fresh random one — puts it in
//! the request's extensions (the audit layers store it in the request's audit row), runs
//! the request inside a tracing span carrying it (so every log line of the request names
//! it), and sets it on the response, whatever answered: a route, a fallback 404, or a layer
//! refusing the request before routing (413, 414, 408).

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header, in both directions.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id accepted.
pub const MAX_LEN: usize = 64;

/// The id of the request being served, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// 1 to [`MAX_LEN`] of `A-Z a-z 0-9 . _ -`: safe in a header, a log line and a URL, so a
/// client cannot forge log lines or smuggle header bytes through it.
pub fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// 128 random bits as 32 hex digits. Ids need to be unique, not secret: the client may
/// choose its own.
fn generate() -> String {
    mcpwatch_common::hex::encode(&fastrand::u128(..).to_be_bytes())
}

/// The id for a request carrying `header`.
fn choose(header: Option<&HeaderValue>) -> String {
    match header {
        // Well-formed bytes are ASCII, so the conversion cannot fail.
        Some(v) if well_formed(v.as_bytes()) => {
            v.to_str().map_or_else(|_| generate(), str::to_owned)
        }
        _ => generate(),
    }
}

/// The layer (see the module comment). Also logs each request at DEBUG with its status and
/// duration, inside the span.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = choose(req.headers().get(&HEADER));
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("http", request_id = %id);
    let method = req.method().clone();
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(%method, status = resp.status().as_u16(),
            took_ms = started.elapsed().as_millis() as u64, "http request answered");
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER.clone(), v);
    }
    resp
}

/// The request's id, for audit rows (`None` only if this layer did not run).
pub fn of(req: &Request) -> Option<String> {
    req.extensions().get::<RequestId>().map(|r| r.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_request_ids_are_kept_only_when_well_formed() {
        for good in ["a", "abc-DEF_012.x", &"z".repeat(64)] {
            let v = HeaderValue::from_str(good).unwrap();
            assert_eq!(choose(Some(&v)), good);
        }
        for bad in ["", "a b", "a/b", "ä", "a\tb", "x;y", &"z".repeat(65)] {
            let v = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            let got = choose(Some(&v));
            assert_ne!(got, bad);
            assert_eq!(got.len(), 32);
            assert!(well_formed(got.as_bytes()));
        }
        assert!(!well_formed(b"a\r\nX-Evil: 1"));
        let a = choose(None);
        assert_ne!(a, choose(None), "generated ids are unique");
        assert!(well_formed(a.as_bytes()));
    }
}
