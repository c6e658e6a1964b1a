//! JSON request bodies read the way JSON Schema (and so the OpenAPI document) reads them: a
//! number with a zero fractional part is an integer, so `870.0` (or `8.7e2`) is accepted
//! wherever `870` is. serde would refuse `870.0` for an `i64` field; this layer rewrites such
//! numbers as integers before any handler's extractor sees the body.
//!
//! It works on the text in one pass, outside strings, without building a document: a body
//! costs no more memory than its own size (at most twice, see [`MAX_GROWTH`]), whoever sent
//! it, and nothing else in it changes (key order, duplicate keys, whitespace). Bodies that
//! are not JSON pass unchanged; malformed JSON is left to the extractor, which answers 400.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A rewrite may lengthen a body (`1e18` has 19 digits as an integer) up to this factor;
/// beyond it the body goes on unchanged.
const MAX_GROWTH: usize = 2;

/// Whether `t` is a JSON number (RFC 8259): `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
/// Anything else stays as it is, for the extractor to refuse.
fn is_json_number(t: &[u8]) -> bool {
    let digits = |i: usize| t[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = usize::from(t.first() == Some(&b'-'));
    match (t.get(i), digits(i.min(t.len()))) {
        (Some(b'0'), 1) => i += 1,
        (Some(b'1'..=b'9'), n) => i += n,
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i.min(t.len()));
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == t.len()
}

/// The integer a JSON number token stands for, when it has a fraction or an exponent, no
/// fractional part, and fits an `i64`.
fn integral(token: &str) -> Option<i64> {
    if !token.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) || !is_json_number(token.as_bytes())
    {
        return None;
    }
    let f: f64 = token.parse().ok()?;
    // 2^63 is exactly representable; every float below it with no fraction fits.
    let fits = f.is_finite() && f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63);
    fits.then_some(f as i64)
}

/// `text` with integral non-integer number tokens rewritten as integers; `None` when nothing
/// changed or the result would grow past [`MAX_GROWTH`].
fn rewrite(text: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&text[start..i]).ok();
                if let Some(n) = token.and_then(integral) {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
                    o.extend_from_slice(&text[copied..start]);
                    o.extend_from_slice(n.to_string().as_bytes());
                    copied = i;
                    if o.len() > text.len().saturating_mul(MAX_GROWTH) {
                        return None;
                    }
                }
            }
            _ => i += 1,
        }
    }
    let mut out = out?;
    out.extend_from_slice(&text[copied.min(text.len())..]);
    (out.len() <= text.len().saturating_mul(MAX_GROWTH)).then_some(out)
}

/// The middleware (see the module's comment). Reading the body respects the body limit
/// layered outside (413 from the `Bytes` rejection).
pub async fn integral_numbers(req: Request, next: Next) -> Response {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(b) => b,
        Err(rejection) => return rejection.into_response(),
    };
    let body = rewrite(&bytes).map_or_else(|| Body::from(bytes), Body::from);
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> String {
        rewrite(text.as_bytes())
            .map(|b| String::from_utf8(b).expect("utf-8"))
            .unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn api_json_integral_floats_become_integers() {
        assert_eq!(
            run(
                r#"{"a": 870.0, "b": [-5299.0, 0.5, 3], "c": {"d": 1e300, "e": -0.0, "f": 8.7e2}}"#
            ),
            r#"{"a": 870, "b": [-5299, 0.5, 3], "c": {"d": 1e300, "e": 0, "f": 870}}"#
        );
        // Strings (escaped quotes included), keys and duplicates are left alone.
        assert_eq!(
            run(r#"{"1.0": "2.0 \" 3.0", "k": 1, "k": 4.00}"#),
            r#"{"1.0": "2.0 \" 3.0", "k": 1, "k": 4}"#
        );
        assert!(
            rewrite(br#"{"a": 1, "b": "x", "c": 0.25}"#).is_none(),
            "nothing to rewrite"
        );
        assert!(
            rewrite(b"9.223372036854776e18").is_none(),
            "2^63 does not fit an i64"
        );
        // Growth is bounded: many short exponents are left as they are.
        assert!(rewrite("1e18,".repeat(1000).as_bytes()).is_none());
        // Malformed input is passed on for the extractor to refuse, never a panic.
        for bad in [
            "\"unterminated",
            "\"\\",
            "1.0.0",
            "--1",
            "{\"a\":1.}",
            "01.0",
            "1.0e",
            ".5",
            "1e+",
        ] {
            assert!(rewrite(bad.as_bytes()).is_none(), "{bad} rewritten");
        }
        for good in ["0.0", "-0.0", "10.00", "1.5e1", "1E2", "2e+0", "5e-0"] {
            assert!(rewrite(good.as_bytes()).is_some(), "{good} kept");
        }
    }
}
