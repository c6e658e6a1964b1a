//! Security headers on every answer of the collector's HTTP endpoint, whatever produced it (a
//! route, the JSON 404, a limit refusing the request): the API's JSON and, with issue 13, the
//! web console's pages. The Content-Security-Policy is strict — scripts, styles, images and
//! connections from this origin only, no inline script or style, never framed — so a string
//! an agent or a user stored (a label, a tool description) cannot run as script in the
//! console even if some page rendered it as markup by mistake.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

/// The console's policy; JSON answers carry it too (it costs nothing and covers an answer
/// opened directly in a browser tab).
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

static CROSS_ORIGIN_OPENER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-opener-policy");

/// Sets the headers a handler did not set itself.
pub async fn add(mut response: Response) -> Response {
    set_missing(response.headers_mut());
    response
}

fn set_missing(headers: &mut HeaderMap) {
    let fixed = [
        (&CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
        (&X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (&REFERRER_POLICY, "no-referrer"),
        (&X_FRAME_OPTIONS, "DENY"),
        (&CROSS_ORIGIN_OPENER_POLICY, "same-origin"),
        // API answers carry credentials (a new token, a TOTP secret, recovery codes) and
        // private data: no cache keeps them. The console's files set their own.
        (&CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), HeaderValue::from_static(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_is_set_and_a_handlers_own_value_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(&REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        set_missing(&mut headers);
        assert_eq!(headers[&REFERRER_POLICY], "same-origin");
        assert_eq!(headers[&X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[&X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[&CROSS_ORIGIN_OPENER_POLICY], "same-origin");
        assert_eq!(headers[&CACHE_CONTROL], "no-store");
        let csp = headers[&CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
    }
}
