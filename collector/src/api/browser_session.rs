//! Browser sessions for the web console: the session credential travels in an `HttpOnly`,
//! `SameSite=Strict` cookie (never readable by page script), and every mutating request
//! made with that cookie must repeat the session's CSRF token in `X-CSRF-Token`
//! (double submit: the token is also in a script-readable cookie). The token is derived
//! from the session's secret (`credential::csrf_token`), so a planted cookie never matches.
//! Scripts keep using `Authorization: Bearer`, which needs no CSRF token: a browser never
//! adds that header on its own.

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};

use crate::auth::credential;

/// The session cookie's name over plain HTTP.
pub const SESSION_COOKIE: &str = "mcpwatch_session";
/// Over TLS: the `__Host-` prefix makes the browser refuse it unless `Secure`, host-only and
/// `Path=/`, so a sibling subdomain cannot plant or shadow it.
pub const SESSION_COOKIE_TLS: &str = "__Host-mcpwatch_session";
/// The script-readable copy of the CSRF token.
pub const CSRF_COOKIE: &str = "mcpwatch_csrf";
pub const CSRF_COOKIE_TLS: &str = "__Host-mcpwatch_csrf";
/// Binds a single sign-on under way to the browser that started it (see `oidc::pending`).
pub const OIDC_COOKIE: &str = "mcpwatch_oidc";
pub const OIDC_COOKIE_TLS: &str = "__Host-mcpwatch_oidc";
/// The header a cookie-authenticated mutation repeats the token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Why a cookie-authenticated request is refused before its credential is even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRefusal {
    /// No `X-CSRF-Token` header, or one that does not match the session.
    Token,
    /// The browser says the request came from another site.
    CrossSite,
}

/// The session cookie's value, if the request carries one. Several `Cookie` headers and
/// several pairs per header are read; the first session cookie wins.
pub fn session_cookie(headers: &HeaderMap, secure: bool) -> Option<&str> {
    cookie(headers, session_name(secure))
}

fn session_name(secure: bool) -> &'static str {
    if secure {
        SESSION_COOKIE_TLS
    } else {
        SESSION_COOKIE
    }
}

fn oidc_name(secure: bool) -> &'static str {
    if secure {
        OIDC_COOKIE_TLS
    } else {
        OIDC_COOKIE
    }
}

/// The single sign-on binding the request carries, if any.
pub fn oidc_binding(headers: &HeaderMap, secure: bool) -> Option<&str> {
    cookie(headers, oidc_name(secure))
}

/// Sets the binding of a sign-in that goes to the provider for at most `max_age_s`.
/// `SameSite=Lax`: the provider's redirect back is a top-level navigation from another
/// site, which a `Strict` cookie would not accompany.
pub fn set_oidc_binding(value: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let tls = if secure { "; Secure" } else { "" };
    header_value(format!(
        "{}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_s}{tls}",
        oidc_name(secure)
    ))
}

/// Removes the binding once the callback used it.
pub fn clear_oidc_binding(secure: bool) -> HeaderValue {
    let tls = if secure { "; Secure" } else { "" };
    header_value(format!(
        "{}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{tls}",
        oidc_name(secure)
    ))
}

fn csrf_name(secure: bool) -> &'static str {
    if secure {
        CSRF_COOKIE_TLS
    } else {
        CSRF_COOKIE
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Checks a cookie-authenticated request against cross-site forgery: safe methods pass;
/// anything else needs the CSRF header to equal the token derived from `secret`, and must
/// not be marked cross-site by the browser (`Sec-Fetch-Site`).
pub fn check_csrf(parts: &Parts, secret: &str) -> Result<(), CsrfRefusal> {
    check_site(parts)?;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let presented = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if credential::constant_time_eq(presented, &credential::csrf_token(secret)) {
        Ok(())
    } else {
        Err(CsrfRefusal::Token)
    }
}

/// Refuses a cookie-authenticated request of any method that the browser marks as coming
/// from another site, sibling subdomains included (`SameSite=Strict` still sends the cookie
/// to those): the console only ever makes same-origin requests, and a cross-site read
/// would otherwise keep the session from idling out.
pub fn check_site(parts: &Parts) -> Result<(), CsrfRefusal> {
    let site = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Err(CsrfRefusal::CrossSite);
    }
    Ok(())
}

