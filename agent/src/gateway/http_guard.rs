//! The gateway's first checks on every request, before anything else is read: on a
//! loopback listener a loopback `Host` (DNS rebinding), an allowed `Origin`, and the bearer
//! token when tokens are configured; and the counting of refusals the router itself makes
//! (413, 405, no such route).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use mcpwatch_common::http_server::bearer_token;
use mcpwatch_common::secret::constant_time_eq;

use super::http_front::{refuse, FrontState};

/// Origin and token, before anything else is read.
pub(super) async fn guard(
    State(state): State<FrontState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // On loopback, a request naming another host is a DNS-rebinding page (its same-origin
    // GET carries no Origin); off loopback a token is required anyway.
    if state.config.listen.ip().is_loopback() {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !host.is_some_and(host_is_loopback) {
            return refuse(&state, "host", StatusCode::FORBIDDEN, "host not allowed");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, &state.config.allowed_origins));
        if !allowed {
            return refuse(
                &state,
                "origin",
                StatusCode::FORBIDDEN,
                "origin not allowed",
            );
        }
    }
    if !state.config.tokens.is_empty() {
        // Digests are compared, every one of them, so the time taken tells neither a token's
        // length nor which one came close.
        let presented = digest(bearer_token(headers).unwrap_or(""));
        let ok = state.config.tokens.iter().fold(false, |ok, t| {
            constant_time_eq(&presented, &digest(t.expose())) | ok
        });
        if !ok {
            let mut r = refuse(
                &state,
                "unauthorized",
                StatusCode::UNAUTHORIZED,
                "bearer token required",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let response = next.run(request).await;
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => (state.refused)("too_large"),
        StatusCode::METHOD_NOT_ALLOWED => (state.refused)("method"),
        // The fallback: no such route (unknown servers are counted by their handlers).
        StatusCode::NOT_FOUND if response.headers().get(header::CONTENT_TYPE).is_none() => {
            (state.refused)("no_route")
        }
        _ => {}
    }
    response
}

fn digest(token: &str) -> String {
    mcpwatch_common::hex::encode(
        ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref(),
    )
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "::1"
    )
}

/// Loopback origins (any port, http or https) and the configured ones.
fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1") || allowed.contains(&origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass_on_loopback() {
        for ok in [
            "127.0.0.1:9470",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9470",
            "127.0.0.1",
        ] {
            assert!(host_is_loopback(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9470",
            "127.0.0.1.evil",
            "[::2]:1",
            "",
        ] {
            assert!(!host_is_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn origins_loopback_and_listed_only() {
        let listed = vec!["https://ide.example.com".to_owned()];
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8443",
            "https://ide.example.com",
            "HTTPS://IDE.example.com/",
        ] {
            assert!(origin_allowed(ok, &listed), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "null",
            "file://",
            "https://ide.example.com.evil",
        ] {
            assert!(!origin_allowed(bad, &listed), "{bad}");
        }
    }
}