/// Whether a login request may be answered with cookies: only a page of this origin asks
/// (`Sec-Fetch-Site: same-origin`, which browsers set and page script cannot forge), so
/// another site cannot log a visitor into an account of its choosing.
pub fn same_origin_browser(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin")
}

/// The `Set-Cookie` values that open a browser session for `credential` (the session
/// cookie, `HttpOnly`) and hand page script its CSRF token; both last `max_age_s`.
pub fn set_cookies(
    credential_text: &str,
    csrf: &str,
    max_age_s: i64,
    secure: bool,
) -> [HeaderValue; 2] {
    let tls = if secure { "; Secure" } else { "" };
    let session = format!(
        "{}={credential_text}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{tls}",
        session_name(secure)
    );
    let token = format!(
        "{}={csrf}; SameSite=Strict; Path=/; Max-Age={max_age_s}{tls}",
        csrf_name(secure)
    );
    [header_value(session), header_value(token)]
}

/// The `Set-Cookie` values that make the browser forget both cookies (logout).
pub fn clear_cookies(secure: bool) -> [HeaderValue; 2] {
    let tls = if secure { "; Secure" } else { "" };
    [session_name(secure), csrf_name(secure)].map(|name| {
        header_value(format!(
            "{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{tls}"
        ))
    })
}

fn header_value(text: String) -> HeaderValue {
    // The text is built from fixed names, hex digits, digits and ASCII punctuation only.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri("/api/v1/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let p = parts(
            Method::GET,
            &[
                ("cookie", "a=1; mcpwatch_sessionx=2"),
                ("cookie", "b=3;mcpwatch_session=mcps_1_ab ; c=4"),
            ],
        );
        assert_eq!(session_cookie(&p.headers, false), Some("mcps_1_ab"));
        assert_eq!(session_cookie(&p.headers, true), None);
        let p = parts(Method::GET, &[("cookie", "__Host-mcpwatch_session=z")]);
        assert_eq!(session_cookie(&p.headers, true), Some("z"));
    }

    #[test]
    fn mutations_need_the_derived_token_and_a_same_site_origin() {
        let secret = credential::secret().unwrap();
        let token = credential::csrf_token(&secret);
        assert_eq!(check_csrf(&parts(Method::GET, &[]), &secret), Ok(()));
        assert_eq!(
            check_csrf(&parts(Method::POST, &[]), &secret),
            Err(CsrfRefusal::Token)
        );
        let wrong = credential::csrf_token("other");
        assert_eq!(
            check_csrf(&parts(Method::DELETE, &[(CSRF_HEADER, &wrong)]), &secret),
            Err(CsrfRefusal::Token)
        );
        assert_eq!(
            check_csrf(&parts(Method::PUT, &[(CSRF_HEADER, &token)]), &secret),
            Ok(())
        );
        let cross = [
            (CSRF_HEADER, token.as_str()),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(
            check_csrf(&parts(Method::POST, &cross), &secret),
            Err(CsrfRefusal::CrossSite)
        );
        let sibling = [("sec-fetch-site", "same-site")];
        assert_eq!(
            check_csrf(&parts(Method::GET, &sibling), &secret),
            Err(CsrfRefusal::CrossSite),
            "reads from a sibling subdomain are refused too"
        );
    }

    #[test]
    fn cookies_carry_the_flags_tls_needs() {
        let [session, csrf] = set_cookies("mcps_1_x", "t", 60, true);
        let session = session.to_str().unwrap();
        assert!(session.starts_with(
            "__Host-mcpwatch_session=mcps_1_x; HttpOnly; SameSite=Strict; Path=/; Max-Age=60"
        ));
        assert!(session.ends_with("; Secure"));
        let csrf = csrf.to_str().unwrap();
        assert!(csrf.starts_with("__Host-mcpwatch_csrf=t;") && !csrf.contains("HttpOnly"));
        let [plain, _] = set_cookies("mcps_1_x", "t", 60, false);
        assert!(!plain.to_str().unwrap().contains("Secure"));
        for c in clear_cookies(false) {
            assert!(c.to_str().unwrap().contains("Max-Age=0"));
        }
    }

    #[test]
    fn only_a_same_origin_page_gets_cookies() {
        let h = |v: &str| parts(Method::POST, &[("sec-fetch-site", v)]).headers;
        assert!(same_origin_browser(&h("same-origin")));
        assert!(!same_origin_browser(&h("cross-site")));
        assert!(!same_origin_browser(&h("none")));
        assert!(!same_origin_browser(&HeaderMap::new()));
    }
}
